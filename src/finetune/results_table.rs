//! `biobert evaluate`'s table: per benchmark set and metric, our mean over the seeds that
//! ran (and their sample standard deviation), beside the published BioBERT v1.1 figures
//! with their sources, as markdown and as JSON. Scores are read from each run's
//! metrics.json, so the table says exactly what the runs wrote.

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::Value;

use crate::finetune::reference_figures::{Figure, Reference, COLUMNS};

/// One finished fine-tuning: its set, seed and metrics.json.
pub struct FinishedRun {
    pub set: String,
    pub seed: u64,
    pub metrics: Value,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub set: String,
    pub metric: String,
    pub label: String,
    /// In percent, one per seed, in seed order.
    pub values: Vec<f64>,
    pub seeds: Vec<u64>,
    pub mean: f64,
    /// Sample standard deviation over the seeds (absent with one seed); over the folds in a
    /// row of folds.
    pub sd: Option<f64>,
    /// A row of folds (`re/GAD`): how many, each fold's value its mean over the seeds.
    pub folds: Option<usize>,
    /// Published figures by column, with their sources.
    pub published: Vec<Published>,
}

#[derive(Debug, Serialize)]
pub struct Published {
    pub column: String,
    pub value: f64,
    pub approximate: bool,
    pub source: String,
    pub differs: String,
}

/// The metrics of one run as (key, label, value in percent).
fn scores(set: &str, metrics: &Value) -> Result<Vec<(&'static str, String, f64)>> {
    let test = &metrics["test"];
    let pct = |v: &Value, what: &str| -> Result<f64> {
        match v.as_f64() {
            Some(x) => Ok(100.0 * x),
            None => bail!("{set}: metrics.json has no {what}"),
        }
    };
    Ok(match metrics["task"].as_str() {
        Some("ner") => vec![("f1", "entity F1".into(), pct(&test["f1"], "test.f1")?)],
        Some("re") if test["f1"].is_number() => {
            vec![(
                "f1",
                "F1, positive class".into(),
                pct(&test["f1"], "test.f1")?,
            )]
        }
        Some("re") => {
            let labels = metrics["labels"].as_array().map_or(0, Vec::len);
            let label = format!("micro-F1, {labels} labels");
            vec![("micro_f1", label, pct(&test["micro_f1"], "test.micro_f1")?)]
        }
        Some("qa") => {
            let mean = &test["mean"];
            let get = |k: &str| pct(&mean[k], &format!("test.mean.{k}"));
            vec![
                (
                    "strict_accuracy",
                    "strict accuracy".into(),
                    get("strict_accuracy")?,
                ),
                (
                    "lenient_accuracy",
                    "lenient accuracy".into(),
                    get("lenient_accuracy")?,
                ),
                ("mrr", "MRR".into(), get("mrr")?),
            ]
        }
        other => bail!("{set}: metrics.json names no known task ({other:?})"),
    })
}

/// The rows, in the order of `sets`, each over the runs of that set.
pub fn rows(sets: &[String], runs: &[FinishedRun], reference: &Reference) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for set in sets {
        let mut mine: Vec<&FinishedRun> = runs.iter().filter(|r| &r.set == set).collect();
        mine.sort_by_key(|r| r.seed);
        // Each run's scores, read once: (key, label, value) per metric, in the same order.
        let per_run = mine
            .iter()
            .map(|r| scores(set, &r.metrics))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = per_run.first() else {
            continue;
        };
        for (i, (metric, label, _)) in first.iter().enumerate() {
            let values: Vec<f64> = per_run.iter().map(|s| s[i].2).collect();
            let published = COLUMNS
                .iter()
                .filter_map(|c| reference.figure(set, metric, c))
                .map(Published::from)
                .collect();
            let (mean, sd) = mean_sd(&values);
            rows.push(Row {
                set: set.clone(),
                metric: metric.to_string(),
                label: label.clone(),
                seeds: mine.iter().map(|r| r.seed).collect(),
                values,
                mean,
                sd,
                folds: None,
                published,
            });
        }
    }
    let folds = fold_rows(&rows, reference);
    Ok(rows.into_iter().chain(folds).collect())
}

/// For a set run on two or more of its folds (`re/GAD/1`, `re/GAD/2`, ...): a row per
/// metric over the folds, as BioBERT reports GAD and EU-ADR (the mean of 10 folds).
fn fold_rows(rows: &[Row], reference: &Reference) -> Vec<Row> {
    let parent = |id: &str| -> Option<String> {
        let (parent, fold) = id.rsplit_once('/')?;
        fold.parse::<u64>().ok().map(|_| parent.to_string())
    };
    let mut out: Vec<Row> = Vec::new();
    for row in rows {
        let Some(p) = parent(&row.set) else { continue };
        if out.iter().any(|r| r.set == p && r.metric == row.metric) {
            continue;
        }
        let same: Vec<&Row> = rows
            .iter()
            .filter(|r| r.metric == row.metric && parent(&r.set).as_deref() == Some(p.as_str()))
            .collect();
        if same.len() < 2 {
            continue;
        }
        let values: Vec<f64> = same.iter().map(|r| r.mean).collect();
        let (mean, sd) = mean_sd(&values);
        let published = COLUMNS
            .iter()
            .filter_map(|c| reference.figure(&p, &row.metric, c))
            .map(Published::from)
            .collect();
        out.push(Row {
            set: p.clone(),
            metric: row.metric.clone(),
            label: row.label.clone(),
            seeds: row.seeds.clone(),
            values,
            mean,
            sd,
            folds: Some(same.len()),
            published,
        });
    }
    out
}

impl From<&Figure> for Published {
    fn from(f: &Figure) -> Published {
        Published {
            column: f.column.clone(),
            value: f.value,
            approximate: f.approximate,
            source: f.source.clone(),
            differs: f.differs.clone(),
        }
    }
}

/// The mean and, from two values on, the sample standard deviation.
pub fn mean_sd(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.len() > 1).then(|| {
        let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
        (ss / (n - 1.0)).sqrt()
    });
    (mean, sd)
}

/// Footnotes, numbered in the order they are first used.
#[derive(Default)]
struct Footnotes(Vec<String>);

impl Footnotes {
    fn mark(&mut self, text: &str) -> usize {
        match self.0.iter().position(|t| t == text) {
            Some(i) => i + 1,
            None => {
                self.0.push(text.to_string());
                self.0.len()
            }
        }
    }
}

/// The markdown table: `heading` lines first, then the table, its footnotes and sources.
pub fn markdown(heading: &[String], rows: &[Row], reference: &Reference) -> String {
    let mut notes = Footnotes::default();
    let mut text = heading.join("\n") + "\n\n";
    text +=
        "| set | metric | ours | seeds | BioBERT v1.1, paper | BioBERT v1.1, biobert-pytorch |\n";
    text += "|---|---|---:|---:|---:|---:|\n";
    let mut sources: Vec<String> = Vec::new();
    for row in rows {
        let ours = match row.sd {
            Some(sd) => format!("{:.2} ± {sd:.2}", row.mean),
            None => format!("{:.2}", row.mean),
        };
        let set_notes: Vec<usize> = reference
            .notes(&row.set)
            .iter()
            .map(|n| notes.mark(n))
            .collect();
        let mut cells = Vec::new();
        for column in COLUMNS {
            cells.push(match row.published.iter().find(|p| p.column == column) {
                Some(p) => {
                    if !sources.contains(&p.source) {
                        sources.push(p.source.clone());
                    }
                    let value = if p.approximate {
                        format!("≈{:.0}", p.value)
                    } else {
                        format!("{:.2}", p.value)
                    };
                    if p.differs.is_empty() {
                        value
                    } else {
                        format!("{value} [{}]", notes.mark(&p.differs))
                    }
                }
                None => "—".to_string(),
            });
        }
        let marks: String = set_notes.iter().map(|n| format!(" [{n}]")).collect();
        let (set, runs) = match row.folds {
            Some(k) => (
                format!("{}, mean of {k} folds", row.set),
                format!("{} per fold", row.seeds.len()),
            ),
            None => (row.set.clone(), row.values.len().to_string()),
        };
        text += &format!(
            "| {set}{marks} | {} | {ours} | {runs} | {} | {} |\n",
            row.label, cells[0], cells[1]
        );
    }
    if !notes.0.is_empty() {
        text += "\n";
        for (i, n) in notes.0.iter().enumerate() {
            text += &format!("[{}] {n}\n", i + 1);
        }
    }
    if !sources.is_empty() {
        text += "\nPublished figures:\n";
        for s in &sources {
            text += &format!("- {s}\n");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(set: &str, seed: u64, metrics: Value) -> FinishedRun {
        FinishedRun {
            set: set.into(),
            seed,
            metrics,
        }
    }

    #[test]
    fn rows_read_each_task_metric_in_percent_with_mean_and_spread() {
        let reference = Reference::built_in().unwrap();
        let runs = vec![
            run(
                "ner/NCBI-disease",
                2,
                json!({"task": "ner", "test": {"f1": 0.80}}),
            ),
            run(
                "ner/NCBI-disease",
                1,
                json!({"task": "ner", "test": {"f1": 0.84}}),
            ),
            run(
                "re/GAD/1",
                1,
                json!({"task": "re", "labels": ["0", "1"], "test": {"f1": 0.75, "micro_f1": 0.7}}),
            ),
            run(
                "re/chemprot",
                1,
                json!({"task": "re", "labels": ["A", "B", "C"], "test": {"f1": null, "micro_f1": 0.5}}),
            ),
            run(
                "qa/5b",
                1,
                json!({"task": "qa", "test": {"mean": {"strict_accuracy": 0.25, "lenient_accuracy": 0.5, "mrr": 0.3}}}),
            ),
        ];
        let sets: Vec<String> = ["ner/NCBI-disease", "re/GAD/1", "re/chemprot", "qa/5b"]
            .map(String::from)
            .to_vec();
        let rows = rows(&sets, &runs, &reference).unwrap();
        assert_eq!(rows.len(), 6);
        let ner = &rows[0];
        assert_eq!(
            (ner.seeds.clone(), ner.values.clone()),
            (vec![1, 2], vec![84.0, 80.0])
        );
        assert!((ner.mean - 82.0).abs() < 1e-9);
        assert!((ner.sd.unwrap() - 8f64.sqrt()).abs() < 1e-9);
        assert_eq!(ner.published.len(), 2);
        assert_eq!((rows[1].metric.as_str(), rows[1].sd), ("f1", None));
        assert_eq!(rows[2].label, "micro-F1, 3 labels");
        assert!(rows[2].published.is_empty());
        assert_eq!(rows[5].metric, "mrr");
        assert_eq!(rows[5].published[0].value, 52.0);

        let md = markdown(&["# t".to_string()], &rows, &reference);
        assert!(
            md.contains("| ner/NCBI-disease | entity F1 | 82.00 ± 2.83 | 2 | 89.71 [1] | 88.30 |"),
            "{md}"
        );
        assert!(
            md.contains("| re/chemprot [3] | micro-F1, 3 labels | 50.00 | 1 | — | — |"),
            "{md}"
        );
        assert!(
            md.contains("| qa/5b [4] | MRR | 30.00 | 1 | ≈52 [5] | — |"),
            "{md}"
        );
        assert!(md.contains("[3] no published figure beside it"), "{md}");
        assert!(md.contains("Published figures:\n- Lee et al."), "{md}");
    }

    #[test]
    fn sets_run_on_several_folds_get_a_row_over_the_folds() {
        let reference = Reference::built_in().unwrap();
        let f1 =
            |x: f64| json!({"task": "re", "labels": ["0", "1"], "test": {"f1": x, "micro_f1": x}});
        let runs = vec![
            run("re/GAD/1", 1, f1(0.70)),
            run("re/GAD/1", 2, f1(0.80)),
            run("re/GAD/2", 1, f1(0.90)),
            run("re/GAD/2", 2, f1(0.90)),
        ];
        let sets: Vec<String> = vec!["re/GAD/1".into(), "re/GAD/2".into()];
        let rows = rows(&sets, &runs, &reference).unwrap();
        assert_eq!(rows.len(), 3);
        let over = &rows[2];
        assert_eq!((over.set.as_str(), over.folds), ("re/GAD", Some(2)));
        assert!((over.mean - 82.5).abs() < 1e-9 && over.values.len() == 2);
        assert!((over.sd.unwrap() - 15.0 / 2f64.sqrt()).abs() < 1e-9);
        let md = markdown(&[], &rows, &reference);
        assert!(md.contains("| re/GAD, mean of 2 folds | F1, positive class | 82.50 ± 10.61 | 2 per fold | — | 82.37 [1] |"), "{md}");
    }

    #[test]
    fn a_metrics_file_without_its_score_is_refused_by_name() {
        let reference = Reference::built_in().unwrap();
        let runs = vec![run("ner/X", 1, json!({"task": "ner", "test": {}}))];
        let e = rows(&["ner/X".into()], &runs, &reference).unwrap_err();
        assert_eq!(e.to_string(), "ner/X: metrics.json has no test.f1");
        assert_eq!(mean_sd(&[2.0]), (2.0, None));
    }
}
