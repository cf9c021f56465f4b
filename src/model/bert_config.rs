//! BERT's `config.json`, the fields `BertForPreTraining` reads. Other keys that Hugging
//! Face writes (`transformers_version`, `architectures`, ...) are accepted and ignored on
//! import and written back on export.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: i64,
    #[serde(default = "default_types")]
    pub type_vocab_size: i64,
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: i64,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_positions() -> i64 {
    512
}
fn default_types() -> i64 {
    2
}
fn default_init() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// A BERT of 2 layers of width 16 over a 50-word vocabulary, for unit tests.
    #[cfg(test)]
    pub fn tiny_for_tests() -> BertConfig {
        let mut config = BertConfig::base(50);
        config.hidden_size = 16;
        config.num_hidden_layers = 2;
        config.num_attention_heads = 2;
        config.intermediate_size = 32;
        config.max_position_embeddings = 16;
        config
    }

    /// BERT-base (cased: vocabulary 28,996).
    pub fn base(vocab_size: i64) -> BertConfig {
        BertConfig {
            vocab_size,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: default_act(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: default_position_type(),
        }
    }

    pub fn read(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let config: BertConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a BERT config.json", path.display()))?;
        config
            .validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(config)
    }

    /// Sequences of `len` tokens (the setting `key`) need a position embedding each.
    pub fn check_sequence_length(&self, key: &str, len: usize) -> Result<()> {
        if len as i64 > self.max_position_embeddings {
            bail!(
                "{key} = {len} exceeds the model's max_position_embeddings {}",
                self.max_position_embeddings
            );
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        if self.hidden_size % self.num_attention_heads != 0 {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !matches!(
            self.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu"
        ) {
            bail!(
                "hidden_act {:?} is not supported (gelu, gelu_new, relu)",
                self.hidden_act
            );
        }
        if self.position_embedding_type != "absolute" {
            bail!(
                "position_embedding_type {:?}: only absolute positions are supported",
                self.position_embedding_type
            );
        }
        Ok(())
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// `config.json` as Hugging Face writes it for `BertForPreTraining`.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("plain fields serialise");
        let map = v.as_object_mut().expect("an object");
        map.insert(
            "architectures".into(),
            serde_json::json!(["BertForPreTraining"]),
        );
        map.insert("model_type".into(), "bert".into());
        map.insert("torch_dtype".into(), "float32".into());
        map.insert("use_cache".into(), true.into());
        v
    }
}
