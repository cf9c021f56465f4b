//! A fine-tuning task as the loop and the command share it: the inputs of its splits, what
//! maps predictions back to their records, and the scores of a split (entity F1 for NER,
//! sklearn's F1 for RE) with its prediction lines.

use std::path::PathBuf;

use anyhow::Result;

use crate::finetune::class_metrics;
use crate::finetune::classifier::Head;
use crate::finetune::entity_metrics;
use crate::finetune::finetune_checkpoint::InputDigests;
use crate::finetune::ner_data::{TaggedSentence, Window, IGNORED};
use crate::finetune::trainer::{Input, Trainer};

/// Everything a task needs, read and checked before any output is written.
pub struct TaskData {
    pub head: Head,
    pub name: &'static str,
    pub labels: Vec<String>,
    pub train: Vec<Input>,
    pub dev: Option<Split>,
    pub test: Split,
    /// Question answering's further test files (BioASQ's batches), scored as `test` is.
    pub more_tests: Vec<Split>,
    /// The positive class of a binary RE task.
    pub positive: Option<usize>,
    /// The development set was moved into the training set (`train_on_dev`).
    pub dev_in_train: bool,
}

/// An evaluation split: its inputs and what maps predictions back to its records.
pub struct Split {
    pub path: PathBuf,
    pub inputs: Vec<Input>,
    pub records: Records,
}

pub enum Records {
    Ner {
        sentences: Vec<TaggedSentence>,
        windows: Vec<Window>,
    },
    Re {
        gold: Vec<usize>,
    },
    /// Question answering: the questions, their windows (one input each) and the BioASQ
    /// golden file that scores them, if given.
    Qa {
        examples: Vec<crate::finetune::squad_data::SquadExample>,
        windows: Vec<crate::finetune::squad_data::Window>,
        golden: Option<crate::finetune::bioasq::Golden>,
    },
}

/// The sha256 of inputs as they train: each input's ids and targets, in order.
pub fn inputs_sha256(inputs: &[Input]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for input in inputs {
        for part in [&input.input_ids, &input.targets] {
            hash.update((part.len() as u64).to_le_bytes());
            for v in part.iter() {
                hash.update(v.to_le_bytes());
            }
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl TaskData {
    /// BioBERT's protocol (`train_on_dev`): the development set joins the training set, so
    /// nothing is left to choose an epoch with. A set without one trains on train alone.
    pub fn move_dev_into_train(&mut self) {
        if let Some(dev) = self.dev.take() {
            self.train.extend(dev.inputs);
            self.dev_in_train = true;
        }
    }

    /// What a checkpoint records of this task's inputs.
    pub fn digests(&self) -> InputDigests {
        InputDigests {
            train: inputs_sha256(&self.train),
            train_count: self.train.len(),
            dev: self.dev.as_ref().map(|d| inputs_sha256(&d.inputs)),
        }
    }
}

/// The scores of one split, as JSON, and its primary F1.
pub fn evaluate(
    trainer: &Trainer,
    split: &Split,
    labels: &[String],
    positive: Option<usize>,
) -> Result<(serde_json::Value, f64, Vec<String>)> {
    if let Records::Qa { .. } = split.records {
        anyhow::bail!("question answering is scored by commands::finetune_qa, not here");
    }
    let predicted = trainer.predict(&split.inputs)?;
    match &split.records {
        Records::Ner { sentences, windows } => {
            let tags = ner_tags(sentences, windows, &predicted, labels);
            let gold: Vec<Vec<String>> = sentences.iter().map(|s| s.labels.clone()).collect();
            let scores = entity_metrics::score(&gold, &tags);
            let f1 = scores.f1;
            let lines = conll_lines(sentences, &tags);
            Ok((serde_json::to_value(scores)?, f1, lines))
        }
        Records::Re { gold } => {
            let guess: Vec<usize> = predicted.iter().map(|p| p[0]).collect();
            let scores = class_metrics::score(gold, &guess, positive);
            let f1 = scores.f1.unwrap_or(scores.micro_f1);
            let mut lines = vec!["index\tgold\tpredicted".to_string()];
            lines.extend(
                gold.iter()
                    .zip(&guess)
                    .enumerate()
                    .map(|(i, (g, p))| format!("{i}\t{}\t{}", labels[*g], labels[*p])),
            );
            Ok((serde_json::to_value(scores)?, f1, lines))
        }
        Records::Qa { .. } => unreachable!("answered above"),
    }
}

/// Each word's predicted tag: the prediction at its first piece, in its window.
fn ner_tags(
    sentences: &[TaggedSentence],
    windows: &[Window],
    predicted: &[Vec<usize>],
    labels: &[String],
) -> Vec<Vec<String>> {
    let mut tags: Vec<Vec<String>> = sentences
        .iter()
        .map(|s| vec!["O".to_string(); s.words.len()])
        .collect();
    for (w, p) in windows.iter().zip(predicted) {
        let firsts = w.labels.iter().enumerate().filter(|(_, &l)| l != IGNORED);
        for ((position, _), word) in firsts.zip(w.words.0..w.words.1) {
            tags[w.sentence][word] = labels[p[position]].clone();
        }
    }
    tags
}

/// conlleval's input: `token gold predicted` a line, a blank line after each sentence.
fn conll_lines(sentences: &[TaggedSentence], tags: &[Vec<String>]) -> Vec<String> {
    let mut lines = Vec::new();
    for (s, t) in sentences.iter().zip(tags) {
        for ((word, gold), guess) in s.words.iter().zip(&s.labels).zip(t) {
            lines.push(format!("{word} {gold} {guess}"));
        }
        lines.push(String::new());
    }
    lines
}
