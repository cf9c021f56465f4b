//! `biobert finetune qa`: extractive question answering as BioBERT runs BioASQ factoid
//! (../shared/QA.md). The task's inputs (Google's windows of SQuAD v1.1 files) and, after
//! training, per test file: the n-best answers of each paragraph
//! (`nbest_predictions_<name>.json`, Google's layout), the five answers of each question
//! (`bioasq_<name>.json`, BioASQ's submission) and, with a golden file, BioASQ's strict
//! accuracy, lenient accuracy and MRR in `metrics.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use corpus_tools::tokenizer::WordPieceTokenizer;
use serde_json::{json, Value};

use crate::commands::finetune::limit;
use crate::config::finetune_config::FinetuneConfig;
use crate::finetune::bioasq::{self, Golden};
use crate::finetune::classifier::Head;
use crate::finetune::squad_data::{self, SquadExample, Window, WindowConfig};
use crate::finetune::squad_nbest::{self, NbestConfig, NbestEntry, WindowLogits};
use crate::finetune::task::{Records, Split, TaskData};
use crate::finetune::trainer::{Input, Trainer};
use crate::model::hf_folder::{special_id, write_json};

/// The settings only question answering has, from the configuration.
pub struct QaSettings {
    pub windows: WindowConfig,
    pub nbest: NbestConfig,
}

impl QaSettings {
    pub fn new(config: &FinetuneConfig) -> Result<QaSettings> {
        let need = |v: Option<usize>, key: &str| {
            v.ok_or_else(|| {
                anyhow::anyhow!("{key} is missing: question answering needs it (configs/finetune_qa.toml has BioBERT's value)")
            })
        };
        Ok(QaSettings {
            windows: WindowConfig {
                max_seq_len: config.max_seq_len,
                max_query_len: need(config.max_query_len, "max_query_len")?,
                doc_stride: need(config.doc_stride, "doc_stride")?,
            },
            nbest: NbestConfig {
                n_best: need(config.n_best, "n_best")?,
                max_answer_len: need(config.max_answer_len, "max_answer_len")?,
            },
        })
    }
}

fn window_input(w: &Window) -> Input {
    Input {
        input_ids: w.input_ids.clone(),
        token_type_ids: w.token_type_ids.clone(),
        targets: vec![w.start as i64, w.end as i64],
    }
}

/// The training windows and one split per test file; every file is read and checked before
/// anything is written. `limits`: --limit-train and --limit-eval (questions; 0 refused).
pub fn task(
    model: &Path,
    tokenizer: &WordPieceTokenizer,
    settings: &QaSettings,
    (train, tests, golden): (&Path, &[PathBuf], &[PathBuf]),
    limits: (Option<usize>, Option<usize>),
) -> Result<TaskData> {
    if !golden.is_empty() && golden.len() != tests.len() {
        bail!(
            "--golden: {} file(s) for {} test file(s); give one per test file, in the same order",
            golden.len(),
            tests.len()
        );
    }
    // Answers are aligned through Google's basic tokenizer: a vocab.txt model is needed.
    tokenizer.basic_tokens("x")?;
    let special = |t: &str| special_id(tokenizer, t, model);
    let ids = (special("[CLS]")?, special("[SEP]")?);
    let train_examples = limit(squad_data::read(train, true)?, limits.0, "--limit-train")?;
    let train_windows = squad_data::windows(&train_examples, tokenizer, settings.windows, ids)?;
    let mut splits = Vec::new();
    for (i, path) in tests.iter().enumerate() {
        let examples = limit(squad_data::read(path, false)?, limits.1, "--limit-eval")?;
        let windows = squad_data::windows(&examples, tokenizer, settings.windows, ids)?;
        let golden = golden.get(i).map(|g| Golden::read(g)).transpose()?;
        splits.push(Split {
            path: path.clone(),
            inputs: windows.iter().map(window_input).collect(),
            records: Records::Qa {
                examples,
                windows,
                golden,
            },
        });
    }
    let test = splits.remove(0);
    Ok(TaskData {
        head: Head::Span,
        name: "qa",
        labels: vec!["start".into(), "end".into()],
        train: train_windows.iter().map(window_input).collect(),
        dev: None,
        test,
        more_tests: splits,
        dev_in_train: false,
        positive: None,
    })
}

/// A test file's name in the output files: its stem.
fn file_name(path: &Path) -> String {
    path.file_stem()
        .map_or("test".into(), |s| s.to_string_lossy().into_owned())
}

/// Predicts every test file, writes its n-best and BioASQ files into `out`, and returns the
/// metrics of each (and their mean over the files with a golden file).
pub fn write_predictions(
    out: &Path,
    trainer: &Trainer,
    task: &TaskData,
    tokenizer: &WordPieceTokenizer,
    settings: &QaSettings,
) -> Result<Value> {
    let mut per_file = serde_json::Map::new();
    let mut scored: Vec<bioasq::Scores> = Vec::new();
    for split in std::iter::once(&task.test).chain(&task.more_tests) {
        let Records::Qa {
            examples,
            windows,
            golden,
        } = &split.records
        else {
            bail!("not a question-answering split");
        };
        let logits = trainer.span_logits(&split.inputs)?;
        let nbest = paragraphs_nbest(examples, windows, &logits, tokenizer, settings.nbest)?;
        let name = file_name(&split.path);
        let nbest_json: serde_json::Map<String, Value> = nbest
            .iter()
            .map(|(id, entries)| Ok((id.clone(), serde_json::to_value(entries)?)))
            .collect::<Result<_>>()?;
        write_json(
            &out.join(format!("nbest_predictions_{name}.json")),
            &Value::Object(nbest_json),
        )?;
        let candidates: Vec<(String, Vec<bioasq::Candidate>)> = nbest
            .iter()
            .map(|(id, e)| (id.clone(), e.iter().map(NbestEntry::candidate).collect()))
            .collect();
        let answers = bioasq::five_answers(&candidates);
        let submission = bioasq::submission(&answers);
        write_json(&out.join(format!("bioasq_{name}.json")), &submission)?;
        let mut entry = json!({
            "test_file": split.path.display().to_string(),
            "questions": answers.len(),
            "paragraphs": examples.len(),
        });
        if let Some(golden) = golden {
            let scores = bioasq::score(golden, &bioasq::read_submission(&submission));
            entry["scores"] = serde_json::to_value(scores)?;
            scored.push(scores);
        }
        per_file.insert(name, entry);
    }
    let mean = (!scored.is_empty()).then(|| {
        let n = scored.len() as f64;
        let avg = |f: fn(&bioasq::Scores) -> f64| scored.iter().map(f).sum::<f64>() / n;
        json!({
            "strict_accuracy": avg(|s| s.strict_accuracy),
            "lenient_accuracy": avg(|s| s.lenient_accuracy),
            "mrr": avg(|s| s.mrr),
            "files": scored.len(),
        })
    });
    Ok(json!({ "files": per_file, "mean": mean }))
}

/// Each paragraph's n-best list, in file order.
fn paragraphs_nbest(
    examples: &[SquadExample],
    windows: &[Window],
    logits: &[Vec<[f32; 2]>],
    tokenizer: &WordPieceTokenizer,
    config: NbestConfig,
) -> Result<Vec<(String, Vec<NbestEntry>)>> {
    let mut by_example: Vec<Vec<WindowLogits>> = vec![Vec::new(); examples.len()];
    for (w, l) in windows.iter().zip(logits) {
        by_example[w.example].push((w, l.as_slice()));
    }
    examples
        .iter()
        .zip(&by_example)
        .map(|(e, ws)| {
            Ok((
                e.qa_id.clone(),
                squad_nbest::nbest(e, ws, tokenizer, config)?,
            ))
        })
        .collect()
}
