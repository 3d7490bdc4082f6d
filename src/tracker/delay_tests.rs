//! Table tests of delayed start in the tracker: the timer's starts, the
//! MAX_CONCURRENT_JOBS slot a start needs, Kueue's hand-off, a new leader
//! resuming from the annotation, and the pod start timeout counting from the
//! start.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::tests::statuses;
use super::*;
use crate::contract::{ANN_MESSAGE_ID, ANN_QUEUE_NAME, ANN_START_AFTER, LABEL_KUEUE_QUEUE_NAME};

fn ts(s: &str) -> SystemTime {
    crate::clock::parse_rfc3339(s).unwrap_or(SystemTime::UNIX_EPOCH)
}

const CREATED: &str = "2026-11-24T07:00:00Z";
const START: &str = "2026-11-24T07:00:08Z";

/// A delayed Job `name` (start START) as the API server shows it; `resumed`:
/// started at that time (annotation gone, unsuspended).
fn delayed(name: &str, queue: Option<&str>, resumed: Option<&str>) -> Value {
    let mut ann = json!({ANN_MESSAGE_ID: format!("id-{name}")});
    let mut labels = json!({});
    let mut conds = json!([{"type": "Suspended", "status": "True",
        "lastTransitionTime": CREATED}]);
    match resumed {
        None => {
            ann[ANN_START_AFTER] = json!(START);
            if let Some(q) = queue {
                ann[ANN_QUEUE_NAME] = json!(q);
            }
        }
        Some(at) => {
            conds = json!([{"type": "Suspended", "status": "False", "lastTransitionTime": at}]);
            if let Some(q) = queue {
                labels[LABEL_KUEUE_QUEUE_NAME] = json!(q);
            }
        }
    }
    json!({"metadata": {"namespace": "ns", "name": name, "uid": format!("uid-{name}"),
        "creationTimestamp": CREATED, "annotations": ann, "labels": labels},
        "spec": {"suspend": resumed.is_none() || queue.is_some()},
        "status": {"conditions": conds}})
}

fn tracker(live: &Arc<LiveJobs>, cap: usize) -> Tracker {
    Tracker::new(live.clone(), Board::default(), Duration::from_secs(60)).with_max_concurrent(cap)
}

fn starts(actions: &[Action]) -> Vec<(String, Option<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartJob { name, queue, .. } => Some((name.clone(), queue.clone())),
            _ => None,
        })
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_delayed_job_is_announced_then_started_once_at_its_time() {
    let live = Arc::new(LiveJobs::default());
    let mut t = tracker(&live, 0);
    let now = Instant::now();
    let t0 = ts(CREATED);
    let a = t.handle(
        TrackerMsg::Created {
            job: delayed("a", None, None),
            received_at: now,
        },
        now,
        t0,
    );
    assert_eq!(statuses(&a), vec![0]);
    assert!(
        matches!(&a[0], Action::Callback { detail, .. }
            if *detail == json!({"jobId": "uid-a", "jobName": "a", "startAfter": START})),
        "{a:?}"
    );
    assert_eq!(live.counts(), (0, 1), "waiting: a queued slot");
    // Before its time nothing starts, and a waiting Job never times out
    // (POD_START_TIMEOUT is 60 s here).
    for s in [1, 7] {
        assert!(t.tick(now + secs(s), t0 + secs(s)).is_empty());
    }
    let a = t.tick(now + secs(8), ts(START));
    assert_eq!(starts(&a), vec![("a".to_string(), None)]);
    assert_eq!(live.counts(), (1, 0), "starting: an admitted slot");
    // A copy of the Job from before the start neither starts it again nor
    // gives its admitted slot back.
    t.handle(
        TrackerMsg::Jobs(Event::Applied(delayed("a", None, None))),
        now + secs(9),
        ts(START) + secs(1),
    );
    assert!(starts(&t.tick(now + secs(9), ts(START) + secs(1))).is_empty());
    assert_eq!(live.counts(), (1, 0));
    // The start shows: nothing more to start; the pod start timeout counts
    // from the start (08 s), not from creation (00 s).
    t.handle(
        TrackerMsg::Jobs(Event::Applied(delayed("a", None, Some(START)))),
        now + secs(10),
        ts(START) + secs(2),
    );
    assert!(
        t.tick(now + secs(66), t0 + secs(66)).is_empty(),
        "66 s after creation"
    );
    let a = t.tick(now + secs(68), t0 + secs(68));
    assert_eq!(statuses(&a), vec![99], "60 s after the start: {a:?}");
    assert!(starts(&a).is_empty());
}

#[test]
fn an_unseen_start_is_asked_again() {
    let live = Arc::new(LiveJobs::default());
    let mut t = tracker(&live, 0);
    let now = Instant::now();
    t.handle(
        TrackerMsg::Jobs(Event::Applied(delayed("a", None, None))),
        now,
        ts(CREATED),
    );
    assert_eq!(starts(&t.tick(now, ts(START))).len(), 1);
    assert!(starts(&t.tick(now + secs(9), ts(START))).is_empty());
    // The PATCH failed (or the watch lags): after START_RETRY it is asked again.
    t.handle(
        TrackerMsg::Jobs(Event::Applied(delayed("a", None, None))),
        now + secs(10),
        ts(START),
    );
    assert_eq!(starts(&t.tick(now + secs(10), ts(START))).len(), 1);
    assert_eq!(live.counts(), (1, 0), "one admitted slot, not two");
}

#[test]
fn a_due_job_waits_for_a_free_admitted_slot_before_intake_gets_it() {
    let live = Arc::new(LiveJobs::default());
    let mut t = tracker(&live, 1);
    let now = Instant::now();
    // One running (admitted) Job fills MAX_CONCURRENT_JOBS = 1.
    live.insert("ns/running", Slot::Admitted);
    t.handle(
        TrackerMsg::Jobs(Event::Applied(delayed("a", None, None))),
        now,
        ts(CREATED),
    );
    for s in 0..3 {
        assert!(starts(&t.tick(now + secs(s), ts(START) + secs(s))).is_empty());
    }
    assert_eq!(live.counts(), (1, 1), "still suspended, in its queued slot");
    // The slot frees: the due Job has a claim on it, intake does not get it.
    live.end("ns/running");
    assert!(
        !live.try_reserve(1, Slot::Admitted),
        "claimed by the due Job"
    );
    assert_eq!(live.wait_for_room(1, Duration::ZERO), 0);
    let a = t.tick(now + secs(3), ts(START) + secs(3));
    assert_eq!(starts(&a), vec![("a".to_string(), None)]);
    assert_eq!(live.counts(), (1, 0));
    assert!(!live.try_reserve(1, Slot::Admitted), "the cap holds");
}

#[test]
fn a_delayed_queued_job_goes_to_kueue_at_its_time() {
    let live = Arc::new(LiveJobs::default());
    let mut t = tracker(&live, 1);
    live.insert("ns/running", Slot::Admitted);
    let now = Instant::now();
    let a = t.handle(
        TrackerMsg::Jobs(Event::Applied(delayed("q", Some("lq"), None))),
        now,
        ts(CREATED),
    );
    assert!(
        matches!(&a[0], Action::Callback { detail, .. }
            if *detail == json!({"jobId": "uid-q", "jobName": "q", "queueName": "lq",
                                 "startAfter": START})),
        "{a:?}"
    );
    assert!(t.tick(now, ts(CREATED) + secs(7)).is_empty());
    // Kueue decides admission: no admitted slot is needed to hand it over.
    let a = t.tick(now, ts(START));
    assert_eq!(starts(&a), vec![("q".to_string(), Some("lq".to_string()))]);
    assert_eq!(
        live.counts(),
        (1, 1),
        "queued in Kueue: still a queued slot"
    );
    // Labelled and still suspended: waiting in Kueue, not started again.
    let mut in_kueue = delayed("q", Some("lq"), None);
    in_kueue["metadata"]["annotations"] = json!({ANN_MESSAGE_ID: "id-q"});
    in_kueue["metadata"]["labels"] = json!({LABEL_KUEUE_QUEUE_NAME: "lq"});
    t.handle(TrackerMsg::Jobs(Event::Applied(in_kueue)), now, ts(START));
    assert!(starts(&t.tick(now + secs(20), ts(START) + secs(20))).is_empty());
}

#[test]
fn a_new_leader_starts_an_overdue_job_from_its_annotation() {
    let live = Arc::new(LiveJobs::default());
    let mut t = tracker(&live, 0);
    let now = Instant::now();
    // Its start passed while no leader ran; status 0 was delivered before.
    let mut job = delayed("a", None, None);
    job["metadata"]["annotations"]["k8s-job-worker.io/delivered"] = json!("0");
    let late = ts(START) + secs(3);
    let a = t.handle(TrackerMsg::Jobs(Event::Restarted(vec![job])), now, late);
    assert!(statuses(&a).is_empty(), "0 is not sent again: {a:?}");
    assert_eq!(starts(&t.tick(now, late)), vec![("a".to_string(), None)]);
    // An annotation edited into nonsense: due at once, not held for ever.
    let mut t = tracker(&Arc::new(LiveJobs::default()), 0);
    let mut job = delayed("c", None, None);
    job["metadata"]["annotations"][ANN_START_AFTER] = json!("soon");
    t.handle(TrackerMsg::Jobs(Event::Applied(job)), now, ts(CREATED));
    assert_eq!(
        starts(&t.tick(now, ts(CREATED))),
        vec![("c".to_string(), None)]
    );
    // A deleted (e.g. cancelled) delayed Job is never started.
    let mut t = tracker(&Arc::new(LiveJobs::default()), 0);
    t.handle(
        TrackerMsg::Jobs(Event::Applied(delayed("b", None, None))),
        now,
        ts(CREATED),
    );
    t.handle(
        TrackerMsg::Jobs(Event::Deleted(delayed("b", None, None))),
        now,
        ts(CREATED),
    );
    assert!(starts(&t.tick(now, late)).is_empty());
}

#[test]
fn a_delayed_job_cancelled_while_it_waits_is_never_started() {
    use crate::cancel::{Tombstone, Tombstones};
    let live = Arc::new(LiveJobs::default());
    let index = Arc::new(Tombstones::default());
    let mut t = tracker(&live, 0).with_cancels(index.clone());
    let now = Instant::now();
    let t0 = ts(CREATED);
    let a = t.handle(
        TrackerMsg::Created {
            job: delayed("c", None, None),
            received_at: now,
        },
        now,
        t0,
    );
    assert_eq!(statuses(&a), vec![0]);
    // The cancel arrives before the start time.
    index.insert(Tombstone {
        cancelled_at: "2026-11-24T07:00:03Z".into(),
        ..Tombstone::new("i", "id-c", t0, Duration::from_secs(86_400))
    });
    let a = t.handle(
        TrackerMsg::Jobs(Event::Applied(delayed("c", None, None))),
        now + secs(3),
        t0 + secs(3),
    );
    assert!(
        a.iter().any(|a| matches!(a, Action::CancelJob { .. })),
        "{a:?}"
    );
    // Past its start time: no start is ever asked for.
    for s in [8, 9, 30] {
        let a = t.tick(now + secs(s), t0 + secs(s));
        assert!(starts(&a).is_empty(), "{s} s: {a:?}");
    }
}
