//! Data parallelism over MPI: rank, world size and local rank (from a shared-memory
//! split), the all-reduce of the gradients after accumulation, and taking the whole job
//! down when one rank fails.
//!
//! Every process initialises MPI, so a plain `biobert pretrain` is a world of one and
//! `mpirun -np N biobert pretrain` a world of N with nothing else to change.

use std::time::Duration;

use anyhow::Result;
use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};

use crate::config::run_config::DistributedConfig;
use crate::parallel::collective_watchdog;

pub struct Distributed {
    /// The MPI environment; only the job's own Distributed holds it (MPI ends with it).
    _universe: Option<Universe>,
    world: SimpleCommunicator,
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    /// Ranks on this node.
    pub local_size: usize,
    /// Whether MPI allows calls from another thread than the main one, one at a time
    /// (MPI_THREAD_SERIALIZED or more): the overlapped all-reduce's summing thread.
    serialized_threads: bool,
}

impl Distributed {
    pub fn init() -> Result<Distributed> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| anyhow::anyhow!("MPI was already initialised"))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let node = world.split_shared(rank as i32);
        let (local_rank, local_size) = (node.rank() as usize, node.size() as usize);
        if size > 1 {
            let timeout = DistributedConfig::default().timeout_s;
            collective_watchdog::start(
                rank,
                crate::data::build_lock::hostname(),
                Duration::from_secs(timeout),
            );
        }
        Ok(Distributed {
            _universe: Some(universe),
            world,
            rank,
            size,
            local_rank,
            local_size,
            serialized_threads: matches!(threading, Threading::Serialized | Threading::Multiple),
        })
    }

    /// This rank as a job of its own (rank 0 of 1), keeping its place on the node (local
    /// rank and size: its GPU and its share of the cores): `biobert evaluate` gives each
    /// rank its own fine-tunings. Collective: every rank of the job calls it.
    pub fn solo(&self) -> Distributed {
        let own = self
            .world
            .split_by_color(mpi::topology::Color::with_value(self.rank as i32))
            .expect("a colour per rank: every rank gets a communicator");
        Distributed {
            _universe: None,
            world: own,
            rank: 0,
            size: 1,
            local_rank: self.local_rank,
            local_size: self.local_size,
            serialized_threads: self.serialized_threads,
        }
    }

    /// Whether another thread may call MPI while this one does not.
    pub fn threads_may_call_mpi(&self) -> bool {
        self.serialized_threads
    }

    /// A communicator over the same ranks whose collectives never match this one's: for a
    /// thread that sums on its own. Collective: every rank must call it.
    pub fn duplicate_world(&self) -> SimpleCommunicator {
        self.world.duplicate()
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Sums `values` across the ranks, in place.
    pub fn all_reduce_f64(&self, values: &mut [f64]) {
        self.all_reduce_op(values, SystemOperation::sum());
    }

    /// The element-wise maximum of `values` across the ranks, in place.
    pub fn all_reduce_max_f64(&self, values: &mut [f64]) {
        self.all_reduce_op(values, SystemOperation::max());
    }

    fn all_reduce_op(&self, values: &mut [f64], op: SystemOperation) {
        if self.size == 1 {
            return;
        }
        let _wait = collective_watchdog::waiting("an all-reduce of the step's figures");
        let send = values.to_vec();
        self.world.all_reduce_into(&send[..], values, op);
    }

    /// Sums `data` across the ranks in place (MPI_IN_PLACE: no second buffer), in chunks
    /// that fit MPI's int count.
    pub fn sum_f32_in_place(&self, data: &mut [f32]) {
        if self.size == 1 {
            return;
        }
        let _wait = collective_watchdog::waiting("the gradient all-reduce (MPI)");
        sum_f32_in_place_on(self.world.as_raw(), data);
    }

    /// Every rank's `value`, in rank order.
    pub fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size];
        if self.size == 1 {
            all[0] = value;
        } else {
            let _wait = collective_watchdog::waiting("an all-gather");
            self.world.all_gather_into(&value, &mut all[..]);
        }
        all
    }

    /// Every rank's `value`, in rank order.
    pub fn all_gather_f64(&self, value: f64) -> Vec<f64> {
        let mut all = vec![0f64; self.size];
        if self.size == 1 {
            all[0] = value;
        } else {
            let _wait = collective_watchdog::waiting("an all-gather");
            self.world.all_gather_into(&value, &mut all[..]);
        }
        all
    }

    /// Rank 0's `bytes` to every rank (NCCL's unique id).
    pub fn broadcast_bytes(&self, bytes: &mut [u8]) {
        self.broadcast_bytes_from(0, bytes);
    }

    /// Rank `root`'s `bytes` to every rank.
    pub fn broadcast_bytes_from(&self, root: usize, bytes: &mut [u8]) {
        if self.size > 1 {
            let _wait = collective_watchdog::waiting("a broadcast");
            self.world
                .process_at_rank(root as i32)
                .broadcast_into(bytes);
        }
    }

    /// Rank `root`'s text to every rank (any length).
    pub fn broadcast_text(&self, root: usize, text: &str) -> String {
        if self.size == 1 {
            return text.to_string();
        }
        let mut length = (text.len() as u64).to_le_bytes();
        self.broadcast_bytes_from(root, &mut length);
        let mut bytes = vec![0u8; u64::from_le_bytes(length) as usize];
        if self.rank == root {
            bytes.copy_from_slice(text.as_bytes());
        }
        self.broadcast_bytes_from(root, &mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn barrier(&self) {
        if self.size > 1 {
            let _wait = collective_watchdog::waiting("a barrier");
            self.world.barrier();
        }
    }

    /// The run's bound on one collective (`distributed.timeout_s`) and the folder where the
    /// ranks beat, so that a rank that gives up names the ones gone silent (collective_watchdog).
    pub fn watch(&self, timeout: Duration, heartbeats: Option<&std::path::Path>) {
        if self.size > 1 {
            collective_watchdog::configure(timeout, heartbeats);
        }
    }

    /// A barrier that sleeps while it waits, so a rank done early leaves its cores to the
    /// ranks still working (a blocking MPI barrier spins). Not bounded by the watchdog: it
    /// waits out other ranks' whole fine-tunings (`biobert evaluate`).
    pub fn barrier_idle(&self) {
        if self.size == 1 {
            return;
        }
        let mut request = self.world.immediate_barrier();
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Runs `job` on this rank. A rank's error is printed with its rank and ends the whole
    /// job (MPI_Abort): the other ranks would otherwise wait forever in the next collective.
    pub fn run_job<T>(job: impl FnOnce(&Distributed) -> Result<T>) -> Result<T> {
        let dist = Distributed::init()?;
        let result = job(&dist);
        if let Err(e) = &result {
            if dist.size > 1 {
                eprintln!("rank {}: error: {e:#}", dist.rank);
                dist.abort(1);
            }
        }
        result
    }

    /// Ends every rank of the job (MPI_Abort) after this rank's error was printed.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// MPI_Allreduce(MPI_IN_PLACE, sum) of `data` over `comm`, in chunks that fit MPI's int
/// count. MPI's default error handler ends the job on a failure.
pub fn sum_f32_in_place_on(comm: mpi::ffi::MPI_Comm, data: &mut [f32]) {
    extern "C" {
        fn biobert_mpi_in_place() -> *mut std::ffi::c_void;
    }
    for chunk in data.chunks_mut(i32::MAX as usize) {
        // SAFETY: the chunk is a valid, exclusively borrowed f32 buffer of `len` elements;
        // MPI_IN_PLACE (from the mpi.h rsmpi is built against) makes it both input and
        // output; `comm` is a live communicator of this process.
        unsafe {
            mpi::ffi::MPI_Allreduce(
                biobert_mpi_in_place(),
                chunk.as_mut_ptr().cast(),
                chunk.len() as i32,
                mpi::ffi::RSMPI_FLOAT,
                mpi::ffi::RSMPI_SUM,
                comm,
            );
        }
    }
}
