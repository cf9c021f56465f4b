//! BERT with a classification head: `BertForTokenClassification` (a label per token, from
//! the last hidden states) or `BertForSequenceClassification` (a label per sequence, from
//! the pooled [CLS]), with Hugging Face's parameter names (`bert.*`, `classifier.*`), so a
//! saved folder loads with `from_pretrained` and gives the same logits.

use std::path::Path;

use anyhow::{Context, Result};
use tch::nn::{self, Init, Module};
use tch::{Device, Kind, Tensor};

use crate::model::bert::{Batch, Bert};
use crate::model::bert_config::BertConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Token,
    Sequence,
}

impl Head {
    pub fn architecture(self) -> &'static str {
        match self {
            Head::Token => "BertForTokenClassification",
            Head::Sequence => "BertForSequenceClassification",
        }
    }
}

pub struct Classifier {
    pub bert: Bert,
    pub head: Head,
    classifier: nn::Linear,
    dropout: f64,
}

impl Classifier {
    /// The encoder and a new head of `labels` outputs, initialised as Hugging Face does
    /// (normal(0, initializer_range), zero bias). `dropout` before the head: Hugging Face
    /// uses the model's hidden_dropout_prob.
    pub fn new(root: &nn::Path, config: &BertConfig, head: Head, labels: usize) -> Classifier {
        let bert = Bert::new(root, config);
        let classifier = nn::linear(
            root / "classifier",
            config.hidden_size,
            labels as i64,
            nn::LinearConfig {
                ws_init: Init::Randn {
                    mean: 0.0,
                    stdev: config.initializer_range,
                },
                bs_init: Some(Init::Const(0.0)),
                bias: true,
            },
        );
        Classifier {
            bert,
            head,
            classifier,
            dropout: config.hidden_dropout_prob,
        }
    }

    /// Logits: [batch, seq, labels] for tokens, [batch, labels] for sequences (fp32).
    pub fn logits(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let token_type_ids = input_ids.zeros_like();
        let encoded = self.bert.encode(
            &Batch {
                input_ids,
                token_type_ids: &token_type_ids,
                attention_mask,
                packing: None,
            },
            train,
            false,
        );
        let features = match self.head {
            Head::Token => encoded.sequence,
            Head::Sequence => encoded.pooled,
        };
        self.classifier
            .forward(&features.to_kind(Kind::Float).dropout(self.dropout, train))
    }
}

/// The parameters a Hugging Face classification folder holds: the encoder (without the
/// pretraining heads `cls.*`; a token classifier has no pooler) and the head.
pub fn exported_variables(vs: &nn::VarStore, head: Head) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| {
            (name.starts_with("bert.") || name.starts_with("classifier."))
                && !(head == Head::Token && name.starts_with("bert.pooler."))
        })
        .map(|(name, t)| (name, t.to_device(Device::Cpu).to_kind(Kind::Float)))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Writes `model.safetensors` and a `config.json` with the architecture and the labels
/// (`id2label`, `label2id`) into `dir`.
pub fn write_hf_classifier(
    dir: &Path,
    vs: &nn::VarStore,
    config: &BertConfig,
    head: Head,
    labels: &[String],
) -> Result<()> {
    let named = exported_variables(vs, head);
    corpus_tools::atomic_file::write_via(&dir.join("model.safetensors"), |tmp| {
        Tensor::write_safetensors(&named, tmp).with_context(|| format!("writing {}", tmp.display()))
    })?;
    let mut json = config.to_hf_json();
    json["architectures"] = serde_json::json!([head.architecture()]);
    json["id2label"] = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    json["label2id"] = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), serde_json::json!(i)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    crate::model::hf_folder::write_json(&dir.join("config.json"), &json)
}
