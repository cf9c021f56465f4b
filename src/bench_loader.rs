//! `biobert bench-loader`: the data loader alone — instances drawn, masked and collated into
//! batches (and pinned, for a GPU) exactly as `biobert pretrain` makes them, with no model —
//! so that one can see whether it keeps ahead of the GPU. Prints the time to build the
//! first epoch's instance list, then sequences and tokens per second over the timed steps,
//! after untimed warm-up steps that take the page faults of the memory-mapped shards.
//! Under mpirun each rank makes its own share of every global batch, with its share of the
//! node's threads, as in training; rank 0 prints each rank's rate and the sum.
//!
//!   biobert bench-loader --config configs/biobert_base.toml --data corpus/
//!   mpirun -np 8 biobert bench-loader --config configs/biobert_base.toml --data corpus/

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::corpus::Corpus;
use crate::data_loader::{self, Layout};
use crate::distributed::Distributed;
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
    /// Optimizer steps' worth of batches to time.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Untimed steps first (the first touches of the shards are page faults, not the
    /// loader's speed).
    #[arg(long, default_value_t = 200)]
    pub warmup_steps: u64,
    /// Without mpirun: ranks that share the global batch (this process makes rank 0's
    /// share). Under mpirun the job's ranks are used.
    #[arg(long, default_value_t = 1)]
    pub ranks: u64,
    /// cpu, or cuda to pin the batches as the trainer does for a GPU.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: &BenchLoaderArgs) -> Result<()> {
    Distributed::run_job(|dist| bench(dist, args))
}

fn bench(dist: &Distributed, args: &BenchLoaderArgs) -> Result<()> {
    let config = RunConfig::load(&args.config, &args.set)?;
    let threads = crate::thread_budget::apply(dist.local_size, config.train.threads);
    let corpus = Arc::new(Corpus::open(&config.data_path(args.data.as_ref())?)?);
    let device = crate::device_selection::parse(&args.device)?;
    let (mut sampler, _) = data_loader::samplers(&corpus, &config.data)?;
    let layout = Layout {
        micro_batch: config.train.micro_batch_size as u64,
        accumulation: config.train.grad_accumulation as u64,
        world_size: if dist.size > 1 {
            dist.size as u64
        } else {
            args.ranks.max(1)
        },
        rank: dist.rank as u64,
    };
    let started = Instant::now();
    let epoch = sampler.epoch_size(0);
    let build = started.elapsed().as_secs_f64();
    if dist.is_root() {
        println!(
            "epoch 0: {epoch} instances from {} documents, built in {build:.2} s ({} loader threads per rank: {})",
            sampler.documents(),
            threads.loader,
            threads.why
        );
    }
    // The trainer's prefetch thread, timed from the consumer's side after the warm-up.
    let total = args.warmup_steps + args.steps;
    let batches = data_loader::prefetch(sampler, layout, 0, total, 4, device);
    for _ in 0..args.warmup_steps {
        batches.recv().context("the data loader stopped")??;
    }
    dist.barrier();
    let started = Instant::now();
    let (mut sequences, mut tokens, mut padding, mut padded_batches) = (0i64, 0i64, 0i64, 0);
    for _ in 0..args.steps {
        let step = batches.recv().context("the data loader stopped")??;
        sequences += step.iter().map(|b| b.sequences).sum::<i64>();
        tokens += step.iter().map(|b| b.tokens).sum::<i64>();
        padding += step.iter().map(|b| b.padding()).sum::<i64>();
        padded_batches += step.iter().filter(|b| b.has_padding()).count();
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let mine = [
        sequences as f64,
        tokens as f64,
        padding as f64,
        padded_batches as f64,
    ];
    let rates = dist.all_gather_f64(sequences as f64 / seconds);
    let mut sums = mine;
    dist.all_reduce_f64(&mut sums);
    let mut slowest = [seconds];
    dist.all_reduce_max_f64(&mut slowest);
    if !dist.is_root() {
        return Ok(());
    }
    let [sequences, tokens, padding, padded_batches] = sums;
    if dist.size > 1 {
        let each: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!("per rank (seq/s): {}", each.join(", "));
    }
    println!(
        "{} steps of {} sequences (seq {}), after {} untimed: {:.0} seq/s, {:.0} tokens/s, {:.2} ms per step ({} rank(s))",
        args.steps,
        layout.micro_batch * layout.accumulation * dist.size as u64,
        config.data.max_seq_len,
        args.warmup_steps,
        sequences / slowest[0],
        tokens / slowest[0],
        1e3 * slowest[0] / args.steps.max(1) as f64,
        dist.size
    );
    // What attention and the feed-forward layers spend on padding: batches are padded to
    // their longest sequence, and a batch with any padding cannot take the flash kernel.
    let micro_batches = args.steps * layout.accumulation * dist.size as u64;
    println!(
        "padding: {:.1}% of the collated positions; {padded_batches} of {micro_batches} micro-batches padded; mean length {:.1} of {}",
        100.0 * padding / (tokens + padding).max(1.0),
        tokens / sequences.max(1.0),
        config.data.max_seq_len
    );
    Ok(())
}
