//! Model FLOPs and model FLOPs utilisation (MFU), as the Megatron-LM and PaLM papers count
//! them: the useful arithmetic of a training step, divided by the time taken and by the
//! accelerator's dense peak.
//!
//! Per token: 6 FLOPs per weight of the encoder's matrices (2 forward, 4 backward), plus
//! 12 · layers · hidden · seq for attention's score and context products (forward and
//! backward). Embeddings, LayerNorm, softmax and the heads are left out (the MLM head runs
//! on the masked positions only, ~2% of BERT-base's arithmetic at seq 128). Tokens are the
//! real, unpadded tokens of the batch.

use crate::model::bert_config::BertConfig;

/// Training FLOPs per token at sequence length `seq`.
pub fn per_token(c: &BertConfig, seq: usize) -> f64 {
    let h = c.hidden_size as f64;
    let layers = c.num_hidden_layers as f64;
    let per_layer = 4.0 * h * h + 2.0 * h * c.intermediate_size as f64;
    6.0 * layers * per_layer + 12.0 * layers * h * seq as f64
}

/// The dense (no sparsity) peak in TFLOP/s of a GPU, by its CUDA name, for bf16 tensor-core
/// or plain fp32 arithmetic, from NVIDIA's data sheets; `None` when unknown.
pub fn peak_tflops(gpu_name: &str, bf16: bool) -> Option<f64> {
    let name = gpu_name.to_ascii_uppercase();
    let table: [(&str, f64, f64); 7] = [
        // (name contains, bf16 dense, fp32)
        ("H200", 989.4, 66.9),
        ("H100 PCIE", 756.0, 51.2),
        ("H100", 989.4, 66.9),
        ("A100", 312.0, 19.5),
        ("L40S", 362.1, 91.6),
        ("A10G", 70.0, 31.2),
        ("A10", 125.0, 31.2),
    ];
    table
        .iter()
        .find(|(key, _, _)| name.contains(key))
        .map(|&(_, b, f)| if bf16 { b } else { f })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_base_is_about_six_times_its_encoder_weights() {
        let base = BertConfig::base(28996);
        // 85M encoder matrix weights -> 510 MFLOP, plus 12*12*768*128 = 14 MFLOP.
        let f = per_token(&base, 128);
        assert!((f - (6.0 * 84_934_656.0 + 14_155_776.0)).abs() < 1.0, "{f}");
    }

    #[test]
    fn peaks_by_name() {
        assert_eq!(peak_tflops("NVIDIA H100 80GB HBM3", true), Some(989.4));
        assert_eq!(peak_tflops("NVIDIA H100 PCIe", true), Some(756.0));
        assert_eq!(peak_tflops("NVIDIA H200", false), Some(66.9));
        assert_eq!(peak_tflops("Tesla T4", true), None);
    }
}
