//! `biobert pretrain`: the command line of continued pretraining. It reads the
//! configuration and the corpus, decides the model's shape and where the run resumes,
//! checks that every rank agrees, writes the run folder's `config.toml`, and hands the run
//! to the training loop (`train::pretrain`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::config::run_config::RunConfig;
use crate::data::corpus::{self, Corpus};
use crate::model::bert_config::BertConfig;
use crate::model::hf_checkpoint;
use crate::parallel::distributed::Distributed;
use crate::parallel::run_agreement;
use crate::runtime::device_selection;
use crate::train::checkpoint;
use crate::train::pretrain::{self, Run};

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// The run configuration (TOML), e.g. configs/tiny.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// The corpus folder (overrides data.path).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The run folder: checkpoints/, tensorboard/, config.toml.
    #[arg(long, default_value = "runs/pretrain")]
    pub out: PathBuf,
    /// Overrides train.max_steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Records steps START..START+COUNT-1 with the profiler into RUN/profile/ (overrides
    /// log.profile), e.g. 20:3.
    #[arg(long, value_name = "START:COUNT")]
    pub profile: Option<String>,
    /// Overrides, as section.key=value (repeatable).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// auto, cuda or cpu (overrides train.device).
    #[arg(long)]
    pub device: Option<String>,
    /// Resume even though the corpus differs from the checkpoint's (the data order then
    /// starts over on the new corpus at the checkpoint's sample count).
    #[arg(long)]
    pub allow_new_corpus: bool,
    /// `auto` continues from the newest valid checkpoint in --out (or starts fresh); a
    /// checkpoint folder resumes from that one.
    #[arg(long)]
    pub resume: Option<String>,
}

pub fn run(args: &PretrainArgs) -> Result<()> {
    let overrides = overrides(args);
    Distributed::run_job(|dist| {
        let config = RunConfig::load(&args.config, &overrides)?;
        let threads = crate::runtime::thread_budget::apply(dist.local_size, config.train.threads);
        let data = config.data_path(args.data.as_ref())?;
        let corpus = Arc::new(Corpus::open(&data)?);
        // The local rank picks the GPU; a GPU host whose GPUs torch cannot use is an error.
        let choice = device_selection::select(config.train.device, dist.local_rank)?;
        if let (Some(note), true) = (&choice.note, dist.is_root()) {
            println!("{note}");
        }
        let device = choice.device;
        let resume_from = resume_point(&args.out.join("checkpoints"), args.resume.as_deref())?;
        // A resumed run takes its shape and weights from the checkpoint: the folder it
        // started from is no longer needed.
        let (bert_config, init_dir) = match &resume_from {
            Some(checkpoint) => (model_config_of(checkpoint, &config, &corpus)?, None),
            None => model_config(&config, &corpus)?,
        };
        let config = effective_config(config, &bert_config, &data, &overrides)?;
        let manifest = corpus::file_sha256(&corpus.dir.join("manifest.json"))?;
        run_agreement::check(dist, &agreement_text(&config, &manifest))?;
        // A run refused before its first checkpoint leaves no folder it made.
        let new_folder = !args.out.exists();
        if dist.is_root() {
            write_run_config(&args.out, &config)?;
            print_host(dist, device, &threads);
            print_settings_without_effect(&config, device);
        }
        if dist.local_rank == 0 {
            // One line per node: where its ranks run and how many threads each has.
            println!(
                "node {}: {} of the {} ranks (local rank 0 is rank {}), {} torch and {} data loader thread(s) each",
                crate::data::build_lock::hostname(),
                dist.local_size,
                dist.size,
                dist.rank,
                threads.torch,
                threads.loader
            );
        }
        dist.barrier();
        // After rank 0 made the run folder: the ranks beat in it from here on.
        dist.watch(
            std::time::Duration::from_secs(config.distributed.timeout_s),
            Some(&args.out.join("heartbeat")),
        );
        let run = Run {
            config,
            bert_config,
            corpus,
            device,
            out: args.out.clone(),
            manifest,
            allow_new_corpus: args.allow_new_corpus,
        };
        let result = pretrain::train(&run, dist, init_dir.as_deref(), resume_from);
        let checkpoints = args.out.join("checkpoints");
        if result.is_err()
            && new_folder
            && dist.is_root()
            && checkpoint::newest_valid(&checkpoints).is_none()
        {
            let _ = std::fs::remove_dir_all(&args.out);
        }
        result
    })
}

/// Settings that the configuration holds but this run cannot apply: said, not ignored in
/// silence.
fn print_settings_without_effect(config: &RunConfig, device: tch::Device) {
    let bf16 = config.train.precision.compute_kind(device) == tch::Kind::BFloat16;
    if config.train.bf16_residual && !bf16 {
        println!("note: train.bf16_residual has no effect: the products run in fp32 here (train.precision = {} on {device:?})", config.train.precision);
    }
    if bf16 && device == tch::Device::Cpu {
        println!("note: bf16 products on a CPU run, but slower than fp32 on most CPUs");
    }
}

/// `--set` with the flags that are shorthands for a key.
fn overrides(args: &PretrainArgs) -> Vec<String> {
    let mut overrides = args.set.clone();
    if let Some(n) = args.max_steps {
        overrides.push(format!("train.max_steps={n}"));
    }
    if let Some(p) = &args.profile {
        overrides.push(format!("log.profile={p:?}"));
    }
    if let Some(d) = &args.device {
        overrides.push(format!("train.device={d:?}"));
    }
    overrides
}

/// Rank 0's lines about the job: ranks, threads and the torch in use.
fn print_host(
    dist: &Distributed,
    device: tch::Device,
    threads: &crate::runtime::thread_budget::Budget,
) {
    println!("ranks: {} (rank 0 on {device:?})", dist.size);
    println!(
        "threads: {} torch, {} data loader per rank ({})",
        threads.torch, threads.loader, threads.why
    );
    if let Some(dir) = crate::runtime::torch_runtime::loaded_torch_lib_dir() {
        let version = crate::runtime::torch_location::installed_version(&dir);
        let source = std::env::var("BIOBERT_TORCH_SOURCE").unwrap_or_else(|_| "rpath".into());
        println!(
            "torch: {} at {} (found through {source})",
            version.as_deref().unwrap_or("unknown version"),
            dir.display()
        );
    }
}

/// The configuration that runs: with a pretrained folder, the model's shape is the
/// folder's (a `--set` shape key that contradicts it is refused; the config file's shape
/// keys serve "scratch" only), and the corpus path is the one in use.
fn effective_config(
    mut config: RunConfig,
    bert: &BertConfig,
    data: &Path,
    overrides: &[String],
) -> Result<RunConfig> {
    if config.model.init != "scratch" {
        let folder = [
            ("hidden_size", bert.hidden_size),
            ("num_hidden_layers", bert.num_hidden_layers),
            ("num_attention_heads", bert.num_attention_heads),
            ("intermediate_size", bert.intermediate_size),
            ("max_position_embeddings", bert.max_position_embeddings),
        ];
        for o in overrides {
            let Some((key, value)) = o.split_once('=') else {
                continue;
            };
            let Some(&(name, actual)) = folder
                .iter()
                .find(|(name, _)| key.trim() == format!("model.{name}"))
            else {
                continue;
            };
            if value.trim().parse::<i64>().ok() != Some(actual) {
                bail!(
                    "--set {o}: the model continues from {}, whose {name} is {actual}; the shape of a pretrained model comes from its folder",
                    config.model.init
                );
            }
        }
        let m = &mut config.model;
        m.hidden_size = bert.hidden_size;
        m.num_hidden_layers = bert.num_hidden_layers;
        m.num_attention_heads = bert.num_attention_heads;
        m.intermediate_size = bert.intermediate_size;
        m.max_position_embeddings = bert.max_position_embeddings;
    }
    config.data.path = data.display().to_string();
    Ok(config)
}

/// What every rank must agree on: the configuration less the corpus path (nodes may mount
/// the corpus elsewhere) and the device request, plus the corpus manifest's hash.
fn agreement_text(config: &RunConfig, manifest_sha256: &str) -> String {
    let mut c = config.clone();
    c.data.path = String::new();
    format!(
        "{}corpus.manifest_sha256 = {manifest_sha256}\n",
        run_agreement::flatten(&c)
    )
}

/// The first line of the `config.toml` this command writes: a file without it is not ours.
const CONFIG_HEADER: &str = "# biobert pretrain: the configuration this run ran with";

/// Writes RUN/config.toml (through a temporary file), refusing to replace a config.toml
/// that another program wrote, or to fill a folder that is not a run folder.
fn write_run_config(out: &Path, config: &RunConfig) -> Result<()> {
    let path = out.join("config.toml");
    if path.exists() {
        let first = std::fs::read_to_string(&path).unwrap_or_default();
        if !first.starts_with(CONFIG_HEADER) {
            bail!(
                "{}: not written by biobert pretrain; --out must be a new folder, an empty one or a run folder",
                path.display()
            );
        }
    } else if out.is_dir()
        && std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some()
        && !out.join("checkpoints").is_dir()
    {
        bail!(
            "{}: not empty and not a run folder; --out must be a new folder, an empty one or a run folder",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let resolved = config.to_toml();
    println!("# resolved configuration\n{resolved}");
    corpus_tools::atomic_file::write_bytes(&path, format!("{CONFIG_HEADER}\n{resolved}").as_bytes())
}

/// The model's shape: from the folder it continues from (whose vocabulary must be the
/// corpus'), or from the config for a model trained from scratch.
fn model_config(config: &RunConfig, corpus: &Corpus) -> Result<(BertConfig, Option<PathBuf>)> {
    if config.model.init != "scratch" {
        let dir = PathBuf::from(&config.model.init);
        let bert = model_config_of(&dir, config, corpus)?;
        return Ok((bert, Some(dir)));
    }
    let m = &config.model;
    let mut bert = BertConfig::base(corpus.vocab.len() as i64);
    bert.hidden_size = m.hidden_size;
    bert.num_hidden_layers = m.num_hidden_layers;
    bert.num_attention_heads = m.num_attention_heads;
    bert.intermediate_size = m.intermediate_size;
    bert.max_position_embeddings = m.max_position_embeddings;
    bert.validate()?;
    Ok((with_dropout(bert, config), None))
}

/// The shape of the BERT folder `dir` (a pretrained model or a checkpoint), whose
/// vocabulary must be the corpus'.
fn model_config_of(dir: &Path, config: &RunConfig, corpus: &Corpus) -> Result<BertConfig> {
    let bert = hf_checkpoint::read_config(dir).with_context(|| {
        format!(
            "{}: expected a BERT folder (Hugging Face or Google TensorFlow)",
            dir.display()
        )
    })?;
    let vocab = dir.join("vocab.txt");
    if vocab.is_file() {
        let model_hash = corpus::file_sha256(&vocab)?;
        if model_hash != corpus.tokenizer_sha256() {
            bail!(
                    "{}: its vocab.txt (sha256 {}…) is not the vocabulary the corpus {} was tokenised with (sha256 {}…): re-shard the corpus with this vocab.txt",
                    dir.display(), &model_hash[..12], corpus.dir.display(), &corpus.tokenizer_sha256()[..12.min(corpus.tokenizer_sha256().len())]
                );
        }
    }
    if bert.vocab_size as usize != corpus.vocab.len() {
        bail!(
            "{}: vocab_size {} differs from the corpus vocabulary ({} entries)",
            dir.display(),
            bert.vocab_size,
            corpus.vocab.len()
        );
    }
    Ok(with_dropout(bert, config))
}

fn with_dropout(mut bert: BertConfig, config: &RunConfig) -> BertConfig {
    if let Some(p) = config.model.hidden_dropout_prob {
        bert.hidden_dropout_prob = p;
    }
    if let Some(p) = config.model.attention_probs_dropout_prob {
        bert.attention_probs_dropout_prob = p;
    }
    bert
}

fn resume_point(checkpoints: &Path, resume: Option<&str>) -> Result<Option<PathBuf>> {
    match resume {
        None => {
            if checkpoint::newest_valid(checkpoints).is_some() {
                bail!(
                    "{} holds checkpoints: add --resume auto to continue, or choose another --out",
                    checkpoints.display()
                );
            }
            Ok(None)
        }
        Some("auto") => Ok(checkpoint::newest_valid(checkpoints).map(|(p, _)| p)),
        Some(dir) => Ok(Some(PathBuf::from(dir))),
    }
}
