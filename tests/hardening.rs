//! Bad input a new user gives `biobert pretrain`, each once silent or destructive: names
//! that do not match (random weights), shape keys that contradict the folder (a config
//! printed that is not the one that ran), ranks that disagree, values out of range,
//! skipped steps without end, a config.toml that is not ours, a resume on another corpus.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use tch::Tensor;

fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        prepare_corpus(
            "hardening-test",
            vec![workspace().join("sample/pubmed")],
            vec![workspace().join("sample/pmc")],
            1 << 30,
        )
    })
}

fn other_corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        prepare_corpus(
            "hardening-test-other",
            vec![workspace().join("sample/pubmed")],
            vec![],
            1 << 30,
        )
    })
}

fn pretrain(out: &Path, extra: &[&str]) -> std::process::Command {
    pretrain_tiny(corpus(), out, extra)
}

fn fails_with(cmd: &mut std::process::Command, expected: &str) -> String {
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "expected a failure:\n{}{err}",
        stdout(&out)
    );
    assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    err
}

/// all-MiniLM-L6-v2 with every tensor name behind `prefix`.
fn minilm_renamed(dir: &Path, prefix: &str) -> PathBuf {
    let folder = dir.join(format!("minilm-{}", prefix.trim_end_matches('.')));
    std::fs::create_dir_all(&folder).unwrap();
    let weights = Tensor::read_safetensors(minilm_dir().join("model.safetensors")).unwrap();
    let renamed: Vec<(String, Tensor)> = weights
        .into_iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t))
        .collect();
    Tensor::write_safetensors(&renamed, folder.join("model.safetensors")).unwrap();
    for f in ["config.json", "vocab.txt"] {
        std::fs::copy(minilm_dir().join(f), folder.join(f)).unwrap();
    }
    folder
}

#[test]
fn a_data_parallel_checkpoint_loads_and_unknown_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let wrapped = minilm_renamed(tmp.path(), "module.");
    let init = format!("model.init={}", wrapped.display());
    let out = run_ok(&mut pretrain(
        &tmp.path().join("ok"),
        &["--max-steps", "6", "--set", &init],
    ));
    let text = stdout(&out);
    assert!(text.contains("init: loaded"), "{text}");
    // The pretraining heads start fresh, and the line says so briefly.
    let line = text.lines().find(|l| l.starts_with("init:")).unwrap();
    assert!(line.len() < 400, "{line}");

    let unknown = minilm_renamed(tmp.path(), "encoder_wrapper.");
    let init = format!("model.init={}", unknown.display());
    let run = tmp.path().join("refused");
    fails_with(
        &mut pretrain(&run, &["--max-steps", "6", "--set", &init]),
        "of the model's embedding and encoder tensors are not in the checkpoint",
    );
    assert!(!run.join("checkpoints").exists());
}

#[test]
fn the_configuration_saved_is_the_one_that_ran() {
    let tmp = tempfile::tempdir().unwrap();
    let init = format!("model.init={}", minilm_dir().display());
    let out = tmp.path().join("run");
    run_ok(&mut pretrain(&out, &["--max-steps", "6", "--set", &init]));
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(saved.contains("hidden_size = 384"), "{saved}");
    assert!(saved.contains("num_hidden_layers = 6"), "{saved}");
    assert!(
        saved.contains(&format!("path = \"{}\"", corpus().display())),
        "{saved}"
    );

    fails_with(
        &mut pretrain(
            &tmp.path().join("contradicts"),
            &[
                "--max-steps",
                "6",
                "--set",
                &init,
                "--set",
                "model.hidden_size=768",
            ],
        ),
        "whose hidden_size is 384",
    );
}

#[test]
fn ranks_with_different_configurations_stop_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut cmd = mpirun(1);
    let rank = |cmd: &mut std::process::Command, lr: &str| {
        cmd.arg(biobert_path())
            .arg("pretrain")
            .arg("--config")
            .arg(workspace().join("configs/tiny.toml"))
            .arg("--data")
            .arg(corpus())
            .arg("--out")
            .arg(&out)
            .args([
                "--max-steps",
                "6",
                "--set",
                &format!("train.learning_rate={lr}"),
            ]);
    };
    rank(&mut cmd, "0.001");
    cmd.args([":", "-np", "1"]);
    rank(&mut cmd, "0.002");
    let err = fails_with(&mut cmd, "configuration differs from rank 0's");
    assert!(
        err.contains("train.learning_rate = 0.002 (rank 0: 0.001)"),
        "{err}"
    );
}

#[test]
fn values_out_of_range_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (set, expected) in [
        (
            "train.learning_rate=-1e-4",
            "train.learning_rate = -0.0001: expected a positive number",
        ),
        ("data.masked_lm_prob=1.5", "data.masked_lm_prob = 1.5"),
        ("data.heldout_fraction=1.0", "data.heldout_fraction = 1"),
        ("data.max_predictions_per_seq=0", "MLM off"),
        ("train.warmup_steps=100", "exceeds train.max_steps"),
    ] {
        let run = tmp.path().join("run");
        fails_with(
            &mut pretrain(&run, &["--max-steps", "20", "--set", set]),
            expected,
        );
        assert!(!run.exists(), "{set}: the run folder was created");
    }
}

#[test]
fn skipped_steps_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    // A learning rate of 1e30 makes every step after the first non-finite.
    fails_with(
        &mut pretrain(
            &tmp.path().join("run"),
            &[
                "--max-steps",
                "40",
                "--set",
                "train.learning_rate=1e30",
                "--set",
                "train.warmup_steps=0",
                "--set",
                "train.on_nan=skip",
                "--set",
                "train.max_skipped_steps=3",
            ],
        ),
        "3 steps in a row had a non-finite loss or gradient",
    );
}

/// The loss is read one step late, but a non-finite step still stops the run before any
/// checkpoint follows it.
#[test]
fn a_non_finite_step_stops_the_run_before_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = pretrain(
        &run,
        &[
            "--max-steps",
            "10",
            "--set",
            "train.learning_rate=1e30",
            "--set",
            "train.warmup_steps=0",
            "--set",
            "checkpoint.every=1",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("step 2: the loss is"), "{err}");
    assert!(err.contains("last good checkpoint: "), "{err}");
    assert!(err.contains("step_00000001"), "{err}");
    assert!(run.join("checkpoints/step_00000001").exists());
    assert!(!run.join("checkpoints/step_00000002").exists());
}

#[test]
fn a_folder_that_is_not_a_run_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mine");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("config.toml"), "my own file\n").unwrap();
    fails_with(
        &mut pretrain(&out, &["--max-steps", "6"]),
        "not written by biobert pretrain",
    );
    assert_eq!(
        std::fs::read_to_string(out.join("config.toml")).unwrap(),
        "my own file\n"
    );

    // A refused resume does not rewrite the run's config.toml either.
    let run = tmp.path().join("run");
    run_ok(&mut pretrain(&run, &["--max-steps", "6"]));
    let before = std::fs::read_to_string(run.join("config.toml")).unwrap();
    fails_with(
        &mut pretrain(
            &run,
            &["--max-steps", "12", "--set", "train.learning_rate=0.5"],
        ),
        "add --resume auto",
    );
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        before
    );
}

#[test]
fn resuming_on_another_corpus_is_refused_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_ok(&mut pretrain(&run, &["--max-steps", "6"]));
    let elsewhere = |steps: &str, extra: &[&str]| {
        let mut cmd = pretrain_tiny(other_corpus(), &run, &["--max-steps", steps]);
        cmd.args(["--resume", "auto"]).args(extra);
        cmd
    };
    fails_with(&mut elsewhere("8", &[]), "written for another corpus");
    let out = run_ok(&mut elsewhere("8", &["--allow-new-corpus"]));
    assert!(
        stdout(&out).contains("resume: on another corpus"),
        "{}",
        stdout(&out)
    );
    // The checkpoints from here on belong to the new corpus. Other changes are allowed and
    // listed.
    let out = run_ok(&mut elsewhere(
        "10",
        &["--set", "train.learning_rate=0.0005"],
    ));
    let text = stdout(&out);
    assert!(
        text.contains("train.learning_rate = 0.0005 (checkpoint: 0.001)"),
        "{text}"
    );
}

/// Shard files replaced by another corpus's (copied or linked) no longer match the counts
/// and sizes in manifest.json: refused by name before anything trains.
#[test]
fn shards_that_do_not_match_their_manifest_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let swapped = tmp.path().join("corpus");
    std::fs::create_dir_all(&swapped).unwrap();
    for entry in std::fs::read_dir(corpus()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), swapped.join(entry.file_name())).unwrap();
    }
    for ext in ["bin", "idx"] {
        let name = format!("shard_00000.{ext}");
        std::fs::remove_file(swapped.join(&name)).unwrap();
        std::os::unix::fs::symlink(other_corpus().join(&name), swapped.join(&name)).unwrap();
    }
    let mut cmd = pretrain_tiny(&swapped, &tmp.path().join("run"), &["--max-steps", "6"]);
    let err = fails_with(
        &mut cmd,
        "shard shard_00000 is not the one manifest.json describes",
    );
    assert!(err.contains("documents, the manifest says"), "{err}");
    assert!(!tmp.path().join("run").exists());
}

#[test]
fn token_ids_beyond_the_vocabulary_name_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let damaged = tmp.path().join("corpus");
    std::fs::create_dir_all(&damaged).unwrap();
    for entry in std::fs::read_dir(corpus()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), damaged.join(entry.file_name())).unwrap();
    }
    // A vocabulary cut to 1,000 entries: most ids in the shards are now beyond it.
    let vocab = std::fs::read_to_string(damaged.join("vocab.txt")).unwrap();
    let cut: Vec<&str> = vocab.lines().take(1000).collect();
    std::fs::write(damaged.join("vocab.txt"), cut.join("\n") + "\n").unwrap();
    let mut cmd = pretrain_tiny(&damaged, &tmp.path().join("run"), &["--max-steps", "6"]);
    let err = fails_with(&mut cmd, "of shard shard_00000 holds token id");
    assert!(err.contains("the vocabulary has 1000 entries"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn embed_and_export_never_overwrite_what_they_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let model = workspace().join("tests/fixtures/tiny_bert");
    let input = tmp.path().join("sentences.txt");
    std::fs::write(&input, "A first sentence.\nA second one.\n").unwrap();
    let embed = |output: &Path, force: bool| {
        let mut cmd = biobert();
        cmd.args(["embed", "--device", "cpu", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(output);
        if force {
            cmd.arg("--force");
        }
        cmd
    };
    fails_with(&mut embed(&input, true), "is the input file");
    fails_with(
        &mut embed(&model.join("model.safetensors"), true),
        "is inside the model folder",
    );
    let existing = tmp.path().join("features.safetensors");
    std::fs::write(&existing, "someone's file").unwrap();
    fails_with(
        &mut embed(&existing, false),
        "exists; embed writes a new file",
    );
    assert_eq!(
        std::fs::read_to_string(&existing).unwrap(),
        "someone's file"
    );
    run_ok(&mut embed(&existing, true));

    // export: a folder with files in it is refused; `latest` is followed.
    let run = tmp.path().join("run");
    run_ok(&mut pretrain(&run, &["--max-steps", "6"]));
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let export = |out: &Path| {
        let mut cmd = biobert();
        cmd.args(["export", "--checkpoint"])
            .arg(run.join("checkpoints/latest"))
            .arg("--out")
            .arg(out);
        cmd
    };
    fails_with(&mut export(&busy), "not empty");
    assert_eq!(
        std::fs::read_to_string(busy.join("notes.txt")).unwrap(),
        "mine"
    );
    run_ok(&mut export(&tmp.path().join("hf")));
    assert!(tmp.path().join("hf/model.safetensors").is_file());
}

#[test]
fn a_resumed_run_no_longer_needs_the_folder_it_started_from() {
    let tmp = tempfile::tempdir().unwrap();
    let start = minilm_renamed(tmp.path(), "");
    let init = format!("model.init={}", start.display());
    let run = tmp.path().join("run");
    run_ok(&mut pretrain(&run, &["--max-steps", "6", "--set", &init]));
    std::fs::remove_dir_all(&start).unwrap();
    let out = run_ok(&mut pretrain(
        &run,
        &["--max-steps", "8", "--resume", "auto", "--set", &init],
    ));
    assert!(stdout(&out).contains("resume: step 6"), "{}", stdout(&out));
}

#[test]
fn usage_lines_name_the_command_users_run() {
    let out = run_ok(biobert().args(["pretrain", "--help"]));
    let text = stdout(&out);
    assert!(text.contains("biobert pretrain"), "{text}");
    assert!(!text.contains("biobert-core"), "{text}");
}

/// A full disk at checkpoint time: the error names the file, no half-written checkpoint
/// or temporary file is left, and the run stops. Mounts a 4 MiB tmpfs (needs root, as
/// launch/test.sh runs in CI).
#[test]
fn a_full_disk_names_the_file_and_leaves_no_temporaries() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test mounts a tmpfs: run it as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount -t tmpfs failed");
    let run = small.join("run");
    let out = pretrain(&run, &["--max-steps", "6"]).output().unwrap();
    let listing: Vec<String> = walk(&run)
        .iter()
        .map(|p| {
            p.strip_prefix(&run.display().to_string())
                .unwrap_or(p)
                .to_string()
        })
        .collect();
    let _ = std::process::Command::new("umount").arg(&small).status();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    assert!(
        listing
            .iter()
            .all(|f| !f.contains(".tmp") && !f.contains("step_")),
        "{listing:?}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path().display().to_string());
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// pytorch_model.bin as torch.save writes it (zip and legacy formats; fixtures from
/// tests/fixtures/make_torch_save_fixture.py), read without running any of its pickle.
#[test]
fn torch_save_state_dicts_load_and_malicious_pickles_are_refused() {
    let dir = workspace().join("tests/fixtures/torch_save");
    let expected: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("expected.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    for file in ["state_dict.zip.bin", "state_dict.legacy.bin"] {
        let got = biobert::model::torch_pickle::read_state_dict(&dir.join(file)).unwrap();
        assert_eq!(got.len(), expected.len(), "{file}");
        for (name, tensor) in &got {
            let want = &expected[name];
            assert_eq!(tensor.size(), want.size(), "{file} {name}");
            assert_eq!(tensor.kind(), want.kind(), "{file} {name}");
            assert!(tensor.equal(want), "{file} {name}");
        }
    }
    let marker = std::path::Path::new("/tmp/biobert-pickle-exploit");
    let _ = std::fs::remove_file(marker);
    let err = biobert::model::torch_pickle::read_state_dict(&dir.join("malicious.bin"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("refuses the global posix.system"), "{err}");
    assert!(!marker.exists(), "the payload ran");

    // A BERT folder with only pytorch_model.bin: the same weights as its safetensors twin.
    let bin = workspace().join("tests/fixtures/tiny_bert_bin");
    let a = biobert::model::hf_checkpoint::read_weights(&bin).unwrap();
    let b =
        biobert::model::hf_checkpoint::read_weights(&workspace().join("tests/fixtures/tiny_bert"))
            .unwrap();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name}");
    }
}

/// A stop signal while the data loader is busy (here: made to hang before step 5) still
/// stops the run at once, saving the last completed step.
#[test]
fn a_stop_signal_reaches_a_run_whose_loader_is_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let child = pretrain(&run, &["--max-steps", "20", "--set", "log.every=1"])
        .env("BIOBERT_LOADER_STALL_AT", "4")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("step 4", std::time::Duration::from_millis(100), || {
        logged_lines(&run) >= 4
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill with a valid pid and signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopped = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        stopped.elapsed().as_secs() < 30,
        "the signal did not stop the run"
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("while the data loader was busy"), "{text}");
    assert!(run.join("checkpoints/step_00000004").is_dir(), "{text}");
}

/// What a run cannot apply is said: a bf16 residual stream with fp32 products, and a
/// resume that changes the global batch; a run refused before its first checkpoint leaves
/// no folder it made.
#[test]
fn settings_without_effect_are_said_and_a_refused_run_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let first = run_ok(&mut pretrain(
        &run,
        &["--max-steps", "6", "--set", "train.bf16_residual=true"],
    ));
    assert!(
        stdout(&first).contains("note: train.bf16_residual has no effect"),
        "{}",
        stdout(&first)
    );
    let resumed = run_ok(&mut pretrain(
        &run,
        &[
            "--max-steps",
            "8",
            "--resume",
            "auto",
            "--set",
            "train.micro_batch_size=4",
        ],
    ));
    assert!(
        stdout(&resumed).contains(
            "the global batch is 4 sequences (1 rank(s)); the checkpoint's was 8 (1 rank(s))"
        ),
        "{}",
        stdout(&resumed)
    );
    let refused = tmp.path().join("refused");
    fails_with(
        &mut pretrain(
            &refused,
            &["--max-steps", "6", "--set", "data.max_seq_len=256"],
        ),
        "data.max_seq_len = 256 exceeds the model's max_position_embeddings 128",
    );
    assert!(!refused.exists(), "{} was left behind", refused.display());
    // The fused kernels need a GPU: refused in one line, never ignored.
    fails_with(
        &mut pretrain(
            &refused,
            &["--max-steps", "6", "--set", "train.fused_elementwise=true"],
        ),
        "train.fused_elementwise: the fused kernels need a CUDA device; this run is on the CPU",
    );
    assert!(!refused.exists(), "{} was left behind", refused.display());
    // Casting the weights once is a bf16 setting: an fp32 run has no casts to save.
    fails_with(
        &mut pretrain(
            &refused,
            &["--max-steps", "6", "--set", "train.cast_weights_once=true"],
        ),
        "train.cast_weights_once: this run computes in fp32",
    );
    assert!(!refused.exists(), "{} was left behind", refused.display());
    fails_with(
        &mut pretrain(
            &refused,
            &[
                "--max-steps",
                "6",
                "--set",
                "train.cast_weights_once=true",
                "--set",
                "distributed.overlap=true",
            ],
        ),
        "train.cast_weights_once and distributed.overlap cannot run together",
    );
    assert!(!refused.exists(), "{} was left behind", refused.display());
}
