//! BERT with a classification head: `BertForTokenClassification` (a label per token, from
//! the last hidden states), `BertForSequenceClassification` (a label per sequence, from
//! the pooled [CLS]) or `BertForQuestionAnswering` (a start and an end logit per token),
//! with Hugging Face's parameter names (`bert.*`, `classifier.*`, `qa_outputs.*`), so a
//! saved folder loads with `from_pretrained` and gives the same logits.

use std::path::Path;

use anyhow::{Context, Result};
use tch::nn::{self, Init, Module};
use tch::{Device, Kind, Tensor};

use crate::model::bert::{Batch, Bert};
use crate::model::bert_config::BertConfig;
use crate::model::packing::Packing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Token,
    Sequence,
    /// Extractive question answering: two outputs per token, the start and end logits.
    Span,
}

impl Head {
    pub fn architecture(self) -> &'static str {
        match self {
            Head::Token => "BertForTokenClassification",
            Head::Sequence => "BertForSequenceClassification",
            Head::Span => "BertForQuestionAnswering",
        }
    }

    /// The head's name in Hugging Face's folders.
    fn name(self) -> &'static str {
        match self {
            Head::Span => "qa_outputs",
            _ => "classifier",
        }
    }

    /// Whether its logits are per token (the last hidden states) rather than per sequence.
    pub fn per_token(self) -> bool {
        self != Head::Sequence
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
            root / head.name(),
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

    /// Logits: [batch, seq, labels] for tokens, [batch, labels] for sequences (fp32). With
    /// `packing` the encoder runs on the real tokens alone (`train.unpad` in pretraining);
    /// token logits come back in the padded layout, zeros at the padding.
    pub fn logits(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        packing: Option<&Packing>,
        train: bool,
    ) -> Tensor {
        let zeros;
        let token_type_ids = match token_type_ids {
            Some(t) => t,
            None => {
                zeros = input_ids.zeros_like();
                &zeros
            }
        };
        let encoded = self.bert.encode(
            &Batch {
                input_ids,
                token_type_ids,
                attention_mask: if packing.is_some() {
                    None
                } else {
                    attention_mask
                },
                packing,
            },
            train,
            false,
        );
        let features = match self.head {
            Head::Token | Head::Span => encoded.sequence,
            Head::Sequence => encoded.pooled,
        };
        // Hugging Face's question-answering head has no dropout before it.
        let dropout = if self.head == Head::Span {
            0.0
        } else {
            self.dropout
        };
        let logits = self
            .classifier
            .forward(&features.to_kind(Kind::Float).dropout(dropout, train));
        match (self.head.per_token(), packing) {
            (true, Some(packing)) => packing.pad(&logits),
            _ => logits,
        }
    }
}

/// The parameters a Hugging Face classification folder holds: the encoder (without the
/// pretraining heads `cls.*`; a token classifier has no pooler) and the head.
pub fn exported_variables(vs: &nn::VarStore, head: Head) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| {
            (name.starts_with("bert.") || name.starts_with(&format!("{}.", head.name())))
                && !(head.per_token() && name.starts_with("bert.pooler."))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(head: Head) -> (nn::VarStore, Classifier) {
        tch::manual_seed(11);
        let config = BertConfig::tiny_for_tests();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Classifier::new(&vs.root(), &config, head, 3);
        (vs, model)
    }

    /// Packed (fine-tuning's `unpad`) and padded batches give the same logits at the real
    /// positions, and the same loss gradients, for both heads.
    #[test]
    fn packed_batches_give_the_padded_logits_and_gradients() {
        let lengths = [9usize, 4, 7];
        let width = 9;
        let ids = Tensor::randint(50, [3, width as i64], (Kind::Int64, Device::Cpu));
        let mut mask = vec![0i64; 3 * width];
        for (r, &len) in lengths.iter().enumerate() {
            mask[r * width..r * width + len].fill(1);
        }
        let mask = Tensor::from_slice(&mask).view([3, width as i64]);
        let packing = Packing::from_lengths(&lengths, width);
        for head in [Head::Token, Head::Sequence, Head::Span] {
            let (vs, model) = tiny(head);
            let run = |packing: Option<&Packing>| {
                vs.variables().values().for_each(|v| {
                    let mut g = v.grad();
                    if g.defined() {
                        let _ = g.zero_();
                    }
                });
                let logits = model.logits(&ids, None, Some(&mask), packing, false);
                let weight = match head {
                    Head::Token | Head::Span => mask.unsqueeze(-1).to_kind(Kind::Float),
                    Head::Sequence => logits.ones_like(),
                };
                (&logits * &weight).square().sum(Kind::Float).backward();
                // The token head leaves the pooler without a gradient.
                let named: std::collections::BTreeMap<_, _> = vs.variables().into_iter().collect();
                let grads: Vec<Tensor> = named
                    .values()
                    .map(|v| v.grad())
                    .filter(|g| g.defined())
                    .map(|g| g.copy())
                    .collect();
                (logits * weight, grads)
            };
            let (padded, padded_grads) = run(None);
            let (packed, packed_grads) = run(Some(&packing));
            assert_eq!(packed.size(), padded.size(), "{head:?}");
            let diff = (&packed - &padded).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{head:?}: logits differ by {diff}");
            for (a, b) in padded_grads.iter().zip(&packed_grads) {
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff < 1e-4, "{head:?}: gradients differ by {diff}");
            }
        }
    }
}
