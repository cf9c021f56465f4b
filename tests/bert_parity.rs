//! Our BERT against Hugging Face transformers on the committed fixture
//! (tests/fixtures/make_bert_fixture.py): logits and loss within 1e-5, gradients within
//! 1e-4, fp32 on the CPU; and the same weights imported under other names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use biobert::model::bert::{Batch, Bert};
use biobert::model::bert_config::BertConfig;
use biobert::model::hf_checkpoint;
use biobert::model::packing::Packing;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join("tiny_bert_expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn load(dir: &Path) -> (VarStore, Bert) {
    let config = BertConfig::read(&dir.join("config.json")).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let bert = Bert::new(&vs.root(), &config);
    let (_, report) = hf_checkpoint::load_folder(&vs, dir).unwrap();
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "{}",
        report.summary()
    );
    (vs, bert)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn batch(e: &HashMap<String, Tensor>) -> (Tensor, Tensor, Tensor) {
    (
        e["input_ids"].shallow_clone(),
        e["token_type_ids"].shallow_clone(),
        e["attention_mask"].shallow_clone(),
    )
}

#[test]
fn logits_loss_and_hidden_states_match_transformers() {
    let e = expected();
    let (_vs, bert) = load(&fixtures().join("tiny_bert"));
    let (ids, types, mask) = batch(&e);
    let b = Batch {
        input_ids: &ids,
        token_type_ids: &types,
        attention_mask: Some(&mask),
        packing: None,
    };
    let encoded = tch::no_grad(|| bert.encode(&b, false, false));
    // Padded positions differ by design between implementations only in what they attend;
    // compare every position, as transformers also computes them all.
    assert!(max_diff(&encoded.sequence, &e["last_hidden_state"]) < 1e-5);
    let logits = tch::no_grad(|| bert.mlm_logits(&encoded.sequence));
    let d = max_diff(&logits, &e["prediction_logits"]);
    assert!(d < 1e-5, "MLM logits differ by {d}");
    let nsp = tch::no_grad(|| bert.nsp_logits(&encoded.pooled));
    assert!(max_diff(&nsp, &e["seq_relationship_logits"]) < 1e-5);
    let losses = tch::no_grad(|| {
        bert.pretraining_losses(&b, &e["labels"], &e["next_sentence_label"], false)
    });
    let d = (losses.total.double_value(&[]) - e["loss"].double_value(&[0])).abs();
    assert!(d < 1e-5, "loss differs by {d}");
}

#[test]
fn gradients_match_transformers() {
    let e = expected();
    let (vs, bert) = load(&fixtures().join("tiny_bert"));
    let (ids, types, mask) = batch(&e);
    let b = Batch {
        input_ids: &ids,
        token_type_ids: &types,
        attention_mask: Some(&mask),
        packing: None,
    };
    let losses = bert.pretraining_losses(&b, &e["labels"], &e["next_sentence_label"], false);
    losses.total.backward();
    let variables = vs.variables();
    let mut checked = 0;
    for (key, want) in &e {
        let Some(name) = key.strip_prefix("grad.") else {
            continue;
        };
        let got = variables[name].grad();
        let d = max_diff(&got, want);
        assert!(d < 1e-4, "gradient of {name} differs by {d}");
        checked += 1;
    }
    assert_eq!(checked, 6);
}

/// The fixture's padded batch run packed (`train.unpad`: the real tokens alone, attention
/// at each sequence's length) gives transformers' hidden states at every real position,
/// its NSP logits, loss and gradients.
#[test]
fn a_packed_batch_matches_transformers() {
    let e = expected();
    let (vs, bert) = load(&fixtures().join("tiny_bert"));
    let (ids, types, mask) = batch(&e);
    let width = mask.size()[1] as usize;
    let lengths: Vec<usize> = Vec::<i64>::try_from(mask.sum_dim_intlist(1, false, Kind::Int64))
        .unwrap()
        .into_iter()
        .map(|l| l as usize)
        .collect();
    assert!(
        lengths.iter().any(|&l| l < width),
        "the fixture has padding"
    );
    let packing = Packing::from_lengths(&lengths, width);
    let b = Batch {
        input_ids: &ids,
        token_type_ids: &types,
        attention_mask: Some(&mask),
        packing: Some(&packing),
    };
    let encoded = tch::no_grad(|| bert.encode(&b, false, false));
    let want = packing.unpad(&e["last_hidden_state"]);
    let d = max_diff(&encoded.sequence, &want);
    assert!(d < 1e-5, "hidden states differ by {d}");
    let nsp = tch::no_grad(|| bert.nsp_logits(&encoded.pooled));
    assert!(max_diff(&nsp, &e["seq_relationship_logits"]) < 1e-5);
    // The labelled positions as packed rows, and their targets.
    let labels = Vec::<i64>::try_from(e["labels"].view([-1])).unwrap();
    let (mut rows, mut targets, mut offset) = (Vec::new(), Vec::new(), 0);
    for (i, &len) in lengths.iter().enumerate() {
        for j in 0..len {
            if labels[i * width + j] != -100 {
                rows.push((offset + j) as i64);
                targets.push(labels[i * width + j]);
            }
        }
        offset += len;
    }
    let sums = bert.pretraining_sums_at(
        &b,
        &Tensor::from_slice(&rows),
        &Tensor::from_slice(&targets),
        &e["next_sentence_label"],
        false,
    );
    let loss = &sums.mlm / rows.len() as f64 + &sums.nsp / lengths.len() as f64;
    let d = (loss.double_value(&[]) - e["loss"].double_value(&[0])).abs();
    assert!(d < 1e-5, "loss differs by {d}");
    loss.backward();
    let variables = vs.variables();
    let mut checked = 0;
    for (key, want) in &e {
        if let Some(name) = key.strip_prefix("grad.") {
            let d = max_diff(&variables[name].grad(), want);
            assert!(d < 1e-4, "gradient of {name} differs by {d}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

/// The same weights without the `bert.` prefix, with `gamma`/`beta` LayerNorm names, a
/// `position_ids` buffer and explicit tied decoder tensors load to the same model.
#[test]
fn other_checkpoint_spellings_load_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let source = fixtures().join("tiny_bert");
    std::fs::copy(source.join("config.json"), tmp.path().join("config.json")).unwrap();
    let mut renamed: Vec<(String, Tensor)> = Vec::new();
    for (name, t) in Tensor::read_safetensors(source.join("model.safetensors")).unwrap() {
        if name == "bert.embeddings.word_embeddings.weight" {
            renamed.push(("cls.predictions.decoder.weight".into(), t.copy()));
        }
        let name = name
            .strip_prefix("bert.")
            .map(str::to_string)
            .unwrap_or(name);
        let name = name
            .replace("LayerNorm.weight", "LayerNorm.gamma")
            .replace("LayerNorm.bias", "LayerNorm.beta");
        renamed.push((name, t));
    }
    renamed.push((
        "embeddings.position_ids".into(),
        Tensor::arange(64, (Kind::Int64, Device::Cpu)).unsqueeze(0),
    ));
    Tensor::write_safetensors(&renamed, tmp.path().join("model.safetensors")).unwrap();
    let (vs_a, _) = load(&source);
    let (vs_b, _) = load(tmp.path());
    let (a, b) = (vs_a.variables(), vs_b.variables());
    for (name, t) in &a {
        assert!(max_diff(t, &b[name]) == 0.0, "{name}");
    }
}

#[test]
fn a_checkpoint_without_heads_keeps_bert_initialised_heads_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let source = fixtures().join("tiny_bert");
    std::fs::copy(source.join("config.json"), tmp.path().join("config.json")).unwrap();
    let encoder_only: Vec<(String, Tensor)> =
        Tensor::read_safetensors(source.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .filter(|(n, _)| n.starts_with("bert."))
            .collect();
    Tensor::write_safetensors(&encoder_only, tmp.path().join("model.safetensors")).unwrap();
    let config = BertConfig::read(&source.join("config.json")).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let _bert = Bert::new(&vs.root(), &config);
    let (_, report) = hf_checkpoint::load_folder(&vs, tmp.path()).unwrap();
    assert!(report
        .missing
        .contains(&"cls.seq_relationship.weight".to_string()));
    assert!(report
        .summary()
        .contains("missing (initialised): cls.predictions.bias"));
    let w = &vs.variables()["cls.predictions.transform.dense.weight"];
    let std = w.std(true).double_value(&[]);
    assert!(
        (std - 0.02).abs() < 0.005,
        "normal(0.02) init, got std {std}"
    );
}

#[test]
fn a_shape_mismatch_is_a_clear_error() {
    let mut config = BertConfig::read(&fixtures().join("tiny_bert/config.json")).unwrap();
    config.vocab_size = 100;
    let vs = VarStore::new(Device::Cpu);
    let _bert = Bert::new(&vs.root(), &config);
    let err = hf_checkpoint::load_folder(&vs, &fixtures().join("tiny_bert"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bert.embeddings.word_embeddings.weight has shape [99, 32], the model expects [100, 32]"), "{err}");
    assert!(err.contains("tiny_bert"), "names the checkpoint: {err}");
}

/// Google's TensorFlow format (tests/fixtures/make_tf_fixture.py wrote the same weights
/// with tensorflow-cpu): the import equals the Hugging Face one, Adam slots and
/// global_step skipped.
#[test]
fn tensorflow_checkpoint_imports_the_same_weights() {
    let (vs_hf, _) = load(&fixtures().join("tiny_bert"));
    let tf_dir = fixtures().join("tiny_bert_tf");
    let config = hf_checkpoint::read_config(&tf_dir).unwrap();
    let vs_tf = VarStore::new(Device::Cpu);
    let _bert = Bert::new(&vs_tf.root(), &config);
    let (_, report) = hf_checkpoint::load_folder(&vs_tf, &tf_dir).unwrap();
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "{}",
        report.summary()
    );
    let (a, b) = (vs_hf.variables(), vs_tf.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(
            t.equal(&b[name]),
            "{name} differs between the TF and HF imports"
        );
    }
}

/// The bf16 path (bf16 matrix products over fp32 weights) on the CPU: MLM logits within
/// 1e-2 relative error of fp32. The GPU run of the same check is recorded separately.
#[test]
fn bf16_forward_is_within_one_percent_of_fp32() {
    let e = expected();
    let (_vs, mut bert) = load(&fixtures().join("tiny_bert"));
    let (ids, types, mask) = batch(&e);
    let b = Batch {
        input_ids: &ids,
        token_type_ids: &types,
        attention_mask: Some(&mask),
        packing: None,
    };
    let fp32 = tch::no_grad(|| bert.mlm_logits(&bert.encode(&b, false, false).sequence));
    bert.compute = Kind::BFloat16;
    let bf16 = tch::no_grad(|| bert.mlm_logits(&bert.encode(&b, false, false).sequence));
    assert_eq!(bf16.kind(), Kind::Float, "logits come back in fp32");
    let rel = (&bf16 - &fp32).norm().double_value(&[]) / fp32.norm().double_value(&[]);
    assert!(rel < 1e-2 && rel > 0.0, "relative error {rel}");
    // Hidden states in bf16 between the products too (train.bf16_residual): the residual
    // stream rounds to 8 bits of mantissa at every layer, so the bound is looser.
    bert.activations = Kind::BFloat16;
    let encoded = tch::no_grad(|| bert.encode(&b, false, false));
    assert_eq!(encoded.sequence.kind(), Kind::BFloat16);
    let pure = tch::no_grad(|| bert.mlm_logits(&encoded.sequence));
    assert_eq!(pure.kind(), Kind::Float, "logits come back in fp32");
    let rel_pure = (&pure - &fp32).norm().double_value(&[]) / fp32.norm().double_value(&[]);
    assert!(
        rel_pure < 2e-2 && rel_pure > 0.0,
        "bf16 residual: relative error {rel_pure} (autocast-like: {rel})"
    );
}
