//! `biobert export`: a checkpoint (ours, or any BERT folder with `config.json`,
//! `model.safetensors` and `vocab.txt`) to a Hugging Face `BertForPreTraining` folder that
//! `from_pretrained` loads with no missing weight: config.json, model.safetensors,
//! vocab.txt, tokenizer_config.json, special_tokens_map.json.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::nn::VarStore;
use tch::Device;

use crate::model::bert::Bert;
use crate::model::bert_config::BertConfig;
use crate::model::hf_checkpoint;

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
    println!(
        "export: wrote {} (BertForPreTraining, {} layers, vocab {})",
        args.out.display(),
        config.num_hidden_layers,
        config.vocab_size
    );
    Ok(())
}

/// `RUN/checkpoints/latest` is a file naming the newest checkpoint folder beside it.
pub fn follow_latest(path: &Path) -> Result<PathBuf> {
    if !path.is_file() {
        return Ok(path.to_path_buf());
    }
    let name =
        std::fs::read_to_string(path).with_context(|| format!("{}: unreadable", path.display()))?;
    let name = name.trim();
    if name.is_empty() || name.contains('/') || name.contains("..") {
        bail!(
            "{}: expected a folder, or a `latest` file naming a checkpoint folder beside it",
            path.display()
        );
    }
    Ok(path.with_file_name(name))
}

/// Loads a checkpoint folder on the CPU; returns the config, the weights and the casing.
pub fn load_checkpoint(dir: &Path) -> Result<(BertConfig, VarStore, bool)> {
    let config = hf_checkpoint::read_config(dir)?;
    let vs = VarStore::new(Device::Cpu);
    let _bert = Bert::new(&vs.root(), &config);
    let (_, report) = hf_checkpoint::load_folder(&vs, dir)?;
    if !report.missing.is_empty() {
        eprintln!("export: {}", report.summary());
    }
    let vocab = dir.join("vocab.txt");
    if !vocab.is_file() {
        bail!(
            "{}: no vocab.txt (the vocabulary the model was trained with)",
            dir.display()
        );
    }
    let tokenizer =
        corpus_tools::tokenizer::WordPieceTokenizer::load(&vocab, lowercase_setting(dir))?;
    if tokenizer.vocab_size() as i64 != config.vocab_size {
        bail!(
            "{}: vocab.txt has {} entries, config.json says vocab_size {}",
            dir.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        );
    }
    Ok((config, vs, tokenizer.info.lowercase))
}

/// `do_lower_case` from a tokenizer_config.json beside the model, if there is one.
pub fn lowercase_setting(dir: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("do_lower_case")?.as_bool()
}

pub fn write_hf_folder(
    config: &BertConfig,
    vs: &VarStore,
    vocab: &Path,
    lowercase: bool,
    out: &Path,
) -> Result<()> {
    if out.join("model.safetensors").exists() {
        bail!(
            "{}: already holds a model; choose another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    hf_checkpoint::write_weights(vs, &out.join("model.safetensors"))?;
    write_json(&out.join("config.json"), &config.to_hf_json())?;
    write_tokenizer_files(out, vocab, lowercase, config)
}

/// vocab.txt, tokenizer_config.json and special_tokens_map.json of a Hugging Face folder.
pub fn write_tokenizer_files(
    out: &Path,
    vocab: &Path,
    lowercase: bool,
    config: &BertConfig,
) -> Result<()> {
    std::fs::copy(vocab, out.join("vocab.txt"))
        .with_context(|| format!("copying {}", vocab.display()))?;
    write_json(
        &out.join("tokenizer_config.json"),
        &serde_json::json!({
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": lowercase,
            "model_max_length": config.max_position_embeddings,
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]",
        }),
    )?;
    write_json(
        &out.join("special_tokens_map.json"),
        &serde_json::json!({
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]",
        }),
    )
}

/// Writes JSON under a temporary name, then renames it into place.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}
