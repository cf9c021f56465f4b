//! Published BioBERT v1.1 figures (`configs/biobert_reference.toml`, built in), each with
//! its source, and the notes of sets whose published figures are not comparable with ours.
//! `biobert evaluate` prints them beside its own figures.

use anyhow::{Context, Result};
use serde::Deserialize;

const REFERENCE: &str = include_str!("../../configs/biobert_reference.toml");

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// A set id, or the start of ids at a `/` (`re/GAD`: every fold).
    pub set: String,
    pub metric: String,
    /// In percent.
    pub value: f64,
    /// Rounded in its source ("about 52").
    #[serde(default)]
    pub approximate: bool,
    /// The table's column: "paper" or "biobert-pytorch".
    pub column: String,
    pub source: String,
    /// What in the published run is not what evaluate runs ("" when nothing).
    pub differs: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Note {
    pub set: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    #[serde(default)]
    pub figure: Vec<Figure>,
    #[serde(default)]
    pub note: Vec<Note>,
}

/// The columns of published figures, in the table's order.
pub const COLUMNS: [&str; 2] = ["paper", "biobert-pytorch"];

fn covers(pattern: &str, id: &str) -> bool {
    id == pattern || id.starts_with(&format!("{pattern}/"))
}

impl Reference {
    pub fn built_in() -> Result<Reference> {
        toml::from_str(REFERENCE).context("configs/biobert_reference.toml (built in)")
    }

    /// The figure for `set`'s `metric` in `column`, if one is published.
    pub fn figure(&self, set: &str, metric: &str, column: &str) -> Option<&Figure> {
        self.figure
            .iter()
            .find(|f| f.metric == metric && f.column == column && covers(&f.set, set))
    }

    /// The notes about `set`.
    pub fn notes(&self, set: &str) -> Vec<&str> {
        self.note
            .iter()
            .filter(|n| covers(&n.set, set))
            .map(|n| n.text.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_figures_load_each_with_a_source_and_a_known_column() {
        let r = Reference::built_in().unwrap();
        assert!(!r.figure.is_empty());
        for f in &r.figure {
            assert!(COLUMNS.contains(&f.column.as_str()), "{f:?}");
            assert!(f.source.len() > 20, "{f:?}");
            assert!((0.0..=100.0).contains(&f.value), "{f:?}");
        }
        let ncbi = r.figure("ner/NCBI-disease", "f1", "paper").unwrap();
        assert_eq!(ncbi.value, 89.71);
        // re/GAD covers each fold, not a set whose name starts alike.
        assert!(r.figure("re/GAD/3", "f1", "biobert-pytorch").is_some());
        assert!(r.figure("re/GADX", "f1", "biobert-pytorch").is_none());
        // ChemProt gets a note and no figure: BioBERT's is another metric on another copy.
        assert!(COLUMNS
            .iter()
            .all(|c| r.figure("re/chemprot", "micro_f1", c).is_none()));
        assert_eq!(r.notes("re/chemprot").len(), 1);
        assert_eq!(r.notes("qa/4b").len(), 1);
    }
}
