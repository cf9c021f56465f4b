//! NCCL, loaded at run time: `libnccl.so.2` from the loader's path (where GPU clusters and
//! the NVIDIA containers put it) or from the `nvidia-nccl` wheel beside torch.

use libloading::{Library, Symbol};
use std::ffi::c_int;
use std::path::{Path, PathBuf};

pub const NCCL_LIBRARY: &str = "libnccl.so.2";

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
    fn decodes_both_version_encodings() {
        assert_eq!(decode_version(22809), (2, 28, 9));
        assert_eq!(decode_version(2804), (2, 8, 4));
    }
}
