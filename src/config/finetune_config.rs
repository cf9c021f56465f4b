//! The fine-tuning configuration: one flat TOML table per task (`configs/finetune_ner.toml`,
//! `configs/finetune_re.toml`), defaults taken from BioBERT's fine-tuning scripts with each
//! value's source beside it, `--set key=value` on top. What runs is printed and saved.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::config::choices::{Choice, Decay, DeviceRequest, OptimizerKind, Precision};
use crate::config::optimizer_config::{OptimizerConfig, Schedule};
use crate::config::toml_file::{self, within, ChoiceKey, TomlConfig};

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
    /// Train on the training and development sets together, as BioBERT's scripts did for
    /// its reported figures (`biobert evaluate --protocol paper`); needs select_on_dev off.
    #[serde(default)]
    pub train_on_dev: bool,
    /// Batches of similar lengths (sorted inside groups of 50 batches, the batches then
    /// shuffled): less padding, the same epochs and batch size.
    #[serde(default)]
    pub group_by_length: bool,
    /// The real tokens packed into rows for every position-wise product and attention at
    /// each sequence's own length (pretraining's `train.unpad`): the padding is never
    /// computed, and no batch's content changes.
    #[serde(default)]
    pub unpad: bool,
    /// Bias + dropout + residual + LayerNorm and bias + GELU as fused kernels, checked on
    /// the GPU at start-up (pretraining's `train.fused_elementwise`). GPUs only.
    #[serde(default)]
    pub fused_elementwise: bool,
    /// Question answering (`finetune qa`): question pieces kept, the step between context
    /// windows, answers per paragraph, and the longest answer in pieces (Google's
    /// run_squad.py: 64, 128, 20, 30). Absent for the other tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_query_len: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_stride: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_best: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_answer_len: Option<usize>,
    /// "auto" (bf16 products on GPUs, fp32 on CPUs), "fp32" or "bf16".
    pub precision: Precision,
    /// "auto", "cuda" or "cpu", as in pretraining.
    pub device: DeviceRequest,
    /// torch threads per rank; 0 = the node's cores divided among its ranks.
    pub threads: usize,
}

impl TomlConfig for FinetuneConfig {
    const CHOICES: &'static [ChoiceKey] = &[
        ChoiceKey {
            key: "precision",
            words: Precision::NAMES,
        },
        ChoiceKey {
            key: "device",
            words: DeviceRequest::NAMES,
        },
    ];
    /// serde names a missing key of this flat table itself.
    const REQUIRED: &'static [&'static str] = &[];

    fn validate(&self) -> Result<()> {
        let counts = [
            ("max_seq_len", self.max_seq_len, 8),
            ("batch_size", self.batch_size, 1),
            ("eval_batch_size", self.eval_batch_size, 1),
            ("epochs", self.epochs as usize, 1),
        ];
        for (key, n, least) in counts {
            within(key, n as f64, n >= least, &format!("at least {least}"))?;
        }
        let qa = [
            ("max_query_len", self.max_query_len),
            ("doc_stride", self.doc_stride),
            ("n_best", self.n_best),
            ("max_answer_len", self.max_answer_len),
        ];
        for (key, n) in qa {
            if let Some(n) = n {
                within(key, n as f64, n >= 1, "at least 1")?;
            }
        }
        if self.select_on_dev && self.train_on_dev {
            anyhow::bail!(
                "select_on_dev = true with train_on_dev = true: a development set it trained on cannot choose the epoch; set one of them to false"
            );
        }
        let lr = self.learning_rate;
        within("learning_rate", lr, lr > 0.0, "above 0")?;
        let wd = self.weight_decay;
        within("weight_decay", wd, (0.0..1.0).contains(&wd), "in [0, 1)")?;
        let w = self.warmup_fraction;
        within("warmup_fraction", w, (0.0..1.0).contains(&w), "in [0, 1)")?;
        within("epsilon", self.epsilon, self.epsilon > 0.0, "above 0")?;
        let norm = self.max_grad_norm;
        within(
            "max_grad_norm",
            norm,
            norm >= 0.0,
            "0 (no clipping) or more",
        )
    }
}

impl FinetuneConfig {
    pub fn load(path: &Path, overrides: &[String]) -> Result<FinetuneConfig> {
        toml_file::load(path, overrides, "a fine-tuning configuration")
    }

    /// A configuration from TOML text (`name` says where it came from, for errors).
    pub fn from_text(text: &str, name: &str, overrides: &[String]) -> Result<FinetuneConfig> {
        toml_file::from_text(text, name, overrides, "a fine-tuning configuration")
    }

    /// AdamW with bias correction, as Hugging Face's Trainer and BioBERT's PyTorch scripts
    /// use.
    pub fn optimizer(&self) -> OptimizerConfig {
        OptimizerConfig {
            kind: OptimizerKind::Adamw,
            weight_decay: self.weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: self.epsilon,
            bias_correction: true,
        }
    }

    /// The learning rate over `total_steps` optimizer steps.
    pub fn schedule(&self, total_steps: u64) -> Schedule {
        Schedule {
            learning_rate: self.learning_rate,
            warmup_steps: (self.warmup_fraction * total_steps as f64) as u64,
            total_steps,
            decay: Decay::Linear,
            poly_power: 1.0,
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
        let err = FinetuneConfig::load(&dir.join("finetune_re.toml"), &["precision=fp16".into()])
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "precision \"fp16\": expected auto, fp32 or bf16"
        );
        let schedule = re.schedule(100);
        assert_eq!((schedule.total_steps, schedule.warmup_steps), (100, 0));
        // BioBERT's protocol trains on the development set, so it cannot also choose on it.
        let paper = ["select_on_dev=false".into(), "train_on_dev=true".into()];
        assert!(
            FinetuneConfig::load(&dir.join("finetune_ner.toml"), &paper)
                .unwrap()
                .train_on_dev
        );
        let err = FinetuneConfig::load(&dir.join("finetune_ner.toml"), &paper[1..]).unwrap_err();
        assert!(format!("{err:#}").contains("select_on_dev = true with train_on_dev = true"));
    }
}
