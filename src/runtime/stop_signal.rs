//! SIGTERM (a scheduler pre-empting the job) and SIGINT as a request to stop: the training
//! loops finish their step, write a checkpoint, and exit 0, so that `--resume auto`
//! continues. Every rank reads the flag together (a sum over ranks), so all stop after the
//! same step.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// From here on SIGTERM and SIGINT set the flag instead of ending the process.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// Whether this process was signalled.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Raises the flag as a signal would (the tests' deterministic stop).
pub fn request() {
    STOP.store(true, Ordering::SeqCst);
}
