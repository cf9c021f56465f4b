//! `biobert evaluate`: every BioBERT benchmark set found under `--data`, each fine-tuned
//! with its schedule (`biobert finetune`'s built-in configurations) for `--seeds` seeds,
//! into one table beside the published BioBERT v1.1 figures (markdown and JSON), added to
//! the model card of an exported folder. Each run is a `finetune` run folder under
//! `OUT/runs/<set>/seed-<n>/`: a rerun skips the finished ones and resumes a cut one from
//! its checkpoint. Under mpirun the runs are spread over the ranks, each rank fine-tuning
//! alone on its own device.
//!
//!   biobert evaluate --model biobert-v1.1-hf/ --data datasets/ --out eval/

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::commands::finetune::{self, CommonArgs, Task};
use crate::finetune::benchmark_sets::{self, BenchmarkSet, SetKind};
use crate::finetune::finetune_checkpoint;
use crate::finetune::reference_figures::Reference;
use crate::finetune::results_table::{self, FinishedRun};
use crate::parallel::distributed::Distributed;
use crate::runtime::stop_signal;
use crate::train::logger::format_duration;
use crate::train::model_card;

/// `--quick`: one epoch on the first sequences of each set (a smoke test of the path).
const QUICK_TRAIN: usize = 200;
const QUICK_EVAL: usize = 100;

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The BERT folder to evaluate: a pretraining checkpoint (or RUN/checkpoints/latest),
    /// an exported or Hugging Face folder (its model card gets the table), or a Google
    /// TensorFlow checkpoint folder.
    #[arg(long)]
    pub model: PathBuf,
    /// The benchmark sets, laid out as BioBERT's datasets: ner/<SET>/, re/<SET>/[<fold>/],
    /// qa/{train,test,golden}/.
    #[arg(long)]
    pub data: PathBuf,
    /// A new or empty folder, or one an earlier evaluate of the same model wrote (it
    /// resumes there).
    #[arg(long)]
    pub out: PathBuf,
    /// The sets to run, by id or the start of ids, comma-separated (ner, re/GAD, qa/4b);
    /// all found when not given.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Seeds per set (1, 2, ... N): the table gives their mean and standard deviation.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// One epoch on the first 200 training and 100 evaluation sequences of each set: a
    /// smoke test of the path, not figures to compare.
    #[arg(long)]
    pub quick: bool,
    /// dev: train on the training set and keep the epoch with the best development F1;
    /// paper: as BioBERT's scripts, train and development sets together for the fixed
    /// number of epochs.
    #[arg(long, value_enum, default_value = "dev")]
    pub protocol: Protocol,
    /// Overrides for every set's fine-tuning configuration, as key=value (repeatable).
    #[arg(long = "set")]
    pub set: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Dev,
    Paper,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Dev => "dev",
            Protocol::Paper => "paper",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Protocol::Dev => "dev (trained on the training set; the epoch with the best development F1 kept where a set has a development file, else the last)",
            Protocol::Paper => "paper (trained on the training and development sets together, the last epoch kept, as BioBERT's scripts)",
        }
    }
}

/// What OUT was made with (`OUT/evaluate.json`): a rerun into it must ask the same, or
/// the table would mix runs of different models or schedules. Sets and seeds may differ.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Plan {
    model: PathBuf,
    data: PathBuf,
    protocol: Protocol,
    quick: bool,
    overrides: Vec<String>,
}

/// One fine-tuning of the plan.
struct Run {
    set: BenchmarkSet,
    seed: u64,
    dir: PathBuf,
}

impl Run {
    fn finished(&self) -> bool {
        self.dir.join("metrics.json").is_file()
    }

    fn label(&self) -> String {
        format!("{} seed {}", self.set.id, self.seed)
    }
}

pub fn run(args: &EvaluateArgs) -> Result<()> {
    Distributed::run_job(|dist| evaluate(dist, args))
}

fn evaluate(dist: &Distributed, args: &EvaluateArgs) -> Result<()> {
    let plan = plan(args)?;
    let found = benchmark_sets::discover(&args.data)?;
    let sets = benchmark_sets::select(found.sets, &args.tasks)?;
    let runs: Vec<Run> = sets
        .iter()
        .flat_map(|set| {
            (1..=args.seeds).map(|seed| Run {
                set: set.clone(),
                seed,
                dir: args
                    .out
                    .join("runs")
                    .join(&set.id)
                    .join(format!("seed-{seed}")),
            })
        })
        .collect();
    // Each rank fine-tunes alone: a job of its own within this one.
    let solo = dist.solo();
    let mut assignment = String::new();
    if dist.is_root() {
        for line in &found.skipped {
            println!("evaluate: passed over {line}");
        }
        check_out(&args.out, &plan)?;
        assignment = schedule(dist, &solo, args, &runs)?;
        write_plan(&args.out, &plan)?;
    }
    let assignment: Vec<usize> = serde_json::from_str(&dist.broadcast_text(0, &assignment))
        .context("the runs' ranks from rank 0")?;
    let pending: Vec<&Run> = runs.iter().filter(|r| !r.finished()).collect();
    let mut stopped = false;
    for (i, run) in pending.iter().enumerate() {
        if assignment[i] != dist.rank {
            continue;
        }
        if stop_signal::requested() {
            stopped = true;
            break;
        }
        println!(
            "evaluate: rank {} runs {} ({} of {} to run) in {}",
            dist.rank,
            run.label(),
            i + 1,
            pending.len(),
            run.dir.display()
        );
        // A folder cut before its first checkpoint holds nothing to resume: it was ours,
        // it goes (finetune wants a new or empty folder, or one with a checkpoint).
        if run.dir.exists() && finetune_checkpoint::latest(&run.dir).is_none() {
            std::fs::remove_dir_all(&run.dir)
                .with_context(|| format!("clearing {}", run.dir.display()))?;
        }
        finetune::run_on(&solo, &finetune_task(args, run))?;
        if !run.finished() {
            stopped = true;
            break;
        }
    }
    dist.barrier_idle();
    let mut any_stopped = [f64::from(u8::from(stopped))];
    dist.all_reduce_max_f64(&mut any_stopped);
    if !dist.is_root() {
        return Ok(());
    }
    if any_stopped[0] > 0.0 {
        let left = runs.iter().filter(|r| !r.finished()).count();
        println!(
            "evaluate: stopped by a signal with {left} of {} runs unfinished; the same command resumes (finished runs are kept, a cut one continues from its checkpoint)",
            runs.len()
        );
        return Ok(());
    }
    report(args, &plan, &sets, &runs)
}

/// The plan of this command, its paths made absolute so a rerun from elsewhere matches.
fn plan(args: &EvaluateArgs) -> Result<Plan> {
    if args.seeds == 0 {
        bail!("--seeds 0: expected at least 1");
    }
    if let Some(s) = args
        .set
        .iter()
        .find(|s| s.trim_start().starts_with("seed="))
    {
        bail!("--set {s}: evaluate gives each run its seed (1 to --seeds); leave seed out");
    }
    let absolute = |p: &Path, flag: &str| {
        std::fs::canonicalize(p).with_context(|| format!("{flag} {}: not found", p.display()))
    };
    Ok(Plan {
        model: absolute(&args.model, "--model")?,
        data: absolute(&args.data, "--data")?,
        protocol: args.protocol,
        quick: args.quick,
        overrides: args.set.clone(),
    })
}

/// OUT must be new, empty, or an earlier evaluate's folder with the same plan.
fn check_out(out: &Path, plan: &Plan) -> Result<()> {
    let record = out.join("evaluate.json");
    if record.is_file() {
        let text = std::fs::read_to_string(&record)
            .with_context(|| format!("reading {}", record.display()))?;
        let earlier: Plan = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an evaluate plan", record.display()))?;
        if &earlier != plan {
            bail!(
                "--out {}: an evaluate with other options wrote it ({}); repeat them to resume, or choose a new folder for --out",
                out.display(),
                serde_json::to_string(&earlier)?
            );
        }
        return Ok(());
    }
    if let Ok(mut entries) = std::fs::read_dir(out) {
        if entries.next().is_some() {
            bail!(
                "--out {}: not empty and not an evaluate's folder (no evaluate.json); choose a new folder for --out",
                out.display()
            );
        }
    }
    Ok(())
}

fn write_plan(out: &Path, plan: &Plan) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let text = serde_json::to_string_pretty(plan)? + "\n";
    corpus_tools::atomic_file::write_bytes(&out.join("evaluate.json"), text.as_bytes())
}

/// The `finetune` command of one run: the set's files, the run folder, and the overrides
/// of the plan (the user's, then the protocol's, --quick's and the seed).
fn finetune_task(args: &EvaluateArgs, run: &Run) -> Task {
    let mut set = args.set.clone();
    if args.protocol == Protocol::Paper {
        set.extend(["select_on_dev=false".into(), "train_on_dev=true".into()]);
    }
    if args.quick {
        set.push("epochs=1".into());
    }
    set.push(format!("seed={}", run.seed));
    let common = CommonArgs {
        model: args.model.clone(),
        out: run.dir.clone(),
        config: None,
        set,
        limit_train: args.quick.then_some(QUICK_TRAIN),
        limit_eval: args.quick.then_some(QUICK_EVAL),
        resume: Some("auto".into()),
        save_logits: false,
    };
    match &run.set.kind {
        SetKind::Ner { dir } => Task::Ner {
            common,
            data: dir.clone(),
        },
        SetKind::Re { dir } => Task::Re {
            common,
            data: dir.clone(),
            format: None,
            any_labels: false,
        },
        SetKind::Qa {
            train,
            tests,
            golden,
        } => Task::Qa {
            common,
            train: train.clone(),
            test: tests.clone(),
            golden: golden.clone(),
        },
    }
}

/// On rank 0: reads and checks every set still to run (nothing is written before), times
/// a few training steps on this device, says what it expects, and gives each run a rank
/// (longest first, to the least loaded). Returns the ranks as JSON, in pending order.
fn schedule(
    dist: &Distributed,
    solo: &Distributed,
    args: &EvaluateArgs,
    runs: &[Run],
) -> Result<String> {
    let pending: Vec<&Run> = runs.iter().filter(|r| !r.finished()).collect();
    let mut costs = Vec::new();
    let mut per_set: Vec<(String, f64)> = Vec::new();
    for run in &pending {
        let cost = match per_set.iter().find(|(id, _)| *id == run.set.id) {
            Some((_, c)) => *c,
            None => {
                let c = training_token_equivalents(&finetune_task(args, run))?;
                per_set.push((run.set.id.clone(), c));
                c
            }
        };
        costs.push(cost);
    }
    let mut order: Vec<usize> = (0..pending.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]));
    let mut load = vec![0.0f64; dist.size];
    let mut ranks = vec![0usize; pending.len()];
    for i in order {
        let rank = (0..dist.size)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]))
            .unwrap_or(0);
        ranks[i] = rank;
        load[rank] += costs[i];
    }
    let finished = runs.len() - pending.len();
    let sets = runs.len() as u64 / args.seeds;
    let mut line = format!(
        "evaluate: {sets} set(s) x {} seed(s) = {} fine-tunings ({finished} finished before), on {} rank(s); protocol {}{}",
        args.seeds,
        runs.len(),
        dist.size,
        args.protocol.name(),
        if args.quick { ", --quick" } else { "" }
    );
    if let Some(first) = pending.first() {
        let rate = finetune::seconds_per_training_token(solo, &finetune_task(args, first), 3)?;
        let longest = load.iter().cloned().fold(0.0, f64::max);
        line += &format!(
            "; 3 training steps of {} on this device took {:.3} ms per token, so expect about {} (the busiest rank's share; evaluation counted as a third of training per token)",
            first.set.id,
            rate * 1e3,
            format_duration(longest * rate)
        );
    }
    println!("{line}");
    Ok(serde_json::to_string(&ranks)?)
}

/// A run's work in training tokens: the training set's tokens times the epochs, plus the
/// tokens it predicts (development set each epoch when it chooses the epoch, test sets
/// once) at a third of the cost (a forward pass of forward and backward).
fn training_token_equivalents(task: &Task) -> Result<f64> {
    let (_, config, data) = finetune::prepare(task)?;
    let tokens = |inputs: &[crate::finetune::trainer::Input]| -> f64 {
        inputs.iter().map(|i| i.input_ids.len() as f64).sum()
    };
    let mut predicted = tokens(&data.test.inputs);
    for split in &data.more_tests {
        predicted += tokens(&split.inputs);
    }
    if let Some(dev) = &data.dev {
        let passes = if config.select_on_dev {
            config.epochs + 1
        } else {
            1
        };
        predicted += passes as f64 * tokens(&dev.inputs);
    }
    Ok(tokens(&data.train) * config.epochs as f64 + predicted / 3.0)
}

/// The table from every run's metrics.json: OUT/results.md and OUT/results.json, printed,
/// and added to the model card when --model is a folder with one of ours.
fn report(args: &EvaluateArgs, plan: &Plan, sets: &[BenchmarkSet], runs: &[Run]) -> Result<()> {
    let reference = Reference::built_in()?;
    let finished = runs
        .iter()
        .map(|r| {
            let path = r.dir.join("metrics.json");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let metrics = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", path.display()))?;
            Ok(FinishedRun {
                set: r.set.id.clone(),
                seed: r.seed,
                metrics,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let ids: Vec<String> = sets.iter().map(|s| s.id.clone()).collect();
    let rows = results_table::rows(&ids, &finished, &reference)?;
    let heading = heading(args, plan);
    let table = results_table::markdown(&heading, &rows, &reference);
    let out = &args.out;
    corpus_tools::atomic_file::write_bytes(&out.join("results.md"), table.as_bytes())?;
    let record = json!({
        "model": plan.model,
        "data": plan.data,
        "protocol": plan.protocol,
        "quick": plan.quick,
        "overrides": plan.overrides,
        "rows": rows,
        "runs": runs.iter().map(|r| json!({
            "set": r.set.id, "seed": r.seed, "dir": r.dir,
        })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&record)? + "\n";
    corpus_tools::atomic_file::write_bytes(&out.join("results.json"), text.as_bytes())?;
    println!("{table}");
    println!(
        "evaluate: the table is in {} and {}; {}",
        out.join("results.md").display(),
        out.join("results.json").display(),
        add_to_card(&plan.model, &table)?
    );
    Ok(())
}

fn heading(args: &EvaluateArgs, plan: &Plan) -> Vec<String> {
    let schedule = if plan.quick {
        format!("--quick: 1 epoch on the first {QUICK_TRAIN} training and {QUICK_EVAL} evaluation sequences of each set; a smoke test of the path, not figures to compare")
    } else {
        "each task's built-in schedule (configs/finetune_ner.toml, finetune_re.toml, finetune_qa.toml: BioBERT's scripts' values)".to_string()
    };
    let overrides = if plan.overrides.is_empty() {
        "none".to_string()
    } else {
        plan.overrides
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        format!("# `biobert evaluate` of {}", plan.model.display()),
        String::new(),
        format!("- data: {}", plan.data.display()),
        format!("- protocol: {}", args.protocol.describe()),
        format!("- schedule: {schedule}"),
        format!("- overrides (--set): {overrides}"),
        format!(
            "- runs: {}/runs/<set>/seed-<n>/ (each a `biobert finetune` folder: metrics.json, predictions, config.toml, model/)",
            args.out.display()
        ),
        "- ours: test-set scores in percent, the mean over the seeds ± their standard deviation".to_string(),
    ]
}

/// Adds the table to `model`'s card when the card is one `biobert export` wrote; says
/// what it did.
fn add_to_card(model: &Path, table: &str) -> Result<String> {
    let card = model.join("README.md");
    let Ok(text) = std::fs::read_to_string(&card) else {
        return Ok(format!(
            "{} has no model card to add it to (biobert export writes one)",
            model.display()
        ));
    };
    match model_card::with_evaluation(&text, table) {
        Some(updated) => {
            corpus_tools::atomic_file::write_bytes(&card, updated.as_bytes())?;
            Ok(format!("added to the model card {}", card.display()))
        }
        None => Ok(format!(
            "{} is not a card biobert export wrote, so it is left as it is",
            card.display()
        )),
    }
}
