//! Faults the tests inject through the environment, in one place so that none is left
//! behind unnoticed: a rank failing at a step, a fine-tuning run failing after an epoch or
//! stopped as by a signal at a step, and a data loader that hangs. Unset, each does nothing.

use anyhow::{bail, Result};

/// `BIOBERT_FAIL_AT=RANK:STEP` makes that rank fail at that pretraining step: a failing
/// rank must take the job down.
pub fn fail_at_step(rank: usize, step: u64) -> Result<()> {
    if let Ok(spec) = std::env::var("BIOBERT_FAIL_AT") {
        if spec == format!("{rank}:{step}") {
            bail!("injected failure at step {step} (BIOBERT_FAIL_AT={spec})");
        }
    }
    Ok(())
}

/// `BIOBERT_FAIL_AFTER_EPOCH=N` fails a fine-tuning run once epoch N's checkpoint is
/// written: `--resume auto` must continue it.
pub fn fail_after_epoch(epoch: u64) -> Result<()> {
    if std::env::var("BIOBERT_FAIL_AFTER_EPOCH").is_ok_and(|v| v == epoch.to_string()) {
        bail!("injected failure after epoch {epoch} (BIOBERT_FAIL_AFTER_EPOCH)");
    }
    Ok(())
}

/// `BIOBERT_LOADER_STALL_AT=STEP`: the pretraining loader hangs before that step's batches
/// (zero based), so that a stop signal reaches a run whose loader is busy.
pub fn loader_stall_step() -> Option<u64> {
    std::env::var("BIOBERT_LOADER_STALL_AT").ok()?.parse().ok()
}

/// `BIOBERT_STOP_AT_FINETUNE_STEP=N` raises the stop flag after fine-tuning's optimizer step
/// N, as SIGTERM would there: a deterministic pre-emption.
pub fn stop_at_finetune_step(step: u64) {
    if std::env::var("BIOBERT_STOP_AT_FINETUNE_STEP").is_ok_and(|v| v == step.to_string()) {
        crate::runtime::stop_signal::request();
    }
}
