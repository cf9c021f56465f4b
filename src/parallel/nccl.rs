//! NCCL, loaded at run time: `libnccl.so.2` from the loader's path (where GPU clusters and
//! the NVIDIA containers put it) or from the `nvidia-nccl` wheel beside torch. A hand-written
//! binding of the few functions data parallelism needs (signatures from `nccl.h`).

use libloading::{Library, Symbol};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};

use crate::runtime::cuda_runtime::Stream;

pub const NCCL_LIBRARY: &str = "libnccl.so.2";

/// `ncclUniqueId`: 128 opaque bytes that rank 0 makes and every rank must receive.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    pub internal: [u8; 128],
}

/// `ncclComm_t`.
pub type Comm = *mut c_void;

/// `ncclDataType_t` values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataType {
    Float32 = 7,
    BFloat16 = 9,
}

const NCCL_SUCCESS: c_int = 0;
const NCCL_SUM: c_int = 0;

pub struct Nccl {
    lib: Library,
    /// Where it was loaded from, as named to dlopen.
    pub origin: String,
}

impl Nccl {
    /// `NCCL_LIBRARY_PATH` (a file) first, then the loader's search path, then the wheel
    /// that pip puts beside torch (`site-packages/nvidia/nccl/lib`).
    pub fn open(torch_lib_dir: Option<&Path>) -> Result<Nccl, String> {
        let mut candidates: Vec<String> = Vec::new();
        if let Some(p) = std::env::var_os("NCCL_LIBRARY_PATH") {
            candidates.push(p.to_string_lossy().into_owned());
        }
        candidates.push(NCCL_LIBRARY.to_string());
        if let Some(wheel) = torch_lib_dir.and_then(wheel_nccl) {
            candidates.push(wheel.to_string_lossy().into_owned());
        }
        let mut errors = Vec::new();
        for name in candidates {
            // SAFETY: loading NCCL runs its initialisers only, as any NCCL program does.
            match unsafe { Library::new(&name) } {
                Ok(lib) => return Ok(Nccl { lib, origin: name }),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(format!("{NCCL_LIBRARY} not found ({})", errors.join("; ")))
    }

    /// NCCL's version as (major, minor, patch).
    pub fn version(&self) -> Result<(i32, i32, i32), String> {
        // SAFETY: ncclResult_t ncclGetVersion(int *version).
        let get: Symbol<unsafe extern "C" fn(*mut c_int) -> c_int> =
            unsafe { self.lib.get(b"ncclGetVersion\0") }.map_err(|e| e.to_string())?;
        let mut code = 0;
        let rc = unsafe { get(&mut code) };
        if rc != 0 {
            return Err(format!("ncclGetVersion failed with NCCL error {rc}"));
        }
        Ok(decode_version(code))
    }
}

impl Nccl {
    fn symbol<T>(&self, name: &[u8]) -> Result<Symbol<'_, T>, String> {
        // SAFETY: each caller names the symbol with its documented C signature.
        unsafe { self.lib.get(name) }.map_err(|e| format!("{NCCL_LIBRARY}: {e}"))
    }

    /// `Err` with NCCL's own words for a failed call: the code's text and the last error.
    fn check(&self, call: &str, rc: c_int, comm: Option<Comm>) -> Result<(), String> {
        if rc == NCCL_SUCCESS {
            return Ok(());
        }
        let text = |f: Result<Symbol<unsafe extern "C" fn(c_int) -> *const c_char>, String>| {
            f.ok()
                // SAFETY: NCCL returns static NUL-terminated strings.
                .map(|f| {
                    unsafe { CStr::from_ptr(f(rc)) }
                        .to_string_lossy()
                        .into_owned()
                })
                .unwrap_or_default()
        };
        let code_text = text(self.symbol(b"ncclGetErrorString\0"));
        // The reason behind the code ("Duplicate GPU detected" behind "invalid usage"): NCCL
        // keeps it per communicator, and for calls without one (set-up) under NULL.
        let last: Result<Symbol<unsafe extern "C" fn(Comm) -> *const c_char>, String> =
            self.symbol(b"ncclGetLastError\0");
        let detail = last.ok().and_then(|last| {
            // SAFETY: ncclGetLastError accepts NULL and returns a NUL-terminated string or null.
            let p = unsafe { last(comm.unwrap_or(std::ptr::null_mut())) };
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        });
        Err(describe(call, rc, &code_text, detail.as_deref()))
    }

    /// A new unique id (rank 0 makes it; the others receive it over MPI).
    pub fn unique_id(&self) -> Result<UniqueId, String> {
        let f: Symbol<unsafe extern "C" fn(*mut UniqueId) -> c_int> =
            self.symbol(b"ncclGetUniqueId\0")?;
        let mut id = UniqueId { internal: [0; 128] };
        self.check("ncclGetUniqueId", unsafe { f(&mut id) }, None)?;
        Ok(id)
    }

    /// Joins the communicator of `nranks` ranks named by `id`, on the current CUDA device.
    /// Blocks until every rank has joined.
    pub fn init_rank(&self, nranks: usize, id: UniqueId, rank: usize) -> Result<Comm, String> {
        let f: Symbol<unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> c_int> =
            self.symbol(b"ncclCommInitRank\0")?;
        let mut comm = std::ptr::null_mut();
        let rc = unsafe { f(&mut comm, nranks as c_int, id, rank as c_int) };
        self.check("ncclCommInitRank", rc, None)?;
        Ok(comm)
    }

    /// Queues an in-place sum of `count` elements at device address `buffer` on `stream`.
    pub fn all_reduce_sum(
        &self,
        buffer: *mut c_void,
        count: usize,
        dtype: DataType,
        comm: Comm,
        stream: Stream,
    ) -> Result<(), String> {
        type AllReduce = unsafe extern "C" fn(
            *const c_void,
            *mut c_void,
            usize,
            c_int,
            c_int,
            Comm,
            Stream,
        ) -> c_int;
        let f: Symbol<AllReduce> = self.symbol(b"ncclAllReduce\0")?;
        let rc = unsafe {
            f(
                buffer,
                buffer,
                count,
                dtype as c_int,
                NCCL_SUM,
                comm,
                stream,
            )
        };
        self.check("ncclAllReduce", rc, Some(comm))
    }

    /// Collectives between `group_start` and `group_end` are launched together.
    pub fn group_start(&self) -> Result<(), String> {
        let f: Symbol<unsafe extern "C" fn() -> c_int> = self.symbol(b"ncclGroupStart\0")?;
        self.check("ncclGroupStart", unsafe { f() }, None)
    }

    pub fn group_end(&self) -> Result<(), String> {
        let f: Symbol<unsafe extern "C" fn() -> c_int> = self.symbol(b"ncclGroupEnd\0")?;
        self.check("ncclGroupEnd", unsafe { f() }, None)
    }

    /// `Err` when the communicator has failed asynchronously (a peer gone, a network
    /// error): NCCL reports those only when asked.
    pub fn async_error(&self, comm: Comm) -> Result<(), String> {
        let f: Symbol<unsafe extern "C" fn(Comm, *mut c_int) -> c_int> =
            self.symbol(b"ncclCommGetAsyncError\0")?;
        let mut state = NCCL_SUCCESS;
        self.check(
            "ncclCommGetAsyncError",
            unsafe { f(comm, &mut state) },
            Some(comm),
        )?;
        self.check("an NCCL collective", state, Some(comm))
    }

    /// Tears the communicator down without waiting for peers: unblocks kernels stuck
    /// waiting for a rank that is gone.
    pub fn abort(&self, comm: Comm) {
        if let Ok(f) = self.symbol::<unsafe extern "C" fn(Comm) -> c_int>(b"ncclCommAbort\0") {
            unsafe { f(comm) };
        }
    }

    pub fn destroy(&self, comm: Comm) {
        if let Ok(f) = self.symbol::<unsafe extern "C" fn(Comm) -> c_int>(b"ncclCommDestroy\0") {
            unsafe { f(comm) };
        }
    }
}

/// One line: the call, the code and its text, and NCCL's last error when it says more.
fn describe(call: &str, rc: c_int, code_text: &str, last_error: Option<&str>) -> String {
    let mut message = format!("{call} failed: NCCL error {rc} ({code_text})");
    if let Some(detail) = last_error.map(str::trim).filter(|d| !d.is_empty()) {
        message.push_str(": ");
        message.push_str(&detail.replace('\n', " "));
    }
    message
}

/// NCCL >= 2.9 encodes its version as major*10000 + minor*100 + patch; older ones as
/// major*1000 + minor*100 + patch.
fn decode_version(code: c_int) -> (i32, i32, i32) {
    if code >= 20900 {
        (code / 10000, (code % 10000) / 100, code % 100)
    } else {
        (code / 1000, (code % 1000) / 100, code % 100)
    }
}

fn wheel_nccl(torch_lib_dir: &Path) -> Option<PathBuf> {
    let site_packages = torch_lib_dir.parent()?.parent()?;
    let path = site_packages.join("nvidia/nccl/lib").join(NCCL_LIBRARY);
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_follows_the_code() {
        assert_eq!(
            describe("ncclCommInitRank", 5, "invalid usage", Some("Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1a000\n")),
            "ncclCommInitRank failed: NCCL error 5 (invalid usage): Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1a000"
        );
        assert_eq!(
            describe("ncclAllReduce", 2, "unhandled system error", Some("")),
            "ncclAllReduce failed: NCCL error 2 (unhandled system error)"
        );
    }

    #[test]
    fn decodes_both_version_encodings() {
        assert_eq!(decode_version(22809), (2, 28, 9));
        assert_eq!(decode_version(2804), (2, 8, 4));
    }
}
