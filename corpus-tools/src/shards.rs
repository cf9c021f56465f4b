//! Writing a corpus folder: documents in, shards out.
//!
//! A shard is `NAME.txt.zst` (text, Google's layout) and/or `NAME.bin` + `NAME.idx`
//! (word pieces, Megatron's layout), holding the same documents. A shard closes at the
//! first document boundary at or past the target (tokens, or text bytes for text-only
//! corpora); its files are committed by rename, then `NAME.shard.json` records it.
//! That record is what `--resume` trusts: a shard without one is redone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::atomic_file;
use crate::extract::{Doc, Position};
use crate::indexed_dataset::{IndexedDatasetWriter, TokenDtype};
use crate::manifest::{self, ShardEntry, Totals};
use crate::text_shard::TextShardWriter;

#[derive(Debug, Clone, Copy)]
pub enum Target {
    Tokens(u64),
    TextBytes(u64),
}

pub struct ShardSink {
    dir: PathBuf,
    write_text: bool,
    token_dtype: Option<TokenDtype>,
    target: Target,
    open: Option<OpenShard>,
    pub entries: Vec<ShardEntry>,
}

struct OpenShard {
    name: String,
    text: Option<TextShardWriter>,
    tokens: Option<IndexedDatasetWriter>,
    documents: u64,
    sentences: u64,
    token_count: u64,
    text_bytes: u64,
    first_document: String,
    last_document: String,
    end: Position,
}

pub fn shard_name(index: usize) -> String {
    format!("shard_{index:05}")
}

fn record_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.shard.json"))
}

impl ShardSink {
    pub fn new(
        dir: &Path,
        write_text: bool,
        token_dtype: Option<TokenDtype>,
        target: Target,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        atomic_file::remove_temporaries(dir)?;
        Ok(ShardSink {
            dir: dir.to_path_buf(),
            write_text,
            token_dtype,
            target,
            open: None,
            entries: Vec::new(),
        })
    }

    /// The finished shards an interrupted run left, in order, stopping at the first gap.
    pub fn completed(dir: &Path) -> Result<Vec<ShardEntry>> {
        let mut entries = Vec::new();
        loop {
            let path = record_path(dir, &shard_name(entries.len()));
            let Ok(text) = std::fs::read_to_string(&path) else {
                break;
            };
            let entry: ShardEntry = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a shard record", path.display()))?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Continues after `entries`, shards an earlier run finished.
    pub fn resume_after(&mut self, entries: Vec<ShardEntry>) {
        self.entries = entries;
    }

    pub fn push(&mut self, doc: Doc) -> Result<()> {
        if self.open.is_none() {
            self.open = Some(self.open_shard(self.entries.len())?);
        }
        let shard = self.open.as_mut().expect("opened above");
        if let Some(text) = &mut shard.text {
            text.write_document(&doc.sentences)?;
        }
        if let Some(tokens) = &mut shard.tokens {
            for ids in &doc.tokens {
                tokens.add_sequence(ids)?;
            }
            tokens.end_document();
        }
        if shard.documents == 0 {
            shard.first_document = doc.id.clone();
        }
        shard.documents += 1;
        shard.sentences += doc.sentences.len() as u64;
        shard.token_count += doc.tokens.iter().map(|t| t.len() as u64).sum::<u64>();
        shard.text_bytes += doc
            .sentences
            .iter()
            .map(|s| s.len() as u64 + 1)
            .sum::<u64>()
            + 1;
        shard.last_document = doc.id;
        shard.end = doc.position;
        let full = match self.target {
            Target::Tokens(n) => shard.token_count >= n,
            Target::TextBytes(n) => shard.text_bytes >= n,
        };
        if full {
            self.close()?;
        }
        Ok(())
    }

    fn open_shard(&self, index: usize) -> Result<OpenShard> {
        let name = shard_name(index);
        let text = if self.write_text {
            Some(TextShardWriter::create(
                &self.dir.join(format!("{name}.txt.zst")),
            )?)
        } else {
            None
        };
        let tokens = match self.token_dtype {
            Some(dtype) => Some(IndexedDatasetWriter::create(&self.dir.join(&name), dtype)?),
            None => None,
        };
        Ok(OpenShard {
            name,
            text,
            tokens,
            documents: 0,
            sentences: 0,
            token_count: 0,
            text_bytes: 0,
            first_document: String::new(),
            last_document: String::new(),
            end: (0, 0),
        })
    }

    fn close(&mut self) -> Result<()> {
        let Some(shard) = self.open.take() else {
            return Ok(());
        };
        let text = shard.text.map(TextShardWriter::commit).transpose()?;
        let (bin, idx) = match shard.tokens {
            Some(t) => {
                let (bin, idx) = t.finish()?;
                (Some(bin), Some(idx))
            }
            None => (None, None),
        };
        let entry = ShardEntry {
            name: shard.name,
            documents: shard.documents,
            sentences: shard.sentences,
            tokens: shard.token_count,
            first_document: shard.first_document,
            last_document: shard.last_document,
            end: shard.end,
            text,
            bin,
            idx,
            dtype: self.token_dtype.map(|d| match d {
                TokenDtype::U16 => "uint16".to_string(),
                TokenDtype::I32 => "int32".to_string(),
            }),
        };
        manifest::write_json(&record_path(&self.dir, &entry.name), &entry)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Closes the last shard; returns every shard and the totals.
    pub fn finish(mut self) -> Result<(Vec<ShardEntry>, Totals)> {
        self.close()?;
        let totals = Totals {
            documents: self.entries.iter().map(|e| e.documents).sum(),
            sentences: self.entries.iter().map(|e| e.sentences).sum(),
            tokens: self.entries.iter().map(|e| e.tokens).sum(),
        };
        Ok((self.entries, totals))
    }

    /// Removes the open shard's temporary files (after an error).
    pub fn abandon(self) {
        let dir = self.dir.clone();
        drop(self.open);
        let _ = atomic_file::remove_temporaries(&dir);
    }
}
