//! Text shards: zstd-compressed UTF-8, one sentence a line, an empty line between
//! documents: the input format of Google's `create_pretraining_data.py`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::atomic_file::{AtomicFile, FileDigest};

const ZSTD_LEVEL: i32 = 3;

pub struct TextShardWriter {
    encoder: zstd::Encoder<'static, AtomicFile>,
    documents: u64,
    sentences: u64,
    text_bytes: u64,
}

impl TextShardWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        Ok(TextShardWriter {
            encoder: zstd::Encoder::new(file, ZSTD_LEVEL)?,
            documents: 0,
            sentences: 0,
            text_bytes: 0,
        })
    }

    /// Writes a document; sentences must not contain line breaks.
    pub fn write_document(&mut self, sentences: &[String]) -> Result<()> {
        if sentences.is_empty() {
            return Ok(());
        }
        if self.documents > 0 {
            self.encoder.write_all(b"\n")?;
            self.text_bytes += 1;
        }
        for s in sentences {
            debug_assert!(!s.contains('\n') && !s.is_empty());
            self.encoder.write_all(s.as_bytes())?;
            self.encoder.write_all(b"\n")?;
            self.text_bytes += s.len() as u64 + 1;
        }
        self.documents += 1;
        self.sentences += sentences.len() as u64;
        Ok(())
    }

    pub fn documents(&self) -> u64 {
        self.documents
    }

    pub fn sentences(&self) -> u64 {
        self.sentences
    }

    /// Uncompressed bytes written so far.
    pub fn text_bytes(&self) -> u64 {
        self.text_bytes
    }

    pub fn commit(self) -> Result<FileDigest> {
        let file = self.encoder.finish()?;
        file.commit()
    }
}

/// Reads the documents of a text shard in order, handing each to `visit`.
pub fn for_each_document(
    path: &Path,
    mut visit: impl FnMut(Vec<String>) -> Result<()>,
) -> Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let decoder =
        zstd::Decoder::new(file).with_context(|| format!("{}: not zstd", path.display()))?;
    let reader = BufReader::with_capacity(1 << 20, decoder);
    let mut document = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| {
            format!(
                "{}: line {}: unreadable (truncated zstd stream or not UTF-8)",
                path.display(),
                n + 1
            )
        })?;
        if line.is_empty() {
            if document.is_empty() {
                bail!(
                    "{}: line {}: two empty lines in a row (expected one between documents)",
                    path.display(),
                    n + 1
                );
            }
            visit(std::mem::take(&mut document))?;
        } else {
            document.push(line);
        }
    }
    if !document.is_empty() {
        visit(document)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_googles_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s.txt.zst");
        let mut w = TextShardWriter::create(&path).unwrap();
        w.write_document(&["A one.".into(), "A two.".into()])
            .unwrap();
        w.write_document(&["B one.".into()]).unwrap();
        let digest = w.commit().unwrap();
        assert_eq!(digest.file, "s.txt.zst");
        assert!(!tmp.path().join("s.txt.zst.tmp").exists());
        let raw = zstd::decode_all(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            "A one.\nA two.\n\nB one.\n"
        );
        let mut docs = Vec::new();
        for_each_document(&path, |d| {
            docs.push(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(docs, vec![vec!["A one.", "A two."], vec!["B one."]]);
    }
}
