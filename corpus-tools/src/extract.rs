//! Raw NCBI files to documents of sentences (and word pieces, when a tokenizer is given).
//!
//! Two passes over the inputs, each parallel over files with ordered output:
//! 1. the ledger pass reads every record's id (PMID, PMC id) and every `DeleteCitation`,
//!    in file-name order, to learn which record of each id is current (see `ledger`);
//! 2. the extraction pass reads the records again and keeps the current ones that pass
//!    the filters, split into sentences and tokenised in the worker threads.
//!
//! Documents come out in input order (PubMed files, then PMC files, each sorted by file
//! name; records in file order) whatever the thread count.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::filters::{Languages, LicenseDecision, LicenseFilter};
use crate::inputs::{self, Collection, Format, HashingReader, Input};
use crate::ledger::{Fate, Ledger};
use crate::ordered::{self, Message, Outbox};
use crate::pmc::{self, JatsReader, PmcArticle};
use crate::pubmed::{self, Citation, PubmedReader};
use crate::sentences;
use crate::tokenizer::WordPieceTokenizer;

const BATCH_DOCS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop at the first bad file.
    Fail,
    /// Keep the records read before the error, count the file, go on.
    Skip,
}

pub struct ExtractOptions {
    pub pubmed: Vec<PathBuf>,
    pub pmc: Vec<PathBuf>,
    pub languages: Languages,
    /// Prefix each structured-abstract section with its label (`METHODS: ...`).
    pub abstract_labels: bool,
    pub on_error: OnError,
    pub licenses: Option<LicenseFilter>,
    pub threads: usize,
}

/// Where a record sits: input file index (in `inputs` order) and record number in it.
pub type Position = (usize, u64);

#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub id: String,
    pub position: Position,
    pub sentences: Vec<String>,
    /// The word pieces of each sentence; empty when no tokenizer was given.
    pub tokens: Vec<Vec<u32>>,
    pub license: Option<String>,
}

/// Named counters: records seen, documents kept, and skips by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts(pub BTreeMap<String, u64>);

impl Counts {
    pub fn add(&mut self, key: &str, n: u64) {
        if n > 0 {
            *self.0.entry(key.to_string()).or_default() += n;
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &Counts) {
        for (k, v) in &other.0 {
            self.add(k, *v);
        }
    }
}

/// One input, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: String,
    pub collection: Collection,
    pub bytes: u64,
    pub sha256: String,
    /// Set when `--on-error skip` passed over an error in this file.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

pub struct FileSummary {
    pub source: SourceFile,
    pub counts: Counts,
}

/// Everything the two passes share: the inputs, the options, the ledgers.
pub struct Extraction {
    pub inputs: Vec<Input>,
    options: ExtractOptions,
    pubmed_ledger: Ledger,
    pmc_ledger: Ledger,
    /// The global record number of each input's first record.
    bases: Vec<u64>,
    pub raw_bytes_read: Arc<AtomicU64>,
    pub ledger_counts: Counts,
}

/// A record of either collection, as the readers hand them out.
enum Item {
    Pubmed(pubmed::Record),
    Pmc(PmcArticle),
}

impl Extraction {
    /// Finds the inputs; fails on a missing path or an empty folder.
    pub fn discover(options: ExtractOptions) -> Result<Extraction> {
        let mut inputs = inputs::discover(&options.pubmed, Collection::Pubmed)?;
        inputs.extend(inputs::discover(&options.pmc, Collection::Pmc)?);
        if inputs.is_empty() {
            anyhow::bail!("no input files: give --pubmed and/or --pmc files or folders");
        }
        Ok(Extraction {
            bases: vec![0; inputs.len()],
            inputs,
            options,
            pubmed_ledger: Ledger::default(),
            pmc_ledger: Ledger::default(),
            raw_bytes_read: Arc::new(AtomicU64::new(0)),
            ledger_counts: Counts::default(),
        })
    }

    pub fn total_input_bytes(&self) -> u64 {
        self.inputs.iter().map(|i| i.bytes).sum()
    }

    pub fn options(&self) -> &ExtractOptions {
        &self.options
    }

    /// Pass 1: which record of each id is current. Events are applied in input order.
    pub fn build_ledger(&mut self) -> Result<()> {
        let Extraction {
            inputs,
            options,
            pubmed_ledger,
            pmc_ledger,
            bases,
            ledger_counts,
            raw_bytes_read,
        } = self;
        let mut ordinal = 0u64;
        let mut current_file = None;
        ordered::run(
            inputs,
            options.threads,
            |_, input, out: &Outbox<'_, Vec<IdEvent>, ()>| {
                scan_ids(options, input, raw_bytes_read, out)
            },
            |file, message| {
                if current_file != Some(file) {
                    current_file = Some(file);
                    bases[file] = ordinal;
                }
                if let Message::Batch(events) = message {
                    for event in events {
                        match event {
                            IdEvent::Record(Collection::Pubmed, Some(id)) => {
                                pubmed_ledger.add(id, ordinal)
                            }
                            IdEvent::Record(Collection::Pmc, Some(id)) => {
                                pmc_ledger.add(id, ordinal)
                            }
                            IdEvent::Record(_, _) => {}
                            IdEvent::Delete(id) => {
                                pubmed_ledger.delete(id);
                                ledger_counts.add("pubmed_delete_pmids", 1);
                            }
                        }
                        if matches!(event, IdEvent::Record(..)) {
                            ordinal += 1;
                        }
                    }
                }
                Ok(())
            },
        )?;
        raw_bytes_read.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Pass 2: hands every kept document, in order, to `sink`; returns the per-file
    /// summaries. Records at or before `resume_after` are read for the counts but not
    /// split, tokenised or handed over.
    pub fn extract(
        &self,
        tokenizer: Option<&WordPieceTokenizer>,
        resume_after: Option<Position>,
        mut sink: impl FnMut(Doc) -> Result<()>,
    ) -> Result<Vec<FileSummary>> {
        let mut summaries = Vec::new();
        ordered::run(
            &self.inputs,
            self.options.threads,
            |i, input, out: &Outbox<'_, Vec<Doc>, FileSummary>| {
                self.extract_file(i, input, tokenizer, resume_after, out)
            },
            |_, message| match message {
                Message::Batch(docs) => docs.into_iter().try_for_each(&mut sink),
                Message::Done(summary) => {
                    summaries.push(summary);
                    Ok(())
                }
            },
        )?;
        Ok(summaries)
    }

    fn extract_file(
        &self,
        file: usize,
        input: &Input,
        tokenizer: Option<&WordPieceTokenizer>,
        resume_after: Option<Position>,
        out: &Outbox<'_, Vec<Doc>, FileSummary>,
    ) -> Result<FileSummary> {
        let mut counts = Counts::default();
        let mut batch = Vec::new();
        let mut ordinal = 0u64;
        let mut raw = inputs::open_raw(input)?;
        raw.count_into(self.raw_bytes_read.clone());
        let mut bad_members = BadMembers::new(self.options.on_error);
        let result = read_items_from(input, &mut raw, &mut bad_members, &mut |item| {
            let position = (file, ordinal);
            let global = self.bases[file] + ordinal;
            let doc = match item {
                Item::Pubmed(pubmed::Record::Citation(c)) => {
                    ordinal += 1;
                    self.pubmed_document(c, global, &mut counts)
                }
                Item::Pubmed(pubmed::Record::Delete(_)) => None,
                Item::Pubmed(pubmed::Record::Book) => {
                    counts.add("skipped_book", 1);
                    None
                }
                Item::Pmc(a) => {
                    ordinal += 1;
                    self.pmc_document(a, global, &mut counts)
                }
            };
            let Some((id, paragraphs, license)) = doc else {
                return Ok(true);
            };
            if resume_after.is_some_and(|r| position <= r) {
                return Ok(true);
            }
            let Some(doc) = make_doc(id, position, &paragraphs, license, tokenizer, &mut counts)?
            else {
                return Ok(true);
            };
            batch.push(doc);
            if batch.len() >= BATCH_DOCS {
                return Ok(out.send(std::mem::take(&mut batch)));
            }
            Ok(true)
        });
        let mut errors = Vec::new();
        if let Err(e) = result {
            let e = describe_error(input, e);
            if self.options.on_error == OnError::Fail {
                return Err(e);
            }
            counts.add("files_with_errors", 1);
            errors.push(format!("{e:#}"));
        }
        for (member, cause) in &bad_members.skipped {
            counts.add("skipped_tar_members_with_errors", 1);
            let line = format!("{}: {member}: {cause}", input.path.display());
            eprintln!("warning: {line} (the member is skipped: --on-error skip)");
            errors.push(line);
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        out.send(batch);
        let (bytes, sha256) = raw
            .finish()
            .with_context(|| format!("{}: reading", input.path.display()))?;
        Ok(FileSummary {
            source: SourceFile {
                path: input.path.display().to_string(),
                collection: input.collection,
                bytes,
                sha256,
                error,
            },
            counts,
        })
    }

    fn pubmed_document(
        &self,
        c: Citation,
        global: u64,
        counts: &mut Counts,
    ) -> Option<(String, Vec<String>, Option<String>)> {
        counts.add("pubmed_records", 1);
        if !c.sections.is_empty() {
            counts.add("pubmed_with_abstract", 1);
        }
        match self.pubmed_ledger.fate(c.pmid, global) {
            Fate::Deleted => return skip(counts, "skipped_deleted"),
            Fate::Superseded => return skip(counts, "skipped_superseded"),
            Fate::Current => {}
        }
        if c.sections.is_empty() {
            return skip(counts, "skipped_no_abstract");
        }
        if !self.options.languages.accepts(&c.languages) {
            return skip(counts, "skipped_language");
        }
        let mut paragraphs = vec![c.title];
        paragraphs.extend(c.sections.into_iter().map(|s| match s.label {
            Some(label) if self.options.abstract_labels => format!("{label}: {}", s.text),
            _ => s.text,
        }));
        Some((format!("PMID:{}", c.pmid), paragraphs, None))
    }

    fn pmc_document(
        &self,
        a: PmcArticle,
        global: u64,
        counts: &mut Counts,
    ) -> Option<(String, Vec<String>, Option<String>)> {
        counts.add("pmc_articles", 1);
        if !a.abstracts.is_empty() {
            counts.add("pmc_with_abstract", 1);
        }
        if a.pmcid.is_some()
            && self.pmc_ledger.fate(a.pmcid.unwrap_or(0), global) == Fate::Superseded
        {
            return skip(counts, "skipped_superseded");
        }
        let license = match &self.options.licenses {
            None => a.license.clone(),
            Some(filter) => match filter.decide(a.pmcid) {
                LicenseDecision::Keep(l) => Some(l),
                LicenseDecision::NotListed => return skip(counts, "skipped_not_in_file_list"),
                LicenseDecision::Unwanted(_) => return skip(counts, "skipped_license"),
                LicenseDecision::Retracted => return skip(counts, "skipped_retracted"),
            },
        };
        if !self
            .options
            .languages
            .accepts(std::slice::from_ref(&a.language))
        {
            return skip(counts, "skipped_language");
        }
        let paragraphs: Vec<String> = a.paragraphs().cloned().collect();
        Some((a.id, paragraphs, license))
    }

    pub fn ledger_deleted_ids(&self) -> u64 {
        self.pubmed_ledger.deleted_ids()
    }
}

fn skip<T>(counts: &mut Counts, reason: &str) -> Option<T> {
    counts.add(reason, 1);
    None
}

#[derive(Debug, Clone, Copy)]
enum IdEvent {
    Record(Collection, Option<u64>),
    Delete(u64),
}

/// Pass 1 for one input: its record ids and deletions, in order.
fn scan_ids(
    options: &ExtractOptions,
    input: &Input,
    progress: &Arc<AtomicU64>,
    out: &Outbox<'_, Vec<IdEvent>, ()>,
) -> Result<()> {
    let mut events = Vec::new();
    let mut raw = inputs::open_raw(input)?.without_hash();
    raw.count_into(progress.clone());
    let mut stopped = false;
    let mut bad_members = BadMembers::new(options.on_error);
    let result = scan_input_ids(input, &mut raw, &mut bad_members, &mut |event| {
        if stopped {
            return;
        }
        events.push(event);
        if events.len() >= 4096 {
            stopped = !out.send(std::mem::take(&mut events));
        }
    });
    // With --on-error skip, the records before the error count, as in pass 2.
    if let Err(e) = result {
        if options.on_error == OnError::Fail {
            return Err(describe_error(input, e));
        }
    }
    out.send(events);
    Ok(())
}

/// Pass 1's reading of one input: ids only, no record trees.
fn scan_input_ids<R: Read>(
    input: &Input,
    raw: &mut HashingReader<R>,
    bad_members: &mut BadMembers,
    visit: &mut dyn FnMut(IdEvent),
) -> Result<()> {
    match (input.format, input.collection) {
        (Format::Xml, Collection::Pubmed) => {
            pubmed::scan_ids(inputs::decompressed(raw, input.gzip), |e| {
                visit(match e {
                    pubmed::IdEvent::Citation(id) => IdEvent::Record(Collection::Pubmed, Some(id)),
                    pubmed::IdEvent::Delete(id) => IdEvent::Delete(id),
                })
            })
        }
        (Format::Xml, _) => pmc::scan_ids(inputs::decompressed(raw, input.gzip), |id| {
            visit(IdEvent::Record(Collection::Pmc, id))
        }),
        (Format::TarGz, _) => {
            let mut archive = tar::Archive::new(inputs::decompressed(raw, true));
            for entry in archive.entries().context("not a tar archive")? {
                let mut entry = entry.context("corrupt tar archive")?;
                let name = entry.path().map(|p| p.to_path_buf()).unwrap_or_default();
                let lower = name.to_string_lossy().to_lowercase();
                // A member's ids count only if the whole member reads, as in pass 2.
                let mut ids = Vec::new();
                let read = if lower.ends_with(".nxml") || lower.ends_with(".xml") {
                    pmc::scan_ids(std::io::BufReader::new(entry), |id| ids.push(id))
                } else if lower.ends_with(".txt") {
                    read_oa_member(&mut entry, &name).map(|a| ids.push(a.pmcid))
                } else {
                    Ok(())
                };
                if bad_members.read(&name, read)? {
                    for id in ids {
                        visit(IdEvent::Record(Collection::Pmc, id));
                    }
                }
            }
            Ok(())
        }
        (Format::OaText, _) => read_items_from(input, raw, bad_members, &mut |item| {
            if let Item::Pmc(a) = item {
                visit(IdEvent::Record(Collection::Pmc, a.pmcid));
            }
            Ok(true)
        }),
    }
}

/// A "sentence" longer than this is not prose (a table, a sequence dump, markup that lost
/// its breaks: one seen was 3.27 million tokens on one line). It is dropped and counted:
/// training would cut any sentence to max_seq_len (512 at most) anyway, and such lines
/// would only cost time.
pub const MAX_SENTENCE_TOKENS: usize = 4096;

/// A "sentence" of more text than this is dropped before it is tokenised: its word pieces
/// would be over `MAX_SENTENCE_TOKENS` for any prose (16 bytes a piece), and the
/// tokeniser's alignment tables take ~20 bytes per input byte, so one such line of many
/// megabytes would otherwise cost gigabytes.
pub const MAX_SENTENCE_BYTES: usize = 64 << 10;

/// A paragraph of more text than this is not prose (a data dump, a sequence listing, a
/// decompression bomb under the reader's limits): dropped and counted before the sentence
/// splitter, which holds 16 bytes per character of the paragraph it splits.
pub const MAX_PARAGRAPH_BYTES: usize = 1 << 20;

/// The word pieces of each sentence, keeping the sentences that have some and at most
/// `MAX_SENTENCE_TOKENS` (and `MAX_SENTENCE_BYTES`); returns the kept sentences, their
/// pieces, and how many were dropped for length.
pub fn tokenize_sentences(
    tokenizer: &WordPieceTokenizer,
    sentences: Vec<String>,
) -> Result<(Vec<String>, Vec<Vec<u32>>, u64)> {
    let (mut kept, mut tokens, mut long) = (Vec::with_capacity(sentences.len()), Vec::new(), 0);
    for s in sentences {
        if s.len() > MAX_SENTENCE_BYTES {
            long += 1;
            continue;
        }
        let ids = tokenizer.encode(&s)?;
        if ids.len() > MAX_SENTENCE_TOKENS {
            long += 1;
        } else if !ids.is_empty() {
            tokens.push(ids);
            kept.push(s);
        }
    }
    Ok((kept, tokens, long))
}

/// Sentences (and word pieces) of a kept record; `None` when nothing is left.
fn make_doc(
    id: String,
    position: Position,
    paragraphs: &[String],
    license: Option<String>,
    tokenizer: Option<&WordPieceTokenizer>,
    counts: &mut Counts,
) -> Result<Option<Doc>> {
    let oversized = paragraphs
        .iter()
        .filter(|p| p.len() > MAX_PARAGRAPH_BYTES)
        .count();
    if oversized > 0 {
        counts.add("skipped_paragraphs_over_1048576_bytes", oversized as u64);
    }
    let mut sentences: Vec<String> = paragraphs
        .iter()
        .filter(|p| !p.is_empty() && p.len() <= MAX_PARAGRAPH_BYTES)
        .flat_map(|p| sentences::split(p))
        .collect();
    let mut tokens = Vec::new();
    if let Some(t) = tokenizer {
        let (kept, ids, long) = tokenize_sentences(t, sentences)?;
        if long > 0 {
            counts.add("skipped_sentences_over_4096_tokens", long);
        }
        (sentences, tokens) = (kept, ids);
    }
    if sentences.is_empty() {
        counts.add("skipped_empty", 1);
        return Ok(None);
    }
    counts.add("documents", 1);
    counts.add("sentences", sentences.len() as u64);
    counts.add("tokens", tokens.iter().map(|t| t.len() as u64).sum());
    if let Some(l) = &license {
        counts.add(&format!("license:{l}"), 1);
    }
    Ok(Some(Doc {
        id,
        position,
        sentences,
        tokens,
        license,
    }))
}

/// Reads the records of one input, in order; `visit` returns false to stop early.
fn read_items_from<R: Read>(
    input: &Input,
    raw: &mut HashingReader<R>,
    bad_members: &mut BadMembers,
    visit: &mut dyn FnMut(Item) -> Result<bool>,
) -> Result<()> {
    match (input.format, input.collection) {
        (Format::Xml, Collection::Pubmed) => {
            let mut reader = PubmedReader::new(inputs::decompressed(raw, input.gzip));
            while let Some(record) = reader.next_record()? {
                if !visit(Item::Pubmed(record))? {
                    break;
                }
            }
        }
        (Format::Xml, _) => {
            read_jats(inputs::decompressed(raw, input.gzip), visit)?;
        }
        (Format::OaText, _) => {
            let mut text = String::new();
            inputs::decompressed(raw, input.gzip)
                .read_to_string(&mut text)
                .context("not UTF-8 text")?;
            visit(Item::Pmc(pmc::parse_oa_text(
                &text,
                &file_stem(&input.path),
            )?))?;
        }
        (Format::TarGz, _) => read_tar(raw, bad_members, visit)?,
    }
    Ok(())
}

fn read_jats(reader: impl BufRead, visit: &mut dyn FnMut(Item) -> Result<bool>) -> Result<bool> {
    let mut reader = JatsReader::new(reader);
    while let Some(article) = reader.next_article()? {
        if !visit(Item::Pmc(article))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A PMC bulk package, streamed: members are read in archive order, never unpacked. A
/// member's articles are held until the whole member has read (one article per member in
/// PMC's packages, under the readers' 64 MiB record limit), so that a member that fails
/// gives no articles, in both passes.
fn read_tar<R: Read>(
    raw: &mut HashingReader<R>,
    bad_members: &mut BadMembers,
    visit: &mut dyn FnMut(Item) -> Result<bool>,
) -> Result<()> {
    let mut archive = tar::Archive::new(inputs::decompressed(raw, true));
    for entry in archive.entries().context("not a tar archive")? {
        let mut entry = entry.context("corrupt tar archive")?;
        let name = entry.path().map(|p| p.to_path_buf()).unwrap_or_default();
        let lower = name.to_string_lossy().to_lowercase();
        let mut articles = Vec::new();
        let read = if lower.ends_with(".nxml") || lower.ends_with(".xml") {
            read_jats(std::io::BufReader::new(entry), &mut |item| {
                articles.push(item);
                Ok(true)
            })
            .map(|_| ())
        } else if lower.ends_with(".txt") {
            read_oa_member(&mut entry, &name).map(|a| articles.push(Item::Pmc(a)))
        } else {
            Ok(())
        };
        if !bad_members.read(&name, read)? {
            continue;
        }
        for article in articles {
            if !visit(article)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// One plain-text article of a package (PMC's OA text format).
fn read_oa_member(entry: &mut impl Read, name: &Path) -> Result<pmc::PmcArticle> {
    let mut text = String::new();
    entry.read_to_string(&mut text).context("not UTF-8 text")?;
    pmc::parse_oa_text(&text, &file_stem(name))
}

/// What happens to a package member that does not read: with `--on-error fail` the file
/// fails, naming the member; with `skip` the member is left out (both passes alike) and
/// named in the manifest, and the package goes on. A broken archive stream still ends the
/// file: the next member cannot be found.
struct BadMembers {
    on_error: OnError,
    /// (member, cause) of each member left out.
    skipped: Vec<(String, String)>,
}

impl BadMembers {
    fn new(on_error: OnError) -> BadMembers {
        BadMembers {
            on_error,
            skipped: Vec::new(),
        }
    }

    /// Whether the member read; an error under `fail`.
    fn read(&mut self, name: &Path, read: Result<()>) -> Result<bool> {
        let member = format!("member {}", name.display());
        match read {
            Ok(()) => Ok(true),
            Err(e) if self.on_error == OnError::Fail => Err(e.context(member)),
            Err(e) => {
                self.skipped.push((member, format!("{e:#}")));
                Ok(false)
            }
        }
    }
}

fn file_stem(path: &Path) -> String {
    path.file_name()
        .map(|f| {
            f.to_string_lossy()
                .split('.')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// One line: the file, the line when the error has a byte position, and the cause.
fn describe_error(input: &Input, error: anyhow::Error) -> anyhow::Error {
    let path = input.path.display();
    // A wrapper that prints its source and also reports it as the next cause (quick-xml's
    // I/O error) would say the same thing twice.
    let mut parts: Vec<String> = format!("{error:#}")
        .split(": ")
        .map(str::to_string)
        .collect();
    parts.dedup();
    let text = parts.join(": ");
    let explained = inputs::explain_io(&error).map_or(String::new(), |e| format!("{e}: "));
    // Counting lines means reading the file again, which a broken stream cannot do.
    let line = if explained.is_empty() {
        text.split("byte ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
            .and_then(|byte| inputs::line_of(input, byte))
    } else {
        None
    };
    match line {
        Some(line) => anyhow!("{path}: line {line}: {text}"),
        None => anyhow!("{path}: {explained}{text}"),
    }
}
