//! BERT pretraining instances as Google's `create_pretraining_data.py` makes them, drawn at
//! read time.
//!
//! Per epoch, each training document is cut into segment pairs by Google's algorithm
//! (targets of max_seq_len - 3 tokens, a shorter random target with `short_seq_prob`, A
//! from the first 1..n-1 sentences of a chunk, B the rest or, half the time, sentences of
//! another document with the unused ones put back). That needs only sentence lengths, so
//! an epoch's instances (sentence ranges) are fixed before training, document by document
//! from RNG(seed, epoch, document), and shuffled by RNG(seed, epoch): `instance_index`
//! writes them to disk, `epoch_instances` is the same list in memory. Token reading,
//! truncation and masking happen when a sample is read, from RNG(seed, epoch, sample
//! index): the data order and every mask are a function of the config alone, whatever the
//! number of ranks and however often the run restarts.

use rayon::prelude::*;

use crate::data::corpus::Corpus;
use crate::data::rng::{Rng, Stream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// Global sequence (sentence) ranges of segment A and segment B.
    pub a: (u64, u64),
    pub b: (u64, u64),
    pub random_next: bool,
}

#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub max_seq_len: usize,
    pub short_seq_prob: f64,
    pub masked_lm_prob: f64,
    pub max_predictions_per_seq: usize,
    pub whole_word_masking: bool,
    pub seed: u64,
}

/// One training example, ready to batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// Original ids at masked positions, -100 elsewhere.
    pub mlm_labels: Vec<i64>,
    /// 1 when B is a random sentence from another document.
    pub nsp_label: i64,
}

pub struct SpecialTokens {
    pub cls: i64,
    pub sep: i64,
    pub mask: i64,
    /// `is_continuation[id]`: the piece starts with `##` (for whole-word masking).
    pub is_continuation: Vec<bool>,
}

impl SpecialTokens {
    pub fn from_vocab(vocab: &[String]) -> anyhow::Result<SpecialTokens> {
        let find = |t: &str| {
            vocab
                .iter()
                .position(|v| v == t)
                .map(|i| i as i64)
                .ok_or_else(|| anyhow::anyhow!("the vocabulary has no {t}"))
        };
        Ok(SpecialTokens {
            cls: find("[CLS]")?,
            sep: find("[SEP]")?,
            mask: find("[MASK]")?,
            is_continuation: vocab.iter().map(|t| t.starts_with("##")).collect(),
        })
    }
}

/// Splits documents into training and held-out sets by a hash of (seed, document). The
/// lists take 8 B per document (~33M documents at full scale: 264 MB), so only an index
/// builder holds them, while it builds.
pub fn split_documents(corpus: &Corpus, heldout_fraction: f64, seed: u64) -> (Vec<u64>, Vec<u64>) {
    let (mut train, mut heldout) = (Vec::new(), Vec::new());
    for d in 0..corpus.documents() {
        if is_heldout(d, heldout_fraction, seed) {
            heldout.push(d);
        } else {
            train.push(d);
        }
    }
    if train.is_empty() {
        train = std::mem::take(&mut heldout);
    }
    (train, heldout)
}

/// The sizes of `split_documents`' two lists, without the lists.
pub fn split_counts(corpus: &Corpus, heldout_fraction: f64, seed: u64) -> (usize, usize) {
    let heldout = (0..corpus.documents())
        .filter(|&d| is_heldout(d, heldout_fraction, seed))
        .count();
    let all = corpus.documents() as usize;
    if heldout == all {
        return (all, 0);
    }
    (all - heldout, heldout)
}

fn is_heldout(d: u64, heldout_fraction: f64, seed: u64) -> bool {
    Rng::for_keys(&[seed, Stream::Heldout.key(), d]).uniform() < heldout_fraction
}

/// The epoch's instances in training order, built in memory: the definition that the
/// on-disk index (`instance_index`) reproduces record for record, kept as its reference
/// (tests) and for small tools. At full scale this list is ~270M instances x 40 B = 11 GB
/// plus the per-document lists, so the trainer never builds it.
pub fn epoch_instances(
    corpus: &Corpus,
    documents: &[u64],
    config: &InstanceConfig,
    epoch: u64,
) -> Vec<Instance> {
    // Each document draws from its own stream, so documents are built in parallel and
    // the result (collected in document order) does not depend on the thread count.
    let per_document: Vec<Vec<Instance>> = documents
        .par_iter()
        .enumerate()
        .map(|(k, &d)| {
            let mut rng = document_rng(config, epoch, d);
            let mut out = Vec::new();
            document_instances(corpus, documents, k, config, &mut rng, &mut |i| out.push(i));
            out
        })
        .collect();
    let mut out = per_document.concat();
    Rng::for_keys(&[config.seed, Stream::Order.key(), epoch]).shuffle(&mut out);
    out
}

/// The stream document `d` draws its instances from in `epoch`; its first uniform decides
/// whether the document aims at a short target (`short_seq_prob`).
pub fn document_rng(config: &InstanceConfig, epoch: u64, d: u64) -> Rng {
    Rng::for_keys(&[config.seed, Stream::Document.key(), epoch, d])
}

/// Google's `create_instances_from_document`, on sentence lengths: the instances of
/// `documents[k]`, in order, handed to `emit`.
pub fn document_instances(
    corpus: &Corpus,
    documents: &[u64],
    k: usize,
    config: &InstanceConfig,
    rng: &mut Rng,
    emit: &mut impl FnMut(Instance),
) {
    let max_tokens = config.max_seq_len - 3;
    let sentences = corpus.document(documents[k]);
    let n = (sentences.end - sentences.start) as usize;
    let target = if rng.uniform() < config.short_seq_prob {
        rng.randint(2, max_tokens as i64) as usize
    } else {
        max_tokens
    };
    let (mut chunk_start, mut chunk_len, mut length) = (0usize, 0usize, 0usize);
    let mut i = 0usize;
    while i < n {
        if chunk_len == 0 {
            chunk_start = i;
        }
        chunk_len += 1;
        length += corpus.sequence_len(sentences.start + i as u64);
        if i == n - 1 || length >= target {
            let a_end = if chunk_len >= 2 {
                rng.randint(1, chunk_len as i64 - 1) as usize
            } else {
                1
            };
            let a_len: usize = (0..a_end)
                .map(|j| corpus.sequence_len(sentences.start + (chunk_start + j) as u64))
                .sum();
            let a = (
                sentences.start + chunk_start as u64,
                sentences.start + (chunk_start + a_end) as u64,
            );
            let random_next = chunk_len == 1 || rng.uniform() < 0.5;
            let b = if random_next {
                let target_b = target.saturating_sub(a_len);
                let mut other = k;
                for _ in 0..10 {
                    other = rng.randint(0, documents.len() as i64 - 1) as usize;
                    if other != k {
                        break;
                    }
                }
                let r = corpus.document(documents[other]);
                let start = rng.randint(0, (r.end - r.start) as i64 - 1) as u64 + r.start;
                let (mut end, mut b_len) = (start, 0usize);
                while end < r.end {
                    b_len += corpus.sequence_len(end);
                    end += 1;
                    if b_len >= target_b {
                        break;
                    }
                }
                // The chunk's unused sentences go back for the next instance.
                i -= chunk_len - a_end;
                (start, end)
            } else {
                (a.1, sentences.start + (chunk_start + chunk_len) as u64)
            };
            let b_tokens: usize = (b.0..b.1).map(|q| corpus.sequence_len(q)).sum();
            if a_len > 0 && b_tokens > 0 {
                emit(Instance { a, b, random_next });
            }
            chunk_len = 0;
            length = 0;
        }
        i += 1;
    }
}

/// Reads an instance's tokens and makes the example: Google's truncate_seq_pair, then
/// [CLS] A [SEP] B [SEP] and create_masked_lm_predictions (80% [MASK], 10% random, 10%
/// kept), all from RNG(seed, epoch, sample).
pub fn make_example(
    corpus: &Corpus,
    instance: &Instance,
    config: &InstanceConfig,
    special: &SpecialTokens,
    epoch: u64,
    sample: u64,
) -> anyhow::Result<Example> {
    let mut rng = Rng::for_keys(&[config.seed, Stream::Sample.key(), epoch, sample]);
    let length =
        |range: (u64, u64)| -> usize { (range.0..range.1).map(|q| corpus.sequence_len(q)).sum() };
    let (a_window, b_window) = truncate_seq_pair(
        length(instance.a),
        length(instance.b),
        config.max_seq_len - 3,
        &mut rng,
    );
    let (a, b) = (
        read_window(corpus, instance.a, a_window)?,
        read_window(corpus, instance.b, b_window)?,
    );
    let mut input_ids = Vec::with_capacity(a.len() + b.len() + 3);
    input_ids.push(special.cls);
    input_ids.extend(a.iter().map(|&t| i64::from(t)));
    input_ids.push(special.sep);
    let b_start = input_ids.len();
    input_ids.extend(b.iter().map(|&t| i64::from(t)));
    input_ids.push(special.sep);
    let token_type_ids = (0..input_ids.len())
        .map(|i| i64::from(i >= b_start))
        .collect();
    let mlm_labels = mask_tokens(
        &mut input_ids,
        config,
        special,
        corpus.vocab.len(),
        &mut rng,
    );
    Ok(Example {
        input_ids,
        token_type_ids,
        mlm_labels,
        nsp_label: i64::from(instance.random_next),
    })
}

/// Google's truncate_seq_pair on lengths alone: while the pair is too long, drop a token
/// from the front or the back (a coin flip) of the longer segment. Returns the kept
/// windows [from, to) of A and B. The same draws as removing tokens one by one, in time
/// linear in what is dropped and with no token moved (a sentence of millions of tokens
/// used to take minutes).
pub fn truncate_seq_pair(
    a_len: usize,
    b_len: usize,
    max_tokens: usize,
    rng: &mut Rng,
) -> ((usize, usize), (usize, usize)) {
    let (mut a, mut b) = ((0, a_len), (0, b_len));
    let len = |w: (usize, usize)| w.1 - w.0;
    while len(a) + len(b) > max_tokens {
        let longer = if len(a) > len(b) { &mut a } else { &mut b };
        if rng.uniform() < 0.5 {
            longer.0 += 1;
        } else {
            longer.1 -= 1;
        }
    }
    (a, b)
}

/// The tokens of sequences `range` at positions `window` of their concatenation, reading
/// only the sequences that overlap it.
fn read_window(
    corpus: &Corpus,
    range: (u64, u64),
    window: (usize, usize),
) -> anyhow::Result<Vec<u32>> {
    let mut tokens = Vec::with_capacity(window.1 - window.0);
    let mut offset = 0usize;
    for q in range.0..range.1 {
        let n = corpus.sequence_len(q);
        let (from, to) = (window.0.max(offset), window.1.min(offset + n));
        if from < to {
            corpus.read_checked(q, from - offset, to - offset, &mut tokens)?;
        }
        offset += n;
        if offset >= window.1 {
            break;
        }
    }
    Ok(tokens)
}

fn mask_tokens(
    ids: &mut [i64],
    config: &InstanceConfig,
    special: &SpecialTokens,
    vocab_size: usize,
    rng: &mut Rng,
) -> Vec<i64> {
    let mut candidates: Vec<Vec<usize>> = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        if id == special.cls || id == special.sep {
            continue;
        }
        let continuation = special
            .is_continuation
            .get(id as usize)
            .copied()
            .unwrap_or(false);
        match candidates.last_mut() {
            Some(group) if config.whole_word_masking && continuation => group.push(i),
            _ => candidates.push(vec![i]),
        }
    }
    rng.shuffle(&mut candidates);
    let target = ((ids.len() as f64 * config.masked_lm_prob).round() as usize)
        .max(1)
        .min(config.max_predictions_per_seq);
    let mut labels = vec![-100i64; ids.len()];
    let mut masked = 0usize;
    for group in candidates {
        if masked >= target {
            break;
        }
        if masked + group.len() > target {
            continue;
        }
        for i in group {
            labels[i] = ids[i];
            masked += 1;
            ids[i] = if rng.uniform() < 0.8 {
                special.mask
            } else if rng.uniform() < 0.5 {
                ids[i]
            } else {
                rng.randint(0, vocab_size as i64 - 1)
            };
        }
    }
    labels
}

#[cfg(test)]
mod truncation_tests {
    use super::*;

    /// Google's truncate_seq_pair, token by token, as the reference.
    fn reference(a: usize, b: usize, max: usize, rng: &mut Rng) -> (Vec<usize>, Vec<usize>) {
        let (mut a, mut b): (Vec<usize>, Vec<usize>) = ((0..a).collect(), (0..b).collect());
        while a.len() + b.len() > max {
            let longer = if a.len() > b.len() { &mut a } else { &mut b };
            if rng.uniform() < 0.5 {
                longer.remove(0);
            } else {
                longer.pop();
            }
        }
        (a, b)
    }

    #[test]
    fn windows_match_the_token_by_token_algorithm() {
        for (k, &(a, b, max)) in [
            (10, 3, 8),
            (3, 10, 8),
            (200, 200, 125),
            (5, 5, 20),
            (1, 700, 509),
        ]
        .iter()
        .enumerate()
        {
            let (wa, wb) = truncate_seq_pair(a, b, max, &mut Rng::for_keys(&[k as u64]));
            let (ra, rb) = reference(a, b, max, &mut Rng::for_keys(&[k as u64]));
            assert_eq!((wa.0..wa.1).collect::<Vec<_>>(), ra);
            assert_eq!((wb.0..wb.1).collect::<Vec<_>>(), rb);
        }
    }

    #[test]
    fn a_sentence_of_millions_of_tokens_is_cut_at_once() {
        let started = std::time::Instant::now();
        let (a, b) = truncate_seq_pair(3_270_000, 40, 509, &mut Rng::for_keys(&[1]));
        assert_eq!((a.1 - a.0) + (b.1 - b.0), 509);
        // Linear: a few milliseconds, where removing from the front of a Vec took minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
