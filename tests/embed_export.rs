//! `biobert embed` against transformers' hidden states of a real pretrained BERT
//! (all-MiniLM-L6-v2, names without the `bert.` prefix), and `biobert export`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use tch::Tensor;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// `biobert embed` of the fixture sentences with all-MiniLM-L6-v2 and `args`, read back,
/// beside transformers' features of the same sentences.
fn embed_minilm(args: &[&str]) -> (HashMap<String, Tensor>, HashMap<String, Tensor>) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("features.safetensors");
    run_ok(
        biobert()
            .arg("embed")
            .arg("--model")
            .arg(minilm_dir())
            .arg("--input")
            .arg(fixtures().join("embed_sentences.txt"))
            .arg("--output")
            .arg(&out)
            .args(args),
    );
    (
        read(&out),
        read(&fixtures().join("embed_expected.safetensors")),
    )
}

#[test]
fn embed_matches_transformers_on_a_real_pretrained_bert() {
    let (ours, theirs) = embed_minilm(&["--layers=-1,3", "--device", "cpu", "--batch-size", "3"]);
    assert!(
        ours["input_ids"].equal(&theirs["input_ids"]),
        "tokenisation differs"
    );
    assert!(ours["offsets"].equal(&theirs["offsets"]));
    for layer in ["layer.-1", "layer.3"] {
        let d = (&ours[layer] - &theirs[layer])
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-4, "{layer} differs from transformers by {d}");
    }
}

/// bf16 matrix products stay within 1e-2 relative error (Frobenius) of transformers' fp32.
#[test]
fn embed_in_bf16_follows_fp32() {
    let (ours, theirs) = embed_minilm(&["--device", "cpu", "--precision", "bf16"]);
    let (a, b) = (&ours["layer.-1"], &theirs["layer.-1"]);
    let relative = (a - b).norm().double_value(&[]) / b.norm().double_value(&[]);
    assert!(relative < 1e-2, "bf16 vs fp32: relative error {relative}");
    // And it is really bf16: not bit-equal to fp32.
    assert!(relative > 1e-6, "bf16 output equals fp32 ({relative})");
}

#[test]
fn embed_writes_extract_features_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("features.jsonl");
    run_ok(
        biobert()
            .arg("embed")
            .arg("--model")
            .arg(fixtures().join("tiny_bert"))
            .arg("--input")
            .arg(fixtures().join("embed_sentences.txt"))
            .arg("--output")
            .arg(&out)
            .args(["--format", "jsonl", "--layers=-1,-2", "--device", "cpu"]),
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let first = &lines[0]["features"][0];
    assert_eq!(first["token"], "[CLS]");
    assert_eq!(first["layers"][0]["index"], -1);
    assert_eq!(first["layers"][1]["values"].as_array().unwrap().len(), 32);
}

#[test]
fn embed_rejects_bad_layers_and_missing_input() {
    let err = biobert()
        .arg("embed")
        .arg("--model")
        .arg(fixtures().join("tiny_bert"))
        .arg("--input")
        .arg(fixtures().join("embed_sentences.txt"))
        .args(["--output", "/tmp/never.safetensors", "--layers=5"])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(
        stderr(&err).contains("--layers: 5 is outside the model's 2 layers"),
        "{}",
        stderr(&err)
    );
    let err = biobert()
        .arg("embed")
        .arg("--model")
        .arg(fixtures().join("tiny_bert"))
        .args([
            "--input",
            "/nonexistent/sentences.txt",
            "--output",
            "/tmp/never.safetensors",
        ])
        .output()
        .unwrap();
    assert!(
        stderr(&err).contains("/nonexistent/sentences.txt: cannot open"),
        "{}",
        stderr(&err)
    );
}

#[test]
#[ignore = "end-to-end tier: launch/test.sh runs it (cargo test -- --ignored)"]
fn export_writes_a_hugging_face_folder_that_reloads_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    run_ok(
        biobert()
            .arg("export")
            .arg("--checkpoint")
            .arg(fixtures().join("tiny_bert"))
            .arg("--out")
            .arg(&out),
    );
    for f in [
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "README.md",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The model card: the hub's metadata, and no provenance for a folder not trained here.
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.starts_with("---\nlibrary_name: transformers\n"),
        "{card}"
    );
    assert!(card.contains("holds no training record of ours"), "{card}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForPreTraining");
    assert_eq!(config["model_type"], "bert");
    let (a, b) = (
        read(&fixtures().join("tiny_bert/model.safetensors")),
        read(&out.join("model.safetensors")),
    );
    assert_eq!(
        a.len(),
        b.len(),
        "the same tensors, tied decoder not duplicated"
    );
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name}");
    }
    // transformers itself loads the folder (model and tokenizer) to the fixture's logits.
    let check = std::process::Command::new(venv_python())
        .arg(fixtures().join("check_export.py"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success() && String::from_utf8_lossy(&check.stdout).starts_with("ok"),
        "check_export.py: {}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
    let again = biobert()
        .arg("export")
        .arg("--checkpoint")
        .arg(fixtures().join("tiny_bert"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        !again.status.success()
            && stderr(&again).contains("not empty; export writes into a new or empty folder")
    );
}
