//! The on-disk instance index against the in-memory definition it replaces, and its cache
//! behaviour: keyed folders, one builder, resume reading one index, damaged files named.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use biobert::config::run_config::{DataConfig, RunConfig};
use biobert::data::corpus::{file_sha256, Corpus};
use biobert::data::data_loader;
use biobert::data::instance_index::{IndexStore, Part};
use biobert::data::instances::{self, InstanceConfig, SpecialTokens};
use common::*;

fn corpus_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let data = shared_data();
        prepare_corpus(
            "index-test",
            vec![data.join("pubmed")],
            vec![data.join("pmc")],
            100_000,
        )
    })
}

fn data_config() -> DataConfig {
    let mut c = RunConfig::load(&workspace().join("configs/tiny.toml"), &[])
        .unwrap()
        .data;
    c.max_seq_len = 128;
    c.heldout_fraction = 0.1;
    c
}

fn instance_config(d: &DataConfig) -> InstanceConfig {
    InstanceConfig {
        max_seq_len: d.max_seq_len,
        short_seq_prob: d.short_seq_prob,
        masked_lm_prob: d.masked_lm_prob,
        max_predictions_per_seq: d.max_predictions_per_seq,
        whole_word_masking: d.whole_word_masking,
        seed: d.seed,
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn open_store(corpus: &Arc<Corpus>, root: &Path, d: &DataConfig) -> IndexStore {
    let sha = file_sha256(&corpus.dir.join("manifest.json")).unwrap();
    IndexStore::open(
        root,
        corpus.clone(),
        &sha,
        &instance_config(d),
        d.heldout_fraction,
    )
    .unwrap()
}

/// Every record of three epochs and the held-out set equals the in-memory list, at one
/// and at two build threads.
#[test]
fn the_index_holds_the_reference_instances_in_the_reference_order() {
    let corpus = Arc::new(Corpus::open(corpus_dir()).unwrap());
    let d = data_config();
    let config = instance_config(&d);
    let (train, heldout) = instances::split_documents(&corpus, d.heldout_fraction, d.seed);
    assert!(!heldout.is_empty());
    for threads in [1, 2] {
        let tmp = tempfile::tempdir().unwrap();
        let store = open_store(&corpus, tmp.path(), &d);
        for epoch in 0..3 {
            let (index, report) = store
                .epoch(Part::Train, epoch, || Ok(pool(threads)))
                .unwrap();
            assert!(report.is_some(), "built here");
            let reference = instances::epoch_instances(&corpus, &train, &config, epoch);
            assert!(reference.len() > 1000);
            assert_eq!(index.len(), reference.len() as u64);
            for (i, r) in reference.iter().enumerate() {
                assert_eq!(index.get(i as u64), *r, "epoch {epoch}, instance {i}");
            }
            assert_eq!(store.epoch_size(epoch), Some(reference.len() as u64));
        }
        let (index, _) = store.epoch(Part::Heldout, 0, || Ok(pool(threads))).unwrap();
        let reference = instances::epoch_instances(&corpus, &heldout, &config, u64::MAX);
        assert_eq!(index.len(), reference.len() as u64);
        for (i, r) in reference.iter().enumerate() {
            assert_eq!(index.get(i as u64), *r, "held-out instance {i}");
        }
    }
}

/// The sampler's examples (tokens, masks, NSP labels) across two epoch boundaries are the
/// reference's: the epoch and position of a global sample come from the stored sizes.
#[test]
fn examples_across_epoch_boundaries_equal_the_reference() {
    let corpus = Arc::new(Corpus::open(corpus_dir()).unwrap());
    let d = data_config();
    let config = instance_config(&d);
    let special = SpecialTokens::from_vocab(&corpus.vocab).unwrap();
    let (train, _) = instances::split_documents(&corpus, d.heldout_fraction, d.seed);
    let tmp = tempfile::tempdir().unwrap();
    let sha = file_sha256(&corpus.dir.join("manifest.json")).unwrap();
    let (mut sampler, _) = data_loader::samplers(&corpus, &sha, &d, tmp.path()).unwrap();
    let epochs: Vec<_> = (0..3)
        .map(|e| instances::epoch_instances(&corpus, &train, &config, e))
        .collect();
    let (n0, n1) = (epochs[0].len() as u64, epochs[1].len() as u64);
    let samples = (0..50)
        .chain(n0 - 50..n0 + 50)
        .chain(n0 + n1 - 50..n0 + n1 + 50);
    for s in samples {
        let (epoch, i) = if s < n0 {
            (0, s)
        } else if s < n0 + n1 {
            (1, s - n0)
        } else {
            (2, s - n0 - n1)
        };
        let expected = instances::make_example(
            &corpus,
            &epochs[epoch as usize][i as usize],
            &config,
            &special,
            epoch,
            s,
        )
        .unwrap();
        assert_eq!(sampler.example(s).unwrap(), expected, "sample {s}");
    }
}

/// A run resumed in epoch 2 maps epoch 2's index alone: the sizes of epochs 0 and 1 come
/// from their count files, and their indexes are not rebuilt.
#[test]
fn resuming_in_a_later_epoch_reads_one_index() {
    let corpus = Arc::new(Corpus::open(corpus_dir()).unwrap());
    let d = data_config();
    let tmp = tempfile::tempdir().unwrap();
    let sha = file_sha256(&corpus.dir.join("manifest.json")).unwrap();
    let store = open_store(&corpus, tmp.path(), &d);
    let sizes: Vec<u64> = (0..3)
        .map(|e| store.epoch(Part::Train, e, || Ok(pool(2))).unwrap().0.len())
        .collect();
    for e in 0..3 {
        std::fs::remove_file(store.path(Part::Train, e)).unwrap();
    }
    // Epoch 2's index comes back from the cache (here: rebuilt once, then reused).
    store.epoch(Part::Train, 2, || Ok(pool(2))).unwrap();
    let (mut sampler, _) = data_loader::samplers(&corpus, &sha, &d, tmp.path()).unwrap();
    sampler.prepare(sizes[0] + sizes[1] + 7).unwrap();
    assert!(!store.path(Part::Train, 0).exists());
    assert!(!store.path(Part::Train, 1).exists());
    assert_eq!(sampler.epoch_size(1).unwrap(), sizes[1]);
}

/// The count files are a checked cache: an edited count, one copied from another epoch, or
/// one without its check is not believed; the epoch is counted again and the file rewritten.
#[test]
fn an_edited_count_is_recounted_not_trusted() {
    let corpus = Arc::new(Corpus::open(corpus_dir()).unwrap());
    let d = data_config();
    let tmp = tempfile::tempdir().unwrap();
    let sha = file_sha256(&corpus.dir.join("manifest.json")).unwrap();
    let store = open_store(&corpus, tmp.path(), &d);
    let sizes: Vec<u64> = (0..2)
        .map(|e| store.epoch(Part::Train, e, || Ok(pool(2))).unwrap().0.len())
        .collect();
    assert_eq!(store.epoch_size(0), Some(sizes[0]));
    let count = |e: u64| store.dir.join(format!("train-epoch-{e:06}.count"));
    let good = std::fs::read_to_string(count(0)).unwrap();
    let (_, check) = good.trim().split_once(' ').unwrap();
    let epoch1 = std::fs::read_to_string(count(1)).unwrap();
    for edited in [
        format!("{} {check}\n", sizes[0] + 5),
        format!("{}\n", sizes[0] + 5),
        epoch1,
        "garbage".to_string(),
    ] {
        std::fs::write(count(0), &edited).unwrap();
        assert_eq!(store.epoch_size(0), None, "{edited:?} was believed");
        let (mut sampler, _) = data_loader::samplers(&corpus, &sha, &d, tmp.path()).unwrap();
        assert_eq!(sampler.epoch_size(0).unwrap(), sizes[0]);
        assert_eq!(std::fs::read_to_string(count(0)).unwrap(), good);
    }
}

/// A changed data setting gets its own folder; a folder whose key text disagrees, or an
/// index of another key, is refused by name.
#[test]
fn changed_settings_never_reuse_an_index_and_damage_is_named() {
    let corpus = Arc::new(Corpus::open(corpus_dir()).unwrap());
    let d = data_config();
    let tmp = tempfile::tempdir().unwrap();
    let a = open_store(&corpus, tmp.path(), &d);
    let mut other = d.clone();
    other.short_seq_prob = 0.2;
    let b = open_store(&corpus, tmp.path(), &other);
    assert_ne!(a.dir, b.dir);
    // Masking settings are drawn at read time: the same index serves them.
    let mut masking = d.clone();
    masking.masked_lm_prob = 0.2;
    assert_eq!(open_store(&corpus, tmp.path(), &masking).dir, a.dir);

    a.epoch(Part::Train, 0, || Ok(pool(1))).unwrap();
    b.epoch(Part::Train, 0, || Ok(pool(1))).unwrap();
    // b's file put where a's belongs.
    std::fs::copy(b.path(Part::Train, 0), a.path(Part::Train, 0)).unwrap();
    let err = a
        .epoch(Part::Train, 0, || Ok(pool(1)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("train-epoch-000000.idx") && err.contains("another key"),
        "{err}"
    );
    // A truncated file.
    let bytes = std::fs::read(b.path(Part::Train, 0)).unwrap();
    std::fs::write(b.path(Part::Train, 0), &bytes[..bytes.len() - 5]).unwrap();
    let err = b
        .epoch(Part::Train, 0, || Ok(pool(1)))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("length does not match"), "{err}");

    std::fs::write(a.dir.join("key.txt"), "format = something else\n").unwrap();
    let sha = file_sha256(&corpus.dir.join("manifest.json")).unwrap();
    let err = IndexStore::open(
        tmp.path(),
        corpus.clone(),
        &sha,
        &instance_config(&d),
        d.heldout_fraction,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("key.txt"), "{err}");
}

/// Four threads ask for the same missing index at once: one builds, three wait and map
/// the finished file.
#[test]
fn one_builder_the_others_wait() {
    let corpus = Arc::new(Corpus::open(corpus_dir()).unwrap());
    let d = data_config();
    let tmp = tempfile::tempdir().unwrap();
    let stores: Vec<_> = (0..4)
        .map(|_| open_store(&corpus, tmp.path(), &d))
        .collect();
    let built: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .map(|store| {
                s.spawn(move || {
                    let (index, report) = store.epoch(Part::Train, 0, || Ok(pool(1))).unwrap();
                    assert!(!index.is_empty());
                    report.is_some()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(built.iter().filter(|&&b| b).count(), 1, "{built:?}");
    let leftovers: Vec<_> = std::fs::read_dir(&stores[0].dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp") || n.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Records damaged behind an intact header (random bytes, zeros) are refused by name, not
/// read past the corpus or trained as empty instances; a cache folder removed while a run
/// uses it is made again by the next build.
#[test]
fn damaged_records_are_refused_and_a_removed_folder_is_rebuilt() {
    let corpus = Arc::new(Corpus::open(corpus_dir()).unwrap());
    let d = data_config();
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(&corpus, tmp.path(), &d);
    let (index, _) = store.epoch(Part::Train, 0, || Ok(pool(1))).unwrap();
    let sentences = corpus.sequences();
    for i in 0..index.len() {
        index.get_checked(i, sentences).unwrap();
    }
    drop(index);
    let path = store.path(Part::Train, 0);
    let bytes = std::fs::read(&path).unwrap();
    let header = 64; // the format's header; records follow
    for fill in [0xA5u8, 0] {
        let mut damaged = bytes.clone();
        for (k, b) in damaged[header..].iter_mut().enumerate() {
            *b = if fill == 0 {
                0
            } else {
                (k as u8).wrapping_mul(fill) | 0x80
            };
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &damaged).unwrap();
        let (index, _) = store.epoch(Part::Train, 0, || Ok(pool(1))).unwrap();
        let err = index.get_checked(0, sentences).unwrap_err().to_string();
        assert!(
            err.contains("train-epoch-000000.idx: record 0 is not an instance"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&store.dir).unwrap();
    let (index, report) = store.epoch(Part::Train, 1, || Ok(pool(1))).unwrap();
    assert!(report.is_some() && !index.is_empty());
    assert!(store.dir.join("key.txt").is_file());
}
