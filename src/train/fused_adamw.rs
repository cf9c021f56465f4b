//! libtorch's fused AdamW kernel (`torch.optim.AdamW(fused=True)`), through the C++ shim in
//! `src/shim/fused_adamw.cpp`: one pass over parameters, gradients and both moments instead
//! of the several element-wise kernels of `Optimizer::step`. Same update: decoupled weight
//! decay `p -= lr * wd * p`, bias-corrected moments, `eps` added after the square root.

use std::ffi::{c_char, c_void};

use anyhow::{bail, Result};
use tch::Tensor;

use crate::runtime::shim_message;

extern "C" {
    fn biobert_fused_adamw(
        param: *const c_void,
        grad: *const c_void,
        exp_avg: *const c_void,
        exp_avg_sq: *const c_void,
        step: *const c_void,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
}

pub struct Hyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// One AdamW step over `param` in place. `step` is a one-element fp32 tensor on the
/// parameters' device holding the step number (from 1), as PyTorch keeps it.
pub fn step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    step: &Tensor,
    h: &Hyper,
) -> Result<()> {
    let ptr = |t: &Tensor| t.as_ptr() as *const c_void;
    // SAFETY: every pointer is a live tch tensor handle (an at::Tensor*), borrowed for the
    // call; the shim catches C++ exceptions and returns them as a malloc'd message.
    let message = unsafe {
        biobert_fused_adamw(
            ptr(param),
            ptr(grad),
            ptr(exp_avg),
            ptr(exp_avg_sq),
            ptr(step),
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
        )
    };
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null message from the shim.
    bail!("fused AdamW: {}", unsafe { shim_message::take(message) })
}
