//! Per-destination delivery workers. Each destination (scheme://host:port)
//! gets up to `max_per_dest` threads named `callback-<host>`, started when its
//! work arrives and stopped after sitting idle for `idle_timeout`. Work is a
//! delivery attempt or the recording of a settled callback (`Hooks::settled`,
//! which PATCHes its Job), so records run in parallel off the dispatcher, on
//! the threads of the callback's own destination; work for a
//! destination whose workers are all busy waits in that destination's backlog
//! only, so a slow or dead webhook never holds up another. The pool is owned
//! and driven by the dispatcher thread alone (no shared state, no locks):
//! workers get jobs on their own channel and report results on a shared one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, unbounded};

use super::state::Attempt;
use super::{Callback, Hooks, Outcome};

/// Performs one delivery attempt (HTTP in production, a fake in unit tests).
pub(crate) type Deliver = Arc<dyn Fn(&Callback) -> Attempt + Send + Sync>;

/// What a worker is given.
#[derive(Debug)]
pub(crate) enum Work {
    /// One delivery attempt.
    Deliver(Arc<Callback>),
    /// Record a settled callback: `Hooks::settled`.
    Record(Arc<Callback>, Outcome),
}

impl Work {
    fn message_id(self) -> String {
        match self {
            Work::Deliver(cb) | Work::Record(cb, _) => cb.message_id.clone(),
        }
    }
}

/// What a finished piece of work came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finished {
    Attempt(Attempt),
    /// `Hooks::settled` returned.
    Recorded,
}

/// Finished work, reported by a worker to the dispatcher.
pub(crate) struct Done {
    pub dest: String,
    pub worker: u64,
    pub message_id: String,
    pub finished: Finished,
}

/// Work that no worker could be started for (handed back).
#[derive(Debug)]
pub(crate) struct Unstarted {
    pub work: Box<Work>,
    pub reason: String,
}

impl Unstarted {
    pub(crate) fn message_id(self) -> String {
        self.work.message_id()
    }
}

struct Worker {
    id: u64,
    tx: Sender<Work>,
    handle: JoinHandle<()>,
    busy: bool,
    idle_since: Instant,
}

#[derive(Default)]
struct Dest {
    workers: Vec<Worker>,
    backlog: VecDeque<Work>,
}

/// Stack of a worker thread: one HTTP attempt (ureq, rustls) or one API
/// server request deep; far below the 2 MiB default.
const WORKER_STACK: usize = 512 * 1024;

pub(crate) struct Pool {
    dests: HashMap<String, Dest>,
    max_per_dest: usize,
    idle_timeout: Duration,
    deliver: Deliver,
    hooks: Arc<dyn Hooks>,
    results: Sender<Done>,
    next_id: u64,
}

impl Pool {
    pub(crate) fn new(
        max_per_dest: usize,
        idle_timeout: Duration,
        deliver: Deliver,
        hooks: Arc<dyn Hooks>,
        results: Sender<Done>,
    ) -> Pool {
        Pool {
            dests: HashMap::new(),
            max_per_dest: max_per_dest.max(1),
            idle_timeout,
            deliver,
            hooks,
            results,
            next_id: 0,
        }
    }

    /// Hands `cb` to an idle worker of `dest`, a new one, or the backlog (a
    /// record at its front, an attempt at its back).
    /// Fails when no worker of `dest` exists and none could be started.
    pub(crate) fn submit(&mut self, dest: &str, host: &str, cb: Work) -> Result<(), Unstarted> {
        let d = self.dests.entry(dest.to_string()).or_default();
        if let Some(w) = d.workers.iter_mut().find(|w| !w.busy) {
            match w.tx.send(cb) {
                Ok(()) => {
                    w.busy = true;
                    return Ok(());
                }
                // The worker is gone (it cannot be, short of a bug); start another.
                Err(e) => return self.start_worker(dest, host, e.0),
            }
        }
        if d.workers.len() < self.max_per_dest {
            return self.start_worker(dest, host, cb);
        }
        // A record finishes a message's turn (its next callback waits for
        // it): it goes ahead of the attempts that start new turns.
        match cb {
            Work::Record(..) => d.backlog.push_front(cb),
            Work::Deliver(_) => d.backlog.push_back(cb),
        }
        Ok(())
    }

    fn start_worker(&mut self, dest: &str, host: &str, cb: Work) -> Result<(), Unstarted> {
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = unbounded::<Work>();
        let deliver = Arc::clone(&self.deliver);
        let hooks = Arc::clone(&self.hooks);
        let results = self.results.clone();
        let dest_key = dest.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("callback-{host}"))
            .stack_size(WORKER_STACK)
            .spawn(move || {
                for work in rx {
                    let (message_id, finished) = match work {
                        Work::Deliver(cb) => {
                            let attempt = deliver(&cb);
                            (cb.message_id.clone(), Finished::Attempt(attempt))
                        }
                        Work::Record(cb, outcome) => {
                            hooks.settled(&cb, &outcome);
                            (cb.message_id.clone(), Finished::Recorded)
                        }
                    };
                    let done = Done {
                        dest: dest_key.clone(),
                        worker: id,
                        message_id,
                        finished,
                    };
                    if results.send(done).is_err() {
                        break;
                    }
                }
            });
        let d = self.dests.entry(dest.to_string()).or_default();
        match spawned {
            Ok(handle) => {
                if let Err(e) = tx.send(cb) {
                    // Cannot happen: the worker holds the receiver until tx is dropped.
                    d.backlog.push_front(e.0);
                }
                d.workers.push(Worker {
                    id,
                    tx,
                    handle,
                    busy: true,
                    idle_since: Instant::now(),
                });
                Ok(())
            }
            Err(e) if d.workers.is_empty() => Err(Unstarted {
                work: Box::new(cb),
                reason: format!("cannot start a callback worker thread: {e}"),
            }),
            Err(e) => {
                log::warn!("cannot start another callback worker thread: {e}");
                d.backlog.push_back(cb);
                Ok(())
            }
        }
    }

    /// Marks the worker that reported `done` idle and gives it the next backlog item.
    pub(crate) fn finished(&mut self, dest: &str, worker: u64, now: Instant) {
        let Some(d) = self.dests.get_mut(dest) else {
            return;
        };
        let Some(w) = d.workers.iter_mut().find(|w| w.id == worker) else {
            return;
        };
        w.busy = false;
        w.idle_since = now;
        if let Some(cb) = d.backlog.pop_front() {
            match w.tx.send(cb) {
                Ok(()) => w.busy = true,
                Err(e) => d.backlog.push_front(e.0),
            }
        }
    }

    /// Stops workers idle for longer than the idle timeout and forgets empty destinations.
    pub(crate) fn reap(&mut self, now: Instant) {
        let idle = self.idle_timeout;
        let mut stopped = Vec::new();
        self.dests.retain(|_, d| {
            let (keep, stop): (Vec<Worker>, Vec<Worker>) = std::mem::take(&mut d.workers)
                .into_iter()
                .partition(|w| w.busy || now.saturating_duration_since(w.idle_since) < idle);
            d.workers = keep;
            stopped.extend(stop);
            !d.workers.is_empty() || !d.backlog.is_empty()
        });
        for w in stopped {
            drop(w.tx);
            let _ = w.handle.join();
        }
    }

    /// When the next idle worker becomes due for stopping.
    pub(crate) fn next_reap(&self) -> Option<Instant> {
        self.dests
            .values()
            .flat_map(|d| d.workers.iter())
            .filter(|w| !w.busy)
            .map(|w| w.idle_since + self.idle_timeout)
            .min()
    }

    /// Worker threads alive now.
    #[cfg(test)]
    pub(crate) fn workers(&self) -> usize {
        self.dests.values().map(|d| d.workers.len()).sum()
    }

    /// Stops every worker, waiting for attempts in progress (each is bounded by
    /// the request timeout) to finish; their results are dropped.
    pub(crate) fn shutdown(self) {
        let mut handles = Vec::new();
        for (_, d) in self.dests {
            for w in d.workers {
                drop(w.tx);
                handles.push(w.handle);
            }
        }
        for h in handles {
            let _ = h.join();
        }
    }
}
