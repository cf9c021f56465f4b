//! Fine-tuning on BioBERT's downstream benchmarks: NER (token classification) and relation
//! extraction (sentence classification), with the metrics BioBERT reports.

pub mod bioasq;
pub mod class_metrics;
pub mod classifier;
pub mod entity_metrics;
pub mod finetune_checkpoint;
pub mod fit;
pub mod ner_data;
pub mod re_data;
pub mod squad_data;
pub mod squad_nbest;
pub mod task;
pub mod text_file;
pub mod trainer;
