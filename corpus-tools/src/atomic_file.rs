//! Output files written under a temporary name, hashed as written, flushed to disk and
//! then renamed: a crash leaves either the previous state or the finished file, never a
//! partial one under the final name.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::inputs::hex;

/// The temporary name of a final path: `NAME.tmp`.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Size and sha256 of a finished file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDigest {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

pub struct AtomicFile {
    writer: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
    tmp: PathBuf,
    path: PathBuf,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temporary_path(path);
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(AtomicFile {
            writer: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            bytes: 0,
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// Flushes, syncs and renames into place.
    pub fn commit(mut self) -> Result<FileDigest> {
        self.writer.flush()?;
        self.writer
            .get_ref()
            .sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("renaming {} into place", self.tmp.display()))?;
        Ok(FileDigest {
            file: file_name(&self.path),
            bytes: self.bytes,
            sha256: hex(&self.hasher.finalize()),
        })
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.writer.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Writes `path` through `write`, which fills the temporary file it is given (a writer
/// that takes a path, such as a tensor library's), then syncs it and renames it into place.
/// On an error the temporary file is removed and `path` is untouched.
pub fn write_via(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temporary_path(path);
    let written = write(&tmp).and_then(|()| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", tmp.display()))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
}

/// Writes `bytes` to `path` through a temporary file (see `write_via`).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via(path, |tmp| {
        std::fs::write(tmp, bytes).with_context(|| format!("writing {}", tmp.display()))
    })
}

pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

/// The digest of a file on disk (for files written by other code, and for `verify`).
pub fn digest_file(path: &Path) -> Result<FileDigest> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let bytes =
        io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(FileDigest {
        file: file_name(path),
        bytes,
        sha256: hex(&hasher.finalize()),
    })
}

/// Removes leftover temporary files (`*.tmp`) in a folder, from an interrupted run.
pub fn remove_temporaries(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}
