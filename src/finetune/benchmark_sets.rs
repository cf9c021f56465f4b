//! The BioBERT benchmark sets under a folder laid out as BioBERT's datasets are:
//! `ner/<SET>/` (train.tsv, devel.tsv, test.tsv), `re/<SET>/` or its folds `re/<SET>/<N>/`
//! (tsv, or SciBERT's JSON lines), and `qa/` with `train/BioASQ-train-factoid-<year>.json`,
//! `test/BioASQ-test-factoid-<year>-<batch>.json` and `golden/<YEAR><batch>_golden.json`.
//! `biobert evaluate` fine-tunes each set it finds; `--tasks` picks some by id.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// One benchmark set: its id (`ner/NCBI-disease`, `re/GAD/1`, `qa/4b`) and its files.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkSet {
    pub id: String,
    pub kind: SetKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SetKind {
    Ner {
        dir: PathBuf,
    },
    Re {
        dir: PathBuf,
    },
    /// A BioASQ year: its training file, its test batches and their golden files, in batch
    /// order.
    Qa {
        train: PathBuf,
        tests: Vec<PathBuf>,
        golden: Vec<PathBuf>,
    },
}

/// What was found: the sets, and a line for each folder passed over (and why).
pub struct Found {
    pub sets: Vec<BenchmarkSet>,
    pub skipped: Vec<String>,
}

/// Every set under `data`, NER first, then RE, then QA, each by name (folds by number).
pub fn discover(data: &Path) -> Result<Found> {
    if !data.is_dir() {
        bail!("--data {}: not a folder", data.display());
    }
    let mut found = Found {
        sets: Vec::new(),
        skipped: Vec::new(),
    };
    for dir in subfolders(&data.join("ner"))? {
        classification_set(&mut found, "ner", &dir, &dir_name(&dir));
    }
    for dir in subfolders(&data.join("re"))? {
        let name = dir_name(&dir);
        if has_split_files(&dir) {
            classification_set(&mut found, "re", &dir, &name);
            continue;
        }
        let folds = subfolders(&dir)?;
        if folds.is_empty() {
            classification_set(&mut found, "re", &dir, &name);
        }
        for fold in folds {
            classification_set(
                &mut found,
                "re",
                &fold,
                &format!("{name}/{}", dir_name(&fold)),
            );
        }
    }
    bioasq_years(&data.join("qa"), &mut found)?;
    if found.sets.is_empty() {
        bail!(
            "--data {}: no benchmark set found; expected ner/<SET>/train.tsv and test.tsv, re/<SET>/[<fold>/]train.tsv or train.txt and test.*, or qa/train, qa/test and qa/golden as BioBERT lays out BioASQ",
            data.display()
        );
    }
    Ok(found)
}

/// The sets `selectors` name: each an id, or the start of ids at a `/` (`ner`, `re/GAD`);
/// none given: all. A selector that names nothing is refused with the ids there are.
pub fn select(sets: Vec<BenchmarkSet>, selectors: &[String]) -> Result<Vec<BenchmarkSet>> {
    if selectors.is_empty() {
        return Ok(sets);
    }
    let matches = |id: &str, s: &str| {
        let s = s.trim_end_matches('/');
        id == s || id.starts_with(&format!("{s}/"))
    };
    for s in selectors {
        if !sets.iter().any(|set| matches(&set.id, s)) {
            let ids: Vec<&str> = sets.iter().map(|s| s.id.as_str()).collect();
            bail!(
                "--tasks {s}: no such set under --data; there are: {}",
                ids.join(", ")
            );
        }
    }
    Ok(sets
        .into_iter()
        .filter(|set| selectors.iter().any(|s| matches(&set.id, s)))
        .collect())
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The folders in `dir` (none if it is absent), by name with numbers in numeric order.
fn subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort_by_key(|p| {
        let name = dir_name(p);
        (name.parse::<u64>().unwrap_or(u64::MAX), name)
    });
    Ok(dirs)
}

fn has_split_files(dir: &Path) -> bool {
    let any = |names: &[&str]| names.iter().any(|n| dir.join(n).is_file());
    any(&["train.tsv", "train.txt"]) && any(&["test.tsv", "test.txt"])
}

fn classification_set(found: &mut Found, task: &str, dir: &Path, name: &str) {
    let id = format!("{task}/{name}");
    if has_split_files(dir) {
        let dir = dir.to_path_buf();
        let kind = match task {
            "ner" => SetKind::Ner { dir },
            _ => SetKind::Re { dir },
        };
        found.sets.push(BenchmarkSet { id, kind });
    } else {
        found.skipped.push(format!(
            "{id} ({}): no train and test file there",
            dir.display()
        ));
    }
}

/// The BioASQ years under `qa`: one set per training file with test batches. A test batch
/// without its golden file is refused: evaluate could not score it.
fn bioasq_years(qa: &Path, found: &mut Found) -> Result<()> {
    const TRAIN: (&str, &str) = ("BioASQ-train-factoid-", ".json");
    for (year, train) in files_named(&qa.join("train"), TRAIN) {
        let prefix = format!("BioASQ-test-factoid-{year}-");
        let mut tests: Vec<(u64, PathBuf)> = files_named(&qa.join("test"), (&prefix, ".json"))
            .into_iter()
            .filter_map(|(batch, p)| batch.parse().ok().map(|b| (b, p)))
            .collect();
        if tests.is_empty() {
            found.skipped.push(format!(
                "qa/{year} ({}): no test batch {prefix}<N>.json in {}",
                train.display(),
                qa.join("test").display()
            ));
            continue;
        }
        tests.sort();
        let mut golden = Vec::new();
        for (batch, test) in &tests {
            let g = qa
                .join("golden")
                .join(format!("{}{batch}_golden.json", year.to_uppercase()));
            if !g.is_file() {
                bail!(
                    "{}: no golden file {} to score it with",
                    test.display(),
                    g.display()
                );
            }
            golden.push(g);
        }
        found.sets.push(BenchmarkSet {
            id: format!("qa/{year}"),
            kind: SetKind::Qa {
                train,
                tests: tests.into_iter().map(|(_, p)| p).collect(),
                golden,
            },
        });
    }
    Ok(())
}

/// The files in `dir` named `<prefix><middle><suffix>`, as (middle, path), by middle.
fn files_named(dir: &Path, (prefix, suffix): (&str, &str)) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let middle = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
            (!middle.is_empty()).then(|| (middle.to_string(), p.clone()))
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "x").unwrap();
    }

    fn layout() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["train.tsv", "devel.tsv", "test.tsv"] {
            touch(&d.join("ner/NCBI-disease").join(f));
        }
        touch(&d.join("ner/notes/README"));
        for fold in ["1", "2", "10"] {
            for f in ["train.tsv", "test.tsv"] {
                touch(&d.join("re/GAD").join(fold).join(f));
            }
        }
        for f in ["train.txt", "dev.txt", "test.txt"] {
            touch(&d.join("re/chemprot").join(f));
        }
        touch(&d.join("qa/train/BioASQ-train-factoid-4b.json"));
        touch(&d.join("qa/train/BioASQ-train-factoid-6b.json"));
        for b in [2, 1, 10] {
            touch(&d.join(format!("qa/test/BioASQ-test-factoid-4b-{b}.json")));
            touch(&d.join(format!("qa/golden/4B{b}_golden.json")));
        }
        dir
    }

    #[test]
    fn finds_each_set_in_order_and_says_what_it_passed_over() {
        let dir = layout();
        let found = discover(dir.path()).unwrap();
        let ids: Vec<&str> = found.sets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "ner/NCBI-disease",
                "re/GAD/1",
                "re/GAD/2",
                "re/GAD/10",
                "re/chemprot",
                "qa/4b"
            ]
        );
        assert!(found.skipped[0].starts_with("ner/notes"));
        assert!(found.skipped[1].starts_with("qa/6b"), "{:?}", found.skipped);
        let SetKind::Qa { tests, golden, .. } = &found.sets[5].kind else {
            panic!("qa/4b is a QA set")
        };
        let names = |v: &[PathBuf]| -> Vec<String> { v.iter().map(|p| dir_name(p)).collect() };
        assert_eq!(
            names(tests),
            [
                "BioASQ-test-factoid-4b-1.json",
                "BioASQ-test-factoid-4b-2.json",
                "BioASQ-test-factoid-4b-10.json"
            ]
        );
        assert_eq!(
            names(golden),
            ["4B1_golden.json", "4B2_golden.json", "4B10_golden.json"]
        );
    }

    #[test]
    fn selectors_take_ids_and_their_prefixes_and_refuse_the_unknown() {
        let dir = layout();
        let sets = discover(dir.path()).unwrap().sets;
        let pick = |s: &[&str]| -> Result<Vec<String>> {
            let s: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            Ok(select(sets.clone(), &s)?
                .into_iter()
                .map(|s| s.id)
                .collect())
        };
        assert_eq!(pick(&[]).unwrap().len(), 6);
        assert_eq!(
            pick(&["re/GAD/"]).unwrap(),
            ["re/GAD/1", "re/GAD/2", "re/GAD/10"]
        );
        assert_eq!(
            pick(&["ner", "qa/4b"]).unwrap(),
            ["ner/NCBI-disease", "qa/4b"]
        );
        // A prefix stops at a '/': re/GAD/1 is not re/GAD/10.
        assert_eq!(pick(&["re/GAD/1"]).unwrap(), ["re/GAD/1"]);
        let e = pick(&["re/GA"]).unwrap_err().to_string();
        assert!(
            e.contains("--tasks re/GA: no such set") && e.contains("qa/4b"),
            "{e}"
        );
    }

    #[test]
    fn a_test_batch_without_its_golden_file_is_refused() {
        let dir = layout();
        std::fs::remove_file(dir.path().join("qa/golden/4B2_golden.json")).unwrap();
        let e = discover(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("BioASQ-test-factoid-4b-2.json: no golden file"),
            "{e}"
        );
        assert!(discover(&dir.path().join("ner/notes")).is_err());
    }
}
