//! `bench/cpu/step_time.sh`, the CPU step-time table of BENCHMARKS.md, run as written with
//! the tiny shape (SHAPE=tiny) on the test build: both layouts' rows, in the table it
//! prints and keeps.

mod common;

use std::process::Command;

use common::*;

#[test]
fn step_time_prints_a_row_per_layout() {
    let dir = tempfile::tempdir().unwrap();
    let bin = biobert_path().parent().unwrap().to_path_buf();
    let out = run_ok(
        Command::new(workspace().join("bench/cpu/step_time.sh"))
            .env("BIOBERT_BIN", &bin)
            .env("BENCH_OUT", dir.path())
            .env("SHAPE", "tiny")
            .env("SEQ", "64")
            .env("MICRO", "4")
            .env("STEPS", "2")
            .env("WARMUP", "1")
            .env("LABEL", "test")
            .env("PUBMED", shared_data().join("pubmed")),
    );
    let text = stdout(&out);
    for layout in ["| test | padded |", "| test | unpad |"] {
        assert!(text.contains(layout), "{layout} missing:\n{text}");
    }
    let table = std::fs::read_to_string(dir.path().join("table.md")).unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    // Each row: a positive step time over the two timed steps.
    for row in table.lines().skip(2) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells[3].parse::<f64>().unwrap() > 0.0, "{row}");
        assert_eq!(cells[5], "2", "{row}");
    }
}
