//! Helpers shared by the integration tests: the built binaries and mpirun.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The launcher, `biobert`, as users run it.
pub fn biobert() -> Command {
    Command::new(env!("CARGO_BIN_EXE_biobert"))
}

pub fn biobert_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_biobert"))
}

pub fn core_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_biobert-core"))
}

/// `mpirun -np N` that works as root and on a machine with fewer cores than ranks.
pub fn mpirun(ranks: usize) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "-np", &ranks.to_string()]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--allow-run-as-root");
    }
    cmd
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs and returns the output, with both streams in the panic message on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// The real NCBI sample files, in `shared/data` beside the repository.
pub fn shared_data() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("shared/data");
    assert!(
        dir.join("pubmed").is_dir(),
        "sample data not found at {} (shared/ beside the repository)",
        dir.display()
    );
    dir
}
