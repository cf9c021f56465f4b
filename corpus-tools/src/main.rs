//! `corpus-tools`: raw PubMed and PMC files to Megatron-compatible token shards.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use corpus_tools::extract::{ExtractOptions, OnError};
use corpus_tools::filters::{Languages, LicenseFilter};
use corpus_tools::pipeline::{self, OutputOptions};
use corpus_tools::shards::Target;
use corpus_tools::tokenizer::WordPieceTokenizer;
use corpus_tools::{inspect, verify, vocab};

#[derive(Parser)]
#[command(
    name = "corpus-tools",
    version,
    about = "Raw PubMed and PMC XML to BERT pretraining shards (Megatron indexed datasets)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw XML to text shards and token shards, with a manifest.
    Prepare {
        #[command(flatten)]
        raw: RawArgs,
        #[command(flatten)]
        tok: TokenizerArgs,
        /// Close a shard at the first document boundary at or past this many tokens.
        #[arg(long, default_value_t = 50_000_000)]
        target_tokens: u64,
    },
    /// Raw XML to text shards (one sentence a line, a blank line between documents).
    Extract {
        #[command(flatten)]
        raw: RawArgs,
        /// Close a shard at the first document boundary past this many megabytes of text.
        #[arg(long, default_value_t = 256)]
        shard_mb: u64,
    },
    /// Text shards (an `extract` folder) to token shards.
    Shard {
        /// The folder `extract` wrote.
        #[arg(long)]
        text: PathBuf,
        #[command(flatten)]
        tok: TokenizerArgs,
        /// Close a shard at the first document boundary at or past this many tokens.
        #[arg(long, default_value_t = 50_000_000)]
        target_tokens: u64,
        #[command(flatten)]
        out: OutArgs,
        /// Worker threads (default: every core).
        #[arg(long, default_value_t = default_threads())]
        threads: usize,
    },
    /// Train a WordPiece vocabulary on text shards and write vocab.txt.
    Vocab {
        /// Folders written by `extract` or `prepare`.
        #[arg(long, required = true, num_args = 1..)]
        text: Vec<PathBuf>,
        /// Vocabulary size (BERT-base cased has 28,996).
        #[arg(long, default_value_t = 28_996)]
        size: usize,
        /// Words seen fewer times than this are not learned.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Lower-case (an uncased vocabulary); cased by default, as BioBERT.
        #[arg(long)]
        lowercase: bool,
        /// The vocab.txt to write (a new file).
        #[arg(long)]
        out: PathBuf,
    },
    /// Counts, a length histogram and a few decoded documents.
    Inspect {
        /// A corpus folder (with manifest.json).
        dir: PathBuf,
        /// How many documents to show.
        #[arg(long, default_value_t = 2)]
        documents: usize,
    },
    /// Checksums and structural checks of every shard.
    Verify {
        /// A corpus folder (with manifest.json).
        dir: PathBuf,
    },
}

#[derive(Args)]
struct RawArgs {
    /// PubMed / MEDLINE files or folders (.xml, .xml.gz), applied in file-name order.
    #[arg(long, num_args = 1..)]
    pubmed: Vec<PathBuf>,
    /// PMC files or folders (.nxml, .xml, .txt, .tar.gz bulk packages).
    #[arg(long, num_args = 1..)]
    pmc: Vec<PathBuf>,
    /// Languages kept (`all`, or codes such as eng,fre).
    #[arg(long, default_value = "eng")]
    languages: String,
    /// Prefix structured-abstract sections with their label ("METHODS: ...").
    #[arg(long)]
    abstract_labels: bool,
    /// PMC bulk file list (CSV with AccessionID and License columns), for --license-subset.
    #[arg(long)]
    file_list: Option<PathBuf>,
    /// Licences kept: `commercial`, `noncommercial`, or a list such as "CC BY,CC0".
    #[arg(long, requires = "file_list")]
    license_subset: Option<String>,
    /// What a bad input file does: stop the run, or be skipped past the error.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    on_error: OnError,
    /// Worker threads (default: every core).
    #[arg(long, default_value_t = default_threads())]
    threads: usize,
    #[command(flatten)]
    out: OutArgs,
}

#[derive(Args)]
struct OutArgs {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Continue an interrupted run in --out, skipping its finished shards.
    #[arg(long)]
    resume: bool,
}

#[derive(Args)]
struct TokenizerArgs {
    /// A BERT vocab.txt, or a Hugging Face tokenizer.json.
    #[arg(long)]
    vocab: PathBuf,
    /// Lower-case the text (an uncased vocabulary); inferred from the vocabulary if unset.
    #[arg(long, conflicts_with = "cased")]
    lowercase: bool,
    /// Keep the case (a cased vocabulary).
    #[arg(long)]
    cased: bool,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl TokenizerArgs {
    fn load(&self) -> Result<WordPieceTokenizer> {
        let casing = match (self.lowercase, self.cased) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        WordPieceTokenizer::load(&self.vocab, casing)
    }
}

impl RawArgs {
    fn options(&self) -> Result<ExtractOptions> {
        if self.pubmed.is_empty() && self.pmc.is_empty() {
            bail!("give --pubmed and/or --pmc files or folders");
        }
        let licenses = match (&self.file_list, &self.license_subset) {
            (Some(csv), subset) => Some(LicenseFilter::load(
                csv,
                subset.as_deref().unwrap_or("commercial,noncommercial"),
            )?),
            (None, _) => None,
        };
        Ok(ExtractOptions {
            pubmed: self.pubmed.clone(),
            pmc: self.pmc.clone(),
            languages: Languages::parse(&self.languages)?,
            abstract_labels: self.abstract_labels,
            on_error: self.on_error,
            licenses,
            threads: self.threads.max(1),
        })
    }

    fn output(&self) -> OutputOptions {
        OutputOptions {
            out: self.out.out.clone(),
            resume: self.out.resume,
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Prepare {
            raw,
            tok,
            target_tokens,
        } => {
            let tokenizer = tok.load()?;
            pipeline::build_from_raw(
                "prepare",
                raw.options()?,
                Some(tokenizer),
                Target::Tokens(target_tokens.max(1)),
                &raw.output(),
            )?;
        }
        Command::Extract { raw, shard_mb } => {
            pipeline::build_from_raw(
                "extract",
                raw.options()?,
                None,
                Target::TextBytes(shard_mb.max(1) << 20),
                &raw.output(),
            )?;
        }
        Command::Shard {
            text,
            tok,
            target_tokens,
            out,
            threads,
        } => {
            let output = OutputOptions {
                out: out.out,
                resume: out.resume,
            };
            pipeline::shard_text(
                &text,
                tok.load()?,
                target_tokens.max(1),
                threads.max(1),
                &output,
            )?;
        }
        Command::Vocab {
            text,
            size,
            min_frequency,
            lowercase,
            out,
        } => {
            let n = vocab::train(
                &text,
                &vocab::VocabOptions {
                    size,
                    min_frequency,
                    lowercase,
                },
                &out,
            )?;
            println!("vocab: {n} entries written to {}", out.display());
        }
        Command::Inspect { dir, documents } => inspect::inspect(&dir, documents)?,
        Command::Verify { dir } => {
            let v = verify::verify(&dir)?;
            println!(
                "verify: {} ok: {} shard(s), {} documents, {} tokens",
                dir.display(),
                v.shards,
                v.documents,
                v.tokens
            );
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
