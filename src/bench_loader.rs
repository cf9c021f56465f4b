//! `biobert bench-loader`: the data loader alone — instances drawn, masked and collated into
//! batches (and pinned, for a GPU) exactly as `biobert pretrain` makes them, with no model —
//! so that one can see whether it keeps ahead of the GPU. Prints the time to build the
//! first epoch's instance list, then sequences and tokens per second over the steps.
//!
//!   biobert bench-loader --config configs/biobert_base.toml --data corpus/ --steps 50

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::corpus::Corpus;
use crate::data_loader::{self, Layout};
use crate::run_config::RunConfig;

#[derive(Debug, Args)]
pub struct BenchLoaderArgs {
    /// The run configuration whose [data] and batch settings are measured.
    #[arg(long)]
    pub config: PathBuf,
    /// The corpus folder (overrides data.path).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Overrides, as section.key=value (repeatable).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Optimizer steps' worth of batches to make.
    #[arg(long, default_value_t = 50)]
    pub steps: u64,
    /// Ranks that share the global batch (this process makes rank 0's share).
    #[arg(long, default_value_t = 1)]
    pub ranks: u64,
    /// cpu, or cuda to pin the batches as the trainer does for a GPU.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: &BenchLoaderArgs) -> Result<()> {
    let config = RunConfig::load(&args.config, &args.set)?;
    let corpus = Arc::new(Corpus::open(&config.data_path(args.data.as_ref())?)?);
    let device = crate::device_selection::parse(&args.device)?;
    let (mut sampler, _) = data_loader::samplers(&corpus, &config.data)?;
    let layout = Layout {
        micro_batch: config.train.micro_batch_size as u64,
        accumulation: config.train.grad_accumulation as u64,
        world_size: args.ranks.max(1),
        rank: 0,
    };
    let started = Instant::now();
    let epoch = sampler.epoch_size(0);
    let build = started.elapsed().as_secs_f64();
    println!(
        "epoch 0: {epoch} instances from {} documents, built in {build:.2} s ({} threads)",
        sampler.documents(),
        rayon::current_num_threads()
    );
    // The trainer's prefetch thread, timed from the consumer's side.
    let batches = data_loader::prefetch(sampler, layout, 0, args.steps, 4, device);
    let started = Instant::now();
    let (mut sequences, mut tokens, mut padding, mut padded_batches) = (0i64, 0i64, 0i64, 0);
    for _ in 0..args.steps {
        let step = batches.recv().context("the data loader stopped")??;
        sequences += step.iter().map(|b| b.sequences).sum::<i64>();
        tokens += step.iter().map(|b| b.tokens).sum::<i64>();
        padding += step.iter().map(|b| b.padding()).sum::<i64>();
        padded_batches += step.iter().filter(|b| b.has_padding()).count();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} steps of {} sequences (seq {}): {:.0} seq/s, {:.0} tokens/s, {:.2} ms per step",
        args.steps,
        layout.micro_batch * layout.accumulation,
        config.data.max_seq_len,
        sequences as f64 / seconds,
        tokens as f64 / seconds,
        1e3 * seconds / args.steps as f64
    );
    // What attention and the feed-forward layers spend on padding: batches are padded to
    // their longest sequence, and a batch with any padding cannot take the flash kernel.
    let micro_batches = args.steps * layout.accumulation;
    println!(
        "padding: {:.1}% of the collated positions; {padded_batches} of {micro_batches} micro-batches padded; mean length {:.1} of {}",
        100.0 * padding as f64 / (tokens + padding).max(1) as f64,
        tokens as f64 / sequences.max(1) as f64,
        config.data.max_seq_len
    );
    Ok(())
}
