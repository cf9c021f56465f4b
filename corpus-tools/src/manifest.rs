//! `manifest.json`: what a corpus folder holds and how it was made — the tool version,
//! the tokenizer and its hash, the settings, every shard with its counts and checksums,
//! and every source file with its hash. The trainer refuses shards whose tokenizer hash
//! differs from its model's vocabulary.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{AtomicFile, FileDigest};
use crate::extract::{Counts, SourceFile};
use crate::tokenizer::TokenizerInfo;

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT: &str = "biobert-corpus/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// `corpus-tools X.Y.Z`.
    pub tool: String,
    /// The command that wrote it: `prepare`, `extract` or `shard`.
    pub command: String,
    pub tokenizer: Option<TokenizerInfo>,
    pub settings: Settings,
    pub totals: Totals,
    /// Records seen, documents kept, skips by reason, licences.
    pub counts: Counts,
    pub shards: Vec<ShardEntry>,
    pub sources: Vec<SourceFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub languages: Vec<String>,
    pub abstract_labels: bool,
    pub license_subset: Option<Vec<String>>,
    pub on_error: String,
    /// Token shards close at the first document boundary at or past this many tokens.
    pub target_tokens: Option<u64>,
    /// Text-only shards close at the first document boundary past this many bytes.
    pub target_text_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub documents: u64,
    pub sentences: u64,
    pub tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// `shard_00000`: the text shard is `NAME.txt.zst`, the token shard `NAME.bin/.idx`.
    pub name: String,
    pub documents: u64,
    pub sentences: u64,
    pub tokens: u64,
    pub first_document: String,
    pub last_document: String,
    /// Input file index and record number of the last document (for `--resume`).
    pub end: (usize, u64),
    pub text: Option<FileDigest>,
    pub bin: Option<FileDigest>,
    pub idx: Option<FileDigest>,
    /// `uint16` or `int32`, for token shards.
    pub dtype: Option<String>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("{}: cannot read (is this a corpus folder?)", path.display())
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a corpus manifest", path.display()))?;
        if manifest.format != FORMAT {
            bail!(
                "{}: format {:?}, expected {FORMAT:?}",
                path.display(),
                manifest.format
            );
        }
        // Every file the manifest names lives in the corpus folder: a name that climbs out
        // of it (`../`, an absolute path) would have readers open files elsewhere.
        let names = manifest
            .shards
            .iter()
            .map(|s| s.name.as_str())
            .chain(manifest.tokenizer.as_ref().map(|t| t.file.as_str()));
        for name in names {
            if !is_plain_file_name(name) {
                bail!(
                    "{}: names the file {name:?}, outside the corpus folder; expected a plain file name",
                    path.display()
                );
            }
        }
        Ok(manifest)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join(MANIFEST), self)
    }
}

/// A name with no folder part: not empty, no `/`, not `.` or `..`.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.contains('\\') && name != "." && name != ".."
}

/// Writes JSON atomically (temporary name, sync, rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    serde_json::to_writer_pretty(&mut file, value)?;
    std::io::Write::write_all(&mut file, b"\n")?;
    file.commit()?;
    Ok(())
}

pub fn tool_version() -> String {
    format!("corpus-tools {}", env!("CARGO_PKG_VERSION"))
}
