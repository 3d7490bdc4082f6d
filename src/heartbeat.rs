//! Heartbeats: how /healthz sees a stuck thread. Each long-lived thread holds
//! one `Heartbeat` and calls `beat` (or `beat_with`) once per iteration of its
//! loop; the beat records the time (milliseconds since one process-wide
//! `Instant`, taken at the first heartbeat) and whether the thread has work. A thread with work whose last beat is
//! older than its `bound` (set from that thread's own timeouts, see
//! `worker.rs`) is stuck; one without work may wait for it as long as it
//! likes. `Beats` is the set /healthz reads (`http::Health::beats`).
//!
//! With the test-only cargo feature `fault-injection`, `beat` is also where a
//! fault selected by K8S_JOB_WORKER_FAULT fires (see `fault`); without it
//! (the shipped build) that code is not compiled at all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One thread's heartbeat.
#[derive(Debug)]
pub struct Heartbeat {
    name: String,
    bound: Duration,
    last_ms: AtomicU64,
    has_work: AtomicBool,
    #[cfg(feature = "fault-injection")]
    first_ms: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that has just beaten, with work.
    pub fn new(name: &str, bound: Duration) -> Arc<Heartbeat> {
        let now = now_ms();
        Arc::new(Heartbeat {
            name: name.to_string(),
            bound,
            last_ms: AtomicU64::new(now),
            has_work: AtomicBool::new(true),
            #[cfg(feature = "fault-injection")]
            first_ms: AtomicU64::new(now),
        })
    }

    /// The thread moved and still has work (or always has: it polls).
    pub fn beat(&self) {
        self.beat_with(true);
    }

    /// The thread moved; `has_work` false means it may now wait indefinitely.
    pub fn beat_with(&self, has_work: bool) {
        self.last_ms.store(now_ms(), Ordering::SeqCst);
        self.has_work.store(has_work, Ordering::SeqCst);
        #[cfg(feature = "fault-injection")]
        fault::at_beat(&self.name, self.first_ms.load(Ordering::SeqCst));
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// How long ago the thread last beat.
    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Ordering::SeqCst)))
    }

    pub fn has_work(&self) -> bool {
        self.has_work.load(Ordering::SeqCst)
    }

    /// Has work and has not moved within its bound.
    pub fn stuck(&self) -> bool {
        self.has_work() && self.age() > self.bound
    }
}

/// The heartbeats of the threads running now.
#[derive(Default, Debug)]
pub struct Beats(Mutex<Vec<Arc<Heartbeat>>>);

impl Beats {
    /// Registers a heartbeat (its thread runs now).
    pub fn insert(&self, hb: Arc<Heartbeat>) {
        self.lock().push(hb);
    }

    /// Forgets `hb` (its thread was stopped on purpose).
    pub fn remove(&self, hb: &Arc<Heartbeat>) {
        self.lock().retain(|h| !Arc::ptr_eq(h, hb));
    }

    pub fn snapshot(&self) -> Vec<Arc<Heartbeat>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Heartbeat>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Test-only faults (feature `fault-injection`): K8S_JOB_WORKER_FAULT is
/// `<panic|freeze>:<thread>:<seconds>`; the named thread panics (which aborts
/// the release build) or stops forever at its first beat at least `seconds`
/// after its heartbeat was created. Read from the environment only, never
/// from queue input.
#[cfg(feature = "fault-injection")]
mod fault {
    use std::sync::OnceLock;

    #[derive(Debug, PartialEq)]
    enum Kind {
        Panic,
        Freeze,
    }

    struct Fault {
        kind: Kind,
        thread: String,
        after_ms: u64,
    }

    fn parse(s: &str) -> Option<Fault> {
        let mut it = s.splitn(3, ':');
        let kind = match it.next()? {
            "panic" => Kind::Panic,
            "freeze" => Kind::Freeze,
            _ => return None,
        };
        let thread = it.next()?.to_string();
        let secs: f64 = it.next()?.parse().ok()?;
        Some(Fault {
            kind,
            thread,
            after_ms: (secs * 1000.0) as u64,
        })
    }

    fn configured() -> Option<&'static Fault> {
        static F: OnceLock<Option<Fault>> = OnceLock::new();
        F.get_or_init(|| {
            let f = std::env::var("K8S_JOB_WORKER_FAULT")
                .ok()
                .and_then(|s| parse(&s));
            if let Some(f) = &f {
                log::warn!(
                    "fault injection armed: {:?} in thread {} after {} ms",
                    f.kind,
                    f.thread,
                    f.after_ms
                );
            }
            f
        })
        .as_ref()
    }

    pub(super) fn at_beat(name: &str, first_ms: u64) {
        let Some(f) = configured() else { return };
        if f.thread != name || super::now_ms().saturating_sub(first_ms) < f.after_ms {
            return;
        }
        match f.kind {
            Kind::Panic => panic!("fault injection: panic in thread {name}"),
            Kind::Freeze => {
                log::warn!("fault injection: thread {name} freezes now");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_with_work_is_stuck_only_past_its_bound() {
        let beats = Beats::default();
        let hb = Heartbeat::new("t", Duration::from_millis(50));
        beats.insert(hb.clone());
        assert!(!hb.stuck());
        std::thread::sleep(Duration::from_millis(80));
        assert!(hb.stuck());
        hb.beat();
        assert!(!hb.stuck());
        hb.beat_with(false);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!hb.stuck(), "no work: waiting is not being stuck");
        assert_eq!(beats.snapshot().len(), 1);
        beats.remove(&hb);
        assert!(beats.snapshot().is_empty());
    }
}
