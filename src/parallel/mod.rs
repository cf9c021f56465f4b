//! Data parallelism across ranks: MPI, NCCL, the gradient all-reduce, and the check
//! that every rank runs the same configuration.

pub mod distributed;
pub mod gradient_all_reduce;
pub mod nccl;
pub mod run_agreement;
