//! Megatron-LM's indexed dataset (`MMapIndexedDataset`), byte for byte.
//!
//! `NAME.bin` holds the token ids of every sequence back to back, little-endian, u16 when
//! the vocabulary has fewer than 65,500 entries (Megatron's `DType.optimal_dtype`), else
//! i32. `NAME.idx` holds:
//!
//! ```text
//! b"MMIDIDX\0\0"           9 bytes
//! version                   u64 = 1
//! dtype code                u8  (uint16 = 8, int32 = 4, as Megatron's DType enum)
//! sequence count            u64
//! document count            u64 (entries of the document index, so documents + 1)
//! sequence lengths          i32 x sequences
//! sequence byte offsets     i64 x sequences
//! document index            i64 x (documents + 1): the first sequence of each document,
//!                           then the total, so document d is sequences [idx[d], idx[d+1])
//! ```
//!
//! Megatron writes the arrays unaligned (the lengths start at byte 34), so the reader
//! decodes them with unaligned little-endian reads from the memory map. Here a sequence
//! is one sentence.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use memmap2::Mmap;

use crate::atomic_file::{AtomicFile, FileDigest};

pub const INDEX_MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
pub const INDEX_VERSION: u64 = 1;
const HEADER_LEN: usize = 9 + 8 + 1 + 8 + 8;

/// Token id width on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDtype {
    U16,
    I32,
}

impl TokenDtype {
    /// Megatron's choice: uint16 below 65,500 entries, else int32.
    pub fn for_vocab_size(vocab_size: usize) -> TokenDtype {
        if vocab_size < 65_500 {
            TokenDtype::U16
        } else {
            TokenDtype::I32
        }
    }

    pub fn code(self) -> u8 {
        match self {
            TokenDtype::U16 => 8,
            TokenDtype::I32 => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<TokenDtype> {
        match code {
            8 => Some(TokenDtype::U16),
            4 => Some(TokenDtype::I32),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::I32 => 4,
        }
    }
}

/// `NAME.bin` / `NAME.idx` from the shard path prefix `NAME`.
pub fn shard_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".bin"), with(".idx"))
}

/// Streams sequences into `NAME.bin` and keeps the index in memory (12 bytes a sequence)
/// until `finish` writes `NAME.idx`. Both go through temporary names and are renamed into
/// place by `finish`.
pub struct IndexedDatasetWriter {
    bin: AtomicFile,
    idx_path: PathBuf,
    dtype: TokenDtype,
    lengths: Vec<i32>,
    document_index: Vec<i64>,
    tokens: u64,
}

impl IndexedDatasetWriter {
    /// Writes `PREFIX.bin` and `PREFIX.idx`.
    pub fn create(prefix: &Path, dtype: TokenDtype) -> Result<Self> {
        let (bin_path, idx_path) = shard_paths(prefix);
        Ok(IndexedDatasetWriter {
            bin: AtomicFile::create(&bin_path)?,
            idx_path,
            dtype,
            lengths: Vec::new(),
            document_index: vec![0],
            tokens: 0,
        })
    }

    /// Appends one sequence (a sentence) to the current document.
    pub fn add_sequence(&mut self, ids: &[u32]) -> Result<()> {
        ensure!(
            ids.len() <= i32::MAX as usize,
            "sequence of {} tokens is too long",
            ids.len()
        );
        for &id in ids {
            match self.dtype {
                TokenDtype::U16 => {
                    let v = u16::try_from(id)
                        .with_context(|| format!("token id {id} does not fit in uint16"))?;
                    self.bin.write_all(&v.to_le_bytes())?;
                }
                TokenDtype::I32 => {
                    let v = i32::try_from(id)
                        .with_context(|| format!("token id {id} does not fit in int32"))?;
                    self.bin.write_all(&v.to_le_bytes())?;
                }
            }
        }
        self.lengths.push(ids.len() as i32);
        self.tokens += ids.len() as u64;
        Ok(())
    }

    /// Closes the current document; a document with no sequence is not recorded.
    pub fn end_document(&mut self) {
        let count = self.lengths.len() as i64;
        if self.document_index.last() != Some(&count) {
            self.document_index.push(count);
        }
    }

    pub fn sequences(&self) -> usize {
        self.lengths.len()
    }

    pub fn documents(&self) -> usize {
        self.document_index.len() - 1
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Commits `.bin`, then writes and commits `.idx`; returns their digests. Sequences
    /// after the last `end_document` become a final document.
    pub fn finish(mut self) -> Result<(FileDigest, FileDigest)> {
        self.end_document();
        let bin = self.bin.commit()?;
        let mut idx = AtomicFile::create(&self.idx_path)?;
        idx.write_all(INDEX_MAGIC)?;
        idx.write_all(&INDEX_VERSION.to_le_bytes())?;
        idx.write_all(&[self.dtype.code()])?;
        idx.write_all(&(self.lengths.len() as u64).to_le_bytes())?;
        idx.write_all(&(self.document_index.len() as u64).to_le_bytes())?;
        for len in &self.lengths {
            idx.write_all(&len.to_le_bytes())?;
        }
        let mut offset = 0i64;
        for len in &self.lengths {
            idx.write_all(&offset.to_le_bytes())?;
            offset += *len as i64 * self.dtype.size() as i64;
        }
        for doc in &self.document_index {
            idx.write_all(&doc.to_le_bytes())?;
        }
        Ok((bin, idx.commit()?))
    }
}

/// A memory-mapped shard. Opening validates the whole index against the `.bin` size, so
/// that reading a sequence afterwards cannot go out of bounds.
pub struct IndexedDataset {
    idx: Mmap,
    bin: Mmap,
    dtype: TokenDtype,
    sequences: usize,
    documents: usize,
    path: PathBuf,
}

impl IndexedDataset {
    pub fn open(prefix: &Path) -> Result<Self> {
        let (bin_path, idx_path) = shard_paths(prefix);
        let idx = map(&idx_path)?;
        let bin = map(&bin_path)?;
        let (dtype, sequences, documents) =
            parse_header(&idx).with_context(|| format!("{}", idx_path.display()))?;
        let dataset = IndexedDataset {
            idx,
            bin,
            dtype,
            sequences,
            documents,
            path: prefix.to_path_buf(),
        };
        dataset
            .validate()
            .with_context(|| format!("{}: index does not match .bin", prefix.display()))?;
        Ok(dataset)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }

    pub fn sequences(&self) -> usize {
        self.sequences
    }

    pub fn documents(&self) -> usize {
        self.documents
    }

    pub fn sequence_len(&self, i: usize) -> usize {
        read_i32(&self.idx, HEADER_LEN + 4 * i) as usize
    }

    fn sequence_offset(&self, i: usize) -> usize {
        read_i64(&self.idx, HEADER_LEN + 4 * self.sequences + 8 * i) as usize
    }

    /// The sequences of document `d`: `document_index[d]..document_index[d + 1]`.
    pub fn document(&self, d: usize) -> std::ops::Range<usize> {
        self.document_index(d)..self.document_index(d + 1)
    }

    fn document_index(&self, d: usize) -> usize {
        read_i64(&self.idx, HEADER_LEN + 12 * self.sequences + 8 * d) as usize
    }

    /// Appends sequence `i`'s token ids to `out`.
    pub fn read_sequence(&self, i: usize, out: &mut Vec<u32>) {
        self.read_range(i, 0, self.sequence_len(i), out);
    }

    /// Appends tokens `from..to` of sequence `i` (clamped to its length) to `out`, decoding
    /// only those: a truncated instance reads what it keeps.
    pub fn read_range(&self, i: usize, from: usize, to: usize, out: &mut Vec<u32>) {
        let len = self.sequence_len(i);
        let (from, to) = (from.min(len), to.min(len).max(from.min(len)));
        let size = self.dtype.size();
        let start = self.sequence_offset(i) + from * size;
        let bytes = &self.bin[start..start + (to - from) * size];
        match self.dtype {
            TokenDtype::U16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            ),
            TokenDtype::I32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32),
            ),
        }
    }

    pub fn total_tokens(&self) -> u64 {
        (self.bin.len() / self.dtype.size()) as u64
    }

    fn validate(&self) -> Result<()> {
        let expected_idx = HEADER_LEN + 12 * self.sequences + 8 * (self.documents + 1);
        ensure!(
            self.idx.len() == expected_idx,
            "index is {} bytes, expected {expected_idx} for {} sequences and {} documents",
            self.idx.len(),
            self.sequences,
            self.documents
        );
        let mut offset = 0usize;
        for i in 0..self.sequences {
            let len = read_i32(&self.idx, HEADER_LEN + 4 * i);
            ensure!(len >= 0, "sequence {i} has negative length {len}");
            ensure!(
                self.sequence_offset(i) == offset,
                "sequence {i} starts at byte {}, expected {offset}",
                self.sequence_offset(i)
            );
            offset += len as usize * self.dtype.size();
        }
        ensure!(
            offset == self.bin.len(),
            ".bin is {} bytes, the index describes {offset}",
            self.bin.len()
        );
        let mut previous = 0usize;
        for d in 0..=self.documents {
            let at = self.document_index(d);
            ensure!(
                (d > 0 || at == 0) && at >= previous && at <= self.sequences,
                "document index entry {d} is {at}: not increasing within 0..={}",
                self.sequences
            );
            previous = at;
        }
        ensure!(
            previous == self.sequences,
            "the document index ends at {previous}, not at the {} sequences",
            self.sequences
        );
        Ok(())
    }
}

fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: shards are written once, renamed into place and never modified afterwards.
    unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))
}

fn parse_header(idx: &[u8]) -> Result<(TokenDtype, usize, usize)> {
    ensure!(
        idx.len() >= HEADER_LEN,
        "truncated index header ({} bytes)",
        idx.len()
    );
    if &idx[..9] != INDEX_MAGIC {
        bail!("not a Megatron index: magic is not MMIDIDX");
    }
    let version = u64::from_le_bytes(idx[9..17].try_into().expect("8 bytes"));
    ensure!(
        version == INDEX_VERSION,
        "index version {version}, expected {INDEX_VERSION}"
    );
    let dtype = TokenDtype::from_code(idx[17]).with_context(|| {
        format!(
            "token dtype code {} (expected 8 uint16 or 4 int32)",
            idx[17]
        )
    })?;
    let sequences = u64::from_le_bytes(idx[18..26].try_into().expect("8 bytes")) as usize;
    let doc_entries = u64::from_le_bytes(idx[26..34].try_into().expect("8 bytes")) as usize;
    ensure!(
        doc_entries >= 1,
        "document index is empty (expected at least [0])"
    );
    Ok((dtype, sequences, doc_entries - 1))
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, dtype: TokenDtype, docs: &[Vec<Vec<u32>>]) -> PathBuf {
        let prefix = dir.join("shard");
        let mut w = IndexedDatasetWriter::create(&prefix, dtype).unwrap();
        for doc in docs {
            for seq in doc {
                w.add_sequence(seq).unwrap();
            }
            w.end_document();
        }
        w.finish().unwrap();
        prefix
    }

    #[test]
    fn round_trips_documents_and_sequences() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = vec![
            vec![vec![101, 7592, 102], vec![5]],
            vec![vec![60000, 1, 2, 3]],
        ];
        let ds = IndexedDataset::open(&write(tmp.path(), TokenDtype::U16, &docs)).unwrap();
        assert_eq!((ds.sequences(), ds.documents()), (3, 2));
        assert_eq!(ds.document(0), 0..2);
        assert_eq!(ds.document(1), 2..3);
        let mut out = Vec::new();
        ds.read_sequence(2, &mut out);
        assert_eq!(out, vec![60000, 1, 2, 3]);
        assert_eq!(ds.total_tokens(), 8);
    }

    #[test]
    fn index_bytes_are_megatrons_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let prefix = write(tmp.path(), TokenDtype::I32, &[vec![vec![1, 2], vec![3]]]);
        let idx = std::fs::read(shard_paths(&prefix).1).unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"MMIDIDX\x00\x00");
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.push(4);
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&2i32.to_le_bytes());
        expected.extend_from_slice(&1i32.to_le_bytes());
        expected.extend_from_slice(&0i64.to_le_bytes());
        expected.extend_from_slice(&8i64.to_le_bytes());
        expected.extend_from_slice(&0i64.to_le_bytes());
        expected.extend_from_slice(&2i64.to_le_bytes());
        assert_eq!(idx, expected);
        let bin = std::fs::read(shard_paths(&prefix).0).unwrap();
        assert_eq!(bin, [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    }

    #[test]
    fn dtype_follows_megatron_threshold() {
        assert_eq!(TokenDtype::for_vocab_size(28_996), TokenDtype::U16);
        assert_eq!(TokenDtype::for_vocab_size(65_500), TokenDtype::I32);
    }

    #[test]
    fn truncated_bin_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let prefix = write(tmp.path(), TokenDtype::U16, &[vec![vec![1, 2, 3]]]);
        let bin = shard_paths(&prefix).0;
        let bytes = std::fs::read(&bin).unwrap();
        std::fs::write(&bin, &bytes[..4]).unwrap();
        let err = format!("{:#}", IndexedDataset::open(&prefix).err().unwrap());
        assert!(err.contains(".bin is 4 bytes"), "{err}");
    }

    #[test]
    fn oversized_id_for_uint16_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = IndexedDatasetWriter::create(&tmp.path().join("s"), TokenDtype::U16).unwrap();
        assert!(w.add_sequence(&[70_000]).is_err());
    }
}
