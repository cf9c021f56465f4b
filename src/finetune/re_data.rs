//! Relation-extraction sets as sentence classification. Two layouts: BioBERT's
//! (`train.tsv` = `sentence<TAB>label` without a header, `test.tsv` = `index<TAB>sentence<TAB>
//! label` with one, optional `dev.tsv` in either form; entities masked as `@GENE$`,
//! `@DISEASE$`) and ChemProt's JSON lines (`train.txt`, `dev.txt`, `test.txt`, each line
//! `{"text", "label"}` with the entities marked `<< >>` and `[[ ]]`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// BioBERT's tsv files.
    Tsv,
    /// JSON lines with "text" and "label" (ChemProt as SciBERT distributes it).
    Jsonl,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
}

/// The layout of a data folder: `train.tsv` means BioBERT's, `train.txt` JSON lines.
pub fn detect(dir: &Path) -> Result<Format> {
    if dir.join("train.tsv").is_file() {
        return Ok(Format::Tsv);
    }
    if dir.join("train.txt").is_file() {
        return Ok(Format::Jsonl);
    }
    bail!(
        "{}: neither train.tsv (BioBERT's RE layout) nor train.txt (JSON lines) is there; name the layout with --format",
        dir.display()
    )
}

/// The train, development (if present) and test files of a folder.
pub fn files(dir: &Path, format: Format) -> (PathBuf, Option<PathBuf>, PathBuf) {
    let ext = match format {
        Format::Tsv => "tsv",
        Format::Jsonl => "txt",
    };
    let dev = ["dev", "devel"]
        .iter()
        .map(|n| dir.join(format!("{n}.{ext}")))
        .find(|p| p.is_file());
    (
        dir.join(format!("train.{ext}")),
        dev,
        dir.join(format!("test.{ext}")),
    )
}

pub fn read(path: &Path, format: Format) -> Result<Vec<Example>> {
    let text = crate::finetune::text_file::read(path)?;
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    // BioBERT's header, `index<TAB>sentence<TAB>label` (test files) or `sentence<TAB>label`
    // (added by hand to a training file): skipped, never trained as an example.
    let header = match (format, lines.peek()) {
        (Format::Tsv, Some((_, first))) => tsv_header(first),
        _ => None,
    };
    if header.is_some() {
        lines.next();
    }
    let indexed = header == Some(3);
    for (i, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let example = match format {
            Format::Tsv => tsv_line(line, indexed, &at)?,
            Format::Jsonl => json_line(line, &at)?,
        };
        out.push(example);
    }
    if out.is_empty() {
        bail!("{}: no examples", path.display());
    }
    Ok(out)
}

/// The column count of a header line (`index`, `sentence`, `label` in BioBERT's order,
/// any case), or `None` for a data line.
fn tsv_header(line: &str) -> Option<usize> {
    let fields: Vec<String> = line
        .trim_end_matches('\r')
        .split('\t')
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    match fields.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["index", "sentence", "label"] => Some(3),
        ["sentence", "label"] => Some(2),
        _ => None,
    }
}

fn tsv_line(line: &str, indexed: bool, at: &str) -> Result<Example> {
    let fields: Vec<&str> = line.split('\t').collect();
    let (expected, text, label) = if indexed {
        ("index<TAB>sentence<TAB>label", fields.get(1), fields.get(2))
    } else {
        ("sentence<TAB>label", fields.first(), fields.get(1))
    };
    let wanted = if indexed { 3 } else { 2 };
    match (text, label) {
        (Some(t), Some(l))
            if fields.len() == wanted && !t.trim().is_empty() && !l.trim().is_empty() =>
        {
            Ok(Example {
                text: t.to_string(),
                label: l.trim().to_string(),
            })
        }
        (Some(t), Some(_)) if fields.len() == wanted && t.trim().is_empty() => {
            bail!("{at}: the sentence is empty; expected {expected}")
        }
        (Some(_), Some(_)) if fields.len() == wanted => {
            bail!("{at}: the label is empty; expected {expected}")
        }
        _ => bail!(
            "{at}: expected {expected} ({wanted} fields), found {}",
            fields.len()
        ),
    }
}

fn json_line(line: &str, at: &str) -> Result<Example> {
    let value: serde_json::Value = serde_json::from_str(line).with_context(|| {
        format!("{at}: not a JSON object; expected {{\"text\": ..., \"label\": ...}}")
    })?;
    let field = |k: &str| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .with_context(|| {
                format!("{at}: no string \"{k}\"; expected {{\"text\": ..., \"label\": ...}}")
            })
    };
    Ok(Example {
        text: field("text")?,
        label: field("label")?,
    })
}

/// The label set of the training examples, sorted.
pub fn label_set(train: &[Example]) -> Vec<String> {
    let mut labels: Vec<String> = train.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// BioBERT's RE sets in the tsv layout (GAD, EU-ADR) are binary, 0 and 1: another label
/// set there is a stray header, a shifted column or another task's file, refused unless
/// asked for (`--any-labels`).
pub fn check_binary(labels: &[String], path: &Path) -> Result<()> {
    if labels.iter().all(|l| l == "0" || l == "1") {
        return Ok(());
    }
    let shown: Vec<&str> = labels.iter().take(6).map(String::as_str).collect();
    bail!(
        "{}: the labels are {}{}, expected 0 and 1 (BioBERT's binary relation sets); --any-labels trains on them as they are",
        path.display(),
        shown.join(", "),
        if labels.len() > 6 { ", ..." } else { "" }
    )
}

/// The positive class of a binary task whose labels are 0 and 1.
pub fn positive_label(labels: &[String]) -> Option<usize> {
    (labels == ["0", "1"]).then_some(1)
}

pub fn label_ids(examples: &[Example], labels: &[String], path: &Path) -> Result<Vec<usize>> {
    examples
        .iter()
        .enumerate()
        .map(|(k, e)| {
            labels.iter().position(|l| *l == e.label).with_context(|| {
                format!(
                    "{}: example {} has the label {:?}, which the training file never uses (labels: {})",
                    path.display(),
                    k + 1,
                    e.label,
                    labels.join(", ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tsv_forms_and_json_lines_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "a @GENE$ b\t1\nc\t0\n").unwrap();
        assert_eq!(read(&p, Format::Tsv).unwrap().len(), 2);
        std::fs::write(&p, "index\tsentence\tlabel\n0\ta\t1\n1\tb\t0\n").unwrap();
        let e = read(&p, Format::Tsv).unwrap();
        assert_eq!((e[1].text.as_str(), e[1].label.as_str()), ("b", "0"));
        std::fs::write(&p, "index\tsentence\tlabel\n0\ta 1\n").unwrap();
        let err = read(&p, Format::Tsv).unwrap_err().to_string();
        assert!(
            err.contains("f:2: expected index<TAB>sentence<TAB>label"),
            "{err}"
        );
        std::fs::write(
            &p,
            "{\"text\": \"<< x >> [[ y ]]\", \"label\": \"INHIBITOR\"}\n{\"text\": 1}\n",
        )
        .unwrap();
        let err = read(&p, Format::Jsonl).unwrap_err().to_string();
        assert!(err.contains("f:2: no string \"text\""), "{err}");
        assert_eq!(positive_label(&["0".into(), "1".into()]), Some(1));
    }

    /// A training file with BioBERT's header line trains no "label" class; an empty
    /// sentence or label says which.
    #[test]
    fn a_header_line_is_not_an_example() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.tsv");
        std::fs::write(&p, "sentence\tlabel\na @GENE$ b\t1\nc\t0\n").unwrap();
        let e = read(&p, Format::Tsv).unwrap();
        assert_eq!(label_set(&e), ["0", "1"]);
        std::fs::write(&p, "Index\tSentence\tLabel\n0\ta\t1\n").unwrap();
        assert_eq!(read(&p, Format::Tsv).unwrap().len(), 1);
        std::fs::write(&p, "a\t1\n \t0\n").unwrap();
        let err = read(&p, Format::Tsv).unwrap_err().to_string();
        assert!(err.contains("train.tsv:2: the sentence is empty"), "{err}");
        std::fs::write(&p, "a\t1\nb\t \n").unwrap();
        let err = read(&p, Format::Tsv).unwrap_err().to_string();
        assert!(err.contains("train.tsv:2: the label is empty"), "{err}");
        assert_eq!(positive_label(&["A".into(), "B".into()]), None);
    }
}
