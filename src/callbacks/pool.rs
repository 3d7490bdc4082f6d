//! Per-destination delivery workers. Each destination (scheme://host:port)
//! gets up to `max_per_dest` threads named `callback-<host>`, started when its
//! work arrives and stopped after sitting idle for `idle_timeout`. Work is a
//! delivery attempt or the recording of a settled callback (`Hooks::settled`,
//! which PATCHes its Job), so records run in parallel off the dispatcher, on
//! the threads of the callback's own destination; work for a
//! destination whose workers are all busy waits in that destination's backlog
//! only, so a slow or dead webhook never holds up another. The pool is owned
//! and driven by the dispatcher thread alone (no locks): workers get jobs on
//! their own channel and report results on a shared one.
//!
//! Turns that end in a record yield to Job creation. The delivery of a
//! status 0 or 1 about a Job starts a turn whose record PATCHes the Job;
//! while the creators have a create running (`CreatesRunning`, the one thing
//! shared with them), at most `TURNS_WHILE_CREATING` such turns (delivery
//! plus record) run at once and further deliveries wait in order in `held`,
//! each at most `TURN_HOLD_MAX`. Deliveries wait, not records: what waits was
//! never delivered, so a crash repeats no more callbacks than before (a
//! successor sends the held ones for the first time). Records, terminal
//! callbacks and those without a Job never wait. On a two-core bed the
//! records took a third of the API server's writes during a burst (README,
//! Performance).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    Deliver(Callback),
    /// Record a settled callback: `Hooks::settled`.
    Record(Callback, Outcome),
}

impl Work {
    /// Part of a turn that ends in a record of status 0 or 1 on a Job (its
    /// delivery or that record): counted against `TURNS_WHILE_CREATING`.
    /// Without a Job nothing is written; a terminal callback never yields
    /// (it ends the message and releases the Job).
    fn yields(&self) -> bool {
        let (Work::Deliver(cb) | Work::Record(cb, _)) = self;
        cb.job.is_some() && !cb.status.is_terminal()
    }

    /// A yielding delivery: it may wait in `held` (records never do: theirs
    /// was delivered, and must be recorded before a crash can repeat it).
    fn may_wait(&self) -> bool {
        matches!(self, Work::Deliver(_)) && self.yields()
    }
}

/// How many Job creates are running now: each creator counts itself in for
/// the length of a create (`enter`), and the pool reads it to let records
/// yield. Cloning shares the count.
#[derive(Clone, Debug, Default)]
pub struct CreatesRunning(Arc<AtomicUsize>);

/// Counts one create as running until dropped.
pub struct Creating(Arc<AtomicUsize>);

impl CreatesRunning {
    pub fn enter(&self) -> Creating {
        self.0.fetch_add(1, Ordering::SeqCst);
        Creating(Arc::clone(&self.0))
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Yielding turns (delivery or record) running at once while a create runs.
pub(crate) const TURNS_WHILE_CREATING: usize = 4;
/// Longest a delivery waits for the creates (then it goes regardless, so a
/// steady stream of creates delays callbacks by this much, never starves them).
pub(crate) const TURN_HOLD_MAX: Duration = Duration::from_secs(10);
/// How often the dispatcher looks again while deliveries wait.
const HELD_POLL: Duration = Duration::from_millis(10);

/// A delivery waiting for the creates: only its message id, a few bytes
/// (the scheduler keeps the callback; `release_held` fetches a copy when the
/// turn may start, and only into a free worker, so 10,000 waiting callbacks
/// are not copied twice).
struct Held {
    since: Instant,
    message_id: String,
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
    /// The work was a record that yields to creates (`Work::yields`).
    pub yielded: bool,
}

/// Work that no worker could be started for (handed back).
#[derive(Debug)]
pub(crate) struct Unstarted {
    pub work: Box<Work>,
    pub reason: String,
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
    /// Deliveries waiting for the creates, oldest first.
    held: VecDeque<Held>,
    /// Names the destination's threads.
    host: String,
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
    creating: CreatesRunning,
    /// Yielding work running, on a worker or in a backlog.
    turns: usize,
    /// Draining: nothing waits any more.
    open: bool,
}

impl Pool {
    pub(crate) fn new(
        max_per_dest: usize,
        idle_timeout: Duration,
        deliver: Deliver,
        hooks: Arc<dyn Hooks>,
        results: Sender<Done>,
        creating: CreatesRunning,
    ) -> Pool {
        Pool {
            dests: HashMap::new(),
            max_per_dest: max_per_dest.max(1),
            idle_timeout,
            deliver,
            hooks,
            results,
            next_id: 0,
            creating,
            turns: 0,
            open: false,
        }
    }

    /// Hands `work` to a worker (`place`), except that a yielding delivery
    /// waits in its destination's `held` while creates run and enough turns
    /// are running (or others wait before it).
    pub(crate) fn submit(&mut self, dest: &str, host: &str, work: Work) -> Result<(), Unstarted> {
        let waiting = self.dests.get(dest).is_some_and(|d| !d.held.is_empty());
        if work.may_wait()
            && (waiting || !self.may_start())
            && let Work::Deliver(cb) = work
        {
            let d = self.dests.entry(dest.to_string()).or_default();
            d.host = host.to_string();
            d.held.push_back(Held {
                since: Instant::now(),
                message_id: cb.message_id,
            });
            return Ok(());
        }
        self.place_counted(dest, host, work)
    }

    fn may_start(&self) -> bool {
        self.open || self.turns < TURNS_WHILE_CREATING || self.creating.count() == 0
    }

    /// `place`, counting yielding work in `turns` until `finished`.
    fn place_counted(&mut self, dest: &str, host: &str, work: Work) -> Result<(), Unstarted> {
        let counted = work.yields();
        self.turns += usize::from(counted);
        let placed = self.place(dest, host, work);
        if placed.is_err() && counted {
            self.turns -= 1;
        }
        placed
    }

    /// Starts the held deliveries that may go now, per destination in
    /// order, while creates allow it or the oldest has waited
    /// `TURN_HOLD_MAX`, and only into a free (or new) worker: a held delivery
    /// never moves to the backlog. `head` gives the callback of a message id
    /// (the scheduler's copy; `None`: nothing to deliver any more). Returns
    /// those no worker could take (the dispatcher retries them).
    pub(crate) fn release_held(
        &mut self,
        now: Instant,
        head: &dyn Fn(&str) -> Option<Callback>,
    ) -> Vec<Unstarted> {
        let mut failed = Vec::new();
        let dests: Vec<String> = self
            .dests
            .iter()
            .filter(|(_, d)| !d.held.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for dest in dests {
            loop {
                let may_start = self.may_start();
                let max = self.max_per_dest;
                let Some(d) = self.dests.get_mut(&dest) else {
                    break;
                };
                let Some(front) = d.held.front() else {
                    break;
                };
                let overdue = now.saturating_duration_since(front.since) >= TURN_HOLD_MAX;
                let room = d.workers.len() < max || d.workers.iter().any(|w| !w.busy);
                if !room || (!overdue && !may_start) {
                    break;
                }
                let Some(h) = d.held.pop_front() else {
                    break;
                };
                let host = d.host.clone();
                let Some(cb) = head(&h.message_id) else {
                    continue;
                };
                if let Err(u) = self.place_counted(&dest, &host, Work::Deliver(cb)) {
                    failed.push(u);
                }
            }
        }
        failed
    }

    /// From now on nothing waits (shutdown drains everything).
    pub(crate) fn open(&mut self) {
        self.open = true;
    }

    /// Deliveries waiting for the creates.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.dests.values().map(|d| d.held.len()).sum()
    }

    /// When the dispatcher should look at the held deliveries again.
    pub(crate) fn next_release(&self, now: Instant) -> Option<Instant> {
        self.dests
            .values()
            .any(|d| !d.held.is_empty())
            .then(|| now + HELD_POLL)
    }

    /// Hands `cb` to an idle worker of `dest`, a new one, or the backlog (a
    /// record at its front, an attempt at its back).
    /// Fails when no worker of `dest` exists and none could be started.
    fn place(&mut self, dest: &str, host: &str, cb: Work) -> Result<(), Unstarted> {
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
                    let yielded = work.yields();
                    let (message_id, finished) = match work {
                        Work::Deliver(cb) => {
                            let attempt = deliver(&cb);
                            (cb.message_id, Finished::Attempt(attempt))
                        }
                        Work::Record(cb, outcome) => {
                            hooks.settled(&cb, &outcome);
                            (cb.message_id, Finished::Recorded)
                        }
                    };
                    let done = Done {
                        dest: dest_key.clone(),
                        worker: id,
                        message_id,
                        finished,
                        yielded,
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
    pub(crate) fn finished(&mut self, dest: &str, worker: u64, yielded: bool, now: Instant) {
        if yielded {
            self.turns = self.turns.saturating_sub(1);
        }
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
            !d.workers.is_empty() || !d.backlog.is_empty() || !d.held.is_empty()
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
