//! The BioBERT trainer: model, data loading, optimisation, distribution, checkpoints.

pub mod cuda_driver;
pub mod doctor;
pub mod nccl;
pub mod torch_location;
pub mod torch_runtime;
