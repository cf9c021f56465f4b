//! corpus-tools on every real NCBI sample file, checked against independent counts
//! (tests/reference_counts.py, xml.etree), hand-counted sentences, a numpy reader of the
//! token shards written from Megatron's layout, and Hugging Face's tokenizers.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn reference(kind: &str, files: &[std::path::PathBuf]) -> serde_json::Value {
    let out = run_ok(
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference_counts.py"))
            .arg(kind)
            .args(files),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn extract(args: &[&str], inputs: &[(&str, &Path)]) -> (tempfile::TempDir, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("corpus");
    let mut cmd = corpus_tools();
    cmd.arg("extract").arg("--out").arg(&out).args(args);
    for (flag, path) in inputs {
        cmd.arg(flag).arg(path);
    }
    run_ok(&mut cmd);
    let m = manifest(&out);
    (tmp, m)
}

#[test]
fn pubmed_counts_match_xml_etree_file_by_file() {
    for file in pubmed_files() {
        let expected = reference("pubmed", std::slice::from_ref(&file));
        let f = &expected["files"][0];
        let (_tmp, m) = extract(&["--languages", "all"], &[("--pubmed", &file)]);
        let name = file.display();
        assert_eq!(
            count(&m, "pubmed_records"),
            f["records"].as_u64().unwrap(),
            "{name} records"
        );
        assert_eq!(
            count(&m, "pubmed_with_abstract"),
            f["with_abstract"].as_u64().unwrap(),
            "{name} abstracts"
        );
        assert_eq!(
            count(&m, "pubmed_delete_pmids"),
            f["delete_pmids"].as_u64().unwrap(),
            "{name} deletions"
        );
        let (_tmp, m) = extract(&[], &[("--pubmed", &file)]);
        assert_eq!(
            m["totals"]["documents"].as_u64().unwrap(),
            expected["documents"].as_u64().unwrap(),
            "{name} documents"
        );
    }
}

#[test]
fn all_pubmed_files_together_apply_deletions_in_file_name_order() {
    let files = pubmed_files();
    let expected = reference("pubmed", &files);
    let (_tmp, m) = extract(&[], &[("--pubmed", &shared_data().join("pubmed"))]);
    assert_eq!(
        m["totals"]["documents"].as_u64().unwrap(),
        expected["documents"].as_u64().unwrap()
    );
    assert_eq!(count(&m, "pubmed_records"), 614);
    assert_eq!(count(&m, "pubmed_delete_pmids"), 1);
    // 18 Italian records in the 2016 MEDLINE file: those with an abstract are skipped
    // for their language, the rest for having no abstract.
    assert!(count(&m, "skipped_language") > 0);
    assert_eq!(m["sources"].as_array().unwrap().len(), files.len());
}

#[test]
fn pmc_counts_match_xml_etree_file_by_file() {
    for file in pmc_files() {
        let expected = reference("pmc", std::slice::from_ref(&file));
        let f = &expected["files"][0];
        let (_tmp, m) = extract(&[], &[("--pmc", &file)]);
        let name = file.display();
        assert_eq!(
            count(&m, "pmc_articles"),
            f["articles"].as_u64().unwrap(),
            "{name} articles"
        );
        assert_eq!(
            count(&m, "pmc_with_abstract"),
            f["with_abstract"].as_u64().unwrap(),
            "{name} abstracts"
        );
        assert_eq!(
            m["totals"]["documents"].as_u64().unwrap(),
            1,
            "{name}: one document per article"
        );
    }
}

/// Sentences counted by reading each abstract (title included, one document each).
#[test]
fn sentences_of_the_small_pubmed_files_match_hand_counts() {
    let hand_counted = [
        ("pubmed1.xml", vec![6]),
        ("pubmed2.xml", vec![11, 8]),
        ("pubmed4.xml", vec![12]),
        ("pubmed-29768149.xml", vec![14]),
        ("test_current_medline.xml.gz", vec![6, 5, 15]),
    ];
    for (name, counts) in hand_counted {
        let (tmp, _) = extract(
            &[],
            &[("--pubmed", &shared_data().join("pubmed").join(name))],
        );
        let docs = documents(&tmp.path().join("corpus"));
        let got: Vec<usize> = docs.iter().map(Vec::len).collect();
        assert_eq!(got, counts, "{name}");
    }
}

#[test]
fn pmc_text_keeps_prose_and_drops_references_tables_and_citation_debris() {
    let (tmp, _) = extract(&[], &[("--pmc", &shared_data().join("pmc"))]);
    let text = documents(&tmp.path().join("corpus")).concat().join("\n");
    assert!(
        text.contains("Reisine et al. examined dental patients"),
        "citation removed cleanly"
    );
    for debris in ["[]", "()", "[,", ",]", "(,", ",)", " , ", " . "] {
        assert!(!text.contains(debris), "debris {debris:?} in the output");
    }
    for line in text.lines() {
        assert!(
            !line.ends_with(" .") && !line.ends_with(" ,"),
            "debris at the end of {line:?}"
        );
    }
    assert!(!text.contains("<xref"), "markup leaked");
    assert!(!text.contains("\u{E000}"), "citation placeholder leaked");
}

fn prepare_samples(out: &Path, vocab: &Path, extra: &[&str]) {
    run_ok(
        corpus_tools()
            .arg("prepare")
            .arg("--pubmed")
            .arg(shared_data().join("pubmed"))
            .arg("--pmc")
            .arg(shared_data().join("pmc"))
            .arg("--vocab")
            .arg(vocab)
            .arg("--out")
            .arg(out)
            .args(extra),
    );
}

#[test]
fn numpy_reader_of_megatrons_layout_decodes_our_shards_back_to_the_text() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("corpus");
    let vocab = minilm_dir().join("vocab.txt");
    prepare_samples(&out, &vocab, &["--target-tokens", "100000"]);
    run_ok(corpus_tools().arg("verify").arg(&out));
    let m = manifest(&out);
    let shards = m["shards"].as_array().unwrap();
    assert!(shards.len() >= 2, "several shards expected");
    let text_docs = documents(&out);
    let mut decoded_docs: Vec<Vec<String>> = Vec::new();
    for shard in shards {
        let prefix = out.join(shard["name"].as_str().unwrap());
        let result = run_ok(
            Command::new(venv_python())
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/megatron_reader.py"))
                .arg(&prefix)
                .arg(&vocab),
        );
        let text = String::from_utf8(result.stdout).unwrap();
        for doc in text.split("\n\n").filter(|d| !d.trim().is_empty()) {
            decoded_docs.push(doc.lines().map(str::to_string).collect());
        }
    }
    assert_eq!(decoded_docs.len(), text_docs.len());
    let (mut same, mut total) = (0, 0);
    for (decoded, text) in decoded_docs.iter().zip(&text_docs) {
        assert_eq!(decoded.len(), text.len());
        for (d, t) in decoded.iter().zip(text) {
            total += 1;
            if d.contains("[UNK]") || squash(d) == squash(&normalize(t)) {
                same += 1;
            }
        }
    }
    assert_eq!(
        same, total,
        "every sentence decodes back to its text, up to WordPiece normalisation"
    );
}

/// BERT's uncased normalisation: lower case, accents stripped (NFD without marks).
fn normalize(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.to_lowercase()
        .nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .collect()
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect()
}

#[test]
fn token_ids_equal_hugging_face_tokenizers_for_vocab_txt_and_tokenizer_json() {
    let tmp = tempfile::tempdir().unwrap();
    let model = minilm_dir();
    for (label, tokenizer_args) in [
        (
            "vocab.txt",
            vec![
                "--vocab".to_string(),
                model.join("vocab.txt").display().to_string(),
                "--lowercase".into(),
            ],
        ),
        (
            "tokenizer.json",
            vec![
                "--json".to_string(),
                model.join("tokenizer.json").display().to_string(),
            ],
        ),
    ] {
        let out = tmp.path().join(label);
        let vocab = model.join(label);
        prepare_samples(&out, &vocab, &[]);
        let sentences: Vec<String> = documents(&out).concat();
        let ours = token_ids(&out);
        let mut child = Command::new(venv_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenizer_reference.py"))
            .args(&tokenizer_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = sentences.join("\n") + "\n";
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap()
        });
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let theirs: Vec<Vec<u32>> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
            .collect();
        assert_eq!(theirs.len(), ours.len(), "{label}");
        let differing = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing,
            0,
            "{label}: {differing} of {} sentences tokenised differently",
            ours.len()
        );
    }
}

fn token_ids(dir: &Path) -> Vec<Vec<u32>> {
    let m = manifest(dir);
    let mut all = Vec::new();
    for shard in m["shards"].as_array().unwrap() {
        let ds = corpus_tools::indexed_dataset::IndexedDataset::open(
            &dir.join(shard["name"].as_str().unwrap()),
        )
        .unwrap();
        for i in 0..ds.sequences() {
            let mut ids = Vec::new();
            ds.read_sequence(i, &mut ids);
            all.push(ids);
        }
    }
    all
}
