//! Our BioASQ factoid scores (`src/finetune/bioasq.rs`) against BioASQ's official evaluator
//! (`../shared/tools/bioasq-eval`, Java, installed by `launch/setup.sh` for these checks): the
//! same strict accuracy, lenient accuracy and MRR, as doubles, equal to the last bit, on
//! edge cases and on every golden file of the shared QA set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use biobert::finetune::bioasq::{self, Golden};
use common::*;
use serde_json::{json, Value};

fn jar() -> PathBuf {
    shared_data()
        .parent()
        .unwrap()
        .join("tools/bioasq-eval/BioASQEvaluation.jar")
}

/// (strict, lenient, MRR) as the official evaluator prints them.
fn official(golden: &Path, submission: &Path) -> [f64; 3] {
    let out = Command::new("java")
        .arg("-cp")
        .arg(jar())
        .args(["evaluation.EvaluatorTask1b", "-phaseB", "-e", "5"])
        .arg(golden)
        .arg(submission)
        .output()
        .expect("java (launch/setup.sh installs it with BIOBERT_TEST_REFERENCE=1)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Vec<f64> = text
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    [fields[1], fields[2], fields[3]]
}

fn ours(golden: &Path, submission: &Value) -> [f64; 3] {
    let s = bioasq::score(
        &Golden::read(golden).unwrap(),
        &bioasq::read_submission(submission),
    );
    [s.strict_accuracy, s.lenient_accuracy, s.mrr]
}

fn compare(dir: &Path, name: &str, golden: &Path, submission: &Value) -> [f64; 3] {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(submission).unwrap()).unwrap();
    let (theirs, mine) = (official(golden, &path), ours(golden, submission));
    assert_eq!(
        mine, theirs,
        "{name}: ours {mine:?}, the evaluator's {theirs:?}"
    );
    mine
}

fn factoid(id: &str, answers: Value) -> Value {
    json!({"id": id, "type": "factoid", "ideal_answer": "x", "exact_answer": answers})
}

#[test]
fn edge_cases_score_as_the_official_evaluator() {
    let tmp = tempfile::tempdir().unwrap();
    let golden = tmp.path().join("golden.json");
    let gold = json!({"questions": [
        {"id": "q1", "type": "factoid", "body": "?", "exact_answer": [["Aspirin", "ASA"], ["salicylate"]]},
        {"id": "q2", "type": "factoid", "body": "?", "exact_answer": [["BRCA1"]]},
        {"id": "q3", "type": "factoid", "body": "?", "exact_answer": [["p53"]]},
        {"id": "q4", "type": "yesno", "body": "?", "exact_answer": "yes"},
        {"id": "q5", "type": "factoid", "body": "?", "exact_answer": [["Α-synuclein"]]},
        {"id": "q6", "type": "factoid", "body": "?", "exact_answer": [["x"]]},
        {"id": "q7", "type": "factoid", "body": "?", "exact_answer": [["IL-6"]]},
        {"id": "q8", "type": "factoid", "body": "?", "exact_answer": [["tau"]]},
        {"id": "q9", "type": "factoid", "body": "?", "exact_answer": [["a"], ["b"]]}
    ]});
    std::fs::write(&golden, gold.to_string()).unwrap();
    let cases = [
        // Case folded, a synonym at rank 1; a leading space never matches; rank 4.
        vec![
            factoid("q1", json!([["asa"], ["b"], ["c"]])),
            factoid("q2", json!([["x"], ["y"], [" brca1"], ["BRCA1"]])),
        ],
        // Greek capital alpha lowercased; an empty answer list takes no rank; only the
        // first synonym of a submitted answer counts; rank 6 still counts.
        vec![
            factoid("q5", json!([["α-SYNUCLEIN"]])),
            factoid("q6", json!([[], ["x"]])),
            factoid(
                "q7",
                json!([["il6", "IL-6"], ["a"], ["b"], ["c"], ["d"], ["IL-6"]]),
            ),
        ],
        // A question without exact_answer counts as answered wrongly; a question twice: the
        // first wins; a yes/no question is not factoid. (A flat list of strings is not
        // tried: the evaluator stops on it with an exception.)
        vec![
            json!({"id": "q8", "type": "factoid", "ideal_answer": "x"}),
            factoid("q2", json!([["nope"]])),
            factoid("q2", json!([["BRCA1"]])),
            json!({"id": "q4", "type": "yesno", "ideal_answer": "x", "exact_answer": "yes"}),
        ],
        // Ties and duplicates: the same answer twice, both gold synonyms submitted.
        vec![
            factoid("q1", json!([["salicylate"], ["Aspirin"], ["aspirin"]])),
            factoid("q9", json!([["b"], ["a"]])),
            factoid("q3", json!([["P53"], ["p53"]])),
        ],
        // Nothing answered.
        vec![],
    ];
    for (i, questions) in cases.into_iter().enumerate() {
        compare(
            tmp.path(),
            &format!("case{i}"),
            &golden,
            &json!({ "questions": questions }),
        );
    }
}

/// Every golden file of the shared set, with submissions built from its own answers: the
/// right synonym at ranks 1-5, in other cases, a wrong one, or none, by question.
#[test]
fn every_golden_batch_scores_as_the_official_evaluator() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = shared_data().join("finetune/qa/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 10, "{}", dir.display());
    for golden in files {
        let root: Value = serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
        let mut questions = Vec::new();
        for (i, q) in root["questions"].as_array().unwrap().iter().enumerate() {
            if q["type"] != "factoid" || i % 7 == 6 {
                continue;
            }
            let gold: Vec<String> = q["exact_answer"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_array()?.last()?.as_str().map(str::to_string))
                .collect();
            let right = gold.first().cloned().unwrap_or_default();
            let rank = i % 6;
            let mut answers: Vec<Value> = (0..5).map(|k| json!([format!("wrong {k}")])).collect();
            if rank < 5 {
                let text = if i % 2 == 0 {
                    right.to_uppercase()
                } else {
                    right
                };
                answers[rank] = json!([text]);
            }
            questions.push(factoid(q["id"].as_str().unwrap(), json!(answers)));
        }
        let name = golden.file_stem().unwrap().to_string_lossy().into_owned();
        let [strict, lenient, mrr] = compare(
            tmp.path(),
            &name,
            &golden,
            &json!({ "questions": questions }),
        );
        // The submissions are built to score between 0 and 1 on every measure.
        assert!(
            0.0 < strict && strict < lenient && lenient < 1.0,
            "{name}: {strict} {lenient}"
        );
        assert!(strict < mrr && mrr < lenient, "{name}: {mrr}");
    }
}
