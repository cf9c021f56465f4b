//! The subcommands: each parses its arguments, loads what it needs, hands the work to the
//! part that does it and writes the results.

pub mod bench_allreduce;
pub mod bench_loader;
pub mod doctor;
pub mod embed;
pub mod evaluate;
pub mod export;
pub mod finetune;
pub mod finetune_qa;
pub mod pretrain;
