//! The GPU scripts, run end to end on the CPU so that a typo cannot waste GPU time:
//! `bench/gpu/stage.sh` (the test build's binaries, stripped, in one folder under 32 MiB), then
//! `bench/gpu/check.sh --cpu`, `bench/gpu/throughput.sh --cpu` and `bench/gpu/levers.sh --cpu`
//! from that folder, each
//! running every command line it holds with tiny shapes, its logs and results in BENCH_OUT,
//! and its summary or table as the last lines.

mod common;

use std::process::Command;

use common::*;

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn stage_then_check_throughput_and_levers_in_cpu_mode() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    // The test build, stripped: the suite compiles the workspace once.
    let built = biobert_path().parent().unwrap().to_path_buf();
    let staged = run_ok(
        Command::new(workspace().join("bench/gpu/stage.sh"))
            .arg(&stage)
            .env("BIOBERT_BUILT", &built),
    );
    assert!(
        stderr(&staged).contains("MiB (limit 32)"),
        "{}",
        stderr(&staged)
    );
    for bin in ["biobert", "biobert-core", "corpus-tools"] {
        assert!(stage.join(bin).is_file(), "{bin} not staged");
    }
    let python = venv_python();
    let script = |name: &str, out: &str| {
        let mut cmd = Command::new(workspace().join("bench/gpu").join(name));
        cmd.arg("--cpu")
            .env("BIOBERT_BIN", &stage)
            .env("BIOBERT_PYTHON", &python)
            .env("BENCH_OUT", dir.path().join(out));
        cmd
    };

    let check = run_ok(&mut script("check.sh", "check"));
    let text = stdout(&check);
    let summary = text.rsplit("=== summary").next().unwrap();
    assert_eq!(summary.matches("passed").count(), 14, "{text}");
    assert!(!summary.contains("failed"), "{text}");
    let results = std::fs::read_to_string(dir.path().join("check/results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 14);

    let throughput = run_ok(&mut script("throughput.sh", "throughput"));
    let text = stdout(&throughput);
    let table = text.rsplit("\n\n").next().unwrap();
    // Both shapes, both of our runs and both HF runs measured (the venv's python imports
    // torch and transformers: launch/test.sh installs them).
    assert!(!table.contains("failed"), "{text}");
    for shape in [
        "| 64 x 8 | biobert |",
        "| 128 x 4 | biobert (bf16 residual) |",
        "| 128 x 4 | biobert (bf16 residual, unpad) |",
        "| 64 x 8 | HF compiled |",
    ] {
        assert!(table.contains(shape), "{shape} missing:\n{text}");
    }
    assert!(dir.path().join("throughput/table.md").is_file());
    assert!(
        text.contains("padding:"),
        "bench-loader's padding line:\n{text}"
    );

    let levers = run_ok(&mut script("levers.sh", "levers"));
    let text = stdout(&levers);
    let table = text.rsplit("\n\n").next().unwrap();
    for row in [
        "| QKV split + a step without host waits (always on) | 64 x 8 |",
        "| `train.unpad` | 128 x 4 |",
        "| `train.fused_elementwise` (over unpad) | 128 x 4 | +6-10% | not run (GPUs only) |",
        "| `train.cast_weights_once` (over unpad) | 128 x 4 | +0-1% |",
        "| `train.cast_weights_once`, 4 micro-batches a step | 128 x 4 x 4 | +1-2% |",
        "| GPU busy in 3 profiled steps (unpad) | 64 x 8 | 97% or more | n/a (CPU trace);",
        "| micro-batch 2 (unpad) | 128 x 2 |",
        "| micro-batch 8 (unpad) | 128 x 8 |",
        "| all levers against HF + torch.compile (recorded 4,092 seq/s) | 128 x",
        "| fine-tuning NER: shipped default | 128 x 32 | 8-12 ms a step |",
        "| fine-tuning NER: unpad | 128 x 32 | 10-20% less than the default |",
        "| fine-tuning NER: unpad, fused | 128 x 32 | a further 3-6% less | not run (GPUs only) |",
    ] {
        assert!(table.contains(row), "{row} missing:\n{text}");
    }
    // Each shape's profile, summarised by category.
    for seq in ["64", "128"] {
        let summary =
            std::fs::read_to_string(dir.path().join(format!("levers/trace-{seq}.txt"))).unwrap();
        assert!(summary.contains("GEMM"), "{summary}");
        assert!(dir
            .path()
            .join(format!("levers/trace-{seq}.json.gz"))
            .is_file());
    }
    assert!(dir.path().join("levers/levers.md").is_file());
}
