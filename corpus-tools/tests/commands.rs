//! `extract` then `shard` equals `prepare`; `vocab` trains a usable vocabulary.

mod common;

use common::*;
use std::path::Path;

#[test]
fn extract_then_shard_gives_the_token_shards_of_prepare() {
    let tmp = tempfile::tempdir().unwrap();
    let vocab = minilm_dir().join("vocab.txt");
    let (text, tokens, prepared) = (
        tmp.path().join("text"),
        tmp.path().join("tokens"),
        tmp.path().join("prepared"),
    );
    let data = shared_data();
    run_ok(
        corpus_tools()
            .arg("extract")
            .arg("--pubmed")
            .arg(data.join("pubmed"))
            .arg("--pmc")
            .arg(data.join("pmc"))
            .arg("--out")
            .arg(&text),
    );
    run_ok(
        corpus_tools()
            .arg("shard")
            .arg("--text")
            .arg(&text)
            .arg("--vocab")
            .arg(&vocab)
            .args(["--target-tokens", "60000", "--out"])
            .arg(&tokens),
    );
    run_ok(
        corpus_tools()
            .arg("prepare")
            .arg("--pubmed")
            .arg(data.join("pubmed"))
            .arg("--pmc")
            .arg(data.join("pmc"))
            .arg("--vocab")
            .arg(&vocab)
            .args(["--target-tokens", "60000", "--out"])
            .arg(&prepared),
    );
    run_ok(corpus_tools().arg("verify").arg(&tokens));
    let m = manifest(&tokens);
    let shards = m["shards"].as_array().unwrap();
    assert!(shards.len() >= 3);
    for shard in shards {
        let name = shard["name"].as_str().unwrap();
        for ext in ["bin", "idx"] {
            let a = std::fs::read(tokens.join(format!("{name}.{ext}"))).unwrap();
            let b = std::fs::read(prepared.join(format!("{name}.{ext}"))).unwrap();
            assert!(a == b, "{name}.{ext} differs");
        }
    }
    assert_eq!(manifest(&prepared)["totals"], m["totals"]);
}

#[test]
fn vocab_trains_a_cased_vocabulary_that_prepare_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("text");
    run_ok(
        corpus_tools()
            .arg("extract")
            .arg("--pubmed")
            .arg(shared_data().join("pubmed"))
            .arg("--out")
            .arg(&text),
    );
    let vocab = tmp.path().join("vocab.txt");
    let out = run_ok(
        corpus_tools()
            .arg("vocab")
            .arg("--text")
            .arg(&text)
            .args(["--size", "3000", "--out"])
            .arg(&vocab),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("entries written"));
    let lines: Vec<String> = std::fs::read_to_string(&vocab)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(&lines[..5], ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
    assert!(lines.len() > 1000 && lines.len() <= 3000, "{}", lines.len());
    assert!(
        lines.iter().any(|l| l == "##s"),
        "continuation pieces expected"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.chars().next().is_some_and(char::is_uppercase)),
        "cased"
    );
    let corpus = tmp.path().join("corpus");
    run_ok(
        corpus_tools()
            .arg("prepare")
            .arg("--pubmed")
            .arg(shared_data().join("pubmed"))
            .arg("--vocab")
            .arg(&vocab)
            .arg("--out")
            .arg(&corpus),
    );
    let m = manifest(&corpus);
    assert_eq!(m["tokenizer"]["lowercase"], false);
    let ds =
        corpus_tools::indexed_dataset::IndexedDataset::open(&corpus.join("shard_00000")).unwrap();
    let (mut unk, mut total) = (0usize, 0usize);
    for i in 0..ds.sequences() {
        let mut ids = Vec::new();
        ds.read_sequence(i, &mut ids);
        unk += ids.iter().filter(|&&id| id == 1).count();
        total += ids.len();
    }
    assert!(unk * 100 < total, "{unk} of {total} tokens are [UNK]");
    run_ok(corpus_tools().arg("verify").arg(&corpus));
}

#[test]
fn bundled_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = workspace().join("sample");
    let vocab = minilm_dir().join("vocab.txt");
    let all = tmp.path().join("all");
    run_ok(
        corpus_tools()
            .arg("prepare")
            .arg("--pubmed")
            .arg(sample.join("pubmed"))
            .arg("--pmc")
            .arg(sample.join("pmc"))
            .arg("--vocab")
            .arg(&vocab)
            .arg("--out")
            .arg(&all),
    );
    let m = manifest(&all);
    assert_eq!(m["totals"]["documents"], 26);
    for (key, n) in [
        ("pubmed_records", 27),
        ("skipped_language", 1),
        ("skipped_no_abstract", 1),
        ("skipped_superseded", 1),
        ("skipped_deleted", 1),
        ("pmc_articles", 3),
    ] {
        assert_eq!(count(&m, key), n, "{key}");
    }
    let titles: Vec<String> = documents(&all).into_iter().map(|d| d[0].clone()).collect();
    assert!(
        titles
            .iter()
            .any(|t| t.ends_with("prospective cohort (corrected).")),
        "the revised record replaces the baseline one"
    );
    assert!(
        !titles.iter().any(|t| t.contains("COPD")),
        "the deleted record is gone"
    );
    let commercial = tmp.path().join("commercial");
    run_ok(
        corpus_tools()
            .arg("prepare")
            .arg("--pubmed")
            .arg(sample.join("pubmed"))
            .arg("--pmc")
            .arg(sample.join("pmc"))
            .arg("--file-list")
            .arg(sample.join("pmc/oa_file_list.csv"))
            .args(["--license-subset", "commercial", "--vocab"])
            .arg(&vocab)
            .arg("--out")
            .arg(&commercial),
    );
    let m = manifest(&commercial);
    assert_eq!(m["totals"]["documents"], 25);
    assert_eq!(count(&m, "skipped_license"), 1);
    assert_eq!(count(&m, "license:CC BY"), 1);
    assert_eq!(count(&m, "license:CC0"), 1);
}

#[test]
fn pmc_tar_gz_package_is_streamed_like_the_loose_files() {
    let tmp = tempfile::tempdir().unwrap();
    let loose = workspace().join("sample/pmc");
    let package = tmp.path().join("oa_comm_xml.PMC900xxxxxx.baseline.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&package).unwrap(),
        flate2::Compression::default(),
    );
    let mut archive = tar::Builder::new(gz);
    for name in [
        "PMC9000001.nxml",
        "PMC9000002.nxml",
        "pmc_efetch_result.xml",
    ] {
        archive
            .append_path_with_name(loose.join(name), format!("PMC900xxxxxx/{name}"))
            .unwrap();
    }
    archive
        .append_path_with_name(loose.join("oa_file_list.csv"), "PMC900xxxxxx/filelist.csv")
        .unwrap();
    archive.into_inner().unwrap().finish().unwrap();
    let (from_tar, from_files) = (tmp.path().join("tar"), tmp.path().join("files"));
    run_ok(
        corpus_tools()
            .arg("extract")
            .arg("--pmc")
            .arg(&package)
            .arg("--out")
            .arg(&from_tar),
    );
    run_ok(
        corpus_tools()
            .arg("extract")
            .arg("--pmc")
            .arg(&loose)
            .arg("--out")
            .arg(&from_files),
    );
    assert_eq!(documents(&from_tar), documents(&from_files));
    assert_eq!(manifest(&from_tar)["totals"]["documents"], 3);
    // A truncated package names the file.
    let bytes = std::fs::read(&package).unwrap();
    let cut = tmp.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let failed = corpus_tools()
        .arg("extract")
        .arg("--pmc")
        .arg(&cut)
        .arg("--out")
        .arg(tmp.path().join("cut"))
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("cut.tar.gz"));
}

/// One member of a package that does not read: `--on-error fail` names the package and the
/// member; `--on-error skip` leaves that member out (in both passes alike), keeps the rest of
/// the package, counts and names it in the manifest.
#[test]
fn a_bad_package_member_is_named_and_skipped_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let loose = workspace().join("sample/pmc");
    let broken = tmp.path().join("broken.nxml");
    std::fs::write(
        &broken,
        "<article><front><article-meta><article-id pub-id-type=\"pmc\">PMC9000777</article-id>\
         </article-meta></front><body><p>Unclosed paragraph.</b></body></article>",
    )
    .unwrap();
    let package = |path: &Path, members: &[(&Path, &str)]| {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::default(),
        );
        let mut archive = tar::Builder::new(gz);
        for (file, name) in members {
            archive.append_path_with_name(file, name).unwrap();
        }
        archive.into_inner().unwrap().finish().unwrap();
    };
    let (first, second) = (loose.join("PMC9000001.nxml"), loose.join("PMC9000002.nxml"));
    let bad = tmp.path().join("oa_comm_xml.PMC900bad.baseline.tar.gz");
    package(
        &bad,
        &[
            (&first, "PMC900/PMC9000001.nxml"),
            (&broken, "PMC900/broken.nxml"),
            (&second, "PMC900/PMC9000002.nxml"),
        ],
    );
    let good = tmp.path().join("oa_comm_xml.PMC900good.baseline.tar.gz");
    package(
        &good,
        &[
            (&first, "PMC900/PMC9000001.nxml"),
            (&second, "PMC900/PMC9000002.nxml"),
        ],
    );
    let extract = |input: &Path, out: &str, extra: &[&str]| {
        let mut cmd = corpus_tools();
        cmd.arg("extract")
            .arg("--pmc")
            .arg(input)
            .arg("--out")
            .arg(tmp.path().join(out))
            .args(extra);
        cmd
    };
    let failed = extract(&bad, "failed", &[]).output().unwrap();
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("PMC900bad.baseline.tar.gz") && err.contains("member PMC900/broken.nxml"),
        "{err}"
    );
    let skipped = run_ok(&mut extract(&bad, "skipped", &["--on-error", "skip"]));
    let warn = String::from_utf8_lossy(&skipped.stderr);
    assert!(warn.contains("member PMC900/broken.nxml"), "{warn}");
    run_ok(&mut extract(&good, "good", &[]));
    let (skipped, good) = (tmp.path().join("skipped"), tmp.path().join("good"));
    assert_eq!(documents(&skipped), documents(&good));
    assert_eq!(manifest(&skipped)["totals"]["documents"], 2);
    let m = manifest(&skipped);
    assert_eq!(count(&m, "skipped_tar_members_with_errors"), 1);
    let source_error = m["sources"][0]["error"].as_str().unwrap_or("");
    assert!(source_error.contains("member PMC900/broken.nxml"), "{m}");
}
