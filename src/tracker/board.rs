//! What the tracker shares with other threads: `LiveJobs`, the count of
//! unfinished Jobs that intake waits on at MAX_CONCURRENT_JOBS, and the
//! `Board` of `JobView`s that GET /jobs/{id} reads. The tracker is their only
//! writer except `LiveJobs::insert`, which intake calls for a Job it created.

use std::collections::{HashMap, HashSet};
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

/// Jobs of this worker that have not finished: the MAX_CONCURRENT_JOBS count.
/// Intake adds a Job when it creates one; the tracker removes it when the Job
/// reaches its terminal status or disappears.
#[derive(Default)]
pub struct LiveJobs {
    set: Mutex<HashSet<String>>,
    changed: Condvar,
}

impl LiveJobs {
    pub fn insert(&self, key: &str) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(key.to_string());
        metrics::set(metrics::JOBS_IN_FLIGHT, &[], s.len() as f64);
    }

    pub fn remove(&self, key: &str) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if s.remove(key) {
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

    /// Waits until fewer than `cap` Jobs are live (cap 0 = unlimited) or
    /// `timeout` passes; returns the free room (usize::MAX when unlimited).
    pub fn wait_for_room(&self, cap: usize, timeout: Duration) -> usize {
        if cap == 0 {
            return usize::MAX;
        }
        let s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.len() >= cap)
            .unwrap_or_else(|e| e.into_inner());
        cap.saturating_sub(s.len())
    }
}
