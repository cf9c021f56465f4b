//! Pretraining: the run configuration, the training loop, the optimizers over flat
//! parameter buffers, and checkpoints.

pub mod checkpoint;
pub mod flat_parameters;
pub mod fused_adamw;
pub mod optimizer;
pub mod pretrain;
pub mod run_config;
