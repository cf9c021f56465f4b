//! libtorch's Kineto profiler through the C++ shim (`src/shim/profiler.cpp`): the steps of
//! `log.profile = "START:COUNT"` (or `pretrain --profile START:COUNT`, see
//! config/profile_window.rs) recorded as a Chrome trace in the run folder, CPU operators
//! always and CUDA kernels on a GPU, for `bench/gpu/trace_summary.py` (time by category,
//! the GPU's busy share, the longest kernels, the achieved GEMM rate) or Perfetto.

use std::ffi::{c_char, c_int, CString};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::runtime::shim_message;

extern "C" {
    fn biobert_profiler_start(cuda: c_int) -> *mut c_char;
    fn biobert_profiler_stop(path: *const c_char) -> *mut c_char;
}

/// A recording in progress (one at a time per process).
pub struct Recording {
    path: PathBuf,
}

/// Starts recording this thread's operators (and the kernels they launch, with `cuda`).
pub fn start(path: PathBuf, cuda: bool) -> Result<Recording> {
    // SAFETY: the shim catches every C++ exception and returns it as a malloc'd message.
    let message = unsafe { biobert_profiler_start(c_int::from(cuda)) };
    if !message.is_null() {
        // SAFETY: a non-null message from the shim.
        bail!("starting the profiler: {}", unsafe {
            shim_message::take(message)
        });
    }
    Ok(Recording { path })
}

impl Recording {
    /// Stops recording and writes the trace (written beside, then renamed into place).
    pub fn finish(self) -> Result<PathBuf> {
        let dir = self.path.parent().expect("a trace path has a folder");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let partial = self.path.with_extension("json.partial");
        let c_path = CString::new(partial.to_string_lossy().as_bytes())
            .context("a trace path with a NUL byte")?;
        // SAFETY: a NUL-terminated path, borrowed for the call; errors come back as text.
        let message = unsafe { biobert_profiler_stop(c_path.as_ptr()) };
        if !message.is_null() {
            // SAFETY: a non-null message from the shim.
            bail!("writing the profile {}: {}", partial.display(), unsafe {
                shim_message::take(message)
            });
        }
        std::fs::rename(&partial, &self.path)
            .with_context(|| format!("renaming {} into place", partial.display()))?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn a_recording_holds_the_operators_run_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("profile").join("trace.json");
        let recording = start(path.clone(), false).unwrap();
        let a = Tensor::ones([64, 64], (Kind::Float, tch::Device::Cpu));
        let _ = a.matmul(&a).sum(Kind::Float);
        assert_eq!(recording.finish().unwrap(), path);
        let text = std::fs::read_to_string(&path).unwrap();
        let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
        let names: Vec<&str> = trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(names.contains(&"aten::mm"), "{names:?}");
        assert!(!tmp.path().join("profile/trace.json.partial").exists());
    }
}
