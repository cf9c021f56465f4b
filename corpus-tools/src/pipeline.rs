//! The three corpus-building commands: `prepare` (raw XML to text and token shards),
//! `extract` (raw XML to text shards) and `shard` (text shards to token shards). They
//! share the output folder's life cycle: refuse to overwrite a finished corpus, resume
//! an interrupted one, leave no partial shard behind, and write the manifest last.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{self, digest_file};
use crate::extract::{Counts, Doc, ExtractOptions, Extraction, FileSummary, SourceFile};
use crate::indexed_dataset::TokenDtype;
use crate::inputs::Collection;
use crate::manifest::{self, Manifest, Settings, ShardEntry, Totals, MANIFEST};
use crate::ordered::{self, Message, Outbox};
use crate::progress::{Counters, Progress};
use crate::shards::{ShardSink, Target};
use crate::text_shard;
use crate::tokenizer::WordPieceTokenizer;

const RUN_SPEC: &str = "run.json";

/// What an interrupted run must match to be resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunSpec {
    command: String,
    settings: Settings,
    tokenizer_sha256: Option<String>,
    inputs: Vec<(String, u64)>,
}

pub struct OutputOptions {
    pub out: PathBuf,
    pub resume: bool,
}

/// What every step of one corpus-building run knows.
struct Job<'a> {
    command: &'a str,
    tokenizer: Option<&'a WordPieceTokenizer>,
    out: &'a Path,
}

/// What a run wrote, for its manifest.
struct Outcome {
    settings: Settings,
    totals: Totals,
    counts: Counts,
    shards: Vec<ShardEntry>,
    sources: Vec<SourceFile>,
}

/// `prepare` and `extract`: raw files in; token shards too when a tokenizer is given.
pub fn build_from_raw(
    command: &str,
    options: ExtractOptions,
    tokenizer: Option<WordPieceTokenizer>,
    target: Target,
    output: &OutputOptions,
) -> Result<Manifest> {
    let settings = Settings {
        languages: options.languages.describe(),
        abstract_labels: options.abstract_labels,
        license_subset: options.licenses.as_ref().map(|l| l.describe()),
        on_error: format!("{:?}", options.on_error).to_lowercase(),
        target_tokens: match target {
            Target::Tokens(n) => Some(n),
            Target::TextBytes(_) => None,
        },
        target_text_bytes: match target {
            Target::TextBytes(n) => Some(n),
            Target::Tokens(_) => None,
        },
    };
    let mut extraction = Extraction::discover(options)?;
    let spec = RunSpec {
        command: command.into(),
        settings: settings.clone(),
        tokenizer_sha256: tokenizer.as_ref().map(|t| t.info.sha256.clone()),
        inputs: extraction
            .inputs
            .iter()
            .map(|i| (i.path.display().to_string(), i.bytes))
            .collect(),
    };
    let done = open_output(output, &spec)?;
    let fresh = done.is_empty();
    let job = Job {
        command,
        tokenizer: tokenizer.as_ref(),
        out: &output.out,
    };
    let result = extract_and_shard(&job, &mut extraction, settings, target, done);
    if result.is_err() && fresh {
        // Nothing finished: leave no folder that the next run would take for an
        // interrupted one.
        discard_unfinished(&output.out);
    }
    result
}

/// Removes what a failed run that finished no shard wrote: its run spec, the copy of the
/// vocabulary, temporaries, and the folder itself when that leaves it empty.
/// The two passes over the raw files (the record ledger, then the documents into shards)
/// and the manifest.
fn extract_and_shard(
    job: &Job,
    extraction: &mut Extraction,
    settings: Settings,
    target: Target,
    done: Vec<ShardEntry>,
) -> Result<Manifest> {
    copy_vocab(job.tokenizer, job.out)?;
    let counters = Arc::new(Counters {
        bytes: extraction.raw_bytes_read.clone(),
        ..Counters::default()
    });
    read_ids(job.command, extraction, &counters)?;
    let total = extraction.total_input_bytes();
    let dtype = job
        .tokenizer
        .map(|t| TokenDtype::for_vocab_size(t.vocab_size()));
    let mut sink = ShardSink::new(job.out, true, dtype, target)?;
    let resume_after = done.last().map(|e| e.end);
    sink.resume_after(done);
    let progress = Progress::start(job.command, total, counters.clone());
    let result = extraction.extract(job.tokenizer, resume_after, |doc| {
        count(&counters, &doc);
        sink.push(doc)
    });
    let elapsed = progress.finish();
    let summaries = match result {
        Ok(s) => s,
        Err(e) => {
            sink.abandon();
            return Err(e);
        }
    };
    if counters.documents.load(Ordering::Relaxed) == 0 && resume_after.is_none() {
        sink.abandon();
        bail!(
            "no document was kept from {} input file(s): every record was skipped or every file failed (see above)",
            extraction.inputs.len()
        );
    }
    let (shards, totals) = sink.finish()?;
    let mut counts = extraction.ledger_counts.clone();
    for s in &summaries {
        counts.merge(&s.counts);
    }
    let sources = summaries
        .into_iter()
        .map(|s: FileSummary| s.source)
        .collect();
    let outcome = Outcome {
        settings,
        totals,
        counts,
        shards,
        sources,
    };
    let manifest = finish(job, outcome)?;
    report(
        &manifest,
        elapsed.as_secs_f64(),
        counters.bytes.load(Ordering::Relaxed),
    );
    Ok(manifest)
}

/// The first pass (record ids, deletions, supersessions), on its own progress line so
/// that both passes' rates can be told apart.
fn read_ids(command: &str, extraction: &mut Extraction, counters: &Arc<Counters>) -> Result<()> {
    let total = extraction.total_input_bytes();
    eprintln!(
        "{command}: {} input files, {:.1} MB",
        extraction.inputs.len(),
        total as f64 / 1e6
    );
    let progress = Progress::start("reading ids", total, counters.clone());
    extraction.build_ledger()?;
    let seconds = progress.finish().as_secs_f64().max(1e-3);
    eprintln!(
        "reading ids: {:.1} s, {:.1} MB/s of input",
        seconds,
        total as f64 / 1e6 / seconds
    );
    Ok(())
}

fn discard_unfinished(out: &Path) {
    let _ = crate::atomic_file::remove_temporaries(out);
    if let Ok(entries) = std::fs::read_dir(out) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == RUN_SPEC
                || name.starts_with("vocab")
                || name.ends_with(".json") && name != MANIFEST
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(out);
}

/// `shard`: the text shards of an `extract` folder to token shards.
pub fn shard_text(
    text_dir: &Path,
    tokenizer: WordPieceTokenizer,
    target_tokens: u64,
    threads: usize,
    output: &OutputOptions,
) -> Result<Manifest> {
    let text_manifest = Manifest::read(text_dir)?;
    let texts = text_files(text_dir, &text_manifest)?;
    let settings = Settings {
        target_tokens: Some(target_tokens),
        target_text_bytes: None,
        ..text_manifest.settings.clone()
    };
    let spec = RunSpec {
        command: "shard".into(),
        settings: settings.clone(),
        tokenizer_sha256: Some(tokenizer.info.sha256.clone()),
        inputs: texts
            .iter()
            .map(|(p, e)| {
                (
                    p.display().to_string(),
                    e.text.as_ref().map_or(0, |t| t.bytes),
                )
            })
            .collect(),
    };
    let done = open_output(output, &spec)?;
    copy_vocab(Some(&tokenizer), &output.out)?;
    let dtype = TokenDtype::for_vocab_size(tokenizer.vocab_size());
    let mut sink = ShardSink::new(
        &output.out,
        false,
        Some(dtype),
        Target::Tokens(target_tokens),
    )?;
    let resume_after = done.last().map(|e| e.end);
    sink.resume_after(done);
    let counters = Arc::new(Counters::default());
    let total = texts
        .iter()
        .map(|(_, e)| e.text.as_ref().map_or(0, |t| t.bytes))
        .sum();
    let progress = Progress::start("shard", total, counters.clone());
    let result = tokenize_texts(
        &texts,
        threads,
        &tokenizer,
        resume_after,
        &counters,
        &mut sink,
    );
    let elapsed = progress.finish();
    if let Err(e) = result {
        sink.abandon();
        return Err(e);
    }
    let (shards, totals) = sink.finish()?;
    let sources = text_sources(&texts);
    let mut counts = text_manifest.counts.clone();
    counts.0.insert("tokens".into(), totals.tokens);
    let long = counters.long_sentences.load(Ordering::Relaxed);
    if long > 0 {
        counts
            .0
            .insert("skipped_sentences_over_4096_tokens".into(), long);
    }
    let job = Job {
        command: "shard",
        tokenizer: Some(&tokenizer),
        out: &output.out,
    };
    let outcome = Outcome {
        settings,
        totals,
        counts,
        shards,
        sources,
    };
    let manifest = finish(&job, outcome)?;
    report(&manifest, elapsed.as_secs_f64(), total);
    Ok(manifest)
}

/// Tokenises the text shards in parallel into `sink`, in file order.
fn tokenize_texts(
    texts: &[(PathBuf, &ShardEntry)],
    threads: usize,
    tokenizer: &WordPieceTokenizer,
    resume_after: Option<(usize, u64)>,
    counters: &Arc<Counters>,
    sink: &mut ShardSink,
) -> Result<()> {
    ordered::run(
        texts,
        threads,
        |file, (path, entry), out: &Outbox<'_, Vec<Doc>, SourceFile>| {
            tokenize_text_shard(file, path, entry, tokenizer, resume_after, counters, out)
        },
        |_, message| match message {
            Message::Batch(docs) => docs.into_iter().try_for_each(|doc| {
                count(counters, &doc);
                sink.push(doc)
            }),
            Message::Done(_) => Ok(()),
        },
    )
}

/// The text shards of a text corpus, by path.
fn text_files<'m>(
    text_dir: &Path,
    manifest: &'m Manifest,
) -> Result<Vec<(PathBuf, &'m ShardEntry)>> {
    manifest
        .shards
        .iter()
        .map(|e| {
            let digest = e.text.as_ref().with_context(|| {
                format!("{}: shard {} has no text file", text_dir.display(), e.name)
            })?;
            Ok((text_dir.join(&digest.file), e))
        })
        .collect()
}

/// The text shards as the token corpus' sources.
fn text_sources(texts: &[(PathBuf, &ShardEntry)]) -> Vec<SourceFile> {
    texts
        .iter()
        .map(|(path, e)| SourceFile {
            path: path.display().to_string(),
            collection: Collection::Text,
            bytes: e.text.as_ref().map_or(0, |t| t.bytes),
            sha256: e.text.as_ref().map_or(String::new(), |t| t.sha256.clone()),
            error: None,
        })
        .collect()
}

fn tokenize_text_shard(
    file: usize,
    path: &Path,
    entry: &ShardEntry,
    tokenizer: &WordPieceTokenizer,
    resume_after: Option<(usize, u64)>,
    counters: &Counters,
    out: &Outbox<'_, Vec<Doc>, SourceFile>,
) -> Result<SourceFile> {
    let digest = digest_file(path)?;
    if entry
        .text
        .as_ref()
        .is_some_and(|t| t.sha256 != digest.sha256)
    {
        bail!(
            "{}: checksum differs from the manifest (the file changed)",
            path.display()
        );
    }
    let mut batch = Vec::new();
    let mut ordinal = 0u64;
    text_shard::for_each_document(path, |sentences| {
        let position = (file, ordinal);
        ordinal += 1;
        counters.bytes.fetch_add(
            sentences.iter().map(|s| s.len() as u64 + 1).sum(),
            Ordering::Relaxed,
        );
        if resume_after.is_some_and(|r| position <= r) {
            return Ok(());
        }
        let (kept, tokens, long) = crate::extract::tokenize_sentences(tokenizer, sentences)?;
        counters.long_sentences.fetch_add(long, Ordering::Relaxed);
        if !kept.is_empty() {
            batch.push(Doc {
                id: format!("{}#{}", entry.name, position.1),
                position,
                sentences: kept,
                tokens,
                license: None,
            });
        }
        if batch.len() >= 256 {
            out.send(std::mem::take(&mut batch));
        }
        Ok(())
    })?;
    out.send(batch);
    Ok(SourceFile {
        path: path.display().to_string(),
        collection: Collection::Text,
        bytes: digest.bytes,
        sha256: digest.sha256,
        error: None,
    })
}

fn count(counters: &Counters, doc: &Doc) {
    counters.documents.fetch_add(1, Ordering::Relaxed);
    counters.tokens.fetch_add(
        doc.tokens.iter().map(|t| t.len() as u64).sum(),
        Ordering::Relaxed,
    );
}

/// Checks the output folder; returns the shards an interrupted run finished (on --resume).
fn open_output(output: &OutputOptions, spec: &RunSpec) -> Result<Vec<ShardEntry>> {
    let out = &output.out;
    if out.join(MANIFEST).exists() {
        bail!(
            "{}: already holds a finished corpus (manifest.json); choose another --out",
            out.display()
        );
    }
    let spec_path = out.join(RUN_SPEC);
    let done = ShardSink::completed(out)?;
    if output.resume && spec_path.exists() {
        let earlier: RunSpec = serde_json::from_str(&std::fs::read_to_string(&spec_path)?)
            .with_context(|| format!("{}: unreadable", spec_path.display()))?;
        if &earlier != spec {
            bail!("{}: the interrupted run used other inputs or settings; rerun without --resume into an empty folder", out.display());
        }
        eprintln!("resuming after {} finished shard(s)", done.len());
        return Ok(done);
    }
    if !done.is_empty() || spec_path.exists() {
        bail!(
            "{}: holds an interrupted run; add --resume to continue it, or choose an empty folder",
            out.display()
        );
    }
    // A folder holding anything else is not ours to write shards into.
    if out.is_dir()
        && std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{}: not empty; write the corpus into a new or empty folder",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    manifest::write_json(&spec_path, spec)?;
    Ok(Vec::new())
}

/// The corpus keeps its own copy of the vocabulary, so that it is self-describing.
fn copy_vocab(tokenizer: Option<&WordPieceTokenizer>, out: &Path) -> Result<()> {
    let Some(t) = tokenizer else { return Ok(()) };
    let dest = out.join(&t.info.file);
    let mut file = atomic_file::AtomicFile::create(&dest)?;
    let bytes = std::fs::read(&t.path).with_context(|| format!("reading {}", t.path.display()))?;
    std::io::Write::write_all(&mut file, &bytes)?;
    file.commit()?;
    Ok(())
}

/// Writes the manifest of what the run wrote, and removes the run's resume records.
fn finish(job: &Job, outcome: Outcome) -> Result<Manifest> {
    let Outcome {
        settings,
        totals,
        mut counts,
        shards,
        sources,
    } = outcome;
    let out = job.out;
    // Documents written by an earlier, resumed run count too.
    counts.0.insert("documents".into(), totals.documents);
    counts.0.insert("sentences".into(), totals.sentences);
    if totals.tokens > 0 {
        counts.0.insert("tokens".into(), totals.tokens);
    }
    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        tool: manifest::tool_version(),
        command: job.command.into(),
        tokenizer: job.tokenizer.map(|t| t.info.clone()),
        settings,
        totals,
        counts,
        shards,
        sources,
    };
    manifest.write(out)?;
    for shard in &manifest.shards {
        let _ = std::fs::remove_file(out.join(format!("{}.shard.json", shard.name)));
    }
    let _ = std::fs::remove_file(out.join(RUN_SPEC));
    Ok(manifest)
}

/// The end-of-run summary, on stdout.
fn report(m: &Manifest, seconds: f64, raw_bytes: u64) {
    let s = seconds.max(1e-3);
    println!(
        "{}: {} documents, {} sentences, {} tokens in {} shard(s), {:.1}s ({:.1} MB/s, {:.0} tokens/s)",
        m.command,
        m.totals.documents,
        m.totals.sentences,
        m.totals.tokens,
        m.shards.len(),
        seconds,
        raw_bytes as f64 / 1e6 / s,
        m.totals.tokens as f64 / s
    );
    let skipped: Vec<String> = m
        .counts
        .0
        .iter()
        .filter(|(k, _)| k.starts_with("skipped_") || k.as_str() == "files_with_errors")
        .map(|(k, v)| format!("{} {v}", k.trim_start_matches("skipped_").replace('_', " ")))
        .collect();
    if !skipped.is_empty() {
        println!("skipped: {}", skipped.join(", "));
    }
    let deleted = m.counts.get("pubmed_delete_pmids");
    if deleted > 0 {
        println!("deletions: {deleted} PMIDs in DeleteCitation records");
    }
    for s in m.sources.iter().filter(|s| s.error.is_some()) {
        println!("error skipped: {}", s.error.as_deref().unwrap_or(""));
    }
}
