//! Corpus preparation for BioBERT: raw PubMed and PMC XML to text shards and to
//! Megatron-compatible token shards, and the shard format the trainer reads.

pub mod atomic_file;
pub mod extract;
pub mod filters;
pub mod indexed_dataset;
pub mod inputs;
pub mod inspect;
pub mod ledger;
pub mod manifest;
pub mod markup;
pub mod ordered;
pub mod pipeline;
pub mod pmc;
pub mod progress;
pub mod pubmed;
pub mod sentences;
pub mod shards;
pub mod text_shard;
pub mod tokenizer;
pub mod verify;
pub mod vocab;
pub mod wordpiece;
pub mod xml_tree;
