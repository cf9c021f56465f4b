//! Hostile compressed input cannot make `prepare` take memory without bound: a gzip bomb
//! of zeros, one word of 256 MiB in a PubMed abstract, and a 40 MiB word in a JATS article
//! (a plain file and a member of a `.tar.gz` package). Each run stops with one error line
//! naming the file, and its peak resident memory (the kernel's maxrss of that process)
//! stays under `BOUND_MIB`: the XML reader holds at most 16 MiB between two markup
//! characters and 64 MiB per record (`xml_tree::MAX_EVENT_BYTES`, `MAX_RECORD_BYTES`). An
//! abstract of three 15 MiB words, each under the reader's limit, is read, its paragraph
//! dropped and counted (`extract::MAX_PARAGRAPH_BYTES`), within the same bound.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use flate2::write::GzEncoder;
use flate2::Compression;

const BOUND_MIB: i64 = 400;
const HUGE: usize = 256 << 20;

/// Writes `head`, `count` copies of `byte`, then `tail`, through gzip.
fn gz(path: &Path, head: &str, byte: u8, count: usize, tail: &str) {
    let mut z = GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::fast());
    z.write_all(head.as_bytes()).unwrap();
    let block = vec![byte; 1 << 20];
    for _ in 0..count / block.len() {
        z.write_all(&block).unwrap();
    }
    z.write_all(tail.as_bytes()).unwrap();
    z.finish().unwrap();
}

const PUBMED_HEAD: &str = "<?xml version=\"1.0\"?>\n<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>1</PMID><Article><ArticleTitle>T</ArticleTitle><Abstract><AbstractText>";
const PUBMED_TAIL: &str =
    "</AbstractText></Abstract></Article></MedlineCitation></PubmedArticle></PubmedArticleSet>\n";
const JATS_HEAD: &str = "<?xml version=\"1.0\"?>\n<article><front><article-meta><title-group><article-title>T</article-title></title-group></article-meta></front><body><p>";
const JATS_TAIL: &str = "</p></body></article>\n";

/// Runs `prepare` on one input; returns (exit code, stderr, peak RSS in MiB). The child is
/// reaped by wait4, which also reports its peak memory, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn prepare(flag: &str, input: &Path, out: &Path) -> (i32, String, i64) {
    let child = corpus_tools()
        .arg("prepare")
        .arg(flag)
        .arg(input)
        .arg("--vocab")
        .arg(minilm_dir().join("vocab.txt"))
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; wait4 reaps our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid);
    (libc::WEXITSTATUS(status), text, usage.ru_maxrss / 1024)
}

fn tar_gz_with(path: &Path, members: &[(&str, PathBuf)]) {
    let z = GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::fast());
    let mut tar = tar::Builder::new(z);
    for (name, file) in members {
        tar.append_path_with_name(file, name).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn bombs_stop_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let zeros = dir.join("pubmed26n0001.xml.gz");
    gz(&zeros, PUBMED_HEAD, 0, HUGE, PUBMED_TAIL);
    let word = dir.join("pubmed26n0002.xml.gz");
    gz(&word, PUBMED_HEAD, b'a', HUGE, PUBMED_TAIL);
    let jats = dir.join("PMC1.nxml");
    {
        let mut f = std::fs::File::create(&jats).unwrap();
        f.write_all(JATS_HEAD.as_bytes()).unwrap();
        f.write_all(&vec![b'a'; 40 << 20]).unwrap();
        f.write_all(JATS_TAIL.as_bytes()).unwrap();
    }
    let package = dir.join("oa_comm_xml.bomb.tar.gz");
    tar_gz_with(&package, &[("PMC1/PMC1.nxml", jats.clone())]);
    for (i, (flag, input)) in [
        ("--pubmed", &zeros),
        ("--pubmed", &word),
        ("--pmc", &jats),
        ("--pmc", &package),
    ]
    .into_iter()
    .enumerate()
    {
        let (code, stderr, peak) = prepare(flag, input, &dir.join(format!("out{i}")));
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(code, 1, "{name}: {stderr}");
        let error = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("");
        assert!(
            error.contains(&name) && error.contains("without markup"),
            "{name}: {stderr}"
        );
        assert!(
            peak < BOUND_MIB,
            "{name}: peak RSS {peak} MiB (bound {BOUND_MIB})"
        );
        eprintln!("{name}: peak RSS {peak} MiB");
    }
    let under = dir.join("pubmed26n0003.xml.gz");
    let words = format!("{}<i>x</i> ", "a".repeat(15 << 20)).repeat(3);
    gz(
        &under,
        &format!("{PUBMED_HEAD}{words}"),
        b' ',
        0,
        PUBMED_TAIL,
    );
    let out = dir.join("out-under");
    let (code, stderr, peak) = prepare("--pubmed", &under, &out);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        count(&manifest(&out), "skipped_paragraphs_over_1048576_bytes"),
        1
    );
    assert!(peak < BOUND_MIB, "peak RSS {peak} MiB (bound {BOUND_MIB})");
    eprintln!("three 15 MiB words: peak RSS {peak} MiB");
}
