//! Corpus preparation for BioBERT: raw PubMed and PMC XML to text shards and to
//! Megatron-compatible token shards, and the shard format the trainer reads.

pub mod indexed_dataset;
pub mod inputs;
pub mod ledger;
pub mod markup;
pub mod pmc;
pub mod pubmed;
pub mod sentences;
pub mod tokenizer;
pub mod xml_tree;
