//! Finding and opening the raw NCBI files: PubMed `.xml` / `.xml.gz`, PMC `.nxml` /
//! `.xml` / `.txt` and `.tar.gz` bulk packages (read as streams, never unpacked to disk).
//! Raw bytes are hashed as they are read, so each source's sha256 costs no extra pass.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Collection {
    Pubmed,
    Pmc,
    /// Text shards, the input of `shard`.
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// XML, possibly gzip-compressed (PubMed files, JATS articles).
    Xml,
    /// The PMC OA plain-text format.
    OaText,
    /// A `.tar.gz` of PMC articles.
    TarGz,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub collection: Collection,
    pub format: Format,
    pub gzip: bool,
    pub bytes: u64,
}

/// Expands files and folders (recursively) into inputs, sorted by file name and then by
/// path: PubMed's baseline and update files are numbered so that this is their order.
pub fn discover(paths: &[PathBuf], collection: Collection) -> Result<Vec<Input>> {
    let mut found = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
        if meta.is_dir() {
            let before = found.len();
            walk(path, collection, &mut found)?;
            if found.len() == before {
                bail!(
                    "{}: no input files in this folder (expected {})",
                    path.display(),
                    expected_extensions(collection)
                );
            }
        } else {
            match classify(path, collection) {
                Some(input) => found.push(input?),
                None => bail!(
                    "{}: not a recognised input (expected {})",
                    path.display(),
                    expected_extensions(collection)
                ),
            }
        }
    }
    found.sort_by(|a, b| (a.path.file_name(), &a.path).cmp(&(b.path.file_name(), &b.path)));
    found.dedup_by(|a, b| a.path == b.path);
    Ok(found)
}

fn expected_extensions(collection: Collection) -> &'static str {
    match collection {
        Collection::Pubmed => ".xml or .xml.gz",
        Collection::Pmc => ".nxml, .xml, .xml.gz, .txt or .tar.gz",
        Collection::Text => ".txt.zst",
    }
}

/// The folder's input files, recursively. A link to a folder is not followed: it may lead
/// out of the input tree or back into it (a loop); the folder itself can be given as an
/// input instead. Links to files are read.
fn walk(dir: &Path, collection: Collection, out: &mut Vec<Input>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if kind.is_dir() {
            walk(&path, collection, out)?;
        } else if kind.is_symlink() && path.is_dir() {
            eprintln!(
                "warning: {}: a link to a folder, not followed (give that folder as an input to read it)",
                path.display()
            );
        } else if let Some(input) = classify(&path, collection) {
            out.push(input?);
        }
    }
    Ok(())
}

fn classify(path: &Path, collection: Collection) -> Option<Result<Input>> {
    let name = path.file_name()?.to_string_lossy().to_lowercase();
    let (format, gzip) = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        (Format::TarGz, true)
    } else if name.ends_with(".xml.gz") || name.ends_with(".nxml.gz") {
        (Format::Xml, true)
    } else if name.ends_with(".xml") || name.ends_with(".nxml") {
        (Format::Xml, false)
    } else if name.ends_with(".txt") && collection == Collection::Pmc {
        (Format::OaText, false)
    } else {
        return None;
    };
    if collection == Collection::Pubmed && format == Format::TarGz {
        return None;
    }
    let input = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot read", path.display()))
        .and_then(|m| {
            // A FIFO or a device would block the reader or never end.
            if !m.is_file() {
                bail!(
                    "{}: not a regular file (a pipe, socket or device cannot be an input)",
                    path.display()
                );
            }
            Ok(Input {
                path: path.to_path_buf(),
                collection,
                format,
                gzip,
                bytes: m.len(),
            })
        });
    Some(input)
}

/// Counts and hashes the raw bytes that pass through.
pub struct HashingReader<R> {
    inner: R,
    /// None when only counting (the ledger pass reads every file a second time).
    hasher: Option<Sha256>,
    bytes: u64,
    progress: Option<Arc<AtomicU64>>,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Some(Sha256::new()),
            bytes: 0,
            progress: None,
        }
    }

    /// Also adds every byte read to a shared counter (for progress across threads).
    pub fn count_into(&mut self, progress: Arc<AtomicU64>) {
        self.progress = Some(progress);
    }

    /// Counts without hashing.
    pub fn without_hash(mut self) -> Self {
        self.hasher = None;
        self
    }

    /// Reads what is left, then returns (bytes, sha256 hex; empty without a hash).
    pub fn finish(mut self) -> io::Result<(u64, String)> {
        io::copy(&mut self, &mut io::sink())?;
        let hash = self
            .hasher
            .take()
            .map_or(String::new(), |h| hex(&h.finalize()));
        Ok((self.bytes, hash))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.bytes += n as u64;
        if let Some(p) = &self.progress {
            p.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A shared handle on the raw byte counter, for progress while a decoder reads ahead.
pub type RawReader = HashingReader<BufReader<File>>;

/// Opens an input for reading its decompressed bytes; the raw reader keeps the hash.
pub fn open_raw(input: &Input) -> Result<RawReader> {
    let file = File::open(&input.path)
        .with_context(|| format!("{}: cannot open", input.path.display()))?;
    Ok(HashingReader::new(BufReader::with_capacity(1 << 20, file)))
}

/// A buffered decompressing view over a raw reader.
pub fn decompressed<'a, R: Read + 'a>(raw: R, gzip: bool) -> Box<dyn BufRead + 'a> {
    if gzip {
        Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(raw)))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, raw))
    }
}

/// What an I/O error deep in a reader means for the user (a truncated or corrupt gzip
/// stream, most often), whichever layer (quick-xml, tar, our code) wrapped it.
pub fn explain_io(error: &anyhow::Error) -> Option<&'static str> {
    let kind = error.chain().find_map(|e| {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        match e.downcast_ref::<quick_xml::Error>() {
            Some(quick_xml::Error::Io(io)) => Some(io.kind()),
            _ => None,
        }
    })?;
    match kind {
        io::ErrorKind::UnexpectedEof => Some("truncated file (the compressed stream ends early)"),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
            Some("truncated or corrupt compressed data")
        }
        _ => None,
    }
}

/// 1-based line number of a byte offset in the decompressed input, for error messages.
pub fn line_of(input: &Input, byte: u64) -> Option<u64> {
    let raw = open_raw(input).ok()?;
    let reader = decompressed(raw, input.gzip);
    let mut line = 1u64;
    for b in reader.bytes().take(byte as usize) {
        if b.ok()? == b'\n' {
            line += 1;
        }
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_sorts_by_file_name_and_rejects_empty_folders() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("b")).unwrap();
        std::fs::write(tmp.path().join("b/pubmed25n0002.xml.gz"), b"").unwrap();
        std::fs::write(tmp.path().join("pubmed25n0001.xml"), b"").unwrap();
        std::fs::write(tmp.path().join("README.txt"), b"").unwrap();
        let found = discover(&[tmp.path().to_path_buf()], Collection::Pubmed).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["pubmed25n0001.xml", "pubmed25n0002.xml.gz"]);
        assert!(found[1].gzip);
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = discover(&[empty], Collection::Pubmed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no input files"), "{err}");
    }

    /// A link to a folder is not followed (a loop, or a way out of the tree); a FIFO is
    /// refused by name instead of blocking the reader.
    #[test]
    fn folder_links_are_not_followed_and_fifos_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("in");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/pubmed25n0001.xml"), b"").unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("pubmed25n0009.xml"), b"").unwrap();
        std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("a/escape")).unwrap();
        std::os::unix::fs::symlink(
            root.join("a/pubmed25n0001.xml"),
            root.join("pubmed25n0002.xml"),
        )
        .unwrap();
        let found = discover(std::slice::from_ref(&root), Collection::Pubmed).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["pubmed25n0001.xml", "pubmed25n0002.xml"]);
        let fifo = root.join("pubmed25n0003.xml");
        let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let err = discover(&[root], Collection::Pubmed)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pubmed25n0003.xml: not a regular file"),
            "{err}"
        );
    }
}
