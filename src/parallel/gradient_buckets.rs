//! Gradient buckets for the all-reduce overlapped with the backward pass, as PyTorch DDP
//! and Horovod form them: parameters in the order their gradients become ready (the reverse
//! of the forward pass: the heads, the encoder's last layer down to its first, the
//! embeddings), cut into buckets of about `distributed.bucket_mb`. A bucket is summed as
//! soon as its last gradient is accumulated, and buckets always start in index order, so
//! every rank queues the same collectives in the same order.
//!
//! The flat buffer keeps its layout (decayed parameters first, by name), so a bucket is a
//! few ranges of it: an encoder layer's weights and its biases and LayerNorms are two.

use crate::train::flat_parameters::FlatParameters;

/// Where one bucket lies in the flat buffer: (offset, count) ranges in offset order, with
/// neighbours joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub ranges: Vec<(i64, i64)>,
    /// How many parameters must report before it can start.
    parameters: usize,
}

#[derive(Debug, Clone)]
pub struct BucketPlan {
    pub buckets: Vec<Bucket>,
    /// Each parameter's bucket, by index in the flat buffer.
    bucket_of: Vec<usize>,
}

/// Which gradients are ready first: 0 the heads (MLM transform and bias, pooler, NSP),
/// 1 the encoder's layers from the last, 2 the embeddings' LayerNorm, 3 the embedding
/// tables (the word embeddings, tied to the MLM decoder, complete last).
fn readiness(name: &str) -> (u8, i64) {
    if let Some(rest) = name.split("encoder.layer.").nth(1) {
        let layer = rest.split('.').next().and_then(|n| n.parse::<i64>().ok());
        return (1, -layer.unwrap_or(0));
    }
    match (name.contains("embeddings"), name.contains("LayerNorm")) {
        (true, true) => (2, 0),
        (true, false) => (3, 0),
        _ => (0, 0),
    }
}

impl BucketPlan {
    pub fn new(flat: &FlatParameters, bucket_elements: i64) -> BucketPlan {
        let sizes: Vec<i64> = flat.params.iter().map(|p| p.numel() as i64).collect();
        BucketPlan::from_parts(&flat.names, &flat.offsets, &sizes, bucket_elements)
    }

    fn from_parts(
        names: &[String],
        offsets: &[i64],
        sizes: &[i64],
        bucket_elements: i64,
    ) -> BucketPlan {
        let mut order: Vec<usize> = (0..names.len()).collect();
        // Stable: within a rank of readiness, buffer order.
        order.sort_by_key(|&i| readiness(&names[i]));
        let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
        let mut filled = 0i64;
        for i in order {
            if filled >= bucket_elements.max(1) {
                groups.push(Vec::new());
                filled = 0;
            }
            groups.last_mut().expect("never empty").push(i);
            filled += sizes[i];
        }
        let mut bucket_of = vec![0; names.len()];
        let buckets = groups
            .into_iter()
            .filter(|g| !g.is_empty())
            .enumerate()
            .map(|(b, group)| {
                for &i in &group {
                    bucket_of[i] = b;
                }
                Bucket {
                    ranges: joined(group.iter().map(|&i| (offsets[i], sizes[i])).collect()),
                    parameters: group.len(),
                }
            })
            .collect();
        BucketPlan { buckets, bucket_of }
    }

    /// The element of the buffer that the last bucket starts with: a rank's non-finite loss
    /// is added there after backward, in the bucket that starts only then.
    pub fn last_bucket_start(&self) -> i64 {
        self.buckets.last().map_or(0, |b| b.ranges[0].0)
    }
}

/// Sorts ranges by offset and joins the ones that touch.
fn joined(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (offset, count) in ranges {
        match out.last_mut() {
            Some((o, c)) if *o + *c == offset => *c += count,
            _ => out.push((offset, count)),
        }
    }
    out
}

/// One backward pass's progress through the plan: which buckets may start as parameters
/// report. The last bucket never starts from a hook: it waits for `rest` after backward,
/// which also starts any bucket a parameter without a gradient held back.
#[derive(Debug)]
pub struct BucketProgress {
    missing: Vec<usize>,
    next: usize,
}

impl BucketProgress {
    pub fn new(plan: &BucketPlan) -> BucketProgress {
        BucketProgress {
            missing: plan.buckets.iter().map(|b| b.parameters).collect(),
            next: 0,
        }
    }

    /// Parameter `param` has its gradient: the buckets that may start now, in order.
    pub fn ready(&mut self, plan: &BucketPlan, param: usize) -> std::ops::Range<usize> {
        let b = plan.bucket_of[param];
        self.missing[b] = self.missing[b].saturating_sub(1);
        let first = self.next;
        let held_back = plan.buckets.len().saturating_sub(1);
        while self.next < held_back && self.missing[self.next] == 0 {
            self.next += 1;
        }
        first..self.next
    }

    /// The buckets not started yet, in order (after backward).
    pub fn rest(&mut self, plan: &BucketPlan) -> std::ops::Range<usize> {
        let first = self.next;
        self.next = plan.buckets.len();
        first..self.next
    }

    /// How many buckets started from hooks, before the backward pass ended.
    pub fn started(&self) -> usize {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BERT's pretraining parameters with their sizes (a 2-layer, hidden-8 stand-in), in the
    /// flat buffer's order: decayed by name, then the rest by name.
    fn bert_like() -> (Vec<String>, Vec<i64>, Vec<i64>) {
        let mut decayed = vec![
            ("bert.embeddings.position_embeddings.weight", 64),
            ("bert.embeddings.token_type_embeddings.weight", 16),
            ("bert.embeddings.word_embeddings.weight", 240),
            ("bert.pooler.dense.weight", 64),
            ("cls.predictions.transform.dense.weight", 64),
            ("cls.seq_relationship.weight", 16),
        ];
        let mut rest = vec![
            ("bert.embeddings.LayerNorm.weight", 8),
            ("bert.pooler.dense.bias", 8),
            ("cls.predictions.bias", 30),
        ];
        for l in 0..2 {
            for w in [
                "attention.self.query",
                "attention.output.dense",
                "output.dense",
            ] {
                decayed.push((
                    Box::leak(format!("bert.encoder.layer.{l}.{w}.weight").into_boxed_str()),
                    64,
                ));
                rest.push((
                    Box::leak(format!("bert.encoder.layer.{l}.{w}.bias").into_boxed_str()),
                    8,
                ));
            }
        }
        decayed.sort();
        rest.sort();
        decayed.extend(rest);
        let mut offset = 0;
        let (mut names, mut offsets, mut sizes) = (vec![], vec![], vec![]);
        for (n, s) in decayed {
            names.push(n.to_string());
            offsets.push(offset);
            sizes.push(s);
            offset += s;
        }
        (names, offsets, sizes)
    }

    #[test]
    fn buckets_cover_every_element_once_and_follow_the_backward_order() {
        let (names, offsets, sizes) = bert_like();
        let total: i64 = sizes.iter().sum();
        let plan = BucketPlan::from_parts(&names, &offsets, &sizes, 200);
        let mut covered = vec![0u8; total as usize];
        for b in &plan.buckets {
            for &(o, c) in &b.ranges {
                covered[o as usize..(o + c) as usize]
                    .iter_mut()
                    .for_each(|x| *x += 1);
            }
        }
        assert!(covered.iter().all(|&x| x == 1));
        let bucket = |name: &str| plan.bucket_of[names.iter().position(|n| n == name).unwrap()];
        // Heads first, then layer 1 before layer 0, the embeddings in the last bucket.
        assert_eq!(bucket("cls.predictions.bias"), 0);
        assert!(
            bucket("bert.encoder.layer.1.output.dense.weight")
                <= bucket("bert.encoder.layer.0.output.dense.weight")
        );
        assert_eq!(
            bucket("bert.embeddings.word_embeddings.weight"),
            plan.buckets.len() - 1
        );
        assert!(plan.buckets.len() >= 3, "{plan:?}");
        // An encoder layer's weights and its biases are one range each.
        let layer_bucket = &plan.buckets[bucket("bert.encoder.layer.1.output.dense.bias")];
        assert!(layer_bucket.ranges.len() <= 3, "{layer_bucket:?}");
        // The last bucket's first element is the embeddings'.
        let start = plan.last_bucket_start();
        assert!(plan
            .buckets
            .last()
            .unwrap()
            .ranges
            .iter()
            .any(|&(o, _)| o == start));
    }

    #[test]
    fn buckets_start_in_order_when_complete_and_the_last_waits_for_the_end() {
        let (names, offsets, sizes) = bert_like();
        let plan = BucketPlan::from_parts(&names, &offsets, &sizes, 200);
        let n = plan.buckets.len();
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by_key(|&i| readiness(&names[i]));
        let mut progress = BucketProgress::new(&plan);
        let mut started = vec![];
        for &i in &order {
            started.extend(progress.ready(&plan, i));
        }
        assert_eq!(started, (0..n - 1).collect::<Vec<_>>());
        assert_eq!(progress.started(), n - 1);
        assert_eq!(progress.rest(&plan), n - 1..n);

        // Out of order: the second bucket completes first but waits for the first.
        let mut progress = BucketProgress::new(&plan);
        let first_of = |b: usize| {
            order
                .iter()
                .copied()
                .filter(|&i| plan.bucket_of[i] == b)
                .collect::<Vec<_>>()
        };
        for i in first_of(1) {
            assert!(progress.ready(&plan, i).is_empty());
        }
        let mut now = vec![];
        for i in first_of(0) {
            now.extend(progress.ready(&plan, i));
        }
        assert_eq!(now, vec![0, 1]);
        // A parameter that never reports holds its bucket back until the end.
        let mut progress = BucketProgress::new(&plan);
        let skipped = first_of(0)[0];
        for &i in order.iter().filter(|&&i| i != skipped) {
            assert!(progress.ready(&plan, i).is_empty());
        }
        assert_eq!(progress.rest(&plan), 0..n);
    }

    #[test]
    fn one_bucket_starts_only_after_backward() {
        let (names, offsets, sizes) = bert_like();
        let plan = BucketPlan::from_parts(&names, &offsets, &sizes, 1 << 40);
        assert_eq!(plan.buckets.len(), 1);
        assert_eq!(plan.buckets[0].ranges, vec![(0, sizes.iter().sum())]);
        let mut progress = BucketProgress::new(&plan);
        for i in 0..names.len() {
            assert!(progress.ready(&plan, i).is_empty());
        }
        assert_eq!(progress.rest(&plan), 0..1);
    }
}
