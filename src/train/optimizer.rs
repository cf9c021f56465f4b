//! AdamW as BERT uses it and LAMB, over flat buffers whose state we checkpoint.
//!
//! AdamW: decoupled weight decay (none on LayerNorm parameters or biases), bias
//! correction (configurable; Google's original omits it), update
//! `lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)`. LAMB (You et al., as NVIDIA's recipe):
//! the same update scaled per tensor by the trust ratio ||p|| / ||update|| for decayed
//! tensors. The moments are two flat fp32 buffers laid out like the parameters (see
//! `FlatParameters`), so a step is a few kernels over the whole model with no host sync;
//! they are written to `optimizer.safetensors` under the parameters' names
//! (`exp_avg.NAME`, `exp_avg_sq.NAME`) and read back on resume.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::config::choices::OptimizerKind;
use crate::config::optimizer_config::OptimizerConfig;
use crate::train::flat_parameters::FlatParameters;

pub struct Optimizer {
    lamb: bool,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    bias_correction: bool,
    pub flat: FlatParameters,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// LAMB: the element count of each decayed parameter (they lead the buffers).
    decayed_lengths: Tensor,
    /// AdamW with bias correction goes through libtorch's fused kernel (src/train/fused_adamw.rs);
    /// LAMB and Google's uncorrected AdamW through the element-wise kernels below.
    pub fused: bool,
    /// The step number as the fused kernel reads it (a device scalar): with bias
    /// correction it counts the steps taken on the device, skipped ones excluded.
    step_tensor: Tensor,
    /// Steps taken, as the element-wise path counts them on the host.
    pub steps: u64,
}

/// The step the fused kernel sees without bias correction: 1 - beta^step is exactly 1 there
/// for any beta below 0.9999.
const NO_BIAS_CORRECTION_STEP: f64 = 1e7;

impl Optimizer {
    pub fn new(flat: FlatParameters, config: &OptimizerConfig) -> Optimizer {
        // The decayed parameters lead the buffers (FlatParameters' layout).
        let lengths: Vec<i64> = flat
            .params
            .iter()
            .zip(&flat.offsets)
            .take_while(|(_, &offset)| offset < flat.decayed)
            .map(|(p, _)| p.numel() as i64)
            .collect();
        Optimizer {
            lamb: config.kind == OptimizerKind::Lamb,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.epsilon,
            weight_decay: config.weight_decay,
            bias_correction: config.bias_correction,
            exp_avg: flat.data.zeros_like(),
            exp_avg_sq: flat.data.zeros_like(),
            decayed_lengths: Tensor::from_slice(&lengths).to_device(flat.data.device()),
            fused: config.kind == OptimizerKind::Adamw,
            step_tensor: Tensor::full(
                [],
                if config.bias_correction {
                    0.0
                } else {
                    NO_BIAS_CORRECTION_STEP
                },
                (Kind::Float, flat.data.device()),
            ),
            flat,
            steps: 0,
        }
    }

    /// The global L2 norm of the gradients (a device scalar, no host sync).
    pub fn grad_norm(&self) -> Tensor {
        self.flat.grad.norm()
    }

    /// Scales the gradients so that their global norm is at most `max_norm`.
    pub fn clip(&self, norm: f64, max_norm: f64) {
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            tch::no_grad(|| {
                let _ = self.flat.grad.shallow_clone().g_mul_scalar_(scale);
            });
        }
    }

    /// Clips the gradients to `max_norm` (when positive) by their global norm `norm` (the
    /// device scalar of `grad_norm`) and updates the weights at `lr`; a non-finite norm
    /// skips the update, leaving weights, moments and the step count as they were. AdamW
    /// queues all of it without reading the device: the fused kernel takes the clip factor
    /// as its `grad_scale` and the skip as its `found_inf`. LAMB's element-wise path reads
    /// the norm on the host first.
    pub fn clip_and_step(&mut self, norm: &Tensor, max_norm: f64, lr: f64) -> Result<()> {
        if !self.fused {
            let norm = norm.double_value(&[]);
            if norm.is_finite() {
                self.clip(norm, max_norm);
                self.step(lr)?;
            }
            return Ok(());
        }
        tch::no_grad(|| {
            let found_inf = norm.isfinite().logical_not().to_kind(Kind::Float);
            // The kernel divides by the scale: (norm + 1e-6) / max_norm above the limit.
            let grad_scale = (max_norm > 0.0).then(|| {
                let scale = (norm.to_kind(Kind::Float) + 1e-6) / max_norm;
                scale.where_self(&norm.gt(max_norm), &scale.ones_like())
            });
            self.fused_step(lr, grad_scale.as_ref(), Some(&found_inf))
        })
    }

    /// Updates the weights at `lr` with the gradients as they are.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        if self.fused {
            return self.fused_step(lr, None, None);
        }
        self.steps += 1;
        let t = self.steps as i32;
        let (c1, c2) = if self.bias_correction {
            (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
        } else {
            (1.0, 1.0)
        };
        tch::no_grad(|| {
            let g = &self.flat.grad;
            let _ = self.exp_avg.lerp_(g, 1.0 - self.beta1);
            let _ = self.exp_avg_sq.lerp_(&g.square(), 1.0 - self.beta2);
            let mut denom = &self.exp_avg_sq / c2;
            let _ = denom.sqrt_().g_add_scalar_(self.eps);
            let mut update = &self.exp_avg / c1;
            let _ = update.g_div_(&denom);
            drop(denom);
            let d = self.flat.decayed;
            if self.weight_decay > 0.0 && d > 0 {
                let _ = update
                    .narrow(0, 0, d)
                    .g_add_(&(self.flat.data.narrow(0, 0, d) * self.weight_decay));
            }
            if self.lamb && d > 0 {
                self.apply_trust_ratios(&update);
            }
            let _ = self.flat.data.shallow_clone().g_sub_(&(update * lr));
        });
        Ok(())
    }

    /// Two fused calls: the decayed parameters, then the rest without weight decay. Without
    /// bias correction the kernel sees `NO_BIAS_CORRECTION_STEP` throughout: it always
    /// divides by 1 - beta^step, and at that step both factors are exactly 1 in floating
    /// point (0.999^1e7 underflows to 0), which is Google BERT's AdamWeightDecayOptimizer.
    fn fused_step(
        &mut self,
        lr: f64,
        grad_scale: Option<&Tensor>,
        found_inf: Option<&Tensor>,
    ) -> Result<()> {
        let (d, n) = (self.flat.decayed, self.flat.numel());
        tch::no_grad(|| -> Result<()> {
            if self.bias_correction {
                // The kernel reads the step; PyTorch advances it before the call and takes
                // a skipped step back after it.
                let _ = self.step_tensor.g_add_scalar_(1.0);
            }
            let scalars = crate::train::fused_adamw::DeviceScalars {
                step: &self.step_tensor,
                grad_scale,
                found_inf,
            };
            for (start, len, weight_decay) in [(0, d, self.weight_decay), (d, n - d, 0.0)] {
                if len == 0 {
                    continue;
                }
                let part = |t: &Tensor| t.narrow(0, start, len);
                crate::train::fused_adamw::step(
                    &part(&self.flat.data),
                    &part(&self.flat.grad),
                    &part(&self.exp_avg),
                    &part(&self.exp_avg_sq),
                    &scalars,
                    &crate::train::fused_adamw::Hyper {
                        lr,
                        beta1: self.beta1,
                        beta2: self.beta2,
                        weight_decay,
                        eps: self.eps,
                    },
                )?;
            }
            if let (true, Some(found_inf)) = (self.bias_correction, found_inf) {
                let _ = self.step_tensor.g_sub_(found_inf);
            }
            Ok(())
        })
    }

    /// LAMB: scales each decayed tensor's update by ||p|| / ||update|| (1 where either is
    /// 0), all tensors at once through segment sums.
    fn apply_trust_ratios(&self, update: &Tensor) {
        let d = self.flat.decayed;
        let segment_norms = |x: &Tensor| {
            Tensor::segment_reduce(
                &x.narrow(0, 0, d).square(),
                "sum",
                Some(&self.decayed_lengths),
                None::<&Tensor>,
                None::<&Tensor>,
                0,
                // Valid lengths by construction (the flat layout): the checks would cost
                // host syncs.
                true,
                0.0,
            )
            .sqrt()
        };
        let (w, u) = (segment_norms(&self.flat.data), segment_norms(update));
        let usable = w.gt(0.0).logical_and(&u.gt(0.0));
        let ratios = (&w / &u).where_self(&usable, &w.ones_like());
        let per_element = ratios.repeat_interleave_self_tensor(&self.decayed_lengths, 0, d);
        let _ = update.narrow(0, 0, d).g_mul_(&per_element);
    }

    pub fn zero_grad(&self) {
        self.flat.zero_grad();
    }

    /// The moments under checkpoint names.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, name) in self.flat.names.iter().enumerate() {
            for (prefix, flat) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)] {
                out.push((
                    format!("{prefix}.{name}"),
                    self.flat.view_of(flat, i).to_device(tch::Device::Cpu),
                ));
            }
        }
        out
    }

    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>, steps: u64) -> Result<()> {
        let map: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        tch::no_grad(|| -> Result<()> {
            for (i, name) in self.flat.names.iter().enumerate() {
                for (prefix, flat) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)]
                {
                    let key = format!("{prefix}.{name}");
                    let t = map
                        .get(&key)
                        .with_context(|| format!("optimizer state lacks {key}"))?;
                    let mut slot = self.flat.view_of(flat, i);
                    if t.size() != slot.size() {
                        bail!(
                            "optimizer state {key} has shape {:?}, expected {:?}",
                            t.size(),
                            slot.size()
                        );
                    }
                    slot.copy_(&t.to_kind(Kind::Float).to_device(slot.device()));
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        if self.bias_correction {
            let _ = self.step_tensor.fill_(steps as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::flat_parameters::decays;
    use tch::Device;

    fn config(optimizer: &str) -> OptimizerConfig {
        OptimizerConfig {
            kind: if optimizer == "lamb" {
                OptimizerKind::Lamb
            } else {
                OptimizerKind::Adamw
            },
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-6,
            bias_correction: true,
        }
    }

    /// Parameters of a few shapes, decayed or not, with fixed values.
    fn variables() -> BTreeMap<String, Tensor> {
        tch::manual_seed(7);
        [
            ("a.LayerNorm.weight", vec![4]),
            ("a.dense.bias", vec![3]),
            ("a.dense.weight", vec![3, 4]),
            ("b.weight", vec![5, 2]),
        ]
        .into_iter()
        .map(|(n, s)| {
            let p = Tensor::randn(s, (Kind::Float, Device::Cpu)).set_requires_grad(true);
            (n.to_string(), p)
        })
        .collect()
    }

    /// The textbook per-tensor update, one tensor at a time.
    fn reference_step(
        p: &Tensor,
        g: &Tensor,
        (m, v): (&mut Tensor, &mut Tensor),
        name: &str,
        c: &OptimizerConfig,
        t: i32,
        lr: f64,
    ) -> Tensor {
        *m = &*m * c.beta1 + g * (1.0 - c.beta1);
        *v = &*v * c.beta2 + g.square() * (1.0 - c.beta2);
        let (c1, c2) = if c.bias_correction {
            (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t))
        } else {
            (1.0, 1.0)
        };
        let m_hat = &*m / c1;
        let v_hat = &*v / c2;
        let mut u = m_hat / (v_hat.sqrt() + c.epsilon);
        if decays(name) {
            u += p * c.weight_decay;
            if c.kind == OptimizerKind::Lamb {
                let (wn, un) = (p.norm().double_value(&[]), u.norm().double_value(&[]));
                if wn > 0.0 && un > 0.0 {
                    u *= wn / un;
                }
            }
        }
        p - u * lr
    }

    fn matches_reference(optimizer: &str, fused: bool) {
        matches_reference_with(optimizer, fused, true)
    }

    fn matches_reference_with(optimizer: &str, fused: bool, bias_correction: bool) {
        let mut c = config(optimizer);
        c.bias_correction = bias_correction;
        let vars = variables();
        let mut expected: BTreeMap<String, Tensor> = vars
            .iter()
            .map(|(n, p)| (n.clone(), p.detach().copy()))
            .collect();
        let mut moments: BTreeMap<String, (Tensor, Tensor)> = vars
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    (p.detach().zeros_like(), p.detach().zeros_like()),
                )
            })
            .collect();
        let tensors: BTreeMap<String, Tensor> = vars
            .iter()
            .map(|(n, p)| (n.clone(), p.detach().copy().set_requires_grad(true)))
            .collect();
        let held: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(n, p)| (n.clone(), p.shallow_clone()))
            .collect();
        let mut opt = Optimizer::new(FlatParameters::new(tensors, Device::Cpu), &c);
        assert_eq!(opt.fused, optimizer == "adamw");
        opt.fused = fused;
        for t in 1..=3 {
            opt.zero_grad();
            // A loss whose gradient differs per element and per step.
            let loss = held
                .iter()
                .map(|(_, p)| (p * p * (t as f64) + p.sin()).sum(Kind::Float))
                .reduce(|a, b| a + b)
                .unwrap();
            loss.backward();
            for (name, p) in &held {
                let g = p.grad().copy();
                let (m, v) = moments.get_mut(name).unwrap();
                let next = reference_step(&expected[name], &g, (m, v), name, &c, t, 0.01);
                expected.insert(name.clone(), next);
            }
            opt.step(0.01).unwrap();
        }
        for (name, p) in &held {
            let diff = (p - &expected[name]).abs().max().double_value(&[]);
            assert!(
                diff < 1e-6,
                "{optimizer} (fused {fused}) {name}: differs by {diff}"
            );
        }
        // The state round-trips through checkpoint names.
        let state = opt.state();
        assert_eq!(state.len(), 2 * held.len());
        let m_name = "exp_avg.b.weight";
        let saved = &state.iter().find(|(n, _)| n == m_name).unwrap().1;
        assert!(saved.allclose(&moments["b.weight"].0, 1e-6, 1e-7, false));
        opt.load_state(state, 3).unwrap();
    }

    #[test]
    fn adamw_matches_the_per_tensor_reference() {
        matches_reference("adamw", false);
    }

    #[test]
    fn fused_adamw_matches_the_per_tensor_reference() {
        matches_reference("adamw", true);
    }

    /// Google BERT's AdamWeightDecayOptimizer (BioBERT's): no bias correction, fused or not.
    #[test]
    fn adamw_without_bias_correction_matches_the_reference() {
        matches_reference_with("adamw", false, false);
        matches_reference_with("adamw", true, false);
    }

    #[test]
    fn lamb_matches_the_per_tensor_reference() {
        matches_reference("lamb", false);
    }

    /// Gives every parameter of `opt` the gradient of a fixed loss scaled by `factor`.
    fn set_gradients(opt: &Optimizer, held: &[Tensor], factor: f64) {
        opt.zero_grad();
        let loss = held
            .iter()
            .map(|p| (p * p * factor + p.sin()).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        loss.backward();
    }

    fn optimizer_over(
        vars: &BTreeMap<String, Tensor>,
        c: &OptimizerConfig,
    ) -> (Optimizer, Vec<Tensor>) {
        let tensors: BTreeMap<String, Tensor> = vars
            .iter()
            .map(|(n, p)| (n.clone(), p.detach().copy().set_requires_grad(true)))
            .collect();
        let held = tensors.values().map(|p| p.shallow_clone()).collect();
        (
            Optimizer::new(FlatParameters::new(tensors, Device::Cpu), c),
            held,
        )
    }

    /// The clip factor computed on the device equals the host's, for AdamW (fused) and LAMB.
    #[test]
    fn clipping_on_the_device_equals_clipping_on_the_host() {
        for kind in ["adamw", "lamb"] {
            let c = config(kind);
            let vars = variables();
            let (mut host, held_host) = optimizer_over(&vars, &c);
            let (mut device, held_device) = optimizer_over(&vars, &c);
            for t in 1..=3 {
                set_gradients(&host, &held_host, 40.0 * t as f64);
                set_gradients(&device, &held_device, 40.0 * t as f64);
                let norm = host.grad_norm().double_value(&[]);
                assert!(norm > 1.0, "the gradients must be clipped");
                host.clip(norm, 1.0);
                host.step(0.01).unwrap();
                device
                    .clip_and_step(&device.grad_norm(), 1.0, 0.01)
                    .unwrap();
            }
            let diff = (&host.flat.data - &device.flat.data)
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-6, "{kind}: differs by {diff}");
        }
    }

    /// A non-finite gradient norm skips the step on the device: weights, moments and the
    /// step count stay, and the next step is the one that would have come without it.
    #[test]
    fn a_non_finite_norm_skips_the_step_and_leaves_everything_untouched() {
        for kind in ["adamw", "lamb"] {
            let c = config(kind);
            let vars = variables();
            let (mut skipping, held) = optimizer_over(&vars, &c);
            let (mut straight, held_straight) = optimizer_over(&vars, &c);
            set_gradients(&skipping, &held, 1.0);
            skipping
                .clip_and_step(&skipping.grad_norm(), 1.0, 0.01)
                .unwrap();
            let before =
                [&skipping.flat.data, &skipping.exp_avg, &skipping.exp_avg_sq].map(|t| t.copy());
            let step_before = skipping.step_tensor.double_value(&[]);
            set_gradients(&skipping, &held, 1.0);
            let _ = skipping.flat.grad.narrow(0, 2, 1).fill_(f64::NAN);
            skipping
                .clip_and_step(&skipping.grad_norm(), 1.0, 0.01)
                .unwrap();
            let after = [&skipping.flat.data, &skipping.exp_avg, &skipping.exp_avg_sq];
            for (b, a) in before.iter().zip(after) {
                assert!(b.equal(a), "{kind}: a skipped step changed the state");
            }
            assert_eq!(skipping.step_tensor.double_value(&[]), step_before);
            set_gradients(&skipping, &held, 2.0);
            skipping
                .clip_and_step(&skipping.grad_norm(), 1.0, 0.01)
                .unwrap();
            for factor in [1.0, 2.0] {
                set_gradients(&straight, &held_straight, factor);
                straight
                    .clip_and_step(&straight.grad_norm(), 1.0, 0.01)
                    .unwrap();
            }
            assert!(
                skipping.flat.data.equal(&straight.flat.data),
                "{kind}: the step after a skipped one differs"
            );
        }
    }

    #[test]
    fn a_missing_moment_is_an_error() {
        let c = config("adamw");
        let mut opt = Optimizer::new(FlatParameters::new(variables(), Device::Cpu), &c);
        let mut state = opt.state();
        state.retain(|(n, _)| n != "exp_avg_sq.a.dense.bias");
        let err = opt.load_state(state, 1).unwrap_err().to_string();
        assert!(err.contains("lacks exp_avg_sq.a.dense.bias"), "{err}");
    }
}
