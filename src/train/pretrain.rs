//! `biobert pretrain`: continue pretraining BERT on token shards with Google/BioBERT's
//! objective (MLM + NSP), resumable at any point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::nn::VarStore;
use tch::{Device, Tensor};
use tensorboard_rs::summary_writer::SummaryWriter;

use crate::data::corpus::{self, Corpus};
use crate::data::data_loader::{self, Layout, Sampler, TensorBatch};
use crate::data::rng::Rng;
use crate::model::bert::{Batch, Bert};
use crate::model::bert_config::BertConfig;
use crate::model::flash_attention;
use crate::model::flops;
use crate::model::hf_checkpoint;
use crate::parallel::distributed::Distributed;
use crate::parallel::gradient_all_reduce::GradientAllReduce;
use crate::parallel::run_agreement;
use crate::runtime::device_selection;
use crate::train::checkpoint::{self, TrainerState};
use crate::train::flat_parameters::FlatParameters;
use crate::train::optimizer::{self, Optimizer};
use crate::train::run_config::RunConfig;

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

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM (pre-emption) and SIGINT finish the current step, save, and exit 0.
fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

struct Run {
    config: RunConfig,
    bert_config: BertConfig,
    corpus: Arc<Corpus>,
    device: Device,
    out: PathBuf,
    /// sha256 of the corpus' manifest.json.
    manifest: String,
    allow_new_corpus: bool,
}

pub fn run(args: &PretrainArgs) -> Result<()> {
    let mut overrides = args.set.clone();
    if let Some(n) = args.max_steps {
        overrides.push(format!("train.max_steps={n}"));
    }
    if let Some(d) = &args.device {
        overrides.push(format!("train.device={d:?}"));
    }
    Distributed::run_job(|dist| {
        let config = RunConfig::load(&args.config, &overrides)?;
        let threads = crate::runtime::thread_budget::apply(dist.local_size, config.train.threads);
        let data = config.data_path(args.data.as_ref())?;
        let corpus = Arc::new(Corpus::open(&data)?);
        // The local rank picks the GPU; a GPU host whose GPUs torch cannot use is an error.
        let choice = device_selection::select(&config.train.device, dist.local_rank)?;
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
        if dist.is_root() {
            write_run_config(&args.out, &config)?;
            println!("ranks: {} (rank 0 on {device:?})", dist.size);
            println!(
                "threads: {} torch, {} data loader per rank ({})",
                threads.torch, threads.loader, threads.why
            );
            if let Some(dir) = crate::runtime::torch_runtime::loaded_torch_lib_dir() {
                let version = crate::runtime::torch_location::installed_version(&dir);
                let source =
                    std::env::var("BIOBERT_TORCH_SOURCE").unwrap_or_else(|_| "rpath".into());
                println!(
                    "torch: {} at {} (found through {source})",
                    version.as_deref().unwrap_or("unknown version"),
                    dir.display()
                );
            }
        }
        dist.barrier();
        let run = Run {
            config,
            bert_config,
            corpus,
            device,
            out: args.out.clone(),
            manifest,
            allow_new_corpus: args.allow_new_corpus,
        };
        train(&run, dist, init_dir.as_deref(), resume_from)
    })
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
    let tmp = out.join("config.toml.tmp");
    std::fs::write(&tmp, format!("{CONFIG_HEADER}\n{resolved}"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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

/// `BIOBERT_FAIL_AT=RANK:STEP` makes that rank fail at that step: a fault injection for
/// testing that a failing rank takes the job down.
fn injected_failure(rank: usize, step: u64) -> Result<()> {
    if let Ok(spec) = std::env::var("BIOBERT_FAIL_AT") {
        if spec == format!("{rank}:{step}") {
            bail!("injected failure at step {step} (BIOBERT_FAIL_AT={spec})");
        }
    }
    Ok(())
}

fn train(
    run: &Run,
    dist: &Distributed,
    init_dir: Option<&Path>,
    resume_from: Option<PathBuf>,
) -> Result<()> {
    let c = &run.config;
    if c.data.max_seq_len as i64 > run.bert_config.max_position_embeddings {
        bail!(
            "data.max_seq_len {} exceeds the model's max_position_embeddings {}",
            c.data.max_seq_len,
            run.bert_config.max_position_embeddings
        );
    }
    tch::manual_seed(c.train.seed as i64);
    let vs = VarStore::new(run.device);
    let mut bert = Bert::new(&vs.root(), &run.bert_config);
    // Mixed precision: bf16 matrix products over fp32 master weights ("auto": on GPUs).
    bert.compute = match (c.train.precision.as_str(), run.device) {
        ("bf16", _) | ("auto", Device::Cuda(_)) => tch::Kind::BFloat16,
        _ => tch::Kind::Float,
    };
    if bert.compute == tch::Kind::BFloat16 && c.train.bf16_residual {
        bert.activations = tch::Kind::BFloat16;
    }
    bert.unpad = c.train.unpad;
    if let Some(dir) = init_dir {
        let (_, report) = hf_checkpoint::load_folder(&vs, dir)?;
        report.require_encoder(&dir.display().to_string())?;
        if dist.is_root() {
            println!("init: {} from {}", report.summary(), dir.display());
        }
    }
    // From here on the parameters and gradients live in flat buffers.
    let flat = FlatParameters::new(vs.variables().into_iter().collect(), run.device);
    let mut optimizer = Optimizer::new(flat, &c.train);
    let mut reducer = GradientAllReduce::new(dist, &c.distributed, run.device)?;
    if dist.is_root() {
        println!("gradient all-reduce: {}", reducer.backend);
        if bert.unpad {
            println!("unpad: {}", unpad_line(&bert, run.device));
        }
    }
    let checkpoints = run.out.join("checkpoints");
    let mut start_step = 0;
    if let Some(from) = resume_from {
        let state = checkpoint::validate(&from)?;
        check_resumed_run(run, &state, &from, dist.is_root())?;
        let (_, report) = hf_checkpoint::load_folder(&vs, &from)?;
        if !report.missing.is_empty() {
            bail!("{}: {}", from.display(), report.summary());
        }
        optimizer.load_state(
            Tensor::read_safetensors(from.join("optimizer.safetensors"))?,
            state.step,
        )?;
        start_step = state.step;
        if dist.is_root() {
            println!(
                "resume: step {} from {} (written by {} rank(s))",
                state.step,
                from.display(),
                state.world_size
            );
        }
    }
    let index_root = match c.data.index_cache.as_str() {
        "" => run.out.join("instance_index"),
        dir => PathBuf::from(dir),
    };
    let (mut sampler, mut heldout) =
        data_loader::samplers(&run.corpus, &run.manifest, &c.data, &index_root)?;
    if dist.is_root() {
        println!(
            "data: {} training and {} held-out documents from {}; instance index in {}",
            sampler.documents(),
            heldout.documents(),
            run.corpus.dir.display(),
            sampler.index_dir().display()
        );
    }

    let layout = Layout {
        micro_batch: c.train.micro_batch_size as u64,
        accumulation: c.train.grad_accumulation as u64,
        world_size: dist.size as u64,
        rank: dist.rank as u64,
    };
    // The first step's epoch is mapped (or built) before the loader thread starts, so
    // that a failure stops here with its cause.
    sampler.prepare(layout.samples(start_step, 0).start)?;
    heldout.prepare(0)?;
    let batches = data_loader::prefetch(
        sampler,
        layout,
        start_step,
        c.train.max_steps,
        4,
        run.device,
        c.train.unpad,
    );
    install_signal_handlers();
    let mut logger = dist.is_root().then(|| {
        let flops = flops::per_token(&run.bert_config, c.data.max_seq_len);
        let peak = peak_tflops(c, run.device, bert.compute == tch::Kind::BFloat16);
        Logger::new(&run.out, c.train.max_steps, start_step, flops, peak)
    });
    let mut last_checkpoint: Option<PathBuf> = None;
    let save = |step: u64, optimizer: &Optimizer| -> Result<PathBuf> {
        let state = TrainerState {
            step,
            samples_consumed: step * layout.global_batch(),
            data_seed: c.data.seed,
            train_seed: c.train.seed,
            world_size: dist.size,
            config: c.clone(),
            versions: versions(),
            files: BTreeMap::new(),
            corpus_manifest_sha256: run.manifest.clone(),
        };
        checkpoint::save(
            &checkpoints,
            &vs,
            &run.bert_config,
            &run.corpus.vocab_path(),
            optimizer.state(),
            state,
            c.checkpoint.keep,
        )
    };
    let mut step = start_step;
    let mut skipped_in_a_row = 0;
    let mut saved_step = start_step;
    while step < c.train.max_steps {
        let Some(micro_batches) = next_batches(&batches, dist)? else {
            // A signal while the loader was busy: the last completed step is saved.
            if dist.is_root() && step > saved_step {
                let path = save(step, &optimizer)?;
                println!("checkpoint: {}", path.display());
            }
            println!("stopped by a signal after step {step}, while the data loader was busy; resume with --resume auto");
            return Ok(());
        };
        injected_failure(dist.rank, step + 1)?;
        let (metrics, grad_norm) = train_step(
            &bert,
            dist,
            &mut reducer,
            &optimizer,
            &micro_batches,
            run.device,
            c.train.seed,
        )?;
        let loss = metrics.loss;
        let finite = loss.is_finite() && grad_norm.is_finite();
        if finite {
            skipped_in_a_row = 0;
            optimizer.clip(grad_norm, c.train.max_grad_norm);
            let lr = optimizer::learning_rate(&c.train, step);
            optimizer.step(lr)?;
            optimizer.zero_grad();
            step += 1;
            if let Some(logger) = &mut logger {
                logger.record(&metrics, lr, grad_norm);
                if step % c.log.every.max(1) == 0 || step == c.train.max_steps {
                    logger.flush(step);
                }
                // Evaluation runs on rank 0 alone: its held-out set is small and fixed.
                if c.log.eval_every > 0 && step % c.log.eval_every == 0 {
                    let eval = evaluate(
                        &bert,
                        &mut heldout,
                        layout.micro_batch,
                        c.log.eval_batches,
                        run.device,
                    )?;
                    logger.eval(step, &eval);
                }
            }
        } else {
            let last = last_checkpoint
                .as_ref()
                .map_or("none".to_string(), |p| p.display().to_string());
            if c.train.on_nan == "stop" {
                bail!("step {}: the loss is {loss} (gradient norm {grad_norm}); last good checkpoint: {last}", step + 1);
            }
            skipped_in_a_row += 1;
            if skipped_in_a_row >= c.train.max_skipped_steps {
                bail!(
                    "step {}: {skipped_in_a_row} steps in a row had a non-finite loss or gradient (last: loss {loss}, gradient norm {grad_norm}; train.max_skipped_steps = {}): the model or the data is broken, not one batch; last good checkpoint: {last}",
                    step + 1,
                    c.train.max_skipped_steps
                );
            }
            if dist.is_root() {
                eprintln!(
                    "warning: step {}: loss {loss}, step skipped (train.on_nan = skip; {skipped_in_a_row} in a row)",
                    step + 1
                );
            }
            optimizer.zero_grad();
            step += 1;
        }
        // A signal to any rank stops every rank after the same step.
        let mut flags = [f64::from(u8::from(STOP.load(Ordering::SeqCst)))];
        dist.all_reduce_f64(&mut flags);
        let stop = flags[0] > 0.0;
        if (step == c.train.max_steps && c.checkpoint.at_end)
            || stop
            || (c.checkpoint.every > 0 && step % c.checkpoint.every == 0)
        {
            if dist.is_root() {
                let path = save(step, &optimizer)?;
                println!("checkpoint: {}", path.display());
                last_checkpoint = Some(path);
                saved_step = step;
            }
            dist.barrier();
        }
        if stop {
            if dist.is_root() {
                println!("stopped by a signal after step {step}; resume with --resume auto");
            }
            return Ok(());
        }
    }
    if dist.is_root() && step == start_step && start_step >= c.train.max_steps {
        println!(
            "nothing to do: the run is already at step {start_step} of {}",
            c.train.max_steps
        );
    }
    Ok(())
}

/// The next step's batches, waiting for the loader while watching for a stop signal. A
/// lone rank stops at once (`None`); ranks of a job must stop after the same step, so they
/// wait for the batch, but not forever.
fn next_batches(
    batches: &crossbeam_channel::Receiver<Result<Vec<TensorBatch>>>,
    dist: &Distributed,
) -> Result<Option<Vec<TensorBatch>>> {
    use crossbeam_channel::RecvTimeoutError;
    let mut signalled: Option<Instant> = None;
    loop {
        match batches.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(batch) => return batch.map(Some),
            Err(RecvTimeoutError::Disconnected) => bail!("the data loader stopped"),
            Err(RecvTimeoutError::Timeout) if STOP.load(Ordering::SeqCst) => {
                if dist.size == 1 {
                    return Ok(None);
                }
                let since = *signalled.get_or_insert_with(Instant::now);
                if since.elapsed().as_secs() >= 60 {
                    bail!("stopped by a signal; the data loader has been busy for a minute since, so the step cannot finish: the job ends at its last checkpoint");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Resuming on another corpus is refused unless asked for; other changes to the
/// configuration are allowed (a new learning rate, more steps) and listed.
fn check_resumed_run(run: &Run, state: &TrainerState, from: &Path, root: bool) -> Result<()> {
    let was = &state.corpus_manifest_sha256;
    if !was.is_empty() && *was != run.manifest {
        if !run.allow_new_corpus {
            bail!(
                "{}: written for another corpus (manifest sha256 {}…, now {}…): resume with --allow-new-corpus to continue on this one, or give the original --data",
                from.display(),
                &was[..12.min(was.len())],
                &run.manifest[..12.min(run.manifest.len())]
            );
        }
        if root {
            println!("resume: on another corpus than the checkpoint's (--allow-new-corpus)");
        }
    }
    let text = |c: &RunConfig| {
        let mut c = c.clone();
        c.data.path = String::new();
        run_agreement::flatten(&c)
    };
    let changed = run_agreement::differences(&text(&run.config), &text(&state.config));
    if root && !changed.is_empty() {
        let changed: Vec<String> = changed
            .iter()
            .map(|d| d.replace("(rank 0: ", "(checkpoint: "))
            .collect();
        println!(
            "resume: configuration changed since the checkpoint: {}",
            changed.join("; ")
        );
    }
    Ok(())
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

#[derive(Default, Clone)]
pub struct StepMetrics {
    pub loss: f64,
    pub mlm_loss: f64,
    pub nsp_loss: f64,
    pub mlm_correct: f64,
    pub mlm_count: f64,
    pub nsp_correct: f64,
    pub sequences: f64,
    pub tokens: f64,
}

/// The loss sums of one batch (see `Bert::pretraining_sums`) on `device`.
/// What `train.unpad` does on this device, in one line.
fn unpad_line(bert: &Bert, device: Device) -> String {
    let head_dim = bert.config.head_dim();
    match flash_attention::available(device, bert.compute, head_dim) {
        Ok(()) => "padded batches run on their real tokens, attention through the variable-length flash kernel".into(),
        Err(why) => format!("padded batches run on their real tokens; attention runs masked on the padded layout, since the variable-length flash kernel is not available ({why})"),
    }
}

/// A batch the loader packed (`train.unpad`) runs packed.
fn batch_sums(
    bert: &Bert,
    b: &TensorBatch,
    device: Device,
    train: bool,
) -> Result<crate::model::bert::Losses> {
    let padded = b.has_padding();
    let b = b.to_device(device)?;
    let packing = b.packing.as_ref();
    let batch = Batch {
        input_ids: &b.input_ids,
        token_type_ids: &b.token_type_ids,
        attention_mask: padded.then_some(&b.attention_mask),
        packing,
    };
    Ok(bert.pretraining_sums_at(
        &batch,
        if packing.is_some() {
            &b.mlm_rows
        } else {
            &b.mlm_positions
        },
        &b.mlm_targets,
        &b.nsp_labels,
        train,
    ))
}

/// One optimizer step's forward and backward passes over this rank's micro-batches, the
/// gradient all-reduce and the global gradient norm. The losses are sums normalised by the
/// masked positions and sequences of the whole global batch (all micro-batches, all
/// ranks), so the summed gradients are those of one large batch; the returned metrics are
/// global too. The loss sums stay on the device until one read at the end of the step.
fn train_step(
    bert: &Bert,
    dist: &Distributed,
    reducer: &mut GradientAllReduce,
    optimizer: &Optimizer,
    micro_batches: &[TensorBatch],
    device: Device,
    seed: u64,
) -> Result<(StepMetrics, f64)> {
    let mut counts = [
        micro_batches.iter().map(|b| b.masked as f64).sum::<f64>(),
        micro_batches
            .iter()
            .map(|b| b.sequences as f64)
            .sum::<f64>(),
    ];
    dist.all_reduce_f64(&mut counts);
    let [masked, sequences] = counts;
    let mut device_sums = Tensor::zeros([4], (tch::Kind::Double, device));
    for b in micro_batches {
        tch::manual_seed(dropout_seed(seed, b.first_sample));
        let s = batch_sums(bert, b, device, true)?;
        (&s.mlm / masked.max(1.0) + &s.nsp / sequences.max(1.0)).backward();
        device_sums += sums_tensor(&s);
    }
    reducer.all_reduce(dist, &optimizer.flat.grad)?;
    let norm = optimizer.grad_norm().to_kind(tch::Kind::Double).view([1]);
    let read = Tensor::cat(&[device_sums, norm], 0).to_device(Device::Cpu);
    let read = Vec::<f64>::try_from(read).expect("five f64 values");
    // The read waited for the device, so the step's sums are done or have failed.
    reducer.check()?;
    let tokens = micro_batches.iter().map(|b| b.tokens as f64).sum::<f64>();
    let mut sums = [read[0], read[1], read[2], read[3], tokens];
    dist.all_reduce_f64(&mut sums);
    Ok((metrics(&sums, masked, sequences), read[4]))
}

/// The purpose key of the dropout streams (the data's keys are in `instances`).
const KEY_DROPOUT: u64 = 5;

/// The seed of torch's generator for the dropout of the micro-batch whose first sample has
/// global index `first_sample`: every rank's micro-batches differ, and a resumed run (or
/// one with another rank count but the same micro-batch size) draws the same masks.
pub fn dropout_seed(seed: u64, first_sample: u64) -> i64 {
    (Rng::for_keys(&[seed, KEY_DROPOUT, first_sample]).next_u64() & i64::MAX as u64) as i64
}

/// [mlm loss sum, nsp loss sum, mlm correct, nsp correct] as one f64 device tensor.
fn sums_tensor(s: &crate::model::bert::Losses) -> Tensor {
    let f = |t: &Tensor| t.detach().to_kind(tch::Kind::Double).view([1]);
    Tensor::cat(
        &[f(&s.mlm), f(&s.nsp), f(&s.mlm_correct), f(&s.nsp_correct)],
        0,
    )
}

/// Accumulates [mlm loss sum, nsp loss sum, mlm correct, nsp correct, tokens] on the host
/// (evaluation).
fn add_sums(sums: &mut [f64; 5], s: &crate::model::bert::Losses, b: &TensorBatch) {
    let v = Vec::<f64>::try_from(sums_tensor(s).to_device(Device::Cpu)).expect("four f64 values");
    for (acc, x) in sums.iter_mut().zip(v) {
        *acc += x;
    }
    sums[4] += b.tokens as f64;
}

fn metrics(sums: &[f64; 5], masked: f64, sequences: f64) -> StepMetrics {
    let (mlm_loss, nsp_loss) = (sums[0] / masked.max(1.0), sums[1] / sequences.max(1.0));
    StepMetrics {
        loss: mlm_loss + nsp_loss,
        mlm_loss,
        nsp_loss,
        mlm_correct: sums[2],
        mlm_count: masked,
        nsp_correct: sums[3],
        sequences,
        tokens: sums[4],
    }
}

/// Loss and accuracy over the first `batches` micro-batches of the held-out documents.
fn evaluate(
    bert: &Bert,
    heldout: &mut Sampler,
    micro: u64,
    batches: u64,
    device: Device,
) -> Result<Option<StepMetrics>> {
    let (mut sums, mut masked, mut sequences) = ([0f64; 5], 0f64, 0f64);
    for k in 0..batches {
        let examples: Option<Vec<_>> = (0..micro)
            .map(|i| heldout.heldout_example(k * micro + i))
            .collect::<Result<_>>()?;
        let Some(examples) = examples else {
            return Ok(None);
        };
        let batch = data_loader::collate(&examples, bert.unpad);
        let s = tch::no_grad(|| batch_sums(bert, &batch, device, false))?;
        add_sums(&mut sums, &s, &batch);
        masked += batch.masked as f64;
        sequences += batch.sequences as f64;
    }
    Ok(Some(metrics(&sums, masked, sequences)))
}

fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("biobert".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(dir) = crate::runtime::torch_runtime::loaded_torch_lib_dir() {
        if let Some(t) = crate::runtime::torch_location::installed_version(&dir) {
            v.insert("torch".into(), t);
        }
    }
    v
}

/// The console line every K steps and the TensorBoard scalars (averages over the K steps).
struct Logger {
    writer: SummaryWriter,
    /// `log.jsonl`: the logged values at full precision, one line per logged step.
    jsonl: std::fs::File,
    sum: StepMetrics,
    lr: f64,
    grad_norm: f64,
    steps: u64,
    since: Instant,
    started: Instant,
    start_step: u64,
    max_steps: u64,
    flops_per_token: f64,
    peak_tflops: Option<f64>,
}

impl Logger {
    fn new(
        out: &Path,
        max_steps: u64,
        start_step: u64,
        flops_per_token: f64,
        peak_tflops: Option<f64>,
    ) -> Logger {
        let jsonl = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out.join("log.jsonl"))
            .expect("the run folder is writable");
        Logger {
            writer: SummaryWriter::new(out.join("tensorboard")),
            jsonl,
            sum: StepMetrics::default(),
            lr: 0.0,
            grad_norm: 0.0,
            steps: 0,
            since: Instant::now(),
            started: Instant::now(),
            start_step,
            max_steps,
            flops_per_token,
            peak_tflops,
        }
    }

    fn record(&mut self, m: &StepMetrics, lr: f64, grad_norm: f64) {
        let s = &mut self.sum;
        s.loss += m.loss;
        s.mlm_loss += m.mlm_loss;
        s.nsp_loss += m.nsp_loss;
        s.mlm_correct += m.mlm_correct;
        s.mlm_count += m.mlm_count;
        s.nsp_correct += m.nsp_correct;
        s.sequences += m.sequences;
        s.tokens += m.tokens;
        self.lr = lr;
        self.grad_norm = grad_norm;
        self.steps += 1;
    }

    fn flush(&mut self, step: u64) {
        if self.steps == 0 {
            return;
        }
        let n = self.steps as f64;
        let s = self.sum.clone();
        let seconds = self.since.elapsed().as_secs_f64().max(1e-9);
        let seq_per_s = s.sequences / seconds;
        let tokens_per_s = s.tokens / seconds;
        let tflops = tokens_per_s * self.flops_per_token / 1e12;
        let mut scalars = vec![
            ("train/loss", s.loss / n),
            ("train/mlm_loss", s.mlm_loss / n),
            ("train/nsp_loss", s.nsp_loss / n),
            ("train/mlm_accuracy", s.mlm_correct / s.mlm_count.max(1.0)),
            ("train/nsp_accuracy", s.nsp_correct / s.sequences.max(1.0)),
            ("train/lr", self.lr),
            ("train/grad_norm", self.grad_norm),
            ("perf/seq_per_s", seq_per_s),
            ("perf/tokens_per_s", tokens_per_s),
            ("perf/tflops", tflops),
        ];
        if let Some(peak) = self.peak_tflops {
            scalars.push(("perf/mfu", tflops / peak));
        }
        for &(tag, value) in &scalars {
            self.writer.add_scalar(tag, value as f32, step as usize);
        }
        self.writer.flush();
        self.write_jsonl(step, &scalars);
        let done = (step - self.start_step) as f64;
        let eta =
            self.started.elapsed().as_secs_f64() / done.max(1.0) * (self.max_steps - step) as f64;
        let mfu = self
            .peak_tflops
            .map(|peak| format!(" | MFU {:.1}%", 100.0 * tflops / peak))
            .unwrap_or_default();
        println!(
            "step {step}/{} loss {:.4} (mlm {:.4}, nsp {:.4}) mlm_acc {:.4} lr {:.3e} grad_norm {:.3} | {:.1} seq/s{mfu} | ETA {}",
            self.max_steps,
            s.loss / n,
            s.mlm_loss / n,
            s.nsp_loss / n,
            s.mlm_correct / s.mlm_count.max(1.0),
            self.lr,
            self.grad_norm,
            seq_per_s,
            format_duration(eta)
        );
        self.sum = StepMetrics::default();
        self.steps = 0;
        self.since = Instant::now();
    }

    fn eval(&mut self, step: u64, m: &Option<StepMetrics>) {
        let Some(m) = m else { return };
        let scalars = [
            ("eval/loss", m.loss),
            ("eval/mlm_loss", m.mlm_loss),
            ("eval/nsp_loss", m.nsp_loss),
            ("eval/mlm_accuracy", m.mlm_correct / m.mlm_count.max(1.0)),
            ("eval/nsp_accuracy", m.nsp_correct / m.sequences.max(1.0)),
        ];
        for (tag, value) in scalars {
            self.writer.add_scalar(tag, value as f32, step as usize);
        }
        self.writer.flush();
        println!(
            "eval step {step}: loss {:.4} mlm_acc {:.4} nsp_acc {:.4}",
            m.loss, scalars[3].1, scalars[4].1
        );
    }
}

impl Logger {
    fn write_jsonl(&mut self, step: u64, scalars: &[(&str, f64)]) {
        use std::io::Write;
        let mut line = serde_json::Map::new();
        line.insert("step".into(), step.into());
        for (tag, value) in scalars {
            line.insert((*tag).into(), serde_json::json!(value));
        }
        let _ = writeln!(self.jsonl, "{}", serde_json::Value::Object(line));
    }
}

/// The dense peak for perf/mfu: log.peak_tflops, or the GPU's data-sheet figure.
fn peak_tflops(c: &RunConfig, device: Device, bf16: bool) -> Option<f64> {
    if c.log.peak_tflops > 0.0 {
        return Some(c.log.peak_tflops);
    }
    let Device::Cuda(i) = device else { return None };
    let devices = crate::runtime::cuda_driver::CudaDriver::open()
        .ok()?
        .devices()
        .ok()?;
    flops::peak_tflops(&devices.get(i)?.name, bf16)
}

fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_streams_differ_across_ranks_and_repeat_on_resume() {
        // Two ranks, two micro-batches each: four distinct streams per step, none shared
        // with the next step.
        let layout = |rank| Layout {
            micro_batch: 8,
            accumulation: 2,
            world_size: 2,
            rank,
        };
        let mut seeds = std::collections::BTreeSet::new();
        for step in 0..50 {
            for rank in 0..2 {
                for m in 0..2 {
                    let first = layout(rank).samples(step, m).start;
                    assert!(seeds.insert(dropout_seed(42, first)));
                }
            }
        }
        assert_eq!(seeds.len(), 200);
        // A resumed run recomputes the same seed from the same global position.
        let first = layout(1).samples(17, 1).start;
        assert_eq!(dropout_seed(42, first), dropout_seed(42, first));
        assert_ne!(dropout_seed(42, first), dropout_seed(43, first));
        assert!(seeds.iter().all(|&s| s >= 0));
    }
}
