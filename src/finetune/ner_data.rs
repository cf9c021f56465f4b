//! BioBERT's NER layout: `token<TAB>label` a line, a blank line between sentences, labels
//! IOB (`B`, `I`, `O`, or typed as `B-Disease`). Words become WordPiece inputs with the
//! model's vocabulary; the label sits on a word's first piece (the others are ignored by the
//! loss), and a sentence longer than the model's window is cut into windows at word
//! boundaries, so that every word of every file gets a prediction.

use std::path::Path;

use anyhow::{bail, Context, Result};
use corpus_tools::tokenizer::WordPieceTokenizer;

/// Loss label of the pieces that carry none.
pub const IGNORED: i64 = -100;

#[derive(Debug, Clone, PartialEq)]
pub struct TaggedSentence {
    pub words: Vec<String>,
    pub labels: Vec<String>,
}

/// Reads a NER file. Errors name the file, the line and what was expected.
pub fn read(path: &Path) -> Result<Vec<TaggedSentence>> {
    let text = crate::finetune::text_file::read(path)?;
    let mut sentences = Vec::new();
    let mut current = TaggedSentence {
        words: Vec::new(),
        labels: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !current.words.is_empty() {
                sentences.push(std::mem::replace(
                    &mut current,
                    TaggedSentence {
                        words: Vec::new(),
                        labels: Vec::new(),
                    },
                ));
            }
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let Some((word, label)) = line.split_once('\t') else {
            bail!("{}: expected token<TAB>label, found no tab", at());
        };
        let label = label.trim();
        if word.trim().is_empty() {
            bail!("{}: empty token; expected token<TAB>label", at());
        }
        if !is_iob(label) {
            bail!(
                "{}: label {label:?}; expected O, B or I, optionally typed (B-Disease)",
                at()
            );
        }
        current.words.push(word.to_string());
        current.labels.push(label.to_string());
    }
    if !current.words.is_empty() {
        sentences.push(current);
    }
    if sentences.is_empty() {
        bail!("{}: no sentences", path.display());
    }
    Ok(sentences)
}

fn is_iob(label: &str) -> bool {
    label == "O"
        || ["B", "I"].iter().any(|p| {
            label == *p
                || label
                    .strip_prefix(p)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|t| !t.is_empty())
        })
}

/// The label set of a training file: "O" first, then the others sorted.
pub fn label_set(train: &[TaggedSentence]) -> Vec<String> {
    let mut labels: Vec<String> = train.iter().flat_map(|s| s.labels.clone()).collect();
    labels.sort();
    labels.dedup();
    labels.sort_by_key(|l| l != "O");
    labels
}

/// Label indices of a file's sentences; a label that training never saw is an error
/// naming the file and the sentence.
pub fn label_ids(
    sentences: &[TaggedSentence],
    labels: &[String],
    path: &Path,
) -> Result<Vec<Vec<usize>>> {
    sentences
        .iter()
        .enumerate()
        .map(|(k, s)| {
            s.labels
                .iter()
                .map(|l| {
                    labels.iter().position(|x| x == l).with_context(|| {
                        format!(
                            "{}: sentence {} has the label {l:?}, which the training file never uses (labels: {})",
                            path.display(),
                            k + 1,
                            labels.join(", ")
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// One model input: [CLS] pieces [SEP] with a label on each word's first piece.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub input_ids: Vec<i64>,
    pub labels: Vec<i64>,
    /// The sentence, and its words [first, last) this window predicts.
    pub sentence: usize,
    pub words: (usize, usize),
}

/// WordPiece inputs of tagged sentences, windows of at most `max_len` pieces.
pub fn windows(
    sentences: &[TaggedSentence],
    label_ids: &[Vec<usize>],
    tokenizer: &WordPieceTokenizer,
    max_len: usize,
) -> Result<Vec<Window>> {
    let id = |t: &str| {
        tokenizer
            .token_id(t)
            .map(i64::from)
            .with_context(|| format!("the vocabulary has no {t}"))
    };
    let (cls, sep, unk) = (id("[CLS]")?, id("[SEP]")?, id("[UNK]")?);
    let room = max_len.saturating_sub(2).max(1);
    let mut out = Vec::new();
    for (k, s) in sentences.iter().enumerate() {
        let pieces: Vec<Vec<i64>> = s
            .words
            .iter()
            .map(|w| -> Result<Vec<i64>> {
                let mut p: Vec<i64> = tokenizer.encode(w)?.into_iter().map(i64::from).collect();
                if p.is_empty() {
                    p.push(unk);
                }
                // A word longer than the window keeps its first pieces (the first carries
                // the label).
                p.truncate(room);
                Ok(p)
            })
            .collect::<Result<_>>()?;
        let mut first = 0;
        while first < pieces.len() {
            let (mut last, mut used) = (first, 0);
            while last < pieces.len() && used + pieces[last].len() <= room {
                used += pieces[last].len();
                last += 1;
            }
            let mut input_ids = vec![cls];
            let mut labels = vec![IGNORED];
            for w in first..last {
                for (j, &p) in pieces[w].iter().enumerate() {
                    input_ids.push(p);
                    labels.push(if j == 0 {
                        label_ids[k][w] as i64
                    } else {
                        IGNORED
                    });
                }
            }
            input_ids.push(sep);
            labels.push(IGNORED);
            out.push(Window {
                input_ids,
                labels,
                sentence: k,
                words: (first, last),
            });
            first = last;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.tsv");
        for (text, expect) in [
            ("a\tO\nb O\n", ":2: expected token<TAB>label"),
            ("a\tO\n\tB\n", ":2: empty token"),
            ("a\tX\n", ":1: label \"X\""),
            ("a\tB-\n", ":1: label \"B-\""),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read(&p).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
        std::fs::write(&p, "a\tB-Disease\nb\tI-Disease\n\n\nc\tO\n").unwrap();
        let s = read(&p).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(label_set(&s), ["O", "B-Disease", "I-Disease"]);
    }
}
