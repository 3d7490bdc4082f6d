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
/// Intake reserves a slot before it hands a create to a creator thread; the
/// creator turns the slot into its Job (`commit`) or gives it back (`release`);
/// the tracker removes a Job when it reaches its terminal status or
/// disappears. Reserved slots count against the cap, so concurrent creates
/// can never take the count past it.
#[derive(Default)]
pub struct LiveJobs {
    inner: Mutex<Inner>,
    changed: Condvar,
}

#[derive(Default)]
struct Inner {
    set: HashSet<String>,
    reserved: usize,
}

impl Inner {
    fn taken(&self) -> usize {
        self.set.len() + self.reserved
    }
}

impl LiveJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, key: &str) {
        let mut s = self.lock();
        s.set.insert(key.to_string());
        metrics::set(metrics::JOBS_IN_FLIGHT, &[], s.set.len() as f64);
    }

    pub fn remove(&self, key: &str) {
        let mut s = self.lock();
        if s.set.remove(key) {
            metrics::set(metrics::JOBS_IN_FLIGHT, &[], s.set.len() as f64);
            self.changed.notify_all();
        }
    }

    /// Takes a slot for a Job about to be created, unless `cap` (0 = unlimited)
    /// is reached counting live Jobs and slots already taken.
    pub fn try_reserve(&self, cap: usize) -> bool {
        let mut s = self.lock();
        if cap != 0 && s.taken() >= cap {
            return false;
        }
        s.reserved += 1;
        true
    }

    /// The reserved slot's Job exists: it now counts as `key`.
    pub fn commit(&self, key: &str) {
        let mut s = self.lock();
        s.reserved = s.reserved.saturating_sub(1);
        let grew = s.set.insert(key.to_string());
        metrics::set(metrics::JOBS_IN_FLIGHT, &[], s.set.len() as f64);
        if !grew {
            self.changed.notify_all(); // already live: the slot is free again
        }
    }

    /// The reserved slot's create failed or was not attempted.
    pub fn release(&self) {
        let mut s = self.lock();
        s.reserved = s.reserved.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Live Jobs (reservations not included).
    pub fn len(&self) -> usize {
        self.lock().set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots reserved for creates in progress.
    pub fn reserved(&self) -> usize {
        self.lock().reserved
    }

    /// Waits until fewer than `cap` slots are taken (live Jobs plus
    /// reservations; cap 0 = unlimited) or `timeout` passes; returns the free
    /// room (usize::MAX when unlimited).
    pub fn wait_for_room(&self, cap: usize, timeout: Duration) -> usize {
        if cap == 0 {
            return usize::MAX;
        }
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.taken() >= cap)
            .unwrap_or_else(|e| e.into_inner());
        cap.saturating_sub(s.taken())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_count_against_the_cap_until_committed_or_released() {
        let l = LiveJobs::default();
        assert!(l.try_reserve(2));
        assert!(l.try_reserve(2));
        assert!(!l.try_reserve(2), "two slots taken: the cap is reached");
        assert_eq!(l.wait_for_room(2, Duration::ZERO), 0);
        l.release();
        assert_eq!(l.wait_for_room(2, Duration::ZERO), 1);
        l.commit("ns/a");
        assert_eq!((l.len(), l.reserved()), (1, 0));
        assert_eq!(l.wait_for_room(2, Duration::ZERO), 1);
        assert!(l.try_reserve(2));
        assert!(!l.try_reserve(2));
        // Adopting a Job the tracker already counts frees the slot.
        l.commit("ns/a");
        assert_eq!((l.len(), l.reserved()), (1, 0));
        l.remove("ns/a");
        assert_eq!(l.wait_for_room(2, Duration::ZERO), 2);
        assert!(l.try_reserve(0), "cap 0 is unlimited");
    }

    #[test]
    fn concurrent_reservations_never_pass_the_cap() {
        let l = Arc::new(LiveJobs::default());
        let cap = 7;
        let won: usize = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..50).filter(|_| l.try_reserve(cap)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(won, cap);
        assert_eq!(l.reserved(), cap);
    }
}
