//! Load on the bed itself, with no worker: a plain ureq client POSTing minimal
//! Jobs (the API server's create ceiling) and the bed's drain rate (Jobs from
//! creation to Complete per second). Used by tests/bench.rs; figures, not
//! assertions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Bed, kube_agent, wait_for};

/// Connections of the "N connections" ceiling row: CREATE_CONCURRENCY, else 32 (its default).
pub const DEFAULT_CREATE_CONCURRENCY: usize = 32;

pub fn create_concurrency() -> usize {
    std::env::var("CREATE_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_CREATE_CONCURRENCY)
}

/// The smallest Job the bed runs to Complete: one container, no requests, a pod
/// that kwok finishes after `run_seconds` (the stage's annotation).
pub fn minimal_job(name: &str, run_seconds: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"testbed.k8s-job-worker.io/run-seconds": run_seconds}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "c", "image": "registry.example/minimal:1"}]},
            },
        },
    })
}

/// How a batch of creates went.
#[derive(Clone, Debug, Default)]
pub struct Creates {
    pub n: usize,
    pub connections: usize,
    /// First POST sent → last answer received.
    pub secs: f64,
    pub created: usize,
    /// Answers other than 201 (and transport errors).
    pub errors: usize,
}

impl Creates {
    pub fn per_sec(&self) -> f64 {
        self.created as f64 / self.secs
    }
}

/// POSTs `n` Jobs `<prefix>-<i>` (bodies from `job(name)`) into `ns` over
/// `connections` connections (one ureq agent, so one kept-alive connection, per
/// thread), as fast as the API server answers.
pub fn create_jobs(
    b: &Bed,
    ns: &str,
    prefix: &str,
    n: usize,
    connections: usize,
    job: impl Fn(&str) -> Value + Sync,
) -> Creates {
    create_jobs_with_records(b, ns, prefix, n, connections, 0, job)
}

/// `create_jobs`, with `records` merge PATCHes of an annotation on each Job
/// after its create, on the same connection: the writes the worker makes per
/// message (its create, then a record of status 0, 1 and the terminal one).
pub fn create_jobs_with_records(
    b: &Bed,
    ns: &str,
    prefix: &str,
    n: usize,
    connections: usize,
    records: usize,
    job: impl Fn(&str) -> Value + Sync,
) -> Creates {
    let url = format!("{}/apis/batch/v1/namespaces/{ns}/jobs", b.api_url);
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let patches: Vec<Vec<u8>> = (0..records)
        .map(|k| {
            serde_json::to_vec(&json!({"metadata": {"annotations": {
                "bench.k8s-job-worker.io/delivered": k.to_string()
            }}}))
            .unwrap()
        })
        .collect();
    let auth = format!("Bearer {}", b.admin_token);
    // Bodies serialised up front: the client's own cost stays out of the figure.
    let bodies: Vec<Vec<u8>> = names
        .iter()
        .map(|name| serde_json::to_vec(&job(name)).unwrap())
        .collect();
    let next = AtomicUsize::new(0);
    let created = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let first_error = std::sync::Mutex::new(None::<String>);
    // Reads the answer; anything but `want` is counted (the first one kept).
    let answered =
        |res: Result<ureq::http::Response<ureq::Body>, ureq::Error>, want: u16, what: &str| {
            let problem = match res {
                Ok(mut r) if r.status().as_u16() == want => {
                    let _ = r.body_mut().read_to_vec();
                    return true;
                }
                Ok(mut r) => {
                    let st = r.status().as_u16();
                    format!(
                        "{what}: {st} {}",
                        r.body_mut().read_to_string().unwrap_or_default()
                    )
                }
                Err(e) => format!("{what}: {e}"),
            };
            errors.fetch_add(1, Ordering::Relaxed);
            first_error.lock().unwrap().get_or_insert(problem);
            false
        };
    let agents: Vec<ureq::Agent> = (0..connections).map(|_| kube_agent(&b.ca_pem)).collect();
    // Open each connection before the clock starts (TLS handshakes are not creates).
    for a in &agents {
        let _ = a
            .get(format!("{}/readyz", b.api_url))
            .header("Authorization", &auth)
            .call();
    }
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for a in &agents {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let res = a
                        .post(&url)
                        .header("Authorization", &auth)
                        .header("Content-Type", "application/json")
                        .send(&bodies[i][..]);
                    if !answered(res, 201, "create") {
                        continue;
                    }
                    created.fetch_add(1, Ordering::Relaxed);
                    for p in &patches {
                        let res = a
                            .patch(format!("{url}/{}", names[i]))
                            .header("Authorization", &auth)
                            .header("Content-Type", "application/merge-patch+json")
                            .send(&p[..]);
                        answered(res, 200, "record");
                    }
                }
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    if let Some(e) = first_error.lock().unwrap().as_ref() {
        eprintln!("[load] first create error: {e}");
    }
    Creates {
        n,
        connections,
        secs,
        created: created.into_inner(),
        errors: errors.into_inner(),
    }
}

/// The raw create ceiling: `n` minimal Jobs on `connections` connections into
/// a fresh namespace, which is deleted afterwards (waiting up to 5 min for it to
/// go, so the next figure is not measured on a busy bed). `suspended`: the Jobs
/// are created with `spec.suspend: true`, so no pod follows (the API server's
/// create cost alone, as for Jobs queued for Kueue); otherwise each create sets
/// off the Job controller, scheduler and kwok as a real burst does.
pub fn raw_ceiling(b: &Bed, n: usize, connections: usize, suspended: bool) -> Creates {
    ceiling_with_records(b, n, connections, suspended, 0)
}

/// `raw_ceiling` with `records` annotation PATCHes per Job after its create
/// (`create_jobs_with_records`): the ceiling for the worker's write load.
pub fn ceiling_with_records(
    b: &Bed,
    n: usize,
    connections: usize,
    suspended: bool,
    records: usize,
) -> Creates {
    let ns = b.new_namespace("ceiling");
    let c = create_jobs_with_records(b, &ns, "c", n, connections, records, |name| {
        let mut j = minimal_job(name, "1");
        if suspended {
            j["spec"]["suspend"] = json!(true);
        }
        j
    });
    eprintln!(
        "[load] ceiling: {} {}Jobs ({records} record(s) each) on {} connection(s) in {:.2}s = {:.0} Jobs/s ({} errors)",
        c.created,
        if suspended { "suspended " } else { "" },
        connections,
        c.secs,
        c.per_sec(),
        c.errors
    );
    delete_namespace(b, &ns, Duration::from_secs(300));
    c
}

/// The bed's drain rate.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    pub creates: Creates,
    /// First create → the last Job Complete.
    pub all_complete_secs: f64,
    pub completed: usize,
    /// First create → half of them Complete.
    pub half_complete_secs: f64,
}

impl Drain {
    /// Jobs from creation to Complete per second (completed / all_complete_secs).
    pub fn per_sec(&self) -> f64 {
        self.completed as f64 / self.all_complete_secs
    }
}

/// Creates `n` minimal Jobs (pods of `run_seconds`) on `connections` connections
/// into a fresh namespace and times, through a watch, until every one is Complete
/// (at most `timeout`). Nothing else should run on the bed meanwhile.
pub fn drain_rate(
    b: &Bed,
    n: usize,
    connections: usize,
    run_seconds: &str,
    timeout: Duration,
) -> Drain {
    let ns = b.new_namespace("drain");
    let jobs = format!("/apis/batch/v1/namespaces/{ns}/jobs");
    let mut w = b.kube_watch(&format!("{jobs}?watch=true"), Duration::from_secs(5));
    assert_eq!(w.status, 200, "watch jobs in {ns}");
    let t0 = Instant::now();
    let done = AtomicUsize::new(0);
    let half = std::sync::Mutex::new(None::<f64>);
    let last = std::sync::Mutex::new(None::<f64>);
    let is_complete = |obj: &Value| {
        obj["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
        })
    };
    let mut creates = Creates::default();
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut complete = std::collections::HashSet::new();
            let deadline = t0 + timeout;
            let note = |name: &str, complete: &mut std::collections::HashSet<String>| {
                if complete.insert(name.to_string()) {
                    let t = t0.elapsed().as_secs_f64();
                    done.store(complete.len(), Ordering::Relaxed);
                    if complete.len() * 2 >= n {
                        half.lock().unwrap().get_or_insert(t);
                    }
                    *last.lock().unwrap() = Some(t);
                }
            };
            while complete.len() < n && Instant::now() < deadline {
                match w.next_event() {
                    Some(ev) => {
                        if let (true, Some(name)) = (
                            is_complete(&ev["object"]),
                            ev["object"]["metadata"]["name"].as_str(),
                        ) {
                            note(name, &mut complete);
                        }
                    }
                    None => {
                        // Quiet for 5 s or the stream ended: resync from a list
                        // and watch again from its resourceVersion.
                        let (st, list) = b.kube_get(&jobs);
                        if st != 200 {
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                        for j in list["items"].as_array().into_iter().flatten() {
                            if let (true, Some(name)) =
                                (is_complete(j), j["metadata"]["name"].as_str())
                            {
                                note(name, &mut complete);
                            }
                        }
                        let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("");
                        w = b.kube_watch(
                            &format!("{jobs}?watch=true&resourceVersion={rv}"),
                            Duration::from_secs(5),
                        );
                    }
                }
            }
        });
        creates = create_jobs(b, &ns, "d", n, connections, |name| {
            minimal_job(name, run_seconds)
        });
        eprintln!(
            "[load] drain: {} Jobs created in {:.2}s ({:.0}/s); waiting for Complete...",
            creates.created,
            creates.secs,
            creates.per_sec()
        );
        let mut shown = Instant::now();
        while !watcher.is_finished() {
            std::thread::sleep(Duration::from_millis(200));
            if shown.elapsed() > Duration::from_secs(10) {
                shown = Instant::now();
                eprintln!(
                    "[load] drain: {} of {n} Complete after {:.0}s",
                    done.load(Ordering::Relaxed),
                    t0.elapsed().as_secs_f64()
                );
            }
        }
    });
    let completed = done.load(Ordering::Relaxed);
    let d = Drain {
        creates,
        all_complete_secs: last.lock().unwrap().unwrap_or(f64::NAN),
        completed,
        half_complete_secs: half.lock().unwrap().unwrap_or(f64::NAN),
    };
    eprintln!(
        "[load] drain: {completed} of {n} Complete, the last after {:.1}s (half after {:.1}s) = {:.1} Jobs/s",
        d.all_complete_secs,
        d.half_complete_secs,
        d.per_sec()
    );
    delete_namespace(b, &ns, Duration::from_secs(300));
    d
}

/// Deletes namespace `ns` and waits (at most `timeout`) until it is gone.
pub fn delete_namespace(b: &Bed, ns: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    b.kube_delete(&format!("/api/v1/namespaces/{ns}"), None);
    let gone = wait_for(timeout, || {
        b.kube_get(&format!("/api/v1/namespaces/{ns}")).0 == 404
    });
    eprintln!(
        "[load] namespace {ns} {} after {:.1}s",
        if gone { "gone" } else { "still there" },
        t.elapsed().as_secs_f64()
    );
    gone
}
