//! The variable-length flash-attention kernel (`_flash_attention_forward` with cumulative
//! sequence lengths), through the C++ shim in `src/shim/flash_attention.cpp`: attention over
//! packed sequences (`packing`), each at its own length, with no mask. It runs on CUDA GPUs
//! of compute capability 8.0 or newer, in bf16 or fp16; `available` tries it once per
//! device, dtype and head size, and the encoder falls back to masked attention on the
//! padded layout where it does not run.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::runtime::shim_message;

extern "C" {
    fn biobert_flash_attention_varlen(
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        cu_seqlens: *const c_void,
        max_len: i64,
        dropout_p: f64,
        message: *mut *mut c_char,
    ) -> *mut c_void;
}

/// Attention over packed sequences: `q`, `k`, `v` [tokens, heads, head_dim], `cu_seqlens`
/// int32 [sequences + 1] on the same device; the output has `q`'s shape.
pub fn varlen(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens: &Tensor,
    max_len: i64,
    dropout_p: f64,
) -> Result<Tensor> {
    let mut message: *mut c_char = std::ptr::null_mut();
    let handle = |t: &Tensor| t.as_ptr() as *const c_void;
    // SAFETY: the arguments are live tch handles (at::Tensor*); the shim returns a new
    // handle that we own, or null and a malloc'd message, and catches every C++ exception.
    let out = unsafe {
        biobert_flash_attention_varlen(
            handle(q),
            handle(k),
            handle(v),
            handle(cu_seqlens),
            max_len,
            dropout_p,
            &mut message,
        )
    };
    if out.is_null() {
        // SAFETY: the shim set `message` when it returned null.
        bail!("variable-length flash attention: {}", unsafe {
            shim_message::take(message)
        });
    }
    // SAFETY: a fresh at::Tensor* allocated with new, as tch's own handles are.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

type Probes = Mutex<HashMap<String, Result<(), String>>>;

/// Whether the kernel runs (forward and backward) on `device` for `kind` and `head_dim`;
/// the kernel's reason when it does not. Tried once on a tiny input, then remembered.
pub fn available(device: Device, kind: Kind, head_dim: i64) -> Result<(), String> {
    if !matches!(device, Device::Cuda(_)) {
        return Err("the kernel needs a CUDA device".into());
    }
    if !matches!(kind, Kind::BFloat16 | Kind::Half) {
        return Err(format!(
            "the kernel needs bf16 or fp16 products, not {kind:?}"
        ));
    }
    static PROBES: OnceLock<Probes> = OnceLock::new();
    let key = format!("{device:?} {kind:?} {head_dim}");
    let probes = PROBES.get_or_init(Default::default);
    let mut probes = probes.lock().unwrap_or_else(|e| e.into_inner());
    probes
        .entry(key)
        .or_insert_with(|| probe(device, kind, head_dim).map_err(|e| format!("{e:#}")))
        .clone()
}

fn probe(device: Device, kind: Kind, head_dim: i64) -> Result<()> {
    let q = Tensor::f_randn([5, 2, head_dim], (kind, device))?.set_requires_grad(true);
    let cu = Tensor::from_slice(&[0i32, 2, 5]).f_to_device(device)?;
    let out = varlen(&q, &q, &q, &cu, 3, 0.0)?;
    if out.size() != q.size() {
        bail!(
            "variable-length flash attention returned {:?} for {:?}",
            out.size(),
            q.size()
        );
    }
    out.f_sum(kind)?.f_backward()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_refused_with_the_reason() {
        let e = available(Device::Cpu, Kind::BFloat16, 64).unwrap_err();
        assert!(e.contains("CUDA"), "{e}");
        let e = available(Device::Cuda(0), Kind::Float, 64).unwrap_err();
        assert!(e.contains("bf16 or fp16"), "{e}");
    }
}
