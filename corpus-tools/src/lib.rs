//! Corpus preparation for BioBERT: raw PubMed and PMC XML to text shards and to
//! Megatron-compatible token shards, and the shard format the trainer reads.

pub mod indexed_dataset;
