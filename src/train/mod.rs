//! Pretraining: the training loop and what it logs, the optimizers over flat parameter
//! buffers (fine-tuning uses them too), and checkpoints.

pub mod checkpoint;
pub mod flat_parameters;
pub mod fused_adamw;
pub mod logger;
pub mod model_card;
pub mod optimizer;
pub mod pretrain;
pub mod step_readback;
