//! `biobert-core`: the trainer's command line. Users run it through `biobert`, the launcher
//! that finds libtorch first.

use clap::{Parser, Subcommand};

use biobert::commands::bench_allreduce::{self, BenchAllreduceArgs};
use biobert::commands::bench_loader::{self, BenchLoaderArgs};
use biobert::commands::doctor::{self, DoctorArgs};
use biobert::commands::embed::{self, EmbedArgs};
use biobert::commands::evaluate::{self, EvaluateArgs};
use biobert::commands::export::{self, ExportArgs};
use biobert::commands::finetune::{self, FinetuneArgs};
use biobert::commands::pretrain::{self, PretrainArgs};
use biobert::runtime::torch_runtime;

#[derive(Parser)]
#[command(
    name = "biobert",
    bin_name = "biobert",
    version,
    about = "BioBERT pretraining: BERT-base further pretrained on PubMed and PMC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check libtorch, CUDA devices, the MPI library, NCCL and threads on this host.
    Doctor(DoctorArgs),
    /// Hidden states of chosen layers for sentences (as Google's extract_features.py).
    Embed(EmbedArgs),
    /// Fine-tune on every BioBERT benchmark under a folder: one table beside the paper's.
    Evaluate(EvaluateArgs),
    /// Write a checkpoint as a Hugging Face BertForPreTraining folder.
    Export(ExportArgs),
    /// Fine-tune on a BioBERT benchmark: ner (tokens), re (relations) or qa (answers).
    Finetune(FinetuneArgs),
    /// Continue pretraining BERT on token shards (MLM + NSP), resumable.
    Pretrain(PretrainArgs),
    /// Bus bandwidth of the gradient all-reduce across message sizes (run under mpirun).
    BenchAllreduce(BenchAllreduceArgs),
    /// Throughput of the data loader alone (instances, masking, batches), no model.
    BenchLoader(BenchLoaderArgs),
}

fn main() {
    // Before any tch call: brings up libtorch's CUDA half on GPU hosts.
    torch_runtime::init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Doctor(args) => doctor::run(args),
        Command::Embed(args) => embed::run(args).map(|()| 0),
        Command::Evaluate(args) => evaluate::run(args).map(|()| 0),
        Command::Export(args) => export::run(args).map(|()| 0),
        Command::Pretrain(args) => pretrain::run(args).map(|()| 0),
        Command::Finetune(args) => finetune::run(args).map(|()| 0),
        Command::BenchAllreduce(args) => bench_allreduce::run(args).map(|()| 0),
        Command::BenchLoader(args) => bench_loader::run(args).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
