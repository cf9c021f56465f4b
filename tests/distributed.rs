//! `mpirun -np 2 biobert pretrain` on the CPU (MPI all-reduce of host buffers): two ranks
//! with micro-batch B train exactly as one rank with 2B, the sums overlapped with the
//! backward pass equal the sums after it bit for bit, a two-rank checkpoint resumes on one
//! rank, and a failing rank takes the job down.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tch::Tensor;

/// The bundled sample and the real PubMed samples, prepared once per test binary.
fn corpus() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let pubmed = vec![
            workspace().join("sample/pubmed"),
            shared_data().join("pubmed"),
        ];
        prepare_corpus(
            "distributed-test",
            pubmed,
            vec![workspace().join("sample/pmc")],
            1 << 30,
        )
    })
    .clone()
}

/// Dropout off, so that different batch layouts are comparable.
fn args(out: &Path, micro: usize, steps: u64) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "pretrain".into(),
        "--config".into(),
        workspace().join("configs/tiny.toml").display().to_string(),
    ];
    v.extend([
        "--data".into(),
        corpus().display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    for set in [
        format!("train.micro_batch_size={micro}"),
        format!("train.max_steps={steps}"),
        "model.hidden_dropout_prob=0.0".into(),
        "model.attention_probs_dropout_prob=0.0".into(),
        "log.every=1".into(),
        "log.eval_every=0".into(),
        "checkpoint.every=10".into(),
    ] {
        v.push("--set".into());
        v.push(set);
    }
    v
}

fn losses(out: &Path) -> Vec<(u64, f64)> {
    logged(out)
        .into_iter()
        .map(|(step, loss, _)| (step, loss))
        .collect()
}

fn assert_close(a: &[(u64, f64)], b: &[(u64, f64)]) {
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    for ((step, x), (_, y)) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "step {step}: loss {x} vs {y}");
    }
}

#[test]
fn two_ranks_with_b_train_as_one_rank_with_2b() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    run_ok(biobert().args(args(&one, 8, 20)));
    run_ok(mpirun(2).arg(biobert_path()).args(args(&two, 4, 20)));
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 20);
    assert_close(&a, &b);
    let weights = |dir: &Path| -> Vec<(String, Tensor)> {
        let mut v =
            Tensor::read_safetensors(dir.join("checkpoints/step_00000020/model.safetensors"))
                .unwrap();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    for ((name, x), (_, y)) in weights(&one).iter().zip(weights(&two)) {
        let d = (x - &y).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{name} differs by {d}");
    }
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(two.join("checkpoints/step_00000020/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["world_size"], 2);
}

#[test]
fn sums_overlapped_with_backward_equal_the_sums_after_it_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, overlap: bool, extra: &[String]| {
        let out = tmp.path().join(name);
        let mut a = args(&out, 4, 12);
        a.extend(extra.iter().cloned());
        // Four layers of 128, summed in 1 MiB buckets: four buckets, three of them
        // complete before the embeddings' gradients are; two micro-batches per step, so
        // the sums start only in the second one's backward pass.
        for set in [
            "model.hidden_size=128".to_string(),
            "model.num_hidden_layers=4".into(),
            "model.intermediate_size=512".into(),
            "train.grad_accumulation=2".into(),
            "distributed.bucket_mb=1".into(),
            format!("distributed.overlap={overlap}"),
        ] {
            a.extend(["--set".into(), set]);
        }
        let printed = stdout(&run_ok(mpirun(2).arg(biobert_path()).args(a)));
        (out, printed)
    };
    let (after, _) = run("after", false, &[]);
    let (overlapped, printed) = run("overlapped", true, &[]);
    assert!(printed.contains("overlap: on, 4 buckets"), "{printed}");
    assert!(
        printed.contains("overlap: step 1 started 3 of 4 buckets' sums during its backward pass"),
        "{printed}"
    );
    let rows = |dir: &Path| -> Vec<(u64, u64, u64)> {
        logged(dir)
            .into_iter()
            .map(|(s, l, a)| (s, l.to_bits(), a.to_bits()))
            .collect()
    };
    assert_eq!(rows(&after).len(), 12);
    assert_eq!(rows(&after), rows(&overlapped));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let read =
            |dir: &Path| std::fs::read(dir.join("checkpoints/step_00000010").join(file)).unwrap();
        assert!(read(&after) == read(&overlapped), "{file} differs");
    }
    // Resumed with the sums overlapped: the hooks hold on the restored weights.
    let from = overlapped.join("checkpoints/step_00000010");
    let (resumed, _) = run(
        "resumed",
        true,
        &["--resume".into(), from.display().to_string()],
    );
    assert_eq!(rows(&resumed), rows(&after)[10..]);
}

#[test]
fn a_two_rank_checkpoint_resumes_on_one_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let (two, one) = (tmp.path().join("two"), tmp.path().join("one"));
    run_ok(mpirun(2).arg(biobert_path()).args(args(&two, 4, 20)));
    let mut resume = args(&one, 8, 20);
    resume.extend([
        "--resume".into(),
        two.join("checkpoints/step_00000010").display().to_string(),
    ]);
    let out = run_ok(biobert().args(resume));
    assert!(stdout(&out).contains("resume: step 10"), "{}", stdout(&out));
    let (a, b) = (losses(&two), losses(&one));
    assert_close(&a[10..], &b);
}

#[test]
fn a_failing_rank_ends_the_job_with_its_message() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = mpirun(2)
        .arg(biobert_path())
        .args(args(&tmp.path().join("run"), 4, 200))
        .env("BIOBERT_FAIL_AT", "1:5")
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("rank 1: error: injected failure at step 5"),
        "{err}"
    );
}

/// The pid of the `biobert-core` process of MPI rank `rank` whose command line mentions
/// `marker` (its --out folder), from /proc.
fn rank_pid(rank: usize, marker: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("biobert-core") || !cmdline.contains(marker) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        if environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// A rank killed with SIGKILL mid-run (a lost node, the OOM killer): the job ends within
/// 60 s, non-zero, and the output says which rank died.
#[test]
fn a_killed_rank_ends_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("killed-run");
    let job = mpirun(2)
        .arg(biobert_path())
        .args(args(&run, 4, 100_000))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way (rank 0 has logged a step).
    wait_until("the job's first step", Duration::from_millis(100), || {
        run.join("log.jsonl").is_file()
    });
    let marker = run.display().to_string();
    let pid = rank_pid(1, &marker).expect("rank 1's process");
    // SAFETY: kill(2) on a pid we just found; a stale pid only makes the test fail.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let out = job.wait_with_output().unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "the job outlived its killed rank by {:?}",
        killed.elapsed()
    );
    assert!(!out.status.success());
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("rank 1") && text.contains("signal 9"),
        "no word of the killed rank: {text}"
    );
}

#[test]
fn bench_allreduce_reports_bus_bandwidth_per_size() {
    let out = run_ok(mpirun(2).arg(biobert_path()).args([
        "bench-allreduce",
        "--min-bytes",
        "4096",
        "--max-bytes",
        "65536",
        "--iterations",
        "2",
    ]));
    let text = stdout(&out);
    assert!(text.contains("over 2 rank(s)"), "{text}");
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    // Times and bandwidths parse; under a loaded machine small messages may round to 0.
    for row in &rows {
        let fields: Vec<f64> = row.split_whitespace().map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields.len(), 4, "{row}");
        assert!(fields[1] > 0.0 && fields[3] >= 0.0, "{row}");
    }
}

/// bench-loader under mpirun: each rank makes its share with its share of the node's
/// threads, and rank 0 reports every rank and the sum. The two ranks find no instance
/// index: exactly one of them builds it, the other maps it.
#[test]
fn bench_loader_under_mpirun_sums_the_ranks() {
    let cache = tempfile::tempdir().unwrap();
    let out = run_ok(
        mpirun(2)
            .arg(biobert_path())
            .args(["bench-loader", "--config"])
            .arg(workspace().join("configs/tiny.toml"))
            .arg("--data")
            .arg(corpus())
            .arg("--index-cache")
            .arg(cache.path())
            .args(["--steps", "20", "--warmup-steps", "5"]),
    );
    let text = stdout(&out);
    let builds = text
        .lines()
        .filter(|l| l.starts_with("instance index: training epoch 0: "))
        .count();
    assert_eq!(builds, 1, "{text}");
    // "T loader threads per rank (C cores / 2 rank(s) on this node)": T = C / 2, at least 1
    // (C is what a rank may run on: mpirun may bind it to fewer cores than the node has).
    let line = text
        .lines()
        .find(|l| l.contains(" loader threads per rank ("))
        .unwrap_or_else(|| panic!("{text}"));
    let inside = line
        .split_once("; index of step 0's epoch ready after ")
        .unwrap()
        .1;
    let words: Vec<&str> = inside.split_whitespace().collect();
    let (threads, cores): (usize, usize) = (
        words[2].parse().unwrap_or_else(|_| panic!("{line}")),
        words[7]
            .trim_start_matches('(')
            .parse()
            .unwrap_or_else(|_| panic!("{line}")),
    );
    assert_eq!(words[10..12], ["2", "rank(s)"], "{line}");
    assert_eq!(threads, (cores / 2).max(1), "{line}");
    let per_rank = text
        .lines()
        .find(|l| l.starts_with("per rank (seq/s): "))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(per_rank.split(", ").count(), 2, "{per_rank}");
    assert!(
        text.contains("20 steps of 16 sequences (seq 64), after 5 untimed: "),
        "{text}"
    );
    assert!(text.contains("(2 rank(s))"), "{text}");
}
