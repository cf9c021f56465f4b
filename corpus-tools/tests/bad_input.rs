//! Bad input: one line naming the file and where, a non-zero exit, and no partial shard.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn truncated_gz(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(shared_data().join("pubmed/medline16n0902.xml.gz")).unwrap();
    let path = dir.join("pubmed25n0002.xml.gz");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    path
}

/// Runs `extract` on `input`; returns (exit code, stderr, files left in --out).
fn extract_fails(input: &Path, extra: &[&str]) -> (Option<i32>, String, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let result = corpus_tools()
        .arg("extract")
        .arg("--pubmed")
        .arg(input)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    (result.status.code(), stderr, listing(&out))
}

fn assert_clean_failure(input: &Path, expect: &[&str]) {
    let (code, stderr, left) = extract_fails(input, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "one error line expected:\n{stderr}");
    for e in expect {
        assert!(
            error_lines[0].contains(e),
            "{e:?} not in {:?}",
            error_lines[0]
        );
    }
    let shards: Vec<&String> = left
        .iter()
        .filter(|f| {
            f.contains(".txt.zst")
                || f.ends_with(".bin")
                || f.ends_with(".idx")
                || f.ends_with(".tmp")
                || f == &"manifest.json"
        })
        .collect();
    assert!(shards.is_empty(), "partial output left: {shards:?}");
}

#[test]
fn truncated_gzip_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = truncated_gz(tmp.path());
    assert_clean_failure(&path, &["pubmed25n0002.xml.gz", "truncated"]);
}

#[test]
fn malformed_xml_names_the_file_line_and_record() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.xml");
    std::fs::write(
        &path,
        "<PubmedArticleSet>\n<PubmedArticle><MedlineCitation><PMID>1</PMID></MedlineCitation></PubmedArticle>\n\
         <PubmedArticle><MedlineCitation><PMID>2</PMID>\n<Article></Artikel></MedlineCitation></PubmedArticle>\n</PubmedArticleSet>\n",
    )
    .unwrap();
    assert_clean_failure(&path, &["bad.xml", "line 4", "record 2", "after PMID 1"]);
}

#[test]
fn a_file_that_is_not_xml_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notes.xml");
    std::fs::write(&path, "PMID- 12345\nTI  - a MEDLINE text record, not XML\n").unwrap();
    assert_clean_failure(&path, &["notes.xml", "not XML"]);
    let jats = tmp.path().join("article.xml");
    std::fs::write(&jats, "<article><front/></article>").unwrap();
    assert_clean_failure(&jats, &["article.xml", "expected a PubmedArticleSet"]);
}

#[test]
fn gzip_name_on_plain_bytes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("pubmed.xml.gz");
    std::fs::write(&path, "<PubmedArticleSet/>").unwrap();
    assert_clean_failure(&path, &["pubmed.xml.gz", "gzip"]);
}

#[test]
fn empty_folder_and_unreadable_file_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_clean_failure(&empty, &["empty", "no input files"]);
    let dangling = tmp.path().join("gone.xml");
    std::os::unix::fs::symlink(tmp.path().join("nowhere.xml"), &dangling).unwrap();
    assert_clean_failure(&dangling, &["gone.xml", "cannot read"]);
}

#[test]
fn on_error_skip_keeps_the_records_before_the_damage_and_reports_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = truncated_gz(tmp.path());
    std::fs::copy(
        shared_data().join("pubmed/pubmed4.xml"),
        tmp.path().join("pubmed25n0001.xml"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let result = run_ok(
        corpus_tools()
            .arg("extract")
            .arg("--pubmed")
            .arg(tmp.path())
            .args(["--on-error", "skip", "--out"])
            .arg(&out),
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("files with errors 1"), "{stdout}");
    let m = manifest(&out);
    assert_eq!(count(&m, "files_with_errors"), 1);
    let docs = m["totals"]["documents"].as_u64().unwrap();
    assert!(
        docs > 1 && docs < 527,
        "records before the damage are kept: {docs}"
    );
    let sources = m["sources"].as_array().unwrap();
    assert!(sources.iter().any(|s| s["path"]
        .as_str()
        .unwrap()
        .ends_with(&*bad.file_name().unwrap().to_string_lossy())
        && s["error"].is_string()));
    run_ok(corpus_tools().arg("verify").arg(&out));
}

/// A "sentence" of ~100,000 tokens (a table or a sequence dump that lost its breaks) is
/// dropped and counted, not kept for the trainer to cut down every time it is drawn.
#[test]
fn an_overlong_sentence_is_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let words: Vec<String> = (0..50_000).map(|i| format!("ACGT{i}")).collect();
    let xml = format!(
        "<?xml version=\"1.0\"?>\n<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>42</PMID>\
         <Article><Language>eng</Language><ArticleTitle>A normal title.</ArticleTitle><Abstract>\
         <AbstractText>A first sentence that is fine. {}</AbstractText></Abstract></Article>\
         </MedlineCitation></PubmedArticle></PubmedArticleSet>\n",
        words.join(" ")
    );
    let input = tmp.path().join("pubmed25n0001.xml");
    std::fs::write(&input, xml).unwrap();
    let out = tmp.path().join("corpus");
    let result = run_ok(
        corpus_tools()
            .arg("prepare")
            .arg("--pubmed")
            .arg(&input)
            .arg("--vocab")
            .arg(minilm_dir().join("vocab.txt"))
            .arg("--out")
            .arg(&out),
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("sentences over 4096 tokens 1"), "{stdout}");
    let m = manifest(&out);
    assert_eq!(count(&m, "skipped_sentences_over_4096_tokens"), 1);
    assert_eq!(count(&m, "documents"), 1);
    assert!(count(&m, "tokens") < 100, "{m}");
}

/// prepare writes only into a new or empty folder: files of someone else's are not
/// overwritten.
#[test]
fn prepare_refuses_a_folder_that_holds_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("busy");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("shard_00000.bin"), "not ours").unwrap();
    let result = corpus_tools()
        .arg("prepare")
        .arg("--pubmed")
        .arg(shared_data().join("pubmed/pubmed1.xml"))
        .arg("--vocab")
        .arg(minilm_dir().join("vocab.txt"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("shard_00000.bin")).unwrap(),
        "not ours"
    );
}

/// `--on-error skip` with every input bad keeps nothing: that is a failure, and the
/// folder is not left behind to look like an interrupted run.
#[test]
fn every_file_bad_is_an_error_and_leaves_no_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("pubmed25n0009.xml");
    std::fs::write(&bad, "this is not XML at all\n").unwrap();
    let out = tmp.path().join("corpus");
    let prepare = |extra: &[&str]| {
        corpus_tools()
            .arg("prepare")
            .arg("--pubmed")
            .arg(&bad)
            .arg("--vocab")
            .arg(minilm_dir().join("vocab.txt"))
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let skipped = prepare(&["--on-error", "skip"]);
    let stderr = String::from_utf8_lossy(&skipped.stderr);
    assert!(!skipped.status.success(), "{stderr}");
    assert!(stderr.contains("no document was kept"), "{stderr}");
    assert!(!out.exists(), "{:?}", listing(&out));
    // A run that failed on bad input does not block the next one either.
    let failed = prepare(&[]);
    assert!(!failed.status.success());
    assert!(!out.exists(), "{:?}", listing(&out));
}

/// verify fails a corpus with no documents, and every reader refuses a manifest whose
/// shard names climb out of the corpus folder.
#[test]
fn verify_refuses_empty_corpora_and_names_outside_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("corpus");
    run_ok(
        corpus_tools()
            .arg("prepare")
            .arg("--pubmed")
            .arg(shared_data().join("pubmed/pubmed1.xml"))
            .arg("--vocab")
            .arg(minilm_dir().join("vocab.txt"))
            .arg("--out")
            .arg(&out),
    );
    let original = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
        f(&mut m);
        std::fs::write(out.join("manifest.json"), m.to_string()).unwrap();
    };
    let verify = || corpus_tools().arg("verify").arg(&out).output().unwrap();

    edit(&|m| {
        m["shards"] = serde_json::json!([]);
        m["totals"]["documents"] = 0.into();
        m["totals"]["sentences"] = 0.into();
        m["totals"]["tokens"] = 0.into();
    });
    let v = verify();
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stderr).contains("holds no documents"));

    edit(&|m| m["shards"][0]["name"] = "../../etc/shard_00000".into());
    let v = verify();
    let stderr = String::from_utf8_lossy(&v.stderr);
    assert!(!v.status.success());
    assert!(stderr.contains("outside the corpus folder"), "{stderr}");
}
