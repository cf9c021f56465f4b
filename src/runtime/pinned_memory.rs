//! Page-locked (pinned) host memory for asynchronous copies to a GPU, through the C++ shim
//! in `src/shim/pinned_memory.cpp`: tch's `pin_memory(device)` and `is_pinned(device)` pass
//! the device argument that libtorch 2.11 deprecates, and it warns on every call.

use std::ffi::{c_char, c_int, c_void};

use anyhow::{bail, Result};
use tch::Tensor;

use crate::runtime::shim_message;

extern "C" {
    fn biobert_pin_memory(tensor: *const c_void, message: *mut *mut c_char) -> *mut c_void;
    fn biobert_is_pinned(tensor: *const c_void) -> c_int;
}

/// A copy of `t` in page-locked memory (needs a CUDA-capable libtorch).
pub fn pin(t: &Tensor) -> Result<Tensor> {
    let mut message: *mut c_char = std::ptr::null_mut();
    // SAFETY: `t` is a live tch handle (an at::Tensor*); the shim returns a new handle that
    // we own, or null and a malloc'd message.
    let handle = unsafe { biobert_pin_memory(t.as_ptr() as *const c_void, &mut message) };
    if handle.is_null() {
        // SAFETY: the shim set `message` when it returned null.
        bail!("pinning host memory: {}", unsafe {
            shim_message::take(message)
        });
    }
    // SAFETY: a fresh at::Tensor* allocated with new, as tch's own handles are.
    Ok(unsafe { Tensor::from_ptr(handle.cast()) })
}

/// Whether `t` lives in page-locked host memory.
pub fn is_pinned(t: &Tensor) -> bool {
    // SAFETY: `t` is a live tch handle; the shim catches every C++ exception.
    unsafe { biobert_is_pinned(t.as_ptr() as *const c_void) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_host_memory_is_not_pinned() {
        assert!(!is_pinned(&Tensor::zeros([4], tch::kind::FLOAT_CPU)));
    }

    #[test]
    fn pinning_without_a_gpu_is_an_error_not_a_crash() {
        if tch::Cuda::is_available() {
            let pinned = pin(&Tensor::ones([4], tch::kind::FLOAT_CPU)).unwrap();
            assert!(is_pinned(&pinned));
            return;
        }
        let err = pin(&Tensor::ones([4], tch::kind::FLOAT_CPU)).unwrap_err();
        assert!(err.to_string().starts_with("pinning host memory"), "{err}");
    }
}
