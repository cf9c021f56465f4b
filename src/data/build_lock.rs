//! Who builds a shared file: the first process to create `FILE.lock` (O_EXCL) builds
//! `FILE`, everyone else waits for it to appear. The file system is the arbiter, so one
//! rank per node builds on node-local disks and one rank of the whole job on a shared file
//! system, with no MPI call (the next epoch's index is built by a background thread,
//! where the communicator may not be used).
//!
//! A builder that dies leaves its lock behind. The lock names its host and pid: on the
//! same host a dead pid frees it at once. Otherwise (another host, or a live pid of this
//! host that may be another process since a restart or in another container) the lock
//! counts as abandoned when its modification time, which the builder renews every few
//! seconds, has not moved for a minute of the waiter's own clock (so clock skew between
//! hosts does not matter): a waiter waits at most that minute for a dead builder.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

/// How often a builder renews its lock, and how long an unchanged lock from another host
/// is trusted.
const HEARTBEAT: Duration = Duration::from_secs(5);
const ABANDONED_AFTER: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// A held lock: renewed by a thread until dropped, then removed.
pub struct BuildLock {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

/// This process's `host pid`, as written in its locks.
pub fn owner() -> String {
    format!("{} {}", hostname(), std::process::id())
}

/// The temporary name a builder writes `target` under: unique per process, so builders on
/// hosts that share the folder never write into each other's file.
pub fn temporary_path(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(format!(".tmp-{}", owner().replace(' ', "-")));
    PathBuf::from(s)
}

fn lock_path(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

impl BuildLock {
    /// Takes the lock for building `target`, or `None` when another live process holds
    /// it. An abandoned lock (see the module) is removed with its owner's temporary file
    /// and taken.
    pub fn try_take(target: &Path, watch: &mut LockWatch) -> Result<Option<BuildLock>> {
        let path = lock_path(target);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(owner().as_bytes())
                    .with_context(|| format!("{}: cannot write", path.display()))?;
                Ok(Some(BuildLock::hold(path, file)))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                if watch.abandoned(&path) {
                    if let Ok(stale) = std::fs::read_to_string(&path) {
                        let stale_tmp = format!(
                            "{}.tmp-{}",
                            target.display(),
                            stale.trim().replace(' ', "-")
                        );
                        let _ = std::fs::remove_file(stale_tmp);
                    }
                    let _ = std::fs::remove_file(&path);
                    return BuildLock::try_take(target, &mut LockWatch::default());
                }
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("{}: cannot create", path.display())),
        }
    }

    fn hold(path: PathBuf, file: File) -> BuildLock {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let heartbeat = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(POLL);
                if last.elapsed() >= HEARTBEAT {
                    let _ = file.set_modified(SystemTime::now());
                    last = Instant::now();
                }
            }
        });
        BuildLock {
            path,
            stop,
            heartbeat: Some(heartbeat),
        }
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A waiter's view of someone else's lock: when its modification time last moved, by the
/// waiter's clock.
#[derive(Default)]
pub struct LockWatch {
    seen: Option<(SystemTime, Instant)>,
}

impl LockWatch {
    fn abandoned(&mut self, lock: &Path) -> bool {
        let Ok(text) = std::fs::read_to_string(lock) else {
            return false;
        };
        if let Some((host, pid)) = text.trim().split_once(' ') {
            let dead = pid.parse::<i32>().is_ok_and(|pid| !process_alive(pid));
            if host == hostname() && dead {
                return true;
            }
        }
        let Ok(modified) = std::fs::metadata(lock).and_then(|m| m.modified()) else {
            return false;
        };
        match self.seen {
            Some((m, since)) if m == modified => since.elapsed() >= ABANDONED_AFTER,
            _ => {
                self.seen = Some((modified, Instant::now()));
                false
            }
        }
    }
}

/// Waits until `target` exists, or its lock is free to take (then returns the lock). Says
/// once who it waits for.
pub fn wait_or_take(target: &Path, what: &str) -> Result<Option<BuildLock>> {
    let mut watch = LockWatch::default();
    let mut said = false;
    let started = Instant::now();
    loop {
        if target.exists() {
            return Ok(None);
        }
        if let Some(lock) = BuildLock::try_take(target, &mut watch)? {
            // The builder may have finished between the check and the lock.
            if target.exists() {
                return Ok(None);
            }
            return Ok(Some(lock));
        }
        if !said && started.elapsed() > Duration::from_secs(2) {
            let holder = std::fs::read_to_string(lock_path(target)).unwrap_or_default();
            println!(
                "waiting for {what}, which {} is building ({}); a lock not renewed for {} s is taken over",
                holder.trim(),
                target.display(),
                ABANDONED_AFTER.as_secs()
            );
            said = true;
        }
        std::thread::sleep(POLL);
    }
}

/// Removes the locks and temporary files that dead processes of this host left in `dir`
/// (a run stopped while its background build was writing): without this a stopped build
/// leaves a temporary file of up to an epoch's index behind.
pub fn clear_abandoned(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let host = hostname();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = if name.ends_with(".lock") {
            std::fs::read_to_string(entry.path()).unwrap_or_default()
        } else if let Some((_, tail)) = name.split_once(".tmp-") {
            tail.rsplit_once('-')
                .map(|(h, p)| format!("{h} {p}"))
                .unwrap_or_default()
        } else {
            continue;
        };
        let Some((h, pid)) = owner.trim().split_once(' ') else {
            continue;
        };
        if h == host && pid.parse().is_ok_and(|pid| !process_alive(pid)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This node's name: the build lock's host rule, and the lines that say which node did what.
pub fn hostname() -> String {
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most the given length into the buffer.
    unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
    let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    String::from_utf8_lossy(&host[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_modified(target: &Path) -> SystemTime {
        std::fs::metadata(lock_path(target))
            .unwrap()
            .modified()
            .unwrap()
    }

    #[test]
    fn one_taker_at_a_time_and_the_lock_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("epoch.idx");
        let lock = BuildLock::try_take(&target, &mut LockWatch::default())
            .unwrap()
            .expect("free");
        assert!(BuildLock::try_take(&target, &mut LockWatch::default())
            .unwrap()
            .is_none());
        drop(lock);
        assert!(!lock_path(&target).exists());
        assert!(BuildLock::try_take(&target, &mut LockWatch::default())
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_dead_builder_s_lock_and_temporary_file_are_cleared_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("epoch.idx");
        // A pid that cannot be alive (above the kernel's pid_max limit of 2^22).
        let dead = format!("{} 99999999", hostname());
        std::fs::write(lock_path(&target), &dead).unwrap();
        let stale_tmp = dir
            .path()
            .join(format!("epoch.idx.tmp-{}", dead.replace(' ', "-")));
        std::fs::write(&stale_tmp, b"half").unwrap();
        let lock = BuildLock::try_take(&target, &mut LockWatch::default()).unwrap();
        assert!(lock.is_some());
        assert!(!stale_tmp.exists());
        assert_eq!(
            std::fs::read_to_string(lock_path(&target)).unwrap(),
            owner()
        );
    }

    #[test]
    fn a_dead_process_s_leftovers_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = format!("{} 99999999", hostname());
        std::fs::write(dir.path().join("a.idx.lock"), &dead).unwrap();
        let dead_tmp = format!("a.idx.tmp-{}", dead.replace(' ', "-"));
        std::fs::write(dir.path().join(&dead_tmp), b"x").unwrap();
        std::fs::write(dir.path().join("b.idx.lock"), owner()).unwrap();
        let live_tmp = temporary_path(&dir.path().join("b.idx"));
        std::fs::write(&live_tmp, b"x").unwrap();
        std::fs::write(dir.path().join("c.idx.lock"), "elsewhere 99999999").unwrap();
        std::fs::write(dir.path().join("train.idx"), b"x").unwrap();
        clear_abandoned(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let live_tmp = live_tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(left, ["b.idx.lock", &live_tmp, "c.idx.lock", "train.idx"]);
    }

    #[test]
    fn a_live_lock_from_another_host_is_honoured_until_it_stops_moving() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("epoch.idx");
        std::fs::write(lock_path(&target), "elsewhere 1").unwrap();
        let mut watch = LockWatch::default();
        assert!(BuildLock::try_take(&target, &mut watch).unwrap().is_none());
        // Pretend the last change was seen long ago.
        let m = lock_modified(&target);
        watch.seen = Some((m, Instant::now() - ABANDONED_AFTER));
        assert!(BuildLock::try_take(&target, &mut watch).unwrap().is_some());
    }

    /// A live pid of this host that is not the builder (pid reuse after a restart, another
    /// container): the heartbeat decides, not the pid.
    #[test]
    fn a_same_host_lock_with_a_live_pid_is_taken_once_its_heartbeat_stops() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("epoch.idx");
        // pid 1 is always alive, and never a builder.
        std::fs::write(lock_path(&target), format!("{} 1", hostname())).unwrap();
        let mut watch = LockWatch::default();
        assert!(BuildLock::try_take(&target, &mut watch).unwrap().is_none());
        let m = lock_modified(&target);
        watch.seen = Some((m, Instant::now() - ABANDONED_AFTER / 2));
        assert!(BuildLock::try_take(&target, &mut watch).unwrap().is_none());
        watch.seen = Some((m, Instant::now() - ABANDONED_AFTER));
        assert!(BuildLock::try_take(&target, &mut watch).unwrap().is_some());
    }

    #[test]
    fn a_waiter_returns_when_the_file_appears() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("epoch.idx");
        let holder = BuildLock::try_take(&target, &mut LockWatch::default())
            .unwrap()
            .unwrap();
        let t = target.clone();
        let builder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(&t, b"done").unwrap();
            drop(holder);
        });
        assert!(wait_or_take(&target, "the index").unwrap().is_none());
        builder.join().unwrap();
    }
}
