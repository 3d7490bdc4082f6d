//! The pure scheduling core of the callback thread: per-message FIFOs with at
//! most one callback of a message in its turn (in flight, waiting for a retry,
//! or being recorded), the retry timer heap, exponential
//! backoff with full jitter, and the retry horizon. It does no I/O, reads no
//! clock (every event carries `now`) and draws randomness from an injected
//! source, so it is table-tested in memory; the dispatcher in `mod.rs` feeds it
//! events and carries out the actions it returns.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Callback;

/// What one delivery attempt came to, as reported by a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// 2xx: the callback is delivered.
    Delivered,
    /// Worth trying again (transport error, timeout, 408, 429, 5xx); a
    /// Retry-After the receiver gave replaces the jittered delay.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Will not get better by retrying (other 4xx, redirects, bad URL).
    Final(String),
}

/// Why a callback was settled; `Failed` and `Abandoned` both become
/// `Outcome::Abandoned` for the hooks but are counted apart in metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered,
    Skipped,
    /// A final answer on some attempt.
    Failed(String),
    /// Still failing when the retry horizon ran out.
    Abandoned(String),
}

#[derive(Debug)]
pub(crate) enum Event {
    Enqueued(Callback),
    Result {
        message_id: String,
        attempt: Attempt,
    },
    /// The settled head of `message_id` was recorded (`Hooks::settled`
    /// returned); its next callback may start.
    Recorded {
        message_id: String,
    },
    Tick,
}

#[derive(Debug)]
pub(crate) enum Action {
    /// Start one delivery attempt of this callback (shared with its queue,
    /// where it stays until settled: one copy of a callback, however many
    /// hands hold it).
    Dispatch(Arc<Callback>),
    /// An attempt failed and the callback waits `delay` for its next one.
    Retrying {
        message_id: String,
        status: crate::contract::Status,
        attempts: u32,
        delay: Duration,
        reason: String,
    },
    /// The callback is done: record it (`Hooks::settled`) and report
    /// `Event::Recorded`; until then its message's next callback waits.
    Settle {
        cb: Arc<Callback>,
        verdict: Verdict,
        attempts: u32,
    },
}

/// Backoff and horizon settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub retry_horizon: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeadState {
    InFlight,
    Waiting(Instant),
    /// Settled and handed to the recorder (already out of `items`); the
    /// message's next callback starts on `Event::Recorded`.
    Recording,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Arc<Callback>>,
    /// State of `items[0]` once it has been started; `None` while nothing is started.
    head: Option<HeadState>,
    /// Attempts made so far for `items[0]`.
    attempts: u32,
}

/// A random source returning values in [0, 1].
pub(crate) type Random = Box<dyn FnMut() -> f64 + Send>;

pub(crate) struct Scheduler {
    policy: Policy,
    random: Random,
    queues: HashMap<String, Queue>,
    timers: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
    pending: usize,
}

impl Scheduler {
    pub(crate) fn new(policy: Policy, random: Random) -> Scheduler {
        Scheduler {
            policy,
            random,
            queues: HashMap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            pending: 0,
        }
    }

    /// Callbacks not yet recorded (queued, in flight, waiting for a retry or
    /// being recorded).
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// When the earliest waiting retry is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    pub(crate) fn step(&mut self, now: Instant, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Enqueued(cb) => {
                let id = cb.message_id.clone();
                self.pending += 1;
                let q = self.queues.entry(id.clone()).or_default();
                q.items.push_back(Arc::new(cb));
                if q.head.is_none() {
                    self.start_head(&id, &mut out);
                }
            }
            Event::Result {
                message_id,
                attempt,
            } => self.on_result(now, &message_id, attempt, &mut out),
            Event::Recorded { message_id } => self.on_recorded(&message_id, &mut out),
            Event::Tick => self.on_tick(now, &mut out),
        }
        out
    }

    /// Starts the head of `id`'s queue: a callback without a URL settles at
    /// once as Skipped (in its turn, recorded like any other), one with a URL
    /// is dispatched; an empty queue is forgotten.
    fn start_head(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(q) = self.queues.get_mut(id) else {
            return;
        };
        q.head = None;
        q.attempts = 0;
        match q.items.front() {
            None => {
                self.queues.remove(id);
            }
            Some(front) if front.url.is_some() => {
                q.head = Some(HeadState::InFlight);
                out.push(Action::Dispatch(Arc::clone(front)));
            }
            Some(_) => self.settle_head(id, Verdict::Skipped, out),
        }
    }

    /// Takes the head out of `id`'s queue for recording; the queue waits in
    /// `Recording` until `Event::Recorded`.
    fn settle_head(&mut self, id: &str, verdict: Verdict, out: &mut Vec<Action>) {
        let Some(q) = self.queues.get_mut(id) else {
            return;
        };
        let attempts = q.attempts;
        if let Some(cb) = q.items.pop_front() {
            q.head = Some(HeadState::Recording);
            out.push(Action::Settle {
                cb,
                verdict,
                attempts,
            });
        } else {
            self.start_head(id, out);
        }
    }

    fn on_recorded(&mut self, id: &str, out: &mut Vec<Action>) {
        let Some(q) = self.queues.get_mut(id) else {
            return;
        };
        if q.head != Some(HeadState::Recording) {
            return; // not expecting a record: ignore rather than corrupt the order
        }
        self.pending -= 1;
        self.start_head(id, out);
    }

    fn on_result(&mut self, now: Instant, id: &str, attempt: Attempt, out: &mut Vec<Action>) {
        let Some(q) = self.queues.get_mut(id) else {
            return;
        };
        if q.head != Some(HeadState::InFlight) {
            return; // not expecting a result: ignore rather than corrupt the order
        }
        let Some((queued_at, status)) = q.items.front().map(|c| (c.queued_at, c.status)) else {
            return;
        };
        q.attempts += 1;
        let attempts = q.attempts;
        let (reason, retry_after) = match attempt {
            Attempt::Delivered => return self.settle_head(id, Verdict::Delivered, out),
            Attempt::Final(r) => return self.settle_head(id, Verdict::Failed(r), out),
            Attempt::Retry {
                reason,
                retry_after,
            } => (reason, retry_after),
        };
        let Some(due) = self.next_attempt(now, queued_at, attempts, retry_after) else {
            let msg = format!(
                "gave up after {attempts} attempt(s) within the retry horizon; last error: {reason}"
            );
            return self.settle_head(id, Verdict::Abandoned(msg), out);
        };
        if let Some(q) = self.queues.get_mut(id) {
            q.head = Some(HeadState::Waiting(due));
        }
        self.seq += 1;
        self.timers.push(Reverse((due, self.seq, id.to_string())));
        out.push(Action::Retrying {
            message_id: id.to_string(),
            status,
            attempts,
            delay: due.saturating_duration_since(now),
            reason,
        });
    }

    /// When to try again, or `None` when the retry horizon does not allow it.
    /// A Retry-After (capped at `backoff_max`) that lands past the horizon gives
    /// up; a jittered delay is cut short so the last attempt falls on the horizon.
    fn next_attempt(
        &mut self,
        now: Instant,
        queued_at: Instant,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Option<Instant> {
        let p = self.policy;
        let deadline = queued_at.checked_add(p.retry_horizon);
        if deadline.is_some_and(|d| now >= d) {
            return None;
        }
        match retry_after {
            Some(ra) => {
                let due = now.checked_add(ra.min(p.backoff_max))?;
                match deadline {
                    Some(d) if due > d => None,
                    _ => Some(due),
                }
            }
            None => {
                let due = now.checked_add(self.backoff(attempts))?;
                Some(deadline.map_or(due, |d| due.min(d)))
            }
        }
    }

    /// Full jitter: uniform in [0, min(max, initial * 2^(attempts-1))].
    fn backoff(&mut self, attempts: u32) -> Duration {
        let p = self.policy;
        let exp = attempts.saturating_sub(1);
        let cap = crate::backoff::capped_exponential(p.backoff_initial, p.backoff_max, exp);
        crate::backoff::full_jitter(cap, (self.random)())
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((due, _, id))) = self.timers.pop() else {
                break;
            };
            let Some(q) = self.queues.get_mut(&id) else {
                continue;
            };
            if q.head != Some(HeadState::Waiting(due)) {
                continue; // stale timer
            }
            if let Some(front) = q.items.front() {
                q.head = Some(HeadState::InFlight);
                out.push(Action::Dispatch(Arc::clone(front)));
            }
        }
    }
}
