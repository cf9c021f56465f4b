//! `biobert finetune`: its metrics against seqeval and scikit-learn to the last digit, a
//! CPU fine-tuning of all-MiniLM-L6-v2 on a slice of NCBI-disease and of GAD whose exported
//! folders transformers reloads to the same logits, and bad input.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use biobert::data::rng::Rng;
use biobert::finetune::{class_metrics, entity_metrics};
use common::*;

fn recheck(cases: &serde_json::Value) -> serde_json::Value {
    let mut child = std::process::Command::new(venv_python())
        .arg(workspace().join("tests/fixtures/recheck_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "recheck_metrics.py failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Tagged sentences.
type Tagged = Vec<Vec<String>>;

fn tags(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Random tag sequences over a tag set, from a keyed stream.
fn random_tags(rng: &mut Rng, set: &[&str], sentences: usize) -> Vec<Vec<String>> {
    (0..sentences)
        .map(|_| {
            let n = rng.randint(1, 12) as usize;
            (0..n)
                .map(|_| set[rng.randint(0, set.len() as i64 - 1) as usize].to_string())
                .collect()
        })
        .collect()
}

/// Entity-level scores equal seqeval's on the edge cases (an I- without a B-, entities at
/// sentence ends, typed labels, type changes inside a span, nothing predicted) and on
/// random sequences; classification scores equal scikit-learn's, binary and multi-class.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn metrics_equal_seqeval_and_scikit_learn_to_the_last_digit() {
    let mut ner: Vec<(Tagged, Tagged)> = vec![
        (vec![tags("I I O B")], vec![tags("B I O B")]),
        (
            vec![tags("O B I"), tags("B")],
            vec![tags("O B I"), tags("I")],
        ),
        (
            vec![tags("B-Disease I-Disease O B-Chemical")],
            vec![tags("B-Disease I-Chemical O B-Chemical")],
        ),
        (vec![tags("O O O")], vec![tags("O O O")]),
        (vec![tags("B I I")], vec![tags("O O O")]),
        (
            vec![tags("I-A B-A I-B O I-B")],
            vec![tags("I-A I-A I-B O B-B")],
        ),
    ];
    let mut rng = Rng::for_keys(&[2026, 11, 25]);
    for k in 0..40 {
        let set: &[&str] = if k % 2 == 0 {
            &["O", "O", "B", "I"]
        } else {
            &["O", "B-A", "I-A", "B-B", "I-B"]
        };
        let gold = random_tags(&mut rng, set, 20);
        let mut pred = gold.clone();
        for s in pred.iter_mut() {
            for t in s.iter_mut() {
                if rng.uniform() < 0.3 {
                    *t = set[rng.randint(0, set.len() as i64 - 1) as usize].to_string();
                }
            }
        }
        ner.push((gold, pred));
    }
    let mut cls: Vec<(Vec<usize>, Vec<usize>, Option<usize>)> = vec![
        (vec![1, 1, 0, 0, 1], vec![1, 0, 1, 0, 1], Some(1)),
        (vec![0, 0, 0], vec![0, 0, 0], Some(1)),
        (vec![1, 1], vec![0, 0], Some(1)),
    ];
    for k in 0..30 {
        let classes = if k % 2 == 0 { 2 } else { 13 };
        let n = rng.randint(5, 300) as usize;
        let gold: Vec<usize> = (0..n)
            .map(|_| rng.randint(0, classes - 1) as usize)
            .collect();
        let pred: Vec<usize> = gold
            .iter()
            .map(|&g| {
                if rng.uniform() < 0.4 {
                    rng.randint(0, classes - 1) as usize
                } else {
                    g
                }
            })
            .collect();
        cls.push((gold, pred, (classes == 2).then_some(1)));
    }
    let cases = serde_json::json!({
        "ner": ner.iter().map(|(g, p)| serde_json::json!({"gold": g, "pred": p})).collect::<Vec<_>>(),
        "cls": cls.iter().map(|(g, p, pos)| serde_json::json!({"gold": g, "pred": p, "positive": pos})).collect::<Vec<_>>(),
    });
    let reference = recheck(&cases);
    for (k, (g, p)) in ner.iter().enumerate() {
        let ours = entity_metrics::score(g, p);
        let theirs = &reference["ner"][k];
        let f = |key: &str| theirs[key].as_f64().unwrap();
        assert_eq!(
            (ours.precision, ours.recall, ours.f1, ours.token_accuracy),
            (f("precision"), f("recall"), f("f1"), f("token_accuracy")),
            "NER case {k}: {g:?} / {p:?}"
        );
    }
    for (k, (g, p, pos)) in cls.iter().enumerate() {
        let ours = class_metrics::score(g, p, *pos);
        let theirs = &reference["cls"][k];
        let f = |key: &str| theirs[key].as_f64().unwrap();
        assert_eq!(
            (ours.accuracy, ours.micro_f1, ours.macro_f1),
            (f("accuracy"), f("micro_f1"), f("macro_f1")),
            "classification case {k}"
        );
        if pos.is_some() {
            assert_eq!(
                (ours.precision, ours.recall, ours.f1),
                (Some(f("precision")), Some(f("recall")), Some(f("f1"))),
                "binary case {k}"
            );
        }
    }
}

fn finetune(task: &str, data: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = biobert();
    cmd.args(["finetune", task, "--model"])
        .arg(minilm_dir())
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra);
    cmd
}

/// transformers loads the exported folder (no missing or unexpected weights) and gives the
/// logits `--save-logits` wrote, within 1e-4, with the same predicted label everywhere.
fn assert_transformers_gives_the_same_logits(out: &Path, architecture: &str) {
    let output = std::process::Command::new(venv_python())
        .arg(workspace().join("tests/fixtures/recheck_logits.py"))
        .arg(out.join("model"))
        .arg(out.join("logits_test.safetensors"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "recheck_logits.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(r["architecture"], architecture, "{r}");
    assert_eq!(r["missing_keys"], serde_json::json!([]), "{r}");
    assert_eq!(r["unexpected_keys"], serde_json::json!([]), "{r}");
    assert!(r["rows"].as_u64().unwrap() > 0, "{r}");
    assert!(r["max_abs_diff"].as_f64().unwrap() < 1e-4, "{r}");
    assert_eq!(r["argmax_differ"], 0, "{r}");
}

/// The predictions file in conlleval's layout, read back by sentence.
fn conll(path: &Path) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let (mut gold, mut pred) = (Vec::new(), Vec::new());
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let rows: Vec<Vec<&str>> = block.lines().map(|l| l.split(' ').collect()).collect();
        gold.push(rows.iter().map(|r| r[1].to_string()).collect());
        pred.push(rows.iter().map(|r| r[2].to_string()).collect());
    }
    (gold, pred)
}

/// MiniLM on 400 sentences of NCBI-disease for 3 epochs on the CPU: the test F1 rises
/// well above the all-O baseline (0), every test word gets a prediction, the metrics
/// equal seqeval's on the written predictions, and the Hugging Face folder names its labels.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn ner_on_a_slice_of_ncbi_disease_learns_and_writes_what_it_says() {
    let data = shared_data().join("finetune/ner/NCBI-disease");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ncbi");
    run_ok(&mut finetune(
        "ner",
        &data,
        &out,
        &[
            "--limit-train",
            "400",
            "--limit-eval",
            "200",
            "--set",
            "epochs=3",
            "--set",
            "max_seq_len=128",
            "--set",
            "learning_rate=1e-4",
            "--save-logits",
        ],
    ));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let f1 = metrics["test"]["f1"].as_f64().unwrap();
    assert!(f1 > 0.1, "test F1 {f1}");
    let (gold, pred) = conll(&out.join("predictions_test.txt"));
    assert_eq!(gold.len(), 200);
    let words: usize = gold.iter().map(Vec::len).sum();
    assert_eq!(words, pred.iter().map(Vec::len).sum::<usize>());
    let reference = recheck(&serde_json::json!({"ner": [{"gold": gold, "pred": pred}], "cls": []}));
    assert_eq!(reference["ner"][0]["f1"].as_f64().unwrap(), f1);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "BertForTokenClassification");
    assert_eq!(config["id2label"]["0"], "O");
    assert_eq!(config["label2id"]["B"], 1);
    for f in ["model.safetensors", "vocab.txt", "tokenizer_config.json"] {
        assert!(out.join("model").join(f).is_file(), "{f}");
    }
    assert_transformers_gives_the_same_logits(&out, "BertForTokenClassification");
}

/// GAD (BioBERT's RE layout, no development file): binary scores of the positive class,
/// the last epoch kept, predictions for every test sentence.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn re_on_a_slice_of_gad_scores_the_positive_class() {
    let data = shared_data().join("finetune/re/GAD/1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gad");
    run_ok(&mut finetune(
        "re",
        &data,
        &out,
        &[
            "--limit-train",
            "300",
            "--limit-eval",
            "100",
            "--set",
            "epochs=1",
            "--save-logits",
        ],
    ));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(metrics["dev"].is_null());
    assert!(metrics["selection"]
        .as_str()
        .unwrap()
        .starts_with("last epoch"));
    for key in ["precision", "recall", "f1", "micro_f1", "macro_f1"] {
        assert!(metrics["test"][key].is_f64(), "{key}: {metrics}");
    }
    let lines = std::fs::read_to_string(out.join("predictions_test.txt")).unwrap();
    assert_eq!(lines.lines().count(), 101);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_transformers_gives_the_same_logits(&out, "BertForSequenceClassification");
}

/// Bad input stops with the file, the line and what was expected, and leaves no --out.
#[test]
fn bad_input_names_the_line_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ner");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("train.tsv"), "Fever\tB\nof\tO\n\n").unwrap();
    std::fs::write(data.join("test.tsv"), "Fever\tB\nrash\tI-Symptom\n\n").unwrap();
    let out = tmp.path().join("out");
    let result = finetune("ner", &data, &out, &["--set", "epochs=1"])
        .output()
        .unwrap();
    assert!(!result.status.success());
    let err = stderr(&result);
    assert!(
        err.contains(
            "test.tsv: sentence 1 has the label \"I-Symptom\", which the training file never uses"
        ),
        "{err}"
    );
    assert!(!out.exists());
    std::fs::write(data.join("test.tsv"), "Fever B\n").unwrap();
    let result = finetune("ner", &data, &out, &["--set", "epochs=1"])
        .output()
        .unwrap();
    assert!(
        stderr(&result).contains("test.tsv:1: expected token<TAB>label"),
        "{}",
        stderr(&result)
    );
    assert!(!out.exists());
    // An existing, non-empty --out is never written into.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("mine.txt"), "keep").unwrap();
    std::fs::write(data.join("test.tsv"), "Fever\tB\n\n").unwrap();
    let result = finetune("ner", &data, &out, &["--set", "epochs=1"])
        .output()
        .unwrap();
    assert!(stderr(&result).contains("not empty"), "{}", stderr(&result));
    assert_eq!(
        std::fs::read_to_string(out.join("mine.txt")).unwrap(),
        "keep"
    );
    let re = tmp.path().join("re");
    std::fs::create_dir_all(&re).unwrap();
    let result = finetune("re", &re, &out, &[]).output().unwrap();
    assert!(
        stderr(&result).contains("neither train.tsv"),
        "{}",
        stderr(&result)
    );
    // A tsv relation set whose labels are not 0 and 1 (a shifted column here) is refused
    // unless --any-labels says it is meant.
    std::fs::write(
        re.join("train.tsv"),
        "@GENE$ causes @DISEASE$ .\tcauses\n@GENE$ and @DISEASE$ .\tnone\n",
    )
    .unwrap();
    std::fs::write(
        re.join("test.tsv"),
        "index\tsentence\tlabel\n0\t@GENE$ causes @DISEASE$ .\tcauses\n",
    )
    .unwrap();
    let re_out = tmp.path().join("re-out");
    let result = finetune("re", &re, &re_out, &["--set", "epochs=1"])
        .output()
        .unwrap();
    assert!(!result.status.success());
    assert!(
        stderr(&result).contains("the labels are causes, none, expected 0 and 1"),
        "{}",
        stderr(&result)
    );
    assert!(!re_out.exists());
    run_ok(&mut finetune(
        "re",
        &re,
        &re_out,
        &["--set", "epochs=1", "--any-labels"],
    ));
    // Each message says what is wrong: a missing file, a limit of 0, an unknown key.
    let fresh = tmp.path().join("fresh");
    std::fs::remove_file(data.join("test.tsv")).unwrap();
    let result = finetune("ner", &data, &fresh, &[]).output().unwrap();
    let missing = format!("{}: not found", data.join("test.tsv").display());
    assert!(stderr(&result).contains(&missing), "{}", stderr(&result));
    std::fs::write(data.join("test.tsv"), "Fever\tB\n\n").unwrap();
    for (args, expected) in [
        (
            ["--limit-train", "0"],
            "--limit-train 0: expected at least 1",
        ),
        (["--limit-eval", "0"], "--limit-eval 0: expected at least 1"),
        (
            ["--set", "epoch=3"],
            "--set epoch=3: epoch is not a key of a fine-tuning configuration",
        ),
    ] {
        let result = finetune("ner", &data, &fresh, &args).output().unwrap();
        assert!(!result.status.success());
        assert!(stderr(&result).contains(expected), "{}", stderr(&result));
        assert!(!fresh.exists());
    }
}

/// A run stopped after its first epoch continues with `--resume auto` and ends where the
/// uninterrupted run ends: the same predictions for every test word, the same scores.
/// Without `--resume` the checkpoint's folder is refused; a finished run has nothing to
/// resume.
#[test]
fn a_stopped_run_resumes_to_the_uninterrupted_result() {
    let data = shared_data().join("finetune/ner/NCBI-disease");
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--limit-train",
        "64",
        "--limit-eval",
        "40",
        "--set",
        "epochs=2",
        "--set",
        "max_seq_len=64",
    ];
    let whole = tmp.path().join("whole");
    run_ok(&mut finetune("ner", &data, &whole, &args));
    let split = tmp.path().join("split");
    let stopped = finetune("ner", &data, &split, &args)
        .env("BIOBERT_FAIL_AFTER_EPOCH", "1")
        .output()
        .unwrap();
    assert!(!stopped.status.success());
    assert!(
        stderr(&stopped).contains("--resume auto continues"),
        "{}",
        stderr(&stopped)
    );
    assert!(split.join("checkpoints/epoch_0001/state.json").is_file());
    let refused = finetune("ner", &data, &split, &args).output().unwrap();
    assert!(
        stderr(&refused).contains("add --resume auto"),
        "{}",
        stderr(&refused)
    );
    let resumed = run_ok(finetune("ner", &data, &split, &args).args(["--resume", "auto"]));
    assert!(
        stdout(&resumed).contains("resume: after epoch 1 of 2"),
        "{}",
        stdout(&resumed)
    );
    let read = |dir: &Path, f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(
        read(&whole, "predictions_test.txt"),
        read(&split, "predictions_test.txt")
    );
    let test = |dir: &Path| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&read(dir, "metrics.json")).unwrap()["test"]
            .clone()
    };
    assert_eq!(test(&whole), test(&split));
    assert!(!split.join("checkpoints").exists());
    let again = run_ok(finetune("ner", &data, &split, &args).args(["--resume", "auto"]));
    assert!(
        stdout(&again).contains("nothing to do: "),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        read(&whole, "predictions_test.txt"),
        read(&split, "predictions_test.txt")
    );

    // Pre-empted mid-epoch (as by SIGTERM after step 4: 66 windows, 3 steps an epoch), the
    // run writes a checkpoint and exits 0; resumed, it ends where the uninterrupted run ends.
    let preempted = tmp.path().join("preempted");
    let out =
        run_ok(finetune("ner", &data, &preempted, &args).env("BIOBERT_STOP_AT_FINETUNE_STEP", "4"));
    assert!(
        stdout(&out).contains("stopped by a signal in epoch 2 after step 1 of 3"),
        "{}",
        stdout(&out)
    );
    assert!(preempted
        .join("checkpoints/epoch_0001_step_000001")
        .is_dir());
    assert!(!preempted.join("metrics.json").exists());
    let resumed = run_ok(finetune("ner", &data, &preempted, &args).args(["--resume", "auto"]));
    assert!(
        stdout(&resumed).contains("resume: after epoch 1 and step 1 of epoch 2 of 2"),
        "{}",
        stdout(&resumed)
    );
    assert_eq!(
        read(&whole, "predictions_test.txt"),
        read(&preempted, "predictions_test.txt")
    );
    assert_eq!(test(&whole), test(&preempted));
}

/// Under mpirun the global batch is split between the ranks and their gradients summed:
/// two ranks fine-tune together, rank 0 alone writes the outputs, and the scores are
/// those of a model that learned (the training loss falls from its first step).
/// Each step's loss is read one step late, yet a non-finite one still ends the run with
/// its own step number, and nothing of the run is left as a result.
#[test]
fn a_non_finite_loss_ends_fine_tuning_naming_its_step() {
    let data = shared_data().join("finetune/ner/NCBI-disease");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // A learning rate of 1e30 with no warm-up makes every step after the first non-finite.
    let failed = finetune(
        "ner",
        &data,
        &out,
        &[
            "--limit-train",
            "64",
            "--limit-eval",
            "16",
            "--set",
            "max_seq_len=64",
            "--set",
            "learning_rate=1e30",
            "--set",
            "warmup_fraction=0.0",
        ],
    )
    .output()
    .unwrap();
    assert!(!failed.status.success());
    let err = stderr(&failed);
    assert!(err.contains("epoch 1, step 2: the loss is"), "{err}");
    assert!(!out.join("metrics.json").exists());
}

#[test]
fn two_ranks_fine_tune_together() {
    let data = shared_data().join("finetune/re/GAD/1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gad");
    let result = run_ok(
        mpirun(2)
            .arg(biobert_path())
            .args(["finetune", "re", "--model"])
            .arg(minilm_dir())
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args([
                "--limit-train",
                "128",
                "--limit-eval",
                "40",
                "--set",
                "epochs=2",
            ]),
    );
    let text = stdout(&result);
    assert!(text.contains("2 rank(s)"), "{text}");
    assert_eq!(text.matches("test: F1 ").count(), 1, "{text}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(metrics["test"]["f1"].is_f64(), "{metrics}");
    let losses: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("loss ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(losses.len(), 2, "{text}");
    assert!(losses[1] < losses[0], "epoch losses {losses:?}");
}

/// A checkpoint records what it trained on: resuming with another --limit-train (or edited
/// files) is refused by name instead of training on the other data, and nothing of the
/// checkpoint is lost.
#[test]
fn a_resume_on_other_training_data_is_refused() {
    let data = shared_data().join("finetune/re/GAD/1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = |limit: &'static str| {
        [
            "--limit-train",
            limit,
            "--limit-eval",
            "16",
            "--set",
            "epochs=2",
            "--set",
            "max_seq_len=48",
        ]
    };
    let stopped = finetune("re", &data, &out, &args("32"))
        .env("BIOBERT_FAIL_AFTER_EPOCH", "1")
        .output()
        .unwrap();
    assert!(!stopped.status.success());
    let other = finetune("re", &data, &out, &args("40"))
        .args(["--resume", "auto"])
        .output()
        .unwrap();
    assert!(!other.status.success());
    let text = stderr(&other);
    assert!(
        text.contains("written for other training data (32 inputs")
            && text.contains("now 40 inputs"),
        "{text}"
    );
    assert!(out.join("checkpoints/epoch_0001/state.json").is_file());
    run_ok(finetune("re", &data, &out, &args("32")).args(["--resume", "auto"]));
}

/// The fused element-wise kernels need a GPU: on the CPU the setting is refused in one
/// line, and the run leaves no folder.
#[test]
fn fused_kernels_are_refused_on_the_cpu_and_leave_nothing() {
    let data = shared_data().join("finetune/re/GAD/1");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let refused = finetune(
        "re",
        &data,
        &out,
        &["--limit-train", "16", "--limit-eval", "16"],
    )
    .args(["--set", "fused_elementwise=true"])
    .output()
    .unwrap();
    assert!(!refused.status.success());
    let text = stderr(&refused);
    assert!(
        text.contains(
            "fused_elementwise: the fused kernels need a CUDA device; this run is on the CPU"
        ),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(!out.exists(), "{} was left behind", out.display());
}

/// `bench/finetune/order_seeds.sh`, the batch-order seed study of BENCHMARKS.md, run small
/// on the test build for both tasks (32 inputs scored): a line per (setting, seed), the table
/// of the three settings and the comparison of ours with transformers' Trainer; and its
/// refusals of what it cannot run.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn the_order_seed_study_runs_every_setting_for_both_tasks() {
    let bin = biobert_path().parent().unwrap().to_path_buf();
    for task in ["ner", "re"] {
        let out = run_ok(
            std::process::Command::new(workspace().join("bench/finetune/order_seeds.sh"))
                .env("BIOBERT_BIN", &bin)
                .env("BENCH_PYTHON", venv_python())
                .env("TASK", task)
                .env("LIMIT", "48")
                .env("LIMIT_EVAL", "32")
                .env("EPOCHS", "1")
                .env("SEEDS", "2"),
        );
        let text = stdout(&out);
        assert!(
            text.starts_with(&format!("order_seeds: {task}, 48 training")),
            "{text}"
        );
        assert_eq!(text.matches("\"seed\": ").count(), 6, "{text}");
        for row in [
            "| grouped | 2 | ",
            "| random-packed | 2 | ",
            "| transformers | 2 | ",
            "grouped against transformers: F1 ",
            "random-packed against transformers: F1 ",
        ] {
            assert!(text.contains(row), "{row} missing:\n{text}");
        }
    }
    for (env, said) in [
        ("TASK=qa", "TASK must be ner or re, not 'qa'"),
        ("SETTINGS=sorted", "not 'sorted'"),
        (
            "SELECT_ON_DEV=true",
            "transformers' side keeps its last epoch; leave it out of SETTINGS",
        ),
    ] {
        let (key, value) = env.split_once('=').unwrap();
        let refused = std::process::Command::new(workspace().join("bench/finetune/order_seeds.sh"))
            .env("BIOBERT_BIN", &bin)
            .env(key, value)
            .output()
            .unwrap();
        assert!(!refused.status.success(), "{env}");
        assert!(
            stderr(&refused).contains(said),
            "{env}: {}",
            stderr(&refused)
        );
    }
}

/// `bench/finetune/run.sh`, as the README shows it, run small (48 training and 32 test
/// inputs a task, one epoch): both sides train and score, the table has its four rows, and
/// transformers, reloading the NER model biobert exported, tags every test word as biobert
/// did (fp32 on the CPU).
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn the_finetune_comparison_script_runs_both_sides_and_the_reload_check() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = biobert_path().parent().unwrap().to_path_buf();
    let out = run_ok(
        std::process::Command::new(workspace().join("bench/finetune/run.sh"))
            .args(["1", "1"])
            .env("BIOBERT_BIN", &bin)
            .env("BENCH_PYTHON", venv_python())
            .env("BENCH_WORK", tmp.path().join("work"))
            .env("LIMIT_TRAIN", "48")
            .env("LIMIT_EVAL", "32"),
    );
    let text = stdout(&out);
    for row in [
        "| NCBI-disease (entity F1) | biobert finetune | ",
        "| NCBI-disease (entity F1) | transformers Trainer | ",
        "| GAD fold 1 (F1 of class 1) | biobert finetune | ",
        "| GAD fold 1 (F1 of class 1) | transformers Trainer | ",
    ] {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
    let reload = text
        .lines()
        .find(|l| l.starts_with("transformers reloading biobert's NER model: "))
        .unwrap_or_else(|| panic!("no reload line:\n{text}"));
    assert!(reload.contains(": 0 of "), "{reload}");
    assert!(!reload.contains(" 0 of 0 "), "{reload}");
}
