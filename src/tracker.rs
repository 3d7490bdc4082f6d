//! The tracker: one thread that owns what the worker knows about its Jobs and
//! decides which callback each message is owed. It consumes Job and Pod watch
//! events and "created/adopted" notices from intake, and emits callbacks in the
//! order 0 (created) → 1 (pod running) → one terminal (2 complete, 3 failed,
//! 99 exception), each at most once per worker lifetime and never one that the
//! Job's `delivered` annotation says an earlier worker already delivered. The
//! decisions are a plain state machine (`Tracker::handle` returns `Action`s);
//! the thread loop only performs those actions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::callbacks::{Callback, CallbackMsg, JobRef};
use crate::kube::watch::Event;
use crate::metrics;
use crate::render::{ANN_DELIVERED, ANN_MESSAGE_ID, ANN_WEBHOOK_URL, FINALIZER};

/// How long a terminal status waits for the pod details it should carry.
const POD_INFO_GRACE: Duration = Duration::from_secs(3);

/// Messages into the tracker thread (closed set).
#[derive(Debug)]
pub enum TrackerMsg {
    /// A Job intake created or adopted (the API server's copy).
    Created {
        job: Value,
        received_at: Instant,
    },
    Jobs(Event),
    Pods(Event),
    /// A message intake refused (its 99 is on its way); shown by /jobs/{id}.
    Rejected {
        id: String,
        code: String,
    },
}

/// What the tracker asks its thread to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    Callback {
        message_id: String,
        status: u8,
        detail: Value,
        url: Option<String>,
        job: (String, String),
    },
    /// Delete a Job (background propagation), e.g. after POD_START_TIMEOUT.
    DeleteJob { namespace: String, name: String },
    /// Remove our finalizer from a Job whose terminal status an earlier leader
    /// already settled (it died before releasing the Job).
    Release {
        namespace: String,
        name: String,
        status: u8,
    },
    /// List the pods of a Job to learn about a pod the watch has not shown.
    FetchPods { namespace: String, name: String },
}

/// Ranks of the callback sequence: 0, 1, then terminal.
fn rank(status: u8) -> u8 {
    match status {
        0 => 0,
        1 => 1,
        _ => 2,
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct PodInfo {
    uid: String,
    name: String,
    started: bool,
    waiting: Option<String>,
    /// (exit code, reason) of the last terminated container that failed.
    failed_container: Option<(i64, String)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Terminal {
    Complete {
        duration: u64,
    },
    Failed {
        reason: String,
        message: String,
        duration: Option<u64>,
    },
}

#[derive(Debug)]
struct Tracked {
    id: String,
    namespace: String,
    name: String,
    uid: String,
    webhook: Option<String>,
    created: Option<SystemTime>,
    /// Highest rank queued (this lifetime) or recorded as delivered.
    sent: Option<u8>,
    terminal: Option<Terminal>,
    terminal_seen: Option<Instant>,
    fetched_pods: bool,
    done: bool,
    /// The Job has a deletionTimestamp (held by our finalizer).
    deleting: bool,
    /// Our finalizer is on the Job.
    held: bool,
    /// The terminal status an earlier leader recorded as settled.
    delivered_terminal: Option<u8>,
    release_requested: bool,
    /// queue_to_job_seconds was observed for this Job.
    latency_observed: bool,
    /// Seen on the Jobs watch (list or event), not only from intake.
    watched: bool,
    /// Relists that did not contain this Job although it was never watched.
    unlisted: u8,
    view: JobView,
}

/// What GET /jobs/{id} shows for a message.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub namespace: String,
    pub job_name: String,
    /// Last status queued for the sender.
    pub status: Option<u8>,
    pub status_name: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub updated_at: Option<String>,
}

fn status_name(s: u8) -> &'static str {
    match s {
        0 => "created",
        1 => "running",
        2 => "complete",
        3 => "failed",
        _ => "exception",
    }
}

/// Jobs of this worker that have not finished: the MAX_CONCURRENT_JOBS count.
/// Intake adds a Job when it creates one; the tracker removes it when the Job
/// reaches its terminal status or disappears.
#[derive(Default)]
pub struct LiveJobs {
    set: Mutex<HashSet<String>>,
    changed: Condvar,
}

impl LiveJobs {
    pub fn insert(&self, key: &str) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(key.to_string());
        metrics::set("jobs_in_flight", &[], s.len() as f64);
    }

    pub fn remove(&self, key: &str) {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if s.remove(key) {
            metrics::set("jobs_in_flight", &[], s.len() as f64);
            self.changed.notify_all();
        }
    }

    pub fn len(&self) -> usize {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until fewer than `cap` Jobs are live (cap 0 = unlimited) or
    /// `timeout` passes; returns the free room (usize::MAX when unlimited).
    pub fn wait_for_room(&self, cap: usize, timeout: Duration) -> usize {
        if cap == 0 {
            return usize::MAX;
        }
        let s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.len() >= cap)
            .unwrap_or_else(|e| e.into_inner());
        cap.saturating_sub(s.len())
    }
}

/// Shared read-only view of message states for the HTTP /jobs endpoint.
pub type Board = Arc<Mutex<HashMap<String, JobView>>>;

pub struct Tracker {
    jobs: HashMap<String, Tracked>,
    /// Latest pod info per Job key ("ns/name"), kept even before the Job is known.
    pods: HashMap<String, PodInfo>,
    live: Arc<LiveJobs>,
    board: Board,
    pod_start_timeout: Duration,
    /// uids of Jobs reported gone: a late sighting of one starts nothing again.
    gone: HashSet<String>,
}

fn job_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// The 99 detail of a Job deleted before it finished.
fn job_deleted(ns: &str, name: &str) -> Value {
    json!({"error": {"errorCode": "JOB_DELETED",
        "message": format!("Job {ns}/{name} was deleted before it finished")}})
}

/// `BackoffLimitExceeded` → `BACKOFF_LIMIT_EXCEEDED`.
pub fn error_code(reason: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in reason.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push('_');
            prev_lower = false;
        }
    }
    if out.is_empty() {
        "JOB_FAILED".into()
    } else {
        out
    }
}

fn secs_between(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<u64> {
    Some(b?.duration_since(a?).ok()?.as_secs())
}

fn job_terminal(job: &Value) -> Option<Terminal> {
    let conds = job.pointer("/status/conditions")?.as_array()?;
    let start = s(job, "/status/startTime").and_then(crate::clock::parse_rfc3339);
    for c in conds {
        if s(c, "/status") != Some("True") {
            continue;
        }
        match s(c, "/type") {
            Some("Complete") => {
                let end = s(job, "/status/completionTime").and_then(crate::clock::parse_rfc3339);
                return Some(Terminal::Complete {
                    duration: secs_between(start, end).unwrap_or(0),
                });
            }
            Some("Failed") => {
                let end = s(c, "/lastTransitionTime").and_then(crate::clock::parse_rfc3339);
                return Some(Terminal::Failed {
                    reason: s(c, "/reason").unwrap_or("Failed").to_string(),
                    message: s(c, "/message").unwrap_or("").to_string(),
                    duration: secs_between(start, end),
                });
            }
            _ => {}
        }
    }
    None
}

fn pod_info(pod: &Value) -> PodInfo {
    let phase = s(pod, "/status/phase").unwrap_or("");
    let mut info = PodInfo {
        uid: s(pod, "/metadata/uid").unwrap_or("").to_string(),
        name: s(pod, "/metadata/name").unwrap_or("").to_string(),
        started: matches!(phase, "Running" | "Succeeded" | "Failed"),
        ..PodInfo::default()
    };
    for cs in pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if cs.pointer("/state/running").is_some() {
            info.started = true;
        }
        if let Some(t) = cs.pointer("/state/terminated") {
            info.started = true;
            let code = t.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
            if code != 0 {
                info.failed_container =
                    Some((code, s(t, "/reason").unwrap_or("Error").to_string()));
            }
        }
        if let Some(w) = cs.pointer("/state/waiting") {
            let reason = s(w, "/reason").unwrap_or("Waiting");
            let msg = s(w, "/message").unwrap_or("");
            info.waiting = Some(if msg.is_empty() {
                reason.to_string()
            } else {
                format!("{reason}: {msg}")
            });
        }
    }
    if info.waiting.is_none() {
        for c in pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if s(c, "/type") == Some("PodScheduled") && s(c, "/status") == Some("False") {
                let reason = s(c, "/reason").unwrap_or("Unschedulable");
                let msg = s(c, "/message").unwrap_or("");
                info.waiting = Some(if msg.is_empty() {
                    reason.to_string()
                } else {
                    format!("{reason}: {msg}")
                });
            }
        }
    }
    info
}

fn pod_job_key(pod: &Value) -> Option<String> {
    let ns = s(pod, "/metadata/namespace")?;
    let labels = pod.pointer("/metadata/labels")?;
    let job = labels
        .get("batch.kubernetes.io/job-name")
        .or_else(|| labels.get("job-name"))
        .and_then(Value::as_str)?;
    Some(job_key(ns, job))
}

impl Tracker {
    pub fn new(live: Arc<LiveJobs>, board: Board, pod_start_timeout: Duration) -> Tracker {
        Tracker {
            jobs: HashMap::new(),
            pods: HashMap::new(),
            live,
            board,
            pod_start_timeout,
            gone: HashSet::new(),
        }
    }

    /// Handles one message and returns what to do, in order.
    pub fn handle(&mut self, msg: TrackerMsg, now: Instant, wall: SystemTime) -> Vec<Action> {
        let mut out = Vec::new();
        match msg {
            TrackerMsg::Created { job, received_at } => {
                if let Some(key) = self.upsert_job(&job, now) {
                    if let Some(t) = self.jobs.get_mut(&key)
                        && !t.latency_observed
                    {
                        t.latency_observed = true;
                        metrics::observe(
                            "queue_to_job_seconds",
                            &[],
                            now.duration_since(received_at).as_secs_f64(),
                        );
                    }
                    self.advance(&key, now, wall, &mut out);
                }
            }
            TrackerMsg::Rejected { id, code } => {
                let ts = crate::clock::format_secs(wall);
                let view = JobView {
                    id: id.clone(),
                    status: Some(99),
                    status_name: Some(format!("exception ({code})")),
                    finished_at: Some(ts.clone()),
                    updated_at: Some(ts),
                    ..JobView::default()
                };
                self.show(id, view);
            }
            TrackerMsg::Jobs(Event::Applied(job)) => {
                if let Some(key) = self.upsert_job(&job, now) {
                    self.mark_watched(&key);
                    self.advance(&key, now, wall, &mut out);
                }
            }
            TrackerMsg::Jobs(Event::Deleted(job)) => {
                if s(&job, "/metadata/uid").is_some_and(|uid| self.gone.contains(uid)) {
                    return out; // an older Job of the name: the tracked one lives on
                }
                let key = job_key(
                    s(&job, "/metadata/namespace").unwrap_or(""),
                    s(&job, "/metadata/name").unwrap_or(""),
                );
                // A deleted Job's final state may carry its terminal condition.
                if self.upsert_job(&job, now).is_some() {
                    self.advance(&key, now, wall, &mut out);
                }
                self.job_gone(&key, wall, &mut out);
            }
            TrackerMsg::Jobs(Event::Restarted(list)) => {
                let mut present = HashSet::new();
                for job in &list {
                    if let Some(key) = self.upsert_job(job, now) {
                        present.insert(key.clone());
                        self.mark_watched(&key);
                        self.advance(&key, now, wall, &mut out);
                    }
                }
                // A Job known only from intake may have been created after the
                // list's snapshot: its ADDED event follows. Gone only if a
                // later relist misses it too.
                let mut gone = Vec::new();
                for (k, t) in self.jobs.iter_mut() {
                    if present.contains(k) {
                        continue;
                    }
                    if t.watched || t.unlisted > 0 {
                        gone.push(k.clone());
                    } else {
                        t.unlisted += 1;
                    }
                }
                for key in gone {
                    self.job_gone(&key, wall, &mut out);
                }
            }
            TrackerMsg::Pods(Event::Applied(pod)) => {
                if let Some(key) = self.upsert_pod(&pod) {
                    self.advance(&key, now, wall, &mut out);
                }
            }
            TrackerMsg::Pods(Event::Deleted(pod)) => {
                // Keep what we learned: a terminal status may still need it.
                if let Some(key) = self.upsert_pod(&pod) {
                    self.advance(&key, now, wall, &mut out);
                }
            }
            TrackerMsg::Pods(Event::Restarted(list)) => {
                for pod in &list {
                    if let Some(key) = self.upsert_pod(pod) {
                        self.advance(&key, now, wall, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Periodic work: pod start timeouts and terminal statuses held for pod info.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> Vec<Action> {
        let mut out = Vec::new();
        let keys: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, t)| !t.done)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.advance(&key, now, wall, &mut out);
        }
        // Forget pods whose Job is unknown and long gone from view.
        if self.pods.len() > 4 * self.jobs.len() + 1000 {
            let jobs = &self.jobs;
            self.pods.retain(|k, _| jobs.contains_key(k));
        }
        out
    }

    fn mark_watched(&mut self, key: &str) {
        if let Some(t) = self.jobs.get_mut(key) {
            t.watched = true;
        }
    }

    fn upsert_pod(&mut self, pod: &Value) -> Option<String> {
        let key = pod_job_key(pod)?;
        let info = pod_info(pod);
        let entry = self.pods.entry(key.clone()).or_default();
        // The first pod that started is the one reported in status 1; later pods
        // (retries) only add failure details.
        if entry.uid.is_empty() || (!entry.started && info.started) || entry.uid == info.uid {
            let keep_failure = entry.failed_container.clone();
            *entry = info;
            if entry.failed_container.is_none() {
                entry.failed_container = keep_failure;
            }
        } else if info.failed_container.is_some() {
            entry.failed_container = info.failed_container;
        }
        Some(key)
    }

    fn upsert_job(&mut self, job: &Value, now: Instant) -> Option<String> {
        if s(job, "/metadata/uid").is_some_and(|uid| self.gone.contains(uid)) {
            return None;
        }
        let ns = s(job, "/metadata/namespace")?;
        let name = s(job, "/metadata/name")?;
        let id = s(
            job,
            &format!(
                "/metadata/annotations/{}",
                ANN_MESSAGE_ID.replace('/', "~1")
            ),
        )?;
        let key = job_key(ns, name);
        let delivered_status = s(
            job,
            &format!("/metadata/annotations/{}", ANN_DELIVERED.replace('/', "~1")),
        )
        .and_then(|d| d.parse::<u8>().ok());
        let delivered = delivered_status.map(rank);
        let terminal = job_terminal(job);
        let t = self.jobs.entry(key.clone()).or_insert_with(|| Tracked {
            id: id.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: String::new(),
            webhook: None,
            created: None,
            sent: None,
            terminal: None,
            terminal_seen: None,
            fetched_pods: false,
            done: false,
            deleting: false,
            held: false,
            delivered_terminal: None,
            release_requested: false,
            latency_observed: false,
            watched: false,
            unlisted: 0,
            view: JobView {
                id: id.to_string(),
                namespace: ns.to_string(),
                job_name: name.to_string(),
                ..JobView::default()
            },
        });
        let uid = s(job, "/metadata/uid").unwrap_or(&t.uid).to_string();
        if !t.uid.is_empty() && t.uid != uid {
            // The name now belongs to a newer Job: the old one is stale.
            self.gone.insert(std::mem::replace(&mut t.uid, uid));
        } else {
            t.uid = uid;
        }
        t.webhook = s(
            job,
            &format!(
                "/metadata/annotations/{}",
                ANN_WEBHOOK_URL.replace('/', "~1")
            ),
        )
        .map(str::to_string);
        t.deleting = job
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        t.held = job
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|v| v.as_str() == Some(FINALIZER)));
        if delivered == Some(2) {
            t.delivered_terminal = delivered_status;
        }
        t.created = s(job, "/metadata/creationTimestamp")
            .and_then(crate::clock::parse_rfc3339)
            .or(t.created);
        if t.view.created_at.is_none() {
            t.view.created_at = s(job, "/metadata/creationTimestamp").map(str::to_string);
        }
        if let Some(d) = delivered
            && t.sent.is_none_or(|s| s < d)
        {
            t.sent = Some(d);
            if d == 2 {
                t.done = true;
            }
        }
        if t.terminal.is_none() && terminal.is_some() {
            t.terminal = terminal;
            t.terminal_seen = Some(now);
        }
        if !t.done {
            self.live.insert(&key);
        }
        Some(key)
    }

    fn emit(t: &mut Tracked, status: u8, detail: Value, wall: SystemTime, out: &mut Vec<Action>) {
        t.sent = Some(rank(status));
        let ts = crate::clock::format_secs(wall);
        t.view.status = Some(status);
        t.view.status_name = Some(status_name(status).to_string());
        t.view.updated_at = Some(ts.clone());
        match status {
            1 => t.view.started_at = Some(ts),
            2 | 3 | 99 => t.view.finished_at = Some(ts),
            _ => {}
        }
        log::info!(
            "message {} job {}/{}: status {status} ({})",
            t.id,
            t.namespace,
            t.name,
            status_name(status)
        );
        out.push(Action::Callback {
            message_id: t.id.clone(),
            status,
            detail,
            url: t.webhook.clone(),
            job: (t.namespace.clone(), t.name.clone()),
        });
    }

    fn finish(&mut self, key: &str, result: &str) {
        if let Some(t) = self.jobs.get_mut(key) {
            t.done = true;
            metrics::inc("jobs_finished_total", &[("result", result)]);
        }
        self.live.remove(key);
    }

    /// Puts a message's view on the board that GET /jobs/{id} reads.
    fn show(&self, id: String, view: JobView) {
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > 100_000 {
            b.clear(); // bounded memory: the board is a convenience view
        }
        b.insert(id, view);
    }

    fn publish(&self, key: &str) {
        if let Some(t) = self.jobs.get(key) {
            self.show(t.id.clone(), t.view.clone());
        }
    }

    /// Emits whatever the Job is owed now, in order.
    fn advance(&mut self, key: &str, now: Instant, wall: SystemTime, out: &mut Vec<Action>) {
        let pod = self.pods.get(key).cloned();
        let timeout = self.pod_start_timeout;
        let Some(t) = self.jobs.get_mut(key) else {
            return;
        };
        if t.done {
            if let (Some(status), true, false) = (t.delivered_terminal, t.held, t.release_requested)
            {
                t.release_requested = true;
                out.push(Action::Release {
                    namespace: t.namespace.clone(),
                    name: t.name.clone(),
                    status,
                });
            }
            return;
        }
        if t.sent.is_none() {
            let detail = json!({"jobId": t.uid, "jobName": t.name});
            Self::emit(t, 0, detail, wall, out);
        }
        let pod_started = pod.as_ref().is_some_and(|p| p.started);
        if t.sent == Some(0) && pod_started {
            let p = pod.clone().unwrap_or_default();
            Self::emit(t, 1, json!({"podId": p.uid, "podName": p.name}), wall, out);
        }
        if let Some(term) = t.terminal.clone() {
            let waited = t
                .terminal_seen
                .map(|s| now.duration_since(s))
                .unwrap_or_default();
            let need_pod = t.sent == Some(0);
            let need_failure = matches!(term, Terminal::Failed { .. })
                && pod.as_ref().is_none_or(|p| p.failed_container.is_none());
            if (need_pod || need_failure) && waited < POD_INFO_GRACE {
                if !t.fetched_pods {
                    t.fetched_pods = true;
                    out.push(Action::FetchPods {
                        namespace: t.namespace.clone(),
                        name: t.name.clone(),
                    });
                }
                return; // hold the terminal status briefly for the pod's details
            }
            if t.sent == Some(0) {
                // The Job finished, so a pod did start even if we never saw it run.
                let p = pod.clone().unwrap_or_default();
                Self::emit(t, 1, json!({"podId": p.uid, "podName": p.name}), wall, out);
            }
            let result = match term {
                Terminal::Complete { duration } => {
                    metrics::observe(
                        "job_duration_seconds",
                        &[("result", "complete")],
                        duration as f64,
                    );
                    Self::emit(t, 2, json!({"duration": duration}), wall, out);
                    "complete"
                }
                Terminal::Failed {
                    reason,
                    message,
                    duration,
                } => {
                    if let Some(d) = duration {
                        metrics::observe("job_duration_seconds", &[("result", "failed")], d as f64);
                    }
                    let mut text = if message.is_empty() {
                        reason.clone()
                    } else {
                        message.clone()
                    };
                    if let Some((code, why)) = pod.as_ref().and_then(|p| p.failed_container.clone())
                    {
                        text.push_str(&format!("; container exited with code {code} ({why})"));
                    }
                    let detail =
                        json!({"error": {"errorCode": error_code(&reason), "message": text}});
                    Self::emit(t, 3, detail, wall, out);
                    "failed"
                }
            };
            self.finish(key, result);
            self.publish(key);
            return;
        }
        // Deleted (held only by our finalizer) before it finished.
        if t.deleting {
            let detail = job_deleted(&t.namespace, &t.name);
            Self::emit(t, 99, detail, wall, out);
            self.finish(key, "deleted");
            self.publish(key);
            return;
        }
        // Pod start timeout: no pod has started since the Job was created.
        if t.sent == Some(0) && !pod_started {
            let age = t
                .created
                .and_then(|c| wall.duration_since(c).ok())
                .unwrap_or_default();
            if age >= timeout {
                let why = pod
                    .as_ref()
                    .and_then(|p| p.waiting.clone())
                    .unwrap_or_else(|| "no pod was created".into());
                let detail = json!({"error": {"errorCode": "POD_START_TIMEOUT", "message": format!(
                    "no pod of Job {}/{} started within {} s: {why}", t.namespace, t.name, timeout.as_secs())}});
                Self::emit(t, 99, detail, wall, out);
                out.push(Action::DeleteJob {
                    namespace: t.namespace.clone(),
                    name: t.name.clone(),
                });
                self.finish(key, "pod_start_timeout");
            }
        }
        self.publish(key);
    }

    fn job_gone(&mut self, key: &str, wall: SystemTime, out: &mut Vec<Action>) {
        let Some(mut t) = self.jobs.remove(key) else {
            return;
        };
        self.pods.remove(key);
        if !t.uid.is_empty() {
            if self.gone.len() >= 100_000 {
                self.gone.clear(); // bounded memory
            }
            self.gone.insert(t.uid.clone());
        }
        if !t.done {
            let detail = job_deleted(&t.namespace, &t.name);
            if t.sent.is_none() {
                t.sent = Some(0); // never announce a Job that no longer exists
            }
            Self::emit(&mut t, 99, detail, wall, out);
            metrics::inc("jobs_finished_total", &[("result", "deleted")]);
            self.show(t.id.clone(), t.view.clone());
        }
        self.live.remove(key);
    }
}

/// Converts tracker actions' callbacks into callback-thread messages.
pub fn callback_msg(a: &Action) -> Option<CallbackMsg> {
    match a {
        Action::Callback {
            message_id,
            status,
            detail,
            url,
            job,
        } => Some(CallbackMsg::Send(Callback {
            message_id: message_id.clone(),
            status: *status,
            detail: detail.clone(),
            url: url.clone(),
            job: Some(JobRef {
                namespace: job.0.clone(),
                name: job.1.clone(),
            }),
            token: None,
            queued_at: Instant::now(),
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Tracker {
        Tracker::new(
            Arc::new(LiveJobs::default()),
            Board::default(),
            Duration::from_secs(60),
        )
    }

    fn job(name: &str, conds: Value, delivered: Option<&str>) -> Value {
        let mut ann =
            json!({ANN_MESSAGE_ID: format!("id-{name}"), ANN_WEBHOOK_URL: "http://hook/x"});
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
                    Some(*status)
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
                status: 0,
                detail: json!({"jobId": "uid-a", "jobName": "a"}),
                url: Some("http://hook/x".into()),
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
        assert!(
            matches!(&a[0], Action::Callback { detail, .. } if *detail == json!({"duration": 30}))
        );
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
                status: 2
            }]
        );
        assert!(
            t.handle(TrackerMsg::Jobs(Event::Applied(j)), now, wall())
                .is_empty()
        );
    }

    #[test]
    fn reasons_become_error_codes() {
        assert_eq!(error_code("BackoffLimitExceeded"), "BACKOFF_LIMIT_EXCEEDED");
        assert_eq!(error_code("DeadlineExceeded"), "DEADLINE_EXCEEDED");
        assert_eq!(error_code("PodFailurePolicy"), "POD_FAILURE_POLICY");
        assert_eq!(error_code(""), "JOB_FAILED");
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
}
