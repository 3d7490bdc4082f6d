//! Table tests of the tracker's state machine: events in, actions out, with
//! an in-memory board (the real watches are exercised in tests/worker_e2e.rs).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::state::POD_INFO_GRACE;
use super::*;
use crate::contract::{ANN_DELIVERED, ANN_MESSAGE_ID, ANN_WEBHOOK_URL, FINALIZER, Status};

fn tracker() -> Tracker {
    Tracker::new(
        Arc::new(LiveJobs::default()),
        Board::default(),
        Duration::from_secs(60),
    )
}

fn job(name: &str, conds: Value, delivered: Option<&str>) -> Value {
    let mut ann = json!({ANN_MESSAGE_ID: format!("id-{name}"), ANN_WEBHOOK_URL: "http://hook/x"});
    if let Some(d) = delivered {
        ann[ANN_DELIVERED] = json!(d);
    }
    json!({"metadata": {"namespace": "ns", "name": name, "uid": format!("uid-{name}"),
        "creationTimestamp": "2026-11-24T07:00:00Z", "annotations": ann},
        "status": {"startTime": "2026-11-24T07:00:01Z", "completionTime": "2026-11-24T07:00:31Z", "conditions": conds}})
}

fn pod(job: &str, phase: &str, exit: Option<i64>) -> Value {
    let state = match (phase, exit) {
        ("Running", _) => json!({"running": {}}),
        (_, Some(c)) => {
            json!({"terminated": {"exitCode": c, "reason": if c == 0 {"Completed"} else {"Error"}}})
        }
        _ => json!({"waiting": {"reason": "ImagePullBackOff"}}),
    };
    json!({"metadata": {"namespace": "ns", "name": format!("{job}-abcde"), "uid": format!("pod-{job}"),
        "labels": {"batch.kubernetes.io/job-name": job}},
        "status": {"phase": phase, "containerStatuses": [{"name": "job", "state": state}]}})
}

fn statuses(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Callback { status, .. } = a {
                Some(status.code())
            } else {
                None
            }
        })
        .collect()
}

fn wall() -> SystemTime {
    crate::clock::parse_rfc3339("2026-11-24T07:00:05Z").unwrap_or(SystemTime::UNIX_EPOCH)
}

fn complete() -> Value {
    json!([{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}])
}

#[test]
fn happy_path_sends_0_1_2_in_order_once() {
    let mut t = tracker();
    let now = Instant::now();
    let a = t.handle(
        TrackerMsg::Created {
            job: job("a", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![0]);
    assert_eq!(
        a[0],
        Action::Callback {
            message_id: "id-a".into(),
            status: Status::Created,
            detail: json!({"jobId": "uid-a", "jobName": "a"}),
            url: crate::webhook_guard::WebhookUrl::parse("http://hook/x").ok(),
            job: ("ns".into(), "a".into())
        }
    );
    // The watch's ADDED for the same Job changes nothing.
    assert!(
        t.handle(
            TrackerMsg::Jobs(Event::Applied(job("a", json!([]), None))),
            now,
            wall()
        )
        .is_empty()
    );
    assert_eq!(
        statuses(&t.handle(
            TrackerMsg::Pods(Event::Applied(pod("a", "Running", None))),
            now,
            wall()
        )),
        vec![1]
    );
    assert!(
        t.handle(
            TrackerMsg::Pods(Event::Applied(pod("a", "Running", None))),
            now,
            wall()
        )
        .is_empty()
    );
    t.handle(
        TrackerMsg::Pods(Event::Applied(pod("a", "Succeeded", Some(0)))),
        now,
        wall(),
    );
    let a = t.handle(
        TrackerMsg::Jobs(Event::Applied(job("a", complete(), None))),
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![2]);
    assert!(matches!(&a[0], Action::Callback { detail, .. } if *detail == json!({"duration": 30})));
    // Nothing after the terminal status.
    assert!(
        t.handle(
            TrackerMsg::Jobs(Event::Applied(job("a", complete(), None))),
            now,
            wall()
        )
        .is_empty()
    );
    assert!(
        t.handle(
            TrackerMsg::Jobs(Event::Deleted(job("a", complete(), None))),
            now,
            wall()
        )
        .is_empty()
    );
    assert!(t.live.is_empty());
}

#[test]
fn failure_waits_for_exit_code_and_sends_1_first() {
    let mut t = tracker();
    let now = Instant::now();
    t.handle(
        TrackerMsg::Created {
            job: job("f", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    let failed = json!([{"type": "FailureTarget", "status": "True"},
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]);
    let a = t.handle(
        TrackerMsg::Jobs(Event::Applied(job("f", failed.clone(), None))),
        now,
        wall(),
    );
    assert_eq!(
        a,
        vec![Action::FetchPods {
            namespace: "ns".into(),
            name: "f".into()
        }],
        "held for pod info"
    );
    // The pod shows up already failed: 1 then 3 with the exit code.
    let a = t.handle(
        TrackerMsg::Pods(Event::Applied(pod("f", "Failed", Some(3)))),
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![1, 3]);
    let Action::Callback { detail, .. } = &a[1] else {
        panic!()
    };
    assert_eq!(detail["error"]["errorCode"], "BACKOFF_LIMIT_EXCEEDED");
    let msg = detail["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("backoff limit") && msg.contains("code 3 (Error)"),
        "{msg}"
    );
}

#[test]
fn held_terminal_is_sent_after_the_grace_without_pod_info() {
    let mut t = tracker();
    let now = Instant::now();
    t.handle(
        TrackerMsg::Jobs(Event::Applied(job("g", complete(), None))),
        now,
        wall(),
    );
    assert!(t.tick(now + Duration::from_secs(1), wall()).is_empty());
    assert_eq!(statuses(&t.tick(now + POD_INFO_GRACE, wall())), vec![1, 2]);
}

#[test]
fn delivered_annotation_resumes_without_duplicates() {
    let mut t = tracker();
    let now = Instant::now();
    // A new leader finds a Job whose 0 and 1 were delivered by its predecessor.
    let a = t.handle(
        TrackerMsg::Jobs(Event::Restarted(vec![job("r", json!([]), Some("1"))])),
        now,
        wall(),
    );
    assert!(a.is_empty());
    t.handle(
        TrackerMsg::Pods(Event::Applied(pod("r", "Succeeded", Some(0)))),
        now,
        wall(),
    );
    assert_eq!(
        statuses(&t.handle(
            TrackerMsg::Jobs(Event::Applied(job("r", complete(), Some("1")))),
            now,
            wall()
        )),
        vec![2]
    );
    // A terminal already delivered: nothing at all.
    let mut t = tracker();
    assert!(
        t.handle(
            TrackerMsg::Jobs(Event::Restarted(vec![job("s", complete(), Some("2"))])),
            now,
            wall()
        )
        .is_empty()
    );
}

#[test]
fn pod_start_timeout_sends_99_with_the_waiting_reason_and_deletes() {
    let mut t = tracker();
    let now = Instant::now();
    t.handle(
        TrackerMsg::Created {
            job: job("p", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    t.handle(
        TrackerMsg::Pods(Event::Applied(pod("p", "Pending", None))),
        now,
        wall(),
    );
    assert!(t.tick(now, wall()).is_empty());
    let later = wall() + Duration::from_secs(60);
    let a = t.tick(now, later);
    assert_eq!(statuses(&a), vec![99]);
    let Action::Callback { detail, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(detail["error"]["errorCode"], "POD_START_TIMEOUT");
    assert!(
        detail["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("ImagePullBackOff")
    );
    assert_eq!(
        a[1],
        Action::DeleteJob {
            namespace: "ns".into(),
            name: "p".into()
        }
    );
    // Our own delete then shows up: nothing more.
    assert!(
        t.handle(
            TrackerMsg::Jobs(Event::Deleted(job("p", json!([]), None))),
            now,
            later
        )
        .is_empty()
    );
}

#[test]
fn a_job_that_vanishes_during_a_relist_is_reported_deleted() {
    let mut t = tracker();
    let now = Instant::now();
    t.handle(
        TrackerMsg::Created {
            job: job("d", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    t.handle(
        TrackerMsg::Jobs(Event::Applied(job("d", json!([]), None))),
        now,
        wall(),
    );
    let a = t.handle(TrackerMsg::Jobs(Event::Restarted(vec![])), now, wall());
    assert_eq!(statuses(&a), vec![99]);
    let Action::Callback { detail, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(detail["error"]["errorCode"], "JOB_DELETED");
}

#[test]
fn a_job_created_after_the_lists_snapshot_is_not_reported_deleted() {
    // Intake creates a Job while the Jobs watch is listing: the list
    // arrives without it, its ADDED event comes next.
    let mut t = tracker();
    let now = Instant::now();
    let a = t.handle(
        TrackerMsg::Created {
            job: job("n", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![0]);
    let a = t.handle(TrackerMsg::Jobs(Event::Restarted(vec![])), now, wall());
    assert!(statuses(&a).is_empty(), "{a:?}");
    let a = t.handle(
        TrackerMsg::Jobs(Event::Applied(job("n", json!([]), None))),
        now,
        wall(),
    );
    assert!(statuses(&a).is_empty(), "no second 0: {a:?}");
    // Never watched and missing from two lists: gone.
    let mut t = tracker();
    t.handle(
        TrackerMsg::Created {
            job: job("m", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    assert!(
        statuses(&t.handle(TrackerMsg::Jobs(Event::Restarted(vec![])), now, wall())).is_empty()
    );
    let a = t.handle(TrackerMsg::Jobs(Event::Restarted(vec![])), now, wall());
    assert_eq!(statuses(&a), vec![99]);
}

#[test]
fn a_job_being_deleted_before_it_finished_gets_job_deleted_once() {
    let mut t = tracker();
    let now = Instant::now();
    t.handle(
        TrackerMsg::Created {
            job: job("x", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    let mut j = job("x", json!([]), None);
    j["metadata"]["deletionTimestamp"] = json!("2026-11-24T07:00:09Z");
    let a = t.handle(TrackerMsg::Jobs(Event::Applied(j.clone())), now, wall());
    assert_eq!(statuses(&a), vec![99]);
    assert!(
        t.handle(TrackerMsg::Jobs(Event::Applied(j.clone())), now, wall())
            .is_empty()
    );
    assert!(
        t.handle(TrackerMsg::Jobs(Event::Deleted(j)), now, wall())
            .is_empty()
    );
}

#[test]
fn a_settled_job_still_held_is_released_once() {
    let mut t = tracker();
    let now = Instant::now();
    let mut j = job("h", complete(), Some("2"));
    j["metadata"]["finalizers"] = json!([FINALIZER]);
    let a = t.handle(
        TrackerMsg::Jobs(Event::Restarted(vec![j.clone()])),
        now,
        wall(),
    );
    assert_eq!(
        a,
        vec![Action::Release {
            namespace: "ns".into(),
            name: "h".into(),
            status: Status::Complete
        }]
    );
    assert!(
        t.handle(TrackerMsg::Jobs(Event::Applied(j)), now, wall())
            .is_empty()
    );
}

#[test]
fn live_jobs_wait_for_room() {
    let l = LiveJobs::default();
    assert_eq!(l.wait_for_room(0, Duration::ZERO), usize::MAX);
    l.insert("a");
    l.insert("b");
    assert_eq!(l.wait_for_room(2, Duration::from_millis(10)), 0);
    l.remove("a");
    assert_eq!(l.wait_for_room(2, Duration::ZERO), 1);
}
