//! The model's parameters and their gradients as views into two flat fp32 buffers, as
//! Megatron's distributed optimizer and PyTorch DDP's `gradient_as_bucket_view` keep them.
//!
//! Backward accumulates straight into the flat gradient buffer, so the all-reduce works on
//! it in place (no gather, no scatter), the global norm is one reduction, and AdamW is a
//! handful of kernels over the whole model instead of a dozen per tensor. Parameters that
//! take weight decay come first, so "decay" is one contiguous range.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

/// BERT excludes LayerNorm parameters and biases from weight decay.
pub fn decays(name: &str) -> bool {
    !(name.contains("LayerNorm") || name.ends_with(".bias"))
}

pub struct FlatParameters {
    /// The parameters in buffer order, by name.
    pub names: Vec<String>,
    /// The model's variables (same tensors as the VarStore's), now backed by `data`.
    pub params: Vec<Tensor>,
    /// Each parameter's first element in the buffers.
    pub offsets: Vec<i64>,
    /// All parameters, flat, fp32.
    pub data: Tensor,
    /// All gradients, flat, fp32; backward accumulates into it.
    pub grad: Tensor,
    /// Elements `0..decayed` take weight decay; the rest (LayerNorm, biases) do not.
    pub decayed: i64,
}

impl FlatParameters {
    /// Moves `variables` (fp32, all on `device`) into flat buffers. The tensors keep their
    /// identity: the model, the VarStore and any other holder see the same values.
    pub fn new(variables: BTreeMap<String, Tensor>, device: Device) -> FlatParameters {
        let (mut ordered, rest): (Vec<_>, Vec<_>) =
            variables.into_iter().partition(|(n, _)| decays(n));
        let decayed: i64 = ordered.iter().map(|(_, p)| p.numel() as i64).sum();
        ordered.extend(rest);
        let total: i64 = ordered.iter().map(|(_, p)| p.numel() as i64).sum();
        let data = Tensor::zeros([total], (Kind::Float, device));
        let grad = Tensor::zeros([total], (Kind::Float, device));
        let (mut names, mut params, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        let mut offset = 0i64;
        tch::no_grad(|| {
            for (name, p) in ordered {
                let n = p.numel() as i64;
                data.narrow(0, offset, n).copy_(&p.reshape(-1));
                names.push(name);
                params.push(p);
                offsets.push(offset);
                offset += n;
            }
        });
        point_into(&params, &offsets, &data, &grad);
        FlatParameters {
            names,
            params,
            offsets,
            data,
            grad,
            decayed,
        }
    }

    pub fn numel(&self) -> i64 {
        self.data.numel() as i64
    }

    /// Parameter `i`'s slice of a flat buffer shaped like the parameter.
    pub fn view_of(&self, flat: &Tensor, i: usize) -> Tensor {
        let p = &self.params[i];
        flat.narrow(0, self.offsets[i], p.numel() as i64)
            .view(p.size().as_slice())
    }

    pub fn zero_grad(&self) {
        let _ = self.grad.shallow_clone().zero_();
    }
}

/// Points each of `params` (leaves of autograd, element `offsets[i]` on) into the flat
/// buffers: its values become a view of `data` and its gradient a view of `grad`, so that
/// backward accumulates into `grad`. The tensors keep their identity. Autograd creates
/// gradients lazily, so one backward pass makes them first (its values are replaced).
pub fn point_into(params: &[Tensor], offsets: &[i64], data: &Tensor, grad: &Tensor) {
    let sums: Vec<Tensor> = params.iter().map(|p| p.sum(Kind::Float)).collect();
    if !sums.is_empty() {
        Tensor::stack(&sums, 0).sum(Kind::Float).backward();
    }
    tch::no_grad(|| {
        for (p, &offset) in params.iter().zip(offsets) {
            let (n, shape) = (p.numel() as i64, p.size());
            p.shallow_clone()
                .set_data(&data.narrow(0, offset, n).view(shape.as_slice()));
            p.grad()
                .set_data(&grad.narrow(0, offset, n).view(shape.as_slice()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module, VarStore};

    #[test]
    fn backward_accumulates_into_the_flat_buffer() {
        let vs = VarStore::new(Device::Cpu);
        let linear = nn::linear(vs.root() / "dense", 3, 2, Default::default());
        let original = Tensor::cat(
            &[linear.ws.view(-1), linear.bs.as_ref().unwrap().view(-1)],
            0,
        )
        .copy();
        let flat = FlatParameters::new(vs.variables().into_iter().collect(), Device::Cpu);
        assert!(flat.data.allclose(&original, 0.0, 0.0, false));
        // The weight (decayed) comes first, the bias after it.
        assert_eq!(flat.names, ["dense.weight", "dense.bias"]);
        assert_eq!((flat.decayed, flat.numel()), (6, 8));
        flat.zero_grad();
        let x = Tensor::from_slice(&[1f32, 2., 3.]).view([1, 3]);
        linear.forward(&x).sum(Kind::Float).backward();
        // d(sum)/d(weight) = x per output row; d/d(bias) = 1.
        let expected = Tensor::from_slice(&[1f32, 2., 3., 1., 2., 3., 1., 1.]);
        assert!(flat.grad.allclose(&expected, 0.0, 0.0, false));
        linear.forward(&x).sum(Kind::Float).backward();
        assert!(flat.grad.allclose(&(&expected * 2.0), 0.0, 0.0, false));
        // Writing the flat buffer changes the model.
        tch::no_grad(|| {
            let _ = flat.data.shallow_clone().fill_(0.5);
        });
        let y = linear.forward(&x);
        assert!((y.double_value(&[0, 0]) - 0.5 * 7.0).abs() < 1e-6);
    }
}
