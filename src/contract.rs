//! The wire contract in one place: what the worker writes on Kubernetes
//! objects (labels, annotations, the finalizer, the Job name), the callback
//! statuses and the stable error codes of the README, and the callback body.
//! Every other module names these through this one; nothing here does I/O or
//! depends on another module of the crate except `encode`.
//!
//! Extending the contract: a new status is a new `Status` variant (with its
//! code, name and `is_terminal` answer); a new error code is a new `ErrorCode`
//! variant (with its `as_str`). The compiler then points at every `match`
//! that must learn about it.

use std::fmt;

use serde_json::{Value, json};

/// Value of `LABEL_MANAGED_BY` on every Job and Pod of the worker.
pub const MANAGER: &str = "k8s-job-worker";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label the worker selects its own Jobs and Pods by (value: the instance name).
pub const LABEL_INSTANCE: &str = "k8s-job-worker.io/instance";
/// The message's `service` (default: its prefixName).
pub const LABEL_APP: &str = "app";
/// Labels the worker sets itself; a message may not override them.
pub const RESERVED_LABELS: [&str; 3] = [LABEL_MANAGED_BY, LABEL_APP, LABEL_INSTANCE];
/// The Job controller's label naming a Pod's Job (and its legacy form).
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LABEL_JOB_NAME_LEGACY: &str = "job-name";
/// Kueue's label naming a Job's LocalQueue (`job.queueName`); such a Job is
/// created suspended and Kueue unsuspends it when it admits it.
pub const LABEL_KUEUE_QUEUE_NAME: &str = "kueue.x-k8s.io/queue-name";
/// Kueue's WorkloadPriorityClass of a queued Job (`job.priorityClass` with a queue).
pub const LABEL_KUEUE_PRIORITY_CLASS: &str = "kueue.x-k8s.io/priority-class";
/// Longest `terminationMessage` a status 3 carries (and longest `result` read).
pub const MAX_TERMINATION_MESSAGE_BYTES: usize = 4096;

pub const ANN_MESSAGE_ID: &str = "k8s-job-worker.io/message-id";
pub const ANN_WEBHOOK_URL: &str = "k8s-job-worker.io/webhook-url";
/// Last status whose callback was settled (written after each delivery).
pub const ANN_DELIVERED: &str = "k8s-job-worker.io/delivered";
/// A delayed Job's start time (RFC 3339, UTC, seconds): the Job is created
/// suspended and the leader's tracker starts it then (removing this annotation).
pub const ANN_START_AFTER: &str = "k8s-job-worker.io/start-after";
/// A delayed queued Job's Kueue LocalQueue, kept here (not in Kueue's label)
/// until its start time, when the tracker moves it into the label.
pub const ANN_QUEUE_NAME: &str = "k8s-job-worker.io/queue-name";
/// Finalizer holding a finished Job until its terminal callback is settled.
pub const FINALIZER: &str = "k8s-job-worker.io/result";
/// On a Job (and a cancel tombstone): when its cancel was received (RFC 3339).
/// A Job carrying it is owed 3 CANCELLED, never a pod again.
pub const ANN_CANCELLED_AT: &str = "k8s-job-worker.io/cancelled-at";
/// On a cancel tombstone: when it may be deleted (RFC 3339).
pub const ANN_EXPIRES_AT: &str = "k8s-job-worker.io/expires-at";
/// On a cancel tombstone: what it was applied to (`cancelled` or
/// `already_finished`); absent while it waits for its job request.
pub const ANN_CONSUMED: &str = "k8s-job-worker.io/consumed";
/// Label marking a cancel tombstone ConfigMap (value `cancel`).
pub const LABEL_TOMBSTONE: &str = "k8s-job-worker.io/tombstone";

/// Environment variable naming the message id, set in every Job's container.
pub const ENV_MESSAGE_ID: &str = "JOB_WORKER_MESSAGE_ID";
/// Environment variable naming the payload file (Jobs of messages with a payload).
pub const ENV_PAYLOAD: &str = "JOB_WORKER_PAYLOAD";
/// Variables the worker sets itself; a message's `job.env` may not name them.
pub const RESERVED_ENV: [&str; 2] = [ENV_MESSAGE_ID, ENV_PAYLOAD];
/// Directory the payload Secret is mounted at (read-only).
pub const PAYLOAD_DIR: &str = "/etc/k8s-job-worker";
/// Key of the payload Secret, and so the file name under PAYLOAD_DIR.
pub const PAYLOAD_KEY: &str = "payload.json";
/// Largest payload: the data of one Secret is at most 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Path of the payload file in the container (`PAYLOAD_DIR/PAYLOAD_KEY`).
pub fn payload_path() -> String {
    format!("{PAYLOAD_DIR}/{PAYLOAD_KEY}")
}

/// `<prefixName>-<10 hex of sha256(id)>`: the same id always names the same Job.
pub fn job_name(prefix: &str, id: &str) -> String {
    let hex = crate::encode::sha256_hex(id.as_bytes());
    format!("{prefix}-{}", &hex[..10])
}

/// The JSON pointer of an annotation (`/` in the key escaped as `~1`).
pub fn annotation_pointer(key: &str) -> String {
    format!("/metadata/annotations/{}", key.replace('/', "~1"))
}

/// The name of the cancel tombstone (a ConfigMap in the worker's namespace) of
/// message `id` of installation `instance`: 32 hex of sha256(instance NUL id).
pub fn tombstone_name(instance: &str, id: &str) -> String {
    let hex = crate::encode::sha256_hex(format!("{instance}\u{0}{id}").as_bytes());
    format!("k8s-job-worker-cancel-{}", &hex[..32])
}

/// The label selector of one installation's cancel tombstones.
pub fn tombstone_selector(instance: &str) -> String {
    format!("{},{LABEL_TOMBSTONE}=cancel", selector(instance))
}

/// The label selector of one installation's Jobs and Pods.
pub fn selector(instance: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_INSTANCE}={instance}")
}

/// A callback status. The numbers are the wire values.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// The Job was created (or adopted).
    Created = 0,
    /// A pod of the Job started.
    Running = 1,
    /// The Job completed.
    Complete = 2,
    /// The Job failed (its `Failed` condition).
    Failed = 3,
    /// The message could not be run, or its Job was lost.
    Exception = 99,
}

impl Status {
    /// Every status, in wire order.
    pub const ALL: [Status; 5] = [
        Status::Created,
        Status::Running,
        Status::Complete,
        Status::Failed,
        Status::Exception,
    ];

    /// The wire value.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The name GET /jobs/{id} shows.
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Complete => "complete",
            Status::Failed => "failed",
            Status::Exception => "exception",
        }
    }

    /// True for the statuses that end a message (exactly one is sent).
    pub fn is_terminal(self) -> bool {
        match self {
            Status::Created | Status::Running => false,
            Status::Complete | Status::Failed | Status::Exception => true,
        }
    }
}

/// Writes the wire value (`0`, `1`, `2`, `3`, `99`).
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

/// The stable error codes of the README's table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 99: not JSON, a field missing, of the wrong type or invalid.
    InvalidMessage,
    /// 99: body over MAX_MESSAGE_BYTES.
    MessageTooLarge,
    /// 99: an operator policy rule refused it.
    PolicyDenied,
    /// 99: the API server refused the Job permanently.
    JobCreateFailed,
    /// 99: the Job name is held by a Job of another message id.
    JobNameConflict,
    /// 99: no pod started within POD_START_TIMEOUT.
    PodStartTimeout,
    /// 99: the Job was deleted before it finished.
    JobDeleted,
    /// 3: a cancel control message stopped it (`{"id", "action": "cancel"}`).
    Cancelled,
    /// 3: the Job's `Failed` condition reason in UPPER_SNAKE_CASE
    /// (`BACKOFF_LIMIT_EXCEEDED`, `DEADLINE_EXCEEDED`, ...); see `job_failed`.
    JobFailed(String),
}

impl ErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::PolicyDenied => "POLICY_DENIED",
            ErrorCode::JobCreateFailed => "JOB_CREATE_FAILED",
            ErrorCode::JobNameConflict => "JOB_NAME_CONFLICT",
            ErrorCode::PodStartTimeout => "POD_START_TIMEOUT",
            ErrorCode::JobDeleted => "JOB_DELETED",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::JobFailed(code) => code,
        }
    }

    /// `BackoffLimitExceeded` → `BACKOFF_LIMIT_EXCEEDED`; an empty reason is
    /// `JOB_FAILED`.
    pub fn job_failed(reason: &str) -> ErrorCode {
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
            out.push_str("JOB_FAILED");
        }
        ErrorCode::JobFailed(out)
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The details each status carries (the README's first table).
pub mod detail {
    use super::*;

    /// 0: `{"jobId", "jobName"}`, plus `"queueName"` when the Job was queued.
    pub fn created(job_uid: &str, job_name: &str, queue_name: Option<&str>) -> Value {
        let mut v = json!({"jobId": job_uid, "jobName": job_name});
        if let Some(q) = queue_name {
            v["queueName"] = json!(q);
        }
        v
    }

    /// Adds `"startAfter"` (RFC 3339) to a status 0 of a delayed Job.
    pub fn add_start_after(detail: &mut Value, start_after: &str) {
        if let Some(obj) = detail.as_object_mut() {
            obj.insert("startAfter".into(), start_after.into());
        }
    }

    /// 1: `{"podId", "podName"}`.
    pub fn running(pod_uid: &str, pod_name: &str) -> Value {
        json!({"podId": pod_uid, "podName": pod_name})
    }

    /// 2: `{"duration": <seconds>}`, plus `"result"` (the container's
    /// termination message: its JSON value when it parses as JSON, else the
    /// string) when the message is not empty.
    pub fn complete(duration_secs: u64, termination_message: &str) -> Value {
        let mut v = json!({"duration": duration_secs});
        if !termination_message.is_empty() {
            v["result"] = serde_json::from_str::<Value>(termination_message)
                .unwrap_or_else(|_| Value::String(termination_message.to_string()));
        }
        v
    }

    /// Adds `"succeeded"` and `"failed"` pod counts (a Job of several pods).
    pub fn add_pod_counts(detail: &mut Value, (succeeded, failed): (u64, u64)) {
        if let Some(obj) = detail.as_object_mut() {
            obj.insert("succeeded".into(), succeeded.into());
            obj.insert("failed".into(), failed.into());
        }
    }

    /// 3 and 99: `{"error": {"errorCode", "message"}}`.
    pub fn error(code: &ErrorCode, message: &str) -> Value {
        json!({"error": {"errorCode": code.as_str(), "message": message}})
    }

    /// How the failed container of a status 3 ended.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct ContainerEnd {
        pub exit_code: i64,
        pub reason: String,
        /// Its termination message (at most MAX_TERMINATION_MESSAGE_BYTES).
        pub termination_message: String,
    }

    /// 3: `error` plus the failed container's `exitCode`, `reason` and
    /// `terminationMessage` (the last only when not empty).
    pub fn failed(code: &ErrorCode, message: &str, container: Option<&ContainerEnd>) -> Value {
        let mut v = error(code, message);
        if let Some(c) = container {
            v["error"]["exitCode"] = json!(c.exit_code);
            v["error"]["reason"] = json!(c.reason);
            if !c.termination_message.is_empty() {
                v["error"]["terminationMessage"] = json!(c.termination_message);
            }
        }
        v
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A callback's `detail` as its compact JSON text. A queued callback holds
/// this rather than a `Value` (a tree of maps, about three times the bytes),
/// since thousands of them can wait at once in a burst.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detail(Box<str>);

impl Detail {
    /// The JSON text (object keys sorted, as `Value` writes them).
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

impl From<&Value> for Detail {
    fn from(v: &Value) -> Detail {
        // Serializing a Value to memory cannot fail.
        Detail(
            serde_json::to_string(v)
                .unwrap_or_else(|_| "null".into())
                .into(),
        )
    }
}

impl From<Value> for Detail {
    fn from(v: Value) -> Detail {
        Detail::from(&v)
    }
}

/// The JSON body POSTed to a webhook: `{"id", "status", "detail"}`, keys in
/// the order `Value` writes them (detail, id, status).
pub fn callback_body(message_id: &str, status: Status, detail: &Detail) -> Vec<u8> {
    // Serializing a string to memory cannot fail.
    let id = serde_json::to_string(message_id).unwrap_or_else(|_| "\"\"".into());
    let status = status.code().to_string();
    let mut body = Vec::with_capacity(detail.0.len() + id.len() + 32);
    for part in [
        "{\"detail\":",
        detail.as_json(),
        ",\"id\":",
        &id,
        ",\"status\":",
        &status,
        "}",
    ] {
        body.extend_from_slice(part.as_bytes());
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_name_is_prefix_and_ten_hex() {
        // sha256("31a89a91-43d8-4786-a195-9b25cec28a44") = fbe70e5993...
        assert_eq!(
            job_name("bb", "31a89a91-43d8-4786-a195-9b25cec28a44"),
            "bb-fbe70e5993"
        );
        // sha256("") = e3b0c44298fc...
        assert_eq!(job_name("p", ""), "p-e3b0c44298");
        assert_eq!(job_name("p", "é\u{0}").len(), "p-".len() + 10);
    }

    #[test]
    fn tombstone_names_are_per_instance_and_fit_a_name() {
        let a = tombstone_name("default", "m1");
        assert_eq!(a.len(), "k8s-job-worker-cancel-".len() + 32);
        assert_eq!(a, tombstone_name("default", "m1"));
        assert_ne!(a, tombstone_name("other", "m1"));
        assert_ne!(a, tombstone_name("default", "m2"));
        assert_eq!(ErrorCode::Cancelled.as_str(), "CANCELLED");
    }

    #[test]
    fn statuses_round_trip_their_wire_values() {
        let codes: Vec<u8> = Status::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 99]);
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(json!(s.code())));
        }
        assert_eq!(Status::from_code(4), None);
        let terminal: Vec<Status> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [Status::Complete, Status::Failed, Status::Exception]
        );
    }

    #[test]
    fn reasons_become_error_codes() {
        let code = |r: &str| ErrorCode::job_failed(r).as_str().to_string();
        assert_eq!(code("BackoffLimitExceeded"), "BACKOFF_LIMIT_EXCEEDED");
        assert_eq!(code("DeadlineExceeded"), "DEADLINE_EXCEEDED");
        assert_eq!(code("PodFailurePolicy"), "POD_FAILURE_POLICY");
        assert_eq!(code(""), "JOB_FAILED");
    }

    #[test]
    fn details_gain_queue_result_and_container_end() {
        assert_eq!(
            detail::created("u", "n", None),
            json!({"jobId": "u", "jobName": "n"})
        );
        assert_eq!(
            detail::created("u", "n", Some("lq")),
            json!({"jobId": "u", "jobName": "n", "queueName": "lq"})
        );
        assert_eq!(detail::complete(3, ""), json!({"duration": 3}));
        assert_eq!(
            detail::complete(3, r#"{"rows": 7}"#),
            json!({"duration": 3, "result": {"rows": 7}})
        );
        assert_eq!(
            detail::complete(3, "42"),
            json!({"duration": 3, "result": 42})
        );
        assert_eq!(
            detail::complete(3, "done: 7 rows"),
            json!({"duration": 3, "result": "done: 7 rows"})
        );
        let code = ErrorCode::job_failed("BackoffLimitExceeded");
        assert_eq!(detail::failed(&code, "m", None), detail::error(&code, "m"));
        let end = detail::ContainerEnd {
            exit_code: 3,
            reason: "Error".into(),
            termination_message: "Traceback".into(),
        };
        assert_eq!(
            detail::failed(&code, "m", Some(&end)),
            json!({"error": {"errorCode": "BACKOFF_LIMIT_EXCEEDED", "message": "m",
                             "exitCode": 3, "reason": "Error", "terminationMessage": "Traceback"}})
        );
        let quiet = detail::ContainerEnd {
            termination_message: String::new(),
            ..end
        };
        assert!(
            detail::failed(&code, "m", Some(&quiet))["error"]
                .get("terminationMessage")
                .is_none()
        );
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8("abc", 5), "abc");
        assert_eq!(truncate_utf8("abcdef", 3), "abc");
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("", 0), "");
    }

    #[test]
    fn the_callback_body_has_id_status_and_detail() {
        let body = callback_body("m", Status::Exception, &json!({"x": 1}).into());
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v, json!({"id": "m", "status": 99, "detail": {"x": 1}}));
    }

    /// The body is byte for byte what serializing the `Value` gave before
    /// `Detail` (signatures cover these bytes; receivers compare goldens).
    #[test]
    fn the_callback_body_is_the_bytes_a_value_writes() {
        let details = [
            json!({}),
            json!({"jobName": "bb-1", "jobUid": "u", "namespace": "ns"}),
            json!({"error": {"errorCode": "INVALID_FIELD", "message": "a \"quoted\" \u{1F600} \\ text\n"}}),
            json!({"z": [1, 2.5, null, true], "a": {"b": "c"}}),
        ];
        for (i, d) in details.iter().enumerate() {
            for id in ["m", "", "id with \"quotes\" and \u{e9}", "ctl\u{1}"] {
                for status in [Status::Created, Status::Running, Status::Exception] {
                    let want =
                        serde_json::to_vec(&json!({"id": id, "status": status, "detail": d}))
                            .unwrap_or_default();
                    assert_eq!(
                        callback_body(id, status, &Detail::from(d)),
                        want,
                        "detail {i}, id {id:?}"
                    );
                }
            }
            let back: Value = serde_json::from_str(Detail::from(d).as_json()).unwrap_or_default();
            assert_eq!(back, *d);
        }
    }
}
