//! What the tracker shares with other threads: `LiveJobs`, the unfinished
//! Jobs that intake waits on at MAX_CONCURRENT_JOBS (admitted) and
//! MAX_QUEUED_JOBS (suspended, waiting in a Kueue queue), and the `Board` of
//! `JobView`s that GET /jobs/{id} reads. The tracker is their only writer
//! except `LiveJobs::insert`, which intake calls for a Job it created.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::contract::Status;
use crate::metrics;

/// What GET /jobs/{id} shows for a message.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub namespace: String,
    pub job_name: String,
    /// Last status queued for the sender.
    pub status: Option<Status>,
    pub status_name: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: Option<String>,
    /// The Kueue LocalQueue of a queued Job.
    pub queue_name: Option<String>,
    /// Of a queued Job: `queued` (suspended, waiting for Kueue) or `admitted`.
    pub admission: Option<&'static str>,
}

/// Shared read-only view of message states for the HTTP /jobs endpoint.
pub type Board = Arc<Mutex<HashMap<String, JobView>>>;

/// Puts a message's view on the board.
pub(super) fn show(board: &Board, id: String, view: JobView) {
    let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
    if b.len() > 100_000 {
        b.clear(); // bounded memory: the board is a convenience view
    }
    b.insert(id, view);
}

/// Which bound an unfinished Job counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Suspended (waiting for admission): counts against MAX_QUEUED_JOBS.
    Queued,
    /// Running or about to: counts against MAX_CONCURRENT_JOBS.
    Admitted,
}

impl Slot {
    /// The slot of a Job object: `Queued` while `spec.suspend` is true.
    pub fn of_job(job: &serde_json::Value) -> Slot {
        if super::observe::suspended(job) {
            Slot::Queued
        } else {
            Slot::Admitted
        }
    }
}

/// Jobs of this worker that have not finished, each in its `Slot`. Intake adds
/// a Job when it creates one; the tracker moves it between slots as Kueue
/// admits, evicts and re-admits it, and removes it when the Job reaches its
/// terminal status or disappears.
#[derive(Default)]
pub struct LiveJobs {
    set: Mutex<HashMap<String, Slot>>,
    changed: Condvar,
    /// MAX_QUEUED_JOBS (0 = unlimited).
    max_queued: usize,
}

impl LiveJobs {
    pub fn new(max_queued: usize) -> LiveJobs {
        LiveJobs {
            max_queued,
            ..LiveJobs::default()
        }
    }

    /// Adds a Job, or moves it to `slot`.
    pub fn insert(&self, key: &str, slot: Slot) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.insert(key.to_string(), slot);
        metrics::set(metrics::JOBS_IN_FLIGHT, &[], s.len() as f64);
        if before.is_some_and(|b| b != slot) {
            self.changed.notify_all();
        }
    }

    pub fn remove(&self, key: &str) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if s.remove(key).is_some() {
            metrics::set(metrics::JOBS_IN_FLIGHT, &[], s.len() as f64);
            self.changed.notify_all();
        }
    }

    pub fn len(&self) -> usize {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (admitted, queued) Jobs.
    pub fn counts(&self) -> (usize, usize) {
        count(&self.set.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until fewer than `cap` admitted Jobs are live (cap 0 = unlimited)
    /// and fewer than MAX_QUEUED_JOBS queued ones, or `timeout` passes; returns
    /// the free room, the smaller of the two (usize::MAX when both unlimited).
    /// Intake cannot tell whether a message will be queued before it receives
    /// it, so either bound stops it receiving.
    pub fn wait_for_room(&self, cap: usize, timeout: Duration) -> usize {
        let max_queued = self.max_queued;
        let room = |s: &HashMap<String, Slot>| {
            let (admitted, queued) = count(s);
            let free = |cap: usize, n: usize| {
                if cap == 0 {
                    usize::MAX
                } else {
                    cap.saturating_sub(n)
                }
            };
            free(cap, admitted).min(free(max_queued, queued))
        };
        if cap == 0 && max_queued == 0 {
            return usize::MAX;
        }
        let s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| room(s) == 0)
            .unwrap_or_else(|e| e.into_inner());
        room(&s)
    }
}

fn count(s: &HashMap<String, Slot>) -> (usize, usize) {
    let queued = s.values().filter(|v| **v == Slot::Queued).count();
    (s.len() - queued, queued)
}
