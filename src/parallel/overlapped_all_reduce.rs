//! The gradient all-reduce overlapped with the backward pass (`distributed.overlap`), as
//! PyTorch DDP and Horovod do it: on the last micro-batch of a step, a hook on each
//! parameter's gradient accumulator reports it done, and each bucket (`gradient_buckets`)
//! starts its sum as soon as it is complete and every earlier bucket has started. The
//! last bucket (the embeddings, whose gradient completes last) starts after backward,
//! once a non-finite loss has been added into it, so every rank still skips the same steps.
//!
//! - NCCL: each bucket is one NCCL group on the communication stream, after the gradients
//!   queued so far on torch's stream; torch's stream waits for the last sum before the
//!   optimizer. Nothing blocks the host.
//! - MPI (CPU ranks): a thread of its own sums each bucket (MPI_Allreduce in place, on a
//!   duplicate of the world communicator); the trainer waits for the last bucket after
//!   backward. (MPI_Iallreduce polled from the thread with short sleeps was tried: Open
//!   MPI's non-blocking collectives move data only while polled, and the step was slower
//!   than summing after backward.)
//!   MPI is initialised MPI_THREAD_SERIALIZED: while the thread sums, the trainer makes no
//!   MPI call (it is inside backward, or waiting for the thread).
//!
//! The sums are the same element-wise sums as after backward; with two ranks they are bit
//! for bit the same (a + b), with more the order of the additions may differ with the
//! bucket boundaries, as it does with NCCL's ring.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;
use tch::{Kind, Tensor};

use crate::parallel::collective_watchdog;
use crate::parallel::distributed::sum_f32_in_place_on;
use crate::parallel::gradient_all_reduce::NcclReducer;
use crate::parallel::gradient_buckets::{BucketPlan, BucketProgress};
use crate::runtime::grad_hooks::GradHooks;
use crate::train::flat_parameters::FlatParameters;

/// Where complete buckets go.
pub enum Sink {
    Nccl(NcclSink),
    Mpi(MpiWorker),
}

/// What the hooks share with the trainer.
struct Shared {
    plan: BucketPlan,
    state: Mutex<State>,
    sink: Sink,
}

// SAFETY: the sink's CUDA handles and tensors are used by one thread at a time: the hooks
// run during backward, one after another (on the thread that called backward, or autograd's
// thread for the GPU) and under `state`'s lock, while the trainer's thread is inside
// backward; `finish` runs after backward has returned, under the same lock.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

struct State {
    /// Set for the last micro-batch's backward only.
    armed: bool,
    progress: BucketProgress,
    failure: Option<String>,
}

pub struct Overlap {
    /// Dropped before `shared`, whose address its hooks hold.
    _hooks: GradHooks,
    shared: Arc<Shared>,
}

/// How one step's sums went: buckets started during backward, of all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlapReport {
    pub during_backward: usize,
    pub buckets: usize,
}

impl Overlap {
    pub fn new(flat: &FlatParameters, bucket_elements: i64, sink: Sink) -> Result<Overlap> {
        let plan = BucketPlan::new(flat, bucket_elements);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                armed: false,
                progress: BucketProgress::new(&plan),
                failure: None,
            }),
            plan,
            sink,
        });
        let s = shared.clone();
        let hooks = GradHooks::register(&flat.params, Arc::new(move |param| s.on_ready(param)))?;
        Ok(Overlap {
            _hooks: hooks,
            shared,
        })
    }

    pub fn buckets(&self) -> usize {
        self.shared.plan.buckets.len()
    }

    /// The elements of the last bucket, which starts only after backward.
    pub fn last_bucket_elements(&self) -> i64 {
        let last = self.shared.plan.buckets.last();
        last.map_or(0, |b| b.ranges.iter().map(|&(_, n)| n).sum())
    }

    /// The next backward pass is the step's last: its hooks start the buckets.
    pub fn arm(&self) {
        self.shared.lock().armed = true;
    }

    /// Where a rank's non-finite loss goes into the gradients: the last bucket.
    pub fn poison_offset(&self) -> i64 {
        self.shared.plan.last_bucket_start()
    }

    /// After the last backward pass: starts the buckets not started yet, then waits for
    /// every sum (MPI) or makes torch's stream wait for them (NCCL).
    pub fn finish(&self, grad: &Tensor) -> Result<OverlapReport> {
        let shared = &self.shared;
        let mut state = shared.lock();
        state.armed = false;
        let during_backward = state.progress.started();
        let rest = state.progress.rest(&shared.plan);
        state.progress = BucketProgress::new(&shared.plan);
        if let Some(failure) = state.failure.take() {
            bail!("{failure}");
        }
        for b in rest {
            shared.start(b).map_err(anyhow::Error::msg)?;
        }
        match &shared.sink {
            Sink::Nccl(nccl) => nccl.finish(grad)?,
            Sink::Mpi(worker) => worker.wait_for(shared.plan.buckets.len())?,
        }
        Ok(OverlapReport {
            during_backward,
            buckets: shared.plan.buckets.len(),
        })
    }

    /// The error of a failed or timed-out NCCL collective, if one happened.
    pub fn check(&self) -> Result<()> {
        match &self.shared.sink {
            Sink::Nccl(nccl) => nccl.reducer.check(),
            Sink::Mpi(_) => Ok(()),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the hooks never panic holding it")
    }

    /// A hook: parameter `param`'s gradient is accumulated.
    fn on_ready(&self, param: usize) {
        let mut state = self.lock();
        if !state.armed || state.failure.is_some() {
            return;
        }
        for b in state.progress.ready(&self.plan, param) {
            if let Err(e) = self.start(b) {
                // Reported by `finish`; the later buckets wait for it.
                state.failure = Some(e);
                return;
            }
        }
    }

    fn start(&self, b: usize) -> Result<(), String> {
        let ranges = &self.plan.buckets[b].ranges;
        match &self.sink {
            Sink::Nccl(nccl) => nccl.start(ranges).map_err(|e| format!("{e:#}")),
            Sink::Mpi(worker) => worker.start(ranges),
        }
    }
}

/// NCCL's side: the reducer's stream and communicator, and the bf16 copy of the gradients
/// when the sums are made in bf16.
pub struct NcclSink {
    reducer: NcclReducer,
    grad: Tensor,
    scratch: Option<Tensor>,
}

impl NcclSink {
    pub fn new(reducer: NcclReducer, grad: &Tensor) -> Result<NcclSink> {
        let scratch = match reducer.sums_in_bf16() {
            true => Some(grad.f_zeros_like()?.f_to_kind(Kind::BFloat16)?),
            false => None,
        };
        Ok(NcclSink {
            reducer,
            grad: grad.shallow_clone(),
            scratch,
        })
    }

    fn start(&self, ranges: &[(i64, i64)]) -> Result<()> {
        if let Some(scratch) = &self.scratch {
            // On the current stream, before the sums are queued behind it.
            tch::no_grad(|| -> Result<()> {
                for &(offset, count) in ranges {
                    scratch
                        .narrow(0, offset, count)
                        .f_copy_(&self.grad.narrow(0, offset, count))?;
                }
                Ok(())
            })?;
        }
        self.reducer
            .queue_sums(self.scratch.as_ref().unwrap_or(&self.grad), ranges)
    }

    fn finish(&self, grad: &Tensor) -> Result<()> {
        self.reducer.check()?;
        self.reducer.queue_done()?;
        if let Some(scratch) = &self.scratch {
            // Queued on torch's stream, which now waits for the sums.
            tch::no_grad(|| grad.shallow_clone().f_copy_(scratch))?;
        }
        Ok(())
    }
}

/// A raw pointer into the flat fp32 gradient buffer, handed to the summing thread.
#[derive(Clone, Copy)]
struct Span {
    start: *mut f32,
    count: usize,
}
// SAFETY: the buffer outlives the thread's work on it (the trainer waits for every bucket
// before it touches the gradients again), and no other thread writes a bucket's elements
// once its hooks have fired.
unsafe impl Send for Span {}

/// MPI's side: a thread that sums the buckets it is handed, in order.
pub struct MpiWorker {
    base: usize,
    jobs: Option<Sender<Vec<Span>>>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
    /// The duplicate communicator the thread uses; freed after the thread ends.
    _comm: SimpleCommunicator,
}

impl MpiWorker {
    /// `comm`: a duplicate of the world communicator (collective to make), for this
    /// thread's collectives alone. `grad`: the flat fp32 gradient buffer on the host.
    pub fn new(comm: SimpleCommunicator, grad: &Tensor) -> MpiWorker {
        assert!(grad.device() == tch::Device::Cpu && grad.kind() == Kind::Float);
        let (jobs, inbox) = channel::<Vec<Span>>();
        let (report, done) = channel();
        let raw = SendComm(comm.as_raw());
        let thread = std::thread::Builder::new()
            .name("gradient-sums".into())
            .spawn(move || {
                let raw = raw;
                while let Ok(spans) = inbox.recv() {
                    sum_spans(&spans, raw.0);
                    if report.send(()).is_err() {
                        return;
                    }
                }
            })
            .expect("a thread can be started");
        MpiWorker {
            base: grad.data_ptr() as usize,
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            _comm: comm,
        }
    }

    fn start(&self, ranges: &[(i64, i64)]) -> Result<(), String> {
        let spans = ranges
            .iter()
            .map(|&(offset, count)| Span {
                start: (self.base as *mut f32).wrapping_add(offset as usize),
                count: count as usize,
            })
            .collect();
        self.jobs
            .as_ref()
            .expect("present until drop")
            .send(spans)
            .map_err(|_| "gradient all-reduce: the summing thread has ended".to_string())
    }

    /// Waits until `buckets` sums are done.
    fn wait_for(&self, buckets: usize) -> Result<()> {
        let _wait = collective_watchdog::waiting("the gradient all-reduce (MPI, overlapped)");
        for _ in 0..buckets {
            self.done
                .recv()
                .context("gradient all-reduce: the summing thread has ended")?;
        }
        Ok(())
    }
}

impl Drop for MpiWorker {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone, Copy)]
struct SendComm(mpi::ffi::MPI_Comm);
// SAFETY: a communicator handle; only the summing thread uses it, serialised with the
// trainer's MPI calls as described at the top.
unsafe impl Send for SendComm {}

/// Sums each span across the ranks, in place.
fn sum_spans(spans: &[Span], comm: mpi::ffi::MPI_Comm) {
    for span in spans {
        // SAFETY: the span lies in the live gradient buffer, which nothing else reads or
        // writes until this bucket is reported done.
        let data = unsafe { std::slice::from_raw_parts_mut(span.start, span.count) };
        sum_f32_in_place_on(comm, data);
    }
}
