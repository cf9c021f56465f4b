//! The CUDA libraries torch's pip wheels install beside it in site-packages: CUDA 13 puts
//! them all in one wheel (`nvidia/cu13/lib`), CUDA 12 in one wheel per component
//! (`nvidia/cuda_runtime/lib`, `nvidia/cuda_nvrtc/lib`, ...). A library is tried by its
//! soname first (the loader's path, where a system CUDA lives), then in those folders.

use std::path::Path;

/// One CUDA library: its sonames for CUDA 13 and 12, and CUDA 12's wheel folder for it.
pub struct WheelLibrary {
    pub sonames: [&'static str; 2],
    pub cuda12_component: &'static str,
}

impl WheelLibrary {
    /// The paths to try, in order: each soname, then each wheel folder's file, for the
    /// torch whose `lib` folder is `torch_lib_dir` (site-packages/torch/lib).
    pub fn candidates(&self, torch_lib_dir: Option<&Path>) -> Vec<String> {
        let mut candidates: Vec<String> = self.sonames.iter().map(|s| s.to_string()).collect();
        if let Some(site) = torch_lib_dir.and_then(|d| d.parent()?.parent()) {
            let cuda12 = format!("nvidia/{}/lib", self.cuda12_component);
            for (dir, name) in [
                ("nvidia/cu13/lib", self.sonames[0]),
                (&cuda12, self.sonames[1]),
            ] {
                candidates.push(site.join(dir).join(name).to_string_lossy().into_owned());
            }
        }
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonames_first_then_the_wheels_beside_torch() {
        let nvrtc = WheelLibrary {
            sonames: ["libnvrtc.so.13", "libnvrtc.so.12"],
            cuda12_component: "cuda_nvrtc",
        };
        let torch = Path::new("/venv/lib/python3.11/site-packages/torch/lib");
        assert_eq!(
            nvrtc.candidates(Some(torch)),
            [
                "libnvrtc.so.13",
                "libnvrtc.so.12",
                "/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libnvrtc.so.13",
                "/venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
            ]
        );
        assert_eq!(nvrtc.candidates(None), ["libnvrtc.so.13", "libnvrtc.so.12"]);
    }
}
