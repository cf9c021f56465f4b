//! Bringing up libtorch's CUDA half at start-up.
//!
//! The binary links only libc10, libtorch_cpu and libtorch, so that it starts on hosts
//! without CUDA. On a GPU host, `libtorch_cuda.so` from the folder libtorch_cpu.so was
//! loaded from is opened with RTLD_NOW | RTLD_GLOBAL before tch is touched: its static
//! initialisers register the CUDA hooks, and from then on `tch::Cuda` sees the devices.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::runtime::torch_location::TORCH_CPU_LIB;

/// What happened to libtorch_cuda.so at start-up.
#[derive(Debug, Clone)]
pub enum CudaLibrary {
    Loaded(PathBuf),
    /// No NVIDIA driver (`libcuda.so.1`) on this host: CPU only, as expected.
    NoDriver,
    /// The torch install has no libtorch_cuda.so (a CPU build of torch).
    NotInTorch(PathBuf),
    /// It is there but would not load (its CUDA libraries are missing, say).
    LoadFailed {
        path: PathBuf,
        reason: String,
    },
}

static CUDA_LIBRARY: OnceLock<CudaLibrary> = OnceLock::new();

/// Loads libtorch_cuda.so when this host can use it. Idempotent; call before using tch.
pub fn init() -> &'static CudaLibrary {
    CUDA_LIBRARY.get_or_init(load_cuda_library)
}

fn load_cuda_library() -> CudaLibrary {
    let Some(lib_dir) = loaded_torch_lib_dir() else {
        return CudaLibrary::NotInTorch(PathBuf::from("(libtorch_cpu.so not mapped)"));
    };
    let path = lib_dir.join("libtorch_cuda.so");
    if !path.is_file() {
        return CudaLibrary::NotInTorch(lib_dir);
    }
    if !nvidia_driver_present() {
        return CudaLibrary::NoDriver;
    }
    match dlopen(&path, libc::RTLD_NOW | libc::RTLD_GLOBAL) {
        Ok(_) => CudaLibrary::Loaded(path),
        Err(reason) => CudaLibrary::LoadFailed { path, reason },
    }
}

fn nvidia_driver_present() -> bool {
    // Kept open: the CUDA runtime opens it again, and closing it would only churn.
    dlopen(
        Path::new("libcuda.so.1"),
        libc::RTLD_LAZY | libc::RTLD_GLOBAL,
    )
    .is_ok()
}

/// The folder the dynamic loader took libtorch_cpu.so from.
pub fn loaded_torch_lib_dir() -> Option<PathBuf> {
    loaded_object_path(TORCH_CPU_LIB).and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The path of the first loaded object whose file name is `file_name`.
pub fn loaded_object_path(file_name: &str) -> Option<PathBuf> {
    struct Search<'a> {
        file_name: &'a str,
        found: Option<PathBuf>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid info; data is the Search we passed below.
        let (info, search) = unsafe { (&*info, &mut *(data as *mut Search)) };
        if info.dlpi_name.is_null() {
            return 0;
        }
        // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
        let name = unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy();
        let path = PathBuf::from(name.as_ref());
        if path.file_name().is_some_and(|f| f == search.file_name) {
            search.found = Some(path);
            return 1;
        }
        0
    }
    let mut search = Search {
        file_name,
        found: None,
    };
    // SAFETY: visit only reads the info it is given and writes into `search`.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut libc::c_void) };
    search.found
}

fn dlopen(path: &Path, flags: libc::c_int) -> Result<*mut libc::c_void, String> {
    let name = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} has a NUL byte", path.display()))?;
    // SAFETY: a valid C string; the handle is deliberately never closed.
    let handle = unsafe { libc::dlopen(name.as_ptr(), flags) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local C string or null.
        let reason = unsafe { libc::dlerror() };
        let reason = if reason.is_null() {
            "unknown dlopen error".to_string()
        } else {
            unsafe { CStr::from_ptr(reason) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(reason);
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_torch_library_this_test_is_linked_against() {
        // Touch libtorch so that the test binary keeps its NEEDED entry.
        let _ = tch::get_num_threads();
        let dir = loaded_torch_lib_dir().expect("libtorch_cpu.so is mapped");
        assert!(dir.join(TORCH_CPU_LIB).is_file(), "{}", dir.display());
    }

    #[test]
    fn init_is_stable_across_calls() {
        let first = format!("{:?}", init());
        assert_eq!(first, format!("{:?}", init()));
    }
}
