//! Data parallelism across ranks: MPI, NCCL, the gradient all-reduce, the check that
//! every rank runs the same configuration, and the watchdog that ends a rank whose peers
//! are gone.

pub mod collective_watchdog;
pub mod distributed;
pub mod gradient_all_reduce;
pub mod gradient_buckets;
pub mod nccl;
pub mod overlapped_all_reduce;
pub mod run_agreement;
