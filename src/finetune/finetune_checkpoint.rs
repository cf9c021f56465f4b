//! Fine-tuning checkpoints, one after each epoch, so that a pre-empted run resumes with
//! `--resume auto` where it stopped: `OUT/checkpoints/epoch_NNNN/` holds the parameters,
//! the optimizer's moments, the best epoch's parameters so far (when one is being chosen)
//! and `state.json`. Written under a temporary name and renamed; only the newest is kept.
//! The data order and dropout draws are keyed by (seed, epoch, step), so a resumed run
//! repeats the uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::finetune_config::FinetuneConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneState {
    pub task: String,
    /// Epochs completed.
    pub epoch: u64,
    /// Optimizer steps taken.
    pub step: u64,
    pub best_f1: Option<f64>,
    pub best_epoch: u64,
    pub labels: Vec<String>,
    pub config: FinetuneConfig,
    /// What trained and chose the epoch: the sha256 of the training inputs (word-piece ids
    /// and targets, in file order, after --limit-train) and of the development inputs, so
    /// that a resume on edited files or another limit is refused. Absent in checkpoints of
    /// earlier versions, which are then not checked.
    #[serde(default)]
    pub inputs: Option<InputDigests>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputDigests {
    pub train: String,
    pub train_count: usize,
    pub dev: Option<String>,
}

/// What a checkpoint holds, read back.
pub struct Saved {
    pub state: FinetuneState,
    pub parameters: BTreeMap<String, Tensor>,
    pub optimizer: Vec<(String, Tensor)>,
    pub best: Option<BTreeMap<String, Tensor>>,
    pub dir: PathBuf,
}

fn folder(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The newest complete checkpoint in `out`, if any.
pub fn latest(out: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder(out))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with("epoch_") && !n.to_string_lossy().ends_with(".tmp")
            }) && p.join("state.json").is_file()
        })
        .collect();
    found.sort();
    found.pop()
}

pub fn save(
    out: &Path,
    state: &FinetuneState,
    parameters: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    best: Option<&[(String, Tensor)]>,
) -> Result<PathBuf> {
    let name = format!("epoch_{:04}", state.epoch);
    let dir = folder(out).join(&name);
    let tmp = folder(out).join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let write = |file: &str, tensors: &[(String, Tensor)]| -> Result<()> {
        Tensor::write_safetensors(tensors, tmp.join(file))
            .with_context(|| format!("writing {}", tmp.join(file).display()))
    };
    write("parameters.safetensors", parameters)?;
    write("optimizer.safetensors", optimizer)?;
    if let Some(best) = best {
        write("best.safetensors", best)?;
    }
    std::fs::write(
        tmp.join("state.json"),
        serde_json::to_string_pretty(state)? + "\n",
    )
    .with_context(|| format!("writing {}", tmp.join("state.json").display()))?;
    std::fs::rename(&tmp, &dir).with_context(|| format!("{}: cannot rename", tmp.display()))?;
    // Older checkpoints go once the new one is complete.
    for entry in std::fs::read_dir(folder(out))?.flatten() {
        let p = entry.path();
        if p != dir
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("epoch_"))
        {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    Ok(dir)
}

pub fn load(dir: &Path) -> Result<Saved> {
    let text = std::fs::read_to_string(dir.join("state.json"))
        .with_context(|| format!("{}: cannot read", dir.join("state.json").display()))?;
    let state: FinetuneState = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a fine-tuning checkpoint state", dir.display()))?;
    let read = |file: &str| -> Result<Vec<(String, Tensor)>> {
        Tensor::read_safetensors(dir.join(file))
            .with_context(|| format!("reading {}", dir.join(file).display()))
    };
    let best = if dir.join("best.safetensors").is_file() {
        Some(read("best.safetensors")?.into_iter().collect())
    } else {
        None
    };
    Ok(Saved {
        parameters: read("parameters.safetensors")?.into_iter().collect(),
        optimizer: read("optimizer.safetensors")?,
        best,
        state,
        dir: dir.to_path_buf(),
    })
}

/// A resumed run must be the same run: same task, labels, settings and inputs.
pub fn check_same_run(
    saved: &FinetuneState,
    task: &str,
    labels: &[String],
    config: &FinetuneConfig,
    inputs: &InputDigests,
    dir: &Path,
) -> Result<()> {
    if let Some(was) = &saved.inputs {
        if was.train != inputs.train || was.train_count != inputs.train_count {
            bail!(
                "{}: written for other training data ({} inputs, sha256 {}…; now {} inputs, sha256 {}…): resume with the same files and --limit-train, or choose another --out",
                dir.display(),
                was.train_count,
                &was.train[..12.min(was.train.len())],
                inputs.train_count,
                &inputs.train[..12.min(inputs.train.len())]
            );
        }
        if was.dev != inputs.dev {
            bail!(
                "{}: written with another development set (it chooses the epoch): resume with the same files and --limit-eval, or choose another --out",
                dir.display()
            );
        }
    }
    if saved.task != task || saved.labels != labels {
        bail!(
            "{}: a checkpoint of finetune {} with labels {}, not of this run; choose another --out",
            dir.display(),
            saved.task,
            saved.labels.join(", ")
        );
    }
    if saved.config != *config {
        bail!(
            "{}: written with other settings ({}); resume with the same ones, or choose another --out",
            dir.display(),
            toml::to_string(&saved.config)?.trim().replace('\n', ", ")
        );
    }
    Ok(())
}
