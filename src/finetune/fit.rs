//! The fine-tuning epochs: resume from the newest epoch checkpoint, then per epoch the
//! training pass, the development score (only when it chooses the epoch), the checkpoint
//! and the progress line; at the end the chosen epoch's weights are put back. A stop signal
//! (SIGTERM, SIGINT) ends training after the current step with a mid-epoch checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use tensorboard_rs::summary_writer::SummaryWriter;

use crate::config::finetune_config::FinetuneConfig;
use crate::finetune::finetune_checkpoint::{self, FinetuneState, InputDigests};
use crate::finetune::task::{self, TaskData};
use crate::finetune::trainer::{EpochEnd, Trainer};
use crate::parallel::distributed::Distributed;
use crate::runtime::{fault_injection, stop_signal};
use crate::train::logger::format_duration;

/// What the epochs chose.
pub struct Fitted {
    /// The epoch whose weights the trainer holds (from 1).
    pub epoch: u64,
    /// Whether the development set chose it (else it is the last).
    pub chosen_on_dev: bool,
    pub train_seconds: f64,
    /// A stop signal ended training mid-epoch; its checkpoint is written, nothing else.
    pub stopped: bool,
}

/// The best development score so far and its weights.
struct Best {
    weights: Option<Vec<(String, tch::Tensor)>>,
    f1: f64,
    epoch: u64,
}

/// Trains `task` for `config.epochs` (from `resume`'s epoch on), checkpointing each into
/// `out`, and leaves the chosen epoch's weights in `trainer`.
pub fn fit(
    trainer: &mut Trainer,
    dist: &Distributed,
    task: &TaskData,
    config: &FinetuneConfig,
    out: &Path,
    resume: Option<&Path>,
) -> Result<Fitted> {
    let select = config.select_on_dev && task.dev.is_some();
    let mut best = Best {
        weights: None,
        f1: f64::NEG_INFINITY,
        epoch: config.epochs,
    };
    let digests = task.digests();
    let (first_epoch, mut skip) = match resume {
        Some(dir) => restore(trainer, dist, task, config, &digests, dir, &mut best)?,
        None => (0, 0),
    };
    stop_signal::install();
    let mut writer = dist
        .is_root()
        .then(|| SummaryWriter::new(out.join("tensorboard")));
    let started = Instant::now();
    let steps_at_start = trainer.step;
    let fitted = |best: &Best, stopped: bool| Fitted {
        epoch: best.epoch,
        chosen_on_dev: select,
        train_seconds: started.elapsed().as_secs_f64(),
        stopped,
    };
    for epoch in first_epoch..config.epochs {
        let end = trainer.epoch(&task.train, epoch, skip, |step, loss| {
            if let Some(w) = writer.as_mut() {
                w.add_scalar("train/loss", loss as f32, step as usize);
            }
        })?;
        skip = 0;
        let loss = match end {
            EpochEnd::Done { mean_loss } => mean_loss,
            EpochEnd::Stopped { steps } => {
                if dist.is_root() {
                    let path = save(trainer, task, config, &digests, out, (epoch, steps), &best)?;
                    println!(
                        "stopped by a signal in epoch {} after step {steps} of {}; checkpoint: {}; --resume auto continues",
                        epoch + 1,
                        trainer.steps_per_epoch,
                        path.display()
                    );
                }
                dist.barrier();
                return Ok(fitted(&best, true));
            }
        };
        let dev = score_on_dev(trainer, task, select, epoch, &mut best)?;
        if let Some(w) = writer.as_mut() {
            if let Some((f, _)) = dev {
                w.add_scalar("dev/f1", f as f32, trainer.step as usize);
            }
            w.flush();
        }
        if dist.is_root() {
            save(trainer, task, config, &digests, out, (epoch + 1, 0), &best)?;
            let progress = Progress {
                started,
                steps_at_start,
            };
            progress.print(trainer, config, epoch, loss, dev);
        }
        dist.barrier();
        fault_injection::fail_after_epoch(epoch + 1)?;
        if epoch + 1 < config.epochs && trainer.stop_requested() {
            if dist.is_root() {
                println!(
                    "stopped by a signal after epoch {}; its checkpoint is written; --resume auto continues",
                    epoch + 1
                );
            }
            return Ok(fitted(&best, true));
        }
    }
    if let Some(saved) = &best.weights {
        trainer.restore(saved)?;
    }
    Ok(fitted(&best, false))
}

/// The development F1 of this epoch and whether it is the best so far (whose weights are
/// then kept); the set is scored only when it chooses the epoch.
fn score_on_dev(
    trainer: &Trainer,
    task: &TaskData,
    select: bool,
    epoch: u64,
    best: &mut Best,
) -> Result<Option<(f64, bool)>> {
    let Some(split) = task.dev.as_ref().filter(|_| select) else {
        return Ok(None);
    };
    let f1 = task::evaluate(trainer, split, &task.labels, task.positive)?.1;
    let improved = f1 > best.f1;
    if improved {
        (best.f1, best.epoch) = (f1, epoch + 1);
        best.weights = Some(trainer.snapshot());
    }
    Ok(Some((f1, improved)))
}

/// Weights, moments and the best epoch so far from the checkpoint in `dir`; returns the
/// epochs done and the steps done in the next one (a mid-epoch stop).
fn restore(
    trainer: &mut Trainer,
    dist: &Distributed,
    task: &TaskData,
    config: &FinetuneConfig,
    digests: &InputDigests,
    dir: &Path,
    best: &mut Best,
) -> Result<(u64, u64)> {
    let saved = finetune_checkpoint::load(dir)?;
    let state = &saved.state;
    finetune_checkpoint::check_same_run(state, task.name, &task.labels, config, digests, dir)?;
    trainer.restore(&saved.parameters.into_iter().collect::<Vec<_>>())?;
    trainer.load_optimizer_state(saved.optimizer, saved.state.step)?;
    best.weights = saved.best.map(|b| b.into_iter().collect::<Vec<_>>());
    best.f1 = saved.state.best_f1.unwrap_or(f64::NEG_INFINITY);
    best.epoch = saved.state.best_epoch;
    let (done, step_in_epoch) = (saved.state.epoch, saved.state.step_in_epoch);
    if dist.is_root() {
        let within = match step_in_epoch {
            0 => String::new(),
            s => format!(" and step {s} of epoch {}", done + 1),
        };
        println!(
            "resume: after epoch {done}{within} of {} from {}",
            config.epochs,
            dir.display()
        );
        if done >= config.epochs {
            println!("resume: every epoch is done, nothing to train; the chosen epoch is scored and written again");
        }
    }
    Ok((done, step_in_epoch))
}

/// The checkpoint at `(epochs done, steps done in the next)`: weights, moments and the best
/// epoch's weights.
fn save(
    trainer: &Trainer,
    task: &TaskData,
    config: &FinetuneConfig,
    digests: &InputDigests,
    out: &Path,
    (epochs, step_in_epoch): (u64, u64),
    best: &Best,
) -> Result<PathBuf> {
    let state = FinetuneState {
        task: task.name.to_string(),
        epoch: epochs,
        step_in_epoch,
        step: trainer.step,
        best_f1: best.f1.is_finite().then_some(best.f1),
        best_epoch: best.epoch,
        labels: task.labels.clone(),
        config: config.clone(),
        inputs: Some(digests.clone()),
    };
    finetune_checkpoint::save(
        out,
        &state,
        &trainer.snapshot(),
        &trainer.optimizer_state(),
        best.weights.as_deref(),
    )
}

/// The line after each epoch: its loss, the development F1, time so far and the ETA.
struct Progress {
    started: Instant,
    steps_at_start: u64,
}

impl Progress {
    fn print(
        &self,
        trainer: &Trainer,
        config: &FinetuneConfig,
        epoch: u64,
        loss: f64,
        dev: Option<(f64, bool)>,
    ) {
        let total_steps = trainer.steps_per_epoch * config.epochs;
        let elapsed = self.started.elapsed().as_secs_f64();
        let done = (trainer.step - self.steps_at_start).max(1) as f64;
        let left = elapsed / done * total_steps.saturating_sub(trainer.step) as f64;
        let dev = dev.map_or(String::new(), |(f, best)| {
            format!(", dev F1 {f:.4}{}", if best { " (best)" } else { "" })
        });
        println!(
            "epoch {}/{}: loss {loss:.4}{dev} | {elapsed:.0} s, ETA {}",
            epoch + 1,
            config.epochs,
            format_duration(left)
        );
    }
}
