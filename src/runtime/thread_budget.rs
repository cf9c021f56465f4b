//! How many threads a rank may use: the node's cores divided among the ranks on that node
//! (MPI's shared-memory communicator says how many), so that 8 ranks of a node do not each
//! start a torch pool and a data pool the size of the whole node (8x oversubscription was
//! measured: two ranks took 15 s each for what one rank does in 3.5 s).

/// The share of one rank: `cores / ranks on the node`, at least 1.
pub fn per_rank(cores: usize, local_ranks: usize) -> usize {
    (cores / local_ranks.max(1)).max(1)
}

/// The thread counts applied, for the start-up line.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub torch: usize,
    pub loader: usize,
    pub why: String,
}

/// Sizes torch's intra-op pool and the data loader's pool (rayon) for this rank.
/// `configured` (train.threads) wins when not 0; otherwise `OMP_NUM_THREADS` and
/// `RAYON_NUM_THREADS` are honoured where set (the launchers set them per rank), and the
/// rest gets the rank's share of the cores.
pub fn apply(local_ranks: usize, configured: usize) -> Budget {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = per_rank(cores, local_ranks);
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    let (torch, loader, why) = if configured > 0 {
        (configured, configured, "train.threads".to_string())
    } else {
        (
            env("OMP_NUM_THREADS").unwrap_or(share),
            env("RAYON_NUM_THREADS").unwrap_or(share),
            format!("{cores} cores / {local_ranks} rank(s) on this node"),
        )
    };
    tch::set_num_threads(torch as i32);
    // Fails only if the global pool was already built (it is not, this early).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(loader)
        .build_global();
    Budget { torch, loader, why }
}

/// A pool for building an instance index. `node_wide`: every core of the node, for a
/// build the node's other ranks wait on (at start-up, or an epoch boundary the background
/// build missed): its threads leave the rank's core binding, which would otherwise hold
/// the build to the rank's share. Otherwise the rank's own share (`rayon`'s global size),
/// for a build that runs beside training. `configured` (data.index_threads) sets the
/// node-wide count when not 0.
pub fn index_pool(node_wide: bool, configured: usize) -> anyhow::Result<rayon::ThreadPool> {
    let threads = match (node_wide, configured) {
        (true, 0) => online_cpus(),
        (true, n) => n,
        (false, _) => rayon::current_num_threads(),
    };
    let mut builder = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("index-build-{i}"));
    if node_wide {
        builder = builder.start_handler(|_| unbind_current_thread());
    }
    Ok(builder.build()?)
}

/// The node's online CPUs (not the rank's binding, which `available_parallelism` reports).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

/// Lets the calling thread run on any CPU of the node (the kernel still keeps it inside
/// the job's cpuset, if the scheduler set one). Best effort: a refusal leaves the binding.
fn unbind_current_thread() {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays within its bounds for
    // CPUs below CPU_SETSIZE; sched_setaffinity(0) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let cpus = (libc::sysconf(libc::_SC_NPROCESSORS_CONF).max(1) as usize)
            .min(libc::CPU_SETSIZE as usize);
        for cpu in 0..cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_s_cores_are_shared_among_its_ranks() {
        assert_eq!(per_rank(128, 8), 16);
        assert_eq!(per_rank(2, 2), 1);
        // More ranks than cores: one each (oversubscribed, but never zero).
        assert_eq!(per_rank(2, 4), 1);
        assert_eq!(per_rank(16, 0), 16);
    }
}
