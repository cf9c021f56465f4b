//! The pretraining run configuration: TOML files in `configs/` (unknown keys refused),
//! overridden on the command line by `--set section.key=value`. The resolved configuration
//! is printed at the start and saved with the run and in every checkpoint. Each section
//! has one `Default` (the values a key takes when the file leaves it out) and one range
//! check.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::config::choices::{
    BackendRequest, Choice, Decay, DeviceRequest, OnNan, OptimizerKind, Precision, ReduceDtype,
};
use crate::config::optimizer_config::{OptimizerConfig, Schedule};
use crate::config::profile_window::ProfileWindow;
use crate::config::toml_file::{self, within, ChoiceKey, TomlConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub distributed: DistributedConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A Hugging Face or Google TensorFlow BERT folder to continue from, or "scratch".
    pub init: String,
    /// Shapes for "scratch" (the vocabulary size comes from the data).
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    /// Dropout overrides (the model's config.json otherwise; 0 makes runs comparable
    /// across batch layouts).
    pub hidden_dropout_prob: Option<f64>,
    pub attention_probs_dropout_prob: Option<f64>,
}

impl Default for ModelConfig {
    /// BERT-base's shape.
    fn default() -> Self {
        ModelConfig {
            init: "scratch".into(),
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            hidden_dropout_prob: None,
            attention_probs_dropout_prob: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A corpus folder written by `corpus-tools prepare` or `shard` (overridden by --data).
    pub path: String,
    pub max_seq_len: usize,
    pub max_predictions_per_seq: usize,
    pub masked_lm_prob: f64,
    pub short_seq_prob: f64,
    pub whole_word_masking: bool,
    /// Fraction of documents held out for evaluation.
    pub heldout_fraction: f64,
    pub seed: u64,
    /// Where the instance indexes go (one folder per corpus and data config inside); ""
    /// = `OUT/instance_index` for pretrain. A folder on node-local disk, or one shared by
    /// all nodes (then one rank of the job builds).
    pub index_cache: String,
    /// Threads that build an index the ranks wait on (start-up, or an epoch boundary the
    /// background build missed); 0 = every core of the node.
    pub index_threads: usize,
}

impl Default for DataConfig {
    /// Google's `create_pretraining_data.py` defaults.
    fn default() -> Self {
        DataConfig {
            path: String::new(),
            max_seq_len: 128,
            max_predictions_per_seq: 20,
            masked_lm_prob: 0.15,
            short_seq_prob: 0.1,
            whole_word_masking: false,
            heldout_fraction: 0.01,
            seed: 12345,
            index_cache: String::new(),
            index_threads: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Sequences per micro-batch on each rank (required).
    pub micro_batch_size: usize,
    pub grad_accumulation: usize,
    /// Required.
    pub max_steps: u64,
    pub optimizer: OptimizerKind,
    /// Required.
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub bias_correction: bool,
    pub warmup_steps: u64,
    pub decay: Decay,
    pub poly_power: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// "auto" (bf16 on GPUs, fp32 on CPUs), "fp32" or "bf16": bf16 matrix products over
    /// fp32 master weights, LayerNorm and losses in fp32.
    pub precision: Precision,
    /// With bf16 precision, keep the hidden states (residual stream, LayerNorm outputs) in
    /// bf16 too, as Megatron-LM does, instead of fp32 as autocast does.
    pub bf16_residual: bool,
    /// Run the encoder on the real tokens alone, packed into rows (NVIDIA's and
    /// MosaicBERT's "unpadding"), with attention through the variable-length flash kernel
    /// (CUDA, bf16; masked attention on the padded layout elsewhere). The losses are those
    /// of the padded batch; only the dropout draws differ, their masks having another shape.
    pub unpad: bool,
    /// Bias + dropout + residual + LayerNorm, and bias + GELU, each as one kernel forward
    /// and one backward (compiled by NVRTC for the run's GPU, checked there against the
    /// unfused operations at start-up) instead of libtorch's separate element-wise kernels.
    /// CUDA only: refused elsewhere. Dropout draws differ from the unfused path's.
    pub fused_elementwise: bool,
    /// With bf16 precision: cast the fp32 master weights to bf16 once per optimizer step
    /// into one flat copy, and add the copies' gradients into the fp32 gradients with one
    /// kernel per micro-batch, instead of a cast per weight and use and a cast and an add
    /// per gradient. Same arithmetic; its gain grows with train.grad_accumulation.
    pub cast_weights_once: bool,
    /// What a NaN or infinite loss does: "stop" or "skip" the step.
    pub on_nan: OnNan,
    /// With on_nan = "skip": this many skipped steps in a row stop the run (the model or
    /// the data is broken, not one batch).
    pub max_skipped_steps: u64,
    /// "auto" (the rank's GPU when torch can use one, the CPU on hosts without an NVIDIA
    /// driver; a host whose driver torch cannot use is an error), "cuda" or "cpu".
    pub device: DeviceRequest,
    /// Threads of each rank for torch and for the data loader; 0: the node's cores
    /// divided among its ranks (OMP_NUM_THREADS / RAYON_NUM_THREADS where set).
    pub threads: usize,
}

impl Default for TrainConfig {
    /// Google BERT's optimizer settings. The three required keys are 0 here, which the
    /// range check refuses: a file must set them.
    fn default() -> Self {
        TrainConfig {
            micro_batch_size: 0,
            grad_accumulation: 1,
            max_steps: 0,
            optimizer: OptimizerKind::Adamw,
            learning_rate: 0.0,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-6,
            bias_correction: true,
            warmup_steps: 0,
            decay: Decay::Linear,
            poly_power: 1.0,
            max_grad_norm: 1.0,
            seed: 12345,
            precision: Precision::Auto,
            bf16_residual: false,
            unpad: false,
            fused_elementwise: false,
            cast_weights_once: false,
            on_nan: OnNan::Stop,
            max_skipped_steps: 10,
            device: DeviceRequest::Auto,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Save every this many steps (0: only at the end and on a signal).
    pub every: u64,
    /// Checkpoints kept.
    pub keep: usize,
    /// Save when the run reaches train.max_steps. Throughput runs turn it off, so as not to
    /// time the writing of a 1.3 GB checkpoint; a signal still saves.
    pub at_end: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every: 1000,
            keep: 3,
            at_end: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A console line and TensorBoard scalars every this many steps.
    pub every: u64,
    /// Evaluation on the held-out documents every this many steps (0: never).
    pub eval_every: u64,
    pub eval_batches: u64,
    /// The accelerator's dense peak in TFLOP/s for perf/mfu (0: from the GPU's name, see
    /// src/model/flops.rs; no perf/mfu when unknown, e.g. on CPUs).
    pub peak_tflops: f64,
    /// "START:COUNT": rank 0 records those steps with the profiler into RUN/profile/ ("":
    /// none).
    pub profile: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            every: 10,
            eval_every: 1000,
            eval_batches: 10,
            peak_tflops: 0.0,
            profile: String::new(),
        }
    }
}

/// How the ranks of `mpirun -np N` sum their gradients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedConfig {
    /// "auto" (NCCL when every rank has a GPU of its own, MPI otherwise), "nccl" or "mpi".
    pub backend: BackendRequest,
    /// NCCL all-reduces the flat gradient buffer in buckets of this many MiB (of fp32).
    pub bucket_mb: u64,
    /// "fp32" or "bf16": the dtype NCCL sums the gradients in (bf16 halves the traffic).
    pub reduce_dtype: ReduceDtype,
    /// Seconds a gradient all-reduce may take before the job is ended as hung.
    pub timeout_s: u64,
    /// Sum each bucket as soon as the last micro-batch's backward pass completes it,
    /// instead of after the whole pass (NCCL, and MPI on CPU ranks).
    pub overlap: bool,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        DistributedConfig {
            backend: BackendRequest::Auto,
            bucket_mb: 64,
            reduce_dtype: ReduceDtype::Fp32,
            timeout_s: 300,
            overlap: false,
        }
    }
}

impl TomlConfig for RunConfig {
    const CHOICES: &'static [ChoiceKey] = &[
        ChoiceKey {
            key: "train.optimizer",
            words: OptimizerKind::NAMES,
        },
        ChoiceKey {
            key: "train.decay",
            words: Decay::NAMES,
        },
        ChoiceKey {
            key: "train.precision",
            words: Precision::NAMES,
        },
        ChoiceKey {
            key: "train.device",
            words: DeviceRequest::NAMES,
        },
        ChoiceKey {
            key: "train.on_nan",
            words: OnNan::NAMES,
        },
        ChoiceKey {
            key: "distributed.backend",
            words: BackendRequest::NAMES,
        },
        ChoiceKey {
            key: "distributed.reduce_dtype",
            words: ReduceDtype::NAMES,
        },
    ];
    const REQUIRED: &'static [&'static str] = &[
        "model",
        "data",
        "train.micro_batch_size",
        "train.max_steps",
        "train.learning_rate",
    ];

    /// Values outside what the algorithms mean: each would run and silently do something
    /// else (MLM off, no held-out set, a schedule that never warms up...).
    fn validate(&self) -> Result<()> {
        self.model.check()?;
        self.data.check()?;
        self.train.check()?;
        self.checkpoint.check()?;
        self.log.check()?;
        self.distributed.check()?;
        if self.train.cast_weights_once && self.distributed.overlap {
            bail!(
                "train.cast_weights_once and distributed.overlap cannot run together: the overlapped all-reduce starts a bucket as backward writes its fp32 gradients, and with the weights cast once they are written after backward"
            );
        }
        Ok(())
    }
}

impl ModelConfig {
    fn check(&self) -> Result<()> {
        let dropouts = [
            ("model.hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "model.attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ];
        for (key, p) in dropouts {
            if let Some(p) = p {
                within(key, p, (0.0..1.0).contains(&p), "a probability in [0, 1)")?;
            }
        }
        Ok(())
    }
}

impl DataConfig {
    fn check(&self) -> Result<()> {
        if self.max_seq_len < 8 {
            bail!("data.max_seq_len {} is too short", self.max_seq_len);
        }
        let p = self.masked_lm_prob;
        within(
            "data.masked_lm_prob",
            p,
            p > 0.0 && p <= 1.0,
            "a probability in (0, 1]",
        )?;
        let p = self.short_seq_prob;
        within(
            "data.short_seq_prob",
            p,
            (0.0..=1.0).contains(&p),
            "a probability in [0, 1]",
        )?;
        let f = self.heldout_fraction;
        within(
            "data.heldout_fraction",
            f,
            (0.0..1.0).contains(&f),
            "a fraction in [0, 1)",
        )?;
        if self.max_predictions_per_seq == 0 {
            bail!("data.max_predictions_per_seq = 0: expected at least 1 (0 would turn MLM off)");
        }
        if self.max_predictions_per_seq >= self.max_seq_len {
            bail!(
                "data.max_predictions_per_seq = {} is not below data.max_seq_len = {}",
                self.max_predictions_per_seq,
                self.max_seq_len
            );
        }
        Ok(())
    }
}

impl TrainConfig {
    fn check(&self) -> Result<()> {
        if self.micro_batch_size == 0 || self.grad_accumulation == 0 {
            bail!("train.micro_batch_size and train.grad_accumulation must be at least 1");
        }
        let positive = "a positive number";
        within(
            "train.learning_rate",
            self.learning_rate,
            self.learning_rate > 0.0,
            positive,
        )?;
        let wd = self.weight_decay;
        within("train.weight_decay", wd, wd >= 0.0, "zero or more")?;
        for (key, beta) in [("train.beta1", self.beta1), ("train.beta2", self.beta2)] {
            within(key, beta, (0.0..1.0).contains(&beta), "a number in [0, 1)")?;
        }
        within("train.epsilon", self.epsilon, self.epsilon > 0.0, positive)?;
        let norm = self.max_grad_norm;
        within(
            "train.max_grad_norm",
            norm,
            norm >= 0.0,
            "zero (no clipping) or more",
        )?;
        within(
            "train.poly_power",
            self.poly_power,
            self.poly_power > 0.0,
            positive,
        )?;
        if self.max_steps == 0 {
            bail!("train.max_steps = 0: expected at least 1");
        }
        if self.warmup_steps > self.max_steps {
            bail!(
                "train.warmup_steps = {} exceeds train.max_steps = {}: the learning rate would never reach its peak",
                self.warmup_steps,
                self.max_steps
            );
        }
        if self.max_skipped_steps == 0 {
            bail!("train.max_skipped_steps = 0: expected at least 1");
        }
        Ok(())
    }

    /// The optimizer's constants.
    pub fn optimizer(&self) -> OptimizerConfig {
        OptimizerConfig {
            kind: self.optimizer,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            epsilon: self.epsilon,
            bias_correction: self.bias_correction,
        }
    }

    /// The learning rate over the run.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            learning_rate: self.learning_rate,
            warmup_steps: self.warmup_steps,
            total_steps: self.max_steps,
            decay: self.decay,
            poly_power: self.poly_power,
        }
    }
}

impl CheckpointConfig {
    fn check(&self) -> Result<()> {
        if self.keep == 0 {
            bail!("checkpoint.keep = 0: expected at least 1 (resuming needs one)");
        }
        Ok(())
    }
}

impl LogConfig {
    fn check(&self) -> Result<()> {
        if self.every == 0 {
            bail!("log.every = 0: expected at least 1");
        }
        ProfileWindow::parse("log.profile", &self.profile)?;
        let peak = self.peak_tflops;
        within(
            "log.peak_tflops",
            peak,
            peak >= 0.0,
            "zero (from the GPU's name) or more",
        )
    }
}

impl DistributedConfig {
    fn check(&self) -> Result<()> {
        if self.bucket_mb == 0 || self.timeout_s == 0 {
            bail!("distributed.bucket_mb and distributed.timeout_s must be at least 1");
        }
        Ok(())
    }
}

impl RunConfig {
    /// Reads a TOML file and applies `section.key=value` overrides (values in TOML syntax;
    /// bare words are taken as strings).
    pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig> {
        toml_file::load(path, overrides, "a run configuration")
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serialises")
    }

    pub fn data_path(&self, cli: Option<&PathBuf>) -> Result<PathBuf> {
        match cli {
            Some(p) => Ok(p.clone()),
            None if !self.data.path.is_empty() => Ok(PathBuf::from(&self.data.path)),
            None => bail!("no corpus: give --data DIR or set data.path"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[model]\n[data]\n[train]\nmicro_batch_size = 4\nmax_steps = 10\nlearning_rate = 1e-4\n").unwrap();
        (dir, path)
    }

    #[test]
    fn overrides_and_unknown_keys() {
        let (_dir, path) = minimal();
        let c = RunConfig::load(
            &path,
            &[
                "train.learning_rate=2e-5".into(),
                "model.init=/models/bert".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.learning_rate, 2e-5);
        assert_eq!(c.model.init, "/models/bert");
        let err = RunConfig::load(&path, &["train.learnin_rate=1".into()]).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(
                "--set train.learnin_rate=1: train.learnin_rate is not a key of a run configuration"
            ),
            "{err:#}"
        );
        assert!(RunConfig::load(&path, &["train.optimizer=sgd".into()]).is_err());
    }

    #[test]
    fn a_bad_choice_names_its_key_value_and_words() {
        let (_dir, path) = minimal();
        let err = RunConfig::load(&path, &["train.optimizer=sgd".into()]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "train.optimizer \"sgd\": expected adamw or lamb"
        );
        let err = RunConfig::load(&path, &["distributed.backend=gloo".into()]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "distributed.backend \"gloo\": expected auto, nccl or mpi"
        );
        let c = RunConfig::load(
            &path,
            &["train.on_nan=skip".into(), "train.decay=poly".into()],
        )
        .unwrap();
        assert_eq!((c.train.on_nan, c.train.decay), (OnNan::Skip, Decay::Poly));
    }

    #[test]
    fn a_missing_required_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[model]\n[data]\n[train]\nmicro_batch_size = 4\nlearning_rate = 1e-4\n",
        )
        .unwrap();
        let err = RunConfig::load(&path, &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("train.max_steps is missing"),
            "{err:#}"
        );
    }

    /// The defaults a file leaves out are the section's `Default`, and what is written back
    /// reads again as the same configuration.
    #[test]
    fn defaults_fill_the_gaps_and_round_trip() {
        let (_dir, path) = minimal();
        let c = RunConfig::load(&path, &[]).unwrap();
        assert_eq!(c.model, ModelConfig::default());
        assert_eq!(c.data, DataConfig::default());
        assert_eq!(c.log, LogConfig::default());
        assert_eq!(c.train.beta2, TrainConfig::default().beta2);
        let back: RunConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }
}

#[cfg(test)]
mod shipped_configs {
    use super::*;

    #[test]
    fn every_shipped_config_loads_and_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // The fine-tuning configurations and the published figures are not run configs.
            let other = path.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("finetune_") || n == "biobert_reference.toml"
            });
            if path.extension().is_some_and(|e| e == "toml") && !other {
                RunConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                count += 1;
            }
        }
        assert!(count >= 4);
        // BioBERT ran Google's AdamWeightDecayOptimizer, which has no bias correction.
        let biobert = RunConfig::load(&dir.join("biobert_base.toml"), &[]).unwrap();
        assert!(!biobert.train.bias_correction);
    }
}
