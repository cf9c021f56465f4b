//! BERT's WordPiece tokenisation, from a BERT `vocab.txt` (cased or uncased, inferred from
//! the vocabulary or set; see `wordpiece`) or a `tokenizer.json` (through the `tokenizers`
//! crate).
//!
//! Token shards hold the word pieces of each sentence without `[CLS]`/`[SEP]`: those are
//! added when training instances are built, as Megatron's BERT data does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::inputs::hex;
use crate::wordpiece::{BertWordPiece, Scratch};

pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// What the manifest records about the tokenizer, and what the trainer checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// The file's name as given (`vocab.txt` or `tokenizer.json`).
    pub file: String,
    pub sha256: String,
    pub vocab_size: usize,
    pub lowercase: bool,
    /// `vocab.txt` or `tokenizer.json`.
    pub kind: String,
}

/// What runs the tokenisation: the fast BERT path for a `vocab.txt`, the `tokenizers`
/// pipeline for whatever a `tokenizer.json` describes.
enum Engine {
    Bert(BertWordPiece),
    Json(Box<Tokenizer>),
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

pub struct WordPieceTokenizer {
    engine: Engine,
    vocab: Vec<String>,
    pub info: TokenizerInfo,
    pub path: PathBuf,
}

impl WordPieceTokenizer {
    /// `lowercase`: `None` infers it from the vocabulary (a cased one has upper-case
    /// pieces). A `.json` path is read as a Hugging Face `tokenizer.json`.
    pub fn load(path: &Path, lowercase: Option<bool>) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let is_json = path.extension().is_some_and(|e| e == "json");
        let (engine, vocab, lowercase, kind) = if is_json {
            let mut inner = Tokenizer::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: not a tokenizer.json: {e}", path.display()))?;
            // Shards hold whole sentences: no padding to, or truncation at, a fixed length.
            inner.with_padding(None);
            inner
                .with_truncation(None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let vocab = id_ordered(inner.get_vocab(true));
            let lowercase = lowercase.unwrap_or_else(|| !is_cased(&vocab));
            (
                Engine::Json(Box::new(inner)),
                vocab,
                lowercase,
                "tokenizer.json",
            )
        } else {
            let vocab = read_vocab_txt(path, &bytes)?;
            let lowercase = lowercase.unwrap_or_else(|| !is_cased(&vocab));
            let bert = BertWordPiece::new(&vocab, lowercase).with_context(|| {
                format!("{}: the vocabulary has no [UNK] token", path.display())
            })?;
            (Engine::Bert(bert), vocab, lowercase, "vocab.txt")
        };
        for special in SPECIAL_TOKENS {
            if !vocab.iter().any(|t| t == special) {
                bail!("{}: the vocabulary has no {special} token", path.display());
            }
        }
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        Ok(WordPieceTokenizer {
            engine,
            info: TokenizerInfo {
                file,
                sha256,
                vocab_size: vocab.len(),
                lowercase,
                kind: kind.into(),
            },
            vocab,
            path: path.to_path_buf(),
        })
    }

    /// The word-piece ids of one sentence, without special tokens.
    pub fn encode(&self, sentence: &str) -> Result<Vec<u32>> {
        match &self.engine {
            Engine::Bert(bert) => Ok(SCRATCH.with(|scratch| {
                let mut ids = Vec::with_capacity(sentence.len() / 4 + 1);
                bert.encode(sentence, &mut scratch.borrow_mut(), &mut ids);
                ids
            })),
            Engine::Json(tokenizer) => {
                let encoding = tokenizer
                    .encode_fast(sentence, false)
                    .map_err(|e| anyhow::anyhow!("tokenizing {sentence:?}: {e}"))?;
                Ok(encoding.get_ids().to_vec())
            }
        }
    }

    /// Google's BasicTokenizer's tokens of `text` (see `BertWordPiece::basic_tokens`);
    /// only for a `vocab.txt` tokenizer.
    pub fn basic_tokens(&self, text: &str) -> Result<Vec<String>> {
        match &self.engine {
            Engine::Bert(bert) => {
                Ok(SCRATCH.with(|scratch| bert.basic_tokens(text, &mut scratch.borrow_mut())))
            }
            Engine::Json(_) => bail!(
                "{}: a tokenizer.json has no BERT basic tokenizer; question answering needs a vocab.txt",
                self.path.display()
            ),
        }
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).map(String::as_str)
    }

    /// The id of a token (a linear search: for the few special tokens).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.iter().position(|t| t == token).map(|i| i as u32)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Joins word pieces back into text (`##` continuations glued on), for inspection.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for &id in ids {
            let piece = self.token(id).unwrap_or("[?]");
            match piece.strip_prefix("##") {
                Some(rest) => out.push_str(rest),
                None => {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(piece);
                }
            }
        }
        out
    }
}

fn read_vocab_txt(path: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes)
        .with_context(|| format!("{}: vocab.txt is not UTF-8", path.display()))?;
    let vocab: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    let mut seen = HashMap::new();
    for (i, token) in vocab.iter().enumerate() {
        if token.is_empty() {
            bail!("{}: line {}: empty token", path.display(), i + 1);
        }
        if let Some(first) = seen.insert(token.as_str(), i) {
            bail!(
                "{}: line {}: token {token:?} repeats line {}",
                path.display(),
                i + 1,
                first + 1
            );
        }
    }
    if vocab.is_empty() {
        bail!("{}: empty vocabulary", path.display());
    }
    Ok(vocab)
}

fn id_ordered(map: HashMap<String, u32>) -> Vec<String> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort_by_key(|(_, id)| *id);
    pairs.into_iter().map(|(t, _)| t).collect()
}

/// A cased vocabulary has upper-case word pieces; an uncased one has none outside its
/// bracketed special tokens.
pub fn is_cased(vocab: &[String]) -> bool {
    let upper = vocab
        .iter()
        .filter(|t| !t.starts_with('['))
        .filter(|t| t.chars().any(char::is_uppercase))
        .count();
    upper * 200 > vocab.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab_file(dir: &Path, extra: &[&str]) -> PathBuf {
        let mut tokens: Vec<&str> = SPECIAL_TOKENS.to_vec();
        tokens.extend_from_slice(extra);
        let path = dir.join("vocab.txt");
        std::fs::write(&path, tokens.join("\n") + "\n").unwrap();
        path
    }

    #[test]
    fn uncased_vocab_lowercases_and_splits_word_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let path = vocab_file(tmp.path(), &["the", "cell", "##s", "grow", ".", "café"]);
        let t = WordPieceTokenizer::load(&path, None).unwrap();
        assert!(t.info.lowercase);
        let ids = t.encode("The CELLS grow.").unwrap();
        assert_eq!(t.decode(&ids), "the cells grow .");
        assert_eq!(t.encode("Zebra").unwrap(), vec![1]);
    }

    #[test]
    fn cased_vocab_is_inferred() {
        let tmp = tempfile::tempdir().unwrap();
        let path = vocab_file(tmp.path(), &["The", "the", "Cell", "cell"]);
        let t = WordPieceTokenizer::load(&path, None).unwrap();
        assert!(!t.info.lowercase);
        assert_eq!(t.decode(&t.encode("The cell").unwrap()), "The cell");
    }

    #[test]
    fn missing_special_token_and_duplicates_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vocab.txt");
        std::fs::write(&path, "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n").unwrap();
        let err = WordPieceTokenizer::load(&path, None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no [MASK]"), "{err}");
        std::fs::write(&path, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nthe\n").unwrap();
        let err = WordPieceTokenizer::load(&path, None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 7"), "{err}");
    }
}
