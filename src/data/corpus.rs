//! The token shards of a corpus folder, memory-mapped and seen as one sequence of
//! documents: the trainer's view of what `corpus-tools` wrote. The manifest's tokenizer
//! hash is checked against the model's vocabulary before anything trains.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use corpus_tools::indexed_dataset::IndexedDataset;
use corpus_tools::manifest::{Manifest, ShardEntry};
use sha2::{Digest, Sha256};

pub struct Corpus {
    pub dir: PathBuf,
    pub manifest: Manifest,
    shards: Vec<IndexedDataset>,
    /// First global document and sequence index of each shard, plus the totals.
    doc_starts: Vec<u64>,
    seq_starts: Vec<u64>,
    /// The vocabulary, for whole-word masking and random replacement.
    pub vocab: Vec<String>,
}

impl Corpus {
    pub fn open(dir: &Path) -> Result<Corpus> {
        let manifest = Manifest::read(dir)?;
        let tokenizer = manifest.tokenizer.clone().with_context(|| {
            format!(
                "{}: a text-only corpus; run corpus-tools shard first",
                dir.display()
            )
        })?;
        let vocab_path = dir.join(&tokenizer.file);
        let vocab = read_vocab(&vocab_path)?;
        let mut shards = Vec::new();
        let (mut doc_starts, mut seq_starts) = (vec![0u64], vec![0u64]);
        for entry in &manifest.shards {
            if entry.bin.is_none() {
                bail!("{}: shard {} has no token files", dir.display(), entry.name);
            }
            let ds = IndexedDataset::open(&dir.join(&entry.name))?;
            check_against_manifest(dir, entry, &ds)?;
            doc_starts.push(doc_starts.last().copied().unwrap_or(0) + ds.documents() as u64);
            seq_starts.push(seq_starts.last().copied().unwrap_or(0) + ds.sequences() as u64);
            shards.push(ds);
        }
        if shards.is_empty() {
            bail!("{}: the corpus has no shards", dir.display());
        }
        Ok(Corpus {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            doc_starts,
            seq_starts,
            vocab,
        })
    }

    pub fn tokenizer_sha256(&self) -> &str {
        self.manifest
            .tokenizer
            .as_ref()
            .map_or("", |t| t.sha256.as_str())
    }

    pub fn lowercase(&self) -> bool {
        self.manifest
            .tokenizer
            .as_ref()
            .is_some_and(|t| t.lowercase)
    }

    pub fn vocab_path(&self) -> PathBuf {
        self.dir.join(
            self.manifest
                .tokenizer
                .as_ref()
                .map_or("vocab.txt", |t| t.file.as_str()),
        )
    }

    pub fn sequences(&self) -> u64 {
        *self.seq_starts.last().expect("starts with 0")
    }

    pub fn documents(&self) -> u64 {
        *self.doc_starts.last().expect("starts with 0")
    }

    /// Global sequence indices of document `d`.
    pub fn document(&self, d: u64) -> std::ops::Range<u64> {
        let s = self.doc_starts.partition_point(|&start| start <= d) - 1;
        let local = self.shards[s].document((d - self.doc_starts[s]) as usize);
        self.seq_starts[s] + local.start as u64..self.seq_starts[s] + local.end as u64
    }

    pub fn sequence_len(&self, q: u64) -> usize {
        let s = self.seq_starts.partition_point(|&start| start <= q) - 1;
        self.shards[s].sequence_len((q - self.seq_starts[s]) as usize)
    }

    pub fn read_sequence(&self, q: u64, out: &mut Vec<u32>) {
        let s = self.seq_starts.partition_point(|&start| start <= q) - 1;
        self.shards[s].read_sequence((q - self.seq_starts[s]) as usize, out);
    }

    /// Appends tokens `from..to` of sequence `q` to `out`, checking that every id is in the
    /// vocabulary (an id beyond it would crash the embedding lookup): an error names the
    /// shard and the sequence.
    pub fn read_checked(&self, q: u64, from: usize, to: usize, out: &mut Vec<u32>) -> Result<()> {
        let s = self.seq_starts.partition_point(|&start| start <= q) - 1;
        let local = (q - self.seq_starts[s]) as usize;
        let first = out.len();
        self.shards[s].read_range(local, from, to, out);
        if let Some(&id) = out[first..]
            .iter()
            .find(|&&id| id as usize >= self.vocab.len())
        {
            bail!(
                "{}: sequence {local} of shard {} holds token id {id}, but the vocabulary has {} entries: the shard was made with another vocabulary, or is damaged (corpus-tools verify checks every shard)",
                self.dir.display(),
                self.manifest.shards[s].name,
                self.vocab.len()
            );
        }
        Ok(())
    }
}

/// A shard must be the one its manifest describes (cheap: sizes and counts; `corpus-tools
/// verify` compares the checksums): shards swapped or linked to another corpus's files
/// would otherwise train, and the instance index, keyed by the manifest, would name the
/// wrong data.
fn check_against_manifest(dir: &Path, entry: &ShardEntry, ds: &IndexedDataset) -> Result<()> {
    let mut differences = Vec::new();
    if ds.documents() as u64 != entry.documents {
        differences.push(format!(
            "{} documents, the manifest says {}",
            ds.documents(),
            entry.documents
        ));
    }
    if ds.sequences() as u64 != entry.sentences {
        differences.push(format!(
            "{} sentences, the manifest says {}",
            ds.sequences(),
            entry.sentences
        ));
    }
    for digest in [&entry.bin, &entry.idx].into_iter().flatten() {
        let path = dir.join(&digest.file);
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?
            .len();
        if bytes != digest.bytes {
            differences.push(format!(
                "{} is {bytes} bytes, the manifest says {}",
                digest.file, digest.bytes
            ));
        }
    }
    if !differences.is_empty() {
        bail!(
            "{}: shard {} is not the one manifest.json describes ({}): its files were replaced or damaged; corpus-tools verify checks every shard",
            dir.display(),
            entry.name,
            differences.join("; ")
        );
    }
    Ok(())
}

/// The sha256 of a file (a vocabulary, the manifest) in hex, as the manifest records
/// its files' hashes.
pub fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn read_vocab(path: &Path) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e == "json") {
        let t = corpus_tools::tokenizer::WordPieceTokenizer::load(path, None)?;
        return Ok((0..t.vocab_size() as u32)
            .map(|i| t.token(i).unwrap_or("").to_string())
            .collect());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect())
}
