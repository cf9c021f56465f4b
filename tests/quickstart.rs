//! `./launch/quickstart.sh`, the README's first command, run as written: set-up, the
//! sample through prepare/verify/inspect, doctor (also under mpirun), continued
//! pretraining of all-MiniLM-L6-v2, and the export to a Hugging Face folder; with the test
//! build's binaries (BIOBERT_BIN) instead of its release build.

mod common;

use std::process::Command;

use common::*;

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn the_quickstart_runs_the_whole_path() {
    // The test build's binaries: the suite compiles the workspace once (a release build
    // here would double CI's compile time; the script's own build line is the only part
    // not run).
    let bin = biobert_path().parent().unwrap().to_path_buf();
    let out = run_ok(
        Command::new(workspace().join("launch/quickstart.sh"))
            .current_dir(workspace())
            .env("BIOBERT_BIN", &bin),
    );
    let text = stdout(&out);
    assert!(text.contains("quickstart: done."), "{text}");
    let hf = workspace().join("out/quickstart/biobert-hf");
    for f in ["model.safetensors", "config.json", "vocab.txt"] {
        assert!(hf.join(f).is_file(), "{f} missing from {}", hf.display());
    }
}
