//! A BERT folder as Hugging Face lays it out (config.json, model.safetensors, vocab.txt,
//! tokenizer_config.json, special_tokens_map.json): following a run's `latest` pointer,
//! loading one, writing one, and turning sentences into the model's inputs with its
//! vocabulary. `hf_checkpoint` reads and writes the weights themselves.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use corpus_tools::tokenizer::WordPieceTokenizer;
use tch::nn::VarStore;
use tch::Device;

use crate::model::bert::Bert;
use crate::model::bert_config::BertConfig;
use crate::model::hf_checkpoint;

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
    let text = serde_json::to_string_pretty(value)? + "\n";
    corpus_tools::atomic_file::write_bytes(path, text.as_bytes())
}

/// The id of a special token (`[CLS]`, `[SEP]`...) in the vocabulary of the model in `dir`.
pub fn special_id(tokenizer: &WordPieceTokenizer, token: &str, dir: &Path) -> Result<i64> {
    tokenizer
        .token_id(token)
        .map(i64::from)
        .with_context(|| format!("{}: vocab.txt has no {token}", dir.display()))
}

/// [CLS] word pieces [SEP], the pieces cut to fit `max_len` (as Google's
/// extract_features.py and BioBERT's classification scripts truncate).
pub fn encode(
    tokenizer: &WordPieceTokenizer,
    sentence: &str,
    max_len: usize,
    cls: i64,
    sep: i64,
) -> Result<Vec<i64>> {
    let mut pieces = tokenizer.encode(sentence)?;
    pieces.truncate(max_len - 2);
    let mut ids = Vec::with_capacity(pieces.len() + 2);
    ids.push(cls);
    ids.extend(pieces.iter().map(|&p| i64::from(p)));
    ids.push(sep);
    Ok(ids)
}
