//! SIGTERM / SIGINT handling with `sigaction` (libc, already in the tree): the
//! handler only stores into an atomic, which the main thread polls. No other
//! module installs signal handlers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static RECEIVED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    RECEIVED.store(sig as usize, Ordering::SeqCst);
}

/// Installs the handler for SIGTERM and SIGINT.
pub fn install() {
    // SAFETY: the handler is async-signal-safe (one atomic store) and the
    // sigaction struct is fully initialised before use.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

/// The signal received so far (0 = none).
pub fn received() -> usize {
    RECEIVED.load(Ordering::SeqCst)
}

/// Sleeps up to `d`, waking early when a signal arrives; true if one did.
pub fn sleep_or_signal(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if received() != 0 {
            return true;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())),
        );
    }
    received() != 0
}
