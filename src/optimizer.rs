//! AdamW as BERT uses it and LAMB, with state we can checkpoint.
//!
//! AdamW: decoupled weight decay (none on LayerNorm parameters or biases), bias
//! correction (configurable; Google's original omits it), update
//! `lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)`. LAMB (You et al., as NVIDIA's recipe):
//! the same update scaled per tensor by the trust ratio ||p|| / ||update|| for decayed
//! tensors. The moments live in tensors named after the parameters (`exp_avg.NAME`,
//! `exp_avg_sq.NAME`), written to `optimizer.safetensors` and read back on resume.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::run_config::TrainConfig;

pub struct Optimizer {
    lamb: bool,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    bias_correction: bool,
    /// Parameters by name, in a fixed order.
    params: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    pub steps: u64,
}

/// BERT excludes LayerNorm parameters and biases from weight decay.
pub fn decays(name: &str) -> bool {
    !(name.contains("LayerNorm") || name.ends_with(".bias"))
}

impl Optimizer {
    pub fn new(variables: BTreeMap<String, Tensor>, config: &TrainConfig) -> Optimizer {
        let params: Vec<(String, Tensor)> = variables.into_iter().collect();
        let zeros = |p: &Tensor| p.zeros_like().to_kind(Kind::Float);
        Optimizer {
            lamb: config.optimizer == "lamb",
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.epsilon,
            weight_decay: config.weight_decay,
            bias_correction: config.bias_correction,
            exp_avg: params.iter().map(|(_, p)| zeros(p)).collect(),
            exp_avg_sq: params.iter().map(|(_, p)| zeros(p)).collect(),
            params,
            steps: 0,
        }
    }

    /// The global L2 norm of the gradients (a device scalar).
    pub fn grad_norm(&self) -> Tensor {
        let squares: Vec<Tensor> = self
            .params
            .iter()
            .filter(|(_, p)| p.grad().defined())
            .map(|(_, p)| p.grad().to_kind(Kind::Float).square().sum(Kind::Float))
            .collect();
        Tensor::stack(&squares, 0).sum(Kind::Float).sqrt()
    }

    /// Scales the gradients so that their global norm is at most `max_norm`.
    pub fn clip(&self, norm: f64, max_norm: f64) {
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            tch::no_grad(|| {
                for (_, p) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(scale);
                    }
                }
            });
        }
    }

    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        let (c1, c2) = if self.bias_correction {
            (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
        } else {
            (1.0, 1.0)
        };
        tch::no_grad(|| {
            for (i, (name, p)) in self.params.iter().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(Kind::Float);
                let (m, v) = (&mut self.exp_avg[i], &mut self.exp_avg_sq[i]);
                let _ = m
                    .g_mul_scalar_(self.beta1)
                    .g_add_(&(&g * (1.0 - self.beta1)));
                let _ = v
                    .g_mul_scalar_(self.beta2)
                    .g_add_(&(g.square() * (1.0 - self.beta2)));
                let decay = decays(name);
                let mut update = (&*m / c1) / ((&*v / c2).sqrt() + self.eps);
                if decay && self.weight_decay > 0.0 {
                    update += p * self.weight_decay;
                }
                let mut scale = lr;
                if self.lamb && decay {
                    let (w, u) = (p.norm().double_value(&[]), update.norm().double_value(&[]));
                    if w > 0.0 && u > 0.0 {
                        scale *= w / u;
                    }
                }
                let mut p = p.shallow_clone();
                let _ = p.g_sub_(&(update * scale));
            }
        });
    }

    pub fn zero_grad(&self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// The moments under checkpoint names.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((
                format!("exp_avg.{name}"),
                self.exp_avg[i].to_device(tch::Device::Cpu),
            ));
            out.push((
                format!("exp_avg_sq.{name}"),
                self.exp_avg_sq[i].to_device(tch::Device::Cpu),
            ));
        }
        out
    }

    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>, steps: u64) -> Result<()> {
        let map: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        tch::no_grad(|| -> Result<()> {
            for (i, (name, _)) in self.params.iter().enumerate() {
                for (prefix, slot) in [
                    ("exp_avg", &mut self.exp_avg[i]),
                    ("exp_avg_sq", &mut self.exp_avg_sq[i]),
                ] {
                    let key = format!("{prefix}.{name}");
                    let t = map
                        .get(&key)
                        .with_context(|| format!("optimizer state lacks {key}"))?;
                    if t.size() != slot.size() {
                        bail!(
                            "optimizer state {key} has shape {:?}, expected {:?}",
                            t.size(),
                            slot.size()
                        );
                    }
                    slot.copy_(t);
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

/// The learning rate at `step` (from 0): linear warmup to `base`, then linear or
/// polynomial decay to 0 at `total` steps.
pub fn learning_rate(config: &TrainConfig, step: u64) -> f64 {
    let (base, warmup, total) = (
        config.learning_rate,
        config.warmup_steps,
        config.max_steps.max(1),
    );
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let left = (1.0 - (step - warmup) as f64 / span).max(0.0);
    match config.decay.as_str() {
        "poly" => base * left.powf(config.poly_power),
        _ => base * left,
    }
}
