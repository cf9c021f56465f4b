//! Entity-level precision, recall and F1 with exact span match: conlleval's definition,
//! which BioBERT reports, in the form `seqeval` (its default, non-strict mode) computes it,
//! so that the figures agree to the last digit.
//!
//! A chunk starts at B (or S), at an I or E that follows O or another type, and ends before
//! O, B, S or a type change (conlleval's `startOfChunk` / `endOfChunk`). Sentences are
//! joined with an O between them, so no entity crosses a sentence.

use std::collections::HashSet;

/// (type, first token, last token) over the joined sentences.
pub type Entity = (String, usize, usize);

/// The tag's prefix letter and its type (`B-Disease` -> ('B', "Disease"); `B` -> ('B', "_");
/// `O` -> ('O', "_")), as seqeval splits them.
fn split(tag: &str) -> (char, String) {
    let mut chars = tag.chars();
    let prefix = chars.next().unwrap_or('O');
    let rest: String = chars.collect();
    let kind = rest.split_once('-').map_or(rest.as_str(), |(_, t)| t);
    let kind = if kind.is_empty() { "_" } else { kind };
    (prefix, kind.to_string())
}

fn end_of_chunk(prev: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_type != kind)
}

fn start_of_chunk(prev: char, tag: char, prev_type: &str, kind: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != kind)
}

/// The entities of a list of tagged sentences.
pub fn entities(sentences: &[Vec<String>]) -> Vec<Entity> {
    let mut joined: Vec<&str> = Vec::new();
    for s in sentences {
        joined.extend(s.iter().map(String::as_str));
        joined.push("O");
    }
    joined.push("O");
    let (mut prev, mut prev_type, mut begin) = ('O', "_".to_string(), 0usize);
    let mut out = Vec::new();
    for (i, tag) in joined.iter().enumerate() {
        let (t, kind) = split(tag);
        if end_of_chunk(prev, t, &prev_type, &kind) {
            out.push((prev_type.clone(), begin, i - 1));
        }
        if start_of_chunk(prev, t, &prev_type, &kind) {
            begin = i;
        }
        prev = t;
        prev_type = kind;
    }
    out
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EntityScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub true_entities: usize,
    pub predicted_entities: usize,
    pub correct_entities: usize,
    /// Tokens whose predicted tag equals the gold tag.
    pub token_accuracy: f64,
}

/// Micro-averaged scores over all entity types, computed as seqeval does (float64, zero
/// when a denominator is zero).
pub fn score(gold: &[Vec<String>], predicted: &[Vec<String>]) -> EntityScores {
    let truth: HashSet<Entity> = entities(gold).into_iter().collect();
    let guess: HashSet<Entity> = entities(predicted).into_iter().collect();
    let correct = truth.intersection(&guess).count();
    let divide = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = divide(correct, guess.len());
    let recall = divide(correct, truth.len());
    // seqeval: (1 + beta^2) * p * r / (beta^2 * p + r), beta = 1.
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    let (mut same, mut tokens) = (0usize, 0usize);
    for (g, p) in gold.iter().zip(predicted) {
        tokens += g.len();
        same += g.iter().zip(p).filter(|(a, b)| a == b).count();
    }
    EntityScores {
        precision,
        recall,
        f1,
        true_entities: truth.len(),
        predicted_entities: guess.len(),
        correct_entities: correct,
        token_accuracy: divide(same, tokens),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn chunks_follow_conlleval() {
        // An I without a B starts an entity; a type change splits one; the sentence end
        // closes one.
        let e = entities(&[tags("I-A I-A O B-A I-B"), tags("B I I")]);
        assert_eq!(
            e,
            [
                ("A".to_string(), 0, 1),
                ("A".to_string(), 3, 3),
                ("B".to_string(), 4, 4),
                ("_".to_string(), 6, 8)
            ]
        );
    }

    #[test]
    fn exact_spans_only() {
        let s = score(&[tags("B I O B")], &[tags("B O O B")]);
        assert_eq!(
            (s.true_entities, s.predicted_entities, s.correct_entities),
            (2, 2, 1)
        );
        assert_eq!((s.precision, s.recall, s.f1), (0.5, 0.5, 0.5));
        assert_eq!(s.token_accuracy, 0.75);
        let none = score(&[tags("O O")], &[tags("O O")]);
        assert_eq!((none.precision, none.recall, none.f1), (0.0, 0.0, 0.0));
    }
}
