//! Test harness for the local test bed (see testbed/README.md).
//!
//! `bed()` starts the bed once per test binary: it spawns `<venv python>
//! testbed/bed.py` with a piped stdin that stays open for the life of the test
//! process, and reads the one JSON line bed.py prints. When the test process
//! ends for any reason (normal exit, panic, SIGKILL) the pipe closes and bed.py
//! kills every component and removes its temp dir: nothing is left behind.
//!
//! Every test should work in its own namespace (`bed().new_namespace("x")`) so
//! the tests of one binary can run in parallel on the shared bed.
//!
//! Kueue: a test binary that needs it calls `kueue_bed()` (or
//! `bed_with(Options::default().with_kueue())`) in each test before
//! anything else; the bed is then started with the Kueue manager, and `bed()`
//! returns that same bed. Other binaries never start Kueue.

#![allow(clippy::unwrap_used)] // test harness: may unwrap
#![allow(dead_code)]

pub mod container;
pub mod load;
pub mod worker;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Everything a test needs to reach the bed.
pub struct Bed {
    /// `https://127.0.0.1:PORT` of kube-apiserver.
    pub api_url: String,
    /// PEM file that verifies the apiserver (its self-signed CA + cert).
    pub ca_file: PathBuf,
    /// Contents of `ca_file`.
    pub ca_pem: String,
    /// Bearer token of a `system:masters` user.
    pub admin_token: String,
    pub admin_token_file: PathBuf,
    /// Bearer token of a user with no groups and no RBAC bindings.
    pub user_token: String,
    /// Name of that user (`k8s-job-worker-test`), for RoleBindings.
    pub user_name: String,
    /// kubeconfig with the admin token.
    pub kubeconfig: PathBuf,
    /// Nodes kwok simulates: `kwok-node-0`, `k8s-node-1` (the seed's nodeSelector) and `kwok-gpu-0` (nvidia.com/gpu: 8).
    pub nodes: Vec<String>,
    /// `redis://127.0.0.1:PORT/`
    pub redis_url: String,
    pub redis_port: u16,
    /// `http://127.0.0.1:PORT` of moto (SQS, IAM, STS...), SigV4 checked.
    pub sqs_endpoint: String,
    pub aws_region: String,
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
    /// The bed's temp dir (logs of every component: `<dir>/<name>.log`).
    pub dir: PathBuf,
    /// Process id of each component (etcd, kube-apiserver, ..., redis, moto).
    pub pids: HashMap<String, u32>,
    /// The venv python (has boto3).
    pub python: PathBuf,
    /// Everything bed.py printed.
    pub info: Value,
    /// Set when the bed runs the Kueue manager (`Options::kueue`).
    pub kueue: Option<KueueInfo>,
    agent: ureq::Agent,
    _child: Mutex<(Child, ChildStdin, ChildStdout)>,
}

/// What a bed runs beyond the default components.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Kueue's CRDs, its manager (out of cluster) and its admission webhooks.
    pub kueue: bool,
}

impl Options {
    /// Also run Kueue.
    pub fn with_kueue(mut self) -> Options {
        self.kueue = true;
        self
    }

    /// True when a bed started with `self` has everything `wanted` asks for.
    fn covers(&self, wanted: &Options) -> bool {
        self.kueue || !wanted.kueue
    }
}

/// The Kueue manager of a bed (bed.py's `kueue` object).
#[derive(Clone, Debug)]
pub struct KueueInfo {
    /// The pinned version (testbed/versions.env KUEUE_VERSION).
    pub version: String,
    /// The Job and Kueue admission webhooks are registered (clientConfig.url on
    /// 127.0.0.1) and bed.py checked that a queued Job comes back suspended.
    pub webhooks: bool,
    /// From the CRDs going in to the webhooks verified.
    pub start_seconds: f64,
    /// Kueue's own namespace (`kueue-system`; excluded from management).
    pub namespace: String,
}

static BED: OnceLock<(Options, Result<Bed, String>)> = OnceLock::new();

/// The bed of this test binary, started on first use (with the default options
/// unless a `bed_with` call came first).
pub fn bed() -> &'static Bed {
    match &BED
        .get_or_init(|| (Options::default(), Bed::start_with(Options::default())))
        .1
    {
        Ok(b) => b,
        Err(e) => panic!("test bed failed to start: {e}"),
    }
}

/// The bed of this test binary, started with `opts` on first use. Panics if it
/// was already started without something `opts` asks for (call this before
/// anything calls `bed()`).
pub fn bed_with(opts: Options) -> &'static Bed {
    let (started, res) = BED.get_or_init(|| (opts, Bed::start_with(opts)));
    assert!(
        started.covers(&opts),
        "the test bed of this binary was started with {started:?}, but {opts:?} is wanted: \
         call support::bed_with / support::kueue_bed before anything calls support::bed()"
    );
    match res {
        Ok(b) => b,
        Err(e) => panic!("test bed failed to start: {e}"),
    }
}

/// `bed_with(Options::default().with_kueue())`: the bed with a running Kueue manager.
pub fn kueue_bed() -> &'static Bed {
    bed_with(Options::default().with_kueue())
}

/// A terminal callback status: 2 complete, 3 failed, 99 exception.
pub fn is_terminal(s: u64) -> bool {
    matches!(s, 2 | 3 | 99)
}

/// Builds (once per test binary) the worker with the test-only cargo feature
/// `fault-injection` (the shipped binary has no such code) and returns its
/// path. To keep CI time down it uses the `fault-test` profile, which
/// `inherits = "release"` — so `panic = "abort"` holds exactly as in the
/// shipped build — with LTO off and 16 codegen units, in its own target
/// directory `<target>/fault-injection` (a nested cargo cannot share the
/// directory this test binary's cargo holds); tests/faults.rs, payload.rs and
/// caps.rs share it. The build time is printed for the notes.
#[allow(dead_code)] // not every test binary injects faults
pub fn fault_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_k8s-job-worker"));
        let target = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .join("fault-injection");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // Not the variables cargo set for this test process (build scripts
        // track some of them; see tests/support/container.rs).
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k == "CARGO" || k == "OUT_DIR" || k.starts_with("CARGO_") {
                cmd.env_remove(&*k);
            }
        }
        let t0 = Instant::now();
        let st = cmd
            .current_dir(repo_root())
            .env("CARGO_TARGET_DIR", &target)
            .args(["build", "--locked", "--profile", "fault-test"])
            .args(["--features", "fault-injection", "--bin", "k8s-job-worker"])
            .status()
            .expect("run cargo build");
        assert!(st.success(), "cargo build --profile fault-test: {st}");
        eprintln!(
            "[fault-injection] worker built in {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        target.join("fault-test").join("k8s-job-worker")
    })
    .clone()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("TESTBED_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache"));
    cache.join("k8s-job-worker/venv-moto-5.2.5/bin/python")
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TESTBED_BIN") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("bash")
        .arg(repo_root().join("testbed/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running testbed/build.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("testbed/build.sh failed: {}", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| "testbed/build.sh printed nothing".to_string())
}

/// Kueue's bin dir: TESTBED_KUEUE_BIN, else `testbed/build.sh --kueue` (cached after `make testbed`).
fn kueue_bin_dir() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TESTBED_KUEUE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("bash")
        .arg(repo_root().join("testbed/build.sh"))
        .arg("--kueue")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running testbed/build.sh --kueue: {e}"))?;
    if !out.status.success() {
        return Err(format!("testbed/build.sh --kueue failed: {}", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| "testbed/build.sh --kueue printed nothing".to_string())
}

impl Bed {
    /// Starts a bed of its own (not the shared one of `bed()`): it is torn down
    /// when the returned `Bed` is dropped or the process exits.
    pub fn start_with(opts: Options) -> Result<Bed, String> {
        start_bed(opts)
    }
}

fn start_bed(opts: Options) -> Result<Bed, String> {
    let t0 = Instant::now();
    let python = venv_python();
    if !python.exists() {
        return Err(format!(
            "{} missing: run `make venv` (or set TESTBED_PYTHON)",
            python.display()
        ));
    }
    let bin = bin_dir()?;
    let mut cmd = Command::new(&python);
    cmd.arg(repo_root().join("testbed/bed.py"))
        .arg("--bin")
        .arg(&bin);
    if opts.kueue {
        cmd.arg("--kueue").arg("--kueue-bin").arg(kueue_bin_dir()?);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", python.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("reading bed.py's output: {e}"))?;
    if line.trim().is_empty() {
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        return Err(format!(
            "bed.py exited ({status}) without printing its endpoints; see its log above"
        ));
    }
    let info: Value =
        serde_json::from_str(&line).map_err(|e| format!("bed.py printed {line:?}: {e}"))?;
    let s = |k: &str| info[k].as_str().unwrap_or_default().to_string();
    let ca_file = PathBuf::from(s("ca_file"));
    let ca_pem = std::fs::read_to_string(&ca_file)
        .map_err(|e| format!("reading {}: {e}", ca_file.display()))?;
    let agent = kube_agent(&ca_pem);
    eprintln!(
        "[support] test bed up in {:.1}s: {} (logs in {})",
        t0.elapsed().as_secs_f64(),
        s("api_url"),
        s("dir")
    );
    let kueue = info
        .get("kueue")
        .filter(|k| k.is_object())
        .map(|k| KueueInfo {
            version: k["version"].as_str().unwrap_or_default().to_string(),
            webhooks: k["webhooks"].as_bool().unwrap_or(false),
            start_seconds: k["start_seconds"].as_f64().unwrap_or(0.0),
            namespace: k["namespace"]
                .as_str()
                .unwrap_or("kueue-system")
                .to_string(),
        });
    if opts.kueue && kueue.is_none() {
        return Err("bed.py was asked for Kueue but reported none".to_string());
    }
    let stdout = reader.into_inner();
    Ok(Bed {
        api_url: s("api_url"),
        ca_file,
        ca_pem,
        admin_token: s("admin_token"),
        admin_token_file: PathBuf::from(s("admin_token_file")),
        user_token: s("user_token"),
        user_name: s("user_name"),
        kubeconfig: PathBuf::from(s("kubeconfig")),
        nodes: info["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        redis_url: s("redis_url"),
        redis_port: info["redis_port"].as_u64().unwrap_or(0) as u16,
        sqs_endpoint: s("sqs_endpoint"),
        aws_region: s("aws_region"),
        aws_access_key_id: s("aws_access_key_id"),
        aws_secret_access_key: s("aws_secret_access_key"),
        dir: PathBuf::from(s("dir")),
        pids: info["pids"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()? as u32)))
                    .collect()
            })
            .unwrap_or_default(),
        python,
        info,
        kueue,
        agent,
        _child: Mutex::new((child, stdin, stdout)),
    })
}

/// A ureq agent that trusts only the bed's CA and reads error bodies.
pub fn kube_agent(ca_pem: &str) -> ureq::Agent {
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(ca_pem.as_bytes())
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert!(!certs.is_empty(), "no certificate in the bed's CA file");
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build(),
        )
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A unique suffix for names (namespaces, queues, keys).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{:x}{:x}{}",
        std::process::id() % 4096,
        nanos % 65536,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `f` every 100 ms until it is true or `timeout` has passed; returns its last answer.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn parse_body(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

impl Bed {
    /// Any request to the apiserver with a bearer token. `body` is sent as JSON;
    /// PATCH uses `application/merge-patch+json`. Returns the status and the body
    /// (JSON, or a JSON string when the body is not JSON).
    pub fn kube_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("{}{}", self.api_url, path);
        let auth = format!("Bearer {token}");
        let a = &self.agent;
        let res = match (method, body) {
            ("GET", _) => a.get(&url).header("Authorization", &auth).call(),
            ("DELETE", None) => a.delete(&url).header("Authorization", &auth).call(),
            ("DELETE", Some(b)) => a
                .delete(&url)
                .header("Authorization", &auth)
                .force_send_body()
                .send_json(b),
            ("POST", b) => a
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b.unwrap_or(&Value::Null)),
            ("PUT", b) => a
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b.unwrap_or(&Value::Null)),
            ("PATCH", b) => a
                .patch(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/merge-patch+json")
                .send(serde_json::to_vec(b.unwrap_or(&Value::Null)).unwrap()),
            (m, _) => panic!("kube_as: unsupported method {m}"),
        };
        match res {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let text = r.body_mut().read_to_string().unwrap_or_default();
                (status, parse_body(text))
            }
            Err(e) => panic!("{method} {url}: {e}"),
        }
    }

    pub fn kube_get(&self, path: &str) -> (u16, Value) {
        self.kube_as(&self.admin_token, "GET", path, None)
    }
    pub fn kube_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.kube_as(&self.admin_token, "POST", path, Some(body))
    }
    pub fn kube_put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.kube_as(&self.admin_token, "PUT", path, Some(body))
    }
    /// JSON merge patch.
    pub fn kube_patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.kube_as(&self.admin_token, "PATCH", path, Some(body))
    }
    pub fn kube_delete(&self, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.kube_as(&self.admin_token, "DELETE", path, body)
    }

    /// Opens a watch (`path` should carry `watch=true`); each read waits at most `per_read`.
    pub fn kube_watch(&self, path: &str, per_read: Duration) -> KubeWatch {
        let url = format!("{}{}", self.api_url, path);
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.admin_token))
            .config()
            .timeout_global(None)
            .timeout_recv_body(None)
            .timeout_per_read(Some(per_read))
            .build()
            .call()
            .unwrap_or_else(|e| panic!("watch {url}: {e}"));
        let status = resp.status().as_u16();
        KubeWatch {
            status,
            reader: BufReader::new(resp.into_body().into_reader()),
        }
    }

    /// Creates namespace `name` and waits (up to 30 s) for its `default` ServiceAccount,
    /// without which no pod can be created in it.
    pub fn create_namespace(&self, name: &str) {
        let (st, body) = self.kube_post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        );
        assert!(
            st == 201 || st == 409,
            "creating namespace {name}: {st} {body}"
        );
        let path = format!("/api/v1/namespaces/{name}/serviceaccounts/default");
        assert!(
            wait_for(Duration::from_secs(30), || self.kube_get(&path).0 == 200),
            "namespace {name}: no default ServiceAccount after 30 s"
        );
    }

    /// `create_namespace(unique(prefix))`, returning the name.
    pub fn new_namespace(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.create_namespace(&name);
        name
    }

    /// Runs one boto3 call against moto (`service` e.g. "sqs", `op` the boto3 method
    /// name e.g. "send_message", `params` its keyword arguments). `secret` overrides
    /// the secret key (to test signature checking). Ok(response) or Err(error JSON:
    /// {"code", "message", "status"}).
    pub fn aws_call_with(
        &self,
        service: &str,
        op: &str,
        params: &Value,
        secret: Option<&str>,
    ) -> Result<Value, Value> {
        let req = json!({
            "service": service, "op": op, "params": params,
            "endpoint": self.sqs_endpoint, "region": self.aws_region,
            "key": self.aws_access_key_id,
            "secret": secret.unwrap_or(&self.aws_secret_access_key),
        });
        let mut child = Command::new(&self.python)
            .arg(repo_root().join("testbed/aws_call.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning testbed/aws_call.py");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(req.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().expect("aws_call.py");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "aws_call.py printed {:?}: {e}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        if let Some(err) = v.get("error") {
            Err(err.clone())
        } else {
            Ok(v["result"].clone())
        }
    }

    pub fn aws_call(&self, service: &str, op: &str, params: &Value) -> Result<Value, Value> {
        self.aws_call_with(service, op, params, None)
    }

    /// Creates an SQS queue (a FIFO one gets the `.fifo` suffix it needs) and returns its URL.
    pub fn sqs_create_queue(&self, name: &str, fifo: bool) -> String {
        let mut params = json!({"QueueName": name});
        if fifo {
            if !name.ends_with(".fifo") {
                params["QueueName"] = json!(format!("{name}.fifo"));
            }
            params["Attributes"] = json!({"FifoQueue": "true"});
        }
        let r = self
            .aws_call("sqs", "create_queue", &params)
            .unwrap_or_else(|e| panic!("create_queue {name}: {e}"));
        r["QueueUrl"].as_str().expect("QueueUrl").to_string()
    }

    /// A new blocking Redis connection.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis_url.as_str())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("redis {}: {e}", self.redis_url))
    }

    /// Runs one Redis command, e.g. `redis_cmd(&["LPUSH", "q", "x"])`.
    pub fn redis_cmd(&self, args: &[&str]) -> redis::Value {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query::<redis::Value>(&mut self.redis())
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// The tail of a component's log (etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler, kwok, redis, moto), for failure messages.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

// ---------------------------------------------------------------- Kueue

/// Kueue's API (the storage version of its CRDs; v1beta1 is served too, but
/// without the conversion webhook objects are not converted between the two).
pub const KUEUE_API: &str = "/apis/kueue.x-k8s.io/v1beta2";
/// The Job label naming its LocalQueue.
pub const KUEUE_QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// The Job label naming its WorkloadPriorityClass.
pub const KUEUE_PRIORITY_LABEL: &str = "kueue.x-k8s.io/priority-class";

/// The names `Bed::kueue_queues` created.
#[derive(Clone, Debug)]
pub struct KueueQueues {
    pub flavor: String,
    pub cluster_queue: String,
    /// In the namespace given; put it in a Job's `kueue.x-k8s.io/queue-name` label.
    pub local_queue: String,
}

impl Bed {
    fn require_kueue(&self, what: &str) {
        assert!(
            self.kueue.is_some(),
            "{what}: this bed runs no Kueue; start it with support::kueue_bed()"
        );
    }

    fn kueue_create(&self, path: &str, body: Value) -> Value {
        let (st, v) = self.kube_post(path, &body);
        assert!(
            st == 201 || st == 200,
            "POST {path}: {st} {v}\nkueue log:\n{}",
            self.log_tail("kueue", 20)
        );
        v
    }

    fn kueue_wait_active(&self, path: &str) -> Value {
        let mut last = Value::Null;
        let active = wait_for(Duration::from_secs(30), || {
            let (st, v) = self.kube_get(path);
            let ok = st == 200
                && v["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Active" && c["status"] == "True")
                });
            last = v;
            ok
        });
        assert!(active, "{path} not Active after 30 s: {last}");
        last
    }

    /// Creates ResourceFlavor `name` (no node labels: any node).
    pub fn kueue_resource_flavor(&self, name: &str) -> Value {
        self.require_kueue("kueue_resource_flavor");
        self.kueue_create(
            &format!("{KUEUE_API}/resourceflavors"),
            json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
                   "metadata": {"name": name}}),
        )
    }

    /// Creates ClusterQueue `name` for every namespace, with one resource group of
    /// `flavor` and these nominal quotas (e.g. `&[("cpu", "2"), ("memory", "1Ti")]`:
    /// a Job asking for a resource not listed is never admitted), and
    /// `preemption.withinClusterQueue = within` ("Never", the Kueue default,
    /// "LowerPriority" or "LowerOrNewerEqualPriority"). Waits until it is Active.
    pub fn kueue_cluster_queue(
        &self,
        name: &str,
        flavor: &str,
        quota: &[(&str, &str)],
        within: &str,
    ) -> Value {
        let resources: Vec<Value> = quota
            .iter()
            .map(|(r, q)| json!({"name": r, "nominalQuota": q}))
            .collect();
        let covered: Vec<&str> = quota.iter().map(|(r, _)| *r).collect();
        self.kueue_cluster_queue_spec(
            name,
            json!({
                "namespaceSelector": {},
                "resourceGroups": [{"coveredResources": covered,
                                    "flavors": [{"name": flavor, "resources": resources}]}],
                "preemption": {"withinClusterQueue": within},
            }),
        )
    }

    /// Creates ClusterQueue `name` with any `spec` (see Kueue's API); waits until Active.
    pub fn kueue_cluster_queue_spec(&self, name: &str, spec: Value) -> Value {
        self.require_kueue("kueue_cluster_queue");
        self.kueue_create(
            &format!("{KUEUE_API}/clusterqueues"),
            json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
                   "metadata": {"name": name}, "spec": spec}),
        );
        self.kueue_wait_active(&format!("{KUEUE_API}/clusterqueues/{name}"))
    }

    /// Creates LocalQueue `ns/name` pointing at `cluster_queue`; waits until Active.
    pub fn kueue_local_queue(&self, ns: &str, name: &str, cluster_queue: &str) -> Value {
        self.require_kueue("kueue_local_queue");
        self.kueue_create(
            &format!("{KUEUE_API}/namespaces/{ns}/localqueues"),
            json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"clusterQueue": cluster_queue}}),
        );
        self.kueue_wait_active(&format!("{KUEUE_API}/namespaces/{ns}/localqueues/{name}"))
    }

    /// Creates WorkloadPriorityClass `name` with `value` (higher preempts lower
    /// where the ClusterQueue allows it). Jobs name it in `kueue.x-k8s.io/priority-class`.
    pub fn kueue_priority_class(&self, name: &str, value: i32) -> Value {
        self.require_kueue("kueue_priority_class");
        self.kueue_create(
            &format!("{KUEUE_API}/workloadpriorityclasses"),
            json!({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
                   "metadata": {"name": name}, "value": value,
                   "description": "k8s-job-worker test bed"}),
        )
    }

    /// The common set-up: a ResourceFlavor, a ClusterQueue with `cpu` nominal CPU
    /// (plus memory 1Ti and nvidia.com/gpu 8, so requests for those never block
    /// admission) and preemption `within`, and a LocalQueue in `ns`, all with unique names.
    pub fn kueue_queues(&self, ns: &str, cpu: &str, within: &str) -> KueueQueues {
        let q = KueueQueues {
            flavor: unique("rf"),
            cluster_queue: unique("cq"),
            local_queue: unique("lq"),
        };
        self.kueue_resource_flavor(&q.flavor);
        self.kueue_cluster_queue(
            &q.cluster_queue,
            &q.flavor,
            &[("cpu", cpu), ("memory", "1Ti"), ("nvidia.com/gpu", "8")],
            within,
        );
        self.kueue_local_queue(ns, &q.local_queue, &q.cluster_queue);
        q
    }

    /// The Workloads in `ns` (one per queued Job; `status.admission` set once admitted).
    pub fn kueue_workloads(&self, ns: &str) -> Vec<Value> {
        let (st, v) = self.kube_get(&format!("{KUEUE_API}/namespaces/{ns}/workloads"));
        assert_eq!(st, 200, "listing workloads in {ns}: {v}");
        v["items"].as_array().cloned().unwrap_or_default()
    }
}

/// A streaming watch: one JSON event per line.
pub struct KubeWatch {
    pub status: u16,
    reader: BufReader<ureq::BodyReader<'static>>,
}

impl KubeWatch {
    /// The next event, or None on end of stream or when a read timed out.
    pub fn next_event(&mut self) -> Option<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => return serde_json::from_str(line.trim()).ok(),
            }
        }
    }
}

// ---------------------------------------------------------------- webhooks

/// One request the webhook receiver got.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (a JSON string when it is not JSON, Null when empty).
    pub body: Value,
    pub raw_body: Vec<u8>,
    /// When the request was fully read.
    pub at: Instant,
    /// What the receiver answered (0: connection dropped because it was "down").
    pub status: u16,
}

impl Call {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    calls: Mutex<Vec<Call>>,
    cond: Condvar,
    /// 0: down (drop connections after reading the request); else the status to answer.
    status: AtomicU16,
    stop: std::sync::atomic::AtomicBool,
    /// Called with each request's body and the status it is about to get.
    inspect: Option<Inspect>,
}

/// What `WebhookReceiver::start_inspecting` calls with each body.
pub type Inspect = Box<dyn Fn(&Value, u16) + Send + Sync>;

/// A local HTTP server (127.0.0.1, free port) that records every request.
/// Answers 200 `{}` unless told otherwise; one request per connection.
pub struct WebhookReceiver {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
}

impl WebhookReceiver {
    pub fn start() -> WebhookReceiver {
        Self::start_with(None)
    }

    /// A receiver that calls `inspect` with each request's body and the status
    /// it is about to answer, before it answers (e.g. to read the cluster's
    /// state at that moment).
    pub fn start_inspecting(
        inspect: impl Fn(&Value, u16) + Send + Sync + 'static,
    ) -> WebhookReceiver {
        Self::start_with(Some(Box::new(inspect)))
    }

    fn start_with(inspect: Option<Inspect>) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            calls: Mutex::new(Vec::new()),
            cond: Condvar::new(),
            status: AtomicU16::new(200),
            stop: std::sync::atomic::AtomicBool::new(false),
            inspect,
        });
        let sh = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = stream {
                    let sh = sh.clone();
                    std::thread::spawn(move || handle_conn(s, &sh));
                }
            }
        });
        WebhookReceiver { addr, shared }
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`; append any path.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Calls that were answered with a 2xx status.
    pub fn delivered(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| (200..300).contains(&c.status))
            .collect()
    }

    /// Statuses delivered (2xx) per message id, in arrival order.
    pub fn delivered_by_id(&self) -> HashMap<String, Vec<u64>> {
        let mut m: HashMap<String, Vec<u64>> = HashMap::new();
        for c in self.delivered() {
            if let (Some(id), Some(s)) = (c.body["id"].as_str(), c.body["status"].as_u64()) {
                m.entry(id.to_string()).or_default().push(s);
            }
        }
        m
    }

    /// Down: requests are read (and recorded with status 0) but the connection is
    /// closed without an answer. Up again: answers 200.
    pub fn set_down(&self, down: bool) {
        self.shared
            .status
            .store(if down { 0 } else { 200 }, Ordering::SeqCst);
    }

    /// Answer every following request with this status (0 = drop the connection).
    pub fn respond_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Waits until at least `n` requests were recorded; returns them all (maybe fewer on timeout).
    pub fn wait_for_calls(&self, n: usize, timeout: Duration) -> Vec<Call> {
        let deadline = Instant::now() + timeout;
        let mut calls = self.shared.calls.lock().unwrap();
        while calls.len() < n {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            calls = self
                .shared
                .cond
                .wait_timeout(calls, deadline - now)
                .unwrap()
                .0;
        }
        calls.clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

fn handle_conn(mut s: TcpStream, sh: &Shared) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let hmap: HashMap<&str, &str> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut rest = buf[head_end + 4..].to_vec();
    let body = if hmap
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        match read_chunked(&mut s, rest) {
            Some(b) => b,
            None => return,
        }
    } else {
        let len: usize = hmap
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while rest.len() < len {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => rest.extend_from_slice(&tmp[..n]),
            }
        }
        rest.truncate(len);
        rest
    };
    let at = Instant::now();
    let parsed = parse_body(String::from_utf8_lossy(&body).to_string());
    let status = sh.status.load(Ordering::SeqCst);
    if let Some(f) = &sh.inspect {
        f(&parsed, status);
    }
    if status == 0 {
        let _ = s.shutdown(Shutdown::Both);
    } else {
        let reason = if (200..300).contains(&status) {
            "OK"
        } else {
            "Error"
        };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let _ = s.write_all(resp.as_bytes());
        let _ = s.flush();
    }
    let call = Call {
        method,
        path,
        headers,
        body: parsed,
        raw_body: body,
        at,
        status,
    };
    sh.calls.lock().unwrap().push(call);
    sh.cond.notify_all();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn read_chunked(s: &mut TcpStream, mut buf: Vec<u8>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        while find(&buf, b"\r\n").is_none() {
            let n = s.read(&mut tmp).ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&tmp[..n]);
        }
        let p = find(&buf, b"\r\n")?;
        let size_line = String::from_utf8_lossy(&buf[..p]).to_string();
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        while buf.len() < p + 2 + size + 2 {
            let n = s.read(&mut tmp).ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&tmp[..n]);
        }
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(&buf[p + 2..p + 2 + size]);
        buf.drain(..p + 2 + size + 2);
    }
}

/// Reads a file under the repository (e.g. a manifest).
pub fn repo_file(rel: impl AsRef<Path>) -> String {
    std::fs::read_to_string(repo_root().join(rel)).expect("repo file")
}
