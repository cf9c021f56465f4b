//! `bench/cpu/step_time.sh`, the CPU step-time table of BENCHMARKS.md, run as written with
//! the tiny shape (SHAPE=tiny) on the test build: both layouts' rows, then the bf16
//! accumulated rows with and without the weights cast once, in the table it prints and
//! keeps.

mod common;

use std::process::Command;

use common::*;

#[test]
fn step_time_prints_a_row_per_layout() {
    let dir = tempfile::tempdir().unwrap();
    let bin = biobert_path().parent().unwrap().to_path_buf();
    let step_time = |extra: &[(&str, &str)]| {
        let mut cmd = Command::new(workspace().join("bench/cpu/step_time.sh"));
        cmd.env("BIOBERT_BIN", &bin)
            .env("BENCH_OUT", dir.path())
            .env("SHAPE", "tiny")
            .env("SEQ", "64")
            .env("MICRO", "4")
            .env("STEPS", "2")
            .env("WARMUP", "1")
            .env("LABEL", "test")
            .env("PUBMED", shared_data().join("pubmed"));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        stdout(&run_ok(&mut cmd))
    };
    let text = step_time(&[]);
    for layout in [
        "| test | padded | fp32 x 1 |",
        "| test | unpad | fp32 x 1 |",
    ] {
        assert!(text.contains(layout), "{layout} missing:\n{text}");
    }
    let text = step_time(&[
        ("PRECISION", "bf16"),
        ("ACCUM", "2"),
        ("LAYOUTS", "unpad unpad-once"),
    ]);
    for layout in [
        "| test | unpad | bf16 x 2 |",
        "| test | unpad-once | bf16 x 2 |",
    ] {
        assert!(text.contains(layout), "{layout} missing:\n{text}");
    }
    let table = std::fs::read_to_string(dir.path().join("table.md")).unwrap();
    assert_eq!(table.lines().count(), 6, "{table}");
    // Each row: a positive step time over the two timed steps.
    for row in table.lines().skip(2) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells[4].parse::<f64>().unwrap() > 0.0, "{row}");
        assert_eq!(cells[6], "2", "{row}");
    }
}
