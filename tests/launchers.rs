//! The cluster launchers as the README gives them: `launch/mpirun.sh` on this machine (NP=2,
//! and through a hostfile), each training the tiny config and resuming with `--resume
//! auto`; torch found elsewhere than where the binary was built, forwarded to the ranks; a
//! rank that cannot find torch ends the job with the launcher's message; and
//! `launch/slurm.sbatch` under a real single-node Slurm with a requeue in the middle
//! (tests/slurm/requeue_test.sh).

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// The bundled sample, prepared once per test binary.
fn corpus() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        prepare_corpus(
            "launchers-test",
            vec![workspace().join("sample/pubmed")],
            vec![workspace().join("sample/pmc")],
            1 << 30,
        )
    })
    .clone()
}

/// `launch/mpirun.sh` with the built binary, run from the repository as the README shows.
fn mpirun_sh(env: &[(&str, &str)], out: &Path, steps: u64, resume: bool) -> Command {
    let mut cmd = Command::new(workspace().join("launch/mpirun.sh"));
    cmd.current_dir(workspace()).env("BIOBERT", biobert_path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["--config", "configs/tiny.toml", "--data"])
        .arg(corpus())
        .arg("--out")
        .arg(out)
        .args(["--max-steps", &steps.to_string()])
        .args(["--set", "log.every=1", "--set", "log.eval_every=0"]);
    if resume {
        cmd.args(["--resume", "auto"]);
    }
    cmd
}

fn both(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// Trains 6 steps, resumes to 10: every step logged once, the second run from step 6.
fn trains_and_resumes(env: &[(&str, &str)], tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(tag);
    let first = run_ok(&mut mpirun_sh(env, &out, 6, false));
    assert!(stdout(&first).contains("ranks: 2"), "{}", both(&first));
    let second = run_ok(&mut mpirun_sh(env, &out, 10, true));
    assert!(
        stdout(&second).contains("resume: step 6 from"),
        "{}",
        both(&second)
    );
    let steps: Vec<u64> = logged(&out).iter().map(|&(s, _, _)| s).collect();
    assert_eq!(steps, (1..=10).collect::<Vec<_>>());
    both(&first)
}

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn mpirun_sh_trains_two_ranks_and_resumes() {
    let log = trains_and_resumes(&[("NP", "2")], "np2");
    assert!(log.contains("mpirun.sh: 2 rank(s)"), "{log}");
}

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn mpirun_sh_runs_the_ranks_of_a_hostfile() {
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(&hostfile, "localhost slots=2\n").unwrap();
    let hostfile = hostfile.display().to_string();
    trains_and_resumes(&[("NP", "2"), ("HOSTFILE", &hostfile)], "hostfile");
}

/// A node whose torch lives elsewhere than where the binary was built: a copy of
/// site-packages made of links (torch and the nvidia libraries its RPATH names), named by
/// BIOBERT_TORCH, reaches every rank.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn mpirun_sh_forwards_a_torch_found_elsewhere() {
    let real = PathBuf::from(
        String::from_utf8(
            Command::new(venv_python())
                .args(["-c", "import importlib.util as u; print(u.find_spec('torch').submodule_search_locations[0])"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    );
    let site = real.parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("site-packages");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for name in ["torch", "nvidia"] {
        std::os::unix::fs::symlink(site.join(name), elsewhere.join(name)).unwrap();
    }
    let torch = elsewhere.join("torch").display().to_string();
    let log = trains_and_resumes(&[("NP", "2"), ("BIOBERT_TORCH", &torch)], "elsewhere");
    assert!(log.contains("torch: 2.11.0"), "{log}");
    assert!(
        log.contains(&format!("at {}/lib (found through BIOBERT_TORCH)", torch)),
        "{log}"
    );
}

/// Without torch the launcher says why and exits non-zero before starting a rank.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn mpirun_sh_without_torch_prints_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = mpirun_sh(
        &[("NP", "2"), ("BIOBERT_PYTHON", "/nonexistent/python3")],
        &dir.path().join("run"),
        2,
        false,
    )
    .env_remove("BIOBERT_TORCH")
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("env.sh: no torch found"), "{err}");
    assert!(
        err.contains("mpirun.sh: cannot start without torch"),
        "{err}"
    );
}

/// One rank of two cannot find torch (its node's BIOBERT_TORCH is wrong): the job ends
/// promptly with the launcher's message instead of the other rank waiting forever.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn a_rank_without_torch_ends_the_job_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let pretrain = |cmd: &mut Command| {
        cmd.arg(biobert_path())
            .args(["pretrain", "--config"])
            .arg(workspace().join("configs/tiny.toml"))
            .arg("--data")
            .arg(corpus())
            .arg("--out")
            .arg(&out)
            .args(["--max-steps", "50"]);
    };
    let mut cmd = mpirun(1);
    pretrain(&mut cmd);
    cmd.args([":", "-np", "1", "-x", "BIOBERT_TORCH=/nonexistent/torch"]);
    pretrain(&mut cmd);
    let started = Instant::now();
    let result = cmd.output().unwrap();
    assert!(!result.status.success(), "{}", both(&result));
    assert!(started.elapsed() < Duration::from_secs(120));
    let log = both(&result);
    assert!(log.contains("BIOBERT_TORCH=/nonexistent/torch"), "{log}");
}

/// launch/slurm.sbatch under a real single-node Slurm: a plain run, then a run requeued
/// while it trains, which must checkpoint on SIGTERM, come back, resume and log the same
/// losses at every step. Needs root and Slurm (`BIOBERT_TEST_SLURM=1 launch/setup.sh`,
/// which launch/test.sh runs).
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn slurm_sbatch_checkpoints_on_requeue_and_resumes_with_the_same_losses() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(workspace().join("tests/slurm/requeue_test.sh"))
        .arg(corpus())
        .arg(dir.path().join("slurm-test"))
        .env("BIOBERT", biobert_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tests/slurm/requeue_test.sh failed:\n{}",
        both(&out)
    );
    assert!(
        stdout(&out).contains("largest loss difference 0.00e+00"),
        "{}",
        both(&out)
    );
}

/// Ctrl-C on launch/mpirun.sh: launch/ranks.sh passes it to the ranks as SIGTERM, they finish
/// the step, rank 0 checkpoints, and the launcher exits 0 saying how to continue.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn mpirun_sh_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut launcher = mpirun_sh(&[("NP", "2")], &out, 100_000, false);
    // A shell cannot trap a signal it was started ignoring, and a suite started in the
    // background of a non-interactive shell (`./launch/test.sh &`, nohup) hands SIGINT down
    // ignored: give the launcher the disposition Ctrl-C at a terminal finds.
    // SAFETY: between fork and exec only signal(2), which is async-signal-safe, is called.
    unsafe {
        launcher.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = launcher
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("three logged steps", Duration::from_millis(100), || {
        logged_lines(&out) >= 3
    });
    // SAFETY: kill with a valid pid and signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let result = child.wait_with_output().unwrap();
    let log = both(&result);
    assert!(result.status.success(), "{log}");
    assert!(log.contains("mpirun.sh: stopped by SIGINT"), "{log}");
    let latest = std::fs::read_to_string(out.join("checkpoints/latest")).unwrap();
    assert!(
        out.join("checkpoints").join(latest.trim()).is_dir(),
        "{log}"
    );
}

/// A rank that fails ends `launch/mpirun.sh` within seconds, with a non-zero exit and the
/// rank's message, not after mpirun's two 110 s kill timeouts; a bad NP is one line.
#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn mpirun_sh_fails_fast_when_a_rank_fails() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(workspace().join("launch/mpirun.sh"))
        .current_dir(workspace())
        .env("BIOBERT", biobert_path())
        .env("NP", "1")
        .args(["--config", "/nonexistent.toml", "--data"])
        .arg(corpus())
        .arg("--out")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(!out.status.success(), "{}", both(&out));
    assert!(both(&out).contains("/nonexistent.toml"), "{}", both(&out));
    assert!(seconds < 40.0, "took {seconds:.0} s:\n{}", both(&out));

    // Two ranks, one failing mid-run.
    let started = std::time::Instant::now();
    let failed = mpirun_sh(
        &[("NP", "2"), ("BIOBERT_FAIL_AT", "1:3")],
        &dir.path().join("run2"),
        20,
        false,
    )
    .output()
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(!failed.status.success(), "{}", both(&failed));
    assert!(
        both(&failed).contains("injected failure at step 3"),
        "{}",
        both(&failed)
    );
    assert!(seconds < 60.0, "took {seconds:.0} s:\n{}", both(&failed));

    for np in ["abc", "0", "-2"] {
        let bad = Command::new(workspace().join("launch/mpirun.sh"))
            .current_dir(workspace())
            .env("BIOBERT", biobert_path())
            .env("NP", np)
            .args(["--config", "configs/tiny.toml"])
            .output()
            .unwrap();
        assert!(!bad.status.success());
        let text = stderr(&bad);
        assert!(
            text.contains(&format!("NP={np}: expected the number of ranks")),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
