//! The BioBERT trainer: model, data loading, optimisation, distribution, checkpoints.

pub mod bench_allreduce;
pub mod bench_loader;
pub mod bert;
pub mod bert_config;
pub mod checkpoint;
pub mod corpus;
pub mod cuda_driver;
pub mod cuda_runtime;
pub mod data_loader;
pub mod distributed;
pub mod doctor;
pub mod embed;
pub mod export;
pub mod flat_parameters;
pub mod flops;
pub mod gradient_all_reduce;
pub mod hf_checkpoint;
pub mod instances;
pub mod nccl;
pub mod optimizer;
pub mod pretrain;
pub mod rng;
pub mod run_config;
pub mod tf_checkpoint;
pub mod torch_location;
pub mod torch_runtime;
