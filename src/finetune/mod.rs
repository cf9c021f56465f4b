//! Fine-tuning on BioBERT's downstream benchmarks: NER (token classification), relation
//! extraction (sentence classification) and question answering, with the metrics BioBERT
//! reports, and the table of `biobert evaluate`.

pub mod benchmark_sets;
pub mod bioasq;
pub mod class_metrics;
pub mod classifier;
pub mod entity_metrics;
pub mod finetune_checkpoint;
pub mod fit;
pub mod ner_data;
pub mod re_data;
pub mod reference_figures;
pub mod results_table;
pub mod squad_data;
pub mod squad_nbest;
pub mod task;
pub mod text_file;
pub mod trainer;
