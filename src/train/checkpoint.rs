//! Checkpoints: a folder per step under `<out>/checkpoints/` holding `model.safetensors`
//! (Hugging Face names), `optimizer.safetensors`, `trainer_state.json`, and the model's
//! `config.json` and `vocab.txt` (so that `embed` and `export` take it as it is).
//!
//! A checkpoint is written under a temporary name, every file flushed to disk, then
//! renamed; `latest` names it, replaced atomically; the last K are kept. A crash at any
//! moment leaves the previous checkpoint loadable, and `--resume auto` skips a folder that
//! does not hold every file at the size its state records.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use crate::config::run_config::RunConfig;
use crate::model::bert_config::BertConfig;

pub const LATEST: &str = "latest";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub samples_consumed: u64,
    /// Data and dropout draws are functions of (seed, step, sample), so these and the
    /// config are the whole random state.
    pub data_seed: u64,
    pub train_seed: u64,
    pub world_size: usize,
    pub config: RunConfig,
    pub versions: BTreeMap<String, String>,
    /// Size of every file of the checkpoint, checked on resume.
    pub files: BTreeMap<String, u64>,
    /// sha256 of the corpus' manifest.json: resuming on another corpus is refused unless
    /// asked for (empty in checkpoints written before it was recorded).
    #[serde(default)]
    pub corpus_manifest_sha256: String,
}

pub fn step_name(step: u64) -> String {
    format!("step_{step:08}")
}

/// Writes a checkpoint; returns its folder.
pub fn save(
    root: &Path,
    vs: &VarStore,
    bert_config: &BertConfig,
    vocab: &Path,
    optimizer_state: Vec<(String, Tensor)>,
    mut state: TrainerState,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let name = step_name(state.step);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    // A failure (a full disk, say) leaves the previous checkpoint and no half-written one.
    if let Err(e) = write_files(&tmp, vs, bert_config, vocab, optimizer_state, &mut state) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dest = root.join(&name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    std::fs::rename(&tmp, &dest)?;
    File::open(root)?.sync_all()?;
    let pointer = root.join(format!("{LATEST}.tmp"));
    std::fs::write(&pointer, format!("{name}\n"))?;
    File::open(&pointer)?.sync_all()?;
    std::fs::rename(&pointer, root.join(LATEST))?;
    prune(root, keep)?;
    Ok(dest)
}

/// The files of a checkpoint, each error naming its file.
fn write_files(
    tmp: &Path,
    vs: &VarStore,
    bert_config: &BertConfig,
    vocab: &Path,
    optimizer_state: Vec<(String, Tensor)>,
    state: &mut TrainerState,
) -> Result<()> {
    let path = |f: &str| tmp.join(f);
    let named = |f: &str| format!("writing {}", tmp.join(f).display());
    crate::model::hf_checkpoint::write_weights(vs, &path("model.safetensors"))?;
    Tensor::write_safetensors(&optimizer_state, path("optimizer.safetensors"))
        .with_context(|| named("optimizer.safetensors"))?;
    std::fs::write(
        path("config.json"),
        serde_json::to_string_pretty(&bert_config.to_hf_json())? + "\n",
    )
    .with_context(|| named("config.json"))?;
    std::fs::copy(vocab, path("vocab.txt")).with_context(|| named("vocab.txt"))?;
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "config.json",
        "vocab.txt",
    ] {
        let size = std::fs::metadata(path(f)).with_context(|| named(f))?.len();
        state.files.insert(f.into(), size);
    }
    std::fs::write(
        path("trainer_state.json"),
        serde_json::to_string_pretty(&state)? + "\n",
    )
    .with_context(|| named("trainer_state.json"))?;
    for entry in std::fs::read_dir(tmp)? {
        let entry = entry?.path();
        File::open(&entry)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", entry.display()))?;
    }
    Ok(())
}

fn step_folders(root: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step_")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn prune(root: &Path, keep: usize) -> Result<()> {
    let folders = step_folders(root);
    let excess = folders.len().saturating_sub(keep.max(1));
    for (_, path) in &folders[..excess] {
        std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Reads a checkpoint's state after checking that every file is whole.
pub fn validate(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("trainer_state.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("{}: missing", path.display()))?;
    let state: TrainerState =
        serde_json::from_str(&text).with_context(|| format!("{}: unreadable", path.display()))?;
    for (file, size) in &state.files {
        let actual = std::fs::metadata(dir.join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        if actual != *size {
            bail!(
                "{}: {file} is {actual} bytes, the state records {size}",
                dir.display()
            );
        }
    }
    Tensor::read_safetensors(dir.join("model.safetensors"))
        .with_context(|| format!("{}: model.safetensors unreadable", dir.display()))?;
    Ok(state)
}

/// The newest valid checkpoint under `root`, warning about the invalid ones passed over.
pub fn newest_valid(root: &Path) -> Option<(PathBuf, TrainerState)> {
    for (_, path) in step_folders(root).into_iter().rev() {
        match validate(&path) {
            Ok(state) => return Some((path, state)),
            Err(e) => eprintln!("warning: skipping checkpoint {}: {e:#}", path.display()),
        }
    }
    None
}
