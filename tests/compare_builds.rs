//! `bench/refactor/compare_builds.sh`, which shows that a refactor trains bit for bit as
//! before, run with the test build on both sides: it must find them identical (and so can
//! tell a difference: its digest covers every logged loss and every written tensor file).

mod common;

use std::process::Command;

use common::*;

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn a_build_compared_with_itself_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let bin = biobert_path().parent().unwrap().to_path_buf();
    let out = run_ok(
        Command::new(workspace().join("bench/refactor/compare_builds.sh"))
            .arg(&bin)
            .arg(&bin)
            .arg(dir.path()),
    );
    let text = stdout(&out);
    assert!(text.starts_with("identical: "), "{text}");
    let digest = std::fs::read_to_string(dir.path().join("new.digest")).unwrap();
    // Every pretraining step logged, every checkpoint and fine-tuning output digested.
    assert!(digest.lines().count() > 100, "{digest}");
    assert!(
        digest.contains("p3 step_00000016 model.safetensors"),
        "{digest}"
    );
    assert!(digest.contains("f3 train/loss"), "{digest}");
}
