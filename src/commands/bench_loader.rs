//! `biobert bench-loader`: the data loader alone — instances drawn, masked and collated into
//! batches (and pinned, for a GPU) exactly as `biobert pretrain` makes them, with no model —
//! so that one can see whether it keeps ahead of the GPU. Prints the time until the first
//! batch is ready (the instance index mapped, or built where none is cached), then
//! sequences and tokens per second over the timed steps, after untimed warm-up steps that
//! take the page faults of the memory-mapped shards, the longest wait for a step (an
//! epoch boundary that stalls shows here) and each rank's private memory. `--start-step`
//! starts where a run resumed at that step would. Under mpirun each rank makes its own
//! share of every global batch, with its share of the node's threads, as in training;
//! rank 0 prints each rank's rate and the sum.
//!
//!   biobert bench-loader --config configs/biobert_base.toml --data corpus/
//!   mpirun -np 8 biobert bench-loader --config configs/biobert_base.toml --data corpus/

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::config::run_config::RunConfig;
use crate::data::corpus::Corpus;
use crate::data::data_loader::{self, Layout};
use crate::parallel::distributed::Distributed;

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
    /// Start at this optimizer step, as a run resumed there.
    #[arg(long, default_value_t = 0)]
    pub start_step: u64,
    /// The instance index cache (default: data.index_cache, else
    /// TMPDIR/biobert-instance-index).
    #[arg(long)]
    pub index_cache: Option<PathBuf>,
    /// Only time the index build's serial part on this many 16-byte records: the shuffle
    /// (with prefetching, then without) and the write into the index cache; then exit.
    #[arg(long)]
    pub shuffle_only: Option<u64>,
}

pub fn run(args: &BenchLoaderArgs) -> Result<()> {
    if let Some(records) = args.shuffle_only {
        let dir = args
            .index_cache
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("biobert-instance-index"));
        let (prefetched, plain, write) = crate::data::instance_index::time_shuffle(&dir, records)?;
        println!(
            "shuffle of {records} records ({:.2} GB): {prefetched:.2} s prefetched, {plain:.2} s plain; written and synced into {} in {write:.2} s",
            (records * crate::data::instance_index::RECORD as u64) as f64 / 1e9,
            dir.display()
        );
        return Ok(());
    }
    Distributed::run_job(|dist| bench(dist, args))
}

/// What the timed steps saw on one rank.
#[derive(Default)]
struct Tally {
    sequences: i64,
    tokens: i64,
    padding: i64,
    padded_batches: usize,
    /// The longest wait for a step, in seconds, and that step.
    longest_wait: (f64, u64),
    seconds: f64,
}

fn bench(dist: &Distributed, args: &BenchLoaderArgs) -> Result<()> {
    // The times to the index and the first batch count from here, as a run's start-up
    // (configuration, corpus, document split, index) does.
    let started = Instant::now();
    let config = RunConfig::load(&args.config, &args.set)?;
    let threads = crate::runtime::thread_budget::apply(dist.local_size, config.train.threads);
    let corpus = Arc::new(Corpus::open(&config.data_path(args.data.as_ref())?)?);
    let device = crate::runtime::device_selection::parse(&args.device)?;
    let index_root = match (&args.index_cache, config.data.index_cache.as_str()) {
        (Some(dir), _) => dir.clone(),
        (None, "") => std::env::temp_dir().join("biobert-instance-index"),
        (None, dir) => PathBuf::from(dir),
    };
    let manifest = crate::data::corpus::file_sha256(&corpus.dir.join("manifest.json"))?;
    let (mut sampler, _) = data_loader::samplers(&corpus, &manifest, &config.data, &index_root)?;
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
    sampler.prepare(layout.samples(args.start_step, 0).start)?;
    let index_s = started.elapsed().as_secs_f64();
    let epoch0 = sampler.epoch_size(0)?;
    if dist.is_root() {
        println!(
            "{} training documents; index of step {}'s epoch ready after {index_s:.2} s; {} loader threads per rank ({}); index in {}",
            sampler.documents(),
            args.start_step,
            threads.loader,
            threads.why,
            sampler.index_dir().display()
        );
    }
    // The trainer's prefetch thread, timed from the consumer's side after the warm-up.
    let first = args.start_step;
    let total = first + args.warmup_steps + args.steps;
    let batches =
        data_loader::prefetch(sampler, layout, first, total, 4, device, config.train.unpad);
    batches.recv().context("the data loader stopped")??;
    let mut first_batch = [started.elapsed().as_secs_f64()];
    dist.all_reduce_max_f64(&mut first_batch);
    if dist.is_root() {
        println!(
            "first batch of step {first} after {:.2} s (slowest rank)",
            first_batch[0]
        );
    }
    for _ in 1..args.warmup_steps {
        batches.recv().context("the data loader stopped")??;
    }
    dist.barrier();
    let tally = time_steps(&batches, first + args.warmup_steps, args.steps)?;
    report(dist, args, &config, &layout, &tally, epoch0)
}

/// Receives `steps` steps' batches, timing each wait.
fn time_steps(
    batches: &crossbeam_channel::Receiver<Result<Vec<data_loader::TensorBatch>>>,
    first: u64,
    steps: u64,
) -> Result<Tally> {
    let started = Instant::now();
    let mut t = Tally::default();
    for k in 0..steps {
        let waited = Instant::now();
        let step = batches.recv().context("the data loader stopped")??;
        let wait = waited.elapsed().as_secs_f64();
        if wait > t.longest_wait.0 {
            t.longest_wait = (wait, first + k);
        }
        t.sequences += step.iter().map(|b| b.sequences).sum::<i64>();
        t.tokens += step.iter().map(|b| b.tokens).sum::<i64>();
        t.padding += step.iter().map(|b| b.padding()).sum::<i64>();
        t.padded_batches += step.iter().filter(|b| b.has_padding()).count();
    }
    t.seconds = started.elapsed().as_secs_f64().max(1e-9);
    Ok(t)
}

/// Sums the ranks' tallies (collective) and prints the table on rank 0.
fn report(
    dist: &Distributed,
    args: &BenchLoaderArgs,
    config: &RunConfig,
    layout: &Layout,
    t: &Tally,
    epoch0: u64,
) -> Result<()> {
    let mine = [
        t.sequences as f64,
        t.tokens as f64,
        t.padding as f64,
        t.padded_batches as f64,
    ];
    let rates = dist.all_gather_f64(t.sequences as f64 / t.seconds);
    let mut sums = mine;
    dist.all_reduce_f64(&mut sums);
    let mut slowest = [t.seconds];
    dist.all_reduce_max_f64(&mut slowest);
    let waits = dist.all_gather_f64(t.longest_wait.0);
    let wait_steps = dist.all_gather_f64(t.longest_wait.1 as f64);
    let memory = private_memory_mb();
    let mut most = [memory.0, memory.1];
    dist.all_reduce_max_f64(&mut most);
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
    let worst = (0..waits.len())
        .max_by(|&a, &b| waits[a].total_cmp(&waits[b]))
        .unwrap_or(0);
    println!(
        "longest wait for a step: {:.1} ms (step {}, rank {worst}); epoch 0 holds {} instances",
        1e3 * waits.get(worst).copied().unwrap_or(0.0),
        wait_steps.get(worst).copied().unwrap_or(0.0),
        epoch0
    );
    println!(
        "private memory per rank (largest): {:.0} MB anonymous, {:.0} MB private in all (smaps_rollup)",
        most[0], most[1]
    );
    Ok(())
}

/// This process's anonymous memory and its private (anonymous and file-backed, not
/// shared) resident memory, in MB, from /proc/self/smaps_rollup; zeros where it is absent.
pub fn private_memory_mb() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let kb = |field: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(field))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum()
    };
    (
        kb("Anonymous:") / 1024.0,
        (kb("Private_Clean:") + kb("Private_Dirty:")) / 1024.0,
    )
}
