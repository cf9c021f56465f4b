//! `corpus-tools inspect DIR`: the counts, a histogram of sentence and document lengths
//! (in tokens when the corpus has token shards, in words otherwise), and a few documents
//! decoded from the token shards (or read from the text shards).

use std::path::Path;

use anyhow::Result;

use crate::indexed_dataset::IndexedDataset;
use crate::manifest::Manifest;
use crate::text_shard;
use crate::tokenizer::WordPieceTokenizer;

/// Histogram bucket upper bounds.
const BOUNDS: &[u64] = &[8, 16, 32, 64, 128, 256, 512, 1024, 4096, u64::MAX];

pub fn inspect(dir: &Path, show_documents: usize) -> Result<()> {
    let m = Manifest::read(dir)?;
    println!("{} ({}, {})", dir.display(), m.command, m.tool);
    if let Some(t) = &m.tokenizer {
        println!(
            "tokenizer    {} ({} entries, {}, sha256 {}…)",
            t.file,
            t.vocab_size,
            if t.lowercase { "uncased" } else { "cased" },
            &t.sha256[..12]
        );
    }
    println!("documents    {}", m.totals.documents);
    println!("sentences    {}", m.totals.sentences);
    println!("tokens       {}", m.totals.tokens);
    println!("shards       {}", m.shards.len());
    println!("sources      {} files", m.sources.len());
    for (k, v) in &m.counts.0 {
        println!("  {k:<28} {v}");
    }
    let (sentence_lengths, document_lengths, unit) = lengths(dir, &m)?;
    print_histogram(&format!("sentence length ({unit})"), &sentence_lengths);
    print_histogram(&format!("document length ({unit})"), &document_lengths);
    show(dir, &m, show_documents)
}

fn lengths(dir: &Path, m: &Manifest) -> Result<(Vec<u64>, Vec<u64>, &'static str)> {
    let (mut sentences, mut documents) = (Vec::new(), Vec::new());
    if m.tokenizer.is_some() && m.shards.iter().all(|s| s.bin.is_some()) {
        for shard in &m.shards {
            let ds = IndexedDataset::open(&dir.join(&shard.name))?;
            for d in 0..ds.documents() {
                let range = ds.document(d);
                let lens: Vec<u64> = range.map(|i| ds.sequence_len(i) as u64).collect();
                documents.push(lens.iter().sum());
                sentences.extend(lens);
            }
        }
        return Ok((sentences, documents, "tokens"));
    }
    for shard in &m.shards {
        text_shard::for_each_document(&dir.join(format!("{}.txt.zst", shard.name)), |doc| {
            let lens: Vec<u64> = doc
                .iter()
                .map(|s| s.split_whitespace().count() as u64)
                .collect();
            documents.push(lens.iter().sum());
            sentences.extend(lens);
            Ok(())
        })?;
    }
    Ok((sentences, documents, "words"))
}

fn print_histogram(title: &str, values: &[u64]) {
    println!("{title}:");
    if values.is_empty() {
        println!("  (none)");
        return;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let pct = |p: usize| sorted[(sorted.len() - 1) * p / 100];
    println!(
        "  min {} median {} p95 {} max {}",
        sorted[0],
        pct(50),
        pct(95),
        sorted[sorted.len() - 1]
    );
    let mut lower = 0;
    for &upper in BOUNDS {
        let n = sorted.iter().filter(|&&v| v >= lower && v < upper).count();
        if n > 0 {
            let label = if upper == u64::MAX {
                format!("{lower}+")
            } else {
                format!("{lower}-{}", upper - 1)
            };
            let bar = "#".repeat((n * 50).div_ceil(sorted.len()));
            println!("  {label:>10} {n:>9} {bar}");
        }
        lower = upper;
    }
}

fn show(dir: &Path, m: &Manifest, count: usize) -> Result<()> {
    let Some(first) = m.shards.first() else {
        return Ok(());
    };
    if let (Some(t), Some(_)) = (&m.tokenizer, &first.bin) {
        let tokenizer = WordPieceTokenizer::load(&dir.join(&t.file), Some(t.lowercase))?;
        let ds = IndexedDataset::open(&dir.join(&first.name))?;
        let mut ids = Vec::new();
        for d in 0..ds.documents().min(count) {
            println!(
                "--- document {d} of {} (decoded from the token shard)",
                first.name
            );
            for i in ds.document(d) {
                ids.clear();
                ds.read_sequence(i, &mut ids);
                println!("{}", tokenizer.decode(&ids));
            }
        }
        return Ok(());
    }
    let mut shown = 0;
    text_shard::for_each_document(&dir.join(format!("{}.txt.zst", first.name)), |doc| {
        if shown < count {
            println!("--- document {shown} of {}", first.name);
            doc.iter().for_each(|s| println!("{s}"));
        }
        shown += 1;
        Ok(())
    })
}
