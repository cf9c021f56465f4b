//! libtorch's fused AdamW kernel (`torch.optim.AdamW(fused=True)`), through the C++ shim in
//! `src/shim/fused_adamw.cpp`: one pass over parameters, gradients and both moments instead
//! of the several element-wise kernels of `Optimizer::step`. Same update: decoupled weight
//! decay `p -= lr * wd * p`, bias-corrected moments, `eps` added after the square root.
//! The kernel divides the gradients by `grad_scale` (gradient clipping without a host read)
//! and returns at once, on the device, when `found_inf` holds 1 (a skipped step).

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
        grad_scale: *const c_void,
        found_inf: *const c_void,
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

/// The device scalars the kernel reads instead of host values (one-element fp32 tensors on
/// the parameters' device, as PyTorch's GradScaler passes them).
pub struct DeviceScalars<'a> {
    /// The step number (from 1), as PyTorch keeps it; the kernel does not advance it.
    pub step: &'a Tensor,
    /// The gradients are divided by it before the update.
    pub grad_scale: Option<&'a Tensor>,
    /// 1: the kernel leaves parameters and moments untouched.
    pub found_inf: Option<&'a Tensor>,
}

/// One AdamW step over `param` in place.
pub fn step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    scalars: &DeviceScalars<'_>,
    h: &Hyper,
) -> Result<()> {
    let ptr = |t: &Tensor| t.as_ptr() as *const c_void;
    let optional = |t: Option<&Tensor>| t.map_or(std::ptr::null(), ptr);
    // SAFETY: every pointer is a live tch tensor handle (an at::Tensor*), borrowed for the
    // call, or null for an absent optional; the shim catches C++ exceptions and returns them as a malloc'd message.
    let message = unsafe {
        biobert_fused_adamw(
            ptr(param),
            ptr(grad),
            ptr(exp_avg),
            ptr(exp_avg_sq),
            ptr(scalars.step),
            optional(scalars.grad_scale),
            optional(scalars.found_inf),
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
