//! SQuAD v1.1 files (BioASQ's factoid sets as BioBERT distributes them) and their windows,
//! as Google's `run_squad.py` builds them (`read_squad_examples`,
//! `convert_examples_to_features`): the context split at whitespace into words, each word
//! into word pieces; `[CLS] question [SEP] context piece window [SEP]`, the question cut to
//! `max_query_len` pieces, windows `doc_stride` pieces apart so that every context piece is
//! in one, and each piece scored in the window where it has the most context on both sides.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use corpus_tools::tokenizer::WordPieceTokenizer;
use serde_json::Value;

/// One question on one paragraph.
#[derive(Debug, Clone, PartialEq)]
pub struct SquadExample {
    pub qa_id: String,
    pub question: String,
    /// The context split at whitespace, as Google's reader does.
    pub doc_words: Vec<String>,
    /// The (first) answer: its first and last word and its text, for training.
    pub answer: Option<Answer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub start_word: usize,
    pub end_word: usize,
    pub text: String,
}

/// Google's whitespace: space, tab, CR, LF and the narrow no-break space.
fn is_squad_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{202F}')
}

/// The context's words and, per character, the word it falls in (whitespace belongs to the
/// word before it, as in Google's reader).
fn split_context(context: &str) -> (Vec<String>, Vec<usize>) {
    let (mut words, mut char_to_word): (Vec<String>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut after_space = true;
    for c in context.chars() {
        if is_squad_whitespace(c) {
            after_space = true;
        } else {
            if after_space {
                words.push(String::new());
            }
            words.last_mut().expect("pushed above").push(c);
            after_space = false;
        }
        char_to_word.push(words.len().saturating_sub(1));
    }
    (words, char_to_word)
}

/// Reads a SQuAD v1.1 file. With `training` every question needs an answer whose text is
/// at its `answer_start` (a character offset) in the context. Errors name the file, the
/// record and what was expected.
pub fn read(path: &Path, training: bool) -> Result<Vec<SquadExample>> {
    let text = crate::finetune::text_file::read(path)?;
    let root: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let Some(articles) = root.get("data").and_then(Value::as_array) else {
        bail!("{}: expected SQuAD's {{\"data\": [...]}}", path.display());
    };
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for (a, article) in articles.iter().enumerate() {
        let paragraphs = field(article, "paragraphs", path, &format!("data[{a}]"))?;
        let Some(paragraphs) = paragraphs.as_array() else {
            bail!("{}: data[{a}].paragraphs: expected a list", path.display());
        };
        for (p, paragraph) in paragraphs.iter().enumerate() {
            let at = format!("data[{a}].paragraphs[{p}]");
            let context = string(paragraph, "context", path, &at)?;
            let (words, char_to_word) = split_context(context);
            let context_chars: Vec<char> = context.chars().collect();
            let Some(qas) = field(paragraph, "qas", path, &at)?.as_array() else {
                bail!("{}: {at}.qas: expected a list", path.display());
            };
            for (q, qa) in qas.iter().enumerate() {
                let id = string(qa, "id", path, &format!("{at}.qas[{q}]"))?;
                let at = format!("question {id}");
                if !ids.insert(id.to_string()) {
                    bail!("{}: {at}: the id appears twice", path.display());
                }
                let question = string(qa, "question", path, &at)?;
                let answer = if training {
                    Some(answer(qa, &context_chars, &char_to_word, path, &at)?)
                } else {
                    None
                };
                out.push(SquadExample {
                    qa_id: id.to_string(),
                    question: question.to_string(),
                    doc_words: words.clone(),
                    answer,
                });
            }
        }
    }
    if out.is_empty() {
        bail!("{}: no questions", path.display());
    }
    Ok(out)
}

fn field<'a>(v: &'a Value, key: &str, path: &Path, at: &str) -> Result<&'a Value> {
    v.get(key)
        .with_context(|| format!("{}: {at}: no \"{key}\"", path.display()))
}

fn string<'a>(v: &'a Value, key: &str, path: &Path, at: &str) -> Result<&'a str> {
    field(v, key, path, at)?
        .as_str()
        .with_context(|| format!("{}: {at}: \"{key}\" is not a string", path.display()))
}

/// The first answer, checked against the context, as words.
fn answer(
    qa: &Value,
    context: &[char],
    char_to_word: &[usize],
    path: &Path,
    at: &str,
) -> Result<Answer> {
    let Some(first) = qa
        .get("answers")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    else {
        bail!(
            "{}: {at}: no answer (a training file needs one per question)",
            path.display()
        );
    };
    let text = string(first, "text", path, at)?;
    let Some(start) = first.get("answer_start").and_then(Value::as_u64) else {
        bail!(
            "{}: {at}: \"answer_start\" is not a character offset",
            path.display()
        );
    };
    let start = start as usize;
    let len = text.chars().count();
    let found: String = context.iter().skip(start).take(len).collect();
    if len == 0 || found != text {
        bail!(
            "{}: {at}: the answer {text:?} is not at character {start} of its context (found {found:?})",
            path.display()
        );
    }
    Ok(Answer {
        start_word: char_to_word[start],
        end_word: char_to_word[start + len - 1],
        text: text.to_string(),
    })
}

/// Window settings (BioBERT's: 384, 64, 128).
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    pub max_seq_len: usize,
    pub max_query_len: usize,
    pub doc_stride: usize,
}

/// One model input: a question and one window of its context's pieces. Held for every
/// window of a file: at SQuAD's 88k training windows of 384 positions, about 1.1 GB in all
/// (ids and segments as i64, the maps as u32), BioASQ's few thousand a few tens of MB.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Index of its example in the file.
    pub example: usize,
    pub input_ids: Vec<i64>,
    /// 0 for [CLS], the question and its [SEP]; 1 for the context and the last [SEP].
    pub token_type_ids: Vec<i64>,
    /// The context word of each position (`u32::MAX` outside the context).
    pub word_of: Vec<u32>,
    /// Whether this window is where the position's piece has the most context.
    pub max_context: Vec<bool>,
    /// The answer's first and last positions, or [CLS] (0, 0) when the window does not hold
    /// all of it (training).
    pub start: usize,
    pub end: usize,
}

pub const NOT_CONTEXT: u32 = u32::MAX;

/// Google's windows of every example.
pub fn windows(
    examples: &[SquadExample],
    tokenizer: &WordPieceTokenizer,
    config: WindowConfig,
    (cls, sep): (i64, i64),
) -> Result<Vec<Window>> {
    let mut out = Vec::new();
    for (e, example) in examples.iter().enumerate() {
        example_windows(e, example, tokenizer, config, (cls, sep), &mut out)?;
    }
    Ok(out)
}

fn pieces(tokenizer: &WordPieceTokenizer, text: &str) -> Result<Vec<i64>> {
    Ok(tokenizer.encode(text)?.into_iter().map(i64::from).collect())
}

fn example_windows(
    e: usize,
    example: &SquadExample,
    tokenizer: &WordPieceTokenizer,
    config: WindowConfig,
    (cls, sep): (i64, i64),
    out: &mut Vec<Window>,
) -> Result<()> {
    let mut query = pieces(tokenizer, &example.question)?;
    query.truncate(config.max_query_len);
    // Every context word's pieces, and where each word starts among them.
    let (mut doc, mut piece_word, mut word_start) = (Vec::new(), Vec::new(), Vec::new());
    for (w, word) in example.doc_words.iter().enumerate() {
        word_start.push(doc.len());
        for id in pieces(tokenizer, word)? {
            doc.push(id);
            piece_word.push(w as u32);
        }
    }
    let answer_pieces = match &example.answer {
        Some(a) => Some(answer_span(a, &doc, &word_start, tokenizer)?),
        None => None,
    };
    let Some(room) = config
        .max_seq_len
        .checked_sub(query.len() + 3)
        .filter(|&r| r > 0)
    else {
        bail!(
            "max_seq_len = {}: no room for the context after a question of {} pieces",
            config.max_seq_len,
            query.len()
        );
    };
    let spans = doc_spans(doc.len(), room, config.doc_stride);
    for (s, &(start, len)) in spans.iter().enumerate() {
        let mut w = Window {
            example: e,
            input_ids: Vec::with_capacity(query.len() + len + 3),
            token_type_ids: Vec::new(),
            word_of: Vec::new(),
            max_context: Vec::new(),
            start: 0,
            end: 0,
        };
        let mut push = |id: i64, segment: i64, word: u32, best: bool| {
            w.input_ids.push(id);
            w.token_type_ids.push(segment);
            w.word_of.push(word);
            w.max_context.push(best);
        };
        push(cls, 0, NOT_CONTEXT, false);
        for &q in &query {
            push(q, 0, NOT_CONTEXT, false);
        }
        push(sep, 0, NOT_CONTEXT, false);
        for i in start..start + len {
            push(doc[i], 1, piece_word[i], is_max_context(&spans, s, i));
        }
        push(sep, 1, NOT_CONTEXT, false);
        if let Some((a, b)) = answer_pieces {
            if a >= start && b < start + len {
                let offset = query.len() + 2;
                (w.start, w.end) = (a - start + offset, b - start + offset);
            }
        }
        out.push(w);
    }
    Ok(())
}

/// The answer's first and last pieces, narrowed to the pieces of its own text where they
/// lie inside the words' pieces (Google's `_improve_answer_span`: "(1895-1943)." holds the
/// answer "1895" in its first pieces).
fn answer_span(
    a: &Answer,
    doc: &[i64],
    word_start: &[usize],
    tokenizer: &WordPieceTokenizer,
) -> Result<(usize, usize)> {
    let start = word_start[a.start_word];
    let end = match word_start.get(a.end_word + 1) {
        Some(&next) => next.saturating_sub(1),
        None => doc.len().saturating_sub(1),
    };
    let wanted = pieces(tokenizer, &a.text)?;
    for s in start..=end {
        for e in (s..=end).rev() {
            if doc.get(s..=e) == Some(wanted.as_slice()) {
                return Ok((s, e));
            }
        }
    }
    Ok((start, end))
}

/// (start, length) of each window over `n` context pieces: `room` long, starting
/// `min(length, stride)` after the one before, the last one ending at the context's end.
fn doc_spans(n: usize, room: usize, stride: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    loop {
        let len = (n - start).min(room);
        spans.push((start, len));
        if start + len >= n {
            break;
        }
        start += len.min(stride).max(1);
    }
    spans
}

/// Whether window `current` is the one where piece `position` has the most context:
/// min(left, right) + 0.01 x the window's length, the first window winning ties.
fn is_max_context(spans: &[(usize, usize)], current: usize, position: usize) -> bool {
    let mut best: Option<(f64, usize)> = None;
    for (i, &(start, len)) in spans.iter().enumerate() {
        if len == 0 || position < start || position > start + len - 1 {
            continue;
        }
        let (left, right) = (position - start, start + len - 1 - position);
        let score = left.min(right) as f64 + 0.01 * len as f64;
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, i));
        }
    }
    best.is_some_and(|(_, i)| i == current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_split_at_whitespace_as_googles_reader() {
        let (words, map) = split_context("Wilson's  disease\tis\u{202F}rare.");
        assert_eq!(words, ["Wilson's", "disease", "is", "rare."]);
        assert_eq!(map[0], 0);
        assert_eq!(map[9], 0, "whitespace belongs to the word before");
        assert_eq!(map[10], 1);
        assert_eq!(map[21], 3);
    }

    #[test]
    fn spans_cover_every_piece_and_step_by_the_stride() {
        assert_eq!(doc_spans(10, 4, 2), [(0, 4), (2, 4), (4, 4), (6, 4)]);
        assert_eq!(doc_spans(3, 4, 2), [(0, 3)]);
        assert_eq!(doc_spans(0, 4, 2), [(0, 0)]);
        for (n, room, stride) in [(1000, 320, 128), (7, 3, 5), (50, 10, 1)] {
            let spans = doc_spans(n, room, stride);
            let mut covered = vec![false; n];
            for &(s, l) in &spans {
                covered[s..s + l].iter_mut().for_each(|c| *c = true);
            }
            assert!(covered.iter().all(|&c| c), "{n} {room} {stride}");
            // Every piece has exactly one window where it counts.
            for p in 0..n {
                let best = (0..spans.len())
                    .filter(|&w| is_max_context(&spans, w, p))
                    .count();
                assert_eq!(best, 1, "piece {p}");
            }
        }
    }

    #[test]
    fn max_context_prefers_the_centred_window() {
        let spans = doc_spans(10, 4, 2); // (0,4) (2,4) (4,4) (6,4)
                                         // Piece 3: left/right 3/0 in the first window, 1/2 in the second: the second.
        assert!(!is_max_context(&spans, 0, 3));
        assert!(is_max_context(&spans, 1, 3));
        assert!(is_max_context(&spans, 0, 0));
        assert!(is_max_context(&spans, 3, 9));
    }
}
