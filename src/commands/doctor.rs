//! `biobert doctor`: what this host gives the trainer — libtorch, CUDA devices, the MPI
//! library, NCCL, threads — each checked by using it, not by looking for files. Anything
//! required that is missing makes it exit non-zero with the fix.

use std::path::PathBuf;

use crate::config::choices::BackendRequest;
use crate::config::run_config::DistributedConfig;
use crate::parallel::distributed::Distributed;
use crate::parallel::gradient_all_reduce::{self, GradientAllReduce, Topology};
use anyhow::{anyhow, Result};
use clap::Args;
use tch::{Device, Kind, Tensor};

use crate::parallel::nccl::Nccl;
use crate::runtime::cuda_driver::{CudaDriver, DeviceInfo};
use crate::runtime::torch_location;
use crate::runtime::torch_runtime::{self, CudaLibrary};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also initialise MPI and all-reduce a small buffer across the ranks (run under mpirun).
    #[arg(long)]
    pub mpi: bool,
}

/// bf16 keeps 8 mantissa bits; a 256-wide dot product lands near 4e-3 relative error.
const BF16_MATMUL_TOLERANCE: f64 = 2e-2;

/// The lines of the report and the problems that make the doctor fail.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    problems: Vec<String>,
}

impl Report {
    fn line(&mut self, key: &str, value: impl AsRef<str>) {
        self.lines.push(format!("{key:<12} {}", value.as_ref()));
    }

    fn problem(&mut self, fix: impl Into<String>) {
        self.problems.push(fix.into());
    }
}

/// Runs the checks; returns the process exit code.
pub fn run(args: &DoctorArgs) -> Result<i32> {
    let mut report = Report::default();
    report.line(
        "biobert",
        format!("{} ({})", env!("CARGO_PKG_VERSION"), current_exe()),
    );
    // Under mpirun, each rank checks only its own GPU (one CUDA context per GPU and rank,
    // as in training), so MPI comes up first to say which one that is.
    let dist = if args.mpi {
        Some(Distributed::init()?)
    } else {
        None
    };
    check_torch(&mut report);
    check_threads(&mut report);
    let devices = check_cuda(&mut report, dist.as_ref().map(|d| d.local_rank));
    check_fused_kernels(&mut report, devices, dist.as_ref().map(|d| d.local_rank));
    check_mpi_library(&mut report);
    check_nccl(&mut report, devices);
    let all_ok = match &dist {
        Some(dist) => check_mpi_all_reduce(&mut report, dist, devices)?,
        None => report.problems.is_empty(),
    };
    let rank0 = !args.mpi || report.lines.iter().any(|l| l.starts_with("all-reduce"));
    if rank0 {
        for line in &report.lines {
            println!("{line}");
        }
    }
    for problem in &report.problems {
        eprintln!("problem: {problem}");
    }
    if rank0 {
        println!(
            "{}",
            if all_ok {
                "doctor: ok"
            } else {
                "doctor: FAILED"
            }
        );
    }
    Ok(if all_ok { 0 } else { 1 })
}

fn current_exe() -> String {
    std::env::current_exe().map_or_else(|e| e.to_string(), |p| p.display().to_string())
}

fn check_torch(report: &mut Report) {
    let Some(dir) = torch_runtime::loaded_torch_lib_dir() else {
        report.problem("libtorch_cpu.so is not mapped into this process: run through `biobert`");
        return;
    };
    let version = torch_location::installed_version(&dir).unwrap_or_else(|| "unknown".into());
    let source = std::env::var("BIOBERT_TORCH_SOURCE").unwrap_or_else(|_| "rpath".into());
    report.line(
        "torch",
        format!("{version} at {} (found through {source})", dir.display()),
    );
    match matmul_error(Device::Cpu, Kind::Float).and(matmul_error(Device::Cpu, Kind::BFloat16)) {
        Ok(err) => report.line(
            "cpu",
            format!("fp32 and bf16 matmul ok (bf16 rel err {err:.1e})"),
        ),
        Err(e) => {
            report.line("cpu", "matmul FAILED");
            report.problem(format!("a matmul on the CPU failed: {e}"));
        }
    }
}

fn check_threads(report: &mut Report) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let omp = std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    report.line(
        "threads",
        format!(
            "torch intra-op {}, cores available {cores}, OMP_NUM_THREADS {omp}",
            tch::get_num_threads()
        ),
    );
}

/// Reports the CUDA state; returns the number of usable devices. With `local_rank`, only
/// that rank's GPU is exercised.
fn check_cuda(report: &mut Report, local_rank: Option<usize>) -> usize {
    let driver = CudaDriver::open();
    match torch_runtime::init() {
        CudaLibrary::Loaded(path) => {
            report.line("libtorch", format!("CUDA library {}", path.display()))
        }
        CudaLibrary::NoDriver => {
            report.line(
                "cuda",
                "not available: no NVIDIA driver on this host (CPU only)",
            );
            return 0;
        }
        CudaLibrary::NotInTorch(dir) => {
            report.line(
                "cuda",
                format!("not available: no libtorch_cuda.so in {}", dir.display()),
            );
            if driver.is_ok() {
                report.problem(
                    "this host has an NVIDIA driver but torch is a CPU build: run \
                     ./launch/setup.sh here (installs the CUDA wheel) or point BIOBERT_TORCH \
                     at a CUDA torch 2.11.0",
                );
            }
            return 0;
        }
        CudaLibrary::LoadFailed { path, reason } => {
            report.line(
                "cuda",
                format!("NOT USABLE: {} failed to load", path.display()),
            );
            report.problem(format!(
                "{reason}: this torch lacks its CUDA libraries (the CPU-only set); run \
                 BIOBERT_CUDA=1 ./launch/setup.sh on this host, or `source launch/env.sh` with \
                 a python3 whose torch 2.11.0 is the full CUDA wheel"
            ));
            return 0;
        }
    }
    let driver = match driver {
        Ok(d) => d,
        Err(e) => {
            report.problem(format!(
                "libtorch_cuda.so loaded but the CUDA driver did not: {e}"
            ));
            return 0;
        }
    };
    if let Ok((major, minor)) = driver.version() {
        report.line("driver", format!("CUDA {major}.{minor}"));
    }
    let count = tch::Cuda::device_count().max(0) as usize;
    if !tch::Cuda::is_available() || count == 0 {
        report.line("cuda", "NOT AVAILABLE to torch");
        report.problem("the NVIDIA driver is present but torch sees no CUDA device (check CUDA_VISIBLE_DEVICES and nvidia-smi)");
        return 0;
    }
    report.line("cuda", format!("available, {count} device(s)"));
    let infos = driver.devices().unwrap_or_default();
    for ordinal in gpus_to_check(count, local_rank) {
        check_device(report, ordinal, infos.get(ordinal));
    }
    count
}

/// Every GPU for a plain `doctor`; under mpirun, the one that rank trains on.
fn gpus_to_check(count: usize, local_rank: Option<usize>) -> Vec<usize> {
    match local_rank {
        Some(r) if count > 0 => vec![r % count],
        Some(_) => Vec::new(),
        None => (0..count).collect(),
    }
}

fn check_device(report: &mut Report, ordinal: usize, info: Option<&DeviceInfo>) {
    let described = info.map_or("unknown device".to_string(), |d| {
        format!(
            "{}, {:.1} GiB, sm_{}{}",
            d.name,
            d.total_memory as f64 / (1u64 << 30) as f64,
            d.compute_capability.0,
            d.compute_capability.1
        )
    });
    match matmul_error(Device::Cuda(ordinal), Kind::BFloat16) {
        Ok(err) => report.line(
            &format!("  cuda:{ordinal}"),
            format!("{described}; bf16 matmul ok (rel err {err:.1e} vs fp32)"),
        ),
        Err(e) => {
            report.line(
                &format!("  cuda:{ordinal}"),
                format!("{described}; bf16 matmul FAILED"),
            );
            report.problem(format!("bf16 matmul on cuda:{ordinal} failed: {e}"));
        }
    }
}

/// Multiplies two random 256x256 matrices in `kind` and in fp32; returns the relative
/// Frobenius error, or an error when it exceeds what `kind` allows.
fn matmul_error(device: Device, kind: Kind) -> Result<f64> {
    let a = Tensor::f_randn([256, 256], (Kind::Float, device))?;
    let b = Tensor::f_randn([256, 256], (Kind::Float, device))?;
    let exact = a.f_matmul(&b)?;
    let approx = a
        .f_to_kind(kind)?
        .f_matmul(&b.f_to_kind(kind)?)?
        .f_to_kind(Kind::Float)?;
    let err = approx.f_sub(&exact)?.f_norm()?.f_double_value(&[])?
        / exact.f_norm()?.f_double_value(&[])?;
    let tolerance = if kind == Kind::Float {
        1e-5
    } else {
        BF16_MATMUL_TOLERANCE
    };
    if err.is_finite() && err <= tolerance {
        Ok(err)
    } else {
        Err(anyhow!("relative error {err:.2e} exceeds {tolerance:.0e}"))
    }
}

/// Whether `train.fused_elementwise` can run here: NVRTC found and the kernels compiled
/// (on a CPU host), or loaded and checked on each GPU the doctor checks. An optional
/// setting: a failure is said, and the setting would be refused, but the doctor passes.
fn check_fused_kernels(report: &mut Report, cuda_devices: usize, local_rank: Option<usize>) {
    use crate::model::fused_elementwise::{FusedKernels, SOURCE};
    use crate::runtime::nvrtc::Nvrtc;
    use crate::runtime::torch_runtime::loaded_torch_lib_dir;
    let refused = "(train.fused_elementwise would be refused)";
    if cuda_devices == 0 {
        let compiled = Nvrtc::open(loaded_torch_lib_dir().as_deref()).and_then(|nvrtc| {
            let (major, minor) = nvrtc.version()?;
            nvrtc.ptx(SOURCE, "fused_elementwise.cuh", (9, 0))?;
            Ok(format!(
                "NVRTC {major}.{minor}: the fused element-wise kernels compile (sm_90 PTX); they run on GPUs only"
            ))
        });
        match compiled {
            Ok(line) => report.line("fused", line),
            Err(e) => report.line("fused", format!("not available: {e} {refused}")),
        }
        return;
    }
    for ordinal in gpus_to_check(cuda_devices, local_rank) {
        let line = match FusedKernels::load(Device::Cuda(ordinal), 768, Kind::BFloat16) {
            Ok(k) => format!(
                "fused element-wise kernels {}, checked against the unfused operations (768 wide, bf16): ok",
                k.description
            ),
            Err(e) => format!("fused element-wise kernels FAILED: {e} {refused}"),
        };
        report.line(&format!("  cuda:{ordinal}"), line);
    }
}

fn check_mpi_library(report: &mut Report) {
    let (major, minor) = mpi::environment::version();
    let library = mpi::environment::library_version()
        .unwrap_or_else(|e| format!("(unreadable version string: {e})"));
    let first = library
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches(',');
    report.line("mpi", format!("{first} (MPI {major}.{minor})"));
}

fn check_nccl(report: &mut Report, cuda_devices: usize) {
    let torch_dir: Option<PathBuf> = torch_runtime::loaded_torch_lib_dir();
    match Nccl::open(torch_dir.as_deref()).and_then(|n| Ok((n.version()?, n.origin))) {
        Ok(((a, b, c), origin)) => report.line("nccl", format!("{a}.{b}.{c} ({origin})")),
        Err(e) if cuda_devices > 0 => report.line(
            "nccl",
            format!(
                "not found: {e}; multi-GPU runs need it (apt libnccl2 or pip nvidia-nccl-cu13)"
            ),
        ),
        Err(_) => report.line("nccl", "not found (only GPU runs use it)"),
    }
}

/// Initialises MPI, all-reduces [1, rank, is-node-leader, has-problems] and checks the sum,
/// then sums a gradient-sized buffer through the trainer's own all-reduce (NCCL when every
/// rank has a GPU of its own). Returns whether every rank is healthy. Only rank 0 gets the
/// "all-reduce" lines.
fn check_mpi_all_reduce(
    report: &mut Report,
    dist: &Distributed,
    cuda_devices: usize,
) -> Result<bool> {
    let leader = if dist.local_rank == 0 { 1.0 } else { 0.0 };
    let unhealthy = if report.problems.is_empty() { 0.0 } else { 1.0 };
    let mut sum = [1.0f64, dist.rank as f64, leader, unhealthy];
    dist.all_reduce_f64(&mut sum);
    let n = dist.size as f64;
    let expected = [n, n * (n - 1.0) / 2.0];
    let sum_ok = sum[0] == expected[0] && sum[1] == expected[1];
    if dist.is_root() {
        report.line(
            "all-reduce",
            format!(
                "{} rank(s) on {} node(s), {} on this node: sum of [1, rank] = [{}, {}], expected [{}, {}]: {}",
                dist.size,
                sum[2],
                dist.local_size,
                sum[0],
                sum[1],
                expected[0],
                expected[1],
                if sum_ok { "ok" } else { "WRONG" }
            ),
        );
        if sum[3] > 0.0 {
            report.problem(format!("{} rank(s) reported problems", sum[3]));
        }
    }
    if !sum_ok {
        report.problem("the MPI all-reduce returned a wrong sum");
        return Ok(false);
    }
    let gradients_ok = check_gradient_all_reduce(report, dist, cuda_devices);
    Ok(sum[3] == 0.0 && gradients_ok)
}

/// 16 MiB of ones summed by `GradientAllReduce` on the rank's device: every element must
/// come back as the rank count.
fn check_gradient_all_reduce(report: &mut Report, dist: &Distributed, cuda_devices: usize) -> bool {
    let device = match cuda_devices {
        0 => Device::Cpu,
        n => Device::Cuda(dist.local_rank % n),
    };
    // NCCL whenever every rank can use it, even alone, so that a one-GPU host checks it too.
    let nccl_loads = gradient_all_reduce::open_nccl(device).is_ok();
    let topology = Topology::gather(dist, device, nccl_loads);
    let config = DistributedConfig {
        backend: if topology.nccl_possible() {
            BackendRequest::Nccl
        } else {
            BackendRequest::Auto
        },
        ..DistributedConfig::default()
    };
    let result = (|| -> Result<(String, f64, f64)> {
        let mut reducer = GradientAllReduce::new(dist, &config, device)?;
        let grad = Tensor::ones([1 << 22], (Kind::Float, device));
        reducer.all_reduce(dist, &grad)?;
        reducer.synchronize(dist, &grad)?;
        let (low, high) = (grad.min().double_value(&[]), grad.max().double_value(&[]));
        Ok((reducer.backend.to_string(), low, high))
    })();
    let mut ok = match &result {
        Ok((_, low, high)) => *low == dist.size as f64 && *high == dist.size as f64,
        Err(_) => false,
    };
    let mut flags = [f64::from(u8::from(!ok))];
    dist.all_reduce_f64(&mut flags);
    ok = ok && flags[0] == 0.0;
    if dist.is_root() {
        match &result {
            Ok((backend, low, high)) => report.line(
                "gradients",
                format!(
                    "16 MiB summed over {} rank(s) by {backend} on {device:?}: values in [{low}, {high}], expected {}: {}",
                    dist.size,
                    dist.size,
                    if ok { "ok" } else { "WRONG" }
                ),
            ),
            Err(e) => report.line("gradients", format!("all-reduce failed: {e:#}")),
        }
    }
    if let Err(e) = result {
        report.problem(format!(
            "rank {}: the gradient all-reduce failed: {e:#}",
            dist.rank
        ));
    } else if !ok {
        report.problem("the gradient all-reduce returned wrong sums");
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_checks_its_own_gpu_only() {
        assert_eq!(gpus_to_check(8, None), (0..8).collect::<Vec<_>>());
        assert_eq!(gpus_to_check(8, Some(3)), [3]);
        // Two ranks sharing one GPU each check it once, not twice each.
        assert_eq!(gpus_to_check(1, Some(1)), [0]);
        assert!(gpus_to_check(0, Some(0)).is_empty());
    }
}
