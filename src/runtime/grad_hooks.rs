//! "This parameter's gradient is accumulated" hooks, through the C++ shim
//! (`src/shim/grad_hooks.cpp`): a post hook on each parameter's AccumulateGrad node, as
//! PyTorch DDP registers them, calling back with the parameter's index. It fires once per
//! backward pass for every parameter that received a gradient, after the accumulation
//! (queued, on a GPU); on a CPU in the thread that called backward, on a GPU in autograd's
//! thread for that device.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::Tensor;

use crate::runtime::shim_message;

type ReadyCallback = extern "C" fn(context: *mut c_void, index: usize);

extern "C" {
    fn biobert_grad_hooks_register(
        params: *const *const c_void,
        count: usize,
        callback: ReadyCallback,
        context: *mut c_void,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn biobert_grad_hooks_free(handle: *mut c_void);
}

/// What a hook calls: the index of the parameter whose gradient is ready. It may run on
/// another thread than the one that registered it.
pub type OnReady = Arc<dyn Fn(usize) + Send + Sync>;

/// The registered hooks; dropping them removes them.
pub struct GradHooks {
    handle: *mut c_void,
    /// Boxed so that its address, which the hooks hold, stays put.
    _on_ready: Box<OnReady>,
}

impl GradHooks {
    /// Hooks on every tensor of `params` (leaves that require grad). Register them after
    /// the last `set_data` to another dtype or device, which gives a leaf a new accumulator.
    pub fn register(params: &[Tensor], on_ready: OnReady) -> Result<GradHooks> {
        let pointers: Vec<*const c_void> =
            params.iter().map(|p| p.as_ptr() as *const c_void).collect();
        let on_ready = Box::new(on_ready);
        let context = &*on_ready as *const OnReady as *mut c_void;
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: the pointers are live tch handles (at::Tensor*) borrowed for the call; the
        // context outlives the hooks (dropped after them, in `drop`); the shim catches its
        // exceptions and reports them through `error`.
        let handle = unsafe {
            biobert_grad_hooks_register(
                pointers.as_ptr(),
                pointers.len(),
                ready,
                context,
                &mut error,
            )
        };
        if handle.is_null() {
            // SAFETY: a null handle comes with a message from the shim.
            bail!("gradient hooks: {}", unsafe { shim_message::take(error) });
        }
        Ok(GradHooks {
            handle,
            _on_ready: on_ready,
        })
    }
}

impl Drop for GradHooks {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful register and is freed once; after this
        // no hook refers to `on_ready`, which is dropped next.
        unsafe { biobert_grad_hooks_free(self.handle) };
    }
}

/// The hook's way back into Rust. A panic must not unwind into libtorch's C++ frames.
extern "C" fn ready(context: *mut c_void, index: usize) {
    // SAFETY: `context` is the `OnReady` boxed in `GradHooks`, alive while hooks are.
    let on_ready = unsafe { &*(context as *const OnReady) };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_ready(index))).is_err() {
        eprintln!("error: a gradient hook panicked; ending the process");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tch::{Device, Kind};

    #[test]
    fn each_parameter_reports_once_per_backward_after_its_gradient_is_accumulated() {
        let a = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let unused = Tensor::ones([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let seen: Arc<Mutex<Vec<(usize, f64)>>> = Arc::default();
        let params = [a.shallow_clone(), b.shallow_clone(), unused.shallow_clone()];
        let watched: Vec<Tensor> = params.iter().map(|p| p.shallow_clone()).collect();
        let (s, watched) = (seen.clone(), Mutex::new(watched));
        let hooks = GradHooks::register(
            &params,
            Arc::new(move |i| {
                let grad = watched.lock().unwrap()[i]
                    .grad()
                    .sum(Kind::Double)
                    .double_value(&[]);
                s.lock().unwrap().push((i, grad));
            }),
        )
        .unwrap();
        // b is used last in the forward pass, so its gradient is ready first.
        let loss = || (&a * 2.0).sum(Kind::Float) * (&b * 3.0).sum(Kind::Float);
        loss().backward();
        loss().backward();
        // d/da = 2 * sum(3b) = 12 per element, 36 in all; d/db = 3 * sum(2a) = 18 each, 36.
        let expected = vec![(1, 36.0), (0, 36.0), (1, 72.0), (0, 72.0)];
        assert_eq!(*seen.lock().unwrap(), expected);
        drop(hooks);
        loss().backward();
        assert_eq!(
            seen.lock().unwrap().len(),
            4,
            "dropped hooks no longer fire"
        );
    }
}
