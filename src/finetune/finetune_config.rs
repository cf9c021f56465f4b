//! The fine-tuning configuration: one flat TOML table per task (`configs/finetune_ner.toml`,
//! `configs/finetune_re.toml`), defaults taken from BioBERT's fine-tuning scripts with each
//! value's source beside it, `--set key=value` on top. What runs is printed and saved.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::train::run_config::{apply_override, TrainConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Word pieces per input, [CLS] and [SEP] included.
    pub max_seq_len: usize,
    /// Sequences per optimizer step, over all ranks.
    pub batch_size: usize,
    pub epochs: u64,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Share of the steps with a linear warmup (then linear decay to 0).
    pub warmup_fraction: f64,
    pub epsilon: f64,
    pub max_grad_norm: f64,
    /// Seeds the head's initialisation, the data order and dropout.
    pub seed: u64,
    pub eval_batch_size: usize,
    /// Keep the epoch with the best development F1 (when the set has a development file).
    pub select_on_dev: bool,
    /// Batches of similar lengths (sorted inside groups of 50 batches, the batches then
    /// shuffled): less padding, the same epochs and batch size.
    #[serde(default)]
    pub group_by_length: bool,
    /// "auto" (bf16 products on GPUs, fp32 on CPUs), "fp32" or "bf16".
    pub precision: String,
    /// "auto", "cuda" or "cpu", as in pretraining.
    pub device: String,
    /// torch threads per rank; 0 = the node's cores divided among its ranks.
    pub threads: usize,
}

impl FinetuneConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<FinetuneConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        Self::from_text(&text, &path.display().to_string(), overrides)
    }

    /// A configuration from TOML text (`name` says where it came from, for errors).
    pub fn from_text(text: &str, name: &str, overrides: &[String]) -> Result<FinetuneConfig> {
        let mut value: toml::Value =
            toml::from_str(text).with_context(|| format!("{name}: not TOML"))?;
        for o in overrides {
            apply_override(&mut value, o).with_context(|| format!("--set {o}"))?;
        }
        let config: FinetuneConfig = value
            .try_into()
            .with_context(|| format!("{name}: not a fine-tuning configuration"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let checks = [
            ("max_seq_len", self.max_seq_len >= 8, "at least 8"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("eval_batch_size", self.eval_batch_size >= 1, "at least 1"),
            ("epochs", self.epochs >= 1, "at least 1"),
            (
                "learning_rate",
                self.learning_rate > 0.0 && self.learning_rate.is_finite(),
                "above 0",
            ),
            (
                "weight_decay",
                (0.0..1.0).contains(&self.weight_decay),
                "in [0, 1)",
            ),
            (
                "warmup_fraction",
                (0.0..1.0).contains(&self.warmup_fraction),
                "in [0, 1)",
            ),
            ("epsilon", self.epsilon > 0.0, "above 0"),
            (
                "max_grad_norm",
                self.max_grad_norm >= 0.0,
                "0 (no clipping) or more",
            ),
            (
                "precision",
                ["auto", "fp32", "bf16"].contains(&self.precision.as_str()),
                "auto, fp32 or bf16",
            ),
        ];
        for (key, ok, expected) in checks {
            if !ok {
                bail!("{key}: expected {expected}");
            }
        }
        Ok(())
    }

    /// The optimizer settings of `steps` optimizer steps (AdamW with bias correction, as
    /// Hugging Face's Trainer and BioBERT's PyTorch scripts use).
    pub fn optimizer(&self, steps: u64, micro_batch: usize) -> TrainConfig {
        TrainConfig {
            micro_batch_size: micro_batch,
            grad_accumulation: 1,
            max_steps: steps,
            optimizer: "adamw".into(),
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: self.epsilon,
            bias_correction: true,
            warmup_steps: (self.warmup_fraction * steps as f64) as u64,
            decay: "linear".into(),
            poly_power: 1.0,
            max_grad_norm: self.max_grad_norm,
            seed: self.seed,
            precision: self.precision.clone(),
            bf16_residual: false,
            unpad: false,
            on_nan: "stop".into(),
            max_skipped_steps: 1,
            device: self.device.clone(),
            threads: self.threads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_load_and_bad_values_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let ner = FinetuneConfig::load(&dir.join("finetune_ner.toml"), &[]).unwrap();
        assert_eq!((ner.max_seq_len, ner.batch_size, ner.epochs), (192, 32, 30));
        let re = FinetuneConfig::load(&dir.join("finetune_re.toml"), &["epochs=5".into()]).unwrap();
        assert_eq!((re.max_seq_len, re.epochs), (128, 5));
        let err = FinetuneConfig::load(&dir.join("finetune_re.toml"), &["learning_rate=-1".into()])
            .unwrap_err();
        assert!(format!("{err:#}").contains("learning_rate"), "{err:#}");
        assert!(FinetuneConfig::load(&dir.join("finetune_re.toml"), &["epoch=5".into()]).is_err());
        let schedule = re.optimizer(100, 8);
        assert_eq!((schedule.max_steps, schedule.warmup_steps), (100, 0));
    }
}
