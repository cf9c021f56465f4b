//! The configurations, on the ground floor: every layer reads its settings from here and
//! nothing here imports another part of the crate. Pretraining's run configuration, the
//! fine-tuning configuration, the closed choices both use, the optimizer's settings they
//! both produce, and how a TOML file with `--set` overrides is read.

pub mod choices;
pub mod finetune_config;
pub mod optimizer_config;
pub mod profile_window;
pub mod run_config;
pub mod toml_file;
