//! The run configuration: TOML files in `configs/` (unknown keys rejected), overridden on
//! the command line by `--set section.key=value`. The resolved configuration is printed at
//! the start and saved with the run and in every checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

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
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A Hugging Face or Google TensorFlow BERT folder to continue from, or "scratch".
    #[serde(default = "scratch")]
    pub init: String,
    /// Shapes for "scratch" (the vocabulary size comes from the data).
    #[serde(default = "d768")]
    pub hidden_size: i64,
    #[serde(default = "d12")]
    pub num_hidden_layers: i64,
    #[serde(default = "d12")]
    pub num_attention_heads: i64,
    #[serde(default = "d3072")]
    pub intermediate_size: i64,
    #[serde(default = "d512")]
    pub max_position_embeddings: i64,
    /// Dropout overrides (the model's config.json otherwise; 0 makes runs comparable
    /// across batch layouts).
    #[serde(default)]
    pub hidden_dropout_prob: Option<f64>,
    #[serde(default)]
    pub attention_probs_dropout_prob: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A corpus folder written by `corpus-tools prepare` or `shard` (overridden by --data).
    #[serde(default)]
    pub path: String,
    #[serde(default = "d128")]
    pub max_seq_len: usize,
    #[serde(default = "d20")]
    pub max_predictions_per_seq: usize,
    #[serde(default = "p15")]
    pub masked_lm_prob: f64,
    #[serde(default = "p10")]
    pub short_seq_prob: f64,
    #[serde(default)]
    pub whole_word_masking: bool,
    /// Fraction of documents held out for evaluation.
    #[serde(default = "p01")]
    pub heldout_fraction: f64,
    #[serde(default = "seed")]
    pub seed: u64,
    /// Where the instance indexes go (one folder per corpus and data config inside); ""
    /// = `OUT/instance_index` for pretrain. A folder on node-local disk, or one shared by
    /// all nodes (then one rank of the job builds).
    #[serde(default)]
    pub index_cache: String,
    /// Threads that build an index the ranks wait on (start-up, or an epoch boundary the
    /// background build missed); 0 = every core of the node.
    #[serde(default)]
    pub index_threads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences per micro-batch on each rank.
    pub micro_batch_size: usize,
    #[serde(default = "one")]
    pub grad_accumulation: usize,
    pub max_steps: u64,
    /// "adamw" or "lamb".
    #[serde(default = "adamw")]
    pub optimizer: String,
    pub learning_rate: f64,
    #[serde(default = "p01")]
    pub weight_decay: f64,
    #[serde(default = "beta1")]
    pub beta1: f64,
    #[serde(default = "beta2")]
    pub beta2: f64,
    #[serde(default = "eps")]
    pub epsilon: f64,
    #[serde(default = "yes")]
    pub bias_correction: bool,
    #[serde(default)]
    pub warmup_steps: u64,
    /// "linear" or "poly".
    #[serde(default = "linear")]
    pub decay: String,
    #[serde(default = "onef")]
    pub poly_power: f64,
    #[serde(default = "onef")]
    pub max_grad_norm: f64,
    #[serde(default = "seed")]
    pub seed: u64,
    /// "auto" (bf16 on GPUs, fp32 on CPUs), "fp32" or "bf16": bf16 matrix products over
    /// fp32 master weights, LayerNorm and losses in fp32.
    #[serde(default = "auto")]
    pub precision: String,
    /// With bf16 precision, keep the hidden states (residual stream, LayerNorm outputs) in
    /// bf16 too, as Megatron-LM does, instead of fp32 as autocast does.
    #[serde(default)]
    pub bf16_residual: bool,
    /// Run the encoder on the real tokens alone, packed into rows (NVIDIA's and
    /// MosaicBERT's "unpadding"), with attention through the variable-length flash kernel
    /// (CUDA, bf16; masked attention on the padded layout elsewhere). The losses are those
    /// of the padded batch; only the dropout draws differ, their masks having another shape.
    #[serde(default)]
    pub unpad: bool,
    /// What a NaN or infinite loss does: "stop" or "skip" the step.
    #[serde(default = "stop")]
    pub on_nan: String,
    /// With on_nan = "skip": this many skipped steps in a row stop the run (the model or
    /// the data is broken, not one batch).
    #[serde(default = "d10u")]
    pub max_skipped_steps: u64,
    /// "auto" (the rank's GPU when torch can use one, the CPU on hosts without an NVIDIA
    /// driver; a host whose driver torch cannot use is an error), "cuda" or "cpu".
    #[serde(default = "auto")]
    pub device: String,
    /// Threads of each rank for torch and for the data loader; 0: the node's cores
    /// divided among its ranks (OMP_NUM_THREADS / RAYON_NUM_THREADS where set).
    #[serde(default)]
    pub threads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save every this many steps (0: only at the end and on a signal).
    #[serde(default = "d1000u")]
    pub every: u64,
    /// Checkpoints kept.
    #[serde(default = "d3u")]
    pub keep: usize,
    /// Save when the run reaches train.max_steps. Throughput runs turn it off, so as not to
    /// time the writing of a 1.3 GB checkpoint; a signal still saves.
    #[serde(default = "yes")]
    pub at_end: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A console line and TensorBoard scalars every this many steps.
    #[serde(default = "d10u")]
    pub every: u64,
    /// Evaluation on the held-out documents every this many steps (0: never).
    #[serde(default = "d1000u")]
    pub eval_every: u64,
    #[serde(default = "d10u")]
    pub eval_batches: u64,
    /// The accelerator's dense peak in TFLOP/s for perf/mfu (0: from the GPU's name, see
    /// src/model/flops.rs; no perf/mfu when unknown, e.g. on CPUs).
    #[serde(default)]
    pub peak_tflops: f64,
}

/// How the ranks of `mpirun -np N` sum their gradients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// "auto" (NCCL when every rank has a GPU of its own, MPI otherwise), "nccl" or "mpi".
    #[serde(default = "auto")]
    pub backend: String,
    /// NCCL all-reduces the flat gradient buffer in buckets of this many MiB (of fp32).
    #[serde(default = "d64u")]
    pub bucket_mb: u64,
    /// "fp32" or "bf16": the dtype NCCL sums the gradients in (bf16 halves the traffic).
    #[serde(default = "fp32")]
    pub reduce_dtype: String,
    /// Seconds a gradient all-reduce may take before the job is ended as hung.
    #[serde(default = "d300u")]
    pub timeout_s: u64,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        DistributedConfig {
            backend: auto(),
            bucket_mb: 64,
            reduce_dtype: fp32(),
            timeout_s: 300,
        }
    }
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

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            every: 10,
            eval_every: 1000,
            eval_batches: 10,
            peak_tflops: 0.0,
        }
    }
}

fn scratch() -> String {
    "scratch".into()
}
fn d768() -> i64 {
    768
}
fn d12() -> i64 {
    12
}
fn d3072() -> i64 {
    3072
}
fn d512() -> i64 {
    512
}
fn d128() -> usize {
    128
}
fn d20() -> usize {
    20
}
fn p15() -> f64 {
    0.15
}
fn p10() -> f64 {
    0.1
}
fn p01() -> f64 {
    0.01
}
fn seed() -> u64 {
    12345
}
fn one() -> usize {
    1
}
fn onef() -> f64 {
    1.0
}
fn adamw() -> String {
    "adamw".into()
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-6
}
fn yes() -> bool {
    true
}
fn linear() -> String {
    "linear".into()
}
fn auto() -> String {
    "auto".into()
}
fn fp32() -> String {
    "fp32".into()
}
fn d64u() -> u64 {
    64
}
fn d300u() -> u64 {
    300
}
fn stop() -> String {
    "stop".into()
}
fn d1000u() -> u64 {
    1000
}
fn d3u() -> usize {
    3
}
fn d10u() -> u64 {
    10
}

impl RunConfig {
    /// Reads a TOML file and applies `section.key=value` overrides (values in TOML syntax;
    /// bare words are taken as strings).
    pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let mut value: toml::Value =
            toml::from_str(&text).with_context(|| format!("{}: not TOML", path.display()))?;
        for o in overrides {
            apply_override(&mut value, o).with_context(|| format!("--set {o}"))?;
        }
        let config: RunConfig = value
            .try_into()
            .with_context(|| format!("{}: not a run configuration", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        if !matches!(t.optimizer.as_str(), "adamw" | "lamb") {
            bail!("train.optimizer {:?}: expected adamw or lamb", t.optimizer);
        }
        if !matches!(t.decay.as_str(), "linear" | "poly") {
            bail!("train.decay {:?}: expected linear or poly", t.decay);
        }
        if !matches!(t.precision.as_str(), "auto" | "fp32" | "bf16") {
            bail!(
                "train.precision {:?}: expected auto, fp32 or bf16",
                t.precision
            );
        }
        if !matches!(t.device.as_str(), "auto" | "cuda" | "cpu") {
            bail!("train.device {:?}: expected auto, cuda or cpu", t.device);
        }
        if !matches!(t.on_nan.as_str(), "stop" | "skip") {
            bail!("train.on_nan {:?}: expected stop or skip", t.on_nan);
        }
        if t.micro_batch_size == 0 || t.grad_accumulation == 0 {
            bail!("train.micro_batch_size and train.grad_accumulation must be at least 1");
        }
        let d = &self.distributed;
        if !matches!(d.backend.as_str(), "auto" | "nccl" | "mpi") {
            bail!(
                "distributed.backend {:?}: expected auto, nccl or mpi",
                d.backend
            );
        }
        if !matches!(d.reduce_dtype.as_str(), "fp32" | "bf16") {
            bail!(
                "distributed.reduce_dtype {:?}: expected fp32 or bf16",
                d.reduce_dtype
            );
        }
        if d.bucket_mb == 0 || d.timeout_s == 0 {
            bail!("distributed.bucket_mb and distributed.timeout_s must be at least 1");
        }
        if self.data.max_seq_len < 8 {
            bail!("data.max_seq_len {} is too short", self.data.max_seq_len);
        }
        self.validate_ranges()
    }

    /// Values outside what the algorithms mean: each would run and silently do something
    /// else (MLM off, no held-out set, a schedule that never warms up...).
    fn validate_ranges(&self) -> Result<()> {
        let (d, t) = (&self.data, &self.train);
        let within = |key: &str, v: f64, ok: bool, expected: &str| -> Result<()> {
            if ok && v.is_finite() {
                Ok(())
            } else {
                bail!("{key} = {v}: expected {expected}")
            }
        };
        within(
            "data.masked_lm_prob",
            d.masked_lm_prob,
            d.masked_lm_prob > 0.0 && d.masked_lm_prob <= 1.0,
            "a probability in (0, 1]",
        )?;
        within(
            "data.short_seq_prob",
            d.short_seq_prob,
            (0.0..=1.0).contains(&d.short_seq_prob),
            "a probability in [0, 1]",
        )?;
        within(
            "data.heldout_fraction",
            d.heldout_fraction,
            (0.0..1.0).contains(&d.heldout_fraction),
            "a fraction in [0, 1)",
        )?;
        if d.max_predictions_per_seq == 0 {
            bail!("data.max_predictions_per_seq = 0: expected at least 1 (0 would turn MLM off)");
        }
        if d.max_predictions_per_seq >= d.max_seq_len {
            bail!(
                "data.max_predictions_per_seq = {} is not below data.max_seq_len = {}",
                d.max_predictions_per_seq,
                d.max_seq_len
            );
        }
        within(
            "train.learning_rate",
            t.learning_rate,
            t.learning_rate > 0.0,
            "a positive number",
        )?;
        within(
            "train.weight_decay",
            t.weight_decay,
            t.weight_decay >= 0.0,
            "zero or more",
        )?;
        within(
            "train.beta1",
            t.beta1,
            (0.0..1.0).contains(&t.beta1),
            "a number in [0, 1)",
        )?;
        within(
            "train.beta2",
            t.beta2,
            (0.0..1.0).contains(&t.beta2),
            "a number in [0, 1)",
        )?;
        within(
            "train.epsilon",
            t.epsilon,
            t.epsilon > 0.0,
            "a positive number",
        )?;
        within(
            "train.max_grad_norm",
            t.max_grad_norm,
            t.max_grad_norm >= 0.0,
            "zero (no clipping) or more",
        )?;
        within(
            "train.poly_power",
            t.poly_power,
            t.poly_power > 0.0,
            "a positive number",
        )?;
        if t.max_steps == 0 {
            bail!("train.max_steps = 0: expected at least 1");
        }
        if t.warmup_steps > t.max_steps {
            bail!(
                "train.warmup_steps = {} exceeds train.max_steps = {}: the learning rate would never reach its peak",
                t.warmup_steps,
                t.max_steps
            );
        }
        if t.max_skipped_steps == 0 {
            bail!("train.max_skipped_steps = 0: expected at least 1");
        }
        if self.checkpoint.keep == 0 {
            bail!("checkpoint.keep = 0: expected at least 1 (resuming needs one)");
        }
        if self.log.every == 0 {
            bail!("log.every = 0: expected at least 1");
        }
        within(
            "log.peak_tflops",
            self.log.peak_tflops,
            self.log.peak_tflops >= 0.0,
            "zero (from the GPU's name) or more",
        )?;
        let m = &self.model;
        if let Some(p) = m.hidden_dropout_prob {
            within(
                "model.hidden_dropout_prob",
                p,
                (0.0..1.0).contains(&p),
                "a probability in [0, 1)",
            )?;
        }
        if let Some(p) = m.attention_probs_dropout_prob {
            within(
                "model.attention_probs_dropout_prob",
                p,
                (0.0..1.0).contains(&p),
                "a probability in [0, 1)",
            )?;
        }
        Ok(())
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

pub fn apply_override(root: &mut toml::Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .context("expected section.key=value")?;
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed above"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let mut node = root;
    let parts: Vec<&str> = key.trim().split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let table = node.as_table_mut().context("not a table")?;
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    node.as_table_mut()
        .context("not a table")?
        .insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[model]\n[data]\n[train]\nmicro_batch_size = 4\nmax_steps = 10\nlearning_rate = 1e-4\n").unwrap();
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
        assert!(format!("{err:#}").contains("learnin_rate"), "{err:#}");
        assert!(RunConfig::load(&path, &["train.optimizer=sgd".into()]).is_err());
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
            let finetune = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("finetune_"));
            if path.extension().is_some_and(|e| e == "toml") && !finetune {
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
