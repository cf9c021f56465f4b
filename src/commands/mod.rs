//! The subcommands other than pretrain: doctor, embed, export and the benchmarks.

pub mod bench_allreduce;
pub mod bench_loader;
pub mod doctor;
pub mod embed;
pub mod export;
pub mod finetune;
