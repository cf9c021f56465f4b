//! Ends a rank that waits in an MPI collective longer than `distributed.timeout_s`, with a
//! line that names the ranks gone silent. Without it a lost node hangs the job: Open MPI
//! (4.1) says "ORTE has lost communication with a remote daemon" and leaves the surviving
//! ranks spinning in their all-reduce for good, and a cut link is never noticed at all.
//! (NCCL's collectives have their own watchdog, in gradient_all_reduce.rs.)
//!
//! Each rank's thread also touches `DIR/rank-N` every few seconds when the run gives a
//! heartbeat folder (the run folder, which every node of a multi-node job sees): a rank
//! that times out reads them, so the line says which ranks (on which hosts) stopped
//! beating, a lost node, or that all still beat, a cut link or a stuck rank. The line also
//! goes to `DIR/ended-rank-N.txt`, which the launchers print when the job fails. Cost: one
//! small file per rank rewritten every 2 s; 256 ranks make 128 writes a second on the
//! shared file system, nothing on the training path (a collective takes a mutex twice).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// How often the thread looks and beats.
const BEAT: Duration = Duration::from_secs(2);
/// A heartbeat older than this (three beats missed) is a silent rank.
const SILENT_AFTER: Duration = Duration::from_secs(6);

struct State {
    rank: usize,
    host: String,
    timeout: Duration,
    heartbeats: Option<PathBuf>,
    /// The collective this rank waits in, and since when.
    waiting: Option<(Instant, &'static str)>,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

fn state() -> Option<std::sync::MutexGuard<'static, State>> {
    STATE
        .get()
        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Starts the watch of this rank (of a job of more than one); later calls do nothing.
pub fn start(rank: usize, host: String, timeout: Duration) {
    let fresh = STATE
        .set(Mutex::new(State {
            rank,
            host,
            timeout,
            heartbeats: None,
            waiting: None,
        }))
        .is_ok();
    if fresh {
        std::thread::spawn(watch);
    }
}

/// The run's timeout and heartbeat folder (created here), once the run knows them.
pub fn configure(timeout: Duration, heartbeats: Option<&Path>) {
    if let Some(mut s) = state() {
        s.timeout = timeout;
        s.heartbeats = heartbeats.map(Path::to_path_buf);
        if let Some(dir) = &s.heartbeats {
            let _ = std::fs::create_dir_all(dir);
            // An earlier job's line is not this job's.
            let _ = std::fs::remove_file(ended_path(dir, s.rank));
        }
    }
}

/// Marks this rank as waiting in `what` until the guard is dropped.
pub fn waiting(what: &'static str) -> Waiting {
    if let Some(mut s) = state() {
        s.waiting = Some((Instant::now(), what));
    }
    Waiting
}

pub struct Waiting;

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut s) = state() {
            s.waiting = None;
        }
    }
}

fn watch() {
    loop {
        std::thread::sleep(BEAT);
        let Some(s) = state() else { return };
        if let Some(dir) = &s.heartbeats {
            let _ = std::fs::write(heartbeat_path(dir, s.rank), format!("{}\n", s.host));
        }
        let Some((since, what)) = s.waiting else {
            continue;
        };
        if since.elapsed() <= s.timeout {
            continue;
        }
        let beats = s.heartbeats.as_deref().map(read_heartbeats);
        let line = verdict(
            s.rank,
            &s.host,
            what,
            since.elapsed(),
            s.timeout,
            beats.as_deref(),
        );
        eprintln!("{line}");
        // mpirun may be past forwarding the line (it is, once it lost a node): the
        // launchers print these files when the job fails.
        if let Some(dir) = &s.heartbeats {
            let _ = std::fs::write(ended_path(dir, s.rank), format!("{line}\n"));
        }
        // The other ranks may be gone and mpirun with them: nothing here can be waited on.
        // SAFETY: _exit ends the process at once; no Rust state is used after it.
        unsafe { libc::_exit(1) };
    }
}

fn heartbeat_path(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!("rank-{rank:05}"))
}

/// Where a rank that gave up leaves its line.
fn ended_path(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!("ended-rank-{rank:05}.txt"))
}

/// Every rank's heartbeat in `dir`: (rank, host, age).
fn read_heartbeats(dir: &Path) -> Vec<(usize, String, Duration)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut beats: Vec<(usize, String, Duration)> = entries
        .flatten()
        .filter_map(|e| {
            let rank = e
                .file_name()
                .to_str()?
                .strip_prefix("rank-")?
                .parse()
                .ok()?;
            let age = now
                .duration_since(e.metadata().ok()?.modified().ok()?)
                .ok()?;
            let host = std::fs::read_to_string(e.path()).ok()?.trim().to_string();
            Some((rank, host, age))
        })
        .collect();
    beats.sort();
    beats
}

/// The line a rank prints when it gives up: what it waited in, and who went silent.
fn verdict(
    rank: usize,
    host: &str,
    what: &str,
    waited: Duration,
    timeout: Duration,
    beats: Option<&[(usize, String, Duration)]>,
) -> String {
    let head = format!(
        "rank {rank} ({host}): waited {} s in {what}, past distributed.timeout_s = {}",
        waited.as_secs(),
        timeout.as_secs()
    );
    let silent: Vec<String> = beats
        .unwrap_or_default()
        .iter()
        .filter(|(_, _, age)| *age > SILENT_AFTER)
        .map(|(r, h, age)| format!("rank {r} on {h} (silent {} s)", age.as_secs()))
        .collect();
    let why = match (beats, silent.is_empty()) {
        (None, _) => "a rank or node of the job is gone, unreachable or stuck".to_string(),
        (Some(_), false) => format!("lost: {}", silent.join(", ")),
        (Some(_), true) => {
            "every rank still beats: a link between the nodes is down, or a rank is stuck"
                .to_string()
        }
    };
    format!("{head}: {why}; ending this rank so that the job ends (the last checkpoint resumes it)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_names_the_silent_ranks_or_says_none_went_silent() {
        let s = Duration::from_secs;
        let beats = vec![
            (0, "node1".to_string(), s(1)),
            (1, "node1".to_string(), s(2)),
            (2, "node2".to_string(), s(31)),
            (3, "node2".to_string(), s(30)),
        ];
        let line = verdict(
            1,
            "node1",
            "the gradient all-reduce",
            s(12),
            s(10),
            Some(&beats),
        );
        assert_eq!(
            line,
            "rank 1 (node1): waited 12 s in the gradient all-reduce, past distributed.timeout_s = 10: lost: rank 2 on node2 (silent 31 s), rank 3 on node2 (silent 30 s); ending this rank so that the job ends (the last checkpoint resumes it)"
        );
        let fresh = &beats[..2];
        assert!(verdict(0, "node1", "a barrier", s(12), s(10), Some(fresh))
            .contains(": every rank still beats: a link between the nodes is down"));
        assert!(verdict(0, "node1", "a barrier", s(12), s(10), None)
            .contains(": a rank or node of the job is gone, unreachable or stuck;"));
    }

    #[test]
    fn heartbeats_are_read_back_with_their_rank_and_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(heartbeat_path(dir.path(), 3), "node2\n").unwrap();
        std::fs::write(heartbeat_path(dir.path(), 0), "node1\n").unwrap();
        std::fs::write(dir.path().join("notes"), "x").unwrap();
        let beats = read_heartbeats(dir.path());
        let got: Vec<(usize, &str)> = beats.iter().map(|(r, h, _)| (*r, h.as_str())).collect();
        assert_eq!(got, [(0, "node1"), (3, "node2")]);
        assert!(beats.iter().all(|(_, _, age)| *age < SILENT_AFTER));
    }
}
