//! The gradient all-reduce of data parallelism, once per optimizer step after
//! accumulation, over the flat gradient buffer (see `FlatParameters`).
//!
//! - NCCL on GPU ranks: a communicator bootstrapped by broadcasting rank 0's unique id over
//!   MPI (as Horovod and llm.c do); the buffer is summed in buckets on a stream of our own,
//!   ordered against torch's stream by events, optionally in bf16; a watchdog polls NCCL's
//!   asynchronous errors and ends a collective that outlives `distributed.timeout_s`.
//! - MPI on CPU ranks, and on GPU ranks that share a GPU (NCCL refuses two ranks on one
//!   device): the buffer through host memory.
//!
//! The gradients are already normalised by the global batch, so a plain sum is the
//! gradient of one large batch.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::cuda_runtime::{CudaRuntime, Event, Stream, DEFAULT_STREAM};
use crate::distributed::Distributed;
use crate::nccl::{Comm, DataType, Nccl, UniqueId};
use crate::run_config::DistributedConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    /// One rank: nothing to sum.
    Single,
    Mpi,
    Nccl,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Single => "none (one rank)",
            Backend::Mpi => "MPI (host buffers)",
            Backend::Nccl => "NCCL",
        })
    }
}

/// What the choice depends on, gathered from every rank.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    pub world_size: usize,
    /// Whether every rank trains on a GPU.
    pub all_on_gpus: bool,
    /// Whether two ranks train on the same physical GPU (same node, same PCI bus id).
    pub shared_gpu: bool,
    /// Whether every rank could load libnccl.so.2.
    pub nccl_everywhere: bool,
}

impl Topology {
    /// Gathers the facts from every rank. Collective: every rank must call it.
    pub fn gather(dist: &Distributed, device: Device, nccl_loads: bool) -> Topology {
        let gpu = gpu_identity(device);
        let mut facts = [
            f64::from(u8::from(gpu.is_none())),
            f64::from(u8::from(!nccl_loads)),
        ];
        dist.all_reduce_max_f64(&mut facts);
        let gpus = dist.all_gather_u64(gpu.unwrap_or(0));
        Topology {
            world_size: dist.size,
            all_on_gpus: facts[0] == 0.0,
            shared_gpu: has_duplicates(&gpus),
            nccl_everywhere: facts[1] == 0.0,
        }
    }

    /// Whether NCCL can serve every rank (it refuses two ranks on one GPU).
    pub fn nccl_possible(&self) -> bool {
        self.all_on_gpus && !self.shared_gpu && self.nccl_everywhere
    }
}

/// libnccl.so.2 for a GPU rank.
pub fn open_nccl(device: Device) -> Result<Nccl, String> {
    match device {
        Device::Cuda(_) => Nccl::open(crate::torch_runtime::loaded_torch_lib_dir().as_deref()),
        _ => Err("a CPU rank".to_string()),
    }
}

/// The backend for `requested` ("auto", "nccl" or "mpi").
pub fn choose(requested: &str, topology: &Topology) -> Result<Backend> {
    let t = topology;
    match requested {
        "nccl" if !t.all_on_gpus => bail!("distributed.backend = nccl needs a GPU on every rank"),
        "nccl" if !t.nccl_everywhere => {
            bail!("distributed.backend = nccl: libnccl.so.2 could not be loaded on every rank (biobert doctor says why)")
        }
        // Forced NCCL runs even with one rank, so that the path can be checked alone.
        "nccl" => Ok(Backend::Nccl),
        _ if t.world_size == 1 => Ok(Backend::Single),
        "mpi" => Ok(Backend::Mpi),
        _ if t.nccl_possible() => Ok(Backend::Nccl),
        _ => Ok(Backend::Mpi),
    }
}

pub struct GradientAllReduce {
    pub backend: Backend,
    nccl: Option<NcclReducer>,
}

impl GradientAllReduce {
    /// Agrees on a backend across the ranks and, for NCCL, builds the communicator.
    /// Collective: every rank must call it.
    pub fn new(
        dist: &Distributed,
        config: &DistributedConfig,
        device: Device,
    ) -> Result<GradientAllReduce> {
        let nccl = open_nccl(device);
        let topology = Topology::gather(dist, device, nccl.is_ok());
        let backend = choose(&config.backend, &topology)?;
        let nccl = match (backend, nccl, device) {
            (Backend::Nccl, Ok(lib), Device::Cuda(gpu)) => {
                Some(NcclReducer::new(dist, lib, gpu, config)?)
            }
            (Backend::Nccl, Err(e), _) => bail!("NCCL: {e}"),
            _ => None,
        };
        Ok(GradientAllReduce { backend, nccl })
    }

    /// Sums `grad` (the flat fp32 gradient buffer) across the ranks, in place.
    pub fn all_reduce(&mut self, dist: &Distributed, grad: &Tensor) -> Result<()> {
        match (&mut self.nccl, self.backend) {
            (Some(nccl), _) => nccl.all_reduce(grad),
            (None, Backend::Mpi) => {
                dist.all_reduce_gradients(grad);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A number naming this rank's physical GPU: a hash of the host name and the device's PCI
/// bus id (the ordinal when the driver cannot say), so that ranks that see their GPUs
/// through different CUDA_VISIBLE_DEVICES still compare right. `None` on a CPU.
fn gpu_identity(device: Device) -> Option<u64> {
    let Device::Cuda(ordinal) = device else {
        return None;
    };
    let bus = crate::cuda_driver::CudaDriver::open()
        .and_then(|d| d.devices())
        .ok()
        .and_then(|all| all.into_iter().nth(ordinal))
        .map_or_else(|| format!("cuda:{ordinal}"), |d| d.pci_bus_id);
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most the given length into the buffer.
    unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
    let host = host.split(|&b| b == 0).next().unwrap_or(&[]);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&(host, bus), &mut h);
    Some(std::hash::Hasher::finish(&h).max(1))
}

/// (offset, count) of each bucket of at most `size` elements covering `0..total`.
fn buckets(total: i64, size: i64) -> Vec<(i64, i64)> {
    let size = size.max(1);
    (0..total)
        .step_by(size as usize)
        .map(|offset| (offset, size.min(total - offset)))
        .collect()
}

fn has_duplicates(ids: &[u64]) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    ids.iter().any(|&id| id != 0 && !seen.insert(id))
}

struct NcclReducer {
    nccl: Nccl,
    cuda: CudaRuntime,
    comm: Comm,
    stream: Stream,
    /// Recorded on torch's stream when the gradients are complete.
    ready: Event,
    /// Recorded on our stream when the sums are complete.
    done: Event,
    bucket_elements: i64,
    dtype: DataType,
    /// The bf16 copy of the gradients that NCCL sums when reducing in bf16.
    scratch: Option<Tensor>,
    timeout: Duration,
}

impl NcclReducer {
    fn new(
        dist: &Distributed,
        nccl: Nccl,
        gpu: usize,
        config: &DistributedConfig,
    ) -> Result<NcclReducer> {
        let torch_dir = crate::torch_runtime::loaded_torch_lib_dir();
        let cuda = CudaRuntime::open(torch_dir.as_deref()).map_err(anyhow::Error::msg)?;
        // NCCL binds the communicator to the current device; torch restores it after
        // each operation, so setting it once holds.
        cuda.set_device(gpu).map_err(anyhow::Error::msg)?;
        let mut id = UniqueId { internal: [0; 128] };
        if dist.is_root() {
            id = nccl.unique_id().map_err(anyhow::Error::msg)?;
        }
        dist.broadcast_bytes(&mut id.internal);
        let comm = nccl
            .init_rank(dist.size, id, dist.rank)
            .map_err(anyhow::Error::msg)
            .with_context(|| {
                format!(
                    "rank {} joining the NCCL communicator on cuda:{gpu}",
                    dist.rank
                )
            })?;
        let dtype = match config.reduce_dtype.as_str() {
            "bf16" => DataType::BFloat16,
            _ => DataType::Float32,
        };
        let events = (|| {
            Ok::<_, String>((
                cuda.create_stream()?,
                cuda.create_event()?,
                cuda.create_event()?,
            ))
        })();
        let (stream, ready, done) = events.map_err(anyhow::Error::msg)?;
        Ok(NcclReducer {
            scratch: None,
            bucket_elements: (config.bucket_mb as i64 * (1 << 20) / 4).max(1),
            nccl,
            cuda,
            comm,
            stream,
            ready,
            done,
            dtype,
            timeout: Duration::from_secs(config.timeout_s),
        })
    }

    fn all_reduce(&mut self, grad: &Tensor) -> Result<()> {
        if self.dtype == DataType::BFloat16 {
            let fits = self
                .scratch
                .as_ref()
                .is_some_and(|s| s.numel() == grad.numel());
            if !fits {
                self.scratch = Some(grad.zeros_like().to_kind(Kind::BFloat16));
            }
            let scratch = self.scratch.as_mut().expect("allocated above");
            tch::no_grad(|| scratch.copy_(grad));
        }
        let buffer = self.scratch.as_ref().unwrap_or(grad);
        self.launch(buffer).map_err(anyhow::Error::msg)?;
        self.watch()?;
        if let Some(scratch) = &self.scratch {
            tch::no_grad(|| grad.shallow_clone().copy_(scratch));
        }
        Ok(())
    }

    /// Queues the bucketed sums on our stream, after torch's pending work, and makes
    /// torch's stream wait for them.
    fn launch(&self, buffer: &Tensor) -> Result<(), String> {
        let (c, n) = (&self.cuda, &self.nccl);
        c.record(self.ready, DEFAULT_STREAM)?;
        c.wait(self.stream, self.ready)?;
        let total = buffer.numel() as i64;
        let element_size = buffer.kind().elt_size_in_bytes() as i64;
        let base = buffer.data_ptr() as *mut u8;
        n.group_start()?;
        for (offset, count) in buckets(total, self.bucket_elements) {
            // SAFETY: offset + count lies inside the contiguous buffer (see `buckets`).
            let start = unsafe { base.offset((offset * element_size) as isize) };
            n.all_reduce_sum(
                start.cast(),
                count as usize,
                self.dtype,
                self.comm,
                self.stream,
            )?;
        }
        n.group_end()?;
        c.record(self.done, self.stream)?;
        c.wait(DEFAULT_STREAM, self.done)
    }

    /// Waits for the sums while checking NCCL's asynchronous errors; a failed or hung
    /// collective aborts the communicator (unblocking the GPU) and is an error.
    fn watch(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Err(e) = self.nccl.async_error(self.comm) {
                self.abort();
                bail!("gradient all-reduce: {e}");
            }
            if self.cuda.is_done(self.done).map_err(anyhow::Error::msg)? {
                return Ok(());
            }
            if started.elapsed() > self.timeout {
                self.abort();
                bail!(
                    "gradient all-reduce did not finish in {} s (distributed.timeout_s): a rank is gone or stuck",
                    self.timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl NcclReducer {
    /// Aborts the communicator (which frees it) once.
    fn abort(&mut self) {
        if !self.comm.is_null() {
            self.nccl.abort(self.comm);
            self.comm = std::ptr::null_mut();
        }
    }
}

impl Drop for NcclReducer {
    fn drop(&mut self) {
        if !self.comm.is_null() {
            self.nccl.destroy(self.comm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(world_size: usize, gpus: bool, shared: bool, nccl: bool) -> Topology {
        Topology {
            world_size,
            all_on_gpus: gpus,
            shared_gpu: shared,
            nccl_everywhere: nccl,
        }
    }

    #[test]
    fn auto_takes_nccl_only_with_a_gpu_per_rank() {
        let auto = |t| choose("auto", &t).unwrap();
        assert_eq!(auto(topology(1, true, false, true)), Backend::Single);
        assert_eq!(auto(topology(8, true, false, true)), Backend::Nccl);
        // Two ranks on one GPU: NCCL would refuse ("Duplicate GPU detected").
        assert_eq!(auto(topology(2, true, true, true)), Backend::Mpi);
        assert_eq!(auto(topology(4, true, false, false)), Backend::Mpi);
        assert_eq!(auto(topology(2, false, false, false)), Backend::Mpi);
    }

    #[test]
    fn overrides_are_obeyed_or_refused() {
        assert_eq!(
            choose("nccl", &topology(1, true, false, true)).unwrap(),
            Backend::Nccl
        );
        assert_eq!(
            choose("mpi", &topology(4, true, false, true)).unwrap(),
            Backend::Mpi
        );
        let err = choose("nccl", &topology(2, false, false, false)).unwrap_err();
        assert!(err.to_string().contains("needs a GPU"), "{err}");
        let err = choose("nccl", &topology(2, true, false, false)).unwrap_err();
        assert!(err.to_string().contains("libnccl.so.2"), "{err}");
    }

    #[test]
    fn buckets_cover_the_buffer_exactly() {
        assert_eq!(buckets(10, 4), [(0, 4), (4, 4), (8, 2)]);
        assert_eq!(buckets(8, 4), [(0, 4), (4, 4)]);
        assert_eq!(buckets(3, 100), [(0, 3)]);
        assert!(buckets(0, 4).is_empty());
        // BERT-base's 110M fp32 gradients in 64 MiB buckets: 7 buckets, the last partial.
        let b = buckets(110_106_428, 64 << 20 >> 2);
        assert_eq!(b.len(), 7);
        assert_eq!(b.iter().map(|&(_, n)| n).sum::<i64>(), 110_106_428);
    }

    #[test]
    fn shared_gpus_are_found_by_identity_not_by_count() {
        // Eight ranks each seeing "cuda:0" through their own CUDA_VISIBLE_DEVICES are
        // eight GPUs; two ranks on the same bus id are one.
        assert!(!has_duplicates(&[11, 12, 13, 14]));
        assert!(has_duplicates(&[11, 12, 11]));
        // CPU ranks (0) are not GPUs.
        assert!(!has_duplicates(&[0, 0]));
        assert_eq!(gpu_identity(Device::Cpu), None);
    }
}
