//! BERT's tokenisation of a `vocab.txt`, written for speed and checked to give exactly the
//! ids of Hugging Face `tokenizers`' BERT pipeline (BertNormalizer, BertPreTokenizer,
//! WordPiece with `##`, 100-character words), which is what `BertTokenizerFast` runs.
//!
//! The `tokenizers` pipeline builds offset-tracking strings for every sentence; corpus
//! preparation needs only the ids, so this does the same steps on plain buffers, with an
//! ASCII fast path: several times the throughput, on the hot path of `prepare`.

use rustc_hash::FxHashMap;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

const MAX_INPUT_CHARS_PER_WORD: usize = 100;
const CONTINUATION: &str = "##";

pub struct BertWordPiece {
    vocab: FxHashMap<String, u32>,
    unk: u32,
    lowercase: bool,
    /// The longest vocabulary entry in bytes, without `##`: no match can be longer.
    longest_piece: usize,
}

/// Reusable buffers, one per thread.
#[derive(Default)]
pub struct Scratch {
    normalized: String,
    decomposed: String,
    piece: String,
}

impl BertWordPiece {
    /// `vocab`: tokens in id order. Accents are stripped when lower-casing, as BERT does.
    pub fn new(vocab: &[String], lowercase: bool) -> Option<BertWordPiece> {
        let map: FxHashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let unk = *map.get("[UNK]")?;
        let longest_piece = vocab
            .iter()
            .map(|t| t.strip_prefix(CONTINUATION).unwrap_or(t).len())
            .max()
            .unwrap_or(0);
        Some(BertWordPiece {
            vocab: map,
            unk,
            lowercase,
            longest_piece,
        })
    }

    /// Appends the ids of `text` (no special tokens) to `out`.
    pub fn encode(&self, text: &str, scratch: &mut Scratch, out: &mut Vec<u32>) {
        self.normalize(text, scratch);
        let Scratch {
            normalized, piece, ..
        } = scratch;
        let mut word_start: Option<usize> = None;
        for (i, c) in normalized.char_indices() {
            if c.is_whitespace() || is_bert_punctuation(c) {
                if let Some(s) = word_start.take() {
                    self.word(&normalized[s..i], piece, out);
                }
                if !c.is_whitespace() {
                    self.word(&normalized[i..i + c.len_utf8()], piece, out);
                }
            } else if word_start.is_none() {
                word_start = Some(i);
            }
        }
        if let Some(s) = word_start {
            self.word(&normalized[s..], piece, out);
        }
    }

    /// Google's BasicTokenizer: the text normalised as `encode` does (lower case and
    /// accents stripped when uncased), split at whitespace and around punctuation, before
    /// any word pieces. Question answering aligns its answers' text through it.
    pub fn basic_tokens(&self, text: &str, scratch: &mut Scratch) -> Vec<String> {
        self.normalize(text, scratch);
        let mut out = Vec::new();
        let mut word = String::new();
        for c in scratch.normalized.chars() {
            if c.is_whitespace() || is_bert_punctuation(c) {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                if !c.is_whitespace() {
                    out.push(c.to_string());
                }
            } else {
                word.push(c);
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
        out
    }

    /// BertNormalizer: drop control characters, whitespace to spaces, spaces around CJK
    /// ideographs, then (uncased) NFD without non-spacing marks and lower case.
    fn normalize(&self, text: &str, scratch: &mut Scratch) {
        let out = &mut scratch.normalized;
        out.clear();
        if text.is_ascii() {
            for &b in text.as_bytes() {
                match b {
                    b'\t' | b'\n' | b'\r' | b' ' => out.push(' '),
                    0..=0x1f | 0x7f => {}
                    _ if self.lowercase => out.push(b.to_ascii_lowercase() as char),
                    _ => out.push(b as char),
                }
            }
            return;
        }
        for c in text.chars() {
            if c == '\0' || c == '\u{fffd}' || is_control(c) {
                continue;
            }
            if is_whitespace(c) {
                out.push(' ');
            } else if is_chinese_char(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        if self.lowercase {
            let decomposed = &mut scratch.decomposed;
            decomposed.clear();
            decomposed.extend(
                out.nfd()
                    .map(|(c, _)| c)
                    .filter(|c| !c.is_mark_nonspacing()),
            );
            out.clear();
            for c in decomposed.chars() {
                out.extend(c.to_lowercase());
            }
        }
    }

    /// WordPiece: greedy longest match first; a word with any unmatched rest is `[UNK]`.
    fn word(&self, word: &str, piece: &mut String, out: &mut Vec<u32>) {
        if word.chars().count() > MAX_INPUT_CHARS_PER_WORD {
            out.push(self.unk);
            return;
        }
        let first = out.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len().min(start + self.longest_piece);
            while !word.is_char_boundary(end) {
                end -= 1;
            }
            let mut found = None;
            while start < end {
                let candidate = if start == 0 {
                    &word[..end]
                } else {
                    piece.clear();
                    piece.push_str(CONTINUATION);
                    piece.push_str(&word[start..end]);
                    piece.as_str()
                };
                if let Some(&id) = self.vocab.get(candidate) {
                    found = Some(id);
                    break;
                }
                end -= word[..end].chars().next_back().map_or(1, char::len_utf8);
            }
            match found {
                Some(id) => out.push(id),
                None => {
                    out.truncate(first);
                    out.push(self.unk);
                    return;
                }
            }
            start = end;
        }
    }
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

fn is_bert_punctuation(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_punctuation()
    } else {
        c.is_punctuation()
    }
}

fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::Tokenizer;

    const VOCAB: &[&str] = &[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "The", "cell", "##s", "##ul", "##ar",
        "cafe", "café", "e", "##e", "co", "##2", "(", ")", ".", ",", "-", "β", "α", "##β", "中",
        "国", "i", "##i", "̇", "straße", "strasse", "k", "##k", "p", "<", "0", "##.", "##0", "##5",
        "5", "μ", "##m", "m", "ﬁ", "fi", "##n", "$", "~", "\u{2013}",
    ];

    fn reference(lowercase: bool) -> Tokenizer {
        let vocab = VOCAB
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect::<std::collections::HashMap<_, _>>();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        let mut lines: Vec<(&String, &u32)> = vocab.iter().collect();
        lines.sort_by_key(|(_, id)| **id);
        let text: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
        std::fs::write(&path, text.join("\n") + "\n").unwrap();
        let model = WordPiece::from_file(&path.to_string_lossy())
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let mut t = Tokenizer::new(model);
        t.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .unwrap();
        t.with_pre_tokenizer(Some(BertPreTokenizer));
        t
    }

    #[test]
    fn ids_equal_the_tokenizers_pipeline_on_hard_cases() {
        let samples = [
            "The cells (CO2) e.g. café Café CAFÉ",
            "β-α β中国 straße STRASSE İi",
            "p<0.05 and 5μm \u{2013} ﬁne",
            "tab\there\u{000b}vt\u{200b}zw\u{fffd}x\u{0000}y",
            "e\u{0301} combining, e\u{0308}\u{0301} two marks",
            &"x".repeat(101),
            "$~ `^| odd ascii",
            "",
            "   ",
        ];
        for lowercase in [true, false] {
            let vocab: Vec<String> = VOCAB.iter().map(|s| s.to_string()).collect();
            let ours = BertWordPiece::new(&vocab, lowercase).unwrap();
            let theirs = reference(lowercase);
            let mut scratch = Scratch::default();
            for s in samples {
                let mut ids = Vec::new();
                ours.encode(s, &mut scratch, &mut ids);
                let expected = theirs.encode_fast(s, false).unwrap().get_ids().to_vec();
                assert_eq!(ids, expected, "lowercase={lowercase}: {s:?}");
            }
        }
    }
}
