//! The BERT encoder and its heads, and the checkpoint formats it reads and writes
//! (Hugging Face safetensors and pytorch_model.bin, Google TensorFlow).

pub mod bert;
pub mod bert_config;
pub mod compute_weights;
pub mod flash_attention;
pub mod flops;
pub mod fused_elementwise;
pub mod hf_checkpoint;
pub mod hf_folder;
pub mod packing;
pub mod tf_checkpoint;
pub mod torch_pickle;
