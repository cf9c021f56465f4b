//! The n-best answers of one question on one paragraph from its windows' start and end
//! logits, by the rules of Google's `run_squad.py` (`write_predictions`): the best starts
//! and ends of each window, pairs inside the context, scored where the start has the most
//! context, ending after they start and at most `max_answer_len` pieces long; sorted by
//! start + end logit; each turned into a span of the original text (`get_final_text`);
//! repeated texts skipped; probabilities a softmax over the kept entries' scores.
//!
//! One difference, on purpose: the best starts and ends are chosen among each window's own
//! positions, where Google's pads every window to 384 and lets padding positions take
//! places in the top n (they can never be answers, so they only crowd out real ones).

use anyhow::Result;
use corpus_tools::tokenizer::WordPieceTokenizer;

use crate::finetune::bioasq::Candidate;
use crate::finetune::squad_data::{SquadExample, Window, NOT_CONTEXT};

/// One entry of the n-best list, as `nbest_predictions.json` holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NbestEntry {
    pub text: String,
    pub probability: f64,
    pub start_logit: f64,
    pub end_logit: f64,
}

impl NbestEntry {
    pub fn candidate(&self) -> Candidate {
        Candidate {
            text: self.text.clone(),
            probability: self.probability,
        }
    }
}

/// The answer rules (BioBERT's: 20, 30); the lower-casing of `get_final_text` is the
/// tokenizer's own.
#[derive(Debug, Clone, Copy)]
pub struct NbestConfig {
    pub n_best: usize,
    pub max_answer_len: usize,
}

/// The indices of the `n` largest values, largest first, ties in index order.
fn best_indexes(values: impl Iterator<Item = f32>, n: usize) -> Vec<usize> {
    let mut indexed: Vec<(usize, f32)> = values.enumerate().collect();
    indexed.sort_by(|a, b| b.1.total_cmp(&a.1));
    indexed.into_iter().take(n).map(|(i, _)| i).collect()
}

/// A window and its (start, end) logits at each of its positions.
pub type WindowLogits<'a> = (&'a Window, &'a [[f32; 2]]);

/// The n-best list of `example` from its windows and each window's (start, end) logits.
pub fn nbest(
    example: &SquadExample,
    windows: &[WindowLogits<'_>],
    tokenizer: &WordPieceTokenizer,
    config: NbestConfig,
) -> Result<Vec<NbestEntry>> {
    // (window, start, end, start logit, end logit), in window, start, end order.
    let mut prelim: Vec<(usize, usize, usize, f64, f64)> = Vec::new();
    for (k, (window, logits)) in windows.iter().enumerate() {
        let starts = best_indexes(logits.iter().map(|l| l[0]), config.n_best);
        let ends = best_indexes(logits.iter().map(|l| l[1]), config.n_best);
        for &s in &starts {
            for &e in &ends {
                let usable = window.word_of[s] != NOT_CONTEXT
                    && window.word_of[e] != NOT_CONTEXT
                    && window.max_context[s]
                    && e >= s
                    && e - s < config.max_answer_len;
                if usable {
                    prelim.push((k, s, e, f64::from(logits[s][0]), f64::from(logits[e][1])));
                }
            }
        }
    }
    // Stable: ties keep window, start and end order.
    prelim.sort_by(|a, b| (b.3 + b.4).total_cmp(&(a.3 + a.4)));
    let mut kept: Vec<(String, f64, f64)> = Vec::new();
    for (k, s, e, start_logit, end_logit) in prelim {
        if kept.len() >= config.n_best {
            break;
        }
        let window = windows[k].0;
        let pieces: Vec<&str> = window.input_ids[s..=e]
            .iter()
            .map(|&id| tokenizer.token(id as u32).unwrap_or("[UNK]"))
            .collect();
        let piece_text = pieces
            .join(" ")
            .replace(" ##", "")
            .replace("##", "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let (first, last) = (window.word_of[s] as usize, window.word_of[e] as usize);
        let orig_text = example.doc_words[first..=last].join(" ");
        let text = final_text(&piece_text, &orig_text, tokenizer)?;
        if kept.iter().any(|(t, _, _)| *t == text) {
            continue;
        }
        kept.push((text, start_logit, end_logit));
    }
    if kept.is_empty() {
        kept.push(("empty".to_string(), 0.0, 0.0));
    }
    let scores: Vec<f64> = kept.iter().map(|(_, s, e)| s + e).collect();
    let probabilities = softmax(&scores);
    Ok(kept
        .into_iter()
        .zip(probabilities)
        .map(|((text, start_logit, end_logit), probability)| NbestEntry {
            text,
            probability,
            start_logit,
            end_logit,
        })
        .collect())
}

fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|x| x / total).collect()
}

/// The span of `orig_text` (the answer's whole words) that the predicted pieces' text
/// `pred_text` covers (Google's `get_final_text`): both texts are aligned through the basic
/// tokenizer's view of `orig_text` with spaces removed; when they do not align, the whole
/// words are the answer.
fn final_text(pred_text: &str, orig_text: &str, tokenizer: &WordPieceTokenizer) -> Result<String> {
    let tok_text: Vec<char> = tokenizer
        .basic_tokens(orig_text)?
        .join(" ")
        .chars()
        .collect();
    let pred: Vec<char> = pred_text.chars().collect();
    // An empty prediction has no last character to map (Python's -1): the whole words.
    let Some(start) = find(&tok_text, &pred).filter(|_| !pred.is_empty()) else {
        return Ok(orig_text.to_string());
    };
    let end = start + pred.len() - 1;
    let orig: Vec<char> = orig_text.chars().collect();
    let (orig_ns, orig_map) = strip_spaces(&orig);
    let (tok_ns, tok_map) = strip_spaces(&tok_text);
    if orig_ns.len() != tok_ns.len() {
        return Ok(orig_text.to_string());
    }
    // A position of the tokenized text maps to one without spaces, then to the original.
    let to_orig = |p: usize| {
        tok_map
            .iter()
            .position(|&s| s == p)
            .and_then(|ns| orig_map.get(ns).copied())
    };
    match (to_orig(start), to_orig(end)) {
        (Some(a), Some(b)) if a <= b => Ok(orig[a..=b].iter().collect()),
        _ => Ok(orig_text.to_string()),
    }
}

/// The first position of `needle` in `hay` (characters), as Python's `str.find`.
fn find(hay: &[char], needle: &[char]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The characters without spaces, and each one's position in the text with them.
fn strip_spaces(text: &[char]) -> (Vec<char>, Vec<usize>) {
    let mut chars = Vec::new();
    let mut map = Vec::new();
    for (i, &c) in text.iter().enumerate() {
        if c != ' ' {
            chars.push(c);
            map.push(i);
        }
    }
    (chars, map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_indexes_break_ties_by_position() {
        assert_eq!(best_indexes([1.0, 3.0, 3.0, 2.0].into_iter(), 3), [1, 2, 3]);
    }

    #[test]
    fn softmax_sums_to_one() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p[2] > p[1] && p[1] > p[0]);
    }
}
