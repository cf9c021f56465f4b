//! `biobert evaluate --quick` on the shared benchmark sets (NCBI-disease, GAD fold 1,
//! ChemProt, BioASQ 4b) with a tiny model pretrained and exported here: the table holds
//! what the runs' metrics.json say, the model card gets it, a rerun runs nothing, more
//! seeds run only the new ones, a stopped evaluate resumes to the uninterrupted result,
//! --protocol paper trains on train + dev, and bad options leave nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn finetune_sets() -> PathBuf {
    shared_data().join("finetune")
}

/// A BERT with the tiny config's shape but 512 positions (QA's windows are 384 pieces),
/// pretrained for 20 steps on the samples with MiniLM's vocabulary, exported with its card.
fn tiny_exported_model(tmp: &Path) -> PathBuf {
    let data = shared_data();
    let corpus = prepare_corpus("evaluate-test", vec![data.join("pubmed")], vec![], 20_000);
    let run = tmp.join("pretrain");
    run_ok(&mut pretrain_tiny(
        &corpus,
        &run,
        &[
            "--max-steps",
            "20",
            "--set",
            "model.max_position_embeddings=512",
        ],
    ));
    let hf = tmp.join("tiny-hf");
    run_ok(
        biobert()
            .args(["export", "--checkpoint"])
            .arg(run.join("checkpoints/latest"))
            .arg("--out")
            .arg(&hf),
    );
    let _ = std::fs::remove_dir_all(corpus);
    hf
}

fn evaluate(model: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = biobert();
    cmd.args(["evaluate", "--model"])
        .arg(model)
        .arg("--data")
        .arg(finetune_sets())
        .arg("--out")
        .arg(out)
        .args(extra);
    cmd
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The test score of one run's metrics.json, in percent, as the table should read it.
fn run_score(out: &Path, set: &str, seed: u64, metric: &str) -> f64 {
    let m = json(&out.join(format!("runs/{set}/seed-{seed}/metrics.json")));
    let v = match metric {
        "strict_accuracy" | "lenient_accuracy" | "mrr" => &m["test"]["mean"][metric],
        _ => &m["test"][metric],
    };
    100.0 * v.as_f64().unwrap()
}

fn rows(out: &Path) -> Vec<Value> {
    json(&out.join("results.json"))["rows"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn quick_evaluate_tables_its_runs_resumes_and_adds_the_table_to_the_card() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_exported_model(tmp.path());
    let out = tmp.path().join("eval");
    let quick = ["--quick", "--tasks", "ner,re,qa/4b", "--seeds", "2"];
    let first = run_ok(&mut evaluate(&model, &out, &quick));
    let said = stdout(&first);
    assert!(
        said.contains("evaluate: 4 set(s) x 2 seed(s) = 8 fine-tunings (0 finished before), on 1 rank(s); protocol dev, --quick")
            && said.contains("so expect about"),
        "{said}"
    );
    // The rows: each set's metrics, both seeds, read from the runs' own metrics.json.
    let rows = rows(&out);
    let ids: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["set"].as_str().unwrap(), r["metric"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            ("ner/NCBI-disease", "f1"),
            ("re/GAD/1", "f1"),
            ("re/chemprot", "micro_f1"),
            ("qa/4b", "strict_accuracy"),
            ("qa/4b", "lenient_accuracy"),
            ("qa/4b", "mrr"),
        ]
    );
    for row in &rows {
        let (set, metric) = (
            row["set"].as_str().unwrap(),
            row["metric"].as_str().unwrap(),
        );
        let expected: Vec<f64> = (1..=2).map(|s| run_score(&out, set, s, metric)).collect();
        let values: Vec<f64> = serde_json::from_value(row["values"].clone()).unwrap();
        assert_eq!(values, expected, "{set} {metric}");
        assert_eq!(row["seeds"], serde_json::json!([1, 2]));
        let mean = (expected[0] + expected[1]) / 2.0;
        assert!((row["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    }
    for seed in [1, 2] {
        let config =
            std::fs::read_to_string(out.join(format!("runs/re/chemprot/seed-{seed}/config.toml")))
                .unwrap();
        assert!(config.contains(&format!("seed = {seed}\n")) && config.contains("epochs = 1\n"));
    }
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        table.contains("| ner/NCBI-disease | entity F1 | "),
        "{table}"
    );
    assert!(table.contains("| 2 | 89.71 [1] | 88.30 |"), "{table}");
    assert!(table.contains("| re/chemprot [3] | micro-F1, "), "{table}");
    let card = std::fs::read_to_string(model.join("README.md")).unwrap();
    let evaluation = card.find("## Evaluation").expect("the card has the table");
    assert!(evaluation < card.find("## Loading").unwrap());
    assert!(
        card.contains("| re/GAD/1 | F1, positive class | "),
        "{card}"
    );

    // The same command again: everything is finished, nothing trains, the table stays.
    let again = run_ok(&mut evaluate(&model, &out, &quick));
    let said = stdout(&again);
    assert!(
        said.contains("(8 finished before)") && !said.contains(" runs "),
        "{said}"
    );
    assert_eq!(rows, self::rows(&out));
    assert_eq!(
        std::fs::read_to_string(model.join("README.md")).unwrap(),
        card
    );

    // A third seed of one set: only that run trains; the table covers what was asked.
    let more = run_ok(&mut evaluate(
        &model,
        &out,
        &["--quick", "--tasks", "re/GAD", "--seeds", "3"],
    ));
    let said = stdout(&more);
    assert!(
        said.contains("(2 finished before)") && said.matches(" runs re/GAD/1 seed 3 ").count() == 1,
        "{said}"
    );
    assert_eq!(self::rows(&out).len(), 1);
    assert_eq!(self::rows(&out)[0]["seeds"], serde_json::json!([1, 2, 3]));

    // Other options into the same folder would mix tables: refused, nothing changed.
    let other = evaluate(&model, &out, &["--tasks", "re/GAD"])
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(
        stderr(&other).contains("an evaluate with other options wrote it"),
        "{}",
        stderr(&other)
    );

    // Stopped mid-run (as SIGTERM would, after step 5 of the first run's 7) and resumed:
    // the same scores as the uninterrupted runs above.
    let cut = tmp.path().join("eval-cut");
    let args = ["--quick", "--tasks", "ner,re/GAD", "--seeds", "1"];
    let stopped = run_ok(evaluate(&model, &cut, &args).env("BIOBERT_STOP_AT_FINETUNE_STEP", "5"));
    assert!(
        stdout(&stopped).contains("stopped by a signal with 2 of 2 runs unfinished"),
        "{}",
        stdout(&stopped)
    );
    assert!(!cut.join("results.json").exists());
    run_ok(&mut evaluate(&model, &cut, &args));
    for (set, metric) in [("ner/NCBI-disease", "f1"), ("re/GAD/1", "f1")] {
        assert_eq!(
            run_score(&cut, set, 1, metric),
            run_score(&out, set, 1, metric),
            "{set}"
        );
    }

    // BioBERT's protocol: the development set joins the training set, the last epoch stays.
    let paper = tmp.path().join("eval-paper");
    run_ok(&mut evaluate(
        &model,
        &paper,
        &["--quick", "--tasks", "ner", "--protocol", "paper"],
    ));
    let m = json(&paper.join("runs/ner/NCBI-disease/seed-1/metrics.json"));
    assert_eq!(m["trained_on"], "train + dev");
    assert!(m["selection"].as_str().unwrap().starts_with("last epoch"));
    assert!(std::fs::read_to_string(paper.join("results.md"))
        .unwrap()
        .contains("- protocol: paper (trained on the training and development sets together"));
}

#[test]
fn bad_options_are_refused_in_one_line_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("no-model-needed-yet");
    std::fs::create_dir(&model).unwrap();
    let out = tmp.path().join("eval");
    let refused = |extra: &[&str], expected: &str| {
        let o = evaluate(&model, &out, extra).output().unwrap();
        assert!(!o.status.success(), "{extra:?} succeeded");
        let err = stderr(&o);
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!out.exists(), "{extra:?} left {}", out.display());
    };
    refused(
        &["--tasks", "ner/BC5CDR"],
        "--tasks ner/BC5CDR: no such set under --data; there are: ner/NCBI-disease, re/GAD/1, re/chemprot, qa/4b, qa/5b",
    );
    refused(&["--seeds", "0"], "--seeds 0: expected at least 1");
    refused(
        &["--set", "seed=7"],
        "--set seed=7: evaluate gives each run its seed",
    );
    refused(&["--tasks", "ner"], "no vocab.txt beside the model");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let o = evaluate(&model, &out, &["--tasks", "ner"])
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("not empty and not an evaluate's folder"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn under_mpirun_the_runs_are_spread_over_the_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_exported_model(tmp.path());
    let out = tmp.path().join("eval");
    let mut cmd = mpirun(2);
    cmd.arg(biobert_path())
        .args(["evaluate", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(finetune_sets())
        .arg("--out")
        .arg(&out)
        .args(["--quick", "--tasks", "ner,re/GAD", "--seeds", "2"]);
    let said = stdout(&run_ok(&mut cmd));
    assert!(
        said.contains("= 4 fine-tunings (0 finished before), on 2 rank(s)"),
        "{said}"
    );
    // Longest first to the least loaded rank: each rank fine-tunes two of the four, alone.
    for rank in [0, 1] {
        assert_eq!(
            said.matches(&format!("evaluate: rank {rank} runs "))
                .count(),
            2,
            "{said}"
        );
    }
    assert_eq!(said.matches(", 1 rank(s)\n").count(), 4, "{said}");
    let rows = rows(&out);
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["seeds"], serde_json::json!([1, 2]), "{row}");
    }
}
