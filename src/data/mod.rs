//! From token shards to batches: the corpus view, Google's pretraining instances, the
//! on-disk instance index, the loader, and the keyed random streams they draw from.

pub mod build_lock;
pub mod corpus;
pub mod data_loader;
pub mod instance_index;
pub mod instances;
pub mod rng;
