//! `corpus-tools verify DIR`: every shard the manifest lists is there, whole (size and
//! sha256), structurally sound (the Megatron index matches its `.bin`, the text shard
//! decodes), holds the counts the manifest says, and has no token id at or above the
//! vocabulary size.

use std::path::Path;

use anyhow::{bail, Result};

use crate::atomic_file::{digest_file, FileDigest};
use crate::indexed_dataset::IndexedDataset;
use crate::manifest::{Manifest, ShardEntry};
use crate::text_shard;

pub struct Verified {
    pub shards: usize,
    pub documents: u64,
    pub tokens: u64,
}

pub fn verify(dir: &Path) -> Result<Verified> {
    let manifest = Manifest::read(dir)?;
    let vocab_size = manifest.tokenizer.as_ref().map(|t| t.vocab_size as u32);
    let mut problems = Vec::new();
    for shard in &manifest.shards {
        if let Err(e) = verify_shard(dir, shard, vocab_size) {
            problems.push(format!("{}: {e:#}", shard.name));
        }
    }
    let documents: u64 = manifest.shards.iter().map(|s| s.documents).sum();
    let tokens: u64 = manifest.shards.iter().map(|s| s.tokens).sum();
    if documents == 0 {
        problems.push("the corpus holds no documents: nothing to train on".to_string());
    }
    if documents != manifest.totals.documents || tokens != manifest.totals.tokens {
        problems.push(format!(
            "totals say {} documents and {} tokens, the shards {documents} and {tokens}",
            manifest.totals.documents, manifest.totals.tokens
        ));
    }
    if let Some(t) = &manifest.tokenizer {
        match digest_file(&dir.join(&t.file)) {
            Ok(d) if d.sha256 == t.sha256 => {}
            Ok(_) => problems.push(format!(
                "{}: sha256 differs from the manifest's tokenizer",
                t.file
            )),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{}: {p}", dir.display());
        }
        bail!("{}: {} problem(s) found", dir.display(), problems.len());
    }
    Ok(Verified {
        shards: manifest.shards.len(),
        documents,
        tokens,
    })
}

fn verify_shard(dir: &Path, shard: &ShardEntry, vocab_size: Option<u32>) -> Result<()> {
    for digest in [&shard.text, &shard.bin, &shard.idx].into_iter().flatten() {
        check_digest(dir, digest)?;
    }
    if shard.text.is_some() {
        let (mut documents, mut sentences) = (0u64, 0u64);
        text_shard::for_each_document(&dir.join(format!("{}.txt.zst", shard.name)), |d| {
            documents += 1;
            sentences += d.len() as u64;
            Ok(())
        })?;
        if (documents, sentences) != (shard.documents, shard.sentences) {
            bail!(
                "text holds {documents} documents and {sentences} sentences, the manifest says {} and {}",
                shard.documents,
                shard.sentences
            );
        }
    }
    if shard.bin.is_some() {
        let ds = IndexedDataset::open(&dir.join(&shard.name))?;
        if (
            ds.documents() as u64,
            ds.sequences() as u64,
            ds.total_tokens(),
        ) != (shard.documents, shard.sentences, shard.tokens)
        {
            bail!(
                "token shard holds {} documents, {} sequences, {} tokens; the manifest says {}, {}, {}",
                ds.documents(),
                ds.sequences(),
                ds.total_tokens(),
                shard.documents,
                shard.sentences,
                shard.tokens
            );
        }
        if let Some(limit) = vocab_size {
            let mut ids = Vec::new();
            for i in 0..ds.sequences() {
                ids.clear();
                ds.read_sequence(i, &mut ids);
                if let Some(bad) = ids.iter().find(|&&id| id >= limit) {
                    bail!(
                        "sequence {i} holds token id {bad}, not below the vocabulary size {limit}"
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_digest(dir: &Path, expected: &FileDigest) -> Result<()> {
    let actual = digest_file(&dir.join(&expected.file))?;
    if actual.bytes != expected.bytes {
        bail!(
            "{}: {} bytes, the manifest says {}",
            expected.file,
            actual.bytes,
            expected.bytes
        );
    }
    if actual.sha256 != expected.sha256 {
        bail!("{}: sha256 differs from the manifest", expected.file);
    }
    Ok(())
}
