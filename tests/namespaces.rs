//! A worker watching several namespaces (ALLOWED_NAMESPACES with more than
//! one entry runs one Job watch per namespace): the list of one namespace says
//! nothing about the Jobs of another. A new leader lists every namespace;
//! Jobs in the namespace listed first must not be taken for deleted when the
//! next namespace's list comes in (they would get a 99 JOB_DELETED and lose
//! their finalizer while still running).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::time::Duration;

use serde_json::json;
use support::worker::{
    FAST_ELECTION, Launcher, Q, calls_for, kill_and_take_over, leader_and_standby, make_pvc,
    seed_message, statuses,
};
use support::{WebhookReceiver, bed, wait_for};

const OUTCOME: &str = "testbed.k8s-job-worker.io/outcome";

#[test]
fn a_new_leader_of_two_namespaces_keeps_the_jobs_of_both() {
    let hook = WebhookReceiver::start();
    let other = bed().new_namespace("ns-two");
    let d0 = Launcher::new(Q::Redis)
        .ns_tag("ns-one")
        .envs(&[("POD_START_TIMEOUT", "3600")])
        .envs(&FAST_ELECTION)
        .die_with_parent()
        .deploy();
    let d = d0.with_env("ALLOWED_NAMESPACES", &format!("{},{other}", d0.ns));
    for ns in [&d.ns, &other] {
        make_pvc(ns);
        let (st, body) = bed().kube_post(
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            &json!({"metadata": {"name": "busybox-default"}, "data": {"A": "1"}}),
        );
        assert!(st == 201 || st == 409, "{st} {body}");
    }
    let (mut first, second) = leader_and_standby(&d);
    // One Job in each namespace whose pod never starts: each stays at 0.
    let msgs: Vec<(String, String)> = [&d.ns, &other]
        .iter()
        .map(|ns| {
            seed_message(ns, &hook.url(), |m| {
                m["job"]["fargate"] = json!({"key": OUTCOME, "value": "pending"});
            })
        })
        .collect();
    for (_, body) in &msgs {
        first.send(body);
    }
    assert!(
        wait_for(Duration::from_secs(60), || msgs
            .iter()
            .all(|(id, _)| statuses(&calls_for(&hook, id)) == vec![0])),
        "no status 0 for both\n{}",
        first.logs()
    );
    kill_and_take_over(&mut first, &second);
    // Its two lists are in within a moment; give the tracker a few ticks.
    std::thread::sleep(Duration::from_secs(8));
    for (id, _) in &msgs {
        assert_eq!(
            statuses(&calls_for(&hook, id)),
            vec![0],
            "message {id}: the new leader sent more than its 0\n{}",
            second.logs()
        );
    }
    for ns in [&d.ns, &other] {
        let (_, list) = bed().kube_get(&format!("/apis/batch/v1/namespaces/{ns}/jobs"));
        let items = list["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "{ns}: {list}");
        assert_eq!(
            items[0]["metadata"]["finalizers"],
            json!(["k8s-job-worker.io/result"]),
            "{ns}: the Job lost its finalizer"
        );
    }
}
