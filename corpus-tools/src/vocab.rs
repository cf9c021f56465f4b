//! `corpus-tools vocab`: trains a WordPiece vocabulary on text shards, with BERT's
//! normalisation (cased or uncased) and pre-tokenisation, and writes `vocab.txt` with
//! BERT's special tokens first.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Model, TokenizerBuilder};

use crate::atomic_file::AtomicFile;
use crate::manifest::Manifest;
use crate::text_shard;
use crate::tokenizer::SPECIAL_TOKENS;

pub struct VocabOptions {
    pub size: usize,
    pub min_frequency: u64,
    pub lowercase: bool,
}

/// Trains on every text shard of the corpus folders given; returns the vocabulary size.
pub fn train(text_dirs: &[PathBuf], options: &VocabOptions, out: &Path) -> Result<usize> {
    let mut sentences: Vec<String> = Vec::new();
    for dir in text_dirs {
        let m = Manifest::read(dir)?;
        for shard in &m.shards {
            let Some(text) = &shard.text else { continue };
            text_shard::for_each_document(&dir.join(&text.file), |doc| {
                sentences.extend(doc);
                Ok(())
            })?;
        }
    }
    if sentences.is_empty() {
        anyhow::bail!(
            "no text to train on in {}",
            text_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut trainer = WordPieceTrainerBuilder::new()
        .vocab_size(options.size)
        .min_frequency(options.min_frequency)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(t.to_string(), true))
                .collect(),
        )
        .continuing_subword_prefix("##".into())
        .build();
    let mut tokenizer = TokenizerBuilder::new()
        .with_model(WordPiece::default())
        .with_normalizer(Some(BertNormalizer::new(
            true,
            true,
            None,
            options.lowercase,
        )))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(None::<tokenizers::processors::bert::BertProcessing>)
        .with_decoder(None::<tokenizers::decoders::wordpiece::WordPiece>)
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    tokenizer
        .train(&mut trainer, sentences.iter())
        .map_err(|e| anyhow!("training WordPiece: {e}"))?;
    let vocab = tokenizer.get_model().get_vocab();
    let mut pairs: Vec<(String, u32)> = vocab.into_iter().collect();
    pairs.sort_by_key(|(_, id)| *id);
    let mut file = AtomicFile::create(out)?;
    for (token, _) in &pairs {
        writeln!(file, "{token}")?;
    }
    file.commit()?;
    Ok(pairs.len())
}
