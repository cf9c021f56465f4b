//! `biobert bench-allreduce`: the bus bandwidth of the gradient all-reduce across message
//! sizes, as nccl-tests reports it: algorithm bandwidth = bytes / time, bus bandwidth =
//! algorithm bandwidth x 2(n-1)/n (what each link carries in a ring all-reduce).
//! Run it under mpirun: `mpirun -np 2 biobert bench-allreduce`.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use tch::{Kind, Tensor};

use crate::distributed::Distributed;

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
}

pub fn run(args: &BenchAllreduceArgs) -> Result<()> {
    let dist = Distributed::init()?;
    if dist.is_root() {
        println!(
            "all-reduce (sum, fp32) over {} rank(s), MPI on host buffers",
            dist.size
        );
        println!(
            "{:>12} {:>12} {:>14} {:>14}",
            "bytes", "time (ms)", "algbw (GB/s)", "busbw (GB/s)"
        );
    }
    let mut bytes = args.min_bytes.max(4);
    while bytes <= args.max_bytes {
        let elements = (bytes / 4) as i64;
        // A tensor with a gradient of the message size: the path the trainer takes.
        let p = Tensor::zeros([elements], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        p.sum(Kind::Float).backward();
        let params = [p];
        dist.all_reduce_gradients(&params);
        dist.barrier();
        let started = Instant::now();
        for _ in 0..args.iterations {
            dist.all_reduce_gradients(&params);
        }
        dist.barrier();
        let seconds = started.elapsed().as_secs_f64() / args.iterations as f64;
        let n = dist.size as f64;
        let algbw = bytes as f64 / seconds / 1e9;
        let busbw = algbw * 2.0 * (n - 1.0) / n;
        if dist.is_root() {
            println!(
                "{bytes:>12} {:>12.3} {algbw:>14.3} {busbw:>14.3}",
                seconds * 1e3
            );
        }
        bytes *= 4;
    }
    Ok(())
}
