//! The model card (`README.md`) of an exported folder, as the Hugging Face hub reads it
//! (YAML metadata, then text): what the model is and how to load it, and for one of our
//! pretraining checkpoints the chain back to the raw files: the corpus (its manifest's
//! sha256, its sources and totals when the corpus folder is still where the run read it),
//! the initial weights, the configuration that ran, the steps, sequences and tokens seen,
//! the last training and held-out losses, and the tool's versions.

use std::path::Path;

use serde_json::Value;

use crate::data::corpus::file_sha256;
use crate::train::checkpoint::TrainerState;

/// The card of the folder exported from `checkpoint` (a folder of ours or any BERT folder).
pub fn card(checkpoint: &Path, name: &str) -> String {
    let mut text = String::from(
        "---\nlibrary_name: transformers\npipeline_tag: fill-mask\nlanguage: en\ntags:\n- bert\n- biomedical\n- biobert\n---\n\n",
    );
    text += &format!("# {name}\n\n");
    let state = std::fs::read_to_string(checkpoint.join("trainer_state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<TrainerState>(&t).ok());
    match &state {
        Some(state) => {
            text += "BERT (`BertForPreTraining`: the encoder with its masked-LM and next-sentence heads) \
                     further pretrained on biomedical text by `biobert pretrain`, BioBERT's objective \
                     (masked LM and next-sentence prediction) on PubMed abstracts and PMC articles.\n\n";
            text += &provenance(checkpoint, state);
        }
        None => {
            text += &format!(
                "A BERT folder converted by `biobert export` from `{}`, which holds no training \
                 record of ours (no `trainer_state.json`): its provenance is that folder's.\n\n",
                checkpoint.display()
            );
        }
    }
    text += &format!(
        "## Loading\n\n```python\nfrom transformers import AutoTokenizer, BertForPreTraining\n\n\
         tokenizer = AutoTokenizer.from_pretrained(\"{name}\")\nmodel = BertForPreTraining.from_pretrained(\"{name}\")\n```\n\n\
         For fine-tuning, `AutoModelForTokenClassification`, `AutoModelForSequenceClassification` \
         or `AutoModelForQuestionAnswering` load the encoder and start a new head; \
         `biobert finetune ner|re|qa` does the same with BioBERT's schedules.\n"
    );
    text
}

/// The training record of a checkpoint of ours, as a table and the configuration.
fn provenance(checkpoint: &Path, state: &TrainerState) -> String {
    let c = &state.config;
    let global_batch = c.train.micro_batch_size * c.train.grad_accumulation * state.world_size;
    let mut rows: Vec<(String, String)> = vec![
        ("initial weights".into(), format!("`{}`", c.model.init)),
        (
            "corpus manifest sha256".into(),
            format!("`{}`", state.corpus_manifest_sha256),
        ),
    ];
    rows.extend(corpus_rows(
        Path::new(&c.data.path),
        &state.corpus_manifest_sha256,
    ));
    rows.push((
        "steps".into(),
        format!(
            "{} of {} ({} sequences a step, {} rank(s))",
            state.step, c.train.max_steps, global_batch, state.world_size
        ),
    ));
    rows.push(("sequences seen".into(), state.samples_consumed.to_string()));
    // The run folder is two levels up: RUN/checkpoints/step_N.
    let log = checkpoint
        .parent()
        .and_then(Path::parent)
        .map(|run| run.join("log.jsonl"));
    let lines = log
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    rows.extend(log_rows(&lines, state.step, global_batch as f64));
    let versions: Vec<String> = state
        .versions
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    rows.push(("versions".into(), versions.join(", ")));
    let mut text = String::from("## Provenance\n\n| | |\n|---|---|\n");
    for (k, v) in rows {
        text += &format!("| {k} | {v} |\n");
    }
    let config = toml::to_string(c).unwrap_or_default();
    text += &format!(
        "\nThe configuration that ran (`trainer_state.json`):\n\n```toml\n{config}```\n\n"
    );
    text
}

/// The corpus's sources and totals, when its manifest is still at the path the run read
/// and is the one it trained on.
fn corpus_rows(dir: &Path, sha256: &str) -> Vec<(String, String)> {
    let manifest = dir.join("manifest.json");
    let same = file_sha256(&manifest).is_ok_and(|s| s == sha256);
    let parsed = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let Some(m) = parsed.filter(|_| same) else {
        return vec![(
            "corpus".into(),
            format!(
                "`{}` (not there any more, or changed since: its totals are not shown)",
                dir.display()
            ),
        )];
    };
    let count = |collection: &str| {
        m["sources"].as_array().map_or(0, |s| {
            s.iter().filter(|f| f["collection"] == collection).count()
        })
    };
    let t = &m["totals"];
    vec![(
        "corpus".into(),
        format!(
            "`{}`: {} PubMed and {} PMC source files; {} documents, {} sentences, {} tokens ({})",
            dir.display(),
            count("pubmed"),
            count("pmc"),
            t["documents"],
            t["sentences"],
            t["tokens"],
            m["tokenizer"]["file"].as_str().unwrap_or("?")
        ),
    )]
}

/// Tokens seen (each logged window's sequences times its tokens per sequence), the last
/// training losses and the last held-out evaluation, up to `step`.
fn log_rows(lines: &str, step: u64, global_batch: f64) -> Vec<(String, String)> {
    let (mut tokens, mut previous, mut train, mut eval) = (0.0f64, 0u64, None, None);
    for row in lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let Some(at) = row["step"].as_u64().filter(|&s| s <= step) else {
            continue;
        };
        if let (Some(t), Some(s)) = (
            row["perf/tokens_per_s"].as_f64(),
            row["perf/seq_per_s"].as_f64(),
        ) {
            if at > previous && s > 0.0 {
                tokens += (at - previous) as f64 * global_batch * t / s;
                previous = at;
            }
        }
        if row.get("train/loss").is_some() {
            train = Some((at, row.clone()));
        }
        if row.get("eval/loss").is_some() {
            eval = Some((at, row));
        }
    }
    let mut rows = Vec::new();
    if previous > 0 {
        rows.push((
            "tokens seen".into(),
            format!(
                "about {:.3e} (from log.jsonl, through step {previous})",
                tokens
            ),
        ));
    }
    let losses = |r: &Value, p: &str| {
        format!(
            "{:.4} (masked LM {:.4}, next sentence {:.4})",
            r[format!("{p}/loss")].as_f64().unwrap_or(f64::NAN),
            r[format!("{p}/mlm_loss")].as_f64().unwrap_or(f64::NAN),
            r[format!("{p}/nsp_loss")].as_f64().unwrap_or(f64::NAN)
        )
    };
    if let Some((at, r)) = train {
        rows.push((format!("training loss at step {at}"), losses(&r, "train")));
    }
    if let Some((at, r)) = eval {
        rows.push((format!("held-out loss at step {at}"), losses(&r, "eval")));
    }
    rows
}

/// The heading of the section `biobert evaluate` writes.
const EVALUATION: &str = "## Evaluation";
const LOADING: &str = "## Loading";

/// `card` with `table` as its evaluation section (replacing an earlier one, else before
/// the loading section), or None when `card` is not one `biobert export` wrote.
pub fn with_evaluation(card: &str, table: &str) -> Option<String> {
    let ours = card.starts_with("---\nlibrary_name: transformers\n")
        && card.contains("\n- biobert\n")
        && card.contains(LOADING);
    if !ours {
        return None;
    }
    // The table's own title goes: the section heading says what it is.
    let body = table
        .strip_prefix('#')
        .and_then(|t| t.split_once('\n'))
        .map_or(table, |(_, rest)| rest)
        .trim();
    let section = format!("{EVALUATION}\n\n`biobert evaluate` on this folder:\n\n{body}\n\n");
    let (before, after) = match card.find(EVALUATION) {
        Some(start) => {
            let end = card[start + EVALUATION.len()..]
                .find("\n## ")
                .map_or(card.len(), |i| start + EVALUATION.len() + i + 1);
            (&card[..start], &card[end..])
        }
        None => card.split_at(card.find(LOADING)?),
    };
    Some(format!("{before}{section}{after}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_losses_come_from_the_log_up_to_the_step() {
        let log = r#"{"step":10,"perf/seq_per_s":10.0,"perf/tokens_per_s":1000.0,"train/loss":3.0,"train/mlm_loss":2.5,"train/nsp_loss":0.5}
{"step":20,"perf/seq_per_s":10.0,"perf/tokens_per_s":2000.0,"train/loss":2.0,"train/mlm_loss":1.5,"train/nsp_loss":0.5}
{"step":20,"eval/loss":2.2,"eval/mlm_loss":1.8,"eval/nsp_loss":0.4}
{"step":30,"perf/seq_per_s":10.0,"perf/tokens_per_s":2000.0,"train/loss":1.0,"train/mlm_loss":0.5,"train/nsp_loss":0.5}"#;
        let rows = log_rows(log, 20, 8.0);
        // 10 steps x 8 sequences x 100 tokens, then 10 x 8 x 200.
        assert_eq!(rows[0].1, "about 2.400e4 (from log.jsonl, through step 20)");
        assert_eq!(rows[1].0, "training loss at step 20");
        assert!(
            rows[1].1.starts_with("2.0000 (masked LM 1.5000"),
            "{}",
            rows[1].1
        );
        assert_eq!(rows[2].0, "held-out loss at step 20");
    }

    #[test]
    fn the_evaluation_table_goes_before_loading_and_replaces_its_earlier_self() {
        let card = card(std::path::Path::new("/nonexistent"), "m");
        let first = with_evaluation(&card, "# title\n\n| a |\n").unwrap();
        assert!(
            first.contains(
                "## Evaluation\n\n`biobert evaluate` on this folder:\n\n| a |\n\n## Loading"
            ),
            "{first}"
        );
        assert!(!first.contains("# title"));
        let second = with_evaluation(&first, "# title\n\n| b |\n").unwrap();
        assert_eq!(second.matches("## Evaluation").count(), 1);
        assert!(second.contains("| b |") && !second.contains("| a |"));
        assert_eq!(second.replace("| b |", "| a |"), first);
        assert!(with_evaluation("# someone's card\n\n## Loading\n", "| a |").is_none());
    }
}
