//! `biobert export`: a checkpoint (ours, or any BERT folder with `config.json`,
//! `model.safetensors` and `vocab.txt`) to a Hugging Face `BertForPreTraining` folder that
//! `from_pretrained` loads with no missing weight: config.json, model.safetensors,
//! vocab.txt, tokenizer_config.json, special_tokens_map.json, and the model card README.md
//! with the checkpoint's provenance (src/train/model_card.rs).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::model::hf_folder::{follow_latest, load_checkpoint, write_hf_folder};
use crate::train::model_card;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A checkpoint folder (config.json, model.safetensors, vocab.txt).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The Hugging Face folder to write: a new or empty folder (see --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a folder that already holds files (replacing the export's own files).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let checkpoint = follow_latest(&args.checkpoint)?;
    let occupied = args.out.is_dir()
        && std::fs::read_dir(&args.out)
            .with_context(|| format!("reading {}", args.out.display()))?
            .next()
            .is_some();
    if occupied && !args.force {
        bail!(
            "--out {}: not empty; export writes into a new or empty folder (--force writes into it anyway)",
            args.out.display()
        );
    }
    let (config, vs, lowercase) = load_checkpoint(&checkpoint)?;
    if args.force && args.out.join("model.safetensors").exists() {
        std::fs::remove_file(args.out.join("model.safetensors"))
            .with_context(|| format!("replacing {}", args.out.display()))?;
    }
    write_hf_folder(
        &config,
        &vs,
        &checkpoint.join("vocab.txt"),
        lowercase,
        &args.out,
    )?;
    let name = args
        .out
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    corpus_tools::atomic_file::write_bytes(
        &args.out.join("README.md"),
        model_card::card(&checkpoint, &name).as_bytes(),
    )?;
    println!(
        "export: wrote {} (BertForPreTraining, {} layers, vocab {}; README.md: the model card)",
        args.out.display(),
        config.num_hidden_layers,
        config.vocab_size
    );
    Ok(())
}
