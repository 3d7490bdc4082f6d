//! Reading Jobs and Pods out of the API server's JSON: what the tracker needs
//! to know of each (identity, our annotations and finalizer, the terminal
//! condition, whether a pod started and why not). Pure; absent or wrong-typed
//! fields read as "not known", never as a panic.

use std::time::SystemTime;

use serde_json::Value;

use crate::webhook_guard::WebhookUrl;

use crate::contract::detail::ContainerEnd;
use crate::contract::{
    ANN_CANCELLED_AT, ANN_DELIVERED, ANN_MESSAGE_ID, ANN_QUEUE_NAME, ANN_START_AFTER,
    ANN_WEBHOOK_URL, FINALIZER, LABEL_JOB_NAME, LABEL_JOB_NAME_LEGACY, LABEL_KUEUE_QUEUE_NAME,
    MAX_TERMINATION_MESSAGE_BYTES, Status, annotation_pointer, truncate_utf8,
};

pub(super) fn job_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The message `service` a Job was created for: its `app` label.
pub(super) fn service(job: &Value) -> Option<&str> {
    job.get("metadata")?
        .get("labels")?
        .get(crate::contract::LABEL_APP)?
        .as_str()
}

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// How a Job ended, from its conditions.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Terminal {
    Complete {
        duration: u64,
        /// (succeeded, failed) pods of a Job that runs several.
        pods: Option<(u64, u64)>,
    },
    Failed {
        reason: String,
        message: String,
        duration: Option<u64>,
        pods: Option<(u64, u64)>,
    },
}

/// Whether a Job may run, from `spec.suspend` and its `Suspended` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// `spec.suspend` is true: waiting (e.g. in a Kueue queue), never stuck.
    Suspended,
    /// May run since `since`: when its `Suspended` condition last turned
    /// False, or its creation if it never was suspended. `None`: it was just
    /// unsuspended and the Job controller has not updated the condition yet.
    Resumed { since: Option<SystemTime> },
}

/// What one copy of a Job object says.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct JobObject {
    pub key: String,
    pub namespace: String,
    pub name: String,
    /// The message id annotation.
    pub id: String,
    pub uid: Option<String>,
    /// The webhook annotation, when it parses (intake wrote it from a `WebhookUrl`).
    pub webhook: Option<WebhookUrl>,
    /// The status an earlier worker recorded as settled.
    pub delivered: Option<Status>,
    /// The Job has a deletionTimestamp (held by our finalizer).
    pub deleting: bool,
    /// Our finalizer is on the Job.
    pub held: bool,
    /// Its creationTimestamp, parsed.
    pub created: Option<SystemTime>,
    pub terminal: Option<Terminal>,
    /// Its Kueue LocalQueue (label `kueue.x-k8s.io/queue-name`).
    pub queue_name: Option<String>,
    pub admission: Admission,
    /// The start-after annotation of a delayed Job not started yet.
    pub start_after: Option<SystemTime>,
    /// The queue-name annotation of a delayed queued Job not started yet.
    pub delayed_queue: Option<String>,
    /// `cancelled-at`: a cancel was decided for it (3 CANCELLED is owed).
    pub cancelled_at: Option<String>,
}

/// `spec.suspend` is true.
pub(super) fn suspended(job: &Value) -> bool {
    job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
}

fn admission(job: &Value, created: Option<SystemTime>) -> Admission {
    if suspended(job) {
        return Admission::Suspended;
    }
    let cond = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| s(c, "/type") == Some("Suspended")));
    match cond {
        None => Admission::Resumed { since: created },
        Some(c) if s(c, "/status") == Some("False") => Admission::Resumed {
            since: s(c, "/lastTransitionTime")
                .and_then(crate::clock::parse_rfc3339)
                .or(created),
        },
        // Still `Suspended: True` although spec.suspend is false: resumed just now.
        Some(_) => Admission::Resumed { since: None },
    }
}

/// `None` for an object without namespace, name or our message-id annotation.
pub(super) fn job_object(job: &Value) -> Option<JobObject> {
    let namespace = s(job, "/metadata/namespace")?;
    let name = s(job, "/metadata/name")?;
    let id = s(job, &annotation_pointer(ANN_MESSAGE_ID))?;
    let creation_timestamp = s(job, "/metadata/creationTimestamp");
    let created = creation_timestamp.and_then(crate::clock::parse_rfc3339);
    Some(JobObject {
        key: job_key(namespace, name),
        namespace: namespace.to_string(),
        name: name.to_string(),
        id: id.to_string(),
        uid: s(job, "/metadata/uid").map(str::to_string),
        webhook: s(job, &annotation_pointer(ANN_WEBHOOK_URL))
            .and_then(|u| WebhookUrl::parse(u).ok()),
        delivered: s(job, &annotation_pointer(ANN_DELIVERED))
            .and_then(|d| d.parse::<u8>().ok())
            .and_then(Status::from_code),
        deleting: job
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null()),
        held: job
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|v| v.as_str() == Some(FINALIZER))),
        created,
        terminal: job_terminal(job),
        queue_name: job
            .pointer("/metadata/labels")
            .and_then(|l| l.get(LABEL_KUEUE_QUEUE_NAME))
            .and_then(Value::as_str)
            .map(str::to_string),
        admission: admission(job, created),
        // One that does not parse (edited by hand) is due at once rather
        // than held for ever.
        start_after: s(job, &annotation_pointer(ANN_START_AFTER))
            .map(|a| crate::schedule::parse_annotation(a).unwrap_or(std::time::UNIX_EPOCH)),
        delayed_queue: s(job, &annotation_pointer(ANN_QUEUE_NAME)).map(str::to_string),
        cancelled_at: s(job, &annotation_pointer(ANN_CANCELLED_AT)).map(str::to_string),
    })
}

/// The key ("ns/name") of a Job object, even one `job_object` refuses.
pub(super) fn job_object_key(job: &Value) -> String {
    job_key(
        s(job, "/metadata/namespace").unwrap_or(""),
        s(job, "/metadata/name").unwrap_or(""),
    )
}

fn secs_between(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<u64> {
    Some(b?.duration_since(a?).ok()?.as_secs())
}

/// (succeeded, failed) pod counts of a Job with completions or parallelism
/// above 1; `None` for a one-pod Job.
fn pod_counts(job: &Value) -> Option<(u64, u64)> {
    let n = |ptr: &str| job.pointer(ptr).and_then(Value::as_u64);
    let several = n("/spec/completions").is_some_and(|c| c > 1)
        || n("/spec/parallelism").is_some_and(|p| p > 1);
    several.then(|| {
        (
            n("/status/succeeded").unwrap_or(0),
            n("/status/failed").unwrap_or(0),
        )
    })
}

fn job_terminal(job: &Value) -> Option<Terminal> {
    let conds = job.pointer("/status/conditions")?.as_array()?;
    let start = s(job, "/status/startTime").and_then(crate::clock::parse_rfc3339);
    let pods = pod_counts(job);
    for c in conds {
        if s(c, "/status") != Some("True") {
            continue;
        }
        match s(c, "/type") {
            Some("Complete") => {
                let end = s(job, "/status/completionTime").and_then(crate::clock::parse_rfc3339);
                return Some(Terminal::Complete {
                    duration: secs_between(start, end).unwrap_or(0),
                    pods,
                });
            }
            Some("Failed") => {
                let end = s(c, "/lastTransitionTime").and_then(crate::clock::parse_rfc3339);
                return Some(Terminal::Failed {
                    reason: s(c, "/reason").unwrap_or("Failed").to_string(),
                    message: s(c, "/message").unwrap_or("").to_string(),
                    duration: secs_between(start, end),
                    pods,
                });
            }
            _ => {}
        }
    }
    None
}

/// What the tracker knows of a Job's pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct PodInfo {
    pub uid: String,
    pub name: String,
    pub started: bool,
    pub waiting: Option<String>,
    /// The last terminated container that failed (termination message cut
    /// to MAX_TERMINATION_MESSAGE_BYTES).
    /// Boxed: rare, and the record of every pod in flight carries the slot.
    pub failed_container: Option<Box<ContainerEnd>>,
    /// The termination message of a container that exited 0 (payload-like
    /// data: never logged). `Some("")` when it ended with none.
    pub result: Option<String>,
}

/// `reason` or `reason: message`.
fn reason_text(reason: &str, msg: &str) -> String {
    if msg.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {msg}")
    }
}

pub(super) fn pod_info(pod: &Value) -> PodInfo {
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
            let message = truncate_utf8(
                s(t, "/message").unwrap_or(""),
                MAX_TERMINATION_MESSAGE_BYTES,
            )
            .to_string();
            if code != 0 {
                info.failed_container = Some(Box::new(ContainerEnd {
                    exit_code: code,
                    reason: s(t, "/reason").unwrap_or("Error").to_string(),
                    termination_message: message,
                }));
            } else {
                info.result = Some(message);
            }
        }
        if let Some(w) = cs.pointer("/state/waiting") {
            let reason = s(w, "/reason").unwrap_or("Waiting");
            info.waiting = Some(reason_text(reason, s(w, "/message").unwrap_or("")));
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
                info.waiting = Some(reason_text(reason, s(c, "/message").unwrap_or("")));
            }
        }
    }
    info
}

/// The key of the Job a pod belongs to (from the Job controller's label).
pub(super) fn pod_job_key(pod: &Value) -> Option<String> {
    let ns = s(pod, "/metadata/namespace")?;
    let labels = pod.pointer("/metadata/labels")?;
    let job = labels
        .get(LABEL_JOB_NAME)
        .or_else(|| labels.get(LABEL_JOB_NAME_LEGACY))
        .and_then(Value::as_str)?;
    Some(job_key(ns, job))
}
