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
use mpi::traits::CommunicatorCollectives;
use tch::{Kind, Tensor};

pub struct Distributed {
    _universe: Universe,
    world: SimpleCommunicator,
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
}

impl Distributed {
    pub fn init() -> Result<Distributed> {
        let universe =
            mpi::initialize().ok_or_else(|| anyhow::anyhow!("MPI was already initialised"))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let local_rank = world.split_shared(rank as i32).rank() as usize;
        Ok(Distributed {
            _universe: universe,
            world,
            rank,
            size,
            local_rank,
        })
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Sums `values` across the ranks, in place.
    pub fn all_reduce_f64(&self, values: &mut [f64]) {
        if self.size == 1 {
            return;
        }
        let send = values.to_vec();
        self.world
            .all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    /// Sums the gradients of `params` across the ranks: one flat fp32 buffer, one
    /// all-reduce (MPI on host memory; the GPU path goes through NCCL).
    pub fn all_reduce_gradients(&self, params: &[Tensor]) {
        if self.size == 1 {
            return;
        }
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        let flat = Tensor::cat(
            &grads
                .iter()
                .map(|g| g.to_kind(Kind::Float).view(-1))
                .collect::<Vec<_>>(),
            0,
        )
        .to_device(tch::Device::Cpu);
        let local: Vec<f32> = Vec::<f32>::try_from(&flat).expect("a flat f32 buffer");
        let mut summed = vec![0f32; local.len()];
        self.world
            .all_reduce_into(&local[..], &mut summed[..], SystemOperation::sum());
        let summed = Tensor::from_slice(&summed);
        let mut offset = 0i64;
        tch::no_grad(|| {
            for g in &grads {
                let n = g.numel() as i64;
                let mut g = g.shallow_clone();
                g.copy_(
                    &summed
                        .narrow(0, offset, n)
                        .view(g.size().as_slice())
                        .to_device(g.device()),
                );
                offset += n;
            }
        });
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
