//! `biobert bench-allreduce`: the bus bandwidth of the gradient all-reduce across message
//! sizes, through the same code the trainer uses, as nccl-tests reports it: algorithm
//! bandwidth = bytes / time, bus bandwidth = algorithm bandwidth x 2(n-1)/n (what each
//! link carries in a ring all-reduce). Run it under mpirun:
//! `mpirun -np 2 biobert bench-allreduce`.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use tch::{Kind, Tensor};

use crate::config::choices::{BackendRequest, DeviceRequest, ReduceDtype};
use crate::config::run_config::DistributedConfig;
use crate::parallel::distributed::Distributed;
use crate::parallel::gradient_all_reduce::GradientAllReduce;

#[derive(Debug, Args)]
pub struct BenchAllreduceArgs {
    /// Smallest message in bytes (fp32 elements x 4).
    #[arg(long, default_value_t = 1 << 12)]
    pub min_bytes: usize,
    /// Largest message in bytes.
    #[arg(long, default_value_t = 1 << 28)]
    pub max_bytes: usize,
    /// Timed repetitions per size (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Where the gradient buffer lives: auto (the rank's GPU when there is one), cpu, cuda.
    #[arg(long, value_enum, default_value_t = DeviceRequest::Auto)]
    pub device: DeviceRequest,
    /// auto, nccl or mpi (as distributed.backend).
    #[arg(long, value_enum, default_value_t = BackendRequest::Auto)]
    pub backend: BackendRequest,
    /// fp32 or bf16 (as distributed.reduce_dtype; NCCL only).
    #[arg(long, value_enum, default_value_t = ReduceDtype::Fp32)]
    pub reduce_dtype: ReduceDtype,
    /// NCCL bucket size in MiB (as distributed.bucket_mb).
    #[arg(long, default_value_t = 64)]
    pub bucket_mb: u64,
}

pub fn run(args: &BenchAllreduceArgs) -> Result<()> {
    Distributed::run_job(|dist| bench(dist, args))
}

fn bench(dist: &Distributed, args: &BenchAllreduceArgs) -> Result<()> {
    let choice = crate::runtime::device_selection::select(args.device, dist.local_rank)?;
    if let (Some(note), true) = (&choice.note, dist.is_root()) {
        println!("{note}");
    }
    let device = choice.device;
    let config = DistributedConfig {
        backend: args.backend,
        reduce_dtype: args.reduce_dtype,
        bucket_mb: args.bucket_mb,
        ..DistributedConfig::default()
    };
    let mut reducer = GradientAllReduce::new(dist, &config, device)?;
    if dist.is_root() {
        println!(
            "all-reduce (sum, fp32 buffer, reduced in {}) over {} rank(s) on {device:?}: {}",
            args.reduce_dtype, dist.size, reducer.backend
        );
        println!(
            "{:>12} {:>12} {:>14} {:>14}",
            "bytes", "time (ms)", "algbw (GB/s)", "busbw (GB/s)"
        );
        if dist.size == 1 {
            println!("(one rank: nothing crosses a link, so there is no bus bandwidth; the times are the collective's fixed cost)");
        }
    }
    let mut bytes = args.min_bytes.max(4);
    while bytes <= args.max_bytes {
        let grad = Tensor::ones([(bytes / 4) as i64], (Kind::Float, device));
        reducer.all_reduce(dist, &grad)?;
        reducer.synchronize(dist, &grad)?;
        // Each rank contributed ones: every element must now be the rank count.
        let (low, high) = (grad.min().double_value(&[]), grad.max().double_value(&[]));
        if low != dist.size as f64 || high != dist.size as f64 {
            anyhow::bail!(
                "all-reduce of {bytes} bytes gave values in [{low}, {high}], expected {}",
                dist.size
            );
        }
        dist.barrier();
        let started = Instant::now();
        for _ in 0..args.iterations {
            reducer.all_reduce(dist, &grad)?;
        }
        // The sums are queued on the GPU; wait for them before reading the clock.
        reducer.synchronize(dist, &grad)?;
        dist.barrier();
        let seconds = started.elapsed().as_secs_f64() / args.iterations as f64;
        let n = dist.size as f64;
        let algbw = bytes as f64 / seconds / 1e9;
        let busbw = algbw * 2.0 * (n - 1.0) / n;
        if dist.is_root() {
            let busbw = if dist.size > 1 {
                format!("{busbw:.3}")
            } else {
                "-".to_string()
            };
            println!(
                "{bytes:>12} {:>12.6} {algbw:>14.3} {busbw:>14}",
                seconds * 1e3
            );
        }
        bytes *= 4;
    }
    Ok(())
}
