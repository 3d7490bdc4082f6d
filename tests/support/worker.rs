//! One launcher for the worker binary on the test bed, and the message and
//! callback helpers the end-to-end tests share.
//!
//! ```ignore
//! let w = Launcher::new(Q::Redis).ns_tag("obs").env("LOG_FORMAT", "json").start();
//! ```
//!
//! `Launcher` (builder) → `deploy()` → `Deployment` (namespace, instance,
//! queue, Lease name: what the replicas of one worker share) → `spawn(pod)` →
//! `Worker` (one process, killed on drop). `start()` is `deploy()` then one
//! replica named `<instance>-pod`. A `Worker` derefs to its `Deployment`
//! (`w.ns`, `w.send(..)`, `w.jobs()`, `w.queued()`).
//!
//! Default environment (each can be overridden with `env` or removed with
//! `no_env`): RUST_LOG=info,k8s_job_worker=debug, the bed's apiserver and admin
//! token, POD_NAME, POD_NAMESPACE, LEADER_ELECTION_LOCK_NAME, WORKER_INSTANCE,
//! ALLOWED_NAMESPACES=<ns>, ALLOWED_ENV_REFS=configmap/busybox-default and
//! ALLOWED_PVCS=ps-pvc (the seed example's envRef and PVC, which the policy
//! denies by default), HTTP_SERVER_PORT, POLLING_INTERVAL=1,
//! CALLBACK_BACKOFF_MAX=3, then the queue's variables (Redis: QUEUE_TYPE,
//! REDIS_ENDPOINT, REDIS_DB=0, REDIS_JOB_KEY_PREFIX; SQS: QUEUE_TYPE,
//! AWS_SQS_URL, AWS_SQS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
#![allow(dead_code)]

use std::net::TcpListener;
use std::ops::Deref;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Call, WebhookReceiver, bed, unique, wait_for};

pub const SEED_002: &str = include_str!("../../example/seed-002.json");

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Q {
    Redis,
    Sqs,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The child dies with the test process (PR_SET_PDEATHSIG).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Builder of a worker deployment; see the module doc.
#[derive(Clone)]
pub struct Launcher {
    q: Q,
    bin: PathBuf,
    ns_tag: String,
    ns: Option<String>,
    instance_tag: String,
    fifo: bool,
    redis_port: Option<u16>,
    kube_url: Option<String>,
    /// Overrides (Some) and removals (None) of the default environment, in order.
    env: Vec<(String, Option<String>)>,
    split_output: bool,
    die_with_parent: bool,
    log_tail: Option<usize>,
}

impl Launcher {
    pub fn new(q: Q) -> Launcher {
        Launcher {
            q,
            bin: PathBuf::from(env!("CARGO_BIN_EXE_k8s-job-worker")),
            ns_tag: "e2e".into(),
            ns: None,
            instance_tag: "w".into(),
            fifo: false,
            redis_port: None,
            kube_url: None,
            env: Vec::new(),
            split_output: false,
            die_with_parent: false,
            log_tail: None,
        }
    }

    /// The worker binary (default: this crate's debug build).
    pub fn bin(mut self, bin: PathBuf) -> Self {
        self.bin = bin;
        self
    }

    /// Prefix of the namespace created for the deployment (default `e2e`).
    pub fn ns_tag(mut self, tag: &str) -> Self {
        self.ns_tag = tag.into();
        self
    }

    /// An existing namespace (POD_NAMESPACE, ALLOWED_NAMESPACES) instead of a new one.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.ns = Some(ns.into());
        self
    }

    /// Prefix of WORKER_INSTANCE, the Redis key prefix and the SQS queue (default `w`).
    pub fn instance_tag(mut self, tag: &str) -> Self {
        self.instance_tag = tag.into();
        self
    }

    /// SQS: a FIFO queue.
    pub fn fifo(mut self) -> Self {
        self.fifo = true;
        self
    }

    /// Redis: another server than the bed's (`127.0.0.1:<port>`).
    pub fn redis_port(mut self, port: u16) -> Self {
        self.redis_port = Some(port);
        self
    }

    /// KUBE_API_URL other than the bed's apiserver (e.g. a proxy to it).
    pub fn kube_url(mut self, url: String) -> Self {
        self.kube_url = Some(url);
        self
    }

    /// Sets (or overrides) one variable of the worker's environment.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), Some(v.into())));
        self
    }

    pub fn envs(mut self, kv: &[(&str, &str)]) -> Self {
        for (k, v) in kv {
            self = self.env(k, v);
        }
        self
    }

    /// Removes a variable of the default environment.
    pub fn no_env(mut self, k: &str) -> Self {
        self.env.push((k.into(), None));
        self
    }

    /// stdout and stderr to separate files (`stdout()`, `stderr()`).
    pub fn split_output(mut self) -> Self {
        self.split_output = true;
        self
    }

    /// The worker gets SIGKILL when the test process dies (PR_SET_PDEATHSIG).
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    /// On a panic, print only the last `n` log lines (default: all).
    pub fn log_tail(mut self, n: usize) -> Self {
        self.log_tail = Some(n);
        self
    }

    /// Creates the namespace (and the SQS queue); starts no process.
    pub fn deploy(self) -> Deployment {
        let b = bed();
        let ns = match &self.ns {
            Some(ns) => ns.clone(),
            None => b.new_namespace(&self.ns_tag),
        };
        let instance = unique(&self.instance_tag);
        let sqs_url = if self.q == Q::Sqs {
            b.sqs_create_queue(&instance, self.fifo)
        } else {
            String::new()
        };
        Deployment {
            redis_prefix: format!("{instance}-"),
            lock: format!("{instance}-lock"),
            redis_port: self.redis_port.unwrap_or(b.redis_port),
            kube_url: self.kube_url.clone().unwrap_or_else(|| b.api_url.clone()),
            ns,
            instance,
            sqs_url,
            q: self.q,
            launcher: self,
        }
    }

    /// `deploy()` and one replica, `<instance>-pod`.
    pub fn start(self) -> Worker {
        let d = self.deploy();
        let pod = format!("{}-pod", d.instance);
        d.spawn(&pod)
    }
}

/// What the replicas of one worker deployment share.
#[derive(Clone)]
pub struct Deployment {
    pub q: Q,
    pub ns: String,
    pub instance: String,
    pub redis_prefix: String,
    pub sqs_url: String,
    pub lock: String,
    pub redis_port: u16,
    pub kube_url: String,
    launcher: Launcher,
}

impl Deployment {
    /// The same deployment, whose replicas spawned from it get one more variable.
    pub fn with_env(&self, k: &str, v: &str) -> Deployment {
        let mut d = self.clone();
        d.launcher = d.launcher.env(k, v);
        d
    }

    /// Starts one replica with POD_NAME `pod`.
    pub fn spawn(&self, pod: &str) -> Worker {
        let b = bed();
        let l = &self.launcher;
        let run = unique("run");
        let http_port = free_port();
        let mut cmd = Command::new(&l.bin);
        cmd.env_clear()
            .env("RUST_LOG", "info,k8s_job_worker=debug")
            .env("KUBE_API_URL", &self.kube_url)
            .env("KUBE_TOKEN_FILE", &b.admin_token_file)
            .env("KUBE_CA_FILE", &b.ca_file)
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", &self.ns)
            .env("LEADER_ELECTION_LOCK_NAME", &self.lock)
            .env("WORKER_INSTANCE", &self.instance)
            .env("ALLOWED_NAMESPACES", &self.ns)
            .env("ALLOWED_ENV_REFS", "configmap/busybox-default")
            .env("ALLOWED_PVCS", "ps-pvc")
            .env("HTTP_SERVER_PORT", http_port.to_string())
            .env("POLLING_INTERVAL", "1")
            .env("CALLBACK_BACKOFF_MAX", "3");
        match self.q {
            Q::Redis => {
                cmd.env("QUEUE_TYPE", "redis")
                    .env("REDIS_ENDPOINT", format!("127.0.0.1:{}", self.redis_port))
                    .env("REDIS_DB", "0")
                    .env("REDIS_JOB_KEY_PREFIX", &self.redis_prefix);
            }
            Q::Sqs => {
                cmd.env("QUEUE_TYPE", "sqs")
                    .env("AWS_SQS_URL", &self.sqs_url)
                    .env("AWS_SQS_REGION", &b.aws_region)
                    .env("AWS_ACCESS_KEY_ID", &b.aws_access_key_id)
                    .env("AWS_SECRET_ACCESS_KEY", &b.aws_secret_access_key);
            }
        }
        for (k, v) in &l.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if l.die_with_parent {
            die_with_parent(&mut cmd);
        }
        let (out, err) = if l.split_output {
            (
                b.dir.join(format!("worker-{pod}-{run}.out.log")),
                Some(b.dir.join(format!("worker-{pod}-{run}.err.log"))),
            )
        } else {
            (b.dir.join(format!("worker-{pod}-{run}.log")), None)
        };
        let out_file = std::fs::File::create(&out).expect("worker log");
        let err_file = match &err {
            Some(e) => std::fs::File::create(e).expect("worker stderr log"),
            None => out_file.try_clone().expect("worker log"),
        };
        let child = cmd
            .stdout(Stdio::from(out_file))
            .stderr(Stdio::from(err_file))
            .spawn()
            .expect("spawn worker");
        Worker {
            child,
            out,
            err,
            http_port,
            name: pod.to_string(),
            d: self.clone(),
        }
    }

    /// `spawn` with another worker binary and extra variables (the
    /// fault-injection build, `support::fault_binary`).
    pub fn spawn_with(&self, pod: &str, bin: &std::path::Path, extra: &[(&str, &str)]) -> Worker {
        let mut d = self.clone();
        d.launcher.bin = bin.to_path_buf();
        for (k, v) in extra {
            d.launcher.env.push(((*k).into(), Some((*v).into())));
        }
        d.spawn(pod)
    }

    /// A new connection to the deployment's Redis.
    pub fn redis_conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/0", self.redis_port).as_str())
            .and_then(|c| c.get_connection())
            .expect("redis connection")
    }

    /// Enqueues all bodies: Redis in one LPUSH; SQS one SendMessage each.
    pub fn send_all(&self, bodies: &[String]) {
        if bodies.is_empty() {
            return;
        }
        match self.q {
            Q::Redis => {
                let mut c = redis::cmd("LPUSH");
                c.arg(format!("{}queue", self.redis_prefix));
                for b in bodies {
                    c.arg(b.as_str());
                }
                let _: i64 = c.query(&mut self.redis_conn()).expect("LPUSH");
            }
            Q::Sqs => {
                for b in bodies {
                    bed()
                        .aws_call(
                            "sqs",
                            "send_message",
                            &json!({"QueueUrl": self.sqs_url, "MessageBody": b}),
                        )
                        .unwrap_or_else(|e| panic!("send_message: {e}"));
                }
            }
        }
    }

    pub fn send(&self, body: &str) {
        self.send_all(&[body.to_string()]);
    }

    /// Messages still in the queue (visible or in flight / processing).
    pub fn queued(&self) -> i64 {
        match self.q {
            Q::Redis => {
                let mut c = self.redis_conn();
                let queued = redis::cmd("LLEN")
                    .arg(format!("{}queue", self.redis_prefix))
                    .query::<i64>(&mut c)
                    .unwrap_or(-1);
                queued + redis_processing_len(&mut c, &self.redis_prefix)
            }
            Q::Sqs => {
                let r = bed()
                    .aws_call(
                        "sqs",
                        "get_queue_attributes",
                        &json!({"QueueUrl": self.sqs_url, "AttributeNames": ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]}),
                    )
                    .unwrap_or_else(|e| panic!("get_queue_attributes: {e}"));
                let n = |k: &str| {
                    r["Attributes"][k]
                        .as_str()
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(-1)
                };
                n("ApproximateNumberOfMessages") + n("ApproximateNumberOfMessagesNotVisible")
            }
        }
    }

    /// The Jobs labelled with this deployment's instance.
    pub fn jobs(&self) -> Vec<Value> {
        let (code, list) = bed().kube_get(&format!(
            "/apis/batch/v1/namespaces/{}/jobs?labelSelector=k8s-job-worker.io%2Finstance%3D{}",
            self.ns, self.instance
        ));
        assert_eq!(code, 200, "{list}");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// The Lease's holderIdentity ("" when released or missing).
    pub fn holder(&self) -> String {
        let (code, v) = bed().kube_get(&format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.ns, self.lock
        ));
        if code != 200 {
            return String::new();
        }
        v["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// A worker process; SIGKILLed on drop (its log is kept in the bed's dir and
/// printed when the test panics).
pub struct Worker {
    child: Child,
    out: PathBuf,
    err: Option<PathBuf>,
    pub http_port: u16,
    /// POD_NAME.
    pub name: String,
    d: Deployment,
}

impl Deref for Worker {
    type Target = Deployment;
    fn deref(&self) -> &Deployment {
        &self.d
    }
}

impl Worker {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// stdout (and stderr unless `split_output`).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// stderr (`split_output`), else "".
    pub fn stderr(&self) -> String {
        self.err
            .as_ref()
            .and_then(|e| std::fs::read_to_string(e).ok())
            .unwrap_or_default()
    }

    /// Everything the worker wrote.
    pub fn logs(&self) -> String {
        if self.err.is_some() {
            format!(
                "-- stdout --\n{}-- stderr --\n{}",
                self.stdout(),
                self.stderr()
            )
        } else {
            self.stdout()
        }
    }

    /// GET on the worker's HTTP port: (status, body); status 0 when unreachable.
    pub fn get(&self, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        match agent
            .get(&format!("http://127.0.0.1:{}{path}", self.http_port))
            .call()
        {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// The /metrics text ("" unless it answered 200).
    pub fn metrics(&self) -> String {
        ureq::get(&format!("http://127.0.0.1:{}/metrics", self.http_port))
            .call()
            .ok()
            .and_then(|r| r.into_body().read_to_string().ok())
            .unwrap_or_default()
    }

    /// The sum of a metric's samples (all label sets), if it has any.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self.get("/metrics").1;
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(|a, b| a + b)
    }

    pub fn is_leader_by_metrics(&self) -> bool {
        self.metrics()
            .lines()
            .any(|l| l.trim() == "job_worker_leader 1")
    }

    /// The exit status, if the process has exited (reaps it).
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let logs = self.logs();
            let shown = match self.d.launcher.log_tail {
                Some(n) => {
                    let all: Vec<&str> = logs.lines().collect();
                    all[all.len().saturating_sub(n)..].join("\n")
                }
                None => logs,
            };
            eprintln!(
                "---- worker {} ({}) ----\n{shown}",
                self.name,
                self.out.display()
            );
        }
    }
}

// ------------------------------------------------------------ messages, callbacks

/// The seed example with a new id, in `ns`, calling back `<hook_url>/hook/<id>`;
/// ttlSecondsAfterFinished 600; then `tweak`. Returns (id, body).
pub fn seed_message(ns: &str, hook_url: &str, tweak: impl FnOnce(&mut Value)) -> (String, String) {
    let mut m: Value = serde_json::from_str(SEED_002).expect("seed example parses");
    let id = unique("msg");
    m["id"] = json!(id);
    m["job"]["namespace"] = json!(ns);
    m["webhook"]["url"] = json!(format!("{hook_url}/hook/{id}"));
    m["job"]["ttlSecondsAfterFinished"] = json!(600);
    tweak(&mut m);
    (id, m.to_string())
}

/// A message with a test-specific id, namespace and webhook.
pub fn message(
    w: &Deployment,
    hook: &WebhookReceiver,
    tweak: impl FnOnce(&mut Value),
) -> (String, String) {
    seed_message(&w.ns, &hook.url(), tweak)
}

pub fn calls_for(hook: &WebhookReceiver, id: &str) -> Vec<Call> {
    hook.delivered()
        .into_iter()
        .filter(|c| c.body["id"] == json!(id))
        .collect()
}

pub fn statuses(calls: &[Call]) -> Vec<u64> {
    calls
        .iter()
        .filter_map(|c| c.body["status"].as_u64())
        .collect()
}

/// Waits until the message's delivered callbacks end with a terminal status.
pub fn wait_terminal(w: &Worker, hook: &WebhookReceiver, id: &str, timeout: Duration) -> Vec<Call> {
    let ok = wait_for(timeout, || {
        statuses(&calls_for(hook, id))
            .iter()
            .any(|s| [2, 3, 99].contains(s))
    });
    let calls = calls_for(hook, id);
    assert!(
        ok,
        "no terminal callback for {id} within {timeout:?}; got {:?}\n{}",
        statuses(&calls),
        w.logs()
    );
    calls
}

/// Sends one message that completes, one whose Job fails and one invalid one
/// (backoffLimit "zero"), in that order, and waits for their terminal
/// callbacks: statuses 0, 1, 2 / 0, 1, 3 / 99. Returns their ids in that order.
pub fn complete_fail_invalid(w: &Worker, hook: &WebhookReceiver) -> [String; 3] {
    let (ok_id, ok) = message(w, hook, |_| {});
    let (fail_id, fail) = message(w, hook, |m| {
        m["job"]["fargate"] = json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "fail"});
    });
    let (bad_id, bad) = message(w, hook, |m| m["job"]["backoffLimit"] = json!("zero"));
    for b in [&ok, &fail, &bad] {
        w.send(b);
    }
    assert_eq!(
        statuses(&wait_terminal(w, hook, &ok_id, Duration::from_secs(90))),
        vec![0, 1, 2]
    );
    assert_eq!(
        statuses(&wait_terminal(w, hook, &fail_id, Duration::from_secs(90))),
        vec![0, 1, 3]
    );
    assert_eq!(
        statuses(&wait_terminal(w, hook, &bad_id, Duration::from_secs(60))),
        vec![99]
    );
    [ok_id, fail_id, bad_id]
}

/// PV + PVC `ps-pvc` for the seed's volume (bound by the PV controller).
pub fn make_pvc(ns: &str) {
    let b = bed();
    let pv = unique("pv");
    let (c, v) = b.kube_post(
        "/api/v1/persistentvolumes",
        &json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/tmp/pv"}, "claimRef": {"namespace": ns, "name": "ps-pvc"},
                "persistentVolumeReclaimPolicy": "Retain"}}),
    );
    assert_eq!(c, 201, "{v}");
    let (c, v) = b.kube_post(
        &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "ps-pvc"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": pv, "storageClassName": ""}}),
    );
    assert_eq!(c, 201, "{v}");
}

/// Entries in every processing list of a Redis key prefix: each consumer's
/// `<prefix>processing:<pod>` and the legacy shared `<prefix>processing`.
pub fn redis_processing_len(c: &mut redis::Connection, prefix: &str) -> i64 {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}processing*"))
        .query(c)
        .unwrap_or_default();
    keys.iter()
        .map(|k| redis::cmd("LLEN").arg(k).query::<i64>(c).unwrap_or(0))
        .sum()
}

/// Short election timings for failover tests (LEASE_DURATION > RENEW_DEADLINE
/// > 1.2 × RETRY_PERIOD): a standby takes over within seconds.
pub const FAST_ELECTION: [(&str, &str); 3] = [
    ("LEASE_DURATION", "6"),
    ("RENEW_DEADLINE", "4"),
    ("RETRY_PERIOD", "1"),
];

/// Two replicas of `d`: `<instance>-a`, once its /metrics say it leads, and
/// `<instance>-b` standing by.
pub fn leader_and_standby(d: &Deployment) -> (Worker, Worker) {
    let first = d.spawn(&format!("{}-a", d.instance));
    assert!(
        crate::support::wait_for(Duration::from_secs(30), || first.is_leader_by_metrics()),
        "no leader\n{}",
        first.logs()
    );
    let second = d.spawn(&format!("{}-b", d.instance));
    (first, second)
}

/// kill -9 of `leader`, then waits until `standby` leads; returns the time of
/// the kill.
pub fn kill_and_take_over(leader: &mut Worker, standby: &Worker) -> Instant {
    leader.kill9();
    let t0 = Instant::now();
    assert!(
        crate::support::wait_for(Duration::from_secs(60), || standby.is_leader_by_metrics()),
        "the standby did not take over\n{}",
        standby.logs()
    );
    eprintln!(
        "[failover] new leader {:.1} s after the kill",
        t0.elapsed().as_secs_f64()
    );
    t0
}
