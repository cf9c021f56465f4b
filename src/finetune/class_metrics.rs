//! Sentence-classification scores as scikit-learn computes them (`precision_recall_fscore_
//! support`), to the last digit: the positive class's precision, recall and F1 for binary
//! tasks (BioBERT's GAD and EU-ADR figures), micro and macro F1 for multi-class ones
//! (ChemProt). Zero where a denominator is zero, as sklearn's `zero_division` default.

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassScores {
    pub accuracy: f64,
    /// The positive class's (binary tasks: the label "1"); `None` for multi-class.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    pub micro_f1: f64,
    pub macro_f1: f64,
}

/// sklearn's F-score from counts: (1 + b^2) tp / (b^2 (tp + fn) + (tp + fp)), b = 1.
fn f_score(tp: usize, true_sum: usize, pred_sum: usize) -> f64 {
    let denominator = true_sum + pred_sum;
    if denominator == 0 {
        0.0
    } else {
        (2 * tp) as f64 / denominator as f64
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// numpy's pairwise sum (`np.add.reduce`) for fewer than 128 values: eight running sums
/// over blocks of eight, combined pairwise, then the rest in order; so that a mean equals
/// numpy's bit for bit.
fn numpy_sum(values: &[f64]) -> f64 {
    if values.len() < 8 {
        return values.iter().fold(0.0, |acc, &v| acc + v);
    }
    let mut r = [0f64; 8];
    r.copy_from_slice(&values[..8]);
    let blocks = values.len() - values.len() % 8;
    for chunk in values[8..blocks].chunks_exact(8) {
        for (acc, v) in r.iter_mut().zip(chunk) {
            *acc += v;
        }
    }
    let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for v in &values[blocks..] {
        sum += v;
    }
    sum
}

/// Scores of `predicted` against `gold` (label indices); `positive` names the positive
/// class of a binary task.
pub fn score(gold: &[usize], predicted: &[usize], positive: Option<usize>) -> ClassScores {
    assert_eq!(gold.len(), predicted.len());
    let mut labels: Vec<usize> = gold.iter().chain(predicted).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let count = |f: &dyn Fn(usize, usize) -> bool| {
        gold.iter()
            .zip(predicted)
            .filter(|(&g, &p)| f(g, p))
            .count()
    };
    let per_label: Vec<(usize, usize, usize)> = labels
        .iter()
        .map(|&l| {
            (
                count(&|g, p| g == l && p == l),
                count(&|g, _| g == l),
                count(&|_, p| p == l),
            )
        })
        .collect();
    let correct = count(&|g, p| g == p);
    let (tp, t, p) = per_label
        .iter()
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let f1s: Vec<f64> = per_label
        .iter()
        .map(|&(a, b, c)| f_score(a, b, c))
        .collect();
    let macro_f1 = if f1s.is_empty() {
        0.0
    } else {
        numpy_sum(&f1s) / f1s.len() as f64
    };
    let binary = positive.map(|l| {
        let (tp, t, p) = (
            count(&|g, p| g == l && p == l),
            count(&|g, _| g == l),
            count(&|_, p| p == l),
        );
        (ratio(tp, p), ratio(tp, t), f_score(tp, t, p))
    });
    ClassScores {
        accuracy: ratio(correct, gold.len()),
        precision: binary.map(|b| b.0),
        recall: binary.map(|b| b.1),
        f1: binary.map(|b| b.2),
        micro_f1: f_score(tp, t, p),
        macro_f1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_scores_of_the_positive_class() {
        let s = score(&[1, 1, 0, 0, 1], &[1, 0, 1, 0, 1], Some(1));
        assert_eq!(s.precision, Some(2.0 / 3.0));
        assert_eq!(s.recall, Some(2.0 / 3.0));
        assert_eq!(s.f1, Some(4.0 / 6.0));
        assert_eq!(s.accuracy, 0.6);
        assert_eq!(s.micro_f1, 0.6);
    }

    #[test]
    fn pairwise_sum_matches_sequential_where_numpy_is_sequential() {
        let v = [0.1, 0.2, 0.3];
        assert_eq!(numpy_sum(&v), 0.1 + 0.2 + 0.3);
        let w: Vec<f64> = (0..13).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let r: Vec<f64> = (0..8)
            .map(|k| w[k] + w.get(k + 8).copied().unwrap_or(0.0))
            .collect();
        // 13 values: one block of eight, then five added in order.
        let expected = ((w[0] + w[1]) + (w[2] + w[3]))
            + ((w[4] + w[5]) + (w[6] + w[7]))
            + w[8]
            + w[9]
            + w[10]
            + w[11]
            + w[12];
        assert_eq!(numpy_sum(&w), expected);
        let _ = r;
    }
}
