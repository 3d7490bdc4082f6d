//! Recording is part of a message's turn: on the real bed, every callback of a
//! message after its first arrives only once the previous status is recorded
//! on its Job (`k8s-job-worker.io/delivered`), even when all of a message's
//! callbacks are queued at once (the receiver was down while its Jobs ran). The webhook receiver reads the
//! Job from the API server (a consistent read) while it holds each request, so
//! a worker that sends a message's next callback before the previous record
//! landed is caught in the act; records of different messages run in
//! parallel, which the bench measures. The terminal record releases the Job
//! (one strategic merge patch removes only our finalizer).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use support::worker::{Deployment, Launcher, Q, seed_message};
use support::{WebhookReceiver, bed, wait_for};

const N: usize = 40;

/// (message id, status arriving, the Job's delivered annotation at that moment).
type Seen = Arc<Mutex<Vec<(String, u64, Option<String>)>>>;

/// The delivered annotation of the Job of message `id` ("" when there is no
/// such Job yet, which cannot be: status 0 follows the create).
fn delivered_annotation(dep: &Deployment, id: &str) -> Option<String> {
    let (code, list) = bed().kube_get(&format!(
        "/apis/batch/v1/namespaces/{}/jobs?labelSelector=k8s-job-worker.io%2Finstance%3D{}",
        dep.ns, dep.instance
    ));
    assert_eq!(code, 200, "{list}");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let job = items
        .iter()
        .find(|j| j["metadata"]["annotations"]["k8s-job-worker.io/message-id"] == id)
        .unwrap_or_else(|| panic!("no Job for message {id}"));
    job["metadata"]["annotations"]["k8s-job-worker.io/delivered"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_messages_next_callback_arrives_only_after_the_previous_status_is_recorded() {
    let dep_cell: Arc<OnceLock<Deployment>> = Arc::new(OnceLock::new());
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let hook = {
        let (dep_cell, seen) = (dep_cell.clone(), seen.clone());
        WebhookReceiver::start_inspecting(move |body: &Value, answer: u16| {
            let (Some(id), Some(status)) = (body["id"].as_str(), body["status"].as_u64()) else {
                return;
            };
            if !(200..300).contains(&answer) {
                return; // refused: it will come again
            }
            let Some(dep) = dep_cell.get() else {
                return;
            };
            let ann = delivered_annotation(dep, id);
            seen.lock().unwrap().push((id.to_string(), status, ann));
        })
    };
    let dep = Launcher::new(Q::Redis)
        .ns_tag("rec")
        .no_env("ALLOWED_ENV_REFS")
        .no_env("ALLOWED_PVCS")
        .env("CALLBACK_BACKOFF_MAX", "2")
        .deploy();
    let _ = dep_cell.set(dep.clone());
    let pod = format!("{}-pod", dep.instance);
    let _w = dep.spawn(&pod);

    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..N {
        let (id, body) = seed_message(&dep.ns, &hook.url(), |m| {
            if let Some(j) = m["job"].as_object_mut() {
                j.remove("volume");
                j.remove("envRef");
            }
        });
        ids.push(id);
        bodies.push(body);
    }
    // The receiver refuses everything until every Job is complete, so each
    // message's 0, 1 and terminal status are all queued at once when it comes
    // back: only the wait for the record stands between one and the next.
    hook.respond_with(503);
    dep.send_all(&bodies);
    let complete = wait_for(Duration::from_secs(180), || {
        let jobs = dep.jobs();
        jobs.len() == N
            && jobs.iter().all(|j| {
                j["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Complete" && c["status"] == "True")
                })
            })
    });
    assert!(complete, "all {N} Jobs complete");
    // Their terminal statuses reach the callback thread after the watch event.
    std::thread::sleep(Duration::from_secs(3));
    hook.respond_with(200);

    let done = wait_for(Duration::from_secs(240), || {
        let s = seen.lock().unwrap();
        ids.iter().all(|id| {
            s.iter()
                .any(|(i, st, _)| i == id && support::is_terminal(*st))
        })
    });
    let seen = seen.lock().unwrap().clone();
    assert!(
        done,
        "not every message got its terminal callback: {} arrivals",
        seen.len()
    );

    let mut by_id: HashMap<&str, Vec<(u64, Option<String>)>> = HashMap::new();
    for (id, st, ann) in &seen {
        by_id
            .entry(id.as_str())
            .or_default()
            .push((*st, ann.clone()));
    }
    let mut checked = 0;
    for id in &ids {
        let got = by_id.get(id.as_str()).cloned().unwrap_or_default();
        let statuses: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(statuses.first(), Some(&0), "{id}: {got:?}");
        assert!(
            statuses
                .iter()
                .filter(|s| support::is_terminal(**s))
                .count()
                == 1,
            "{id}: one terminal status, got {statuses:?}"
        );
        assert_eq!(got[0].1, None, "{id}: nothing recorded before status 0");
        for pair in got.windows(2) {
            let (prev, (st, ann)) = (pair[0].0, &pair[1]);
            assert_eq!(
                ann.as_deref(),
                Some(prev.to_string().as_str()),
                "{id}: status {st} arrived while the Job recorded {ann:?}, not {prev}: {got:?}"
            );
            checked += 1;
        }
    }
    eprintln!(
        "[recording] {} arrivals; {checked} later callbacks each found the previous status recorded",
        seen.len()
    );
    assert!(checked >= N, "at least one later callback per message");

    // The terminal record releases the Job: our finalizer goes, the terminal
    // status is recorded, other finalizers stay (one Job carries a second).
    let jobs = dep.jobs();
    let other = "example.com/keep";
    let probe = jobs[0]["metadata"]["name"].as_str().unwrap().to_string();
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (id, st, _) in &seen {
        last.insert(id.as_str(), *st);
    }
    let released = wait_for(Duration::from_secs(30), || {
        dep.jobs().iter().all(|j| {
            let fins = j["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            !fins.iter().any(|f| f == "k8s-job-worker.io/result")
        })
    });
    assert!(released, "every Job released after its terminal callback");
    for j in dep.jobs() {
        let id = j["metadata"]["annotations"]["k8s-job-worker.io/message-id"]
            .as_str()
            .unwrap_or("");
        let want = last.get(id).map(u64::to_string);
        assert_eq!(
            j["metadata"]["annotations"]["k8s-job-worker.io/delivered"]
                .as_str()
                .map(str::to_string),
            want,
            "{id}: the terminal status is recorded"
        );
    }
    // Releasing leaves another controller's finalizer alone (the API server
    // removes only ours from the list): first the strategic merge patch that
    // `release` sends, on its own (this API server takes it for Jobs, so the
    // read-first fallback is not what passes here), then `release`.
    let path = format!("/apis/batch/v1/namespaces/{}/jobs/{probe}", dep.ns);
    let hold = || {
        let (code, _) = bed().kube_patch(
            &path,
            &serde_json::json!({"metadata": {"finalizers": [other, "k8s-job-worker.io/result"]}}),
        );
        assert_eq!(code, 200);
    };
    hold();
    let resp = support::kube_agent(&bed().ca_pem)
        .patch(&format!("{}{path}", bed().api_url))
        .header("Authorization", &format!("Bearer {}", bed().admin_token))
        .header("Content-Type", "application/strategic-merge-patch+json")
        .send(
            serde_json::json!({"metadata": {
                "$deleteFromPrimitiveList/finalizers": ["k8s-job-worker.io/result"]}})
            .to_string(),
        )
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (_, j) = bed().kube_get(&path);
    assert_eq!(j["metadata"]["finalizers"], serde_json::json!([other]));
    hold();
    let kube = k8s_job_worker::kube::Client::new(&k8s_job_worker::kube::client::KubeConfig {
        api_url: bed().api_url.clone(),
        token_file: Some(bed().admin_token_file.clone()),
        ca_file: Some(bed().ca_file.clone()),
    })
    .unwrap();
    kube.release(
        &path,
        "k8s-job-worker.io/result",
        &serde_json::json!({"k8s-job-worker.io/delivered": "2"}),
        "release probe",
    )
    .unwrap();
    let (_, j) = bed().kube_get(&path);
    assert_eq!(j["metadata"]["finalizers"], serde_json::json!([other]));
    let (code, _) = bed().kube_patch(&path, &serde_json::json!({"metadata": {"finalizers": []}}));
    assert_eq!(code, 200);
}
