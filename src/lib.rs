//! The BioBERT trainer: model, data loading, optimisation, distribution, checkpoints.

pub mod bert;
pub mod bert_config;
pub mod cuda_driver;
pub mod doctor;
pub mod embed;
pub mod export;
pub mod hf_checkpoint;
pub mod nccl;
pub mod tf_checkpoint;
pub mod torch_location;
pub mod torch_runtime;
