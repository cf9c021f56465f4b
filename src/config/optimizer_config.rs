//! What the optimizer needs, whichever command trains: its constants (`OptimizerConfig`)
//! and the learning rate over the run (`Schedule`). Pretraining and fine-tuning each derive
//! both from their own configuration.

use crate::config::choices::{Decay, OptimizerKind};

#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    /// Decoupled weight decay (none on LayerNorm parameters and biases).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// Google's AdamWeightDecayOptimizer has none; Hugging Face's AdamW has it.
    pub bias_correction: bool,
}

/// Linear warm-up to `learning_rate`, then linear or polynomial decay to 0 at
/// `total_steps`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub learning_rate: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
    pub poly_power: f64,
}

impl Schedule {
    /// The learning rate of step `step` (from 0).
    pub fn learning_rate(&self, step: u64) -> f64 {
        let (base, warmup, total) = (
            self.learning_rate,
            self.warmup_steps,
            self.total_steps.max(1),
        );
        if step < warmup {
            return base * (step + 1) as f64 / warmup as f64;
        }
        let span = total.saturating_sub(warmup).max(1) as f64;
        let left = (1.0 - (step - warmup) as f64 / span).max(0.0);
        match self.decay {
            Decay::Poly => base * left.powf(self.poly_power),
            Decay::Linear => base * left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_zero() {
        let s = Schedule {
            learning_rate: 1.0,
            warmup_steps: 4,
            total_steps: 12,
            decay: Decay::Linear,
            poly_power: 1.0,
        };
        let lrs: Vec<f64> = (0..13).map(|k| s.learning_rate(k)).collect();
        assert_eq!(&lrs[..4], &[0.25, 0.5, 0.75, 1.0]);
        assert_eq!(lrs[4], 1.0);
        assert_eq!(lrs[8], 0.5);
        assert_eq!(lrs[12], 0.0);
        let poly = Schedule {
            decay: Decay::Poly,
            poly_power: 0.5,
            ..s
        };
        assert_eq!(poly.learning_rate(8), 0.5f64.sqrt());
    }
}
