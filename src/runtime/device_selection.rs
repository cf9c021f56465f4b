//! Which device a rank trains on. A host with an NVIDIA driver whose GPUs torch cannot use
//! (a CPU build of torch, libtorch_cuda.so missing its CUDA libraries, a driver too old for
//! CUDA 13.0) is an error with the diagnosis and the fix, never a silent fp32 run on the
//! CPU; the CPU is taken without a word only where there is no driver, or when asked for.

use tch::Device;

use crate::runtime::cuda_driver::CudaDriver;
use crate::runtime::torch_runtime::{self, CudaLibrary};

/// What the user asked for (`train.device`, `--device`).
pub use crate::config::choices::DeviceRequest as Request;

/// The facts the choice depends on, gathered once (injected in tests).
#[derive(Debug, Clone)]
pub struct CudaFacts {
    /// What happened to libtorch_cuda.so at start-up.
    pub library: CudaLibrary,
    /// The driver (libcuda.so.1): `Ok((devices it sees, its CUDA version))`, or why it
    /// could not be used. `Err` with no driver at all is the ordinary CPU host.
    pub driver: Result<(usize, (i32, i32)), DriverError>,
    /// CUDA devices torch sees.
    pub torch_devices: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DriverError {
    /// No libcuda.so.1: not a GPU host.
    Absent,
    /// libcuda.so.1 is there but cuInit failed (driver/kernel module mismatch, no device…).
    Failed(String),
}

/// cuInit's CUDA_ERROR_NO_DEVICE: a driver without GPUs (or none visible).
const CUDA_ERROR_NO_DEVICE: &str = "CUDA error 100";

impl CudaFacts {
    /// This host's facts. Call after `torch_runtime::init()` (main does it first).
    pub fn probe() -> CudaFacts {
        let driver = match CudaDriver::open() {
            Ok(d) => {
                let devices = d.devices().map(|v| v.len()).unwrap_or(0);
                Ok((devices, d.version().unwrap_or((0, 0))))
            }
            Err(e) if e.starts_with("no NVIDIA driver") => Err(DriverError::Absent),
            Err(e) if e.contains(CUDA_ERROR_NO_DEVICE) => Ok((0, (0, 0))),
            Err(e) => Err(DriverError::Failed(e)),
        };
        CudaFacts {
            library: torch_runtime::init().clone(),
            driver,
            torch_devices: tch::Cuda::device_count().max(0) as usize,
        }
    }
}

/// The outcome: the device, and a line to print when the choice is worth saying.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub device: Device,
    pub note: Option<String>,
}

/// The device for the rank with node-local index `local_rank`, or the diagnosis and fix.
pub fn decide(request: Request, facts: &CudaFacts, local_rank: usize) -> Result<Choice, String> {
    let cpu = |note: Option<String>| {
        Ok(Choice {
            device: Device::Cpu,
            note,
        })
    };
    if request == Request::Cpu {
        return cpu(None);
    }
    if facts.torch_devices > 0 {
        let device = Device::Cuda(local_rank % facts.torch_devices);
        return Ok(Choice { device, note: None });
    }
    const ANYWAY: &str = "(train.device = \"cpu\" or --device cpu trains on the CPU instead)";
    let problem = match (&facts.driver, &facts.library) {
        (Err(DriverError::Absent), _) => {
            return match request {
                Request::Cuda => Err("device cuda: this host has no NVIDIA driver (libcuda.so.1 not found)".into()),
                _ => cpu(None),
            };
        }
        (Ok((0, _)), _) => {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into());
            let what = format!("the NVIDIA driver sees no GPU (CUDA_VISIBLE_DEVICES={visible})");
            return match request {
                Request::Cuda => Err(format!("device cuda: {what}")),
                _ => cpu(Some(format!("device: {what}: training on the CPU"))),
            };
        }
        (Err(DriverError::Failed(e)), _) => format!(
            "the NVIDIA driver is installed but does not work ({e}): check nvidia-smi"
        ),
        (Ok(_), CudaLibrary::NotInTorch(dir)) => format!(
            "this host has NVIDIA GPUs but the torch at {} is a CPU build (no libtorch_cuda.so): run BIOBERT_CUDA=1 ./launch/setup.sh here, or point BIOBERT_TORCH at a CUDA build of torch 2.11.0",
            dir.display()
        ),
        (Ok(_), CudaLibrary::LoadFailed { path, reason }) => format!(
            "this host has NVIDIA GPUs but {} did not load ({reason}): this torch lacks its CUDA libraries; run BIOBERT_CUDA=1 ./launch/setup.sh here, or `source launch/env.sh` with a python3 whose torch 2.11.0 is the full CUDA wheel",
            path.display()
        ),
        (Ok((n, (major, minor))), _) => format!(
            "the NVIDIA driver sees {n} GPU(s) (CUDA {major}.{minor}) but torch sees none: torch 2.11.0+cu130 needs a driver for CUDA 13.0 or newer; `biobert doctor` says more"
        ),
    };
    Err(format!("{problem} {ANYWAY}"))
}

/// Probes this host and decides; the error is one line for the user.
pub fn select(request: Request, local_rank: usize) -> anyhow::Result<Choice> {
    decide(request, &CudaFacts::probe(), local_rank).map_err(anyhow::Error::msg)
}

/// A `--device` flag: auto, cpu, cuda (the first GPU) or cuda:N, checked against this
/// host; a note about the choice goes to stderr.
pub fn parse(spec: &str) -> anyhow::Result<Device> {
    let (request, ordinal) = match (spec.strip_prefix("cuda:"), spec) {
        (Some(n), _) => match n.parse::<usize>() {
            Ok(n) => (Request::Cuda, Some(n)),
            Err(_) => anyhow::bail!("--device {spec:?}: expected auto, cpu, cuda or cuda:N"),
        },
        (None, "auto") => (Request::Auto, None),
        (None, "cpu") => (Request::Cpu, None),
        (None, "cuda") => (Request::Cuda, None),
        (None, _) => anyhow::bail!("--device {spec:?}: expected auto, cpu, cuda or cuda:N"),
    };
    let facts = CudaFacts::probe();
    let choice = decide(request, &facts, 0).map_err(anyhow::Error::msg)?;
    if let Some(note) = &choice.note {
        eprintln!("{note}");
    }
    match ordinal {
        Some(n) if n >= facts.torch_devices => anyhow::bail!(
            "--device {spec}: this host has {} CUDA device(s)",
            facts.torch_devices
        ),
        Some(n) => Ok(Device::Cuda(n)),
        None => Ok(choice.device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn facts(
        library: CudaLibrary,
        driver: Result<(usize, (i32, i32)), DriverError>,
        torch: usize,
    ) -> CudaFacts {
        CudaFacts {
            library,
            driver,
            torch_devices: torch,
        }
    }

    fn loaded() -> CudaLibrary {
        CudaLibrary::Loaded(PathBuf::from("/t/lib/libtorch_cuda.so"))
    }

    #[test]
    fn a_working_gpu_host_gives_each_local_rank_its_gpu() {
        let f = facts(loaded(), Ok((8, (13, 0))), 8);
        for rank in 0..8 {
            let c = decide(Request::Auto, &f, rank).unwrap();
            assert_eq!(c.device, Device::Cuda(rank));
        }
        assert_eq!(
            decide(Request::Cuda, &f, 9).unwrap().device,
            Device::Cuda(1)
        );
        assert_eq!(decide(Request::Cpu, &f, 0).unwrap().device, Device::Cpu);
    }

    #[test]
    fn a_host_without_a_driver_trains_on_the_cpu_unless_cuda_was_asked_for() {
        let f = facts(CudaLibrary::NoDriver, Err(DriverError::Absent), 0);
        assert_eq!(
            decide(Request::Auto, &f, 0).unwrap(),
            Choice {
                device: Device::Cpu,
                note: None
            }
        );
        let err = decide(Request::Cuda, &f, 0).unwrap_err();
        assert!(err.contains("no NVIDIA driver"), "{err}");
        let f = facts(
            CudaLibrary::NotInTorch(PathBuf::from("/t/lib")),
            Err(DriverError::Absent),
            0,
        );
        assert_eq!(decide(Request::Auto, &f, 0).unwrap().device, Device::Cpu);
    }

    #[test]
    fn a_gpu_host_whose_gpus_torch_cannot_use_is_an_error_with_the_fix() {
        let cases = [
            (
                facts(
                    CudaLibrary::NotInTorch(PathBuf::from("/t/lib")),
                    Ok((1, (13, 0))),
                    0,
                ),
                "CPU build",
            ),
            (
                facts(
                    CudaLibrary::LoadFailed {
                        path: PathBuf::from("/t/lib/libtorch_cuda.so"),
                        reason: "libcudnn.so.9: cannot open shared object file".into(),
                    },
                    Ok((1, (13, 0))),
                    0,
                ),
                "libcudnn.so.9",
            ),
            // A driver too old for cu130: cuInit works, the runtime does not.
            (facts(loaded(), Ok((1, (12, 2))), 0), "CUDA 12.2"),
            (
                facts(
                    loaded(),
                    Err(DriverError::Failed(
                        "cuInit failed with CUDA error 999".into(),
                    )),
                    0,
                ),
                "does not work",
            ),
        ];
        for (f, expected) in cases {
            for request in [Request::Auto, Request::Cuda] {
                let err = decide(request, &f, 0).unwrap_err();
                assert!(err.contains(expected), "{err}");
                assert!(err.contains("--device cpu"), "{err}");
                assert!(!err.contains('\n'), "{err}");
            }
            // Asked for, the CPU is fine.
            assert_eq!(decide(Request::Cpu, &f, 0).unwrap().device, Device::Cpu);
        }
    }

    #[test]
    fn a_driver_without_visible_gpus_says_so_on_one_line() {
        let f = facts(loaded(), Ok((0, (13, 0))), 0);
        let c = decide(Request::Auto, &f, 0).unwrap();
        assert_eq!(c.device, Device::Cpu);
        assert!(c.note.unwrap().contains("sees no GPU"));
        assert!(decide(Request::Cuda, &f, 0).is_err());
    }

    #[test]
    fn device_flags_are_checked_against_the_host() {
        assert_eq!(parse("cpu").unwrap(), Device::Cpu);
        let err = parse("gpu0").unwrap_err().to_string();
        assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
        if tch::Cuda::device_count() == 0 {
            // No panic, one line that says why.
            let err = parse("cuda").unwrap_err().to_string();
            assert!(err.starts_with("device cuda:"), "{err}");
            assert!(parse("cuda:3").is_err());
        }
    }

    #[test]
    fn this_host_decides_without_error_on_auto() {
        // CI hosts have no NVIDIA driver; a GPU host running the tests has working CUDA.
        let c = select(Request::Auto, 0).unwrap();
        assert_eq!(c.device == Device::Cpu, tch::Cuda::device_count() == 0);
    }
}
