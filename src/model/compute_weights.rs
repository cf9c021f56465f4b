//! The master weights cast to the compute dtype once per optimizer step
//! (`train.cast_weights_once`), as Megatron-LM and apex keep a bf16 copy of the fp32 master
//! parameters beside them.
//!
//! Without it, mixed precision casts every weight as it is used (`to_kind`), once per
//! micro-batch: with gradient accumulation the same 110 M fp32 weights are read and cast k
//! times a step, and every weight's gradient comes back through its own cast and its own
//! add into the fp32 buffer (two kernels per tensor, ~400 for BERT-base). Here the copies
//! live in one flat buffer, refreshed by one cast kernel at the start of the optimizer
//! step; they are autograd leaves whose gradients land in a second flat buffer in the
//! compute dtype, and one kernel adds that buffer into the fp32 gradients after each
//! micro-batch's backward, so the sum over micro-batches is still taken in fp32.
//!
//! The arithmetic is that of the per-use casts: a bf16 product's weight gradient is bf16
//! either way, and is added to the fp32 sum once per micro-batch. A weight used twice in
//! bf16 in one micro-batch would have its two gradients summed in bf16 here, so the model
//! reads each weight in the compute dtype at most once per pass (the tests check the
//! gradients against the per-use casts). Memory: two copies in the compute dtype, 4 bytes
//! a parameter (440 MB for BERT-base's 110 M), whatever the corpus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Kind, Tensor};

use crate::train::flat_parameters::point_into;

pub struct ComputeWeights {
    /// The compute dtype of the copies.
    pub kind: Kind,
    /// The master weights as of the last `refresh`, flat, in the compute dtype.
    data: Tensor,
    /// The copies' gradients since the last `accumulate_into`, flat, in the compute dtype.
    grad: Tensor,
    /// The master's storage address (its element in the flat fp32 buffer) to its copy, a
    /// leaf of autograd backed by `data`.
    by_master: HashMap<usize, Tensor>,
    /// Between `refresh` and `release`: the copies equal the master weights. Outside (the
    /// evaluation between steps, after the optimizer has moved the master), the model casts
    /// as it goes.
    active: AtomicBool,
}

impl ComputeWeights {
    /// Copies of `params`, which are views of the flat fp32 `master` at `offsets` (as
    /// `train::flat_parameters` lays them out), in `kind`.
    pub fn new(master: &Tensor, params: &[Tensor], offsets: &[i64], kind: Kind) -> ComputeWeights {
        let data = tch::no_grad(|| master.to_kind(kind));
        let grad = data.zeros_like();
        // The copies start as leaves of the right shape; `point_into` backs them by `data`.
        let leaves: Vec<Tensor> = params
            .iter()
            .map(|p| Tensor::zeros(p.size().as_slice(), (kind, p.device())).set_requires_grad(true))
            .collect();
        point_into(&leaves, offsets, &data, &grad);
        let by_master = params
            .iter()
            .zip(leaves)
            .map(|(p, leaf)| (p.data_ptr() as usize, leaf))
            .collect();
        ComputeWeights {
            kind,
            data,
            grad,
            by_master,
            active: AtomicBool::new(false),
        }
    }

    /// Casts the master weights into the copies (one kernel) and lets the model use them,
    /// until `release`: call it at the start of an optimizer step, before the first
    /// micro-batch's forward pass.
    pub fn refresh(&self, master: &Tensor) {
        tch::no_grad(|| {
            self.data.shallow_clone().copy_(master);
        });
        self.active.store(true, Ordering::Release);
    }

    /// After an optimizer step's last backward pass: the master weights are about to move,
    /// and the model casts as it goes until the next `refresh`.
    pub fn release(&self) {
        self.active.store(false, Ordering::Release);
    }

    /// The copy of `master` in `kind`, while the copies are fresh; `None` otherwise, or for
    /// a tensor that is not one of the master weights.
    pub fn get(&self, master: &Tensor, kind: Kind) -> Option<Tensor> {
        if kind != self.kind || !self.active.load(Ordering::Acquire) {
            return None;
        }
        self.by_master
            .get(&(master.data_ptr() as usize))
            .filter(|copy| copy.size() == master.size())
            .map(Tensor::shallow_clone)
    }

    /// Adds the copies' gradients of the last backward pass into the fp32 gradients
    /// (`master_grad`, laid out as the master weights) and clears them: one kernel each.
    pub fn accumulate_into(&self, master_grad: &Tensor) {
        tch::no_grad(|| {
            let _ = master_grad.shallow_clone().g_add_(&self.grad);
            let _ = self.grad.shallow_clone().zero_();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn master() -> (Tensor, Vec<Tensor>, Vec<i64>) {
        let data = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.5, -1.25]);
        let w = data.narrow(0, 0, 6).view([2, 3]);
        let b = data.narrow(0, 6, 2);
        (data, vec![w, b], vec![0, 6])
    }

    #[test]
    fn copies_are_used_only_between_refresh_and_release() {
        let (data, params, offsets) = master();
        let copies = ComputeWeights::new(&data, &params, &offsets, Kind::BFloat16);
        assert!(copies.get(&params[0], Kind::BFloat16).is_none());
        copies.refresh(&data);
        let w = copies
            .get(&params[0], Kind::BFloat16)
            .expect("a copy while fresh");
        assert_eq!((w.kind(), w.size()), (Kind::BFloat16, vec![2, 3]));
        assert!(w.equal(&params[0].to_kind(Kind::BFloat16)));
        assert!(copies.get(&params[0], Kind::Half).is_none());
        assert!(copies
            .get(
                &Tensor::ones([2, 3], (Kind::Float, Device::Cpu)),
                Kind::BFloat16
            )
            .is_none());
        // The master moves (an optimizer step): the copy follows at the next refresh only.
        let _ = data.shallow_clone().fill_(0.5);
        assert!(!w.equal(&params[0].to_kind(Kind::BFloat16)));
        copies.refresh(&data);
        assert!(w.equal(&params[0].to_kind(Kind::BFloat16)));
        copies.release();
        assert!(copies.get(&params[0], Kind::BFloat16).is_none());
    }

    #[test]
    fn gradients_are_summed_in_fp32_across_micro_batches() {
        let (data, params, offsets) = master();
        let copies = ComputeWeights::new(&data, &params, &offsets, Kind::BFloat16);
        let master_grad = Tensor::zeros([8], (Kind::Float, Device::Cpu));
        copies.refresh(&data);
        let (w, b) = (
            copies.get(&params[0], Kind::BFloat16).unwrap(),
            copies.get(&params[1], Kind::BFloat16).unwrap(),
        );
        // 256 + 1 is not a bf16 number (its spacing there is 2): summed in bf16, the two
        // micro-batches' gradients would give 256.
        for first in [256.0f32, 1.0] {
            let x = Tensor::from_slice(&[first, 0.0, 0.0])
                .view([1, 3])
                .to_kind(Kind::BFloat16);
            x.linear(&w, Some(&b)).sum(Kind::Float).backward();
            copies.accumulate_into(&master_grad);
        }
        let g = Vec::<f32>::try_from(&master_grad).unwrap();
        assert_eq!(g, [257.0, 0.0, 0.0, 257.0, 0.0, 0.0, 2.0, 2.0]);
        // The copies' own gradients were cleared after each add.
        assert!(bool::try_from(copies.grad.eq(0.0).all()).unwrap());
    }

    /// BERT's pretraining loss over two micro-batches (accumulation), bf16 products with
    /// fp32 and with bf16 activations: the copies give the losses of the per-use casts
    /// exactly, and the same fp32 gradient sums. Every weight but the word embeddings has
    /// one use in bf16, so its sum is bit for bit that of the casts; the word embeddings are
    /// also read in fp32 (the lookup), and their two gradients meet in another order.
    #[test]
    fn bert_trains_as_with_the_casts_per_use() {
        use crate::model::bert::{Batch, Bert};
        use crate::model::bert_config::BertConfig;
        use crate::train::flat_parameters::FlatParameters;
        use tch::nn::VarStore;

        let ids = Tensor::randint(50, [2, 3, 8], (Kind::Int64, Device::Cpu));
        let types = ids.zeros_like();
        let labels = ids.where_scalarother(&ids.remainder(3).eq(0), -100);
        let nsp = Tensor::from_slice(&[0i64, 1, 1]);
        for activations in [Kind::Float, Kind::BFloat16] {
            let run = |with_copies: bool| {
                tch::manual_seed(11);
                let vs = VarStore::new(Device::Cpu);
                let mut bert = Bert::new(&vs.root(), &BertConfig::tiny_for_tests());
                (bert.compute, bert.activations) = (Kind::BFloat16, activations);
                let flat = FlatParameters::new(vs.variables().into_iter().collect(), Device::Cpu);
                flat.zero_grad();
                bert.compute_weights = with_copies.then(|| {
                    ComputeWeights::new(&flat.data, &flat.params, &flat.offsets, Kind::BFloat16)
                });
                if let Some(c) = &bert.compute_weights {
                    c.refresh(&flat.data);
                }
                let mut losses = Vec::new();
                for m in 0..2 {
                    let batch = Batch {
                        input_ids: &ids.get(m),
                        token_type_ids: &types.get(m),
                        attention_mask: None,
                        packing: None,
                    };
                    let l = bert.pretraining_losses(&batch, &labels.get(m), &nsp, false);
                    l.total.backward();
                    if let Some(c) = &bert.compute_weights {
                        // The products read the copies: their gradients came back here.
                        assert!(bool::try_from(c.grad.ne(0.0).any()).unwrap());
                        c.accumulate_into(&flat.grad);
                    }
                    losses.push(l.total.double_value(&[]));
                }
                (
                    losses,
                    flat.names.clone(),
                    flat.offsets.clone(),
                    flat.grad.copy(),
                )
            };
            let (want_losses, names, offsets, want) = run(false);
            let (got_losses, _, _, got) = run(true);
            assert_eq!(got_losses, want_losses, "{activations:?}");
            let total = want.size()[0];
            for (i, name) in names.iter().enumerate() {
                let end = offsets.get(i + 1).copied().unwrap_or(total);
                let (g, w) = (
                    got.narrow(0, offsets[i], end - offsets[i]),
                    want.narrow(0, offsets[i], end - offsets[i]),
                );
                if name.ends_with("word_embeddings.weight") {
                    let diff = (&g - &w).abs().max().double_value(&[]);
                    assert!(diff < 1e-6, "{activations:?} {name}: {diff}");
                } else {
                    assert!(g.equal(&w), "{activations:?} {name}");
                }
            }
            assert!(bool::try_from(want.ne(0.0).any()).unwrap());
        }
    }
}
