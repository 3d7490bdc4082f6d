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

/// The callback statuses among `actions`, in order (shared by the other table tests).
pub(super) fn statuses(actions: &[Action]) -> Vec<u8> {
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
            job: ("ns".into(), "a".into()),
            uid: "uid-a".into(),
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
    l.insert("a", Slot::Admitted);
    l.insert("b", Slot::Admitted);
    assert_eq!(l.wait_for_room(2, Duration::from_millis(10)), 0);
    l.end("a");
    assert_eq!(l.wait_for_room(2, Duration::ZERO), 1);
}

#[test]
fn queued_jobs_count_against_max_queued_jobs_only() {
    let l = LiveJobs::new(2);
    l.insert("a", Slot::Admitted);
    l.insert("q1", Slot::Queued);
    assert_eq!(l.counts(), (1, 1));
    // Suspended Jobs do not count against MAX_CONCURRENT_JOBS.
    assert_eq!(l.wait_for_room(2, Duration::ZERO), 1);
    assert_eq!(l.wait_for_room(0, Duration::ZERO), 1);
    l.insert("q2", Slot::Queued);
    assert_eq!(l.wait_for_room(0, Duration::from_millis(10)), 0);
    // Kueue admits q1: one queued slot frees, one admitted slot is taken.
    l.insert("q1", Slot::Admitted);
    assert_eq!(l.counts(), (2, 1));
    assert_eq!(l.wait_for_room(3, Duration::ZERO), 1);
    assert_eq!(l.wait_for_room(2, Duration::from_millis(10)), 0);
    // Evicted and re-queued: back to the queued bound.
    l.insert("q1", Slot::Queued);
    assert_eq!(l.wait_for_room(0, Duration::from_millis(10)), 0);
    l.end("q2");
    assert_eq!(l.wait_for_room(0, Duration::ZERO), 1);
    // Unlimited by default.
    let u = LiveJobs::default();
    u.insert("q", Slot::Queued);
    assert_eq!(u.wait_for_room(0, Duration::ZERO), usize::MAX);
    assert_eq!(u.wait_for_room(1, Duration::ZERO), 1);
}

/// Job `name` queued on `lq`: suspended (`suspend`), with conditions `conds`.
fn queued_job(name: &str, suspend: bool, conds: Value) -> Value {
    let mut j = job(name, conds, None);
    j["metadata"]["labels"] = json!({"kueue.x-k8s.io/queue-name": "lq"});
    j["spec"] = json!({"suspend": suspend});
    if suspend {
        j["status"] = json!({"conditions": j["status"]["conditions"].clone()});
    }
    j
}

fn at(secs: u64) -> SystemTime {
    wall() + Duration::from_secs(secs)
}

fn suspended_cond(status: &str, at: &str) -> Value {
    json!({"type": "Suspended", "status": status, "lastTransitionTime": at,
           "reason": if status == "True" {"JobSuspended"} else {"JobResumed"}})
}

fn view(t: &Tracker, id: &str) -> JobView {
    let b = t.board_for_tests();
    b.get(id).cloned().unwrap_or_default()
}

#[test]
fn a_queued_job_waits_without_timeout_and_counts_as_queued() {
    let mut t = tracker();
    let now = Instant::now();
    let a = t.handle(
        TrackerMsg::Created {
            job: queued_job("q", true, json!([])),
            received_at: now,
        },
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![0]);
    let Action::Callback { detail, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(
        detail,
        &json!({"jobId": "uid-q", "jobName": "q", "queueName": "lq"})
    );
    assert_eq!(t.live.counts(), (0, 1));
    assert_eq!(view(&t, "id-q").admission, Some("queued"));
    assert_eq!(view(&t, "id-q").queue_name.as_deref(), Some("lq"));
    // Far past POD_START_TIMEOUT (60 s) while suspended: nothing.
    let cond = json!([suspended_cond("True", "2026-11-24T07:00:01Z")]);
    t.handle(
        TrackerMsg::Jobs(Event::Applied(queued_job("q", true, cond))),
        now,
        at(1),
    );
    assert!(t.tick(now, at(600)).is_empty());
    // Kueue admits it at 07:10:05; the Job controller has not updated the
    // condition yet: the clock starts now.
    let stale = json!([suspended_cond("True", "2026-11-24T07:00:01Z")]);
    let a = t.handle(
        TrackerMsg::Jobs(Event::Applied(queued_job("q", false, stale))),
        now,
        at(600),
    );
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(t.live.counts(), (1, 0));
    assert_eq!(view(&t, "id-q").admission, Some("admitted"));
    assert!(t.tick(now, at(630)).is_empty());
    // The condition turns False at 07:10:06: 60 s from then.
    let resumed = json!([suspended_cond("False", "2026-11-24T07:10:06Z")]);
    t.handle(
        TrackerMsg::Jobs(Event::Applied(queued_job("q", false, resumed))),
        now,
        at(631),
    );
    assert!(t.tick(now, at(660)).is_empty());
    let a = t.tick(now, at(661));
    assert_eq!(statuses(&a), vec![99]);
    let Action::Callback { detail, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(detail["error"]["errorCode"], "POD_START_TIMEOUT");
}

#[test]
fn a_preempted_job_waits_again_and_ends_once() {
    let mut t = tracker();
    let now = Instant::now();
    let admitted = json!([suspended_cond("False", "2026-11-24T07:00:02Z")]);
    t.handle(
        TrackerMsg::Created {
            job: queued_job("r", true, json!([])),
            received_at: now,
        },
        now,
        wall(),
    );
    t.handle(
        TrackerMsg::Jobs(Event::Applied(queued_job("r", false, admitted))),
        now,
        wall(),
    );
    let a = t.handle(
        TrackerMsg::Pods(Event::Applied(pod("r", "Running", None))),
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![1]);
    // Preempted: suspended again, its pod killed (kwok: exit 137) and deleted.
    let preempted = json!([suspended_cond("True", "2026-11-24T07:00:10Z")]);
    let mut out = t.handle(
        TrackerMsg::Jobs(Event::Applied(queued_job("r", true, preempted))),
        now,
        at(5),
    );
    out.extend(t.handle(
        TrackerMsg::Pods(Event::Applied(pod("r", "Failed", Some(137)))),
        now,
        at(6),
    ));
    out.extend(t.handle(
        TrackerMsg::Pods(Event::Deleted(pod("r", "Failed", Some(137)))),
        now,
        at(6),
    ));
    out.extend(t.tick(now, at(900)));
    assert!(out.is_empty(), "nothing while it waits again: {out:?}");
    assert_eq!(t.live.counts(), (0, 1));
    assert_eq!(view(&t, "id-r").admission, Some("queued"));
    // Re-admitted; a new pod runs and succeeds with a JSON result.
    let readmitted = json!([suspended_cond("False", "2026-11-24T07:15:00Z")]);
    t.handle(
        TrackerMsg::Jobs(Event::Applied(queued_job("r", false, readmitted.clone()))),
        now,
        at(900),
    );
    let mut p = pod("r", "Succeeded", Some(0));
    p["metadata"]["uid"] = json!("pod-r-2");
    p["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = json!(r#"{"rows": 7}"#);
    t.handle(TrackerMsg::Pods(Event::Applied(p)), now, at(910));
    let mut done = queued_job("r", false, readmitted);
    if let Some(c) = done["status"]["conditions"].as_array_mut() {
        c.extend(complete().as_array().cloned().unwrap_or_default());
    }
    done["status"]["startTime"] = json!("2026-11-24T07:15:00Z");
    done["status"]["completionTime"] = json!("2026-11-24T07:15:12Z");
    let a = t.handle(TrackerMsg::Jobs(Event::Applied(done.clone())), now, at(912));
    assert_eq!(statuses(&a), vec![2]);
    let Action::Callback { detail, .. } = &a[0] else {
        panic!()
    };
    // Duration from the startTime Kubernetes reset on resume.
    assert_eq!(detail, &json!({"duration": 12, "result": {"rows": 7}}));
    assert!(
        t.handle(TrackerMsg::Jobs(Event::Applied(done)), now, at(913))
            .is_empty()
    );
    assert!(t.tick(now, at(2000)).is_empty());
    assert!(t.live.is_empty());
}

#[test]
fn complete_waits_briefly_for_the_result_and_failure_carries_the_container() {
    let mut t = tracker();
    let now = Instant::now();
    t.handle(
        TrackerMsg::Created {
            job: job("s", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    t.handle(
        TrackerMsg::Pods(Event::Applied(pod("s", "Running", None))),
        now,
        wall(),
    );
    // Complete before the pod's terminated state: held for it.
    let a = t.handle(
        TrackerMsg::Jobs(Event::Applied(job("s", complete(), None))),
        now,
        wall(),
    );
    assert_eq!(
        a,
        vec![Action::FetchPods {
            namespace: "ns".into(),
            name: "s".into()
        }]
    );
    let mut p = pod("s", "Succeeded", Some(0));
    p["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = json!("plain text");
    let a = t.handle(TrackerMsg::Pods(Event::Applied(p)), now, wall());
    assert_eq!(statuses(&a), vec![2]);
    let Action::Callback { detail, .. } = &a[0] else {
        panic!()
    };
    assert_eq!(detail, &json!({"duration": 30, "result": "plain text"}));

    // No termination message: no `result`, and no wait once the pod ended.
    let mut t = tracker();
    t.handle(
        TrackerMsg::Pods(Event::Applied(pod("e", "Succeeded", Some(0)))),
        now,
        wall(),
    );
    let a = t.handle(
        TrackerMsg::Jobs(Event::Applied(job("e", complete(), None))),
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![0, 1, 2]);
    let Action::Callback { detail, .. } = &a[2] else {
        panic!()
    };
    assert_eq!(detail, &json!({"duration": 30}));

    // A failure: exitCode, reason and the termination message (≤ 4 KiB).
    let mut t = tracker();
    let mut p = pod("f", "Failed", Some(3));
    p["status"]["containerStatuses"][0]["state"]["terminated"]["message"] =
        json!(format!("Traceback{}", "x".repeat(5000)));
    t.handle(TrackerMsg::Pods(Event::Applied(p)), now, wall());
    let failed = json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit"}]);
    let a = t.handle(
        TrackerMsg::Jobs(Event::Applied(job("f", failed, None))),
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![0, 1, 3]);
    let Action::Callback { detail, .. } = &a[2] else {
        panic!()
    };
    let err = &detail["error"];
    assert_eq!(err["errorCode"], "BACKOFF_LIMIT_EXCEEDED");
    assert_eq!(err["exitCode"], 3);
    assert_eq!(err["reason"], "Error");
    let tm = err["terminationMessage"].as_str().unwrap_or("");
    assert!(
        tm.starts_with("Traceback") && tm.len() == 4096,
        "{}",
        tm.len()
    );
}

/// Found by the `tracker` fuzz target: a Job reported gone (two relists
/// missed it) that shows up again must not restart at 0 after its 99.
#[test]
fn a_job_reported_gone_is_not_announced_again() {
    let mut t = tracker();
    let now = Instant::now();
    let a = t.handle(
        TrackerMsg::Created {
            job: job("f", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![0]);
    let mut sent = Vec::new();
    for _ in 0..2 {
        let a = t.handle(TrackerMsg::Jobs(Event::Restarted(vec![])), now, wall());
        sent.extend(statuses(&a));
    }
    assert_eq!(sent, vec![99]);
    for msg in [
        TrackerMsg::Jobs(Event::Applied(job("f", json!([]), None))),
        TrackerMsg::Created {
            job: job("f", complete(), None),
            received_at: now,
        },
        TrackerMsg::Jobs(Event::Restarted(vec![job("f", complete(), None)])),
        TrackerMsg::Pods(Event::Applied(pod("f", "Running", None))),
    ] {
        let a = t.handle(msg, now, wall());
        assert_eq!(statuses(&a), Vec::<u8>::new(), "{a:?}");
    }
    assert!(t.tick(now + Duration::from_secs(600), wall()).is_empty());

    // The name taken over by a newer Job (the DELETED event shows another
    // uid): a late notice about the older one starts nothing either.
    let mut t = tracker();
    let a = t.handle(
        TrackerMsg::Created {
            job: job("h", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![0]);
    let mut newer = job("h", json!([]), None);
    newer["metadata"]["uid"] = json!("uid-h-2");
    let a = t.handle(TrackerMsg::Jobs(Event::Deleted(newer)), now, wall());
    assert_eq!(statuses(&a), vec![99]);
    let a = t.handle(
        TrackerMsg::Created {
            job: job("h", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    assert_eq!(statuses(&a), Vec::<u8>::new(), "{a:?}");
    // Nor does a late DELETED of the older one end the newer one.
    let mut t = tracker();
    t.handle(
        TrackerMsg::Jobs(Event::Deleted(job("h", json!([]), None))),
        now,
        wall(),
    );
    let mut newer = job("h", json!([]), None);
    newer["metadata"]["uid"] = json!("uid-h-2");
    let a = t.handle(TrackerMsg::Jobs(Event::Applied(newer)), now, wall());
    assert_eq!(statuses(&a), vec![0]);
    let a = t.handle(
        TrackerMsg::Jobs(Event::Deleted(job("h", json!([]), None))),
        now,
        wall(),
    );
    assert_eq!(statuses(&a), Vec::<u8>::new(), "{a:?}");
}

#[test]
fn a_callback_names_the_uid_of_its_own_job_when_a_newer_one_takes_the_name() {
    // fuzz/regressions/tracker/uid-change-then-0-after-2.json: the old Job's
    // 99 and the new Job's 0 go out under one name; each carries its own uid,
    // so the record of the first can never land on the second.
    let mut t = tracker();
    let now = Instant::now();
    let a = t.handle(
        TrackerMsg::Created {
            job: job("u", json!([]), None),
            received_at: now,
        },
        now,
        wall(),
    );
    assert!(matches!(&a[0], Action::Callback { uid, .. } if uid == "uid-u"));
    // The newer Job first shows without our message-id (as in the fuzz
    // input), then with another message's.
    let mut newer = job("u", json!([]), None);
    newer["metadata"]["uid"] = json!("uid-u2");
    let mut bare = newer.clone();
    if let Some(ann) = bare["metadata"]["annotations"].as_object_mut() {
        ann.remove(ANN_MESSAGE_ID);
    }
    newer["metadata"]["annotations"][ANN_MESSAGE_ID] = json!("id-other");
    let mut callbacks = Vec::new();
    for _ in 0..2 {
        for a in t.handle(
            TrackerMsg::Jobs(Event::Restarted(vec![bare.clone()])),
            now,
            wall(),
        ) {
            if let Action::Callback { status, uid, .. } = a {
                callbacks.push((status.code(), uid));
            }
        }
    }
    for a in t.handle(TrackerMsg::Jobs(Event::Applied(newer.clone())), now, wall()) {
        if let Action::Callback { status, uid, .. } = a {
            callbacks.push((status.code(), uid));
        }
    }
    for (status, uid) in &callbacks {
        match status {
            99 => assert_eq!(uid, "uid-u", "{callbacks:?}"),
            0 => assert_eq!(uid, "uid-u2", "{callbacks:?}"),
            _ => {}
        }
    }
    assert!(callbacks.iter().any(|(s, _)| *s == 99), "{callbacks:?}");
    assert!(callbacks.iter().any(|(s, _)| *s == 0), "{callbacks:?}");
}

#[test]
fn a_namespace_list_says_nothing_of_another_namespace() {
    // One watch per namespace (ALLOWED_NAMESPACES): the list of "other" does
    // not show the Jobs of "ns", which stay tracked (no 99 JOB_DELETED); two
    // lists of "ns" that miss one of its Jobs do report it gone.
    let mut t = tracker();
    let now = Instant::now();
    let a = t.handle(
        TrackerMsg::NamespaceJobs(
            "ns".into(),
            Event::Restarted(vec![job("a", json!([]), None)]),
        ),
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![0]);
    for _ in 0..3 {
        let a = t.handle(
            TrackerMsg::NamespaceJobs("other".into(), Event::Restarted(vec![])),
            now,
            wall(),
        );
        assert!(statuses(&a).is_empty(), "{a:?}");
    }
    t.handle(
        TrackerMsg::Pods(Event::Applied(pod("a", "Succeeded", Some(0)))),
        now,
        wall(),
    );
    let a = t.handle(
        TrackerMsg::NamespaceJobs("ns".into(), Event::Applied(job("a", complete(), None))),
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![2]);
    let mut t = tracker();
    t.handle(
        TrackerMsg::NamespaceJobs(
            "ns".into(),
            Event::Restarted(vec![job("b", json!([]), None)]),
        ),
        now,
        wall(),
    );
    let a = t.handle(
        TrackerMsg::NamespaceJobs("ns".into(), Event::Restarted(vec![])),
        now,
        wall(),
    );
    assert_eq!(statuses(&a), vec![99]);
}
