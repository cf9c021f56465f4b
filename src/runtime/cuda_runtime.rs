//! The CUDA runtime calls that NCCL needs around it — the current device, a stream of its
//! own, and events to order that stream against torch's — loaded at run time from the
//! libcudart that torch itself loaded, so CPU hosts need nothing.
//!
//! Torch runs its kernels on the legacy default stream (handle 0) unless told otherwise;
//! events recorded there and waited on by our stream (and back) order the collectives
//! against the backward pass and the optimizer without blocking the host.

use crate::runtime::nvidia_wheels::WheelLibrary;
use libloading::{Library, Symbol};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::path::Path;

pub type Stream = *mut c_void;
pub type Event = *mut c_void;

/// torch's stream: the legacy default stream.
pub const DEFAULT_STREAM: Stream = std::ptr::null_mut();

const CUDA_SUCCESS: c_int = 0;
const CUDA_ERROR_NOT_READY: c_int = 600;
const STREAM_NON_BLOCKING: c_uint = 0x1;
const EVENT_DISABLE_TIMING: c_uint = 0x2;

/// The sonames torch's CUDA wheels load (cu13, then cu12).
const CUDART: WheelLibrary = WheelLibrary {
    sonames: ["libcudart.so.13", "libcudart.so.12"],
    cuda12_component: "cuda_runtime",
};

pub struct CudaRuntime {
    lib: Library,
}

impl CudaRuntime {
    /// Finds libcudart: already loaded by libtorch_cuda (matched by soname), or in the
    /// nvidia wheels beside torch.
    pub fn open(torch_lib_dir: Option<&Path>) -> Result<CudaRuntime, String> {
        let candidates = CUDART.candidates(torch_lib_dir);
        let mut errors = Vec::new();
        for name in candidates {
            // SAFETY: the CUDA runtime's initialisers are what any CUDA program runs.
            match unsafe { Library::new(&name) } {
                Ok(lib) => return Ok(CudaRuntime { lib }),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(format!(
            "the CUDA runtime was not found ({})",
            errors.join("; ")
        ))
    }

    fn symbol<T>(&self, name: &[u8]) -> Result<Symbol<'_, T>, String> {
        // SAFETY: each caller names the symbol with its documented C signature.
        unsafe { self.lib.get(name) }.map_err(|e| format!("libcudart: {e}"))
    }

    fn check(&self, call: &str, code: c_int) -> Result<(), String> {
        if code == CUDA_SUCCESS {
            return Ok(());
        }
        let text = self
            .symbol::<unsafe extern "C" fn(c_int) -> *const c_char>(b"cudaGetErrorString\0")
            .ok()
            // SAFETY: cudaGetErrorString returns a static NUL-terminated string.
            .map(|f| {
                unsafe { CStr::from_ptr(f(code)) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        Err(format!("{call} failed: CUDA error {code} {text}"))
    }

    /// Makes `device` current for this thread (NCCL binds a communicator to it).
    pub fn set_device(&self, device: usize) -> Result<(), String> {
        let f: Symbol<unsafe extern "C" fn(c_int) -> c_int> = self.symbol(b"cudaSetDevice\0")?;
        self.check("cudaSetDevice", unsafe { f(device as c_int) })
    }

    /// A stream that does not synchronise implicitly with the default stream.
    pub fn create_stream(&self) -> Result<Stream, String> {
        let f: Symbol<unsafe extern "C" fn(*mut Stream, c_uint) -> c_int> =
            self.symbol(b"cudaStreamCreateWithFlags\0")?;
        let mut stream = std::ptr::null_mut();
        self.check("cudaStreamCreateWithFlags", unsafe {
            f(&mut stream, STREAM_NON_BLOCKING)
        })?;
        Ok(stream)
    }

    pub fn create_event(&self) -> Result<Event, String> {
        let f: Symbol<unsafe extern "C" fn(*mut Event, c_uint) -> c_int> =
            self.symbol(b"cudaEventCreateWithFlags\0")?;
        let mut event = std::ptr::null_mut();
        self.check("cudaEventCreateWithFlags", unsafe {
            f(&mut event, EVENT_DISABLE_TIMING)
        })?;
        Ok(event)
    }

    pub fn record(&self, event: Event, stream: Stream) -> Result<(), String> {
        let f: Symbol<unsafe extern "C" fn(Event, Stream) -> c_int> =
            self.symbol(b"cudaEventRecord\0")?;
        self.check("cudaEventRecord", unsafe { f(event, stream) })
    }

    /// Work queued on `stream` from now on waits for `event`.
    pub fn wait(&self, stream: Stream, event: Event) -> Result<(), String> {
        let f: Symbol<unsafe extern "C" fn(Stream, Event, c_uint) -> c_int> =
            self.symbol(b"cudaStreamWaitEvent\0")?;
        self.check("cudaStreamWaitEvent", unsafe { f(stream, event, 0) })
    }

    /// Blocks the host until the work before `event` has finished.
    pub fn synchronize(&self, event: Event) -> Result<(), String> {
        let f: Symbol<unsafe extern "C" fn(Event) -> c_int> =
            self.symbol(b"cudaEventSynchronize\0")?;
        self.check("cudaEventSynchronize", unsafe { f(event) })
    }

    pub fn destroy_event(&self, event: Event) -> Result<(), String> {
        let f: Symbol<unsafe extern "C" fn(Event) -> c_int> = self.symbol(b"cudaEventDestroy\0")?;
        self.check("cudaEventDestroy", unsafe { f(event) })
    }

    /// Whether the work before `event` has finished (never blocks).
    pub fn is_done(&self, event: Event) -> Result<bool, String> {
        let f: Symbol<unsafe extern "C" fn(Event) -> c_int> = self.symbol(b"cudaEventQuery\0")?;
        match unsafe { f(event) } {
            CUDA_ERROR_NOT_READY => Ok(false),
            code => self.check("cudaEventQuery", code).map(|_| true),
        }
    }
}
