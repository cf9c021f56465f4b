//! Question answering's windows and n-best answers against a port of Google's
//! `run_squad.py` (`tests/fixtures/squad_reference.py`, with transformers' tokenizers): on
//! slices of the shared BioASQ files, with windows short enough that contexts take several
//! and some answers fall across two, every window's pieces, segments, word map, max-context
//! flags and answer positions are the port's, and on the same random logits every
//! paragraph's n-best list is the port's (texts exactly, probabilities to 1e-12).

mod common;

use std::path::Path;

use biobert::finetune::squad_data::{self, SquadExample, Window, WindowConfig, NOT_CONTEXT};
use biobert::finetune::squad_nbest::{self, NbestConfig};
use common::*;
use corpus_tools::tokenizer::WordPieceTokenizer;
use serde_json::{json, Value};

const CONFIG: WindowConfig = WindowConfig {
    max_seq_len: 96,
    max_query_len: 24,
    doc_stride: 32,
};

fn reference(request: &Value) -> Value {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), request.to_string()).unwrap();
    let out = run_ok(
        std::process::Command::new(venv_python())
            .arg(workspace().join("tests/fixtures/squad_reference.py"))
            .arg(tmp.path()),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Deterministic logits in [-4, 4) for every position of every window.
fn logits(windows: &[Window]) -> Vec<Vec<[f32; 2]>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
    };
    windows
        .iter()
        .map(|w| w.input_ids.iter().map(|_| [next(), next()]).collect())
        .collect()
}

/// Examples `skip..skip + limit` of `file`.
fn check(file: &Path, training: bool, (skip, limit): (usize, usize)) {
    let vocab = minilm_dir().join("vocab.txt");
    let tokenizer = WordPieceTokenizer::load(&vocab, Some(true)).unwrap();
    let ids = (
        i64::from(tokenizer.token_id("[CLS]").unwrap()),
        i64::from(tokenizer.token_id("[SEP]").unwrap()),
    );
    let mut examples: Vec<SquadExample> = squad_data::read(file, training).unwrap();
    examples = examples.split_off(skip);
    examples.truncate(limit);
    let windows = squad_data::windows(&examples, &tokenizer, CONFIG, ids).unwrap();
    let logits = logits(&windows);
    let as_f64: Vec<Vec<[f64; 2]>> = logits
        .iter()
        .map(|w| {
            w.iter()
                .map(|p| [f64::from(p[0]), f64::from(p[1])])
                .collect()
        })
        .collect();
    let theirs = reference(&json!({
        "file": file, "training": training, "skip": skip, "limit": limit, "vocab": vocab,
        "lowercase": true, "max_seq_len": CONFIG.max_seq_len,
        "max_query_len": CONFIG.max_query_len, "doc_stride": CONFIG.doc_stride,
        "n_best": 20, "max_answer_len": 30, "logits": as_f64,
    }));
    let their_windows = theirs["windows"].as_array().unwrap();
    assert_eq!(windows.len(), their_windows.len(), "{}", file.display());
    assert!(
        windows.len() > 2 * examples.len(),
        "contexts should take several windows"
    );
    for (k, (ours, t)) in windows.iter().zip(their_windows).enumerate() {
        let word_of: Vec<i64> = ours
            .word_of
            .iter()
            .map(|&w| if w == NOT_CONTEXT { -1 } else { i64::from(w) })
            .collect();
        let mine = json!({
            "example": ours.example, "input_ids": ours.input_ids,
            "token_type_ids": ours.token_type_ids, "word_of": word_of,
            "max_context": ours.max_context, "start": ours.start, "end": ours.end,
        });
        assert_eq!(&mine, t, "{}: window {k}", file.display());
    }
    if training {
        // Some answers lie in no single window: every window of theirs points at [CLS].
        let unplaced = (0..examples.len())
            .filter(|&e| {
                windows
                    .iter()
                    .filter(|w| w.example == e)
                    .all(|w| w.start == 0)
            })
            .count();
        assert!(
            unplaced > 0,
            "no answer falls across windows at this window size"
        );
    }
    let config = NbestConfig {
        n_best: 20,
        max_answer_len: 30,
    };
    for (e, example) in examples.iter().enumerate() {
        let mine: Vec<(&Window, &[[f32; 2]])> = windows
            .iter()
            .zip(&logits)
            .filter(|(w, _)| w.example == e)
            .map(|(w, l)| (w, l.as_slice()))
            .collect();
        let ours = squad_nbest::nbest(example, &mine, &tokenizer, config).unwrap();
        let t = theirs["nbest"][&example.qa_id].as_array().unwrap();
        assert_eq!(ours.len(), t.len(), "{}", example.qa_id);
        for (o, t) in ours.iter().zip(t) {
            assert_eq!(o.text, t["text"].as_str().unwrap(), "{}", example.qa_id);
            assert_eq!(o.start_logit, t["start_logit"].as_f64().unwrap());
            assert_eq!(o.end_logit, t["end_logit"].as_f64().unwrap());
            let p = t["probability"].as_f64().unwrap();
            assert!(
                (o.probability - p).abs() < 1e-12,
                "{}: {} {p}",
                example.qa_id,
                o.probability
            );
        }
    }
}

#[test]
fn training_windows_and_nbest_equal_googles() {
    check(
        &shared_data().join("finetune/qa/train/BioASQ-train-factoid-5b.json"),
        true,
        // The file's last questions have whole abstracts as contexts.
        (2480, 60),
    );
}

#[test]
fn test_windows_and_nbest_equal_googles() {
    check(
        &shared_data().join("finetune/qa/test/BioASQ-test-factoid-4b-1.json"),
        false,
        (0, 25),
    );
}
