//! Data parallelism over MPI: rank, world size and local rank (from a shared-memory
//! split), the all-reduce of the gradients after accumulation, and taking the whole job
//! down when one rank fails.
//!
//! Every process initialises MPI, so a plain `biobert pretrain` is a world of one and
//! `mpirun -np N biobert pretrain` a world of N with nothing else to change.

use anyhow::Result;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};
use tch::Tensor;

pub struct Distributed {
    _universe: Universe,
    world: SimpleCommunicator,
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    /// Ranks on this node.
    pub local_size: usize,
}

impl Distributed {
    pub fn init() -> Result<Distributed> {
        let universe =
            mpi::initialize().ok_or_else(|| anyhow::anyhow!("MPI was already initialised"))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let node = world.split_shared(rank as i32);
        let (local_rank, local_size) = (node.rank() as usize, node.size() as usize);
        Ok(Distributed {
            _universe: universe,
            world,
            rank,
            size,
            local_rank,
            local_size,
        })
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
        let send = values.to_vec();
        self.world.all_reduce_into(&send[..], values, op);
    }

    /// Sums the flat fp32 gradient buffer across the ranks, in place, over MPI (through
    /// host memory when it lives on a GPU).
    pub fn all_reduce_gradients(&self, grad: &Tensor) {
        if self.size == 1 {
            return;
        }
        let host = grad.to_device(tch::Device::Cpu).contiguous();
        let local: Vec<f32> = Vec::<f32>::try_from(&host).expect("a flat f32 buffer");
        let mut summed = vec![0f32; local.len()];
        self.world
            .all_reduce_into(&local[..], &mut summed[..], SystemOperation::sum());
        tch::no_grad(|| {
            grad.shallow_clone()
                .copy_(&Tensor::from_slice(&summed).to_device(grad.device()));
        });
    }

    /// Every rank's `value`, in rank order.
    pub fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size];
        if self.size == 1 {
            all[0] = value;
        } else {
            self.world.all_gather_into(&value, &mut all[..]);
        }
        all
    }

    /// Rank 0's `bytes` to every rank (NCCL's unique id).
    pub fn broadcast_bytes(&self, bytes: &mut [u8]) {
        if self.size > 1 {
            self.world.process_at_rank(0).broadcast_into(bytes);
        }
    }

    pub fn barrier(&self) {
        if self.size > 1 {
            self.world.barrier();
        }
    }

    /// Ends every rank of the job (MPI_Abort) after this rank's error was printed.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
