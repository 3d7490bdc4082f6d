//! Delayed start, the tracker's side: per Job its `Delay` (waiting for its
//! start time, or its start asked for and not seen yet on the Job), and the
//! one `Timer` over all tracked Jobs that says which are due. Pure: the
//! tracker's tick (`TICK`, 1 s) asks `Timer::due` and performs the starts.
//!
//! Everything a new leader needs is on the Job: a suspended Job with the
//! annotation `k8s-job-worker.io/start-after` waits for that time; the start
//! (one merge PATCH) removes the annotation and either unsuspends the Job or,
//! for a queued one, moves its queue name from `k8s-job-worker.io/queue-name`
//! into Kueue's label so that Kueue admits (and unsuspends) it.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

/// How long a start asked for may stay unseen on the Job before it is asked
/// again (the PATCH failed, or the watch is slow).
pub(super) const START_RETRY: Duration = Duration::from_secs(10);

/// A Job's delayed start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Delay {
    /// Not delayed, or started already (no annotation on the Job).
    None,
    /// Suspended until `at`; then unsuspended, or handed to Kueue's `queue`.
    Waiting {
        at: SystemTime,
        queue: Option<String>,
    },
    /// Its start was asked for at `asked`; the Job does not show it yet.
    Starting {
        at: SystemTime,
        queue: Option<String>,
        asked: Instant,
    },
}

/// What a copy of the Job says of its delayed start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    /// The start-after annotation (parsed).
    pub at: Option<SystemTime>,
    /// The queue-name annotation (a delayed queued Job before its start).
    pub queue: Option<String>,
    /// `spec.suspend` is true.
    pub suspended: bool,
    /// Kueue's queue label is on the Job.
    pub queue_labelled: bool,
}

impl Delay {
    /// The delay after a Job object says `seen`, at `now`.
    pub fn after(self, seen: &Seen, now: Instant) -> Delay {
        let Some(at) = seen.at else {
            return Delay::None; // started (annotation removed), or never delayed
        };
        if !seen.suspended || seen.queue_labelled {
            // Unsuspended or queued by someone else: no longer ours to start.
            return Delay::None;
        }
        match self {
            // An older copy of the Job, from before our start: keep waiting
            // for the start to show, unless it is overdue.
            Delay::Starting { asked, .. } if now.duration_since(asked) < START_RETRY => self,
            _ => Delay::Waiting {
                at,
                queue: seen.queue.clone(),
            },
        }
    }

    /// The start time, while not started.
    pub fn at(&self) -> Option<SystemTime> {
        match self {
            Delay::None => None,
            Delay::Waiting { at, .. } | Delay::Starting { at, .. } => Some(*at),
        }
    }

    /// A start is in flight and will run the Job itself (not via Kueue): it
    /// holds an admitted slot already.
    pub fn holds_admitted_slot(&self) -> bool {
        matches!(self, Delay::Starting { queue: None, .. })
    }
}

/// The start times of all tracked delayed Jobs, in order.
#[derive(Debug, Default)]
pub(super) struct Timer {
    order: BTreeSet<(SystemTime, String)>,
    at: HashMap<String, SystemTime>,
}

impl Timer {
    /// Sets (or moves, or with `None` clears) the start time of Job `key`.
    pub fn set(&mut self, key: &str, at: Option<SystemTime>) {
        let old = self.at.get(key).copied();
        if old == at {
            return;
        }
        if let Some(old) = old {
            self.order.remove(&(old, key.to_string()));
            self.at.remove(key);
        }
        if let Some(at) = at {
            self.order.insert((at, key.to_string()));
            self.at.insert(key.to_string(), at);
        }
    }

    /// Jobs whose start time is `now` or earlier, earliest first.
    pub fn due(&self, now: SystemTime) -> Vec<String> {
        self.order
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The earliest start time.
    #[cfg(test)]
    pub fn next(&self) -> Option<SystemTime> {
        self.order.iter().next().map(|(at, _)| *at)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn the_timer_orders_moves_and_clears_starts() {
        let mut tm = Timer::default();
        assert_eq!((tm.next(), tm.due(t(100)).len()), (None, 0));
        tm.set("ns/c", Some(t(30)));
        tm.set("ns/a", Some(t(10)));
        tm.set("ns/b", Some(t(20)));
        tm.set("ns/b", Some(t(20))); // no-op
        assert_eq!(tm.len(), 3);
        assert_eq!(tm.next(), Some(t(10)));
        for (now, due) in [
            (5, vec![]),
            (10, vec!["ns/a"]),
            (25, vec!["ns/a", "ns/b"]),
            (99, vec!["ns/a", "ns/b", "ns/c"]),
        ] {
            assert_eq!(tm.due(t(now)), due, "at {now}");
        }
        tm.set("ns/a", Some(t(40))); // moved later
        assert_eq!(tm.due(t(30)), vec!["ns/b", "ns/c"]);
        tm.set("ns/b", None);
        tm.set("ns/x", None); // unknown: no-op
        assert_eq!(tm.due(t(99)), vec!["ns/c", "ns/a"]);
        assert_eq!(tm.len(), 2);
        // Same time, two Jobs: both due, by key.
        tm.set("ns/d", Some(t(30)));
        assert_eq!(tm.due(t(30)), vec!["ns/c", "ns/d"]);
    }

    #[test]
    fn a_delay_follows_what_the_job_says() {
        let now = Instant::now();
        let seen = |at: Option<u64>, queue: Option<&str>, suspended, labelled| Seen {
            at: at.map(t),
            queue: queue.map(str::to_string),
            suspended,
            queue_labelled: labelled,
        };
        let waiting = |q: Option<&str>| Delay::Waiting {
            at: t(50),
            queue: q.map(str::to_string),
        };
        let starting = |asked| Delay::Starting {
            at: t(50),
            queue: None,
            asked,
        };
        let later = now + START_RETRY;
        for (from, s, at, to) in [
            // A new delayed Job waits; a queued one remembers its queue.
            (
                Delay::None,
                seen(Some(50), None, true, false),
                now,
                waiting(None),
            ),
            (
                Delay::None,
                seen(Some(50), Some("lq"), true, false),
                now,
                waiting(Some("lq")),
            ),
            // No annotation: not delayed, or started.
            (
                waiting(None),
                seen(None, None, true, false),
                now,
                Delay::None,
            ),
            (
                starting(now),
                seen(None, None, false, false),
                now,
                Delay::None,
            ),
            // Unsuspended or labelled by someone else: not ours to start.
            (
                waiting(None),
                seen(Some(50), None, false, false),
                now,
                Delay::None,
            ),
            (
                waiting(Some("lq")),
                seen(Some(50), Some("lq"), true, true),
                now,
                Delay::None,
            ),
            // A copy from before the start keeps it starting, until overdue.
            (
                starting(now),
                seen(Some(50), None, true, false),
                now,
                starting(now),
            ),
            (
                starting(now),
                seen(Some(50), None, true, false),
                later,
                waiting(None),
            ),
        ] {
            assert_eq!(from.clone().after(&s, at), to, "{from:?} + {s:?}");
        }
        assert!(starting(now).holds_admitted_slot());
        assert!(!waiting(None).holds_admitted_slot());
        assert_eq!(waiting(None).at(), Some(t(50)));
        assert_eq!(Delay::None.at(), None);
    }
}
