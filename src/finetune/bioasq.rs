//! BioASQ factoid answers as BioBERT submits and BioASQ scores them (../shared/QA.md):
//! the five answers of a question from its paragraphs' n-best lists (BioBERT's
//! `transform_nbset2bioasqform.py`), the submission file, and the official evaluator's
//! factoid measures (`EvaluatorTask1b -phaseB -e 5`: strict accuracy, lenient accuracy,
//! mean reciprocal rank), computed in its order so that the numbers are its numbers to the
//! last digit.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// One entry of a paragraph's n-best list.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub text: String,
    pub probability: f64,
}

/// Answers longer than this many characters are not submitted (BioBERT's rule).
const MAX_ANSWER_CHARS: usize = 100;
/// Answers per factoid question (BioASQ's limit since BioASQ 3).
pub const ANSWERS: usize = 5;

/// The question id of a paragraph's qa id: BioBERT's test files number a question's
/// paragraphs `<question id>_<NNN>`.
pub fn question_id(qa_id: &str) -> &str {
    match qa_id.rsplit_once('_') {
        Some((question, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => question,
        _ => qa_id,
    }
}

/// The answers of each question, best first (at most `ANSWERS`), from its paragraphs'
/// n-best lists in file order: pooled, sorted by probability (stably: paragraph order, then
/// rank, on ties), empty and over-long texts dropped, case-insensitive duplicates merged
/// into the first surface form with their probabilities added, sorted by the sum (stably).
/// Returns (question id, answers) in the order questions first appear.
pub fn five_answers(paragraphs: &[(String, Vec<Candidate>)]) -> Vec<(String, Vec<Candidate>)> {
    let mut order: Vec<String> = Vec::new();
    let mut pooled: HashMap<String, Vec<Candidate>> = HashMap::new();
    for (qa_id, nbest) in paragraphs {
        let question = question_id(qa_id).to_string();
        if !pooled.contains_key(&question) {
            order.push(question.clone());
        }
        pooled
            .entry(question)
            .or_default()
            .extend(nbest.iter().cloned());
    }
    order
        .into_iter()
        .map(|question| {
            let mut all = pooled.remove(&question).unwrap_or_default();
            all.sort_by(|a, b| b.probability.total_cmp(&a.probability));
            let mut merged: Vec<Candidate> = Vec::new();
            let mut slot: HashMap<String, usize> = HashMap::new();
            for c in all {
                if c.text.is_empty() || c.text.chars().count() > MAX_ANSWER_CHARS {
                    continue;
                }
                match slot.get(&c.text.to_lowercase()) {
                    Some(&i) => merged[i].probability += c.probability,
                    None => {
                        slot.insert(c.text.to_lowercase(), merged.len());
                        merged.push(c);
                    }
                }
            }
            merged.sort_by(|a, b| b.probability.total_cmp(&a.probability));
            merged.truncate(ANSWERS);
            (question, merged)
        })
        .collect()
}

/// BioASQ's submission JSON for factoid answers: one synonym per answer.
pub fn submission(questions: &[(String, Vec<Candidate>)]) -> Value {
    let questions: Vec<Value> = questions
        .iter()
        .map(|(id, answers)| {
            json!({
                "id": id,
                "type": "factoid",
                "ideal_answer": "",
                "exact_answer": answers.iter().map(|a| vec![a.text.clone()]).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "questions": questions })
}

/// A golden file's questions, in file order: the id, whether it is a factoid question, and
/// its answers' synonyms, lowercased (the evaluator compares lowercased strings and nothing
/// else).
pub struct Golden {
    pub questions: Vec<GoldQuestion>,
}

pub struct GoldQuestion {
    pub id: String,
    pub factoid: bool,
    pub synonyms: Vec<Vec<String>>,
}

impl Golden {
    pub fn read(path: &Path) -> Result<Golden> {
        let text = crate::finetune::text_file::read(path)?;
        let root: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let Some(questions) = root.get("questions").and_then(Value::as_array) else {
            bail!(
                "{}: expected a BioASQ golden file ({{\"questions\": [...]}})",
                path.display()
            );
        };
        let mut out = Vec::with_capacity(questions.len());
        for (i, q) in questions.iter().enumerate() {
            let Some(id) = q.get("id").and_then(Value::as_str) else {
                bail!("{}: question {} has no \"id\"", path.display(), i + 1);
            };
            let factoid = q.get("type").and_then(Value::as_str) == Some("factoid");
            out.push(GoldQuestion {
                id: id.to_string(),
                factoid,
                synonyms: if factoid {
                    synonym_lists(q.get("exact_answer"), false)
                } else {
                    Vec::new()
                },
            });
        }
        Ok(Golden { questions: out })
    }
}

/// `exact_answer` as the evaluator reads it: a list of lists of strings, lowercased; a
/// submission keeps only the first string of each list, and an empty list takes no rank
/// (the evaluator's reader adds nothing for it). Anything else (a flat list, a string)
/// reads as no answers.
fn synonym_lists(exact: Option<&Value>, first_only: bool) -> Vec<Vec<String>> {
    let Some(lists) = exact.and_then(Value::as_array) else {
        return Vec::new();
    };
    if !lists.iter().all(Value::is_array) {
        return Vec::new();
    }
    lists
        .iter()
        .filter(|l| l.as_array().is_some_and(|a| !a.is_empty()))
        .map(|l| {
            let strings = l
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_lowercase);
            if first_only {
                strings.take(1).collect()
            } else {
                strings.collect()
            }
        })
        .collect()
}

/// A submission's answers by question id (the first question with an id wins, as in the
/// evaluator); `None` for a question without `exact_answer`.
pub fn read_submission(root: &Value) -> HashMap<String, Option<Vec<Vec<String>>>> {
    let mut out = HashMap::new();
    for q in root
        .get("questions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(id) = q.get("id").and_then(Value::as_str) {
            let answers = q.get("exact_answer").map(|e| synonym_lists(Some(e), true));
            out.entry(id.to_string()).or_insert(answers);
        }
    }
    out
}

/// The factoid measures of one batch.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scores {
    pub strict_accuracy: f64,
    pub lenient_accuracy: f64,
    pub mrr: f64,
    /// Factoid questions of the golden file that the submission answers.
    pub questions: usize,
}

/// The evaluator's factoid measures: over the golden file's factoid questions that the
/// submission holds, in golden order, each summed and divided by their count (0 without any).
pub fn score(golden: &Golden, submission: &HashMap<String, Option<Vec<Vec<String>>>>) -> Scores {
    let (mut strict, mut lenient, mut mrr, mut k) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for gold in golden.questions.iter().filter(|q| q.factoid) {
        let Some(answers) = submission.get(&gold.id) else {
            continue;
        };
        k += 1;
        let Some(answers) = answers else {
            continue;
        };
        let matches = |answer: &Vec<String>| {
            gold.synonyms
                .iter()
                .flatten()
                .any(|s| answer.iter().any(|a| a == s))
        };
        if answers.first().is_some_and(matches) {
            strict += 1.0;
        }
        if let Some(rank) = answers.iter().position(matches) {
            lenient += 1.0;
            mrr += 1.0 / (rank + 1) as f64;
        }
    }
    let mean = |sum: f64| if k == 0 { 0.0 } else { sum / k as f64 };
    Scores {
        strict_accuracy: mean(strict),
        lenient_accuracy: mean(lenient),
        mrr: mean(mrr),
        questions: k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str, probability: f64) -> Candidate {
        Candidate {
            text: text.into(),
            probability,
        }
    }

    #[test]
    fn question_ids_drop_the_paragraph_number_only() {
        assert_eq!(
            question_id("56c073fcef6e394741000020_003"),
            "56c073fcef6e394741000020"
        );
        assert_eq!(question_id("plain"), "plain");
        assert_eq!(question_id("a_b"), "a_b");
    }

    #[test]
    fn answers_merge_across_paragraphs_case_insensitively() {
        let long = "x".repeat(101);
        let paragraphs = vec![
            (
                "q_000".to_string(),
                vec![c("BRCA1", 0.4), c("", 0.3), c(&long, 0.2)],
            ),
            (
                "q_001".to_string(),
                vec![c("brca1", 0.3), c("TP53", 0.5), c("a", 0.1)],
            ),
            ("r_000".to_string(), vec![c("empty", 1.0)]),
        ];
        let out = five_answers(&paragraphs);
        assert_eq!(out.len(), 2);
        let (id, answers) = &out[0];
        assert_eq!(id, "q");
        // BRCA1 keeps its first surface form and sums to 0.7; TP53 0.5; a 0.1.
        assert_eq!(
            answers.iter().map(|a| a.text.as_str()).collect::<Vec<_>>(),
            ["BRCA1", "TP53", "a"]
        );
        assert!((answers[0].probability - 0.7).abs() < 1e-12);
        // Google's placeholder for a paragraph without candidates is an answer like any other.
        assert_eq!(out[1].1[0].text, "empty");
    }

    #[test]
    fn ties_keep_paragraph_order_and_five_are_kept() {
        let paragraphs = vec![
            (
                "q_000".to_string(),
                (0..4).map(|i| c(&format!("p0-{i}"), 0.1)).collect(),
            ),
            (
                "q_001".to_string(),
                (0..4).map(|i| c(&format!("p1-{i}"), 0.1)).collect(),
            ),
        ];
        let out = five_answers(&paragraphs);
        let texts: Vec<&str> = out[0].1.iter().map(|a| a.text.as_str()).collect();
        assert_eq!(texts, ["p0-0", "p0-1", "p0-2", "p0-3", "p1-0"]);
    }
}
