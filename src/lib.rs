//! The BioBERT trainer: model, data loading, optimisation, distribution, checkpoints.
pub mod commands;
pub mod config;
pub mod data;
pub mod finetune;
pub mod model;
pub mod parallel;
pub mod runtime;
pub mod train;
