//! Fine-tuning checkpoints, one after each epoch, so that a pre-empted run resumes with
//! `--resume auto` where it stopped: `OUT/checkpoints/epoch_NNNN/` holds the parameters,
//! the optimizer's moments, the best epoch's parameters so far (when one is being chosen)
//! and `state.json`. Written under a temporary name, synced, and renamed; the newest two are
//! kept, so that one cut short (found by its files' lengths) falls back to the one before.
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
    /// Steps done in the epoch after them, when a stop signal ended the run mid-epoch (0:
    /// at an epoch's end). Absent in checkpoints of earlier versions.
    #[serde(default)]
    pub step_in_epoch: u64,
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

/// The newest complete checkpoint in `out`, if any. One cut short (a file shorter than its
/// header says, or no readable state) is passed over with a warning for the one before it.
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
    while let Some(dir) = found.pop() {
        match complete(&dir) {
            Ok(()) => return Some(dir),
            Err(e) => eprintln!("warning: {e:#}; passed over for the checkpoint before it"),
        }
    }
    None
}

/// Whether every file of checkpoint `dir` is whole: state.json parses and each
/// safetensors file is as long as its header says (a read of the headers alone).
fn complete(dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(dir.join("state.json"))
        .with_context(|| format!("{}: cannot read", dir.join("state.json").display()))?;
    serde_json::from_str::<FinetuneState>(&text)
        .with_context(|| format!("{}: not a fine-tuning checkpoint state", dir.display()))?;
    for file in [
        "parameters.safetensors",
        "optimizer.safetensors",
        "best.safetensors",
    ] {
        let path = dir.join(file);
        if file == "best.safetensors" && !path.exists() {
            continue;
        }
        let (expected, actual) = safetensors_lengths(&path)?;
        if expected != actual {
            bail!(
                "{}: cut short ({actual} bytes, its header says {expected})",
                path.display()
            );
        }
    }
    Ok(())
}

/// (the length a safetensors file's header implies, its length on disk).
fn safetensors_lengths(path: &Path) -> Result<(u64, u64)> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let actual = f.metadata()?.len();
    let mut size = [0u8; 8];
    f.read_exact(&mut size)
        .with_context(|| format!("{}: cut short (no header)", path.display()))?;
    let n = u64::from_le_bytes(size);
    if n > actual {
        bail!(
            "{}: cut short (header of {n} bytes in {actual})",
            path.display()
        );
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{}: cut short (header)", path.display()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .with_context(|| format!("{}: not a safetensors header", path.display()))?;
    let end = header
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    Ok((8 + n + end, actual))
}

pub fn save(
    out: &Path,
    state: &FinetuneState,
    parameters: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
    best: Option<&[(String, Tensor)]>,
) -> Result<PathBuf> {
    // A mid-epoch checkpoint (a stop signal) sorts after its epoch's start and before its
    // end: epoch_0002 < epoch_0002_step_000040 < epoch_0003.
    let name = match state.step_in_epoch {
        0 => format!("epoch_{:04}", state.epoch),
        step => format!("epoch_{:04}_step_{step:06}", state.epoch),
    };
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
    // On disk before the rename makes it the newest: a crash cannot leave a complete name
    // over incomplete files.
    for entry in std::fs::read_dir(&tmp)?.flatten() {
        sync(&entry.path())?;
    }
    sync(&tmp)?;
    std::fs::rename(&tmp, &dir).with_context(|| format!("{}: cannot rename", tmp.display()))?;
    sync(&folder(out))?;
    // The one before stays as a fallback; older ones go once the new one is complete.
    let mut older: Vec<PathBuf> = std::fs::read_dir(folder(out))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            *p != dir
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("epoch_"))
        })
        .collect();
    older.sort();
    older.pop();
    for p in older {
        let _ = std::fs::remove_dir_all(&p);
    }
    Ok(dir)
}

fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: u64) -> FinetuneState {
        let config = crate::config::finetune_config::FinetuneConfig::from_text(
            include_str!("../../configs/finetune_ner.toml"),
            "finetune_ner.toml",
            &[],
        )
        .unwrap();
        FinetuneState {
            task: "ner".into(),
            epoch,
            step: epoch * 10,
            best_f1: None,
            step_in_epoch: 0,
            best_epoch: epoch,
            labels: vec!["O".into(), "B".into(), "I".into()],
            config,
            inputs: None,
        }
    }

    /// The newest two checkpoints are kept; one cut short is passed over for the one before.
    #[test]
    fn a_checkpoint_cut_short_falls_back_to_the_one_before() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        let tensors = vec![("w".to_string(), Tensor::ones([64], tch::kind::FLOAT_CPU))];
        for epoch in 1..=3 {
            save(out, &state(epoch), &tensors, &tensors, None).unwrap();
        }
        let names: Vec<String> = {
            let mut n: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names, ["epoch_0002", "epoch_0003"]);
        assert_eq!(latest(out).unwrap(), out.join("checkpoints/epoch_0003"));
        let params = out.join("checkpoints/epoch_0003/parameters.safetensors");
        let bytes = std::fs::read(&params).unwrap();
        std::fs::write(&params, &bytes[..bytes.len() - 10]).unwrap();
        assert_eq!(latest(out).unwrap(), out.join("checkpoints/epoch_0002"));
        assert_eq!(load(&latest(out).unwrap()).unwrap().state.epoch, 2);
        std::fs::write(out.join("checkpoints/epoch_0002/state.json"), "{").unwrap();
        assert_eq!(latest(out), None);
    }
}
