//! The pretraining loop: Google/BioBERT's objective (MLM + NSP) over the instance index,
//! resumable at any step. `train` reads as its phases: build the model and optimizer,
//! restore a checkpoint, start the data, then per step: the forward and backward passes
//! with the gradient all-reduce and the optimizer step, all queued without waiting for the
//! device; then the previous step's metrics (the log, or the non-finite-loss policy), read
//! one step late; then an evaluation, a checkpoint or a stop, which settle every step first.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::config::choices::OnNan;
use crate::config::profile_window::ProfileWindow;
use crate::config::run_config::RunConfig;
use crate::data::corpus::Corpus;
use crate::data::data_loader::{self, Layout, Sampler, TensorBatch};
use crate::data::rng::{Rng, Stream};
use crate::model::bert::{Batch, Bert};
use crate::model::bert_config::BertConfig;
use crate::model::compute_weights::ComputeWeights;
use crate::model::flash_attention;
use crate::model::flops;
use crate::model::fused_elementwise::FusedKernels;
use crate::model::hf_checkpoint;
use crate::parallel::distributed::Distributed;
use crate::parallel::gradient_all_reduce::GradientAllReduce;
use crate::parallel::overlapped_all_reduce::OverlapReport;
use crate::parallel::run_agreement;
use crate::runtime::{fault_injection, profiler, stop_signal};
use crate::train::checkpoint::{self, TrainerState};
use crate::train::flat_parameters::FlatParameters;
use crate::train::logger::{self, Logger, StepMetrics};
use crate::train::optimizer::Optimizer;
use crate::train::step_readback::{InFlight, StepReadback};

/// The loader's channel of each step's micro-batches.
type Batches = crossbeam_channel::Receiver<Result<Vec<TensorBatch>>>;

pub struct Run {
    pub config: RunConfig,
    pub bert_config: BertConfig,
    pub corpus: Arc<Corpus>,
    pub device: Device,
    pub out: PathBuf,
    /// sha256 of the corpus' manifest.json.
    pub manifest: String,
    pub allow_new_corpus: bool,
}

/// The model, its optimizer and where the run stands: what the loop's phases share.
struct Trainer<'a> {
    run: &'a Run,
    dist: &'a Distributed,
    vs: VarStore,
    bert: Bert,
    optimizer: Optimizer,
    reducer: GradientAllReduce,
    layout: Layout,
    /// Rank 0's console, TensorBoard and log.jsonl.
    logger: Option<Logger>,
    /// Optimizer steps done (skipped ones included).
    step: u64,
    /// The step of the newest checkpoint, this run's or the one it resumed from.
    saved_step: u64,
    last_checkpoint: Option<PathBuf>,
    skipped_in_a_row: u64,
    readback: StepReadback,
    /// `log.profile`'s steps, recorded by rank 0.
    profile: Option<ProfileWindow>,
    recording: Option<profiler::Recording>,
    /// Steps queued whose metrics have not been read yet (at most two: the one before the
    /// newest, then the newest).
    unread: VecDeque<QueuedStep>,
    /// Whether the first step's overlap has been reported.
    overlap_reported: bool,
}

/// A step queued on the device: what its metrics need once they are read.
struct QueuedStep {
    /// The step number (from 1).
    step: u64,
    lr: f64,
    /// [mlm loss sum, nsp loss sum, mlm correct, nsp correct, gradient norm] of this rank.
    values: InFlight,
    /// This rank's tokens; the global masked positions and sequences.
    tokens: f64,
    masked: f64,
    sequences: f64,
}

/// Trains `run` from `init_dir` (a pretrained folder) or `resume_from` (a checkpoint) to
/// `train.max_steps`, or until a signal stops every rank after the same step.
pub fn train(
    run: &Run,
    dist: &Distributed,
    init_dir: Option<&Path>,
    resume_from: Option<PathBuf>,
) -> Result<()> {
    let config = &run.config;
    run.bert_config
        .check_sequence_length("data.max_seq_len", config.data.max_seq_len)?;
    let mut trainer = Trainer::new(run, dist, init_dir)?;
    if let Some(from) = resume_from {
        trainer.restore(&from)?;
    }
    let start_step = trainer.step;
    let (batches, mut heldout) = trainer.start_data()?;
    stop_signal::install();
    trainer.open_logger()?;
    while trainer.step < config.train.max_steps {
        let micro_batches = match batches.try_recv() {
            Ok(batch) => batch?,
            Err(_) => {
                // The loader is behind, so the device runs out of work anyway: the queued
                // steps are read (and logged) now rather than after the wait.
                trainer.settle(&mut heldout)?;
                match next_batches(&batches, dist)? {
                    Some(batch) => batch,
                    None => return trainer.stop_while_loading(),
                }
            }
        };
        fault_injection::fail_at_step(dist.rank, trainer.step + 1)?;
        trainer.start_profile()?;
        trainer.queue_step(&micro_batches)?;
        // The previous step's work is done, or nearly: its metrics cost no wait.
        while trainer.unread.len() > 1 {
            trainer.read_oldest(&mut heldout)?;
        }
        trainer.finish_profile(&mut heldout)?;
        if trainer.checkpoint_or_stop(&mut heldout)? {
            return Ok(());
        }
    }
    trainer.settle(&mut heldout)?;
    if dist.is_root() && trainer.step == start_step && start_step >= config.train.max_steps {
        println!(
            "nothing to do: the run is already at step {start_step} of {}",
            config.train.max_steps
        );
    }
    Ok(())
}

impl<'a> Trainer<'a> {
    /// The model (initialised, then loaded from `init_dir`), its parameters in flat
    /// buffers, the optimizer and the gradient all-reduce (collective).
    fn new(run: &'a Run, dist: &'a Distributed, init_dir: Option<&Path>) -> Result<Trainer<'a>> {
        let c = &run.config;
        tch::manual_seed(c.train.seed as i64);
        let vs = VarStore::new(run.device);
        let mut bert = Bert::new(&vs.root(), &run.bert_config);
        // Mixed precision: bf16 matrix products over fp32 master weights ("auto": on GPUs).
        bert.compute = c.train.precision.compute_kind(run.device);
        if bert.compute == tch::Kind::BFloat16 && c.train.bf16_residual {
            bert.activations = tch::Kind::BFloat16;
        }
        if let Some(dir) = init_dir {
            let (_, report) = hf_checkpoint::load_folder(&vs, dir)?;
            report.require_encoder(&dir.display().to_string())?;
            if dist.is_root() {
                println!("init: {} from {}", report.summary(), dir.display());
            }
        }
        if c.train.fused_elementwise {
            let kernels = FusedKernels::for_model(&bert, run.device)
                .map_err(|e| anyhow::anyhow!("train.fused_elementwise: {e}"))?;
            bert.fused = Some(kernels);
            if dist.is_root() {
                println!(
                    "fused element-wise kernels: bias + dropout + residual + LayerNorm and bias + GELU, {}, checked on the GPU against the unfused operations",
                    bert.fused.as_ref().map_or("", |k| k.description)
                );
            }
        }
        // From here on the parameters and gradients live in flat buffers.
        let flat = FlatParameters::new(vs.variables().into_iter().collect(), run.device);
        if c.train.cast_weights_once {
            bert.compute_weights = Some(compute_weights(&bert, &flat)?);
            if dist.is_root() {
                println!(
                    "cast weights once: {} parameters cast to bf16 once per optimizer step, their gradients added into fp32 once per micro-batch",
                    flat.numel()
                );
            }
        }
        let optimizer = Optimizer::new(flat, &c.train.optimizer());
        let mut reducer = GradientAllReduce::new(dist, &c.distributed, run.device)?;
        let overlap = match c.distributed.overlap {
            true => Some(reducer.overlap_with_backward(dist, &optimizer.flat)?),
            false => None,
        };
        if dist.is_root() {
            println!(
                "gradient all-reduce: {}, {} parameters ({} bytes of fp32 gradients) a step",
                reducer.backend,
                optimizer.flat.numel(),
                optimizer.flat.numel() * 4
            );
            if let Some(line) = overlap {
                println!("{line}");
            }
            if c.train.unpad {
                println!("unpad: {}", unpad_line(&bert, run.device));
            }
        }
        let layout = Layout {
            micro_batch: c.train.micro_batch_size as u64,
            accumulation: c.train.grad_accumulation as u64,
            world_size: dist.size as u64,
            rank: dist.rank as u64,
        };
        Ok(Trainer {
            run,
            dist,
            vs,
            bert,
            optimizer,
            reducer,
            layout,
            logger: None,
            step: 0,
            saved_step: 0,
            last_checkpoint: None,
            skipped_in_a_row: 0,
            readback: StepReadback::new(run.device)?,
            profile: ProfileWindow::parse("log.profile", &c.log.profile)?,
            recording: None,
            unread: VecDeque::new(),
            overlap_reported: false,
        })
    }

    /// Weights, moments and step from checkpoint `from`.
    fn restore(&mut self, from: &Path) -> Result<()> {
        let state = checkpoint::validate(from)?;
        check_resumed_run(self.run, &state, from, self.dist.is_root())?;
        let (_, report) = hf_checkpoint::load_folder(&self.vs, from)?;
        if !report.missing.is_empty() {
            bail!("{}: {}", from.display(), report.summary());
        }
        self.optimizer.load_state(
            Tensor::read_safetensors(from.join("optimizer.safetensors"))?,
            state.step,
        )?;
        (self.step, self.saved_step) = (state.step, state.step);
        let was = &state.config.train;
        let was_batch = (was.micro_batch_size * was.grad_accumulation * state.world_size) as u64;
        if self.dist.is_root() && was_batch != self.layout.global_batch() {
            println!(
                "resume: the global batch is {} sequences ({} rank(s)); the checkpoint's was {was_batch} ({} rank(s))",
                self.layout.global_batch(),
                self.dist.size,
                state.world_size
            );
        }
        if self.dist.is_root() {
            println!(
                "resume: step {} from {} (written by {} rank(s))",
                state.step,
                from.display(),
                state.world_size
            );
        }
        Ok(())
    }

    /// The instance indexes mapped (or built), and the loader thread started at this step;
    /// the held-out sampler for evaluation.
    fn start_data(&self) -> Result<(Batches, Sampler)> {
        let (run, c) = (self.run, &self.run.config);
        let index_root = match c.data.index_cache.as_str() {
            "" => run.out.join("instance_index"),
            dir => PathBuf::from(dir),
        };
        let (mut sampler, mut heldout) =
            data_loader::samplers(&run.corpus, &run.manifest, &c.data, &index_root)?;
        if self.dist.is_root() {
            println!(
                "data: {} training and {} held-out documents from {}; instance index in {}",
                sampler.documents(),
                heldout.documents(),
                run.corpus.dir.display(),
                sampler.index_dir().display()
            );
        }
        // The first step's epoch is mapped (or built) before the loader thread starts, so
        // that a failure stops here with its cause.
        sampler.prepare(self.layout.samples(self.step, 0).start)?;
        heldout.prepare(0)?;
        let batches = data_loader::prefetch(
            sampler,
            self.layout,
            self.step,
            c.train.max_steps,
            4,
            run.device,
            c.train.unpad,
        );
        Ok((batches, heldout))
    }

    fn open_logger(&mut self) -> Result<()> {
        if !self.dist.is_root() {
            return Ok(());
        }
        let (run, c) = (self.run, &self.run.config);
        let flops = flops::per_token(&run.bert_config, c.data.max_seq_len);
        let bf16 = self.bert.compute == tch::Kind::BFloat16;
        let peak = logger::peak_tflops(c, run.device, bf16);
        println!("log: each step's loss is read once the next step is queued, so that the host never waits for the device");
        self.logger = Some(Logger::new(
            &run.out,
            c.train.max_steps,
            self.step,
            flops,
            peak,
        )?);
        Ok(())
    }

    /// One step queued on the device: the forward and backward passes over this rank's
    /// micro-batches, the gradient all-reduce, the clipped optimizer update (skipped on the
    /// device when the loss or the gradient is not finite) and the copy of its metrics to
    /// the host. Nothing here waits for the device.
    fn queue_step(&mut self, micro_batches: &[TensorBatch]) -> Result<()> {
        let train = &self.run.config.train;
        let queued = train_step(
            &self.bert,
            self.dist,
            &mut self.reducer,
            &self.optimizer,
            micro_batches,
            self.run.device,
            train.seed,
        )?;
        if let Some(r) = queued.overlap.filter(|_| !self.overlap_reported) {
            self.overlap_reported = true;
            if self.dist.is_root() {
                println!(
                    "overlap: step {} started {} of {} buckets' sums during its backward pass",
                    self.step + 1,
                    r.during_backward,
                    r.buckets
                );
            }
        }
        let lr = train.schedule().learning_rate(self.step);
        self.optimizer
            .clip_and_step(&queued.norm, train.max_grad_norm, lr)?;
        self.optimizer.zero_grad();
        self.step += 1;
        let values = Tensor::cat(
            &[
                queued.sums,
                queued.norm.to_kind(tch::Kind::Double).view([1]),
            ],
            0,
        );
        self.unread.push_back(QueuedStep {
            step: self.step,
            lr,
            values: self.readback.start(&values)?,
            tokens: queued.tokens,
            masked: queued.masked,
            sequences: queued.sequences,
        });
        Ok(())
    }

    /// Rank 0 starts recording before the first step of `log.profile`.
    fn start_profile(&mut self) -> Result<()> {
        let Some(window) = self.profile else {
            return Ok(());
        };
        if self.dist.is_root() && self.step + 1 == window.start {
            let path = window.trace_path(&self.run.out, self.dist.rank);
            let cuda = matches!(self.run.device, Device::Cuda(_));
            self.recording = Some(profiler::start(path, cuda)?);
        }
        Ok(())
    }

    /// After the window's last step (or the run's), once the device has run it, the trace
    /// is written.
    fn finish_profile(&mut self, heldout: &mut Sampler) -> Result<()> {
        let last = self.profile.map_or(0, |w| w.last());
        if self.recording.is_none()
            || (self.step < last && self.step < self.run.config.train.max_steps)
        {
            return Ok(());
        }
        self.settle(heldout)?;
        if let (Some(recording), Some(window)) = (self.recording.take(), self.profile) {
            let path = recording.finish()?;
            println!(
                "profile: steps {}-{} in {} (bench/gpu/trace_summary.py summarises it)",
                window.start,
                self.step,
                path.display()
            );
        }
        Ok(())
    }

    /// Reads every queued step's metrics (an evaluation, a checkpoint or the end needs
    /// them first).
    fn settle(&mut self, heldout: &mut Sampler) -> Result<()> {
        while !self.unread.is_empty() {
            self.read_oldest(heldout)?;
        }
        Ok(())
    }

    /// The oldest queued step's metrics: logged (and evaluated), or the non-finite-loss
    /// policy applied to the step the device skipped.
    fn read_oldest(&mut self, heldout: &mut Sampler) -> Result<()> {
        let Some(q) = self.unread.pop_front() else {
            return Ok(());
        };
        let read = self.readback.finish(q.values)?;
        // The read waited for the step's work, so its gradient sums are done or have failed.
        self.reducer.check()?;
        let mut sums = [read[0], read[1], read[2], read[3], q.tokens];
        self.dist.all_reduce_f64(&mut sums);
        let metrics = logger::metrics(&sums, q.masked, q.sequences);
        let grad_norm = read[4];
        if metrics.loss.is_finite() && grad_norm.is_finite() {
            self.skipped_in_a_row = 0;
            self.log_and_evaluate(q.step, &metrics, q.lr, grad_norm, heldout)
        } else {
            self.skip_non_finite(q.step, metrics.loss, grad_norm)
        }
    }

    /// Rank 0 logs every `log.every` steps and evaluates on its held-out set (small and
    /// fixed) every `log.eval_every`; an evaluation step is read before the next step is
    /// queued, so the evaluation sees that step's weights.
    fn log_and_evaluate(
        &mut self,
        step: u64,
        metrics: &StepMetrics,
        lr: f64,
        grad_norm: f64,
        heldout: &mut Sampler,
    ) -> Result<()> {
        let c = &self.run.config;
        let eval_due = self.eval_due(step);
        let Some(logger) = &mut self.logger else {
            return Ok(());
        };
        logger.record(metrics, lr, grad_norm);
        if step % c.log.every.max(1) == 0 || step == c.train.max_steps {
            logger.flush(step);
        }
        if eval_due {
            debug_assert_eq!(step, self.step, "evaluation after a later step");
            let eval = evaluate(
                &self.bert,
                heldout,
                self.layout.micro_batch,
                c.log.eval_batches,
                self.run.device,
                c.train.unpad,
            )?;
            logger.eval(step, &eval);
        }
        Ok(())
    }

    fn eval_due(&self, step: u64) -> bool {
        let every = self.run.config.log.eval_every;
        every > 0 && step % every == 0
    }

    /// A non-finite loss or gradient at `step`, which the device skipped (weights and
    /// moments untouched): the run stops (`train.on_nan = stop`) or goes on, up to
    /// `train.max_skipped_steps` in a row.
    fn skip_non_finite(&mut self, step: u64, loss: f64, grad_norm: f64) -> Result<()> {
        let train = &self.run.config.train;
        let last = self
            .last_checkpoint
            .as_ref()
            .map_or("none".to_string(), |p| p.display().to_string());
        if train.on_nan == OnNan::Stop {
            bail!("step {step}: the loss is {loss} (gradient norm {grad_norm}); last good checkpoint: {last}");
        }
        self.skipped_in_a_row += 1;
        let in_a_row = self.skipped_in_a_row;
        if in_a_row >= train.max_skipped_steps {
            bail!(
                "step {step}: {in_a_row} steps in a row had a non-finite loss or gradient (last: loss {loss}, gradient norm {grad_norm}; train.max_skipped_steps = {}): the model or the data is broken, not one batch; last good checkpoint: {last}",
                train.max_skipped_steps
            );
        }
        if self.dist.is_root() {
            eprintln!(
                "warning: step {step}: loss {loss}, step skipped (train.on_nan = skip; {in_a_row} in a row)"
            );
        }
        Ok(())
    }

    /// Saves at the end, every `checkpoint.every` steps and when any rank was signalled,
    /// which stops every rank after this same step (returns true). Every queued step is
    /// read first, so that no checkpoint follows a step that `train.on_nan = stop` refuses.
    fn checkpoint_or_stop(&mut self, heldout: &mut Sampler) -> Result<bool> {
        let c = &self.run.config;
        let mut flags = [f64::from(u8::from(stop_signal::requested()))];
        self.dist.all_reduce_f64(&mut flags);
        let stop = flags[0] > 0.0;
        let step = self.step;
        let save = (step == c.train.max_steps && c.checkpoint.at_end)
            || stop
            || (c.checkpoint.every > 0 && step % c.checkpoint.every == 0);
        if save || stop || step == c.train.max_steps || self.eval_due(step) {
            self.settle(heldout)?;
        }
        if save {
            if self.dist.is_root() {
                let path = self.save()?;
                println!("checkpoint: {}", path.display());
                self.last_checkpoint = Some(path);
                self.saved_step = step;
            }
            self.dist.barrier();
        }
        if stop && self.dist.is_root() {
            println!("stopped by a signal after step {step}; resume with --resume auto");
        }
        Ok(stop)
    }

    /// A signal while the loader was busy: the last completed step is saved.
    fn stop_while_loading(&mut self) -> Result<()> {
        if self.dist.is_root() && self.step > self.saved_step {
            let path = self.save()?;
            println!("checkpoint: {}", path.display());
        }
        println!(
            "stopped by a signal after step {}, while the data loader was busy; resume with --resume auto",
            self.step
        );
        Ok(())
    }

    /// Writes the checkpoint of the current step (rank 0).
    fn save(&self) -> Result<PathBuf> {
        let (run, c) = (self.run, &self.run.config);
        let state = TrainerState {
            step: self.step,
            samples_consumed: self.step * self.layout.global_batch(),
            data_seed: c.data.seed,
            train_seed: c.train.seed,
            world_size: self.dist.size,
            config: c.clone(),
            versions: versions(),
            files: BTreeMap::new(),
            corpus_manifest_sha256: run.manifest.clone(),
        };
        checkpoint::save(
            &run.out.join("checkpoints"),
            &self.vs,
            &run.bert_config,
            &run.corpus.vocab_path(),
            self.optimizer.state(),
            state,
            c.checkpoint.keep,
        )
    }
}

/// The next step's batches, waiting for the loader while watching for a stop signal. A
/// lone rank stops at once (`None`); ranks of a job must stop after the same step, so they
/// wait for the batch, but not forever.
fn next_batches(batches: &Batches, dist: &Distributed) -> Result<Option<Vec<TensorBatch>>> {
    use crossbeam_channel::RecvTimeoutError;
    let mut signalled: Option<Instant> = None;
    loop {
        match batches.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(batch) => return batch.map(Some),
            Err(RecvTimeoutError::Disconnected) => bail!("the data loader stopped"),
            Err(RecvTimeoutError::Timeout) if stop_signal::requested() => {
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

/// `train.cast_weights_once`: the bf16 copies of the master weights, or why not.
fn compute_weights(bert: &Bert, flat: &FlatParameters) -> Result<ComputeWeights> {
    if bert.compute != tch::Kind::BFloat16 {
        bail!(
            "train.cast_weights_once: this run computes in fp32 (train.precision resolved to fp32 on this device), so there are no casts to save; it needs bf16 precision"
        );
    }
    Ok(ComputeWeights::new(
        &flat.data,
        &flat.params,
        &flat.offsets,
        bert.compute,
    ))
}

/// What `train.unpad` does on this device, in one line.
fn unpad_line(bert: &Bert, device: Device) -> String {
    let head_dim = bert.config.head_dim();
    match flash_attention::available(device, bert.compute, head_dim) {
        Ok(()) => "padded batches run on their real tokens, attention through the variable-length flash kernel".into(),
        Err(why) => format!("padded batches run on their real tokens; attention runs masked on the padded layout, since the variable-length flash kernel is not available ({why})"),
    }
}

/// The loss sums of one batch (see `Bert::pretraining_sums`) on `device`; a batch the
/// loader packed (`train.unpad`) runs packed.
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

/// One step's forward and backward passes, queued: the loss sums and the gradient norm as
/// device tensors, and the counts they are normalised by.
struct StepSums {
    /// [mlm loss sum, nsp loss sum, mlm correct, nsp correct] of this rank (f64).
    sums: Tensor,
    /// The global gradient norm (after the all-reduce).
    norm: Tensor,
    tokens: f64,
    masked: f64,
    sequences: f64,
    /// With the sums overlapped: how many buckets started during backward.
    overlap: Option<OverlapReport>,
}

/// One optimizer step's forward and backward passes over this rank's micro-batches and the
/// gradient all-reduce, queued on the device. The losses are sums normalised by the masked
/// positions and sequences of the whole global batch (all micro-batches, all ranks), so the
/// summed gradients are those of one large batch. A rank whose loss is not finite makes the
/// gradient not finite too (one element, before the all-reduce), so that every rank's
/// device skips the same steps without asking the host.
fn train_step(
    bert: &Bert,
    dist: &Distributed,
    reducer: &mut GradientAllReduce,
    optimizer: &Optimizer,
    micro_batches: &[TensorBatch],
    device: Device,
    seed: u64,
) -> Result<StepSums> {
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
    let copies = bert.compute_weights.as_ref();
    if let Some(c) = copies {
        c.refresh(&optimizer.flat.data);
    }
    for (i, b) in micro_batches.iter().enumerate() {
        tch::manual_seed(dropout_seed(seed, b.first_sample));
        let s = batch_sums(bert, b, device, true)?;
        if i + 1 == micro_batches.len() {
            reducer.before_last_backward();
        }
        (&s.mlm / masked.max(1.0) + &s.nsp / sequences.max(1.0)).backward();
        if let Some(c) = copies {
            c.accumulate_into(&optimizer.flat.grad);
        }
        device_sums += sums_tensor(&s);
    }
    if let Some(c) = copies {
        c.release();
    }
    tch::no_grad(|| {
        // 0 * a finite sum adds exactly 0; 0 * inf or NaN adds NaN.
        let poison = (device_sums.narrow(0, 0, 2).sum(tch::Kind::Double) * 0.0)
            .to_kind(tch::Kind::Float)
            .view([1]);
        let at = reducer.poison_offset();
        let _ = optimizer.flat.grad.narrow(0, at, 1).g_add_(&poison);
    });
    let overlap = reducer.all_reduce_reporting(dist, &optimizer.flat.grad)?;
    let tokens = micro_batches.iter().map(|b| b.tokens as f64).sum::<f64>();
    Ok(StepSums {
        sums: device_sums,
        norm: optimizer.grad_norm(),
        tokens,
        masked,
        sequences,
        overlap,
    })
}

/// The seed of torch's generator for the dropout of the micro-batch whose first sample has
/// global index `first_sample`: every rank's micro-batches differ, and a resumed run (or
/// one with another rank count but the same micro-batch size) draws the same masks.
pub fn dropout_seed(seed: u64, first_sample: u64) -> i64 {
    (Rng::for_keys(&[seed, Stream::Dropout.key(), first_sample]).next_u64() & i64::MAX as u64)
        as i64
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

/// Loss and accuracy over the first `batches` micro-batches of the held-out documents.
fn evaluate(
    bert: &Bert,
    heldout: &mut Sampler,
    micro: u64,
    batches: u64,
    device: Device,
    pack: bool,
) -> Result<Option<StepMetrics>> {
    let (mut sums, mut masked, mut sequences) = ([0f64; 5], 0f64, 0f64);
    for k in 0..batches {
        let examples: Option<Vec<_>> = (0..micro)
            .map(|i| heldout.heldout_example(k * micro + i))
            .collect::<Result<_>>()?;
        let Some(examples) = examples else {
            return Ok(None);
        };
        let batch = data_loader::collate(&examples, pack);
        let s = tch::no_grad(|| batch_sums(bert, &batch, device, false))?;
        add_sums(&mut sums, &s, &batch);
        masked += batch.masked as f64;
        sequences += batch.sequences as f64;
    }
    Ok(Some(logger::metrics(&sums, masked, sequences)))
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
