//! Parallel work with ordered output and bounded memory.
//!
//! Jobs (input files, text shards) are taken in order by worker threads; each worker
//! streams its job's results through a small bounded channel of its own, and the consumer
//! drains the channels in job order. Output is therefore the same whatever the thread
//! count, and at most `threads` jobs are in flight, each holding at most `CAPACITY`
//! batches, whatever the size of a job.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

const CAPACITY: usize = 8;

pub enum Message<B, S> {
    Batch(B),
    /// The job ended; its summary.
    Done(S),
}

/// Where a worker sends its job's batches.
pub struct Outbox<'a, B, S> {
    sender: &'a Sender<Message<B, S>>,
}

impl<B, S> Outbox<'_, B, S> {
    /// False once the consumer has stopped (after an error): the worker should give up.
    pub fn send(&self, batch: B) -> bool {
        self.sender.send(Message::Batch(batch)).is_ok()
    }
}

/// Runs `work` on every job on `threads` threads; `consume` sees each job's batches and
/// then its summary, in job order. The first error (from a worker or the consumer) stops
/// everything and is returned.
pub fn run<J, B, S, W, C>(jobs: &[J], threads: usize, work: W, mut consume: C) -> Result<()>
where
    J: Sync,
    B: Send,
    S: Send,
    W: Fn(usize, &J, &Outbox<'_, B, S>) -> Result<S> + Sync,
    C: FnMut(usize, Message<B, S>) -> Result<()>,
{
    let (senders, receivers): (Vec<_>, Vec<_>) = jobs.iter().map(|_| bounded(CAPACITY)).unzip();
    let started = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let errors = Mutex::new(Vec::<(usize, anyhow::Error)>::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let i = started.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let sender: &Sender<Message<B, S>> = &senders[i];
                match work(i, job, &Outbox { sender }) {
                    Ok(summary) => {
                        let _ = sender.send(Message::Done(summary));
                    }
                    Err(e) => {
                        errors.lock().expect("never poisoned").push((i, e));
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            });
        }
        let result = consume_in_order(receivers, &started, &errors, &mut consume);
        // The receivers are gone now: blocked workers wake up and stop.
        stop.store(true, Ordering::SeqCst);
        result
    })
}

fn consume_in_order<B, S, C>(
    receivers: Vec<Receiver<Message<B, S>>>,
    started: &AtomicUsize,
    errors: &Mutex<Vec<(usize, anyhow::Error)>>,
    consume: &mut C,
) -> Result<()>
where
    C: FnMut(usize, Message<B, S>) -> Result<()>,
{
    for (i, receiver) in receivers.iter().enumerate() {
        loop {
            match receiver.recv_timeout(Duration::from_millis(100)) {
                Ok(Message::Done(s)) => {
                    consume(i, Message::Done(s))?;
                    break;
                }
                Ok(batch) => consume(i, batch)?,
                Err(RecvTimeoutError::Timeout) => {
                    let never_started = started.load(Ordering::SeqCst) <= i;
                    if let Some(e) = take_error(errors, i, never_started) {
                        return Err(e);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => unreachable!("senders outlive this loop"),
            }
        }
    }
    Ok(())
}

/// The error of job `i` or an earlier one; or, when job `i` will never start because of a
/// later job's error, that error.
fn take_error(
    errors: &Mutex<Vec<(usize, anyhow::Error)>>,
    i: usize,
    never_started: bool,
) -> Option<anyhow::Error> {
    let mut errors = errors.lock().expect("never poisoned");
    errors.sort_by_key(|(j, _)| *j);
    let first = errors.first()?;
    (first.0 <= i || never_started).then(|| errors.remove(0).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_order_does_not_depend_on_threads() {
        let jobs: Vec<u32> = (0..20).collect();
        let collect = |threads| {
            let mut seen = Vec::new();
            run(
                &jobs,
                threads,
                |_, &j, out| {
                    for k in 0..(j % 5) * 10 {
                        out.send(j * 1000 + k);
                    }
                    Ok(j)
                },
                |_, m| {
                    match m {
                        Message::Batch(b) => seen.push(b),
                        Message::Done(s) => seen.push(s + 1_000_000),
                    }
                    Ok(())
                },
            )
            .unwrap();
            seen
        };
        assert_eq!(collect(1), collect(4));
    }

    #[test]
    fn a_failing_job_stops_the_run_with_its_error() {
        let jobs: Vec<u32> = (0..50).collect();
        let err = run(
            &jobs,
            3,
            |_, &j, out| {
                for k in 0..100 {
                    if !out.send(k) {
                        return Ok(());
                    }
                }
                anyhow::ensure!(j != 7, "job 7 failed");
                Ok(())
            },
            |_, _| Ok(()),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "job 7 failed");
        let err = run(
            &jobs,
            2,
            |_, _, _| Ok(()),
            |i, _: Message<u32, ()>| {
                anyhow::ensure!(i != 3, "consumer failed at 3");
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "consumer failed at 3");
    }
}
