//! The manifests of deploy/ on the test bed. The ServiceAccount, Roles and
//! RoleBindings are applied as they are (only the two namespace names made
//! unique per run), the worker runs with a TokenRequest token of that
//! ServiceAccount and nothing else, and a seed message must go 0 → 1 → 2 while
//! the worker holds the Lease. Also: the Deployment's pod template passes the
//! `restricted` Pod Security Standard the worker namespace enforces, the
//! ServiceAccount can do nothing beyond what the Roles grant, and a Role
//! without `patch` shows up as a 403 in the worker's log. The cluster-wide
//! component's ClusterRole runs the worker with ALLOWED_NAMESPACES empty, and
//! the Grafana dashboard queries only declared metric families.
//!
//! The YAML is converted to JSON by the test bed's venv python (PyYAML).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::worker::{Launcher, Q, SEED_002, Worker};
use support::{WebhookReceiver, bed, repo_root, unique, wait_for};

const SA: &str = "k8s-job-worker";
const DEFAULT_LOCK: &str = "aws-sqs-job-worker-lock";

/// Every document of deploy/NAME as JSON.
fn manifest(name: &str) -> Vec<Value> {
    let path = repo_root().join("deploy").join(name);
    let out = Command::new(&bed().python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             print(json.dumps(docs))",
        ])
        .arg(&path)
        .stderr(Stdio::inherit())
        .output()
        .expect("run python");
    assert!(out.status.success(), "converting {}", path.display());
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// The two namespaces of one run.
struct Names {
    worker: String,
    jobs: String,
}

impl Names {
    fn new() -> Names {
        Names {
            worker: unique("kjw"),
            jobs: unique("kjw-jobs"),
        }
    }
    fn map(&self, ns: &str) -> String {
        match ns {
            "k8s-job-worker" => self.worker.clone(),
            "jobs" => self.jobs.clone(),
            other => panic!("manifest names an unexpected namespace {other:?}"),
        }
    }
    /// The same object in this run's namespaces.
    fn localize(&self, mut o: Value) -> Value {
        if o["kind"] == "Namespace" {
            let n = self.map(o["metadata"]["name"].as_str().unwrap());
            o["metadata"]["name"] = json!(n);
        }
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            let n = self.map(ns);
            o["metadata"]["namespace"] = json!(n);
        }
        if let Some(subjects) = o["subjects"].as_array_mut() {
            for s in subjects {
                if let Some(ns) = s["namespace"].as_str() {
                    let n = self.map(ns);
                    s["namespace"] = json!(n);
                }
            }
        }
        o
    }
}

/// The REST collection an object is created in.
fn collection(o: &Value) -> String {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
    let api = o["apiVersion"].as_str().unwrap();
    let plural = match o["kind"].as_str().unwrap() {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "ConfigMap" => "configmaps",
        "Service" => "services",
        "Deployment" => "deployments",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Pod" => "pods",
        k => panic!("no collection for kind {k}"),
    };
    let base = if api == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api}")
    };
    if ns.is_empty() {
        format!("{base}/{plural}")
    } else {
        format!("{base}/namespaces/{ns}/{plural}")
    }
}

fn create(o: &Value) {
    let (code, body) = bed().kube_post(&collection(o), o);
    assert_eq!(
        code, 201,
        "creating {} {}: {body}",
        o["kind"], o["metadata"]["name"]
    );
}

/// Applies namespaces, ServiceAccount, ConfigMap, Service, Roles and
/// RoleBindings of deploy/ (with `edit_jobs_role` applied to the jobs Role),
/// and returns a token of the worker's ServiceAccount.
fn apply(n: &Names, edit_jobs_role: impl Fn(&mut Value)) -> String {
    apply_files(n, &["rbac-jobs.yaml"], edit_jobs_role)
}

/// `apply` with `rbac` (paths under deploy/) as the Job permissions.
fn apply_files(n: &Names, rbac: &[&str], edit_jobs_role: impl Fn(&mut Value)) -> String {
    let b = bed();
    for o in manifest("namespace.yaml") {
        create(&n.localize(o));
    }
    // Job pods run as the jobs namespace's default ServiceAccount (the seed's).
    let sa_path = format!("/api/v1/namespaces/{}/serviceaccounts/default", n.jobs);
    assert!(
        wait_for(Duration::from_secs(30), || b.kube_get(&sa_path).0 == 200),
        "no default ServiceAccount in {}",
        n.jobs
    );
    let files = [
        "serviceaccount.yaml",
        "configmap.yaml",
        "service.yaml",
        "rbac-leader.yaml",
    ];
    for file in files.iter().chain(rbac) {
        for o in manifest(file) {
            let mut o = n.localize(o);
            // Cluster-scoped names are shared by every run: make them unique too.
            if o["kind"] == "ClusterRole" {
                o["metadata"]["name"] = json!(format!(
                    "{}-{}",
                    o["metadata"]["name"].as_str().unwrap(),
                    n.worker
                ));
            }
            if o["kind"] == "ClusterRoleBinding" {
                o["metadata"]["name"] = json!(format!(
                    "{}-{}",
                    o["metadata"]["name"].as_str().unwrap(),
                    n.worker
                ));
                o["roleRef"]["name"] = json!(format!(
                    "{}-{}",
                    o["roleRef"]["name"].as_str().unwrap(),
                    n.worker
                ));
            }
            if o["kind"] == "Role" && o["metadata"]["name"] == "k8s-job-worker-jobs" {
                edit_jobs_role(&mut o);
            }
            create(&o);
        }
    }
    let (code, tr) = b.kube_post(
        &format!("/api/v1/namespaces/{}/serviceaccounts/{SA}/token", n.worker),
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}}),
    );
    assert_eq!(code, 201, "TokenRequest: {tr}");
    tr["status"]["token"]
        .as_str()
        .expect("status.token")
        .to_string()
}

/// The worker as the Deployment runs it (in the worker namespace, allowed to
/// create Jobs in `allowed`), but with `token` as its only credential: the
/// default environment of tests/support/worker.rs with KUBE_TOKEN_FILE and
/// ALLOWED_NAMESPACES replaced, and no LEADER_ELECTION_LOCK_NAME (the default
/// Lease), ALLOWED_PVCS, REDIS_DB or CALLBACK_BACKOFF_MAX.
fn start_allowing(n: &Names, token: &str, allowed: &str) -> Worker {
    let token_file = bed().dir.join(format!("{}.token", unique("rbac")));
    std::fs::write(&token_file, token).expect("token file");
    let d = Launcher::new(Q::Redis)
        .namespace(&n.worker)
        .instance_tag("rbac")
        .env("KUBE_TOKEN_FILE", &token_file.to_string_lossy())
        .env("ALLOWED_NAMESPACES", allowed)
        .no_env("LEADER_ELECTION_LOCK_NAME")
        .no_env("ALLOWED_PVCS")
        .no_env("REDIS_DB")
        .no_env("CALLBACK_BACKOFF_MAX")
        .deploy();
    d.spawn(&format!("{}-pod-0", d.instance))
}

fn start(n: &Names, token: &str) -> Worker {
    start_allowing(n, token, &n.jobs)
}

/// The seed example for the jobs namespace (scheduling constraints and
/// volume dropped: the bed has no such node or PVC), with a payload (so its
/// Secret is created under the same Roles); returns its id.
fn send_seed(w: &Worker, n: &Names, hook: &WebhookReceiver) -> String {
    let mut m: Value = serde_json::from_str(SEED_002).expect("seed parses");
    let id = unique("msg");
    m["id"] = json!(id);
    m["payload"] = json!({"rows": [1, 2, 3]});
    m["job"]["namespace"] = json!(n.jobs);
    m["webhook"]["url"] = json!(format!("{}/hook/{id}", hook.url()));
    let job = m["job"].as_object_mut().unwrap();
    for k in ["nodeSelector", "toleration", "volume"] {
        job.remove(k);
    }
    w.send(&m.to_string());
    id
}

fn statuses(hook: &WebhookReceiver, id: &str) -> Vec<u64> {
    hook.delivered()
        .iter()
        .filter(|c| c.body["id"] == json!(id))
        .filter_map(|c| c.body["status"].as_u64())
        .collect()
}

fn wait_terminal(w: &Worker, hook: &WebhookReceiver, id: &str) -> Vec<u64> {
    let ok = wait_for(Duration::from_secs(90), || {
        statuses(hook, id).iter().any(|s| [2, 3, 99].contains(s))
    });
    let got = statuses(hook, id);
    assert!(
        ok,
        "no terminal callback for {id}; got {got:?}\n{}",
        w.logs()
    );
    got
}

fn lease_holder(n: &Names) -> Option<String> {
    let (code, lease) = bed().kube_get(&format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{DEFAULT_LOCK}",
        n.worker
    ));
    (code == 200)
        .then(|| lease["spec"]["holderIdentity"].as_str().map(str::to_string))
        .flatten()
}

#[test]
fn kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(repo_root().join("deploy/kustomization.yaml")).unwrap();
    let mut listed: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(str::to_string)
        .collect();
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("deploy"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    files.sort();
    assert_eq!(listed, files);
}

#[test]
fn manifests_run_the_worker_with_least_privilege() {
    let b = bed();
    let n = Names::new();
    let token = apply(&n, |_| {});

    // The pod the Deployment would create is admitted under the `restricted`
    // Pod Security Standard the worker namespace enforces (server-side dry run).
    let deploy = n.localize(manifest("deployment.yaml").remove(0));
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "template-check", "namespace": n.worker,
                     "labels": deploy["spec"]["template"]["metadata"]["labels"]},
        "spec": deploy["spec"]["template"]["spec"]});
    let dry = format!("{}?dryRun=All", collection(&pod));
    let (code, body) = b.kube_post(&dry, &pod);
    assert_eq!(code, 201, "restricted PSS refused the pod template: {body}");
    let (code, body) = b.kube_post(&format!("{}?dryRun=All", collection(&deploy)), &deploy);
    assert_eq!(code, 201, "Deployment refused: {body}");
    // ... and the namespace label really enforces it: a root pod is refused.
    pod["spec"]["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("runAsNonRoot");
    pod["spec"]["containers"][0]["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("runAsNonRoot");
    pod["spec"]["securityContext"]["runAsUser"] = json!(0);
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
    let (code, body) = b.kube_post(&dry, &pod);
    assert_eq!(
        code, 403,
        "a root pod must be refused in {}: {body}",
        n.worker
    );

    // The ServiceAccount can do what the Roles grant and nothing else.
    let can =
        |method: &str, path: &str, body: Option<&Value>| b.kube_as(&token, method, path, body).0;
    let job_list = |ns: &str| format!("/apis/batch/v1/namespaces/{ns}/jobs");
    assert_eq!(can("GET", &job_list(&n.jobs), None), 200);
    assert_eq!(
        can("GET", &format!("/api/v1/namespaces/{}/pods", n.jobs), None),
        200
    );
    assert_eq!(
        can("GET", &job_list(&n.worker), None),
        403,
        "no Jobs in its own namespace"
    );
    assert_eq!(
        can("GET", &job_list("default"), None),
        403,
        "no Jobs elsewhere"
    );
    assert_eq!(
        can("GET", "/apis/batch/v1/jobs", None),
        403,
        "no cluster-wide Jobs"
    );
    // Secrets: create and get (the payload Secret) in the Job namespace, nothing
    // more, nowhere else.
    let secrets = |ns: &str| format!("/api/v1/namespaces/{ns}/secrets");
    let probe = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "rbac-probe"}, "immutable": true, "data": {"k": "dg=="}});
    assert_eq!(
        can("POST", &secrets(&n.jobs), Some(&probe)),
        201,
        "Secret create in the Job namespace"
    );
    assert_eq!(
        can("GET", &format!("{}/rbac-probe", secrets(&n.jobs)), None),
        200
    );
    assert_eq!(can("GET", &secrets(&n.jobs), None), 403, "no Secret list");
    assert_eq!(
        can("GET", &format!("{}?watch=1", secrets(&n.jobs)), None),
        403,
        "no Secret watch"
    );
    assert_eq!(
        can("DELETE", &format!("{}/rbac-probe", secrets(&n.jobs)), None),
        403,
        "no Secret delete"
    );
    assert_eq!(
        can(
            "PUT",
            &format!("{}/rbac-probe", secrets(&n.jobs)),
            Some(&probe)
        ),
        403,
        "no Secret update"
    );
    assert_eq!(
        can("GET", &format!("{}/rbac-probe", secrets(&n.worker)), None),
        403,
        "no Secrets in its own namespace"
    );
    assert_eq!(
        can("POST", &secrets(&n.worker), Some(&probe)),
        403,
        "no Secret create in its own namespace"
    );
    assert_eq!(
        can("GET", &format!("{}/rbac-probe", secrets("default")), None),
        403,
        "no Secrets elsewhere"
    );
    // Its own namespace holds its cancel tombstones (ConfigMaps); none elsewhere.
    assert_eq!(
        can(
            "GET",
            &format!("/api/v1/namespaces/{}/configmaps", n.worker),
            None
        ),
        200,
        "cancel tombstones: ConfigMaps in its own namespace"
    );
    assert_eq!(
        can(
            "GET",
            &format!("/api/v1/namespaces/{}/configmaps", n.jobs),
            None
        ),
        403,
        "no ConfigMaps in the Job namespaces (envFrom is the kubelet's)"
    );
    assert_eq!(
        can(
            "GET",
            &format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", n.jobs),
            None
        ),
        403,
        "Leases only in its own namespace"
    );

    // The worker, with that token only: leads, and runs the seed 0 → 1 → 2.
    let hook = WebhookReceiver::start();
    let w = start(&n, &token);
    assert!(
        wait_for(Duration::from_secs(30), || lease_holder(&n).as_deref()
            == Some(w.name.as_str())),
        "Lease {DEFAULT_LOCK} in {} not held by {}: {:?}\n{}",
        n.worker,
        w.name,
        lease_holder(&n),
        w.logs()
    );
    let id = send_seed(&w, &n, &hook);
    assert_eq!(wait_terminal(&w, &hook, &id), vec![0, 1, 2], "{}", w.logs());
    assert_eq!(lease_holder(&n).as_deref(), Some(w.name.as_str()));
    // A cancel before its request, under the same Roles: the tombstone is
    // created and consumed (ConfigMaps in its own namespace), the Job created
    // cancelled, patched and deleted; only 3 CANCELLED.
    let early = unique("msg");
    w.send(&json!({"id": early, "action": "cancel"}).to_string());
    assert!(
        wait_for(Duration::from_secs(30), || {
            let (c, l) = b.kube_get(&format!("/api/v1/namespaces/{}/configmaps", n.worker));
            c == 200 && l["items"].as_array().is_some_and(|i| !i.is_empty())
        }),
        "the cancel tombstone exists\n{}",
        w.logs()
    );
    let early_job = {
        let mut m: Value = serde_json::from_str(SEED_002).expect("seed parses");
        m["id"] = json!(early);
        m["job"]["namespace"] = json!(n.jobs);
        m["job"]["prefixName"] = json!("cx");
        m["webhook"]["url"] = json!(format!("{}/hook/{early}", hook.url()));
        let job = m["job"].as_object_mut().unwrap();
        for k in ["nodeSelector", "toleration", "volume"] {
            job.remove(k);
        }
        m.to_string()
    };
    w.send(&early_job);
    assert_eq!(wait_terminal(&w, &hook, &early), vec![3], "{}", w.logs());
    let logs = w.logs();
    for bad in [" 403 ", "Forbidden", "forbidden"] {
        assert!(
            !logs.contains(bad),
            "the Roles are missing a verb ({bad}):\n{logs}"
        );
    }
    // The delivered statuses were recorded on the Job and the worker's
    // finalizer released (one patch: the verb works).
    let recorded = |job: &Value| {
        job["metadata"]["annotations"]["k8s-job-worker.io/delivered"] == "2"
            && !job["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|v| v == k8s_job_worker::contract::FINALIZER))
    };
    let mut job = Value::Null;
    assert!(
        wait_for(Duration::from_secs(10), || {
            job = b.kube_get(&job_list(&n.jobs)).1["items"][0].clone();
            recorded(&job)
        }),
        "delivered annotation not recorded or finalizer kept: {job}"
    );
    // The payload Secret was created with those Roles, owned by the Job.
    let name = job["metadata"]["name"].as_str().unwrap();
    let (code, secret) = b.kube_get(&format!("{}/{name}", secrets(&n.jobs)));
    assert_eq!(code, 200, "payload Secret {name}: {secret}");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        job["metadata"]["uid"]
    );
}

#[test]
fn a_role_without_patch_shows_as_403() {
    let n = Names::new();
    let token = apply(&n, |role| {
        let verbs = role["rules"][0]["verbs"].as_array_mut().unwrap();
        verbs.retain(|v| v != "patch");
    });
    let hook = WebhookReceiver::start();
    let w = start(&n, &token);
    let id = send_seed(&w, &n, &hook);
    // The callbacks still go out, but the worker cannot record them on the Job.
    assert_eq!(wait_terminal(&w, &hook, &id), vec![0, 1, 2]);
    assert!(
        wait_for(Duration::from_secs(10), || w
            .logs()
            .contains(" 403 Forbidden")),
        "no 403 in the worker's log:\n{}",
        w.logs()
    );
    let logs = w.logs();
    let line = logs
        .lines()
        .find(|l| l.contains(" 403 Forbidden"))
        .unwrap_or_default();
    assert!(line.contains("cannot patch"), "{line}");
}

#[test]
fn dashboard_queries_only_declared_metrics() {
    let text = std::fs::read_to_string(repo_root().join("deploy/grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let declared: Vec<String> = k8s_job_worker::metrics::FAMILIES
        .iter()
        .map(|(n, _, _)| format!("job_worker_{n}"))
        .collect();
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        for (i, _) in e.match_indices("job_worker_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| declared.iter().any(|d| d == f))
                })
                .unwrap_or(&name)
                .to_string();
            assert!(
                declared.contains(&family),
                "{name} in {e:?} is not a declared metric"
            );
            used.insert(family);
        }
    }
    for want in [
        "messages_received_total",
        "messages_acknowledged_total",
        "messages_rejected_total",
        "jobs_created_total",
        "jobs_finished_total",
        "callbacks_sent_total",
        "callback_delivery_seconds",
        "queue_to_job_seconds",
        "jobs_in_flight",
        "leader",
        "watch_restarts_total",
    ] {
        assert!(
            used.contains(&format!("job_worker_{want}")),
            "no panel for {want}"
        );
    }
}

#[test]
fn cluster_wide_component_runs_the_worker_in_any_namespace() {
    let b = bed();
    let n = Names::new();
    let token = apply_files(&n, &["cluster-wide/clusterrole.yaml"], |_| {});
    // The component's Deployment patch empties ALLOWED_NAMESPACES.
    let patch = manifest("cluster-wide/deployment-patch.yaml").remove(0);
    let env = &patch["spec"]["template"]["spec"]["containers"][0]["env"];
    let allowed = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ALLOWED_NAMESPACES")
        .map(|e| e["value"].as_str().unwrap().to_string())
        .expect("ALLOWED_NAMESPACES in the patch");
    assert_eq!(allowed, "");
    assert_eq!(b.kube_as(&token, "GET", "/apis/batch/v1/jobs", None).0, 200);
    assert_eq!(b.kube_as(&token, "GET", "/api/v1/pods", None).0, 200);
    assert_eq!(
        b.kube_as(
            &token,
            "GET",
            &format!("/api/v1/namespaces/{}/secrets", n.jobs),
            None
        )
        .0,
        403
    );
    let hook = WebhookReceiver::start();
    let w = start_allowing(&n, &token, &allowed);
    let id = send_seed(&w, &n, &hook);
    assert_eq!(wait_terminal(&w, &hook, &id), vec![0, 1, 2], "{}", w.logs());
    assert_eq!(lease_holder(&n).as_deref(), Some(w.name.as_str()));
    assert!(!w.logs().contains(" 403 Forbidden"), "{}", w.logs());
}
