//! Multi-node, on two nodes emulated on this machine (tests/multinode/nodes.sh: each its
//! own network namespace on a private bridge, hostname and node-local scratch folder; Open
//! MPI reaches node2 through an agent in place of ssh). `launch/mpirun.sh` runs on node1
//! with a hostfile, as a user runs it on a cluster's first node: 2 nodes x 2 ranks train as
//! 1 node x 4 ranks and resume; node-local index caches get a builder per node and a
//! shared one a builder per job; SIGTERM to one node's ranks stops every rank after the
//! same step and the job resumes to the uninterrupted losses; a node lost (every process
//! killed) or its link cut ends the job within distributed.timeout_s and a few seconds,
//! with a line that names the lost ranks or the link, and the last checkpoint resumes.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The bundled sample, prepared once per test binary.
fn corpus() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        prepare_corpus(
            "multinode-test",
            vec![workspace().join("sample/pubmed")],
            vec![workspace().join("sample/pmc")],
            1 << 30,
        )
    })
    .clone()
}

fn nodes_sh() -> PathBuf {
    workspace().join("tests/multinode/nodes.sh")
}

/// Emulated nodes node1..nodeN, stopped (every process in them ended) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Cluster {
    /// The nodes, or None (said on stderr) where the kernel refuses namespaces.
    fn start(nodes: usize) -> Option<Cluster> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(nodes_sh())
            .arg("start")
            .arg(dir.path())
            .arg(nodes.to_string())
            .output()
            .unwrap();
        if stderr(&out).contains("does the kernel allow namespaces?") {
            eprintln!("skipped: this kernel refuses namespaces: {}", stderr(&out));
            return None;
        }
        assert!(
            out.status.success(),
            "the emulated nodes did not start: {}",
            stderr(&out)
        );
        let env = stdout(&out)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cluster = Cluster { dir, env };
        let hosts: String = (1..=nodes).map(|i| format!("node{i} slots=2\n")).collect();
        std::fs::write(cluster.hostfile(), hosts).unwrap();
        Some(cluster)
    }

    fn hostfile(&self) -> PathBuf {
        self.dir.path().join("hosts.txt")
    }

    /// The folder that is node-local on every node.
    fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// `launch/mpirun.sh` run on node1 across the hostfile's nodes, 2 ranks each.
    fn mpirun_sh(&self, out: &Path, steps: u64, extra: &[&str]) -> Command {
        let mut cmd = Command::new(nodes_sh());
        cmd.arg("run")
            .arg(self.dir.path())
            .arg("node1")
            .arg(workspace().join("launch/mpirun.sh"))
            .current_dir(workspace())
            .env("BIOBERT", biobert_path())
            .env("HOSTFILE", self.hostfile())
            .env("NP", "4")
            .env(
                "MPIRUN_ARGS",
                format!(
                    "--mca plm_rsh_agent {} --mca oob_tcp_if_include {net} --mca btl_tcp_if_include {net}",
                    self.env["AGENT"],
                    net = self.env["SUBNET"]
                ),
            );
        cmd.args(tiny_args(out, steps)).args(extra);
        cmd
    }

    /// Sends `sig` to `node`'s processes named `comm`; returns how many.
    fn signal(&self, node: &str, sig: &str, comm: &str) -> usize {
        let out = run_ok(
            Command::new(nodes_sh())
                .arg("signal")
                .arg(self.dir.path())
                .args([node, sig, comm]),
        );
        stdout(&out).trim().parse().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(nodes_sh())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// The tiny config, micro-batch 2 (8 sequences a step over 4 ranks), dropout off so that
/// any layout of the ranks gives the same losses.
fn tiny_args(out: &Path, steps: u64) -> Vec<String> {
    let mut v: Vec<String> = vec!["--config".into(), "configs/tiny.toml".into()];
    v.extend(["--data".into(), corpus().display().to_string()]);
    v.extend(["--out".into(), out.display().to_string()]);
    v.extend(["--max-steps".into(), steps.to_string()]);
    for set in [
        "train.micro_batch_size=2",
        "model.hidden_dropout_prob=0.0",
        "model.attention_probs_dropout_prob=0.0",
        "log.every=1",
        "log.eval_every=0",
        "checkpoint.every=1000",
    ] {
        v.extend(["--set".into(), set.into()]);
    }
    v
}

/// One node, four ranks: `launch/mpirun.sh` NP=4 on this machine.
fn one_node_of_four(out: &Path, steps: u64) -> Output {
    let mut cmd = Command::new(workspace().join("launch/mpirun.sh"));
    cmd.current_dir(workspace())
        .env("BIOBERT", biobert_path())
        .env("NP", "4")
        .args(tiny_args(out, steps));
    run_ok(&mut cmd)
}

fn both(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn losses(out: &Path) -> Vec<(u64, f64)> {
    logged(out).into_iter().map(|(s, l, _)| (s, l)).collect()
}

fn assert_same_losses(a: &[(u64, f64)], b: &[(u64, f64)]) {
    let steps = |v: &[(u64, f64)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(steps(a), steps(b));
    for ((step, x), (_, y)) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "step {step}: loss {x} against {y}");
    }
}

/// How many times the log says the training epoch 0 index was built, on each node.
fn epoch0_builds(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.starts_with("instance index: training epoch 0: "))
        .filter_map(|l| l.split(" built on ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .map(String::from)
        .collect()
}

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn two_nodes_of_two_ranks_train_as_one_node_of_four_and_resume() {
    let Some(cluster) = Cluster::start(2) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    one_node_of_four(&one, 10);

    // Node-local index caches (a folder each node has of its own): a builder per node.
    let local = format!("data.index_cache={}", cluster.scratch().display());
    let first = run_ok(&mut cluster.mpirun_sh(&two, 6, &["--set", &local]));
    let log = both(&first);
    assert!(
        log.contains("mpirun.sh: 4 rank(s), 1 core(s) each"),
        "{log}"
    );
    for (node, first_rank) in [("node1", 0), ("node2", 2)] {
        let line = format!(
            "node {node}: 2 of the 4 ranks (local rank 0 is rank {first_rank}), 1 torch and 1 data loader thread(s) each"
        );
        assert!(log.contains(&line), "{line} missing:\n{log}");
    }
    let mut builders = epoch0_builds(&log);
    builders.sort();
    assert_eq!(builders, ["node1", "node2"], "{log}");
    for node in ["node1", "node2"] {
        let cache = cluster.dir.path().join(node).join("scratch");
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1, "{node}");
    }

    // Resumed on both nodes: steps 7-10, and the losses of 1 node x 4 ranks throughout.
    let second = run_ok(&mut cluster.mpirun_sh(&two, 10, &["--set", &local, "--resume", "auto"]));
    assert!(
        stdout(&second).contains("resume: step 6 from"),
        "{}",
        both(&second)
    );
    assert_same_losses(&losses(&one), &losses(&two));

    // A cache on a folder both nodes see (the run folder): one builder for the job.
    let shared = tmp.path().join("shared");
    let log = both(&run_ok(&mut cluster.mpirun_sh(&shared, 6, &[])));
    assert_eq!(epoch0_builds(&log).len(), 1, "{log}");
}

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn sigterm_to_one_nodes_ranks_stops_every_rank_after_the_same_step() {
    let Some(cluster) = Cluster::start(2) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // 40 steps, stopped after about 8: the resumed run keeps the same schedule.
    let job = cluster
        .mpirun_sh(&out, 40, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("8 logged steps", Duration::from_millis(200), || {
        logged_lines(&out) >= 8
    });
    // As a scheduler pre-empting node2 would: its ranks only.
    assert_eq!(cluster.signal("node2", "TERM", "biobert-core"), 2);
    let started = Instant::now();
    let output = job.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    let log = both(&output);
    assert!(output.status.success(), "{log}");
    let step: u64 = log
        .split("stopped by a signal after step ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stop line:\n{log}"));
    assert!(step < 40, "{log}");
    assert!(out
        .join(format!("checkpoints/step_{step:08}/trainer_state.json"))
        .is_file());

    // Resubmitted: the job continues to the losses of a run never stopped.
    let resumed = run_ok(&mut cluster.mpirun_sh(&out, 40, &["--resume", "auto"]));
    assert!(stdout(&resumed).contains(&format!("resume: step {step} from")));
    let whole = tmp.path().join("whole");
    one_node_of_four(&whole, 40);
    assert_same_losses(&losses(&whole), &losses(&out));
}

/// A job of 2 x 2 ranks with checkpoints every 5 steps and a 10 s bound on a collective,
/// after its 12th step; what it prints goes to `out`.log (a file, not a pipe that a
/// process left behind could hold open).
fn job_at_step_12(cluster: &Cluster, out: &Path) -> std::process::Child {
    let log = std::fs::File::create(out.with_extension("log")).unwrap();
    let job = cluster
        .mpirun_sh(
            out,
            100_000,
            &[
                "--set",
                "checkpoint.every=5",
                "--set",
                "distributed.timeout_s=10",
            ],
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until("12 logged steps", Duration::from_millis(200), || {
        logged_lines(out) >= 12
    });
    job
}

/// Waits for the job, which must fail within `bound` (killed past it); returns its log.
fn fails_within(mut job: std::process::Child, out: &Path, bound: Duration) -> String {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > bound {
            let _ = job.kill();
            let log = std::fs::read_to_string(out.with_extension("log")).unwrap();
            panic!("still running after {bound:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(out.with_extension("log")).unwrap();
    assert!(!status.success(), "{log}");
    log
}

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn a_lost_node_ends_the_job_naming_its_ranks_and_the_last_checkpoint_resumes() {
    let Some(cluster) = Cluster::start(2) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let job = job_at_step_12(&cluster, &out);
    // Every process of node2 killed at once, as a node that loses power.
    assert!(cluster.signal("node2", "KILL", "") >= 2);
    // distributed.timeout_s (10 s), then the launcher's 3 s: well within 40 s.
    let log = fails_within(job, &out, Duration::from_secs(40));
    assert!(log.contains("lost: rank 2 on node2"), "{log}");
    assert!(log.contains(", rank 3 on node2 (silent "), "{log}");
    assert!(log.contains("launch: rank 0 (node1): waited "), "{log}");
    // Node2 back: the job resumes from the last checkpoint on both nodes.
    let state = |step: u64| out.join(format!("checkpoints/step_{step:08}/trainer_state.json"));
    let last = (5..100)
        .step_by(5)
        .take_while(|&s| state(s).is_file())
        .last()
        .unwrap();
    let resumed = run_ok(&mut cluster.mpirun_sh(&out, last + 2, &["--resume", "auto"]));
    assert!(
        stdout(&resumed).contains(&format!("resume: step {last} from")),
        "{}",
        both(&resumed)
    );
}

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn a_cut_link_ends_the_job_instead_of_hanging() {
    let Some(cluster) = Cluster::start(2) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let job = job_at_step_12(&cluster, &out);
    run_ok(
        Command::new(nodes_sh())
            .arg("link")
            .arg(cluster.dir.path())
            .args(["node2", "down"]),
    );
    let log = fails_within(job, &out, Duration::from_secs(40));
    assert!(
        log.contains("every rank still beats: a link between the nodes is down"),
        "{log}"
    );
}

/// `bench/multinode/overlap.sh` as BENCHMARKS.md runs it, small: two emulated nodes over a
/// rate-limited link, the sums after and overlapped with backward. Its table has every row
/// with a time, and the overlapped run started buckets during its backward pass.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn the_slow_link_benchmark_prints_its_table() {
    if Cluster::start(1).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = biobert_path().parent().unwrap().to_path_buf();
    let out = run_ok(
        Command::new(workspace().join("bench/multinode/overlap.sh"))
            .env("BIOBERT_BIN", &bin)
            .env("BENCH_OUT", dir.path())
            .env("SHAPE", "small")
            .env("STEPS", "3")
            .env("BUCKET_MB", "1")
            .env("RATE", "200mbit"),
    );
    let text = stdout(&out);
    assert!(
        text.contains("overlap: step 1 started 3 of 4 buckets' sums during its backward pass"),
        "{text}"
    );
    let table = std::fs::read_to_string(dir.path().join("table.md")).unwrap();
    for row in [
        "| compute alone (1 rank) |",
        "| all-reduce alone (bench-allreduce) |",
        "| 2 nodes, sums after backward |",
        "| 2 nodes, sums overlapped with backward |",
    ] {
        let line = table.lines().find(|l| l.starts_with(row));
        let ms = line.and_then(|l| l.split('|').nth(2)).map(str::trim);
        assert!(
            ms.and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0),
            "{row} without a time:\n{table}"
        );
    }
    assert!(table.contains("% hidden"), "{table}");
}

/// A real Slurm over the emulated nodes (tests/slurm/cluster.sh with one slurmd per
/// node, the controller on the bridge); stopped when dropped, before the nodes.
struct Slurm {
    dir: tempfile::TempDir,
}

impl Slurm {
    fn start(cluster: &Cluster) -> Slurm {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            Command::new(workspace().join("tests/slurm/cluster.sh"))
                .arg("start")
                .arg(dir.path())
                .arg(cluster.dir.path()),
        );
        Slurm { dir }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", self.dir.path().join("slurm.conf"));
        cmd
    }

    /// The README's sbatch line, on 2 nodes of 2 CPU ranks, run to its end; its output.
    fn sbatch(&self, work: &Path, out: &Path, steps: u64, extra: &[&str]) -> String {
        let tiny = tiny_args(out, steps);
        // slurm.sbatch CONFIG DATA OUT [pretrain options]: the positional three first.
        let (config, data, rest) = (&tiny[1], &tiny[3], &tiny[6..]);
        let submitted = run_ok(
            self.command("sbatch")
                .current_dir(work)
                .args(["--parsable", "--nodes=2", "--gpus-per-node=0"])
                .args(["--ntasks-per-node=2", "--cpus-per-task=1"])
                .arg(format!(
                    "--export=ALL,BIOBERT_ROOT={},BIOBERT={}",
                    workspace().display(),
                    biobert_path().display()
                ))
                .arg(workspace().join("launch/slurm.sbatch"))
                .arg(workspace().join(config))
                .args([data, &out.display().to_string()])
                .args(rest)
                .args(extra),
        );
        let job = stdout(&submitted).trim().to_string();
        let started = Instant::now();
        let state = loop {
            let shown = self
                .command("scontrol")
                .args(["show", "job", &job])
                .output()
                .unwrap();
            let state = stdout(&shown)
                .split("JobState=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("")
                .to_string();
            if ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"]
                .contains(&state.as_str())
                || started.elapsed() > Duration::from_secs(240)
            {
                break state;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let printed =
            std::fs::read_to_string(work.join(format!("biobert-{job}.out"))).unwrap_or_default();
        assert_eq!(state, "COMPLETED", "job {job}:\n{printed}");
        printed
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(workspace().join("tests/slurm/cluster.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// `sbatch --nodes=2 launch/slurm.sbatch` under a real Slurm with a slurmd on each
/// emulated node: mpirun inside the job starts node2's ranks through Slurm (srun), each
/// node runs its own two ranks with their own threads, the losses are those of one node of
/// four, and a second submission resumes.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn slurm_sbatch_on_two_nodes_trains_as_one_node_of_four_and_resumes() {
    let Some(cluster) = Cluster::start(2) else {
        return;
    };
    let slurm = Slurm::start(&cluster);
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    one_node_of_four(&one, 10);
    let first = slurm.sbatch(tmp.path(), &two, 6, &[]);
    assert!(first.contains("on node[1-2]: 4 rank(s)"), "{first}");
    for (node, first_rank) in [("node1", 0), ("node2", 2)] {
        let line = format!(
            "node {node}: 2 of the 4 ranks (local rank 0 is rank {first_rank}), 1 torch and 1 data loader thread(s) each"
        );
        assert!(first.contains(&line), "{line} missing:\n{first}");
    }
    let second = slurm.sbatch(tmp.path(), &two, 10, &[]);
    assert!(second.contains("resume: step 6 from"), "{second}");
    assert_same_losses(&losses(&one), &losses(&two));
}

/// `bench/multinode/scaling_model.py`, as BENCHMARKS.md runs it: BERT-base's last bucket
/// and the seq-512 row's figures that the section quotes.
#[test]
fn the_scaling_model_prints_the_quoted_table() {
    let out =
        run_ok(Command::new("python3").arg(workspace().join("bench/multinode/scaling_model.py")));
    let text = stdout(&out);
    assert!(
        text.contains("108.9 M parameters, 435.7 MB of fp32 gradients"),
        "{text}"
    );
    assert!(
        text.contains("the last bucket (started after backward) 20.8%"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("| seq 512, BioBERT's 24 a GPU, no accumulation | fp32 |"))
        .unwrap_or_else(|| panic!("no seq-512 fp32 row:\n{text}"));
    assert!(row.contains("| 93.6% / 98.6% / 96.7% |"), "{row}");
    assert!(row.contains("| 83.0% / 95.9% / 90.8% |"), "{row}");
}
