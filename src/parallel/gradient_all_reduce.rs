//! The gradient all-reduce of data parallelism, once per optimizer step after
//! accumulation, over the flat gradient buffer (see `FlatParameters`): after the backward
//! pass, or overlapped with it (`distributed.overlap`, see `overlapped_all_reduce`).
//!
//! - NCCL on GPU ranks: a communicator bootstrapped by broadcasting rank 0's unique id over
//!   MPI (as Horovod and llm.c do); the buffer is summed in buckets on a stream of our own,
//!   ordered against torch's stream by events, optionally in bf16. The host does not wait
//!   for the sums: a watchdog thread polls NCCL's asynchronous errors and aborts a
//!   collective that outlives `distributed.timeout_s` (which unblocks the GPU), and the
//!   trainer asks `check` after the step's one read from the device.
//! - MPI on CPU ranks, and on GPU ranks that share a GPU (NCCL refuses two ranks on one
//!   device): summed in place (MPI_IN_PLACE), on a GPU through one pinned host buffer.
//!
//! The gradients are already normalised by the global batch, so a plain sum is the
//! gradient of one large batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::config::choices::{BackendRequest, ReduceDtype};
use crate::config::run_config::DistributedConfig;
use crate::parallel::distributed::Distributed;
use crate::parallel::nccl::{Comm, DataType, Nccl, UniqueId};
use crate::parallel::overlapped_all_reduce::{MpiWorker, NcclSink, Overlap, OverlapReport, Sink};
use crate::runtime::cuda_runtime::{CudaRuntime, Event, Stream, DEFAULT_STREAM};
use crate::train::flat_parameters::FlatParameters;

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
        Device::Cuda(_) => {
            Nccl::open(crate::runtime::torch_runtime::loaded_torch_lib_dir().as_deref())
        }
        _ => Err("a CPU rank".to_string()),
    }
}

/// The backend for `requested` (`distributed.backend`).
pub fn choose(requested: BackendRequest, topology: &Topology) -> Result<Backend> {
    let t = topology;
    match requested {
        BackendRequest::Nccl if !t.all_on_gpus => {
            bail!("distributed.backend = nccl needs a GPU on every rank")
        }
        BackendRequest::Nccl if !t.nccl_everywhere => {
            bail!("distributed.backend = nccl: libnccl.so.2 could not be loaded on every rank (biobert doctor says why)")
        }
        // Forced NCCL runs even with one rank, so that the path can be checked alone.
        BackendRequest::Nccl => Ok(Backend::Nccl),
        _ if t.world_size == 1 => Ok(Backend::Single),
        BackendRequest::Mpi => Ok(Backend::Mpi),
        _ if t.nccl_possible() => Ok(Backend::Nccl),
        _ => Ok(Backend::Mpi),
    }
}

pub struct GradientAllReduce {
    pub backend: Backend,
    nccl: Option<NcclReducer>,
    /// The pinned host copy of a GPU gradient buffer for the MPI backend (allocated once).
    host: Option<Tensor>,
    /// The sums overlapped with the backward pass (`distributed.overlap`), which then own
    /// the NCCL reducer.
    overlap: Option<Overlap>,
    bucket_elements: i64,
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
        let backend = choose(config.backend, &topology)?;
        let nccl = match (backend, nccl, device) {
            (Backend::Nccl, Ok(lib), Device::Cuda(gpu)) => {
                Some(NcclReducer::new(dist, lib, gpu, config)?)
            }
            (Backend::Nccl, Err(e), _) => bail!("NCCL: {e}"),
            _ => None,
        };
        Ok(GradientAllReduce {
            backend,
            nccl,
            host: None,
            overlap: None,
            bucket_elements: bucket_elements(config),
        })
    }

    /// Overlaps the sums with the backward pass from now on (hooks on `flat`'s
    /// parameters), where the backend allows it; returns the line that says how, or why
    /// not. Collective: every rank must call it.
    pub fn overlap_with_backward(
        &mut self,
        dist: &Distributed,
        flat: &FlatParameters,
    ) -> Result<String> {
        let sink = match self.backend {
            Backend::Single => return Ok("overlap: off (one rank: nothing to sum)".into()),
            Backend::Mpi if flat.grad.device() != Device::Cpu => return Ok(
                "overlap: off (MPI on GPUs sums through host memory after backward; NCCL overlaps)"
                    .into(),
            ),
            Backend::Mpi => {
                if !dist.threads_may_call_mpi() {
                    bail!("distributed.overlap = true: this MPI library does not allow a second thread to call it (MPI_THREAD_SERIALIZED)");
                }
                Sink::Mpi(MpiWorker::new(dist.duplicate_world(), &flat.grad))
            }
            Backend::Nccl => {
                let reducer = self.nccl.take().expect("an NCCL backend has its reducer");
                Sink::Nccl(NcclSink::new(reducer, &flat.grad)?)
            }
        };
        let overlap = Overlap::new(flat, self.bucket_elements, sink)?;
        let line = format!(
            "overlap: on, {} buckets of about {} MiB, started as the backward pass completes them; the last ({} bytes: the embeddings, complete last) after it",
            overlap.buckets(),
            (self.bucket_elements * 4) >> 20,
            overlap.last_bucket_elements() * 4
        );
        self.overlap = Some(overlap);
        Ok(line)
    }

    /// The next backward pass is the step's last (the one whose gradients are summed).
    pub fn before_last_backward(&self) {
        if let Some(overlap) = &self.overlap {
            overlap.arm();
        }
    }

    /// The gradient element where a rank adds its non-finite loss before the sums: one the
    /// sums have not started on when backward returns.
    pub fn poison_offset(&self) -> i64 {
        self.overlap.as_ref().map_or(0, Overlap::poison_offset)
    }

    /// Sums `grad` (the flat fp32 gradient buffer) across the ranks, in place. With NCCL the
    /// sums are queued on the GPU and this returns at once; `check` reports their failure.
    pub fn all_reduce(&mut self, dist: &Distributed, grad: &Tensor) -> Result<()> {
        self.all_reduce_reporting(dist, grad).map(|_| ())
    }

    /// `all_reduce`, saying how many buckets started during backward when overlapped.
    pub fn all_reduce_reporting(
        &mut self,
        dist: &Distributed,
        grad: &Tensor,
    ) -> Result<Option<OverlapReport>> {
        if let Some(overlap) = &self.overlap {
            return overlap.finish(grad).map(Some);
        }
        self.sum_after_backward(dist, grad).map(|_| None)
    }

    fn sum_after_backward(&mut self, dist: &Distributed, grad: &Tensor) -> Result<()> {
        match (&mut self.nccl, self.backend) {
            (Some(nccl), _) => nccl.all_reduce(grad),
            (None, Backend::Mpi) => self.mpi_all_reduce(dist, grad),
            _ => Ok(()),
        }
    }

    /// The error of a failed or timed-out NCCL collective, if one happened. Call after the
    /// host has waited on the device (the step's read), so that the last sums are covered.
    pub fn check(&self) -> Result<()> {
        match (&self.nccl, &self.overlap) {
            (Some(nccl), _) => nccl.watchdog.check(),
            (None, Some(overlap)) => overlap.check(),
            (None, None) => Ok(()),
        }
    }

    /// Waits until the queued sums are done (or failed): for timing and tests.
    pub fn synchronize(&self, dist: &Distributed, grad: &Tensor) -> Result<()> {
        if let Device::Cuda(gpu) = grad.device() {
            tch::Cuda::synchronize(gpu as i64);
        }
        dist.barrier();
        self.check()
    }

    /// MPI's sum, in place: a CPU buffer directly; a GPU buffer through one pinned host
    /// buffer (one copy down, one up, no pageable staging).
    fn mpi_all_reduce(&mut self, dist: &Distributed, grad: &Tensor) -> Result<()> {
        if dist.size == 1 {
            return Ok(());
        }
        if grad.device() == Device::Cpu {
            sum_in_place(dist, grad);
            return Ok(());
        }
        let fits = self
            .host
            .as_ref()
            .is_some_and(|h| h.numel() == grad.numel());
        if !fits {
            let host = Tensor::f_empty([grad.numel() as i64], (Kind::Float, Device::Cpu))?;
            self.host = Some(crate::runtime::pinned_memory::pin(&host)?);
        }
        let host = self.host.as_ref().expect("allocated above");
        tch::no_grad(|| -> Result<()> {
            // Blocking: MPI needs the values on the host.
            host.shallow_clone().f_copy_(grad)?;
            sum_in_place(dist, host);
            // Blocking too (fast from pinned memory): the buffer is reused next step.
            grad.shallow_clone()
                .f_copy_(host)
                .map_err(anyhow::Error::from)
        })
    }
}

/// MPI_Allreduce(MPI_IN_PLACE) over a contiguous fp32 CPU tensor.
fn sum_in_place(dist: &Distributed, t: &Tensor) {
    assert!(
        t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous(),
        "a contiguous fp32 host buffer"
    );
    // SAFETY: the tensor owns numel contiguous f32 values on the host, and nothing else
    // reads or writes them during the call.
    let data = unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) };
    dist.sum_f32_in_place(data);
}

/// A number naming this rank's physical GPU: a hash of the host name and the device's PCI
/// bus id (the ordinal when the driver cannot say), so that ranks that see their GPUs
/// through different CUDA_VISIBLE_DEVICES still compare right. `None` on a CPU.
fn gpu_identity(device: Device) -> Option<u64> {
    let Device::Cuda(ordinal) = device else {
        return None;
    };
    let bus = crate::runtime::cuda_driver::CudaDriver::open()
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

/// `distributed.bucket_mb` in fp32 elements.
fn bucket_elements(config: &DistributedConfig) -> i64 {
    (config.bucket_mb as i64 * (1 << 20) / 4).max(1)
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

pub struct NcclReducer {
    nccl: Arc<Nccl>,
    cuda: Arc<CudaRuntime>,
    stream: Stream,
    /// Recorded on torch's stream when the gradients are complete.
    ready: Event,
    /// Recorded on our stream when the sums are complete.
    done: Event,
    bucket_elements: i64,
    dtype: DataType,
    /// The bf16 copy of the gradients that NCCL sums when reducing in bf16.
    scratch: Option<Tensor>,
    watchdog: Watchdog,
}

impl NcclReducer {
    fn new(
        dist: &Distributed,
        nccl: Nccl,
        gpu: usize,
        config: &DistributedConfig,
    ) -> Result<NcclReducer> {
        let torch_dir = crate::runtime::torch_runtime::loaded_torch_lib_dir();
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
        let dtype = match config.reduce_dtype {
            ReduceDtype::Bf16 => DataType::BFloat16,
            ReduceDtype::Fp32 => DataType::Float32,
        };
        let (nccl, cuda) = (Arc::new(nccl), Arc::new(cuda));
        let events = (|| {
            Ok::<_, String>((
                cuda.create_stream()?,
                cuda.create_event()?,
                cuda.create_event()?,
            ))
        })();
        let (stream, ready, done) = match events {
            Ok(e) => e,
            Err(e) => {
                nccl.destroy(comm);
                bail!(e);
            }
        };
        let timeout = Duration::from_secs(config.timeout_s);
        let watchdog = Watchdog::start(nccl.clone(), cuda.clone(), comm, done, gpu, timeout);
        Ok(NcclReducer {
            scratch: None,
            bucket_elements: bucket_elements(config),
            nccl,
            cuda,
            stream,
            ready,
            done,
            dtype,
            watchdog,
        })
    }

    fn all_reduce(&mut self, grad: &Tensor) -> Result<()> {
        self.watchdog.check()?;
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
        self.launch(buffer)?;
        if let Some(scratch) = &self.scratch {
            // Queued on torch's stream, which waits for the sums (see `launch`).
            tch::no_grad(|| grad.shallow_clone().copy_(scratch));
        }
        Ok(())
    }

    /// Queues the bucketed sums on our stream, after torch's pending work, and makes
    /// torch's stream wait for them. Never blocks the host.
    fn launch(&self, buffer: &Tensor) -> Result<()> {
        self.queue_sums(
            buffer,
            &buckets(buffer.numel() as i64, self.bucket_elements),
        )?;
        self.queue_done()
    }

    /// Queues the sums of `ranges` of `buffer` (one NCCL group) on our stream, after the
    /// work queued so far on torch's stream. Never blocks the host.
    pub(crate) fn queue_sums(&self, buffer: &Tensor, ranges: &[(i64, i64)]) -> Result<()> {
        let comm = self
            .watchdog
            .comm
            .lock()
            .expect("the watchdog never panics");
        let Some(comm) = comm.0 else {
            bail!("gradient all-reduce: the NCCL communicator was aborted");
        };
        let (c, n) = (&self.cuda, &self.nccl);
        let queue = || -> Result<(), String> {
            c.record(self.ready, DEFAULT_STREAM)?;
            c.wait(self.stream, self.ready)?;
            let element_size = buffer.kind().elt_size_in_bytes() as i64;
            let base = buffer.data_ptr() as *mut u8;
            n.group_start()?;
            for &(offset, count) in ranges {
                assert!(offset >= 0 && offset + count <= buffer.numel() as i64);
                // SAFETY: offset + count lies inside the contiguous buffer (asserted above).
                let start = unsafe { base.offset((offset * element_size) as isize) };
                n.all_reduce_sum(start.cast(), count as usize, self.dtype, comm, self.stream)?;
            }
            n.group_end()
        };
        queue().map_err(|e| anyhow::anyhow!("gradient all-reduce: {e}"))
    }

    /// Makes torch's stream wait for every sum queued so far, and starts the watchdog's
    /// clock on them.
    pub(crate) fn queue_done(&self) -> Result<()> {
        let c = &self.cuda;
        (|| -> Result<(), String> {
            c.record(self.done, self.stream)?;
            c.wait(DEFAULT_STREAM, self.done)
        })()
        .map_err(|e| anyhow::anyhow!("gradient all-reduce: {e}"))?;
        self.watchdog.started(Instant::now());
        Ok(())
    }

    /// The error of a failed or timed-out collective, if one happened.
    pub(crate) fn check(&self) -> Result<()> {
        self.watchdog.check()
    }

    /// Whether the sums are made in bf16 (through a bf16 copy of the gradients).
    pub(crate) fn sums_in_bf16(&self) -> bool {
        self.dtype == DataType::BFloat16
    }
}

/// A communicator handle that the watchdog thread may abort: `None` once aborted.
struct SharedComm(Option<Comm>);

// SAFETY: an NCCL communicator may be used from several threads as long as calls on it are
// serialised, which the mutex around it does; ncclCommAbort is documented to be callable
// from another thread to unblock a collective.
unsafe impl Send for SharedComm {}

/// A CUDA event handle, queried from the watchdog thread (the runtime API is thread-safe).
#[derive(Clone, Copy)]
struct SendEvent(Event);
// SAFETY: see above; the event outlives the thread (the reducer joins it before dropping).
unsafe impl Send for SendEvent {}

/// Polls the collective in flight from a thread of its own, so the host never waits for
/// the sums just to learn that they failed: on NCCL's asynchronous error, or when the
/// collective has run past the timeout, it aborts the communicator (which unblocks the
/// GPU and anything waiting on it) and keeps the reason for `check`.
struct Watchdog {
    comm: Arc<Mutex<SharedComm>>,
    /// When the collective in flight was queued; `None` when none is.
    pending: Arc<Mutex<Option<Instant>>>,
    failure: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    nccl: Arc<Nccl>,
}

/// How often the watchdog looks: small next to a step (tens to hundreds of ms).
const WATCH_INTERVAL: Duration = Duration::from_millis(5);

impl Watchdog {
    fn start(
        nccl: Arc<Nccl>,
        cuda: Arc<CudaRuntime>,
        comm: Comm,
        done: Event,
        gpu: usize,
        timeout: Duration,
    ) -> Watchdog {
        let comm = Arc::new(Mutex::new(SharedComm(Some(comm))));
        let pending: Arc<Mutex<Option<Instant>>> = Arc::default();
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, p, f, s, n, done) = (
            comm.clone(),
            pending.clone(),
            failure.clone(),
            stop.clone(),
            nccl.clone(),
            SendEvent(done),
        );
        let thread = std::thread::spawn(move || {
            let done = done;
            // The event belongs to this GPU's context.
            let _ = cuda.set_device(gpu);
            while !s.load(Ordering::Acquire) {
                std::thread::sleep(WATCH_INTERVAL);
                let Some(since) = *p.lock().expect("no panics") else {
                    continue;
                };
                let problem = match cuda.is_done(done.0) {
                    Ok(true) => {
                        // Unless a newer collective was queued meanwhile: that one is watched.
                        let mut pending = p.lock().expect("no panics");
                        if *pending == Some(since) {
                            *pending = None;
                        }
                        continue;
                    }
                    Err(e) => Some(e),
                    Ok(false) => {
                        let comm = c.lock().expect("no panics");
                        match comm.0.map(|comm| n.async_error(comm)) {
                            Some(Err(e)) => Some(e),
                            _ if since.elapsed() > timeout => Some(format!(
                                "did not finish in {} s (distributed.timeout_s): a rank is gone or stuck",
                                timeout.as_secs()
                            )),
                            _ => None,
                        }
                    }
                };
                if let Some(problem) = problem {
                    let mut comm = c.lock().expect("no panics");
                    if let Some(handle) = comm.0.take() {
                        n.abort(handle);
                    }
                    *f.lock().expect("no panics") = Some(format!("gradient all-reduce: {problem}"));
                    *p.lock().expect("no panics") = None;
                    return;
                }
            }
        });
        Watchdog {
            comm,
            pending,
            failure,
            stop,
            thread: Some(thread),
            nccl,
        }
    }

    fn started(&self, at: Instant) {
        *self.pending.lock().expect("no panics") = Some(at);
    }

    fn check(&self) -> Result<()> {
        match &*self.failure.lock().expect("no panics") {
            Some(reason) => bail!("{reason}"),
            None => Ok(()),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut comm = self.comm.lock().expect("no panics");
        if let Some(handle) = comm.0.take() {
            self.nccl.destroy(handle);
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
        let auto = |t| choose(BackendRequest::Auto, &t).unwrap();
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
            choose(BackendRequest::Nccl, &topology(1, true, false, true)).unwrap(),
            Backend::Nccl
        );
        assert_eq!(
            choose(BackendRequest::Mpi, &topology(4, true, false, true)).unwrap(),
            Backend::Mpi
        );
        let err = choose(BackendRequest::Nccl, &topology(2, false, false, false)).unwrap_err();
        assert!(err.to_string().contains("needs a GPU"), "{err}");
        let err = choose(BackendRequest::Nccl, &topology(2, true, false, false)).unwrap_err();
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
