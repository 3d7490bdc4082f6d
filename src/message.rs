//! The queue message contract: parsing an untrusted body into a validated
//! `Message`, with every problem reported against the field it concerns. This is
//! the only place that knows the JSON shape producers send (including the
//! drafts' aliases). Pure: no I/O, no clock, never panics on input.

/// One validation problem, named by its JSON path (e.g. `job.resources.limits.cpu`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// Why a message was refused. `id` and `webhook_url` are whatever could be read
/// from the body, so a 99 callback can still be sent for a broken message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Stable error code: `INVALID_MESSAGE` or `MESSAGE_TOO_LARGE`.
    pub code: &'static str,
    pub problems: Vec<Problem>,
    pub id: Option<String>,
    pub webhook_url: Option<String>,
}

/// Limits that validation enforces, taken from configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// ACTIVE_DEADLINE_SECONDS_MAX (default 86400); also the default deadline.
    pub active_deadline_max: i64,
    /// Largest accepted body in bytes (default 256 KiB).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            active_deadline_max: 86_400,
            max_message_bytes: 256 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvRefKind {
    ConfigMap,
    Secret,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvRef {
    pub name: String,
    pub kind: EnvRefKind,
}

/// cpu / memory quantities exactly as sent (already checked against the
/// Kubernetes quantity grammar).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceList {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub limits: ResourceList,
    pub requests: ResourceList,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Absolute; a relative path from the message is made absolute under `/`.
    pub mount_path: String,
    pub pvc: String,
}

/// `job` of the message, validated, with defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    pub prefix_name: String,
    pub namespace: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub service_account: Option<String>,
    pub ttl_seconds_after_finished: Option<i64>,
    pub backoff_limit: i32,
    pub active_deadline_seconds: i64,
    /// `Some(n)` when gpuEnable is true (n = gpuNumber, default 1).
    pub gpus: Option<u32>,
    pub env: Vec<EnvVar>,
    pub env_refs: Vec<EnvRef>,
    pub resources: Resources,
    pub node_selector: Option<KeyValue>,
    pub toleration: Option<KeyValue>,
    pub fargate: Option<KeyValue>,
    pub volume: Option<Volume>,
}

/// A validated message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub service: String,
    pub job: JobSpec,
    pub webhook_url: Option<String>,
}

/// Parses and validates one queue message body.
pub fn parse(body: &[u8], limits: &Limits) -> Result<Message, Rejection> {
    let _ = (body, limits);
    todo!("helper A")
}
