//! What the tracker shares with other threads: `LiveJobs`, the unfinished
//! Jobs that intake waits on at MAX_CONCURRENT_JOBS (admitted) and
//! MAX_QUEUED_JOBS (suspended, waiting in a Kueue queue), with the slots
//! intake reserved for creates in flight, and the `Board` of `JobView`s that
//! GET /jobs/{id} reads. The tracker is their only writer except the
//! reservations (intake) and their commits (the creator threads).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

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
    /// Its name; a rejected message's names its error code too.
    pub status_name: Option<Cow<'static, str>>,
    pub created_at: Option<Stamp>,
    pub started_at: Option<Stamp>,
    pub finished_at: Option<Stamp>,
    pub updated_at: Option<Stamp>,
    /// The Kueue LocalQueue of a queued Job.
    pub queue_name: Option<String>,
    /// Of a queued Job: `queued` (suspended, waiting for Kueue) or `admitted`.
    pub admission: Option<&'static str>,
}

/// A time on the board, shown as RFC 3339 in seconds (`2026-12-02T05:11:44Z`).
/// Kept as a time, not its text: 10,000 views in flight hold three or four each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(pub SystemTime);

impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::clock::format_secs(self.0))
    }
}

/// Shared read-only view of message states for the HTTP /jobs endpoint.
/// Each view is shared with the tracker's record of the Job (one copy).
pub type Board = Arc<Mutex<HashMap<String, Arc<JobView>>>>;

/// Puts a message's view on the board.
pub(super) fn show(board: &Board, id: String, view: Arc<JobView>) {
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

    fn index(self) -> usize {
        match self {
            Slot::Admitted => 0,
            Slot::Queued => 1,
        }
    }
}

/// Jobs of this worker that have not finished, each in its `Slot`, and the
/// slots reserved for creates in flight. Intake reserves a slot before it
/// hands a create to a creator thread; the creator turns it into its Job
/// (`commit`) or gives it back (`release`); the tracker moves a Job between
/// slots as Kueue admits, evicts and re-admits it, and removes it when the Job
/// reaches its terminal status or disappears. Reserved slots count against
/// their bound, so concurrent creates can never take a count past it.
///
/// It also remembers the Jobs that ended under this leader (`Ended`), so a
/// redelivered message whose Job finished or was deleted is acknowledged
/// instead of making its Job again (`known`).
#[derive(Default)]
pub struct LiveJobs {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// MAX_QUEUED_JOBS (0 = unlimited).
    max_queued: usize,
    /// The services named in SERVICE_MAX_CONCURRENT (their own metric label).
    named: Vec<String>,
    /// Job lists (one per watch) before the per-service counts are complete.
    lists_expected: usize,
}

#[derive(Default)]
struct Inner {
    set: HashMap<String, Slot>,
    /// Reservations per slot: [admitted, queued].
    reserved: [usize; 2],
    /// Delayed Jobs past their start time waiting for an admitted slot: they
    /// count as admitted for intake, so a freed slot goes to them first.
    due: usize,
    /// The scopes (namespaces, "" cluster-wide) whose Job list the tracker
    /// has taken in: a second list of one namespace says nothing of another.
    lists: std::collections::HashSet<String>,
    /// Per message `service` (the Job's `app` label): see `Services`.
    services: Services,
    ended: Ended,
}

/// What the Job `key` of a received message is to this leader
/// (`LiveJobs::known`). For `Live` and `Ended` (a redelivery) its slots were
/// reserved past their bounds: the Job is adopted if it still exists (and
/// already counted) or the message is acknowledged, never made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Not live, not seen ending: reserve its slots under their bounds.
    New,
    /// Live: its message was not acknowledged yet.
    Live,
    /// Ended under this leader: its terminal status is out.
    Ended,
}

/// The keys of Jobs that ended under this leader, at most `2 × ENDED_KEPT`
/// and at least the last `ENDED_KEPT`: two generations, the older dropped
/// when the newer fills.
#[derive(Default)]
struct Ended {
    newer: std::collections::HashSet<Box<str>>,
    older: std::collections::HashSet<Box<str>>,
}

/// How many ended Jobs `Ended` keeps at least (≈ 60 bytes each).
pub const ENDED_KEPT: usize = 5_000;

impl Ended {
    fn add(&mut self, key: &str) {
        if self.contains(key) {
            return;
        }
        if self.newer.len() >= ENDED_KEPT {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(key.into());
    }

    fn contains(&self, key: &str) -> bool {
        self.newer.contains(key) || self.older.contains(key)
    }
}

/// Live Jobs and reservations per service, for SERVICE_MAX_CONCURRENT: the
/// service of each live Job (from the creator, or the `app` label of a Job a
/// new leader lists), counts kept as they change.
#[derive(Default)]
struct Services {
    of: HashMap<String, String>,
    live: HashMap<String, usize>,
    reserved: HashMap<String, usize>,
}

impl Services {
    fn taken(&self, service: &str) -> usize {
        self.live.get(service).copied().unwrap_or(0)
            + self.reserved.get(service).copied().unwrap_or(0)
    }

    fn bump(map: &mut HashMap<String, usize>, service: &str, up: bool) {
        if up {
            *map.entry(service.to_string()).or_insert(0) += 1;
        } else if let Some(n) = map.get_mut(service) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(service);
            }
        }
    }

    /// Forgets the Job `key`'s service; returns it.
    fn untag(&mut self, key: &str) -> Option<String> {
        let s = self.of.remove(key)?;
        Self::bump(&mut self.live, &s, false);
        Some(s)
    }

    /// Live Jobs whose service has the metric label `label`.
    fn labelled(&self, named: &[String], label: &str) -> usize {
        self.live
            .iter()
            .filter(|(s, _)| crate::caps::label(named, s) == label)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Inner {
    /// (admitted, queued) Jobs.
    fn counts(&self) -> (usize, usize) {
        let queued = self.set.values().filter(|v| **v == Slot::Queued).count();
        (self.set.len() - queued, queued)
    }

    /// (admitted, queued) Jobs plus reservations (and the due delayed Jobs'
    /// claims on admitted slots).
    fn taken(&self) -> (usize, usize) {
        let (a, q) = self.counts();
        (a + self.reserved[0] + self.due, q + self.reserved[1])
    }
}

/// Free room under `cap` (0 = unlimited: usize::MAX).
fn free(cap: usize, taken: usize) -> usize {
    if cap == 0 {
        usize::MAX
    } else {
        cap.saturating_sub(taken)
    }
}

impl LiveJobs {
    pub fn new(max_queued: usize) -> LiveJobs {
        LiveJobs {
            max_queued,
            ..LiveJobs::default()
        }
    }

    /// The services named in SERVICE_MAX_CONCURRENT get their own
    /// `jobs_in_flight{service}` label; all others count as `other`. (The
    /// gauge has only these series: their sum is every live Job.)
    pub fn with_service_labels(mut self, named: Vec<String>) -> LiveJobs {
        self.named = named;
        self
    }

    /// The per-service counts are complete only once the tracker took in
    /// `n` Job lists (one per watch): a new leader's intake must not count a
    /// service from Jobs it has not listed yet.
    pub fn expecting_lists(mut self, n: usize) -> LiveJobs {
        self.lists_expected = n;
        self
    }

    /// The tracker took in a complete Job list of `scope` (a namespace, or ""
    /// for a cluster-wide watch).
    pub fn listed(&self, scope: &str) {
        let mut s = self.lock();
        s.lists.insert(scope.to_string());
        self.changed.notify_all();
    }

    /// Waits up to `timeout` until every expected Job list was taken in.
    pub fn wait_listed(&self, timeout: Duration) -> bool {
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.lists.len() < self.lists_expected)
            .unwrap_or_else(|e| e.into_inner());
        s.lists.len() >= self.lists_expected
    }

    fn gauge(&self, s: &Inner, service: &str) {
        let label = crate::caps::label(&self.named, service);
        let n = s.services.labelled(&self.named, label);
        metrics::set(metrics::JOBS_IN_FLIGHT, &[("service", label)], n as f64);
    }

    /// Records the service of the live Job `key` (ignored once it is gone).
    pub fn tag(&self, key: &str, service: &str) {
        let mut s = self.lock();
        self.tag_locked(&mut s, key, service);
    }

    fn tag_locked(&self, s: &mut Inner, key: &str, service: &str) {
        if !s.set.contains_key(key) || s.services.of.get(key).is_some_and(|v| v == service) {
            return;
        }
        if let Some(old) = s.services.untag(key) {
            self.gauge(s, &old);
        }
        s.services.of.insert(key.to_string(), service.to_string());
        Services::bump(&mut s.services.live, service, true);
        self.gauge(s, service);
    }

    /// Takes a slot of `service` for a Job about to be created, unless its
    /// live Jobs plus reservations reached `cap` (None: no cap).
    pub fn try_reserve_service(&self, service: &str, cap: Option<usize>) -> bool {
        let mut s = self.lock();
        if cap.is_some_and(|cap| s.services.taken(service) >= cap) {
            return false;
        }
        Services::bump(&mut s.services.reserved, service, true);
        true
    }

    /// The service slot's create failed or was not attempted.
    pub fn release_service(&self, service: &str) {
        let mut s = self.lock();
        Services::bump(&mut s.services.reserved, service, false);
        self.changed.notify_all();
    }

    /// The service slot has its Job `key` (after `commit`).
    pub fn commit_service(&self, key: &str, service: &str) {
        let mut s = self.lock();
        Services::bump(&mut s.services.reserved, service, false);
        self.tag_locked(&mut s, key, service);
    }

    /// Live Jobs of `service` plus its reservations.
    pub fn service_taken(&self, service: &str) -> usize {
        self.lock().services.taken(service)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a Job, or moves it to `slot`.
    pub fn insert(&self, key: &str, slot: Slot) {
        let mut s = self.lock();
        let before = s.set.insert(key.to_string(), slot);
        if before.is_some_and(|b| b != slot) {
            self.changed.notify_all();
        }
    }

    /// The Job `key` ended (its terminal status is out, or it disappeared):
    /// it no longer counts, and a redelivery of its message makes nothing.
    pub fn end(&self, key: &str) {
        let mut s = self.lock();
        s.ended.add(key);
        if s.set.remove(key).is_some() {
            if let Some(service) = s.services.untag(key) {
                self.gauge(&s, &service);
            }
            self.changed.notify_all();
        }
    }

    /// What the Job `key` of a received message is to this leader. Unless
    /// `New`, its `slot` and a slot of `service` are reserved regardless of
    /// their bounds, in the same step (see `Known`).
    pub fn known(&self, key: &str, service: &str, slot: Slot) -> Known {
        let mut s = self.lock();
        let known = if s.set.contains_key(key) {
            Known::Live
        } else if s.ended.contains(key) {
            Known::Ended
        } else {
            return Known::New;
        };
        s.reserved[slot.index()] += 1;
        Services::bump(&mut s.services.reserved, service, true);
        known
    }

    /// Takes a `slot` for a Job about to be created, unless its bound is
    /// reached counting live Jobs and slots already taken: `cap`
    /// (MAX_CONCURRENT_JOBS, 0 = unlimited) for an admitted one,
    /// MAX_QUEUED_JOBS for a queued one.
    pub fn try_reserve(&self, cap: usize, slot: Slot) -> bool {
        let mut s = self.lock();
        let (a, q) = s.taken();
        let room = match slot {
            Slot::Admitted => free(cap, a),
            Slot::Queued => free(self.max_queued, q),
        };
        if room == 0 {
            return false;
        }
        s.reserved[slot.index()] += 1;
        true
    }

    /// The slot reserved as `reserved` has its Job `key`, now in `actual`
    /// (an adopted Job may already be admitted).
    pub fn commit(&self, key: &str, reserved: Slot, actual: Slot) {
        let mut s = self.lock();
        let r = &mut s.reserved[reserved.index()];
        *r = r.saturating_sub(1);
        let before = s.set.insert(key.to_string(), actual);
        if before.is_some() || reserved != actual {
            self.changed.notify_all(); // already live, or another bound: room again
        }
    }

    /// Moves the delayed Job `key` into an admitted slot if one is free under
    /// `cap` (0 = unlimited), counting live Jobs and reservations but not the
    /// due Jobs' claims (this is one of them); true if it did.
    pub fn try_start(&self, key: &str, cap: usize) -> bool {
        let mut s = self.lock();
        let (a, _) = s.counts();
        if free(cap, a + s.reserved[0]) == 0 {
            return false;
        }
        s.set.insert(key.to_string(), Slot::Admitted);
        s.due = s.due.saturating_sub(1);
        self.changed.notify_all(); // its queued slot is free
        true
    }

    /// `n` due delayed Jobs wait for an admitted slot.
    pub fn set_due(&self, n: usize) {
        let mut s = self.lock();
        if s.due != n {
            s.due = n;
            self.changed.notify_all();
        }
    }

    /// The slot's create failed or was not attempted.
    pub fn release(&self, slot: Slot) {
        let mut s = self.lock();
        let r = &mut s.reserved[slot.index()];
        *r = r.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Live Jobs (reservations not included).
    pub fn len(&self) -> usize {
        self.lock().set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (admitted, queued) Jobs.
    pub fn counts(&self) -> (usize, usize) {
        self.lock().counts()
    }

    /// Slots reserved for creates in progress.
    pub fn reserved(&self) -> usize {
        let s = self.lock();
        s.reserved[0] + s.reserved[1]
    }

    /// Waits until fewer than `cap` admitted Jobs (cap 0 = unlimited) and
    /// fewer than MAX_QUEUED_JOBS queued ones are live or reserved, or
    /// `timeout` passes; returns the free room, the smaller of the two
    /// (usize::MAX when both unlimited). Intake cannot tell whether a message
    /// will be queued before it receives it, so either bound stops it receiving.
    ///
    /// Until the tracker has taken in every Job list, a capped worker has no
    /// room at all: a new leader counts only the Jobs it has listed, and would
    /// otherwise start past MAX_CONCURRENT_JOBS.
    pub fn wait_for_room(&self, cap: usize, timeout: Duration) -> usize {
        let max_queued = self.max_queued;
        let expected = self.lists_expected;
        let room = |s: &Inner| {
            if s.lists.len() < expected {
                return 0;
            }
            let (a, q) = s.taken();
            free(cap, a).min(free(max_queued, q))
        };
        if cap == 0 && max_queued == 0 {
            return usize::MAX;
        }
        let s = self.lock();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| room(s) == 0)
            .unwrap_or_else(|e| e.into_inner());
        room(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_jobs_redelivery_takes_its_slots_past_every_bound() {
        let l = LiveJobs::new(0);
        assert!(l.try_reserve(1, Slot::Admitted));
        assert!(l.try_reserve_service("slow", Some(1)));
        l.commit("ns/a", Slot::Admitted, Slot::Admitted);
        l.commit_service("ns/a", "slow");
        // At both caps: a new message of the service is refused ...
        assert!(!l.try_reserve_service("slow", Some(1)));
        assert!(!l.try_reserve(1, Slot::Admitted));
        assert_eq!(l.known("ns/b", "slow", Slot::Admitted), Known::New);
        assert_eq!(l.reserved(), 0, "New reserves nothing");
        // ... but the redelivery of ns/a's own message is its Job.
        assert_eq!(l.known("ns/a", "slow", Slot::Admitted), Known::Live);
        assert_eq!((l.reserved(), l.service_taken("slow")), (1, 2));
        // The adopt commits both: one Job, nothing reserved, the caps hold.
        l.commit("ns/a", Slot::Admitted, Slot::Admitted);
        l.commit_service("ns/a", "slow");
        assert_eq!((l.len(), l.reserved(), l.service_taken("slow")), (1, 0, 1));
        assert!(!l.try_reserve(1, Slot::Admitted));
        // Or it releases both (the adopt must wait).
        assert_eq!(l.known("ns/a", "slow", Slot::Admitted), Known::Live);
        l.release(Slot::Admitted);
        l.release_service("slow");
        assert_eq!((l.len(), l.reserved(), l.service_taken("slow")), (1, 0, 1));
    }

    #[test]
    fn a_job_that_ended_is_known_as_ended_and_frees_its_slots() {
        let l = LiveJobs::new(0);
        assert!(l.try_reserve(1, Slot::Admitted));
        assert!(l.try_reserve_service("slow", Some(1)));
        l.commit("ns/a", Slot::Admitted, Slot::Admitted);
        l.commit_service("ns/a", "slow");
        l.end("ns/a");
        assert_eq!((l.len(), l.service_taken("slow")), (0, 0));
        // Its redelivery reserves past the bounds, for an adopt-only create.
        assert!(l.try_reserve(1, Slot::Admitted));
        assert!(l.try_reserve_service("slow", Some(1)));
        assert_eq!(l.known("ns/a", "slow", Slot::Admitted), Known::Ended);
        assert_eq!((l.reserved(), l.service_taken("slow")), (2, 2));
        // Gone: the adopt releases them.
        l.release(Slot::Admitted);
        l.release_service("slow");
        assert_eq!((l.reserved(), l.service_taken("slow")), (1, 1));
        // A Job this leader never counted (listed already finished) too.
        l.end("ns/listed-finished");
        assert_eq!(
            l.known("ns/listed-finished", "x", Slot::Queued),
            Known::Ended
        );
        // Made again and live (another leader's create): live wins.
        l.insert("ns/a", Slot::Admitted);
        assert_eq!(l.known("ns/a", "slow", Slot::Admitted), Known::Live);
    }

    #[test]
    fn the_ended_memory_keeps_the_last_ones_within_its_bound() {
        let mut e = Ended::default();
        for i in 0..3 * ENDED_KEPT {
            e.add(&format!("ns/j{i}"));
            assert!(e.newer.len() + e.older.len() <= 2 * ENDED_KEPT);
        }
        // The newest ENDED_KEPT are always there; the oldest are gone.
        assert!((2 * ENDED_KEPT..3 * ENDED_KEPT).all(|i| e.contains(&format!("ns/j{i}"))));
        assert!(!e.contains("ns/j0"));
        // Adding one it holds changes nothing.
        let before = (e.newer.len(), e.older.len());
        e.add(&format!("ns/j{}", 2 * ENDED_KEPT));
        assert_eq!((e.newer.len(), e.older.len()), before);
    }

    #[test]
    fn a_capped_new_leader_has_no_room_until_every_list_is_in() {
        let l = LiveJobs::new(0).expecting_lists(2);
        assert_eq!(l.wait_for_room(5, Duration::ZERO), 0);
        l.listed("a");
        assert_eq!(l.wait_for_room(5, Duration::ZERO), 0);
        l.listed("b");
        assert_eq!(l.wait_for_room(5, Duration::ZERO), 5);
        // Uncapped, nothing to count: room at once.
        let l = LiveJobs::new(0).expecting_lists(1);
        assert_eq!(l.wait_for_room(0, Duration::ZERO), usize::MAX);
    }

    #[test]
    fn reservations_count_against_their_bound_until_committed_or_released() {
        let l = LiveJobs::new(1);
        assert!(l.try_reserve(2, Slot::Admitted));
        assert!(l.try_reserve(2, Slot::Admitted));
        assert!(
            !l.try_reserve(2, Slot::Admitted),
            "two slots taken: the cap is reached"
        );
        assert_eq!(l.wait_for_room(2, Duration::ZERO), 0);
        l.release(Slot::Admitted);
        assert_eq!(l.wait_for_room(2, Duration::ZERO), 1);
        l.commit("ns/a", Slot::Admitted, Slot::Admitted);
        assert_eq!((l.len(), l.reserved()), (1, 0));
        assert_eq!(l.wait_for_room(2, Duration::ZERO), 1);
        assert!(l.try_reserve(2, Slot::Admitted));
        assert!(!l.try_reserve(2, Slot::Admitted));
        // Adopting a Job the tracker already counts frees the slot.
        l.commit("ns/a", Slot::Admitted, Slot::Admitted);
        assert_eq!((l.len(), l.reserved()), (1, 0));
        // A queued slot counts against MAX_QUEUED_JOBS (1), not the cap.
        assert!(l.try_reserve(2, Slot::Queued));
        assert!(!l.try_reserve(2, Slot::Queued));
        assert_eq!(
            l.wait_for_room(2, Duration::ZERO),
            0,
            "the queued bound is reached"
        );
        l.commit("ns/q", Slot::Queued, Slot::Queued);
        assert_eq!(l.counts(), (1, 1));
        l.end("ns/q");
        l.end("ns/a");
        assert_eq!(l.wait_for_room(2, Duration::ZERO), 1);
        assert!(
            LiveJobs::default().try_reserve(0, Slot::Queued),
            "0 is unlimited"
        );
        assert!(LiveJobs::default().try_reserve(0, Slot::Admitted));
    }

    #[test]
    fn service_slots_count_live_jobs_and_reservations_per_service() {
        let l = LiveJobs::new(0).with_service_labels(vec!["ocr".into()]);
        // (action, service, key, expected ocr taken, expected reserve result)
        assert!(l.try_reserve_service("ocr", Some(2)));
        assert!(l.try_reserve_service("ocr", Some(2)));
        assert!(!l.try_reserve_service("ocr", Some(2)), "at its cap");
        assert!(l.try_reserve_service("pdf", Some(2)), "other services flow");
        assert!(l.try_reserve_service("ocr", None), "no cap: always");
        l.release_service("ocr");
        assert_eq!(l.service_taken("ocr"), 2);
        // A create commits: the reservation becomes the live Job.
        l.commit("ns/a", Slot::Admitted, Slot::Admitted);
        l.commit_service("ns/a", "ocr");
        assert_eq!(l.service_taken("ocr"), 2);
        assert!(!l.try_reserve_service("ocr", Some(2)));
        // The tracker tagging the same Job again changes nothing.
        l.tag("ns/a", "ocr");
        assert_eq!(l.service_taken("ocr"), 2);
        // A failed create gives its slot back.
        l.release_service("ocr");
        assert_eq!(l.service_taken("ocr"), 1);
        // A Job the tracker lists after a failover counts by its app label.
        l.insert("ns/b", Slot::Admitted);
        l.tag("ns/b", "ocr");
        assert_eq!(l.service_taken("ocr"), 2);
        let gauge = |s: &str| metrics::value("jobs_in_flight", &[("service", s)]);
        assert_eq!(gauge("ocr"), 2.0);
        l.insert("ns/c", Slot::Admitted);
        l.tag("ns/c", "pdf");
        assert!(gauge("other") >= 1.0);
        // A Job that finished frees its service's slot.
        l.end("ns/a");
        assert_eq!(l.service_taken("ocr"), 1);
        assert!(l.try_reserve_service("ocr", Some(2)));
        // A tag for a Job already gone is ignored.
        l.tag("ns/gone", "ocr");
        assert_eq!(l.service_taken("ocr"), 2);
    }

    #[test]
    fn counts_are_complete_once_every_job_list_is_in() {
        assert!(LiveJobs::default().wait_listed(Duration::ZERO));
        let l = LiveJobs::default().expecting_lists(2);
        assert!(!l.wait_listed(Duration::ZERO));
        l.listed("a");
        assert!(!l.wait_listed(Duration::from_millis(10)));
        // A relist of the same namespace does not complete the other's.
        l.listed("a");
        assert!(!l.wait_listed(Duration::ZERO));
        l.listed("b");
        assert!(l.wait_listed(Duration::ZERO));
    }

    #[test]
    fn concurrent_reservations_never_pass_the_cap() {
        let l = Arc::new(LiveJobs::default());
        let cap = 7;
        let won: usize = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| l.try_reserve(cap, Slot::Admitted))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(won, cap);
        assert_eq!(l.reserved(), cap);
    }
}
