//! `biobert doctor` end to end: the launcher, the rpath, a missing torch, and mpirun.

mod common;

use common::*;

#[test]
fn doctor_reports_torch_cpu_and_mpi() {
    let out = run_ok(biobert().arg("doctor"));
    let text = stdout(&out);
    assert!(text.contains("torch        2.11.0"), "{text}");
    assert!(text.contains("fp32 and bf16 matmul ok"), "{text}");
    assert!(text.contains("mpi          Open MPI"), "{text}");
    assert!(text.contains("torch intra-op"), "{text}");
    assert!(
        text.contains("fused        NVRTC 13.")
            && text.contains("the fused element-wise kernels compile (sm_90 PTX)"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("doctor: ok"), "{text}");
}

#[test]
fn core_binary_runs_without_library_path_through_its_rpath() {
    let out = run_ok(
        std::process::Command::new(core_path())
            .arg("doctor")
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("BIOBERT_TORCH_SOURCE"),
    );
    assert!(
        stdout(&out).contains("(found through rpath)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_torch_that_is_not_there_gets_the_fix_not_a_loader_error() {
    let empty = tempfile::tempdir().unwrap();
    let out = biobert()
        .arg("doctor")
        .env("BIOBERT_TORCH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("holds no lib/libtorch_cpu.so"), "{err}");
    assert!(err.contains("torch 2.11.0 package folder"), "{err}");
    assert!(
        !err.contains("error while loading shared libraries"),
        "{err}"
    );
    assert!(stdout(&out).contains("torch        NOT USABLE"));
}

#[test]
fn a_wrong_torch_version_is_refused_with_the_version_needed() {
    let fake = tempfile::tempdir().unwrap();
    let lib = fake.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("libtorch_cpu.so"), b"").unwrap();
    std::fs::write(
        fake.path().join("version.py"),
        "__version__ = '2.4.1+cu121'\n",
    )
    .unwrap();
    let out = biobert()
        .args(["doctor"])
        .env("BIOBERT_TORCH", fake.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is 2.4.1+cu121") && err.contains("torch==2.11.0"),
        "{err}"
    );
}

#[test]
fn launcher_without_its_core_binary_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("biobert");
    std::fs::copy(biobert_path(), &lone).unwrap();
    let out = std::process::Command::new(&lone)
        .arg("doctor")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("biobert-core must sit beside"), "{err}");
}

#[test]
fn doctor_mpi_all_reduces_across_two_ranks() {
    let out = run_ok(mpirun(2).arg(biobert_path()).args(["doctor", "--mpi"]));
    let text = stdout(&out);
    assert!(
        text.contains("all-reduce   2 rank(s) on 1 node(s), 2 on this node: sum of [1, rank] = [2, 1], expected [2, 1]: ok"),
        "{text}"
    );
    // The trainer's own gradient all-reduce (MPI on CPU ranks) sums correctly.
    assert!(
        text.contains("gradients    16 MiB summed over 2 rank(s) by MPI (host buffers) on Cpu: values in [2, 2], expected 2: ok"),
        "{text}"
    );
    // Only rank 0 prints the report.
    assert_eq!(text.matches("doctor: ok").count(), 1, "{text}");
}

#[test]
fn doctor_mpi_works_as_a_singleton_without_mpirun() {
    let out = run_ok(biobert().args(["doctor", "--mpi"]));
    assert!(
        stdout(&out).contains("all-reduce   1 rank(s)"),
        "{}",
        stdout(&out)
    );
}
