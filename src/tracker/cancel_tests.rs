//! Table tests of the tracker's part of cancel: a waiting tombstone turns a
//! live Job into a cancel (the writes, then 3 CANCELLED once the deletion
//! shows), a Job created cancelled gets only its 3, a finished Job only
//! consumes the tombstone. The REST side is proven on the bed (tests/cancel.rs).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::state::CANCEL_RETRY;
use super::tests::statuses;
use super::*;
use crate::cancel::{Consumed, Tombstone, Tombstones};
use crate::contract::{ANN_CANCELLED_AT, ANN_MESSAGE_ID, ANN_WEBHOOK_URL, Status};

const AT: &str = "2026-11-24T07:00:03Z";

fn wall() -> SystemTime {
    crate::clock::parse_rfc3339("2026-11-24T07:00:05Z").unwrap_or(SystemTime::UNIX_EPOCH)
}

fn tracker(index: &Arc<Tombstones>) -> Tracker {
    Tracker::new(
        Arc::new(LiveJobs::default()),
        Board::default(),
        Duration::from_secs(60),
    )
    .with_cancels(index.clone())
}

fn tombstone(id: &str) -> Tombstone {
    Tombstone {
        cancelled_at: AT.into(),
        ..Tombstone::new("i", id, wall(), Duration::from_secs(86_400))
    }
}

/// Job `name` of message `id-<name>`; `cancelled` adds the annotation,
/// `deleting` a deletionTimestamp.
fn job(name: &str, conds: Value, cancelled: bool, deleting: bool) -> Value {
    let mut ann = json!({ANN_MESSAGE_ID: format!("id-{name}"), ANN_WEBHOOK_URL: "http://hook/x"});
    if cancelled {
        ann[ANN_CANCELLED_AT] = json!(AT);
    }
    let mut j = json!({"metadata": {"namespace": "ns", "name": name, "uid": format!("uid-{name}"),
        "creationTimestamp": "2026-11-24T07:00:00Z", "annotations": ann,
        "finalizers": [crate::contract::FINALIZER]},
        "spec": {"suspend": cancelled},
        "status": {"conditions": conds}});
    if deleting {
        j["metadata"]["deletionTimestamp"] = json!("2026-11-24T07:00:04Z");
    }
    j
}

fn running_pod(job: &str) -> Value {
    json!({"metadata": {"namespace": "ns", "name": format!("{job}-abcde"), "uid": format!("pod-{job}"),
        "labels": {"batch.kubernetes.io/job-name": job}},
        "status": {"phase": "Running", "containerStatuses": [{"name": "job", "state": {"running": {}}}]}})
}

fn cancel_jobs(actions: &[Action]) -> Vec<(String, Option<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CancelJob {
                name,
                at,
                tombstone,
                ..
            } => {
                assert_eq!(at, AT);
                Some((name.clone(), tombstone.clone()))
            }
            _ => None,
        })
        .collect()
}

fn cancelled_detail(actions: &[Action]) -> Option<Value> {
    actions.iter().find_map(|a| match a {
        Action::Callback {
            status: Status::Failed,
            detail,
            ..
        } => Some(detail.clone()),
        _ => None,
    })
}

fn applied(name: &str, conds: Value, cancelled: bool, deleting: bool) -> TrackerMsg {
    TrackerMsg::Jobs(Event::Applied(job(name, conds, cancelled, deleting)))
}

#[test]
fn a_running_job_is_cancelled_then_gets_3_cancelled_once() {
    let index = Arc::new(Tombstones::default());
    let mut t = tracker(&index);
    let now = Instant::now();
    assert_eq!(
        statuses(&t.handle(applied("a", json!([]), false, false), now, wall())),
        vec![0]
    );
    let pod = TrackerMsg::Pods(Event::Applied(running_pod("a")));
    assert_eq!(statuses(&t.handle(pod, now, wall())), vec![1]);
    // No tombstone: a cancel of another id does nothing to it.
    assert!(
        t.handle(
            TrackerMsg::Cancel {
                id: "id-b".into(),
                fresh: true
            },
            now,
            wall()
        )
        .is_empty()
    );
    let tomb = tombstone("id-a");
    index.insert(tomb.clone());
    let a = t.handle(
        TrackerMsg::Cancel {
            id: "id-a".into(),
            fresh: true,
        },
        now,
        wall(),
    );
    assert_eq!(cancel_jobs(&a), vec![("a".into(), Some(tomb.name.clone()))]);
    assert!(
        statuses(&a).is_empty(),
        "nothing sent before the deletion shows"
    );
    // The writes land: annotated and suspended (no deletion yet), then the
    // tombstone is consumed and the Job deleted.
    assert!(
        t.handle(applied("a", json!([]), true, false), now, wall())
            .is_empty()
    );
    index.mark("id-a", Consumed::Cancelled);
    // Not asked again before CANCEL_RETRY; then again (a step may have failed),
    // without the consumed tombstone.
    assert!(t.tick(now + Duration::from_millis(500), wall()).is_empty());
    let again = t.tick(now + CANCEL_RETRY, wall());
    assert_eq!(cancel_jobs(&again), vec![("a".into(), None)]);
    let a = t.handle(applied("a", json!([]), true, true), now, wall());
    assert_eq!(statuses(&a), vec![3]);
    assert_eq!(
        cancelled_detail(&a),
        Some(json!({"error": {"errorCode": "CANCELLED",
            "message": format!("cancelled by request at {AT}")}}))
    );
    // A failure the stopped pod reports, the deletion: nothing more.
    let failed = json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]);
    assert!(
        t.handle(applied("a", failed.clone(), true, true), now, wall())
            .is_empty()
    );
    let gone = TrackerMsg::Jobs(Event::Deleted(job("a", failed, true, true)));
    assert!(statuses(&t.handle(gone, now, wall())).is_empty());
}

#[test]
fn a_job_created_cancelled_gets_only_its_3() {
    let index = Arc::new(Tombstones::default());
    index.insert(tombstone("id-c"));
    let mut t = tracker(&index);
    let now = Instant::now();
    let a = t.handle(
        TrackerMsg::Created {
            job: job("c", json!([]), true, false),
            received_at: now,
        },
        now,
        wall(),
    );
    assert!(statuses(&a).is_empty(), "no 0 for a Job created cancelled");
    assert_eq!(cancel_jobs(&a).len(), 1);
    assert!(cancel_jobs(&a)[0].1.is_some(), "its tombstone is consumed");
    // No POD_START_TIMEOUT while it waits for its deletion.
    assert!(statuses(&t.tick(now, wall() + Duration::from_secs(3600))).is_empty());
    let a = t.handle(applied("c", json!([]), true, true), now, wall());
    assert_eq!(statuses(&a), vec![3]);
}

#[test]
fn a_cancelled_job_that_vanishes_gets_3_cancelled_not_job_deleted() {
    let index = Arc::new(Tombstones::default());
    let mut t = tracker(&index);
    let now = Instant::now();
    t.handle(applied("d", json!([]), false, false), now, wall());
    t.handle(applied("d", json!([]), true, false), now, wall());
    let gone = TrackerMsg::Jobs(Event::Deleted(job("d", json!([]), true, false)));
    let a = t.handle(gone, now, wall());
    assert_eq!(statuses(&a), vec![3]);
    assert_eq!(
        cancelled_detail(&a).map(|d| d["error"]["errorCode"].clone()),
        Some(json!("CANCELLED"))
    );
}

#[test]
fn a_finished_job_only_consumes_the_tombstone() {
    let index = Arc::new(Tombstones::default());
    let mut t = tracker(&index);
    let now = Instant::now();
    let complete = json!([{"type": "Complete", "status": "True"}]);
    t.handle(applied("e", json!([]), false, false), now, wall());
    t.handle(
        TrackerMsg::Pods(Event::Applied(running_pod("e"))),
        now,
        wall(),
    );
    t.handle(applied("e", complete.clone(), false, false), now, wall());
    let done = t.tick(now + Duration::from_secs(10), wall());
    assert_eq!(statuses(&done), vec![2]);
    index.insert(tombstone("id-e"));
    let a = t.handle(
        TrackerMsg::Cancel {
            id: "id-e".into(),
            fresh: true,
        },
        now,
        wall(),
    );
    assert_eq!(
        a,
        vec![Action::ConsumeTombstone {
            id: "id-e".into(),
            tombstone: tombstone("id-e").name,
            how: Consumed::AlreadyFinished,
        }]
    );
    assert_eq!(
        index.get("id-e").and_then(|t| t.consumed),
        Some(Consumed::AlreadyFinished)
    );
    // Asked again (a redelivered cancel, a relist): nothing.
    assert!(
        t.handle(
            TrackerMsg::Cancel {
                id: "id-e".into(),
                fresh: true
            },
            now,
            wall()
        )
        .is_empty()
    );
    assert!(
        t.handle(applied("e", complete, false, false), now, wall())
            .is_empty()
    );
}

#[test]
fn a_job_seen_after_its_tombstone_is_cancelled_at_once() {
    // A tombstone listed at start (or written while its request was being
    // created): the first sighting of the Job applies it.
    let index = Arc::new(Tombstones::default());
    index.insert(tombstone("id-f"));
    let mut t = tracker(&index);
    let now = Instant::now();
    let a = t.handle(applied("f", json!([]), false, false), now, wall());
    assert!(
        statuses(&a).is_empty(),
        "cancelled before its 0 was sent: only the 3 follows"
    );
    assert_eq!(cancel_jobs(&a).len(), 1);
}

#[test]
fn a_pod_stopped_by_the_cancel_brings_no_1() {
    // A pending pod (never started) that the cancel stops shows terminated
    // (exit 137): the sender had 0 and gets 3, no 1 in between.
    let index = Arc::new(Tombstones::default());
    let mut t = tracker(&index);
    let now = Instant::now();
    assert_eq!(
        statuses(&t.handle(applied("g", json!([]), false, false), now, wall())),
        vec![0]
    );
    index.insert(tombstone("id-g"));
    let a = t.handle(
        TrackerMsg::Cancel {
            id: "id-g".into(),
            fresh: true,
        },
        now,
        wall(),
    );
    assert_eq!(cancel_jobs(&a).len(), 1);
    let stopped = json!({"metadata": {"namespace": "ns", "name": "g-abcde", "uid": "pod-g",
        "labels": {"batch.kubernetes.io/job-name": "g"}},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "job",
            "state": {"terminated": {"exitCode": 137, "reason": "Error"}}}]}});
    assert!(statuses(&t.handle(TrackerMsg::Pods(Event::Applied(stopped)), now, wall())).is_empty());
    let a = t.handle(applied("g", json!([]), true, true), now, wall());
    assert_eq!(statuses(&a), vec![3]);
}
