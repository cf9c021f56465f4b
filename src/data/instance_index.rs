//! The on-disk instance index: an epoch's pretraining instances in training order, built
//! once per (corpus, data config, epoch), memory-mapped read-only by every rank.
//!
//! Megatron-LM saves its sample index beside the data and maps it on every rank; this is
//! the same idea for Google's instances. The file is the list `instances::epoch_instances`
//! builds in memory (the reference, record for record), at 16 bytes an instance:
//!
//! ```text
//! header (64 bytes)  b"BBINSTIX", version u32 = 1, record bytes u32 = 16, count u64,
//!                    epoch u64, the first 16 bytes of the key's sha256, zeros
//! record             u64 LE: A's first sentence (40 bits) | A's sentence count << 40
//!                    u64 LE: B's first sentence (40 bits) | B's sentence count << 40
//!                            (23 bits) | random next << 63
//! ```
//!
//! At full scale (25B tokens, ~270M instances an epoch at seq 128; BENCHMARKS.md) a file is
//! 4.3 GB. It lives in the page cache, shared by the node's ranks, so no rank holds it in
//! private memory. Building takes a counting pass over document blocks (parallel), an
//! exact allocation of a shared-memory buffer, a fill pass (parallel, each block into its
//! own slice), the Fisher-Yates shuffle of `Rng::shuffle` (serial, its random reads
//! prefetched) and one sequential, synced write of the file. The builder (one rank per
//! node) holds the training document list (8 B per document: 264 MB at 33M documents), a
//! count per block, and the buffer (the index's size, 4.3 GB at full scale) while it builds.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use memmap2::{Mmap, MmapMut};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::data::build_lock::{self, BuildLock, LockWatch};
use crate::data::corpus::Corpus;
use crate::data::instances::{self, Instance, InstanceConfig};
use crate::data::rng::{Rng, Stream};

const MAGIC: &[u8; 8] = b"BBINSTIX";
const VERSION: u32 = 1;
const HEADER: usize = 64;
pub const RECORD: usize = 16;
/// Documents per block of the counting and fill passes: small enough to balance the
/// threads, large enough that the per-block counts stay small (8K blocks at 33M documents).
const BLOCK: usize = 4096;
const START_BITS: u32 = 40;
const A_COUNT_MAX: u64 = (1 << 24) - 1;
const B_COUNT_MAX: u64 = (1 << 23) - 1;

/// Which documents an index draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Heldout,
}

/// One record, packed.
pub fn encode(instance: &Instance) -> Result<[u8; RECORD]> {
    let (a_count, b_count) = (instance.a.1 - instance.a.0, instance.b.1 - instance.b.0);
    ensure!(
        instance.a.0 >> START_BITS == 0 && instance.b.0 >> START_BITS == 0,
        "sentence index {} is beyond the index format's 2^40",
        instance.a.0.max(instance.b.0)
    );
    ensure!(
        a_count <= A_COUNT_MAX && b_count <= B_COUNT_MAX,
        "a segment of {} sentences is beyond the index format's limit",
        a_count.max(b_count)
    );
    let w0 = instance.a.0 | a_count << START_BITS;
    let w1 = instance.b.0 | b_count << START_BITS | u64::from(instance.random_next) << 63;
    let mut out = [0u8; RECORD];
    out[..8].copy_from_slice(&w0.to_le_bytes());
    out[8..].copy_from_slice(&w1.to_le_bytes());
    Ok(out)
}

pub fn decode(record: &[u8]) -> Instance {
    let word = |k: usize| u64::from_le_bytes(record[k..k + 8].try_into().expect("8 bytes"));
    let (w0, w1) = (word(0), word(8));
    let start_mask = (1u64 << START_BITS) - 1;
    let (a0, b0) = (w0 & start_mask, w1 & start_mask);
    Instance {
        a: (a0, a0 + (w0 >> START_BITS)),
        b: (b0, b0 + ((w1 >> START_BITS) & B_COUNT_MAX)),
        random_next: w1 >> 63 == 1,
    }
}

/// The instance index folder of one (corpus, data config): `ROOT/KEYHASH/`, with `key.txt`
/// saying what the hash covers, `train-epoch-NNNNNN.idx` and `.count` per epoch and
/// `heldout.idx`.
pub struct IndexStore {
    pub dir: PathBuf,
    key: [u8; 16],
    /// What the key covers (key.txt).
    key_text: String,
    corpus: Arc<Corpus>,
    config: InstanceConfig,
    heldout_fraction: f64,
}

/// What building one file took.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub instances: u64,
    pub threads: usize,
    pub count_s: f64,
    pub fill_s: f64,
    pub shuffle_s: f64,
    pub write_s: f64,
}

impl BuildReport {
    pub fn total_s(&self) -> f64 {
        self.count_s + self.fill_s + self.shuffle_s + self.write_s
    }
}

impl IndexStore {
    /// Opens (creating) the folder for this corpus and data config under `root`.
    /// `corpus_sha256` is the manifest's hash: a changed corpus, seed, sequence length,
    /// short-target share or held-out split gets another folder, never a stale index.
    pub fn open(
        root: &Path,
        corpus: Arc<Corpus>,
        corpus_sha256: &str,
        config: &InstanceConfig,
        heldout_fraction: f64,
    ) -> Result<IndexStore> {
        let text = key_text(corpus_sha256, config, heldout_fraction);
        let digest = Sha256::digest(text.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let dir = root.join(hex);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let store = IndexStore {
            dir,
            key,
            key_text: text,
            corpus,
            config: config.clone(),
            heldout_fraction,
        };
        store.ensure_folder()?;
        build_lock::clear_abandoned(&store.dir);
        Ok(store)
    }

    /// The folder and its key.txt, created again if they were removed (the README says
    /// removing a cache folder is safe, also while a run uses it).
    fn ensure_folder(&self) -> Result<()> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).with_context(|| {
            format!("{}: cannot create the instance index folder", dir.display())
        })?;
        let key_file = dir.join("key.txt");
        match std::fs::read_to_string(&key_file) {
            Ok(existing) if existing == self.key_text => Ok(()),
            Ok(_) => bail!(
                "{}: describes another corpus or data config under the same hash; remove {} to rebuild",
                key_file.display(),
                dir.display()
            ),
            Err(_) => write_atomically(&key_file, self.key_text.as_bytes()),
        }
    }

    pub fn path(&self, part: Part, epoch: u64) -> PathBuf {
        match part {
            Part::Train => self.dir.join(format!("train-epoch-{epoch:06}.idx")),
            Part::Heldout => self.dir.join("heldout.idx"),
        }
    }

    fn count_path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("train-epoch-{epoch:06}.count"))
    }

    fn epoch_key(part: Part, epoch: u64) -> u64 {
        match part {
            Part::Train => epoch,
            // Held-out instances use their own epoch key, never a training epoch's.
            Part::Heldout => u64::MAX,
        }
    }

    /// The index of `part` in `epoch`, built here if no one has (or waited for, if
    /// someone is building it), then mapped. `pool` makes the threads that build it, only
    /// when this process builds.
    pub fn epoch(
        &self,
        part: Part,
        epoch: u64,
        pool: impl FnOnce() -> Result<rayon::ThreadPool>,
    ) -> Result<(EpochIndex, Option<BuildReport>)> {
        self.ensure_folder()?;
        let path = self.path(part, epoch);
        let report = match build_lock::wait_or_take(&path, "the instance index")? {
            Some(lock) => Some(self.build_locked(part, epoch, &pool()?, lock)?),
            None => None,
        };
        Ok((EpochIndex::open(&path, &self.key)?, report))
    }

    /// Builds `part`/`epoch` unless it exists or someone else is building it; returns at
    /// once in those cases. For the background thread that prepares the next epoch.
    pub fn build_if_free(
        &self,
        part: Part,
        epoch: u64,
        pool: &rayon::ThreadPool,
    ) -> Result<Option<BuildReport>> {
        let path = self.path(part, epoch);
        if path.exists() {
            return Ok(None);
        }
        self.ensure_folder()?;
        match BuildLock::try_take(&path, &mut LockWatch::default())? {
            Some(lock) if !path.exists() => Ok(Some(self.build_locked(part, epoch, pool, lock)?)),
            _ => Ok(None),
        }
    }

    /// Instances in training epoch `epoch`, from the `.count` file its build wrote (kept
    /// when the index itself is removed); `None` before it was built, or when the file
    /// does not hold a count with its check (edited, damaged, or from another index): the
    /// caller then counts from the index, since a wrong count moves every later sample.
    pub fn epoch_size(&self, epoch: u64) -> Option<u64> {
        let path = self.count_path(epoch);
        let text = std::fs::read_to_string(&path).ok()?;
        let parsed = text.split_once(' ').and_then(|(n, check)| {
            let n: u64 = n.parse().ok()?;
            (check.trim() == self.count_check(epoch, n)).then_some(n)
        });
        if parsed.is_none() {
            eprintln!(
                "warning: {}: not a count this index wrote (expected \"COUNT CHECK\"); counting the epoch's instances again",
                path.display()
            );
        }
        parsed
    }

    /// Records epoch `epoch`'s instance count, with its check.
    pub fn write_epoch_size(&self, epoch: u64, n: u64) -> Result<()> {
        let line = format!("{n} {}\n", self.count_check(epoch, n));
        write_atomically(&self.count_path(epoch), line.as_bytes())
    }

    /// The first 16 hex digits of sha256(index key, epoch, count): a count copied from
    /// another epoch or index, or edited, fails it.
    fn count_check(&self, epoch: u64, n: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(epoch.to_le_bytes());
        h.update(n.to_le_bytes());
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Removes the training indexes of epochs before `epoch` (their counts stay).
    pub fn remove_before(&self, epoch: u64) {
        for e in 0..epoch {
            let _ = std::fs::remove_file(self.path(Part::Train, e));
        }
    }

    fn documents(&self, part: Part) -> Vec<u64> {
        let (train, heldout) =
            instances::split_documents(&self.corpus, self.heldout_fraction, self.config.seed);
        match part {
            Part::Train => train,
            Part::Heldout => heldout,
        }
    }

    fn build_locked(
        &self,
        part: Part,
        epoch: u64,
        pool: &rayon::ThreadPool,
        _lock: BuildLock,
    ) -> Result<BuildReport> {
        let path = self.path(part, epoch);
        let tmp = build_lock::temporary_path(&path);
        let result = pool.install(|| self.write(part, epoch, &tmp, pool.current_num_threads()));
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("{}: cannot rename into place", tmp.display()))?;
        if part == Part::Train {
            self.write_epoch_size(epoch, report.instances)?;
        }
        Ok(report)
    }

    /// Instances per block of documents, by running Google's algorithm without keeping
    /// them.
    fn block_counts(&self, documents: &[u64], epoch_key: u64) -> Vec<u64> {
        (0..documents.len().div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let mut n = 0u64;
                self.block_instances(documents, epoch_key, b, &mut |_| n += 1);
                n
            })
            .collect()
    }

    fn block_instances(
        &self,
        documents: &[u64],
        epoch_key: u64,
        block: usize,
        emit: &mut impl FnMut(Instance),
    ) {
        let end = ((block + 1) * BLOCK).min(documents.len());
        for k in block * BLOCK..end {
            let mut rng = instances::document_rng(&self.config, epoch_key, documents[k]);
            instances::document_instances(&self.corpus, documents, k, &self.config, &mut rng, emit);
        }
    }

    /// The fill pass: each block's instances, in document order, into its own slice.
    fn fill(
        &self,
        documents: &[u64],
        epoch_key: u64,
        counts: &[u64],
        records: &mut [[u8; RECORD]],
    ) -> Result<()> {
        let mut slices = Vec::with_capacity(counts.len());
        let mut rest = records;
        for &n in counts {
            let (mine, tail) = rest.split_at_mut(n as usize);
            slices.push(mine);
            rest = tail;
        }
        slices
            .into_par_iter()
            .enumerate()
            .try_for_each(|(b, slice)| -> Result<()> {
                let (mut k, mut failed) = (0usize, None);
                self.block_instances(documents, epoch_key, b, &mut |i| match encode(&i) {
                    Ok(r) if k < slice.len() => {
                        slice[k] = r;
                        k += 1;
                    }
                    Ok(_) => k += 1,
                    Err(e) => failed = failed.take().or(Some(e)),
                });
                if let Some(e) = failed {
                    return Err(e);
                }
                ensure!(
                    k == slice.len(),
                    "block {b}: the fill pass disagrees with the count"
                );
                Ok(())
            })
    }

    /// Counting pass, exact allocation, fill pass, shuffle, into `tmp`.
    fn write(&self, part: Part, epoch: u64, tmp: &Path, threads: usize) -> Result<BuildReport> {
        let epoch_key = Self::epoch_key(part, epoch);
        let documents = self.documents(part);
        let started = Instant::now();
        let counts = self.block_counts(&documents, epoch_key);
        let total: u64 = counts.iter().sum();
        let count_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let bytes = HEADER as u64 + RECORD as u64 * total;
        let mut map = build_buffer(bytes)?;
        self.fill(
            &documents,
            epoch_key,
            &counts,
            as_records(&mut map[HEADER..]),
        )?;
        drop(documents);
        let fill_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        shuffle_prefetched(
            &mut Rng::for_keys(&[self.config.seed, Stream::Order.key(), epoch_key]),
            as_records(&mut map[HEADER..]),
        );
        write_header(&mut map[..HEADER], total, epoch_key, &self.key);
        let shuffle_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        write_file(tmp, &map)?;
        let write_s = started.elapsed().as_secs_f64();
        Ok(BuildReport {
            instances: total,
            threads,
            count_s,
            fill_s,
            shuffle_s,
            write_s,
        })
    }
}

/// What the key hash covers, one `name = value` a line.
fn key_text(corpus_sha256: &str, config: &InstanceConfig, heldout_fraction: f64) -> String {
    format!(
        "format = biobert-instance-index/{VERSION}\ncorpus.manifest_sha256 = {corpus_sha256}\ndata.max_seq_len = {}\ndata.short_seq_prob = {:?}\ndata.heldout_fraction = {heldout_fraction:?}\ndata.seed = {}\n",
        config.max_seq_len, config.short_seq_prob, config.seed
    )
}

fn write_header(header: &mut [u8], count: u64, epoch_key: u64, key: &[u8; 16]) {
    header.fill(0);
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(RECORD as u32).to_le_bytes());
    header[16..24].copy_from_slice(&count.to_le_bytes());
    header[24..32].copy_from_slice(&epoch_key.to_le_bytes());
    header[32..48].copy_from_slice(key);
}

fn as_records(bytes: &mut [u8]) -> &mut [[u8; RECORD]] {
    let n = bytes.len() / RECORD;
    // SAFETY: [u8; 16] has alignment 1 and no invalid bit patterns; the slice covers
    // n * 16 bytes of `bytes`, borrowed mutably for the result's lifetime.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<[u8; RECORD]>(), n) }
}

/// The memory an index is built in: shared memory (memfd), not the index file itself.
/// The shuffle writes every page at random; in a mapped file those pages are written back
/// to disk while it runs and the writer is throttled (an epoch of 270M records took 180 s
/// in a mapped file on a 24 GB machine, against seconds in memory). The memory is
/// reserved up front, so that a shortage is an error here and not a SIGBUS later.
fn build_buffer(bytes: u64) -> Result<MmapMut> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is owned below.
    let fd = unsafe { libc::memfd_create(c"biobert-instance-index".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot create the index's build buffer");
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    reserve(&file, bytes).with_context(|| {
        format!(
            "cannot reserve {:.2} GB of memory to build the instance index in",
            bytes as f64 / 1e9
        )
    })?;
    // SAFETY: an anonymous memory file that only this mapping uses.
    unsafe { MmapMut::map_mut(&file) }.context("cannot map the index's build buffer")
}

/// Writes the built index to `tmp` in one sequential pass, then syncs it (the rename that
/// follows must never publish a file whose data is not on disk).
fn write_file(tmp: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .with_context(|| format!("{}: cannot create", tmp.display()))?;
    reserve(&file, bytes.len() as u64).with_context(|| {
        format!(
            "{}: cannot reserve {:.2} GB for the instance index",
            tmp.display(),
            bytes.len() as f64 / 1e9
        )
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write", tmp.display()))
}

/// Allocates a file's blocks (or a memory file's pages) now, so that a full disk or a
/// memory shortage is an error here and not a SIGBUS when a mapped page is first written.
fn reserve(file: &std::fs::File, bytes: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fallocate on an open, writable descriptor.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, bytes as libc::off_t) };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r).into());
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    // Two threads of one process may record the same count (the loader's and the builder
    // of the next epoch): each writes its own temporary.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut tmp = build_lock::temporary_path(path).into_os_string();
    tmp.push(format!(
        "-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename", tmp.display()))
}

/// `Rng::shuffle`'s Fisher-Yates, draw for draw, on records in a mapped file. Each swap
/// reads one random record; the draws do not depend on the data, so they are made
/// `LOOKAHEAD` swaps early and the record is prefetched, which keeps many cache and TLB
/// misses in flight instead of one.
pub fn shuffle_prefetched(rng: &mut Rng, records: &mut [[u8; RECORD]]) {
    const LOOKAHEAD: usize = 32;
    let n = records.len();
    if n < 2 {
        return;
    }
    let mut ring = [0usize; LOOKAHEAD];
    let mut draw = |i: usize, records: &[[u8; RECORD]]| {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        prefetch(&records[j]);
        j
    };
    // Swap i's draw sits in slot (n - 1 - i) % LOOKAHEAD.
    let primed = (n - 1).min(LOOKAHEAD);
    for (s, slot) in ring.iter_mut().enumerate().take(primed) {
        *slot = draw(n - 1 - s, records);
    }
    for i in (1..n).rev() {
        let slot = (n - 1 - i) % LOOKAHEAD;
        let j = ring[slot];
        if i > LOOKAHEAD {
            ring[slot] = draw(i - LOOKAHEAD, records);
        }
        records.swap(i, j);
    }
}

/// Times a build's serial part on `records` records, as a build does it: the shuffle in
/// the build buffer (seconds with prefetching, and with `Rng::shuffle`'s plain loop), then
/// the synced write of the file into `dir`. For measuring it at full scale without the
/// full corpus.
pub fn time_shuffle(dir: &Path, records: u64) -> Result<(f64, f64, f64)> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut map = build_buffer(records * RECORD as u64)?;
    let list = as_records(&mut map[..]);
    list.par_iter_mut()
        .enumerate()
        .for_each(|(i, r)| r[..8].copy_from_slice(&(i as u64).to_le_bytes()));
    let started = Instant::now();
    shuffle_prefetched(&mut Rng::for_keys(&[1]), list);
    let prefetched = started.elapsed().as_secs_f64();
    let started = Instant::now();
    Rng::for_keys(&[2]).shuffle(list);
    let plain = started.elapsed().as_secs_f64();
    let path = build_lock::temporary_path(&dir.join("shuffle-benchmark"));
    let started = Instant::now();
    let written = write_file(&path, &map);
    let write = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    written?;
    Ok((prefetched, plain, write))
}

#[inline(always)]
fn prefetch(record: &[u8; RECORD]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; the address is a valid reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch(record.as_ptr().cast(), std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = record;
}

/// One mapped index file.
pub struct EpochIndex {
    map: Mmap,
    count: u64,
    path: PathBuf,
}

impl EpochIndex {
    pub fn open(path: &Path, key: &[u8; 16]) -> Result<EpochIndex> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        // SAFETY: index files are written under a temporary name and renamed into place,
        // never modified after; a reader maps only finished files.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("{}: cannot map", path.display()))?;
        let bad = |what: &str| {
            anyhow::anyhow!(
                "{}: not an instance index of this corpus and config ({what}); remove it and it is rebuilt",
                path.display()
            )
        };
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(bad("no BBINSTIX header"));
        }
        let u32_at = |k: usize| u32::from_le_bytes(map[k..k + 4].try_into().expect("4 bytes"));
        let count = u64::from_le_bytes(map[16..24].try_into().expect("8 bytes"));
        if u32_at(8) != VERSION || u32_at(12) != RECORD as u32 {
            return Err(bad("another format version"));
        }
        if map[32..48] != key[..] {
            return Err(bad("another key"));
        }
        if map.len() as u64 != HEADER as u64 + count * RECORD as u64 {
            return Err(bad("its length does not match its count"));
        }
        Ok(EpochIndex {
            map,
            count,
            path: path.to_path_buf(),
        })
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn get(&self, i: u64) -> Instance {
        let at = HEADER + i as usize * RECORD;
        decode(&self.map[at..at + RECORD])
    }

    /// Record `i`, checked against a corpus of `sentences` sentences: a damaged file (the
    /// header intact, the records not) is refused by name instead of reading past the
    /// corpus or training on empty instances.
    pub fn get_checked(&self, i: u64, sentences: u64) -> Result<Instance> {
        let instance = self.get(i);
        let (a, b) = (instance.a, instance.b);
        if a.0 < a.1 && a.1 <= sentences && b.0 <= b.1 && b.1 <= sentences {
            return Ok(instance);
        }
        bail!(
            "{}: record {i} is not an instance of this corpus (segment A: sentences {}..{}, B: {}..{}; the corpus has {sentences}): the file is damaged; remove it and it is rebuilt",
            self.path.display(),
            a.0,
            a.1,
            b.0,
            b.1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_at_the_format_s_limits() {
        for instance in [
            Instance {
                a: (0, 1),
                b: (1, 2),
                random_next: false,
            },
            Instance {
                a: ((1 << 40) - 9, (1 << 40) - 1),
                b: (12, 12 + B_COUNT_MAX),
                random_next: true,
            },
            Instance {
                a: (5, 5 + A_COUNT_MAX),
                b: (3, 4),
                random_next: true,
            },
        ] {
            assert_eq!(decode(&encode(&instance).unwrap()), instance);
        }
        let too_far = Instance {
            a: (1 << 40, (1 << 40) + 1),
            b: (0, 1),
            random_next: false,
        };
        assert!(encode(&too_far).is_err());
        let too_long = Instance {
            a: (0, 1),
            b: (0, B_COUNT_MAX + 1),
            random_next: false,
        };
        assert!(encode(&too_long).is_err());
    }

    #[test]
    fn the_prefetched_shuffle_is_rng_shuffle_draw_for_draw() {
        for n in [0usize, 1, 2, 3, 31, 32, 33, 34, 1000] {
            let mut reference: Vec<u64> = (0..n as u64).collect();
            Rng::for_keys(&[9, n as u64]).shuffle(&mut reference);
            let mut records: Vec<[u8; RECORD]> = (0..n as u64)
                .map(|i| {
                    let mut r = [0u8; RECORD];
                    r[..8].copy_from_slice(&i.to_le_bytes());
                    r
                })
                .collect();
            shuffle_prefetched(&mut Rng::for_keys(&[9, n as u64]), &mut records);
            let ours: Vec<u64> = records
                .iter()
                .map(|r| u64::from_le_bytes(r[..8].try_into().unwrap()))
                .collect();
            assert_eq!(ours, reference, "n = {n}");
        }
    }
}
