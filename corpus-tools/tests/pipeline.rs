//! The corpus life cycle: update files and deletions, identical bytes whatever the thread
//! count, and `--resume` after a kill giving the same corpus as an uninterrupted run.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn citation(pmid: u64, title: &str) -> String {
    format!(
        "<PubmedArticle><MedlineCitation Status=\"MEDLINE\"><PMID Version=\"1\">{pmid}</PMID><Article>\
         <ArticleTitle>{title}.</ArticleTitle><Abstract><AbstractText>The abstract of {title}.</AbstractText></Abstract>\
         <Language>eng</Language></Article></MedlineCitation></PubmedArticle>\n"
    )
}

fn update_file(dir: &Path, name: &str, citations: &[(u64, &str)], deleted: &[u64]) {
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<PubmedArticleSet>\n");
    for (pmid, title) in citations {
        xml.push_str(&citation(*pmid, title));
    }
    if !deleted.is_empty() {
        xml.push_str("<DeleteCitation>");
        for pmid in deleted {
            xml.push_str(&format!("<PMID Version=\"1\">{pmid}</PMID>"));
        }
        xml.push_str("</DeleteCitation>\n");
    }
    xml.push_str("</PubmedArticleSet>\n");
    std::fs::write(dir.join(name), xml).unwrap();
}

#[test]
fn later_files_replace_records_and_deletions_remove_them() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    update_file(
        &input,
        "pubmed25n0001.xml",
        &[(1, "One v1"), (2, "Two v1"), (3, "Three v1")],
        &[],
    );
    update_file(
        &input,
        "pubmed25n0002.xml",
        &[(2, "Two v2"), (4, "Four v1")],
        &[3],
    );
    update_file(&input, "pubmed25n0003.xml", &[(3, "Three v3")], &[1]);
    // Named out of order on the command line: file-name order is what counts.
    let out = tmp.path().join("out");
    run_ok(
        corpus_tools()
            .arg("extract")
            .arg("--pubmed")
            .args(
                [
                    "pubmed25n0003.xml",
                    "pubmed25n0001.xml",
                    "pubmed25n0002.xml",
                ]
                .map(|f| input.join(f)),
            )
            .arg("--out")
            .arg(&out),
    );
    let titles: Vec<String> = documents(&out).into_iter().map(|d| d[0].clone()).collect();
    assert_eq!(titles, ["Two v2.", "Four v1.", "Three v3."]);
    let m = manifest(&out);
    assert_eq!(count(&m, "skipped_deleted"), 1);
    assert_eq!(count(&m, "skipped_superseded"), 2);
    assert_eq!(count(&m, "pubmed_delete_pmids"), 2);
}

/// The 2016 MEDLINE file copied `copies` times with distinct PMIDs (a prefix digit).
fn replicated_medline(dir: &Path, copies: usize) -> PathBuf {
    let mut xml = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(shared_data().join("pubmed/medline16n0902.xml.gz")).unwrap(),
    )
    .read_to_string(&mut xml)
    .unwrap();
    let input = dir.join("pubmed");
    std::fs::create_dir_all(&input).unwrap();
    for k in 1..=copies {
        let copy = xml.replace("<PMID Version=\"1\">", &format!("<PMID Version=\"1\">{k}"));
        std::fs::write(input.join(format!("medline16n{k:04}.xml")), copy).unwrap();
    }
    input
}

fn prepare(input: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = corpus_tools();
    cmd.arg("prepare")
        .arg("--pubmed")
        .arg(input)
        .arg("--vocab")
        .arg(minilm_dir().join("vocab.txt"))
        .arg("--out")
        .arg(out)
        .args(extra);
    cmd
}

fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    listing(dir)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn same_bytes_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let input = replicated_medline(tmp.path(), 3);
    let (one, four) = (tmp.path().join("t1"), tmp.path().join("t4"));
    run_ok(&mut prepare(
        &input,
        &one,
        &["--threads", "1", "--target-tokens", "40000"],
    ));
    run_ok(&mut prepare(
        &input,
        &four,
        &["--threads", "4", "--target-tokens", "40000"],
    ));
    let (a, b) = (contents(&one), contents(&four));
    assert!(a.len() > 10, "several shards expected: {:?}", listing(&one));
    assert_eq!(
        a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        b.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between 1 and 4 threads");
    }
}

#[test]
fn resume_after_kill_gives_the_uninterrupted_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let input = replicated_medline(tmp.path(), 6);
    let args = ["--threads", "2", "--target-tokens", "20000"];
    let reference = tmp.path().join("reference");
    run_ok(&mut prepare(&input, &reference, &args));

    let out = tmp.path().join("interrupted");
    let mut child = prepare(&input, &out, &args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !out.join("shard_00003.shard.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no shard appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(
        !out.join("manifest.json").exists(),
        "the run finished before the kill"
    );

    let refused = prepare(&input, &out, &args).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    let changed = prepare(&input, &out, &["--resume", "--target-tokens", "30000"])
        .output()
        .unwrap();
    assert!(
        !changed.status.success(),
        "settings changed: must not resume"
    );

    let mut resume_args = args.to_vec();
    resume_args.push("--resume");
    let resumed = run_ok(&mut prepare(&input, &out, &resume_args));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming after"));
    let (a, b) = (contents(&reference), contents(&out));
    assert_eq!(
        a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        b.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs after resume");
    }
    run_ok(corpus_tools().arg("verify").arg(&out));
}

#[test]
fn verify_catches_a_flipped_byte_and_inspect_shows_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    run_ok(&mut prepare(&shared_data().join("pubmed"), &out, &[]));
    let inspected = run_ok(corpus_tools().arg("inspect").arg(&out));
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(
        text.contains("sentence length (tokens)") && text.contains("--- document 0"),
        "{text}"
    );
    let bin = out.join("shard_00000.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&bin, bytes).unwrap();
    let failed = corpus_tools().arg("verify").arg(&out).output().unwrap();
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("shard_00000.bin: sha256 differs"));
}
