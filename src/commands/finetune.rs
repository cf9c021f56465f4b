//! `biobert finetune ner|re`: fine-tunes a BERT folder (a pretraining checkpoint, an
//! exported or Hugging Face folder, or a Google TensorFlow checkpoint) on a BioBERT
//! benchmark set, keeps the epoch with the best development F1, and writes the test
//! metrics, the predictions and a Hugging Face classification folder.
//!
//!   biobert finetune ner --model runs/biobert/checkpoints/latest --data NCBI-disease/ --out ft/ncbi
//!   biobert finetune re --model biobert-v1.1-hf/ --data GAD/1/ --out ft/gad1

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use corpus_tools::tokenizer::WordPieceTokenizer;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::commands::finetune_qa::{self, QaSettings};
use crate::config::finetune_config::FinetuneConfig;
use crate::finetune::classifier::{self, Classifier, Head};
use crate::finetune::finetune_checkpoint;
use crate::finetune::fit::{self, Fitted};
use crate::finetune::ner_data::{self, Window};
use crate::finetune::re_data::{self, Format};
use crate::finetune::task::{evaluate, Records, Split, TaskData};
use crate::finetune::trainer::{Input, Trainer};
use crate::model::bert_config::BertConfig;
use crate::model::fused_elementwise::FusedKernels;
use crate::model::hf_checkpoint;
use crate::model::hf_folder::{
    encode, follow_latest, lowercase_setting, special_id, write_json, write_tokenizer_files,
};
use crate::parallel::distributed::Distributed;
use crate::runtime::device_selection;

const NER_DEFAULTS: &str = include_str!("../../configs/finetune_ner.toml");
const RE_DEFAULTS: &str = include_str!("../../configs/finetune_re.toml");
const QA_DEFAULTS: &str = include_str!("../../configs/finetune_qa.toml");

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Debug, Subcommand)]
pub enum Task {
    /// Token classification on BioBERT's NER layout (train.tsv, devel.tsv, test.tsv).
    Ner {
        #[command(flatten)]
        common: CommonArgs,
        /// The benchmark set's folder.
        #[arg(long)]
        data: PathBuf,
    },
    /// Sentence classification on BioBERT's RE layout (tsv) or JSON lines (ChemProt).
    Re {
        #[command(flatten)]
        common: CommonArgs,
        /// The benchmark set's folder.
        #[arg(long)]
        data: PathBuf,
        /// The data layout; detected from the folder when not given.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Accept a training label set other than BioBERT's binary 0 and 1 in the tsv layout
        /// (a multi-class set of one's own).
        #[arg(long)]
        any_labels: bool,
    },
    /// Extractive question answering on SQuAD v1.1 files (BioASQ factoid as BioBERT runs it).
    Qa {
        #[command(flatten)]
        common: CommonArgs,
        /// The training file (SQuAD v1.1 JSON, an answer per question).
        #[arg(long)]
        train: PathBuf,
        /// The test files (SQuAD v1.1 JSON; answers not needed).
        #[arg(long, num_args = 1.., required = true)]
        test: Vec<PathBuf>,
        /// BioASQ golden files, one per test file in the same order: their factoid scores go
        /// into metrics.json.
        #[arg(long, num_args = 1..)]
        golden: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A BERT folder: a pretraining checkpoint (or RUN/checkpoints/latest), an exported or
    /// Hugging Face folder, or a Google TensorFlow checkpoint folder.
    #[arg(long)]
    pub model: PathBuf,
    /// A new or empty folder for the metrics, predictions and model.
    #[arg(long)]
    pub out: PathBuf,
    /// A fine-tuning configuration (default: configs/finetune_ner.toml or _re.toml as
    /// built in).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overrides, as key=value (repeatable).
    #[arg(long = "set")]
    pub set: Vec<String>,
    /// Use only the first N training sequences (sentences for NER), e.g. for a quick try.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Use only the first N development and test sequences.
    #[arg(long)]
    pub limit_eval: Option<usize>,
    /// `auto`: continue from the newest checkpoint in --out (a fresh start where there is
    /// none).
    #[arg(long)]
    pub resume: Option<String>,
    /// Also write the test set's logits (logits_test.safetensors: input_ids,
    /// attention_mask and fp32 logits), e.g. to check the exported model elsewhere.
    #[arg(long)]
    pub save_logits: bool,
}

pub fn run(args: &FinetuneArgs) -> Result<()> {
    Distributed::run_job(|dist| run_on(dist, &args.task))
}

/// One fine-tuning on `dist`'s ranks (`biobert evaluate` calls it once per benchmark and
/// seed, each rank alone).
pub(crate) fn run_on(dist: &Distributed, task: &Task) -> Result<()> {
    let (common, config, data) = prepare(task)?;
    run_task(dist, common, &config, data)
}

/// The configuration and the task's inputs, read and checked; nothing is written yet.
pub(crate) fn prepare(task: &Task) -> Result<(&CommonArgs, FinetuneConfig, TaskData)> {
    let (common, config, mut data) = match task {
        Task::Ner { common, data } => {
            let config = load_config(common, NER_DEFAULTS)?;
            let data = TaskData::ner(common, data, &config)?;
            (common, config, data)
        }
        Task::Re {
            common,
            data,
            format,
            any_labels,
        } => {
            let config = load_config(common, RE_DEFAULTS)?;
            let data = TaskData::re(common, data, &config, *format, *any_labels)?;
            (common, config, data)
        }
        Task::Qa {
            common,
            train,
            test,
            golden,
        } => {
            let config = load_config(common, QA_DEFAULTS)?;
            let model = model_folder(&common.model)?;
            let tokenizer = tokenizer(&model)?;
            let settings = QaSettings::new(&config)?;
            let limits = (common.limit_train, common.limit_eval);
            let files = (train.as_path(), test.as_slice(), golden.as_slice());
            let data = finetune_qa::task(&model, &tokenizer, &settings, files, limits)?;
            (common, config, data)
        }
    };
    if config.train_on_dev {
        data.move_dev_into_train();
    }
    Ok((common, config, data))
}

fn tokenizer(model: &Path) -> Result<WordPieceTokenizer> {
    WordPieceTokenizer::load(&model.join("vocab.txt"), lowercase_setting(model))
}

fn model_folder(model: &Path) -> Result<PathBuf> {
    let dir = follow_latest(model)?;
    if !dir.join("vocab.txt").is_file() {
        bail!("{}: no vocab.txt beside the model", dir.display());
    }
    Ok(dir)
}

/// The first `n` of `v` (`--limit-train`, `--limit-eval`: `flag`); 0 is refused, since it
/// would train or score on nothing.
pub(crate) fn limit<T>(mut v: Vec<T>, n: Option<usize>, flag: &str) -> Result<Vec<T>> {
    match n {
        Some(0) => bail!("{flag} 0: expected at least 1 (it keeps the first N sequences)"),
        Some(n) => v.truncate(n),
        None => {}
    }
    Ok(v)
}

impl TaskData {
    fn ner(common: &CommonArgs, data: &Path, config: &FinetuneConfig) -> Result<TaskData> {
        let model = model_folder(&common.model)?;
        let tokenizer = tokenizer(&model)?;
        let max_len = config.max_seq_len;
        let path = |n: &str| data.join(n);
        let train = limit(
            ner_data::read(&path("train.tsv"))?,
            common.limit_train,
            "--limit-train",
        )?;
        let labels = ner_data::label_set(&train);
        let split = |p: PathBuf| -> Result<Split> {
            let sentences = limit(ner_data::read(&p)?, common.limit_eval, "--limit-eval")?;
            let ids = ner_data::label_ids(&sentences, &labels, &p)?;
            let windows = ner_data::windows(&sentences, &ids, &tokenizer, max_len)?;
            Ok(Split {
                path: p,
                inputs: windows.iter().map(window_input).collect(),
                records: Records::Ner { sentences, windows },
            })
        };
        let train_ids = ner_data::label_ids(&train, &labels, &path("train.tsv"))?;
        let train_inputs = ner_data::windows(&train, &train_ids, &tokenizer, max_len)?
            .iter()
            .map(window_input)
            .collect();
        let dev = ["devel.tsv", "dev.tsv"]
            .iter()
            .map(|n| path(n))
            .find(|p| p.is_file())
            .map(split)
            .transpose()?;
        Ok(TaskData {
            head: Head::Token,
            name: "ner",
            test: split(path("test.tsv"))?,
            more_tests: Vec::new(),
            dev_in_train: false,
            dev,
            train: train_inputs,
            labels,
            positive: None,
        })
    }

    fn re(
        common: &CommonArgs,
        data: &Path,
        config: &FinetuneConfig,
        format: Option<Format>,
        any_labels: bool,
    ) -> Result<TaskData> {
        let model = model_folder(&common.model)?;
        let tokenizer = tokenizer(&model)?;
        let max_len = config.max_seq_len;
        let format = match format {
            Some(f) => f,
            None => re_data::detect(data)?,
        };
        let (train_path, dev_path, test_path) = re_data::files(data, format);
        let train = limit(
            re_data::read(&train_path, format)?,
            common.limit_train,
            "--limit-train",
        )?;
        let labels = re_data::label_set(&train);
        if format == Format::Tsv && !any_labels {
            re_data::check_binary(&labels, &train_path)?;
        }
        let special = |t: &str| special_id(&tokenizer, t, &model);
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
        // [CLS] pieces [SEP], the pieces cut to fit (as BioBERT's scripts truncate).
        let encode = |examples: &[re_data::Example], gold: &[usize]| -> Result<Vec<Input>> {
            examples
                .iter()
                .zip(gold)
                .map(|(e, &g)| {
                    Ok(Input {
                        token_type_ids: Vec::new(),
                        input_ids: encode(&tokenizer, &e.text, max_len, cls, sep)?,
                        targets: vec![g as i64],
                    })
                })
                .collect()
        };
        let split = |p: PathBuf| -> Result<Split> {
            let examples = limit(
                re_data::read(&p, format)?,
                common.limit_eval,
                "--limit-eval",
            )?;
            let gold = re_data::label_ids(&examples, &labels, &p)?;
            Ok(Split {
                path: p,
                inputs: encode(&examples, &gold)?,
                records: Records::Re { gold },
            })
        };
        let train_gold = re_data::label_ids(&train, &labels, &train_path)?;
        Ok(TaskData {
            head: Head::Sequence,
            name: "re",
            train: encode(&train, &train_gold)?,
            dev: dev_path.map(split).transpose()?,
            test: split(test_path)?,
            more_tests: Vec::new(),
            dev_in_train: false,
            positive: re_data::positive_label(&labels),
            labels,
        })
    }
}

fn window_input(w: &Window) -> Input {
    Input {
        token_type_ids: Vec::new(),
        input_ids: w.input_ids.clone(),
        targets: w.labels.clone(),
    }
}

fn load_config(common: &CommonArgs, defaults: &str) -> Result<FinetuneConfig> {
    match &common.config {
        Some(path) => FinetuneConfig::load(path, &common.set),
        None => FinetuneConfig::from_text(defaults, "the built-in defaults", &common.set),
    }
}

fn run_task(
    dist: &Distributed,
    common: &CommonArgs,
    config: &FinetuneConfig,
    task: TaskData,
) -> Result<()> {
    let model_dir = model_folder(&common.model)?;
    let resume = match common.resume.as_deref() {
        None => None,
        Some("auto") => finetune_checkpoint::latest(&common.out),
        Some(other) => bail!("--resume {other}: expected auto"),
    };
    let finished = common.out.join("metrics.json").exists();
    match &resume {
        Some(_) if finished => bail!(
            "{}: this run is finished (metrics.json is there); nothing to resume",
            common.out.display()
        ),
        // As pretraining says of a run at its last step.
        None if finished && common.resume.is_some() => {
            if dist.is_root() {
                println!(
                    "nothing to do: {} holds a finished run (metrics.json); to train again, choose a new folder for --out",
                    common.out.display()
                );
            }
            return Ok(());
        }
        Some(_) => {}
        None => prepare_out(&common.out, dist.is_root())?,
    }
    let result = train_and_write(dist, common, &task, config, &model_dir, resume.as_deref());
    match result {
        Err(e) if dist.is_root() && finetune_checkpoint::latest(&common.out).is_some() => Err(e
            .context(format!(
                "checkpoints kept in {}: --resume auto continues",
                common.out.display()
            ))),
        Err(e) => {
            if dist.is_root() {
                // Nothing half written: the folder was new or empty, so all in it is ours.
                let _ = std::fs::remove_dir_all(&common.out);
            }
            Err(e)
        }
        Ok(()) => Ok(()),
    }
}

/// `--out` must be new or empty: nothing there is overwritten.
fn prepare_out(out: &Path, root: bool) -> Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(out) {
        if entries.next().is_some() {
            if finetune_checkpoint::latest(out).is_some() {
                bail!(
                    "{}: holds a fine-tuning checkpoint; add --resume auto to continue, or choose a new folder for --out",
                    out.display()
                );
            }
            bail!(
                "{}: not empty; choose a new folder for --out",
                out.display()
            );
        }
    }
    if root {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create", out.display()))?;
    }
    Ok(())
}

fn train_and_write(
    dist: &Distributed,
    common: &CommonArgs,
    task: &TaskData,
    config: &FinetuneConfig,
    model_dir: &Path,
    resume: Option<&Path>,
) -> Result<()> {
    let (mut trainer, bert_config, started) = load_trainer(dist, task, config, model_dir)?;
    if dist.is_root() {
        println!("{started}");
    }
    let fitted = fit::fit(&mut trainer, dist, task, config, &common.out, resume)?;
    if fitted.stopped {
        return Ok(());
    }
    if dist.is_root() {
        write_outputs(
            common,
            &trainer,
            task,
            config,
            model_dir,
            &bert_config,
            &fitted,
        )?;
    }
    dist.barrier();
    Ok(())
}

/// The classifier on `model_dir`'s encoder with a new head, on this rank's device, the
/// trainer over it, and the lines that say what it will train.
fn load_trainer<'a>(
    dist: &'a Distributed,
    task: &TaskData,
    config: &FinetuneConfig,
    model_dir: &Path,
) -> Result<(Trainer<'a>, BertConfig, String)> {
    let threads = crate::runtime::thread_budget::apply(dist.local_size, config.threads);
    let device = device_selection::select(config.device, dist.local_rank)?.device;
    let bert_config = hf_checkpoint::read_config(model_dir)?;
    bert_config.check_sequence_length("max_seq_len", config.max_seq_len)?;
    // The head's initialisation comes from torch's generator: seeded, it is repeatable.
    tch::manual_seed(config.seed as i64);
    let mut vs = VarStore::new(Device::Cpu);
    let mut model = Classifier::new(&vs.root(), &bert_config, task.head, task.labels.len());
    let (_, report) = hf_checkpoint::load_folder(&vs, model_dir)?;
    report.require_encoder(&model_dir.display().to_string())?;
    model.bert.compute = config.precision.compute_kind(device);
    vs.set_device(device);
    let mut fused = String::new();
    if config.fused_elementwise {
        let kernels = FusedKernels::for_model(&model.bert, device)
            .map_err(|e| anyhow::anyhow!("fused_elementwise: {e}"))?;
        fused = format!(
            "\nfused element-wise kernels: bias + dropout + residual + LayerNorm and bias + GELU, {}, checked on the GPU against the unfused operations",
            kernels.description
        );
        model.bert.fused = Some(kernels);
    }
    let pad = tokenizer(model_dir)?.token_id("[PAD]").map_or(0, i64::from);
    let started = format!(
        "finetune {}: {} from {} ({}); {} labels; {} training, {} development, {} test inputs; {:?}, {} torch threads per rank, {} rank(s)\nconfig: {}",
        task.name,
        task.head.architecture(),
        model_dir.display(),
        report.summary(),
        task.labels.len(),
        task.train.len(),
        task.dev.as_ref().map_or(0, |d| d.inputs.len()),
        task.test.inputs.len(),
        device,
        threads.torch,
        dist.size,
        toml::to_string(config)?.trim().replace('\n', ", ")
    ) + &fused;
    let trainer = Trainer::new(model, vs, dist, device, config, task.train.len(), pad)?;
    Ok((trainer, bert_config, started))
}

/// Seconds per training token of `task` on this rank's device: `steps` optimizer steps
/// on its first training inputs, timed after one more that warms up (allocations, kernel
/// choice). `biobert evaluate` sizes its estimate with it.
pub(crate) fn seconds_per_training_token(
    dist: &Distributed,
    task: &Task,
    steps: usize,
) -> Result<f64> {
    let (common, config, mut data) = prepare(task)?;
    let model_dir = model_folder(&common.model)?;
    data.train.truncate(config.batch_size * (steps + 1));
    let (mut trainer, _, _) = load_trainer(dist, &data, &config, &model_dir)?;
    let inputs = data.train.clone();
    let mut marks = Vec::new();
    trainer.epoch(&inputs, 0, 0, |_, _| marks.push(std::time::Instant::now()))?;
    // The batches come in the epoch's order: the timed ones hold about this share.
    let tokens: usize = inputs.iter().map(|i| i.input_ids.len()).sum();
    match (marks.first(), marks.last()) {
        (Some(first), Some(last)) if marks.len() > 1 => {
            let timed = tokens as f64 * (marks.len() - 1) as f64 / marks.len() as f64;
            Ok((*last - *first).as_secs_f64() / timed)
        }
        _ => bail!("too few training inputs to time a step"),
    }
}

/// The Hugging Face folder of the fine-tuned model: `OUT/model`.
fn write_model_folder(
    out: &Path,
    trainer: &Trainer,
    task: &TaskData,
    model_dir: &Path,
    bert_config: &BertConfig,
) -> Result<()> {
    let model_out = out.join("model");
    std::fs::create_dir_all(&model_out)?;
    classifier::write_hf_classifier(
        &model_out,
        &trainer.vs,
        bert_config,
        task.head,
        &task.labels,
    )?;
    let lowercase = lowercase_setting(model_dir).unwrap_or(true);
    write_tokenizer_files(
        &model_out,
        &model_dir.join("vocab.txt"),
        lowercase,
        bert_config,
    )
}

/// Question answering's predictions: per test file the n-best and BioASQ files (and scores
/// with a golden file). Returns its metrics and the line that sums them up.
fn qa_predictions(
    out: &Path,
    trainer: &Trainer,
    task: &TaskData,
    config: &FinetuneConfig,
    model_dir: &Path,
) -> Result<(serde_json::Value, String)> {
    let tokenizer = tokenizer(model_dir)?;
    let settings = QaSettings::new(config)?;
    let tests = finetune_qa::write_predictions(out, trainer, task, &tokenizer, &settings)?;
    let headline = match tests["mean"].as_object() {
        Some(mean) => format!(
            "BioASQ factoid over {} batch(es): strict {:.4}, lenient {:.4}, MRR {:.4}",
            mean["files"],
            mean["strict_accuracy"].as_f64().unwrap_or(0.0),
            mean["lenient_accuracy"].as_f64().unwrap_or(0.0),
            mean["mrr"].as_f64().unwrap_or(0.0),
        ),
        None => "no --golden, so no scores".to_string(),
    };
    let metrics = serde_json::json!({ "selection": "last epoch", "test": tests });
    Ok((metrics, headline))
}

/// NER's and RE's predictions and scores on the test and development splits. Returns their
/// metrics and the line that sums them up.
fn classification_predictions(
    out: &Path,
    trainer: &Trainer,
    task: &TaskData,
    fitted: &Fitted,
) -> Result<(serde_json::Value, String)> {
    let write = |name: &str, lines: &[String]| -> Result<()> {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(out.join(name), text)
            .with_context(|| format!("writing {}", out.join(name).display()))
    };
    let (test, test_f1, test_lines) = evaluate(trainer, &task.test, &task.labels, task.positive)?;
    write("predictions_test.txt", &test_lines)?;
    let dev = match &task.dev {
        Some(split) => {
            let (scores, _, lines) = evaluate(trainer, split, &task.labels, task.positive)?;
            write("predictions_dev.txt", &lines)?;
            scores
        }
        None => serde_json::Value::Null,
    };
    let metrics = serde_json::json!({
        "test_file": task.test.path.display().to_string(),
        "labels": task.labels,
        "selection": if fitted.chosen_on_dev { "best development F1" } else { "last epoch (no development set, or select_on_dev = false)" },
        "dev": dev,
        "test": test,
    });
    Ok((metrics, format!("F1 {test_f1:.4} (epoch {})", fitted.epoch)))
}

/// metrics.json, the predictions, the optional logits, the Hugging Face folder and the
/// configuration that ran; the epoch checkpoints go.
fn write_outputs(
    common: &CommonArgs,
    trainer: &Trainer,
    task: &TaskData,
    config: &FinetuneConfig,
    model_dir: &Path,
    bert_config: &BertConfig,
    fitted: &Fitted,
) -> Result<()> {
    let out = common.out.as_path();
    let (mut metrics, headline) = match task.head {
        Head::Span => qa_predictions(out, trainer, task, config, model_dir)?,
        _ => classification_predictions(out, trainer, task, fitted)?,
    };
    if common.save_logits {
        let path = out.join("logits_test.safetensors");
        Tensor::write_safetensors(&trainer.logits(&task.test.inputs)?, &path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    write_model_folder(out, trainer, task, model_dir, bert_config)?;
    metrics["task"] = task.name.into();
    metrics["model"] = model_dir.display().to_string().into();
    metrics["epochs"] = config.epochs.into();
    metrics["trained_on"] = if task.dev_in_train {
        "train + dev"
    } else {
        "train"
    }
    .into();
    metrics["selected_epoch"] = fitted.epoch.into();
    metrics["train_seconds"] = fitted.train_seconds.into();
    write_json(&out.join("metrics.json"), &metrics)?;
    std::fs::write(out.join("config.toml"), toml::to_string(config)?)?;
    // The run is complete: its model is in model/, the per-epoch checkpoints go.
    let _ = std::fs::remove_dir_all(out.join("checkpoints"));
    println!(
        "test: {headline}; metrics, predictions and the model ({}) in {}",
        task.head.architecture(),
        out.display()
    );
    Ok(())
}
