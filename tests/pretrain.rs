//! `biobert pretrain` on shards of the real NCBI samples with the tiny config: the loss
//! falls, a run killed with SIGKILL resumes to the same losses bit for bit, a checkpoint cut
//! mid-write is passed over, TensorBoard's reader sees what the log says, and the training
//! instances have the statistics of Google's algorithm.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use biobert::data::corpus::Corpus;
use biobert::data::instances::{self, InstanceConfig, SpecialTokens};
use common::*;

/// Token shards of every real sample file (PubMed and PMC), built once per test binary.
fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let data = shared_data();
        prepare_corpus(
            "pretrain-test",
            vec![data.join("pubmed")],
            vec![data.join("pmc")],
            100_000,
        )
    })
}

fn pretrain(out: &Path, extra: &[&str]) -> std::process::Command {
    pretrain_tiny(corpus(), out, extra)
}

/// The held-out losses a run printed (`eval step N: loss ...`), in order.
fn eval_losses(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("eval step "))
        .map(|l| l.split(' ').nth(2).unwrap().parse().unwrap())
        .collect()
}

/// A run's logged (step, loss, MLM accuracy) and its stdout.
type Run = (Vec<(u64, f64, f64)>, String);

/// One run per value of `key`, with `common` settings: each run's logged losses and stdout.
fn runs_of(dir: &Path, key: &str, values: &[&str], common: &[&str]) -> Vec<Run> {
    values
        .iter()
        .map(|value| {
            let out = dir.join(format!("{key}-{value}"));
            let set = format!("{key}={value}");
            let mut args = vec!["--set", set.as_str()];
            args.extend_from_slice(common);
            let run = run_ok(&mut pretrain(&out, &args));
            (logged(&out), stdout(&run))
        })
        .collect()
}

#[test]
fn the_loss_falls_and_mlm_accuracy_rises() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run_ok(&mut pretrain(&out, &["--max-steps", "60"]));
    let log = logged(&out);
    assert_eq!(log.len(), 6);
    let (first, last) = (log[0], log[log.len() - 1]);
    assert!(
        last.1 < first.1 - 1.0,
        "loss {} -> {}: expected a fall of more than 1.0",
        first.1,
        last.1
    );
    let late_accuracy = (log[4].2 + log[5].2) / 2.0;
    assert!(
        late_accuracy > first.2 + 0.01,
        "MLM accuracy {} -> {late_accuracy}",
        first.2
    );
    for f in [
        "config.toml",
        "checkpoints/latest",
        "checkpoints/step_00000060/model.safetensors",
        "checkpoints/step_00000060/trainer_state.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // The exported folder's model card traces the model back to its corpus and run.
    let hf = tmp.path().join("hf");
    run_ok(
        biobert()
            .args(["export", "--checkpoint"])
            .arg(out.join("checkpoints/latest"))
            .arg("--out")
            .arg(&hf),
    );
    let card = std::fs::read_to_string(hf.join("README.md")).unwrap();
    let manifest = biobert::data::corpus::file_sha256(&corpus().join("manifest.json")).unwrap();
    for row in [
        format!("| corpus manifest sha256 | `{manifest}` |"),
        "| steps | 60 of 60 (".to_string(),
        "| sequences seen | ".to_string(),
        "| tokens seen | about ".to_string(),
        "| training loss at step 60 | ".to_string(),
        "PubMed and ".to_string(),
        "max_steps = 60".to_string(),
    ] {
        assert!(card.contains(&row), "{row:?} missing:\n{card}");
    }
}

#[test]
fn a_killed_run_resumes_to_the_same_losses_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--max-steps",
        "30",
        "--set",
        "log.every=1",
        "--set",
        "checkpoint.every=4",
        "--set",
        "log.eval_every=0",
    ];
    let reference = tmp.path().join("reference");
    run_ok(&mut pretrain(&reference, &args));

    let out = tmp.path().join("killed");
    let mut child = pretrain(&out, &args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the step-8 checkpoint", Duration::from_millis(2), || {
        out.join("checkpoints/step_00000008").exists()
    });
    // A pseudo-random moment after the second checkpoint, down to mid-step or mid-save.
    std::thread::sleep(Duration::from_millis(u64::from(std::process::id() % 150)));
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = run_ok(&mut pretrain(
        &out,
        &[&args[..], &["--resume", "auto"]].concat(),
    ));
    let text = String::from_utf8_lossy(&resumed.stdout);
    let resumed_at: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("resume: step "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a resume line");
    assert!((8..30).contains(&resumed_at), "resumed at {resumed_at}");
    let (a, b) = (logged(&reference), logged(&out));
    assert_eq!(a.len(), 30);
    assert_eq!(
        a, b,
        "every step's loss equals the uninterrupted run's, bit for bit"
    );
}

/// `--profile START:COUNT` writes those steps' trace into the run folder, and
/// bench/gpu/trace_summary.py sums it by category (here a CPU trace: operators' self time).
#[test]
fn profiled_steps_are_written_as_a_trace_and_summarised() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let run = run_ok(&mut pretrain(
        &out,
        &["--max-steps", "6", "--profile", "3:2"],
    ));
    let trace = out.join("profile/trace_rank0_steps3-4.json");
    assert!(
        stdout(&run).contains(&format!("profile: steps 3-4 in {}", trace.display())),
        "{}",
        stdout(&run)
    );
    let summary = tmp.path().join("summary.json");
    let printed = run_ok(
        std::process::Command::new(venv_python())
            .arg(workspace().join("bench/gpu/trace_summary.py"))
            .arg(&trace)
            .arg("--json")
            .arg(&summary),
    );
    let text = stdout(&printed);
    assert!(text.contains("2 step(s) over"), "{text}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["kind"], "cpu");
    let share = |c: &str| s["categories"][c]["share"].as_f64().unwrap_or(0.0);
    // The tiny model's step is mostly matrix products and the optimizer's pass.
    assert!(share("GEMM") > 0.05, "{text}");
    assert!(share("optimizer") > 0.0, "{text}");
    assert!(s["gemm_tflops"].as_f64().unwrap() > 0.0, "{text}");
}

#[test]
fn a_checkpoint_cut_mid_write_is_passed_over() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = [
        "--max-steps",
        "12",
        "--set",
        "checkpoint.every=4",
        "--set",
        "log.eval_every=0",
    ];
    run_ok(&mut pretrain(&out, &args));
    let newest = out.join("checkpoints/step_00000012/model.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let resumed = run_ok(&mut pretrain(
        &out,
        &[
            "--max-steps",
            "14",
            "--set",
            "checkpoint.every=4",
            "--set",
            "log.eval_every=0",
            "--resume",
            "auto",
        ],
    ));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&resumed.stdout),
        String::from_utf8_lossy(&resumed.stderr),
    );
    assert!(
        stderr.contains("skipping checkpoint") && stderr.contains("step_00000012"),
        "{stderr}"
    );
    assert!(stdout.contains("resume: step 8 from"), "{stdout}");
}

#[test]
fn tensorboard_reads_the_scalars_the_console_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let result = run_ok(&mut pretrain(
        &out,
        &[
            "--max-steps",
            "20",
            "--set",
            "log.every=5",
            "--set",
            "log.eval_every=10",
            // A CPU has no data-sheet peak: name one, so that perf/mfu is logged.
            "--set",
            "log.peak_tflops=0.5",
        ],
    ));
    let console: Vec<String> = String::from_utf8_lossy(&result.stdout)
        .lines()
        .filter(|l| l.starts_with("step "))
        .map(str::to_string)
        .collect();
    assert_eq!(console.len(), 4);
    let script = "import sys, json\n\
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        ea = EventAccumulator(sys.argv[1]); ea.Reload()\n\
        print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))";
    let read = run_ok(
        std::process::Command::new(venv_python())
            .args(["-c", script])
            .arg(out.join("tensorboard")),
    );
    let scalars: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    for tag in [
        "train/loss",
        "train/mlm_loss",
        "train/nsp_loss",
        "train/mlm_accuracy",
        "train/nsp_accuracy",
        "train/lr",
        "train/grad_norm",
        "perf/seq_per_s",
        "perf/tokens_per_s",
        "perf/tflops",
        "perf/mfu",
        "eval/loss",
        "eval/mlm_accuracy",
    ] {
        assert!(scalars[tag].is_array(), "{tag} missing from TensorBoard");
    }
    // MFU = achieved TFLOP/s over the named peak.
    let (tflops, mfu) = (&scalars["perf/tflops"][0][1], &scalars["perf/mfu"][0][1]);
    let (tflops, mfu) = (tflops.as_f64().unwrap(), mfu.as_f64().unwrap());
    assert!(
        tflops > 0.0 && (mfu - tflops / 0.5).abs() <= 1e-6 * mfu.max(1.0),
        "{tflops} {mfu}"
    );
    let losses = scalars["train/loss"].as_array().unwrap();
    assert_eq!(losses.len(), 4);
    for (line, point) in console.iter().zip(losses) {
        let step = point[0].as_u64().unwrap();
        let value = point[1].as_f64().unwrap();
        assert!(
            line.starts_with(&format!("step {step}/20 loss {value:.4} ")),
            "console {line:?} vs TensorBoard ({step}, {value})"
        );
    }
}

/// Google's algorithm's parameters, measured on the instances built from the real
/// samples: B random at least half the time (more for single-sentence chunks), exactly
/// round(15% of the length) masked positions per sequence (capped at 20), so a mask rate
/// of 13-16% of the non-special tokens, 80/10/10 within 4 points, no pair longer than
/// max_seq_len and most pairs at full length.
#[test]
fn instance_statistics_follow_googles_algorithm() {
    let corpus = Corpus::open(corpus()).unwrap();
    let special = SpecialTokens::from_vocab(&corpus.vocab).unwrap();
    let config = InstanceConfig {
        max_seq_len: 128,
        short_seq_prob: 0.1,
        masked_lm_prob: 0.15,
        max_predictions_per_seq: 20,
        whole_word_masking: false,
        seed: 7,
    };
    let (train, _) = instances::split_documents(&corpus, 0.0, 7);
    let list = instances::epoch_instances(&corpus, &train, &config, 0);
    assert!(list.len() > 1000, "{} instances", list.len());
    // Google's algorithm draws B at random half the time, and always when a chunk holds a
    // single sentence (a long one, or a document's last): so a little over half.
    let random = list.iter().filter(|i| i.random_next).count() as f64 / list.len() as f64;
    assert!(
        (0.5..0.65).contains(&random),
        "NSP random fraction {random}"
    );
    let (mut masked, mut candidates, mut as_mask, mut kept, mut full) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut lengths, mut capped) = (Vec::new(), 0usize);
    for (k, instance) in list.iter().enumerate() {
        let e = instances::make_example(&corpus, instance, &config, &special, 0, k as u64).unwrap();
        assert!(e.input_ids.len() <= 128);
        lengths.push(e.input_ids.len());
        full += usize::from(e.input_ids.len() >= 120);
        let n = e.mlm_labels.iter().filter(|&&l| l != -100).count();
        let expected = ((e.input_ids.len() as f64 * 0.15).round() as usize).clamp(1, 20);
        assert_eq!(n, expected, "masked positions per sequence");
        capped += usize::from(expected == 20);
        masked += n;
        candidates += e.input_ids.len() - 3;
        for (i, &label) in e.mlm_labels.iter().enumerate() {
            if label == -100 {
                continue;
            }
            if e.input_ids[i] == special.mask {
                as_mask += 1;
            } else if e.input_ids[i] == label {
                kept += 1;
            }
        }
    }
    let mask_rate = masked as f64 / candidates as f64;
    assert!(
        mask_rate > 0.13 && mask_rate < 0.16,
        "mask rate {mask_rate} ({capped} sequences at the cap)"
    );
    let (p_mask, p_keep) = (as_mask as f64 / masked as f64, kept as f64 / masked as f64);
    assert!((p_mask - 0.8).abs() < 0.04, "[MASK] share {p_mask}");
    // Kept = the 10% left as they were, plus random replacements that drew the same id.
    assert!((p_keep - 0.1).abs() < 0.04, "kept share {p_keep}");
    // Most pairs fill max_seq_len - 3 tokens; about short_seq_prob of documents aim shorter.
    let full_share = full as f64 / list.len() as f64;
    assert!(full_share > 0.5, "share of full-length pairs {full_share}");
    lengths.sort_unstable();
    assert!(
        lengths[lengths.len() / 10] < 120,
        "the shortest decile comes from short targets and document ends"
    );
}

/// bf16 matrix products over fp32 master weights follow the fp32 run within noise (and
/// are not the fp32 run: the logged values differ somewhere).
#[test]
fn bf16_training_follows_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    let runs: Vec<Vec<(u64, f64, f64)>> = ["fp32", "bf16", "bf16-residual"]
        .iter()
        .map(|p| {
            let out = tmp.path().join(p);
            let precision = format!("train.precision={}", &p[..4]);
            let residual = format!("train.bf16_residual={}", p.ends_with("residual"));
            run_ok(&mut pretrain(
                &out,
                &[
                    "--max-steps",
                    "40",
                    "--set",
                    &precision,
                    "--set",
                    &residual,
                    "--set",
                    "log.every=5",
                    "--set",
                    "log.eval_every=0",
                ],
            ));
            logged(&out)
        })
        .collect();
    assert_eq!(runs[0].len(), 8);
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        assert!(
            ((a.1 - b.1) / a.1).abs() < 0.01,
            "step {}: fp32 loss {} vs bf16 {}",
            a.0,
            a.1,
            b.1
        );
    }
    assert_ne!(runs[0], runs[1], "the bf16 run computed in fp32");
    // The bf16 residual stream rounds more: within 2% of fp32, and not the autocast run.
    for (a, c) in runs[0].iter().zip(&runs[2]) {
        assert!(
            ((a.1 - c.1) / a.1).abs() < 0.02,
            "step {}: fp32 loss {} vs bf16 residual {}",
            a.0,
            a.1,
            c.1
        );
    }
    assert_ne!(runs[1], runs[2], "train.bf16_residual changed nothing");
}

/// `train.cast_weights_once = true` (bf16, two micro-batches a step): the losses and the
/// held-out losses of the per-use casts. The arithmetic is the same; only the word
/// embeddings' two gradients (lookup and decoder) are added in another order, so the runs
/// part in the last bits after the first update.
#[test]
fn casting_the_weights_once_trains_as_the_casts_per_use() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = runs_of(
        tmp.path(),
        "train.cast_weights_once",
        &["false", "true"],
        &[
            "--max-steps",
            "20",
            "--set",
            "train.precision=bf16",
            "--set",
            "train.grad_accumulation=2",
            "--set",
            "log.every=5",
            "--set",
            "log.eval_every=10",
        ],
    );
    let ((per_use, per_use_out), (once, once_out)) = (&runs[0], &runs[1]);
    assert_eq!(per_use.len(), 4);
    for (a, b) in per_use.iter().zip(once) {
        assert!(
            ((a.1 - b.1) / a.1).abs() < 1e-3,
            "step {}: casts per use {a:?} vs once {b:?}",
            a.0
        );
    }
    assert!(!per_use_out.contains("cast weights once:"), "{per_use_out}");
    assert!(
        once_out.contains("parameters cast to bf16 once per optimizer step"),
        "{once_out}"
    );
    // The held-out evaluation between steps reads the master weights, not stale copies.
    let (a, b) = (eval_losses(per_use_out), eval_losses(once_out));
    assert_eq!(a.len(), 2, "eval losses {a:?}");
    for (x, y) in a.iter().zip(&b) {
        assert!(((x - y) / x).abs() < 1e-3, "eval {a:?} vs {b:?}");
    }
}

/// `train.unpad = true` trains on the packed real tokens: with dropout off, the losses of
/// the padded run at every logged step (the same sums, in another order), and the run says
/// how its attention ran (here, the CPU: masked on the padded layout, and why).
#[test]
fn packed_batches_train_as_the_padded_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = runs_of(
        tmp.path(),
        "train.unpad",
        &["false", "true"],
        &[
            "--max-steps",
            "30",
            "--set",
            "model.hidden_dropout_prob=0.0",
            "--set",
            "model.attention_probs_dropout_prob=0.0",
            "--set",
            "log.every=5",
            "--set",
            "log.eval_every=10",
        ],
    );
    let ((padded, padded_out), (packed, packed_out)) = (&runs[0], &runs[1]);
    assert_eq!(padded.len(), 6);
    for (a, b) in padded.iter().zip(packed) {
        assert!(
            (a.1 - b.1).abs() < 1e-4 && (a.2 - b.2).abs() < 1e-6,
            "step {}: padded {:?} vs packed {:?}",
            a.0,
            a,
            b
        );
    }
    assert!(!padded_out.contains("unpad:"), "{padded_out}");
    assert!(
        packed_out.contains("unpad: padded batches run on their real tokens; attention runs masked on the padded layout, since the variable-length flash kernel is not available (the kernel needs a CUDA device)"),
        "{packed_out}"
    );
    // The held-out evaluation runs packed too, to the same losses.
    let (a, b) = (eval_losses(padded_out), eval_losses(packed_out));
    assert_eq!(a.len(), 3, "eval losses {a:?}");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "eval {a:?} vs {b:?}");
    }
}

/// `bench-loader` makes the trainer's batches with no model and reports their rate, the
/// longest wait and its memory. The first run builds the instance index, the second maps
/// it (and builds nothing).
#[test]
fn bench_loader_reports_the_data_rate() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        let out = run_ok(
            biobert()
                .args(["bench-loader", "--config"])
                .arg(workspace().join("configs/tiny.toml"))
                .arg("--data")
                .arg(corpus())
                .arg("--index-cache")
                .arg(cache.path())
                .args(["--steps", "5", "--warmup-steps", "2"])
                .args(["--set", "train.micro_batch_size=4"]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run();
    assert!(
        text.contains("instance index: training epoch 0: "),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("5 steps of 4 sequences (seq 64), after 2 untimed: "))
        .unwrap_or_else(|| panic!("no rate line: {text}"));
    let rate: f64 = line
        .split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{line}");
    assert!(text.contains("longest wait for a step: "), "{text}");
    let memory = text
        .lines()
        .find(|l| l.starts_with("private memory per rank (largest): "))
        .unwrap_or_else(|| panic!("{text}"));
    let anonymous: f64 = memory.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(anonymous > 1.0 && anonymous < 1000.0, "{memory}");
    let again = run();
    assert!(!again.contains("training epoch 0: "), "{again}");
    assert!(
        again.contains("index of step 0's epoch ready after "),
        "{again}"
    );
}

/// Our instances against Google's algorithm itself (tests/fixtures/google_instances.py, a
/// Python rendering of create_pretraining_data.py with Python's own random numbers) on the
/// same corpus: five passes each (Google's dupe_factor; our epochs 0-4), every statistic
/// within sampling error. A generator whose keyed streams combine linearly skews them
/// (13% short targets for 10%, was seen).
#[test]
fn instances_match_googles_algorithm_within_sampling_error() {
    let dir = corpus();
    let corpus = Corpus::open(dir).unwrap();
    let special = SpecialTokens::from_vocab(&corpus.vocab).unwrap();
    let config = InstanceConfig {
        max_seq_len: 128,
        short_seq_prob: 0.1,
        masked_lm_prob: 0.15,
        max_predictions_per_seq: 20,
        whole_word_masking: false,
        seed: 12345,
    };
    let (train, _) = instances::split_documents(&corpus, 0.0, 7);
    let (mut n, mut random, mut short, mut under_half) = (0f64, 0f64, 0f64, 0f64);
    let (mut lengths, mut masked, mut candidates, mut as_mask, mut kept) =
        (Vec::new(), 0f64, 0f64, 0f64, 0f64);
    let epochs = 5;
    // Short targets are a document's first draw: counted over 100 epochs, against the
    // exact short_seq_prob (Google's share is that by construction; its run checks it too).
    for epoch in 0..100 {
        for &d in &train {
            let draw = instances::document_rng(&config, epoch, d).uniform();
            short += f64::from(u8::from(draw < config.short_seq_prob));
        }
    }
    for epoch in 0..epochs {
        let list = instances::epoch_instances(&corpus, &train, &config, epoch);
        for (k, instance) in list.iter().enumerate() {
            let e = instances::make_example(&corpus, instance, &config, &special, epoch, k as u64)
                .unwrap();
            n += 1.0;
            random += f64::from(u8::from(instance.random_next));
            lengths.push(e.input_ids.len() as f64);
            under_half += f64::from(u8::from(e.input_ids.len() < 64));
            candidates += (e.input_ids.len() - 3) as f64;
            for (i, &label) in e.mlm_labels.iter().enumerate() {
                if label == -100 {
                    continue;
                }
                masked += 1.0;
                if e.input_ids[i] == special.mask {
                    as_mask += 1.0;
                } else if e.input_ids[i] == label {
                    kept += 1.0;
                }
            }
        }
    }
    let docs = (train.len() as u64 * epochs) as f64;
    let out = run_ok(
        std::process::Command::new(venv_python())
            .arg(workspace().join("tests/fixtures/google_instances.py"))
            .arg(dir)
            .args([
                "--max-seq-len",
                "128",
                "--short-seq-prob",
                "0.1",
                "--masked-lm-prob",
                "0.15",
            ])
            .args([
                "--max-predictions",
                "20",
                "--seed",
                "1",
                "--dupe-factor",
                "5",
            ]),
    );
    let google: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let g = |k: &str| google[k].as_f64().unwrap();
    let gn = g("instances");
    // A share p measured over n1 and n2 trials: 4.5 standard errors of the difference.
    let share = |name: &str, ours: f64, n1: f64, theirs: f64, n2: f64| {
        let p = (ours + theirs) / 2.0;
        let bound = 4.5 * (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt() + 1e-3;
        assert!(
            (ours - theirs).abs() < bound,
            "{name}: ours {ours:.4}, Google's {theirs:.4} (bound {bound:.4})"
        );
    };
    let draws = (train.len() * 100) as f64;
    share("short targets", short / draws, draws, 0.1, f64::INFINITY);
    share(
        "Google's short targets",
        g("short_target_share"),
        g("documents"),
        0.1,
        f64::INFINITY,
    );
    share("NSP random", random / n, n, g("nsp_random_share"), gn);
    share(
        "under half length",
        under_half / n,
        n,
        g("under_half_share"),
        gn,
    );
    share(
        "[MASK]",
        as_mask / masked,
        masked,
        g("mask_share"),
        g("mask_rate") * gn * 100.0,
    );
    share(
        "kept",
        kept / masked,
        masked,
        g("kept_share"),
        g("mask_rate") * gn * 100.0,
    );
    let mean = lengths.iter().sum::<f64>() / n;
    let sd = (lengths.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n).sqrt();
    let bound = 4.5 * sd * (1.0 / n + 1.0 / gn).sqrt();
    assert!(
        (mean - g("mean_length")).abs() < bound,
        "mean length {mean} vs {}",
        g("mean_length")
    );
    let per_doc = n / docs;
    assert!(
        (per_doc / g("instances_per_document") - 1.0).abs() < 0.03,
        "instances per document {per_doc} vs {}",
        g("instances_per_document")
    );
    let rate = masked / candidates;
    assert!(
        (rate - g("mask_rate")).abs() < 0.003,
        "mask rate {rate} vs {}",
        g("mask_rate")
    );
}
