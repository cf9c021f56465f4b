//! Hugging Face BERT folders in and out: `config.json`, `model.safetensors` (or a
//! `pytorch_model.bin` that `torch.save` wrote as a flat dict, read by
//! `torch_pickle`'s restricted unpickler), `vocab.txt`.
//!
//! Import accepts names with or without the `bert.` prefix (sentence-transformers and
//! `BertModel` checkpoints lack it), under `module.` (DataParallel) or `_orig_mod.`
//! (torch.compile), the old `gamma`/`beta` LayerNorm names, and ignores
//! `position_ids` buffers; `cls.predictions.decoder.weight` is the word embeddings (tied)
//! and `cls.predictions.decoder.bias` an alias of `cls.predictions.bias`. Tensors the model
//! has and the file lacks (the pretraining heads of a `BertModel`) keep BERT's
//! initialisation: normal(0, initializer_range) weights, zero biases, unit LayerNorm; a
//! missing embedding or encoder tensor is an error (`LoadReport::require_encoder`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::model::bert_config::BertConfig;

/// What an import matched, for the one-line report.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    /// Model tensors the checkpoint lacks (initialised as BERT does).
    pub missing: Vec<String>,
    /// Checkpoint tensors the model has no place for.
    pub unexpected: Vec<String>,
}

impl LoadReport {
    /// One short line: counts, and at most a few names of each list.
    pub fn summary(&self) -> String {
        let list = |v: &[String]| short_list(v, 4);
        format!(
            "loaded {} tensors; missing (initialised): {}; unexpected (ignored): {}",
            self.loaded,
            list(&self.missing),
            list(&self.unexpected)
        )
    }
}

impl LoadReport {
    /// The tensors a checkpoint may lack and still be a starting point: the pretraining
    /// heads (`cls.*`) and the pooler that only NSP uses. A missing embedding or encoder
    /// tensor means the names did not match (another model, an unknown prefix): training
    /// from random weights would look like continuing from the checkpoint.
    pub fn require_encoder(&self, source: &str) -> Result<()> {
        let encoder: Vec<String> = self
            .missing
            .iter()
            .filter(|n| {
                !n.starts_with("cls.")
                    && !n.starts_with("bert.pooler.")
                    && !n.starts_with("classifier.")
                    && !n.starts_with("qa_outputs.")
            })
            .cloned()
            .collect();
        if !encoder.is_empty() && self.unexpected.is_empty() {
            bail!(
                "{source}: {} of the model's embedding and encoder tensors are not in the checkpoint ({}), and it holds no other names: an incomplete or cut checkpoint",
                encoder.len(),
                short_list(&encoder, 3)
            );
        }
        if !encoder.is_empty() {
            bail!(
                "{source}: {} of the model's embedding and encoder tensors are not in the checkpoint ({}); its names are {}: not a BERT checkpoint, or one with a prefix this reader does not know",
                encoder.len(),
                short_list(&encoder, 3),
                short_list(&self.unexpected, 3)
            );
        }
        Ok(())
    }
}

/// "a, b, c and 12 more", or "none".
fn short_list(names: &[String], at_most: usize) -> String {
    if names.is_empty() {
        return "none".to_string();
    }
    let shown = names[..names.len().min(at_most)].join(", ");
    match names.len().saturating_sub(at_most) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Reads the weights of a Hugging Face folder as (HF name, tensor) in `BertForPreTraining`'s
/// naming.
pub fn read_weights(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let safetensors = dir.join("model.safetensors");
    let bin = dir.join("pytorch_model.bin");
    let raw = if safetensors.is_file() {
        Tensor::read_safetensors(&safetensors)
            .with_context(|| format!("{}: unreadable", safetensors.display()))?
    } else if bin.is_file() {
        // Read by a restricted unpickler: nothing the file names is ever run.
        crate::model::torch_pickle::read_state_dict(&bin)?
    } else {
        bail!(
            "{}: no model.safetensors or pytorch_model.bin",
            dir.display()
        );
    };
    let mut out = BTreeMap::new();
    for (name, tensor) in raw {
        if let Some(name) = canonical_name(&name) {
            out.insert(name, tensor);
        }
    }
    Ok(out)
}

/// The `BertForPreTraining` name of a checkpoint tensor; `None` for buffers to ignore.
pub fn canonical_name(name: &str) -> Option<String> {
    if name.ends_with("position_ids") {
        return None;
    }
    // Wrappers' prefixes: DataParallel / DistributedDataParallel (`module.`) and
    // torch.compile (`_orig_mod.`), possibly nested.
    let mut n = name;
    while let Some(rest) = n
        .strip_prefix("module.")
        .or_else(|| n.strip_prefix("_orig_mod."))
    {
        n = rest;
    }
    let mut n = n.to_string();
    if let Some(stem) = n.strip_suffix(".gamma") {
        n = format!("{stem}.weight");
    } else if let Some(stem) = n.strip_suffix(".beta") {
        n = format!("{stem}.bias");
    }
    if !n.starts_with("bert.") && !n.starts_with("cls.") {
        n = format!("bert.{n}");
    }
    Some(n)
}

/// Copies a checkpoint into the model's variables. Shape mismatches are errors.
pub fn load_into(
    vs: &VarStore,
    mut weights: BTreeMap<String, Tensor>,
    source: &str,
) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    // Tied: the decoder's weight is the word embeddings; its bias is cls.predictions.bias.
    if let Some(decoder) = weights.remove("cls.predictions.decoder.weight") {
        if let Some(word) = weights.get("bert.embeddings.word_embeddings.weight") {
            if decoder.size() != word.size() {
                bail!("{source}: cls.predictions.decoder.weight {:?} is not tied to the word embeddings {:?}", decoder.size(), word.size());
            }
        }
    }
    if let Some(bias) = weights.remove("cls.predictions.decoder.bias") {
        weights.entry("cls.predictions.bias".into()).or_insert(bias);
    }
    // Sorted, so that the first error reported is always the same.
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut used = BTreeSet::new();
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &variables {
            match weights.get(name) {
                Some(t) => {
                    if t.size() != var.size() {
                        bail!(
                            "{source}: {name} has shape {:?}, the model expects {:?} (a different config or vocabulary?)",
                            t.size(),
                            var.size()
                        );
                    }
                    var.shallow_clone()
                        .copy_(&t.to_kind(Kind::Float).to_device(var.device()));
                    used.insert(name.clone());
                    report.loaded += 1;
                }
                None => report.missing.push(name.clone()),
            }
        }
        Ok(())
    })?;
    report.unexpected = weights
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    report.missing.sort();
    Ok(report)
}

/// The config of a pretrained BERT folder: `config.json` (Hugging Face) or
/// `bert_config.json` (Google's releases).
pub fn read_config(dir: &Path) -> Result<BertConfig> {
    let hf = dir.join("config.json");
    let google = dir.join("bert_config.json");
    if !hf.is_file() && google.is_file() {
        return BertConfig::read(&google);
    }
    BertConfig::read(&hf)
}

/// The weights of a pretrained BERT folder, Hugging Face or TensorFlow, under HF names.
pub fn read_any_weights(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let hf = dir.join("model.safetensors").is_file() || dir.join("pytorch_model.bin").is_file();
    match crate::model::tf_checkpoint::find_prefix(dir) {
        Some(prefix) if !hf => crate::model::tf_checkpoint::read_weights(&prefix),
        _ => read_weights(dir),
    }
}

/// Reads the config and the weights of a pretrained BERT folder (Hugging Face, or a Google
/// TensorFlow checkpoint) into `vs`.
pub fn load_folder(vs: &VarStore, dir: &Path) -> Result<(BertConfig, LoadReport)> {
    let config = read_config(dir)?;
    let weights = read_any_weights(dir)?;
    let report = load_into(vs, weights, &dir.display().to_string())?;
    Ok((config, report))
}

/// Writes the model's variables under their Hugging Face names (the tied decoder is not
/// written, as `save_pretrained` does not), in fp32, through a temporary file.
pub fn write_weights(vs: &VarStore, path: &Path) -> Result<()> {
    let variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    let tensors: Vec<(String, Tensor)> = names
        .into_iter()
        .map(|n| {
            (
                n.clone(),
                variables[n]
                    .to_kind(Kind::Float)
                    .to_device(tch::Device::Cpu)
                    .contiguous(),
            )
        })
        .collect();
    corpus_tools::atomic_file::write_via(path, |tmp| {
        Tensor::write_safetensors(&tensors, tmp)
            .with_context(|| format!("writing {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint that lacks encoder tensors is refused; the message says whether it
    /// holds other names (another model) or none (cut short).
    #[test]
    fn missing_encoder_tensors_are_named_with_what_is_there() {
        let report = |unexpected: &[&str]| LoadReport {
            loaded: 10,
            missing: vec!["bert.encoder.layer.1.output.dense.weight".into()],
            unexpected: unexpected.iter().map(|s| s.to_string()).collect(),
        };
        let err = report(&[])
            .require_encoder("m.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("it holds no other names: an incomplete or cut checkpoint"),
            "{err}"
        );
        let err = report(&["model.layers.0.weight"])
            .require_encoder("m.safetensors")
            .unwrap_err()
            .to_string();
        assert!(err.contains("its names are model.layers.0.weight"), "{err}");
    }

    #[test]
    fn wrapper_prefixes_are_stripped() {
        let c = |n: &str| canonical_name(n).unwrap();
        assert_eq!(
            c("module.bert.encoder.layer.0.output.dense.weight"),
            "bert.encoder.layer.0.output.dense.weight"
        );
        assert_eq!(
            c("_orig_mod.module.cls.predictions.bias"),
            "cls.predictions.bias"
        );
        assert_eq!(
            c("module.embeddings.LayerNorm.gamma"),
            "bert.embeddings.LayerNorm.weight"
        );
        assert_eq!(canonical_name("module.bert.embeddings.position_ids"), None);
    }

    #[test]
    fn only_the_heads_may_be_missing() {
        let report = |missing: &[&str]| LoadReport {
            loaded: 10,
            missing: missing.iter().map(|s| s.to_string()).collect(),
            unexpected: vec!["model.encoder.weight".into()],
        };
        assert!(report(&[
            "cls.predictions.bias",
            "cls.seq_relationship.weight",
            "bert.pooler.dense.weight"
        ])
        .require_encoder("x")
        .is_ok());
        let names: Vec<String> = (0..20)
            .map(|i| format!("bert.encoder.layer.{i}.output.dense.weight"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let err = report(&names)
            .require_encoder("ckpt")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ckpt: 20 of the model's embedding and encoder tensors"),
            "{err}"
        );
        assert!(err.contains("and 17 more"), "{err}");
        assert!(err.contains("model.encoder.weight"), "{err}");
        assert!(!err.contains('\n'));
    }
}
