//! The queue message contract: parsing an untrusted body into a validated
//! `Message`, with every problem reported against the field it concerns. This is
//! the only place that knows the JSON shape producers send (including the
//! drafts' aliases). Pure: no I/O, never panics on input; no clock but the
//! one reading in `parse` (a delayed start is checked against `now`: `parse_at`).

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::contract::{
    ErrorCode, MAX_PAYLOAD_BYTES, PAYLOAD_DIR, RESERVED_ENV, RESERVED_LABELS, job_name,
};
use crate::quantity;
use crate::webhook_guard::WebhookUrl;

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
    /// `ErrorCode::InvalidMessage` or `ErrorCode::MessageTooLarge`.
    pub code: ErrorCode,
    pub problems: Vec<Problem>,
    pub id: Option<String>,
    pub webhook_url: Option<WebhookUrl>,
}

/// Limits that validation enforces, taken from configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// ACTIVE_DEADLINE_SECONDS_MAX (default 86400); also the default deadline.
    pub active_deadline_max: i64,
    /// Largest accepted body in bytes (default 256 KiB).
    pub max_message_bytes: usize,
    /// DEFAULT_QUEUE_NAME: the Kueue LocalQueue of a message without its own
    /// `job.queueName` (default none: such a message is not queued).
    pub default_queue_name: Option<String>,
    /// MAX_START_DELAY: how far ahead `job.startAfter` / `job.startDelaySeconds`
    /// may start a Job (default 7 days).
    pub max_start_delay: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            active_deadline_max: 86_400,
            max_message_bytes: 256 * 1024,
            default_queue_name: None,
            max_start_delay: crate::schedule::DEFAULT_MAX_START_DELAY,
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

/// `job.completionMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionMode {
    NonIndexed,
    Indexed,
}

impl CompletionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CompletionMode::NonIndexed => "NonIndexed",
            CompletionMode::Indexed => "Indexed",
        }
    }
}

/// What a `job.podFailurePolicy` rule does with a matching pod failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    FailJob,
    FailIndex,
    Ignore,
    Count,
}

impl FailureAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::FailJob => "FailJob",
            FailureAction::FailIndex => "FailIndex",
            FailureAction::Ignore => "Ignore",
            FailureAction::Count => "Count",
        }
    }
}

/// `onExitCodes` of a pod failure rule (the worker's one container).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnExitCodes {
    /// `In` (true) or `NotIn` (false).
    pub in_values: bool,
    /// Ascending, without duplicates, 1 to 255 of them.
    pub values: Vec<i32>,
}

/// One `onPodConditions` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnPodCondition {
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
}

/// One rule of `job.podFailurePolicy`: exactly one of the two matchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFailureRule {
    pub action: FailureAction,
    pub on_exit_codes: Option<OnExitCodes>,
    pub on_pod_conditions: Vec<OnPodCondition>,
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
    /// `job.priorityClass`: the pod's priorityClassName.
    pub priority_class: Option<String>,
    /// `job.podFailurePolicy.rules` (empty: no policy).
    pub pod_failure_policy: Vec<PodFailureRule>,
    pub completions: Option<i32>,
    pub parallelism: Option<i32>,
    pub completion_mode: Option<CompletionMode>,
    /// `job.imagePullSecrets`: Secret names in the Job's namespace.
    pub image_pull_secrets: Vec<String>,
    /// `job.queueName` (or DEFAULT_QUEUE_NAME): the Kueue LocalQueue; the Job
    /// is then created suspended with label `kueue.x-k8s.io/queue-name`.
    pub queue_name: Option<String>,
    /// `job.startAfter` / `job.startDelaySeconds`, resolved against the time
    /// the message was parsed: the Job is created suspended and started then
    /// (`None`: at once).
    pub start_after: Option<std::time::SystemTime>,
}

/// A validated message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub service: String,
    pub job: JobSpec,
    pub webhook_url: Option<WebhookUrl>,
    /// The job's input (top-level `payload`); `None` when absent or null.
    pub payload: Option<Payload>,
}

/// What a queue message asks for: a job, as always (no `action`), or a
/// control action on an earlier message (`{"id", "action": "cancel"}`; its
/// other fields are ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Job(Box<Message>),
    /// Cancel the job of message `id` (running, waiting, or not arrived yet).
    Cancel {
        id: String,
    },
}

/// The only `action` values (absent or null: a job request).
pub const ACTIONS: [&str; 1] = ["cancel"];

/// A message's `payload`: the JSON text exactly as the sender wrote it (any
/// JSON value but null), at most MAX_PAYLOAD_BYTES. The sender may consider it
/// secret, so its `Debug` shows only its size and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(String);

impl Payload {
    /// The JSON text, byte for byte as in the message.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload(<{} bytes>)", self.0.len())
    }
}

/// The top-level `payload` of a body, borrowed as raw JSON text.
#[derive(serde::Deserialize)]
struct RawPayload<'a> {
    #[serde(borrow, default)]
    payload: Option<&'a serde_json::value::RawValue>,
}

const MAX_ID_BYTES: usize = 1024;
const MAX_IMAGE_BYTES: usize = 4096;
const MAX_URL_BYTES: usize = 2048;
const MAX_MOUNT_PATH_BYTES: usize = 4096;
/// `<prefix>-<10 hex>` must fit a 63-character DNS label.
const MAX_PREFIX_LEN: usize = 52;
const MIN_DEADLINE: i64 = 60;
const MIN_TTL_EXCLUSIVE: i64 = 30;
const MAX_BACKOFF: i64 = 100;
const MAX_GPUS: i64 = 64;
/// Kubernetes' own bounds (batch/v1 validation).
const MAX_COMPLETIONS: i64 = 100_000;
const MAX_FAILURE_RULES: usize = 20;
const MAX_EXIT_CODES: usize = 255;
const MAX_POD_CONDITIONS: usize = 20;
const MAX_PULL_SECRETS: usize = 20;

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl Rejection {
    /// The problems joined by `; `.
    pub fn problems_text(&self) -> String {
        let parts: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        parts.join("; ")
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.code == ErrorCode::MessageTooLarge {
            "message too large"
        } else {
            "invalid message"
        };
        write!(f, "{what}: {}", self.problems_text())
    }
}

impl std::error::Error for Rejection {}

/// Parses and validates one queue message body, a job request or a control
/// message. An unknown `action` is an INVALID_MESSAGE naming `action` (with
/// the id and webhook that could be read, so the sender hears of it).
pub fn parse_request(body: &[u8], limits: &Limits) -> Result<Request, Rejection> {
    parse_request_at(body, limits, std::time::SystemTime::now())
}

/// `parse_request` of a body received at `now` (see `parse_at`).
pub fn parse_request_at(
    body: &[u8],
    limits: &Limits,
    now: std::time::SystemTime,
) -> Result<Request, Rejection> {
    if let Some(rej) = too_large(body, limits) {
        return Err(rej);
    }
    let bare = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Option<Value> = serde_json::from_slice(bare).ok();
    let action = value
        .as_ref()
        .and_then(|v| v.get("action"))
        .and_then(Value::as_str);
    if action != Some("cancel") {
        return parse_at(body, limits, now).map(|m| Request::Job(Box::new(m)));
    }
    let mut w = Walker::default();
    let root = value.as_ref().and_then(Value::as_object);
    let id = w.id(root.and_then(|r| r.get("id")));
    match id {
        Some(id) if w.problems.is_empty() => Ok(Request::Cancel { id }),
        _ => Err(Rejection {
            code: ErrorCode::InvalidMessage,
            problems: w.problems,
            id: None,
            webhook_url: None,
        }),
    }
}

fn too_large(body: &[u8], limits: &Limits) -> Option<Rejection> {
    (body.len() > limits.max_message_bytes).then(|| Rejection {
        code: ErrorCode::MessageTooLarge,
        problems: vec![Problem {
            field: String::new(),
            message: format!(
                "body is {} bytes, over the limit of {} bytes",
                body.len(),
                limits.max_message_bytes
            ),
        }],
        id: None,
        webhook_url: None,
    })
}

/// Parses and validates one queue message body as a job request (a control
/// message is refused here, naming `action`; see `parse_request`).
pub fn parse(body: &[u8], limits: &Limits) -> Result<Message, Rejection> {
    parse_at(body, limits, std::time::SystemTime::now())
}

/// Parses and validates one queue message body received at `now` (the
/// origin of `job.startDelaySeconds` and the bound of `job.startAfter`).
pub fn parse_at(
    body: &[u8],
    limits: &Limits,
    now: std::time::SystemTime,
) -> Result<Message, Rejection> {
    if let Some(rej) = too_large(body, limits) {
        return Err(rej);
    }
    // RFC 8259 §8.1 lets a parser ignore a leading byte-order mark, and
    // Windows and .NET producers send one.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Err(body_problem(format!("not valid JSON: {e}"))),
    };
    let Value::Object(root) = &value else {
        return Err(body_problem(format!(
            "expected a JSON object, got {}",
            kind(&value)
        )));
    };

    let mut w = Walker::default();
    w.unknown(
        root,
        "",
        &["id", "service", "job", "webhook", "payload", "action"],
    );
    w.action(root.get("action"));
    let id = w.id(root.get("id"));
    let webhook_url = w.webhook(root.get("webhook"));
    let service = w.opt_string(root.get("service"), "service");
    if let Some(service) = &service {
        w.check("service", label_value(service));
    }
    let job = w.job(root.get("job"), limits, now);
    let payload = w.payload(body);
    if let (Some(_), Some(job)) = (&payload, &job) {
        w.payload_room(job);
    }

    if let (Some(id), Some(job)) = (&id, &job) {
        let name = job_name(&job.prefix_name, id);
        if let Err(e) = dns_label(&name, 63) {
            w.add(
                "job.prefixName",
                format!("gives an invalid Job name {name:?}: {e}"),
            );
        }
    }

    match (id, job) {
        (Some(id), Some(job)) if w.problems.is_empty() => Ok(Message {
            id,
            service: service.unwrap_or_else(|| job.prefix_name.clone()),
            job,
            webhook_url,
            payload,
        }),
        (id, _) => Err(Rejection {
            code: ErrorCode::InvalidMessage,
            problems: w.problems,
            id,
            webhook_url,
        }),
    }
}

fn body_problem(message: String) -> Rejection {
    Rejection {
        code: ErrorCode::InvalidMessage,
        problems: vec![Problem {
            field: String::new(),
            message,
        }],
        id: None,
        webhook_url: None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Walks the JSON tree, collecting every problem with its field path.
#[derive(Default)]
struct Walker {
    problems: Vec<Problem>,
}

impl Walker {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// A problem was already reported for `field` or a field under it.
    fn has_problem(&self, field: &str) -> bool {
        self.problems.iter().any(|p| {
            p.field == field
                || p.field
                    .strip_prefix(field)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }

    fn check(&mut self, field: &str, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                self.add(field, e);
                false
            }
        }
    }

    fn unknown(&self, obj: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in obj.keys() {
            if !known.contains(&key.as_str()) {
                log::debug!("message: ignoring unknown field {}", join(path, key));
            }
        }
    }

    /// A string that may be absent; null and "" mean absent.
    fn opt_string(&mut self, v: Option<&Value>, path: &str) -> Option<String> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.add(path, format!("expected a string, got {}", kind(other)));
                None
            }
        }
    }

    /// A string that must be present (it may be empty).
    fn req_string(&mut self, v: Option<&Value>, path: &str) -> Option<String> {
        match v {
            None | Some(Value::Null) => {
                self.add(path, "is required");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.add(path, format!("expected a string, got {}", kind(other)));
                None
            }
        }
    }

    /// A string that must be present and non-empty.
    fn req_nonempty(&mut self, v: Option<&Value>, path: &str) -> Option<String> {
        let s = self.req_string(v, path)?;
        if s.is_empty() {
            self.add(path, "must not be empty");
            return None;
        }
        Some(s)
    }

    fn opt_int(&mut self, v: Option<&Value>, path: &str) -> Option<i64> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Some(i),
                None => {
                    self.add(path, format!("expected an integer, got {n}"));
                    None
                }
            },
            Some(other) => {
                self.add(path, format!("expected an integer, got {}", kind(other)));
                None
            }
        }
    }

    /// An optional integer within `min..=max`.
    fn opt_int_in(&mut self, v: Option<&Value>, path: &str, min: i64, max: i64) -> Option<i64> {
        let i = self.opt_int(v, path)?;
        if i < min {
            self.add(path, format!("must be ≥ {min} (got {i})"));
            None
        } else if i > max {
            self.add(path, format!("must be ≤ {max} (got {i})"));
            None
        } else {
            Some(i)
        }
    }

    fn opt_bool(&mut self, v: Option<&Value>, path: &str) -> Option<bool> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.add(path, format!("expected a boolean, got {}", kind(other)));
                None
            }
        }
    }

    /// An optional object; null and `{}` mean absent.
    fn opt_object<'v>(
        &mut self,
        v: Option<&'v Value>,
        path: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) if o.is_empty() => None,
            Some(Value::Object(o)) => Some(o),
            Some(other) => {
                self.add(path, format!("expected an object, got {}", kind(other)));
                None
            }
        }
    }

    /// An optional array; null means empty.
    fn opt_array<'v>(&mut self, v: Option<&'v Value>, path: &str) -> &'v [Value] {
        match v {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.add(path, format!("expected an array, got {}", kind(other)));
                &[]
            }
        }
    }

    fn string_list(&mut self, v: Option<&Value>, path: &str) -> Vec<String> {
        let items = self.opt_array(v, path);
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => self.add(
                    format!("{path}[{i}]"),
                    format!("expected a string, got {}", kind(other)),
                ),
            }
        }
        out
    }

    fn id(&mut self, v: Option<&Value>) -> Option<String> {
        let id = self.req_nonempty(v, "id")?;
        if id.len() > MAX_ID_BYTES {
            self.add(
                "id",
                format!("must be at most {MAX_ID_BYTES} bytes (got {})", id.len()),
            );
            return None;
        }
        Some(id)
    }

    /// `action` of a job request: absent or null. `cancel` is a control
    /// message (`parse_request`); anything else is refused.
    fn action(&mut self, v: Option<&Value>) {
        match v {
            None | Some(Value::Null) => {}
            Some(Value::String(a)) if ACTIONS.contains(&a.as_str()) => self.add(
                "action",
                format!("{a:?} is a control message, not a job request"),
            ),
            Some(Value::String(a)) => {
                let shown = crate::contract::truncate_utf8(a, 64);
                self.add(
                    "action",
                    format!("unknown action {shown:?} (the only one is \"cancel\"; absent for a job request)"),
                )
            }
            Some(other) => self.add(
                "action",
                format!(
                    "must be the string \"cancel\" or absent, got {}",
                    kind(other)
                ),
            ),
        }
    }

    fn webhook(&mut self, v: Option<&Value>) -> Option<WebhookUrl> {
        let obj = self.opt_object(v, "webhook")?;
        self.unknown(obj, "webhook", &["url"]);
        let url = self.opt_string(obj.get("url"), "webhook.url")?;
        match webhook_url(&url) {
            Ok(u) => Some(u),
            Err(e) => {
                self.add("webhook.url", e);
                None
            }
        }
    }

    /// The top-level `payload`, read a second time from the body as raw JSON
    /// text so that it reaches the pod byte for byte (numbers beyond f64, key
    /// order and escapes kept). Null means no payload. Its content is never put
    /// in a problem's message.
    fn payload(&mut self, body: &[u8]) -> Option<Payload> {
        match serde_json::from_slice::<RawPayload>(body) {
            Ok(RawPayload { payload: None }) => None,
            Ok(RawPayload { payload: Some(raw) }) => {
                let text = raw.get();
                if text.len() > MAX_PAYLOAD_BYTES {
                    self.add(
                        "payload",
                        format!(
                            "is {} bytes, over the {MAX_PAYLOAD_BYTES} bytes a Kubernetes Secret can hold",
                            text.len()
                        ),
                    );
                    return None;
                }
                Some(Payload(text.to_string()))
            }
            // The body is a JSON object (checked before), so the only way
            // this fails is a second `payload` key.
            Err(_) => {
                self.add("payload", "appears more than once");
                None
            }
        }
    }

    /// With a payload, PAYLOAD_DIR belongs to the worker: the message's
    /// volume may not be mounted at or under it.
    fn payload_room(&mut self, job: &JobSpec) {
        if let Some(v) = &job.volume {
            let segments = |p: &str| -> Vec<String> {
                p.split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_string)
                    .collect()
            };
            let (mount, dir) = (segments(&v.mount_path), segments(PAYLOAD_DIR));
            if mount.starts_with(&dir) {
                self.add(
                    "job.volume.mountPath",
                    format!("{PAYLOAD_DIR} is where the worker mounts the payload"),
                );
            }
        }
    }

    fn job(
        &mut self,
        v: Option<&Value>,
        limits: &Limits,
        now: std::time::SystemTime,
    ) -> Option<JobSpec> {
        let obj = match v {
            None | Some(Value::Null) => {
                self.add("job", "is required");
                return None;
            }
            Some(Value::Object(o)) => o,
            Some(other) => {
                self.add("job", format!("expected an object, got {}", kind(other)));
                return None;
            }
        };
        self.unknown(
            obj,
            "job",
            &[
                "prefixName",
                "namespace",
                "image",
                "command",
                "args",
                "serviceAccount",
                "ttlSecondsAfterFinished",
                "backoffLimit",
                "activeDeadlineSeconds",
                "gpuEnable",
                "gpuNumber",
                "env",
                "envRef",
                "envFrom",
                "resources",
                "nodeSelector",
                "toleration",
                "fargate",
                "volume",
                "volume:",
                "priorityClass",
                "podFailurePolicy",
                "completions",
                "parallelism",
                "completionMode",
                "imagePullSecrets",
                "queueName",
                "startAfter",
                "startDelaySeconds",
            ],
        );

        let prefix_name = self
            .req_nonempty(obj.get("prefixName"), "job.prefixName")
            .filter(|p| self.check("job.prefixName", prefix_name(p)));

        let namespace = self
            .opt_string(obj.get("namespace"), "job.namespace")
            .filter(|n| self.check("job.namespace", dns_label(n, 63)))
            .unwrap_or_else(|| "default".to_string());

        let image = self
            .req_nonempty(obj.get("image"), "job.image")
            .filter(|i| self.check("job.image", image(i)));

        let command = self.string_list(obj.get("command"), "job.command");
        let args = self.string_list(obj.get("args"), "job.args");

        let service_account = self
            .opt_string(obj.get("serviceAccount"), "job.serviceAccount")
            .filter(|s| self.check("job.serviceAccount", dns_subdomain(s)));

        let ttl_path = "job.ttlSecondsAfterFinished";
        let ttl_seconds_after_finished = self.opt_int(obj.get("ttlSecondsAfterFinished"), ttl_path);
        if let Some(ttl) = ttl_seconds_after_finished {
            if ttl <= MIN_TTL_EXCLUSIVE {
                self.add(
                    ttl_path,
                    format!("must be > {MIN_TTL_EXCLUSIVE} (got {ttl})"),
                );
            } else if ttl > i64::from(i32::MAX) {
                self.add(ttl_path, format!("must be ≤ {} (got {ttl})", i32::MAX));
            }
        }

        let backoff_limit = self
            .opt_int_in(obj.get("backoffLimit"), "job.backoffLimit", 0, MAX_BACKOFF)
            .and_then(|b| i32::try_from(b).ok())
            .unwrap_or(0);

        let deadline_path = "job.activeDeadlineSeconds";
        let active_deadline_seconds = self.opt_int(obj.get("activeDeadlineSeconds"), deadline_path);
        if let Some(d) = active_deadline_seconds
            && !(MIN_DEADLINE..=limits.active_deadline_max).contains(&d)
        {
            self.add(
                deadline_path,
                format!(
                    "must be between {MIN_DEADLINE} and {} (got {d})",
                    limits.active_deadline_max
                ),
            );
        }
        let active_deadline_seconds = active_deadline_seconds.unwrap_or(limits.active_deadline_max);

        let gpu_enable = self
            .opt_bool(obj.get("gpuEnable"), "job.gpuEnable")
            .unwrap_or(false);
        let gpu_number = self
            .opt_int_in(obj.get("gpuNumber"), "job.gpuNumber", 1, MAX_GPUS)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1);
        let gpus = gpu_enable.then_some(gpu_number);

        let env = self.env(obj.get("env"));
        let env_refs = self.env_refs(obj);
        let resources = self.resources(obj.get("resources"));

        let node_selector = self.key_value(
            obj.get("nodeSelector"),
            "job.nodeSelector",
            ("matchKey", "matchValue"),
        );
        let toleration = self.key_value(obj.get("toleration"), "job.toleration", ("key", "value"));
        let fargate = self.key_value(obj.get("fargate"), "job.fargate", ("key", "value"));
        if let Some(kv) = &fargate
            && RESERVED_LABELS.contains(&kv.key.as_str())
        {
            self.add(
                "job.fargate.key",
                format!("{:?} is a label the worker sets itself", kv.key),
            );
        }
        let volume = self.volume(obj);

        let priority_class = self
            .opt_string(obj.get("priorityClass"), "job.priorityClass")
            .filter(|p| self.check("job.priorityClass", dns_subdomain(p)));
        let completions = self
            .opt_int_in(
                obj.get("completions"),
                "job.completions",
                1,
                MAX_COMPLETIONS,
            )
            .and_then(|n| i32::try_from(n).ok());
        let parallelism = self
            .opt_int_in(
                obj.get("parallelism"),
                "job.parallelism",
                1,
                MAX_COMPLETIONS,
            )
            .and_then(|n| i32::try_from(n).ok());
        let completion_mode = self
            .opt_string(obj.get("completionMode"), "job.completionMode")
            .and_then(|m| match m.as_str() {
                "NonIndexed" => Some(CompletionMode::NonIndexed),
                "Indexed" => Some(CompletionMode::Indexed),
                _ => {
                    self.add(
                        "job.completionMode",
                        format!("must be \"NonIndexed\" or \"Indexed\" (got {m:?})"),
                    );
                    None
                }
            });
        if completion_mode == Some(CompletionMode::Indexed)
            && completions.is_none()
            && obj.get("completions").is_none_or(Value::is_null)
        {
            self.add("job.completions", "is required with completionMode Indexed");
        }
        let pod_failure_policy = self.pod_failure_policy(obj.get("podFailurePolicy"));
        if completion_mode != Some(CompletionMode::Indexed)
            && let Some(i) = pod_failure_policy
                .iter()
                .position(|r| r.action == FailureAction::FailIndex)
        {
            self.add(
                format!("job.podFailurePolicy.rules[{i}].action"),
                "FailIndex needs job.completionMode Indexed",
            );
        }
        let image_pull_secrets = self.image_pull_secrets(obj.get("imagePullSecrets"));
        let own_queue = self
            .opt_string(obj.get("queueName"), "job.queueName")
            .filter(|q| self.check("job.queueName", dns_label(q, 63)));
        let queue_name = match (&own_queue, &limits.default_queue_name) {
            (Some(q), _) => Some(q.clone()),
            // A queueName that was refused is not replaced by the default.
            (None, Some(d)) if !self.has_problem("job.queueName") => Some(d.clone()),
            (None, _) => None,
        };
        // Kueue admits a Job by its containers' requests (limits stand in for
        // missing requests): a queued Job must say what it needs.
        if let Some(q) = &queue_name
            && resources == Resources::default()
            && gpus.is_none()
            && !self.has_problem("job.resources")
        {
            let why = if own_queue.is_some() {
                "job.queueName is set".to_string()
            } else {
                format!("DEFAULT_QUEUE_NAME queues this Job in {q:?}")
            };
            self.add(
                "job.resources",
                format!("requests or limits (cpu or memory) are required for a queued Job ({why})"),
            );
        }

        let start_after = self.start_after(obj, limits, now);

        Some(JobSpec {
            prefix_name: prefix_name?,
            namespace,
            image: image?,
            command,
            args,
            service_account,
            ttl_seconds_after_finished,
            backoff_limit,
            active_deadline_seconds,
            gpus,
            env,
            env_refs,
            resources,
            node_selector,
            toleration,
            fargate,
            volume,
            priority_class,
            pod_failure_policy,
            completions,
            parallelism,
            completion_mode,
            image_pull_secrets,
            queue_name,
            start_after,
        })
    }

    /// `job.startAfter` (RFC 3339 with an offset) or `job.startDelaySeconds`
    /// (an integer), not both, resolved by `schedule::resolve`.
    fn start_after(
        &mut self,
        obj: &Map<String, Value>,
        limits: &Limits,
        now: std::time::SystemTime,
    ) -> Option<std::time::SystemTime> {
        use crate::schedule::{FIELD_START_AFTER, FIELD_START_DELAY, Start};
        let at = self
            .opt_string(obj.get("startAfter"), FIELD_START_AFTER)
            .and_then(|s| match crate::clock::parse_rfc3339(&s) {
                Some(t) => Some(Start::At(t)),
                None => {
                    self.add(
                        FIELD_START_AFTER,
                        "must be an RFC 3339 time with an offset, e.g. 2026-01-01T12:00:00Z",
                    );
                    None
                }
            });
        let delay = self
            .opt_int_in(obj.get("startDelaySeconds"), FIELD_START_DELAY, 0, i64::MAX)
            .map(|s| Start::In(std::time::Duration::from_secs(s as u64)));
        let start = match (at, delay) {
            (Some(_), Some(_)) => {
                self.add(
                    FIELD_START_AFTER,
                    "and job.startDelaySeconds are exclusive: give one of them",
                );
                return None;
            }
            (Some(s), None) | (None, Some(s)) => s,
            (None, None) => return None,
        };
        match crate::schedule::resolve(start, now, limits.max_start_delay) {
            Ok(t) => t,
            Err(e) => {
                self.add(e.field, e.message);
                None
            }
        }
    }

    /// `job.imagePullSecrets`: a list of Secret names (strings, or
    /// `{"name": ...}` objects as in a pod spec), no duplicates.
    fn image_pull_secrets(&mut self, v: Option<&Value>) -> Vec<String> {
        let path = "job.imagePullSecrets";
        let items = self.opt_array(v, path);
        if items.len() > MAX_PULL_SECRETS {
            self.add(
                path,
                format!(
                    "must have at most {MAX_PULL_SECRETS} entries (got {})",
                    items.len()
                ),
            );
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let name = match item {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => {
                    self.unknown(o, &p, &["name"]);
                    self.req_nonempty(o.get("name"), &format!("{p}.name"))
                }
                other => {
                    self.add(
                        &p,
                        format!("expected a string or an object, got {}", kind(other)),
                    );
                    None
                }
            };
            let Some(name) = name.filter(|n| self.check(&p, dns_subdomain(n))) else {
                continue;
            };
            if out.contains(&name) {
                self.add(&p, format!("duplicate name {name:?}"));
                continue;
            }
            out.push(name);
        }
        out
    }

    /// `job.podFailurePolicy`: `{"rules": [...]}`, each rule validated as the
    /// API server would (batch/v1), so a message never fails at create time.
    fn pod_failure_policy(&mut self, v: Option<&Value>) -> Vec<PodFailureRule> {
        let path = "job.podFailurePolicy";
        let Some(obj) = self.opt_object(v, path) else {
            return Vec::new();
        };
        self.unknown(obj, path, &["rules"]);
        let rules_path = "job.podFailurePolicy.rules";
        let items = self.opt_array(obj.get("rules"), rules_path);
        if items.is_empty() {
            self.add(rules_path, "must have at least one rule");
            return Vec::new();
        }
        if items.len() > MAX_FAILURE_RULES {
            self.add(
                rules_path,
                format!(
                    "must have at most {MAX_FAILURE_RULES} rules (got {})",
                    items.len()
                ),
            );
            return Vec::new();
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{rules_path}[{i}]");
            let Value::Object(rule) = item else {
                self.add(&p, format!("expected an object, got {}", kind(item)));
                continue;
            };
            self.unknown(rule, &p, &["action", "onExitCodes", "onPodConditions"]);
            let action_path = format!("{p}.action");
            let action = self
                .req_nonempty(rule.get("action"), &action_path)
                .and_then(|a| match a.as_str() {
                    "FailJob" => Some(FailureAction::FailJob),
                    "FailIndex" => Some(FailureAction::FailIndex),
                    "Ignore" => Some(FailureAction::Ignore),
                    "Count" => Some(FailureAction::Count),
                    _ => {
                        self.add(
                            &action_path,
                            format!("must be FailJob, FailIndex, Ignore or Count (got {a:?})"),
                        );
                        None
                    }
                });
            let has = |k: &str| rule.get(k).is_some_and(|v| !v.is_null());
            let (codes, conditions) = match (has("onExitCodes"), has("onPodConditions")) {
                (true, true) => {
                    self.add(&p, "give onExitCodes or onPodConditions, not both");
                    continue;
                }
                (false, false) => {
                    self.add(&p, "needs onExitCodes or onPodConditions");
                    continue;
                }
                (true, false) => (
                    self.on_exit_codes(rule.get("onExitCodes"), &format!("{p}.onExitCodes")),
                    Vec::new(),
                ),
                (false, true) => (
                    None,
                    self.on_pod_conditions(
                        rule.get("onPodConditions"),
                        &format!("{p}.onPodConditions"),
                    ),
                ),
            };
            if let Some(action) = action
                && (codes.is_some() || !conditions.is_empty())
            {
                out.push(PodFailureRule {
                    action,
                    on_exit_codes: codes,
                    on_pod_conditions: conditions,
                });
            }
        }
        out
    }

    fn on_exit_codes(&mut self, v: Option<&Value>, path: &str) -> Option<OnExitCodes> {
        let Some(Value::Object(obj)) = v else {
            self.add(path, format!("expected an object, got {}", kind(v?)));
            return None;
        };
        self.unknown(obj, path, &["containerName", "operator", "values"]);
        let cn_path = join(path, "containerName");
        if let Some(name) = self.opt_string(obj.get("containerName"), &cn_path)
            && name != crate::render::CONTAINER_NAME
        {
            self.add(
                &cn_path,
                format!(
                    "must be {:?}, the worker's container (got {name:?})",
                    crate::render::CONTAINER_NAME
                ),
            );
        }
        let op_path = join(path, "operator");
        let in_values = self
            .req_nonempty(obj.get("operator"), &op_path)
            .and_then(|op| match op.as_str() {
                "In" => Some(true),
                "NotIn" => Some(false),
                _ => {
                    self.add(&op_path, format!("must be In or NotIn (got {op:?})"));
                    None
                }
            });
        let values_path = join(path, "values");
        let items = self.opt_array(obj.get("values"), &values_path);
        if items.is_empty() || items.len() > MAX_EXIT_CODES {
            self.add(
                &values_path,
                format!(
                    "must have 1 to {MAX_EXIT_CODES} exit codes (got {})",
                    items.len()
                ),
            );
            return None;
        }
        let mut values: Vec<i32> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{values_path}[{i}]");
            let Some(code) = self
                .opt_int_in(Some(item), &p, i64::from(i32::MIN), i64::from(i32::MAX))
                .and_then(|c| i32::try_from(c).ok())
            else {
                if item.is_null() {
                    self.add(&p, "expected an integer, got null");
                }
                continue;
            };
            if in_values == Some(true) && code == 0 {
                self.add(&p, "0 is not allowed with the In operator");
                continue;
            }
            if values.contains(&code) {
                self.add(&p, format!("duplicate exit code {code}"));
                continue;
            }
            values.push(code);
        }
        values.sort_unstable();
        Some(OnExitCodes {
            in_values: in_values?,
            values,
        })
    }

    fn on_pod_conditions(&mut self, v: Option<&Value>, path: &str) -> Vec<OnPodCondition> {
        let items = self.opt_array(v, path);
        if items.is_empty() || items.len() > MAX_POD_CONDITIONS {
            self.add(
                path,
                format!(
                    "must have 1 to {MAX_POD_CONDITIONS} patterns (got {})",
                    items.len()
                ),
            );
            return Vec::new();
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Value::Object(obj) = item else {
                self.add(&p, format!("expected an object, got {}", kind(item)));
                continue;
            };
            self.unknown(obj, &p, &["type", "status"]);
            let type_path = format!("{p}.type");
            let condition_type = self
                .req_nonempty(obj.get("type"), &type_path)
                .filter(|t| self.check(&type_path, qualified_name(t)));
            let status_path = format!("{p}.status");
            let status = match obj.get("status") {
                None | Some(Value::Null) => Some("True".to_string()),
                Some(Value::String(s)) if ["True", "False", "Unknown"].contains(&s.as_str()) => {
                    Some(s.clone())
                }
                Some(other) => {
                    self.add(
                        &status_path,
                        format!("must be \"True\", \"False\" or \"Unknown\" (got {other})"),
                    );
                    None
                }
            };
            if let (Some(condition_type), Some(status)) = (condition_type, status) {
                out.push(OnPodCondition {
                    condition_type,
                    status,
                });
            }
        }
        out
    }

    fn env(&mut self, v: Option<&Value>) -> Vec<EnvVar> {
        let items = self.opt_array(v, "job.env");
        let mut out: Vec<EnvVar> = Vec::with_capacity(items.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("job.env[{i}]");
            let Value::Object(obj) = item else {
                self.add(&path, format!("expected an object, got {}", kind(item)));
                continue;
            };
            self.unknown(obj, &path, &["name", "value"]);
            let name_path = format!("{path}.name");
            let name = self
                .req_nonempty(obj.get("name"), &name_path)
                .filter(|n| self.check(&name_path, env_name(n)));
            let value_path = format!("{path}.value");
            let value = match obj.get("value") {
                None | Some(Value::Null) => Some(String::new()),
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    self.add(
                        &value_path,
                        format!("expected a string, got {}", kind(other)),
                    );
                    None
                }
            };
            let Some(name) = name else { continue };
            if RESERVED_ENV.contains(&name.as_str()) {
                self.add(&name_path, format!("{name} is set by the worker itself"));
                continue;
            }
            if let Some(first) = seen.get(&name) {
                self.add(
                    &name_path,
                    format!("duplicate name {name:?} (also job.env[{first}])"),
                );
                continue;
            }
            seen.insert(name.clone(), i);
            if let Some(value) = value {
                out.push(EnvVar { name, value });
            }
        }
        out
    }

    /// `envRef`, or its alias `envFrom`.
    fn env_refs(&mut self, job: &Map<String, Value>) -> Vec<EnvRef> {
        let present = |k: &str| job.get(k).is_some_and(|v| !v.is_null());
        let key = if present("envRef") {
            "envRef"
        } else {
            "envFrom"
        };
        if present("envRef") && present("envFrom") {
            self.add(
                "job.envFrom",
                "is an alias of job.envRef; send only one of them",
            );
        }
        let list_path = format!("job.{key}");
        let items = self.opt_array(job.get(key), &list_path);
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{list_path}[{i}]");
            let Value::Object(obj) = item else {
                self.add(&path, format!("expected an object, got {}", kind(item)));
                continue;
            };
            self.unknown(obj, &path, &["name", "type"]);
            let name_path = format!("{path}.name");
            let name = self
                .req_nonempty(obj.get("name"), &name_path)
                .filter(|n| self.check(&name_path, dns_subdomain(n)));
            let type_path = format!("{path}.type");
            let kind = self
                .req_nonempty(obj.get("type"), &type_path)
                .and_then(|t| match t.to_ascii_lowercase().as_str() {
                    "configmap" => Some(EnvRefKind::ConfigMap),
                    "secret" => Some(EnvRefKind::Secret),
                    _ => {
                        self.add(
                            &type_path,
                            format!("must be \"configmap\" or \"secret\" (got {t:?})"),
                        );
                        None
                    }
                });
            if let (Some(name), Some(kind)) = (name, kind) {
                out.push(EnvRef { name, kind });
            }
        }
        out
    }

    fn resources(&mut self, v: Option<&Value>) -> Resources {
        let mut out = Resources::default();
        let Some(obj) = self.opt_object(v, "job.resources") else {
            return out;
        };
        self.unknown(obj, "job.resources", &["limits", "requests"]);
        let (limits, lim_milli) = self.resource_list(obj.get("limits"), "job.resources.limits");
        let (requests, req_milli) =
            self.resource_list(obj.get("requests"), "job.resources.requests");
        for (i, name) in ["cpu", "memory"].iter().enumerate() {
            let (Some(req), Some(lim)) = (
                req_milli.get(i).copied().flatten(),
                lim_milli.get(i).copied().flatten(),
            ) else {
                continue;
            };
            if req > lim {
                let req_text = if i == 0 {
                    &requests.cpu
                } else {
                    &requests.memory
                };
                let lim_text = if i == 0 { &limits.cpu } else { &limits.memory };
                self.add(
                    format!("job.resources.requests.{name}"),
                    format!(
                        "must not exceed the limit ({} > {})",
                        req_text.as_deref().unwrap_or_default(),
                        lim_text.as_deref().unwrap_or_default()
                    ),
                );
            }
        }
        out.limits = limits;
        out.requests = requests;
        out
    }

    /// The list and the milli-values of [cpu, memory].
    fn resource_list(
        &mut self,
        v: Option<&Value>,
        path: &str,
    ) -> (ResourceList, [Option<i128>; 2]) {
        let Some(obj) = self.opt_object(v, path) else {
            return (ResourceList::default(), [None, None]);
        };
        self.unknown(obj, path, &["cpu", "memory"]);
        let cpu = self.quantity(obj.get("cpu"), &join(path, "cpu"));
        let memory = self.quantity(obj.get("memory"), &join(path, "memory"));
        let milli = [cpu.as_ref().map(|q| q.1), memory.as_ref().map(|q| q.1)];
        (
            ResourceList {
                cpu: cpu.map(|q| q.0),
                memory: memory.map(|q| q.0),
            },
            milli,
        )
    }

    /// A quantity as a string or a JSON number; null and "" mean absent.
    fn quantity(&mut self, v: Option<&Value>, path: &str) -> Option<(String, i128)> {
        let text = match v {
            None | Some(Value::Null) => return None,
            Some(Value::String(s)) if s.is_empty() => return None,
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                self.add(
                    path,
                    format!("expected a string or a number, got {}", kind(other)),
                );
                return None;
            }
        };
        match quantity::parse_milli(&text) {
            Ok(m) if m < 0 => {
                self.add(path, format!("must not be negative (got {text:?})"));
                None
            }
            Ok(m) => Some((text, m)),
            Err(e) => {
                self.add(path, format!("is not a valid quantity: {e}"));
                None
            }
        }
    }

    /// nodeSelector / toleration / fargate: a qualified label key and a label
    /// value. An object whose two fields are both empty or null is absent.
    fn key_value(
        &mut self,
        v: Option<&Value>,
        path: &str,
        names: (&str, &str),
    ) -> Option<KeyValue> {
        let obj = self.opt_object(v, path)?;
        let (key_name, value_name) = names;
        self.unknown(obj, path, &[key_name, value_name]);
        let blank = |k: &str| match obj.get(k) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if blank(key_name) && blank(value_name) {
            return None;
        }
        let key_path = join(path, key_name);
        let value_path = join(path, value_name);
        let key = self
            .req_nonempty(obj.get(key_name), &key_path)
            .filter(|k| self.check(&key_path, qualified_name(k)));
        let value = self
            .req_string(obj.get(value_name), &value_path)
            .filter(|val| self.check(&value_path, label_value(val)));
        Some(KeyValue {
            key: key?,
            value: value?,
        })
    }

    /// `volume`, or the drafts' spelling `"volume:"`; problems are reported
    /// under `job.volume` either way.
    fn volume(&mut self, job: &Map<String, Value>) -> Option<Volume> {
        let present = |k: &str| job.get(k).is_some_and(|v| !v.is_null());
        if present("volume") && present("volume:") {
            self.add(
                "job.volume",
                "sent both as \"volume\" and \"volume:\"; send only one",
            );
        }
        let v = if present("volume") {
            job.get("volume")
        } else {
            job.get("volume:")
        };
        let obj = self.opt_object(v, "job.volume")?;
        self.unknown(obj, "job.volume", &["mountPath", "pvc"]);
        let blank = |k: &str| match obj.get(k) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if blank("mountPath") && blank("pvc") {
            return None;
        }
        let mount_path = self
            .req_nonempty(obj.get("mountPath"), "job.volume.mountPath")
            .and_then(|p| match mount_path(&p) {
                Ok(abs) => Some(abs),
                Err(e) => {
                    self.add("job.volume.mountPath", e);
                    None
                }
            });
        let pvc = self
            .req_nonempty(obj.get("pvc"), "job.volume.pvc")
            .filter(|p| self.check("job.volume.pvc", dns_subdomain(p)));
        Some(Volume {
            mount_path: mount_path?,
            pvc: pvc?,
        })
    }
}

// ---- syntax rules (Kubernetes validation, apimachinery/pkg/util/validation) ----

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most `max` characters.
fn dns_label(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > max {
        return Err(format!(
            "must be at most {max} characters (got {})",
            s.len()
        ));
    }
    if !label_chars_ok(s) {
        return Err(format!(
            "{s:?} must consist of lowercase letters, digits and '-', and start and end with a letter or digit"
        ));
    }
    Ok(())
}

fn label_chars_ok(s: &str) -> bool {
    s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.chars().next().is_some_and(is_lower_alnum)
        && s.chars().next_back().is_some_and(is_lower_alnum)
}

fn prefix_name(s: &str) -> Result<(), String> {
    if s.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "must be at most {MAX_PREFIX_LEN} characters so the Job name fits 63 (got {})",
            s.len()
        ));
    }
    dns_label(s, MAX_PREFIX_LEN)
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("must be at most 253 characters (got {})", s.len()));
    }
    if !s.split('.').all(label_chars_ok) {
        return Err(format!(
            "{s:?} must consist of lowercase letters, digits, '-' and '.', with each dot-separated part starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn name_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Label value: empty, or at most 63 characters of the name alphabet.
fn label_value(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!("must be at most 63 characters (got {})", s.len()));
    }
    if !s.is_empty() && !name_chars_ok(s) {
        return Err(format!(
            "{s:?} must consist of letters, digits, '-', '_' and '.', and start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Qualified name (label key): `[prefix/]name`, prefix a DNS subdomain.
fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|e| format!("prefix {e}"))?;
    }
    if name.is_empty() {
        return Err("name part must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "name part must be at most 63 characters (got {})",
            name.len()
        ));
    }
    if !name_chars_ok(name) {
        return Err(format!(
            "{s:?} must be an optional DNS prefix and '/', then letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Environment variable name: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn env_name(s: &str) -> Result<(), String> {
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'));
    let rest_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} must consist of letters, digits, '-', '.' and '_', and not start with a digit"
        ))
    }
}

fn image(s: &str) -> Result<(), String> {
    if s.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "must be at most {MAX_IMAGE_BYTES} bytes (got {})",
            s.len()
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(())
}

/// At most 2048 bytes, then the webhook guard's strict parser (`WebhookUrl`).
fn webhook_url(s: &str) -> Result<WebhookUrl, String> {
    if s.len() > MAX_URL_BYTES {
        return Err(format!(
            "must be at most {MAX_URL_BYTES} bytes (got {})",
            s.len()
        ));
    }
    WebhookUrl::parse(s)
}

/// Checks a mount path and makes it absolute.
fn mount_path(s: &str) -> Result<String, String> {
    if s.len() > MAX_MOUNT_PATH_BYTES {
        return Err(format!(
            "must be at most {MAX_MOUNT_PATH_BYTES} bytes (got {})",
            s.len()
        ));
    }
    if s.contains(':') {
        return Err("must not contain ':'".into());
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if s.split('/').any(|seg| seg == "..") {
        return Err("must not contain a '..' segment".into());
    }
    let abs = if s.starts_with('/') {
        s.to_string()
    } else {
        format!("/{s}")
    };
    if abs.split('/').all(|seg| seg.is_empty() || seg == ".") {
        return Err("must not be the root directory".into());
    }
    Ok(abs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "id": "31a89a91-43d8-4786-a195-9b25cec28a44",
            "service": "example",
            "job": {
                "prefixName": "bb",
                "namespace": "default",
                "image": "busybox",
                "command": ["/bin/sh", "-c", "echo hi"],
                "args": [],
                "serviceAccount": "default",
                "ttlSecondsAfterFinished": 60,
                "backoffLimit": 0,
                "activeDeadlineSeconds": 600,
                "gpuEnable": false,
                "gpuNumber": 1,
                "env": [{ "name": "Test1", "value": "hello" }],
                "envRef": [{ "name": "busybox-default", "type": "configmap" }],
                "resources": {
                    "limits": { "cpu": "1", "memory": "512Mi" },
                    "requests": { "cpu": "500m", "memory": "256Mi" }
                },
                "nodeSelector": { "matchKey": "kubernetes.io/hostname", "matchValue": "k8s-node-1" },
                "toleration": { "key": "key", "value": "value" },
                "volume": { "mountPath": "workdir", "pvc": "ps-pvc" }
            },
            "webhook": { "url": "http://webhook.com" }
        })
    }

    fn parse_value(v: &Value) -> Result<Message, Rejection> {
        parse(v.to_string().as_bytes(), &Limits::default())
    }

    /// Sets `key` in the object at JSON pointer `parent`.
    fn set(v: &mut Value, parent: &str, key: &str, new: Value) {
        let Some(Value::Object(obj)) = v.pointer_mut(parent) else {
            panic!("test fixture has no object at {parent}");
        };
        obj.insert(key.to_string(), new);
    }

    fn remove(v: &mut Value, parent: &str, key: &str) {
        if let Some(Value::Object(obj)) = v.pointer_mut(parent) {
            obj.remove(key);
        }
    }

    fn rejected(v: &Value) -> Rejection {
        match parse_value(v) {
            Ok(m) => panic!("expected a rejection, parsed {m:?}"),
            Err(r) => r,
        }
    }

    #[test]
    fn base_message_is_valid() {
        let m = parse_value(&base()).expect("base message is valid");
        assert_eq!(m.id, "31a89a91-43d8-4786-a195-9b25cec28a44");
        assert_eq!(m.service, "example");
        assert_eq!(m.webhook_url.as_deref(), Some("http://webhook.com"));
        let j = &m.job;
        assert_eq!(j.prefix_name, "bb");
        assert_eq!(j.service_account.as_deref(), Some("default"));
        assert_eq!(j.ttl_seconds_after_finished, Some(60));
        assert_eq!(j.active_deadline_seconds, 600);
        assert_eq!(j.gpus, None);
        assert_eq!(
            j.env_refs,
            vec![EnvRef {
                name: "busybox-default".into(),
                kind: EnvRefKind::ConfigMap
            }]
        );
        assert_eq!(
            j.volume,
            Some(Volume {
                mount_path: "/workdir".into(),
                pvc: "ps-pvc".into()
            })
        );
        assert_eq!(j.resources.requests.cpu.as_deref(), Some("500m"));
    }

    #[test]
    fn defaults_and_aliases() {
        let body = json!({
            "id": "x",
            "job": {
                "prefixName": "p",
                "image": "busybox",
                "command": null,
                "serviceAccount": "",
                "gpuEnable": true,
                "envFrom": [
                    { "name": "a", "type": "configMap" },
                    { "name": "b", "type": "SECRET" },
                    { "name": "c", "type": "ConfigMap" }
                ],
                "resources": { "limits": { "cpu": 2, "memory": 1.5 } },
                "fargate": { "key": "WorkerType", "value": "fargate" },
                "volume:": { "mountPath": "/data", "pvc": "my.pvc" },
                "nodeSelector": {},
                "toleration": null,
                "unknownField": 1
            },
            "webhook": null,
            "extra": true
        });
        let m = parse_value(&body).expect("valid");
        assert_eq!(m.service, "p");
        assert_eq!(m.webhook_url, None);
        let j = &m.job;
        assert_eq!(j.namespace, "default");
        assert!(j.command.is_empty());
        assert_eq!(j.service_account, None);
        assert_eq!(j.backoff_limit, 0);
        assert_eq!(j.active_deadline_seconds, 86_400);
        assert_eq!(j.gpus, Some(1));
        let kinds: Vec<EnvRefKind> = j.env_refs.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                EnvRefKind::ConfigMap,
                EnvRefKind::Secret,
                EnvRefKind::ConfigMap
            ]
        );
        assert_eq!(j.resources.limits.cpu.as_deref(), Some("2"));
        assert_eq!(j.resources.limits.memory.as_deref(), Some("1.5"));
        assert_eq!(
            j.fargate,
            Some(KeyValue {
                key: "WorkerType".into(),
                value: "fargate".into()
            })
        );
        assert_eq!(
            j.volume.as_ref().map(|v| v.mount_path.as_str()),
            Some("/data")
        );
        assert_eq!(j.node_selector, None);
        assert_eq!(j.toleration, None);
    }

    #[test]
    fn invalid_inputs_name_their_field() {
        type Mutate = fn(&mut Value);
        let cases: &[(&str, Mutate, &str)] = &[
            ("missing id", |v| remove(v, "", "id"), "id"),
            ("empty id", |v| set(v, "", "id", json!("")), "id"),
            ("id as number", |v| set(v, "", "id", json!(42)), "id"),
            (
                "id too long",
                |v| set(v, "", "id", json!("x".repeat(1025))),
                "id",
            ),
            ("job as string", |v| set(v, "", "job", json!("job")), "job"),
            ("missing job", |v| remove(v, "", "job"), "job"),
            (
                "service bad",
                |v| set(v, "", "service", json!("a b")),
                "service",
            ),
            (
                "command as string",
                |v| set(v, "/job", "command", json!("echo hi")),
                "job.command",
            ),
            (
                "command item number",
                |v| set(v, "/job", "command", json!(["a", 1])),
                "job.command[1]",
            ),
            (
                "args as object",
                |v| set(v, "/job", "args", json!({"a": 1})),
                "job.args",
            ),
            (
                "backoffLimit as string",
                |v| set(v, "/job", "backoffLimit", json!("1")),
                "job.backoffLimit",
            ),
            (
                "backoffLimit fractional",
                |v| set(v, "/job", "backoffLimit", json!(1.5)),
                "job.backoffLimit",
            ),
            (
                "backoffLimit -1",
                |v| set(v, "/job", "backoffLimit", json!(-1)),
                "job.backoffLimit",
            ),
            (
                "backoffLimit 101",
                |v| set(v, "/job", "backoffLimit", json!(101)),
                "job.backoffLimit",
            ),
            (
                "prefixName uppercase",
                |v| set(v, "/job", "prefixName", json!("BB")),
                "job.prefixName",
            ),
            (
                "prefixName 53",
                |v| set(v, "/job", "prefixName", json!("a".repeat(53))),
                "job.prefixName",
            ),
            (
                "prefixName trailing dash",
                |v| set(v, "/job", "prefixName", json!("bb-")),
                "job.prefixName",
            ),
            (
                "prefixName missing",
                |v| remove(v, "/job", "prefixName"),
                "job.prefixName",
            ),
            (
                "namespace bad",
                |v| set(v, "/job", "namespace", json!("Default")),
                "job.namespace",
            ),
            (
                "namespace with dot",
                |v| set(v, "/job", "namespace", json!("a.b")),
                "job.namespace",
            ),
            ("image missing", |v| remove(v, "/job", "image"), "job.image"),
            (
                "image with space",
                |v| set(v, "/job", "image", json!("busy box")),
                "job.image",
            ),
            (
                "serviceAccount bad",
                |v| set(v, "/job", "serviceAccount", json!("-sa")),
                "job.serviceAccount",
            ),
            (
                "deadline 59",
                |v| set(v, "/job", "activeDeadlineSeconds", json!(59)),
                "job.activeDeadlineSeconds",
            ),
            (
                "deadline max+1",
                |v| set(v, "/job", "activeDeadlineSeconds", json!(86_401)),
                "job.activeDeadlineSeconds",
            ),
            (
                "ttl 30",
                |v| set(v, "/job", "ttlSecondsAfterFinished", json!(30)),
                "job.ttlSecondsAfterFinished",
            ),
            (
                "gpuEnable as string",
                |v| set(v, "/job", "gpuEnable", json!("true")),
                "job.gpuEnable",
            ),
            (
                "gpuNumber 0",
                |v| set(v, "/job", "gpuNumber", json!(0)),
                "job.gpuNumber",
            ),
            (
                "gpuNumber 65",
                |v| set(v, "/job", "gpuNumber", json!(65)),
                "job.gpuNumber",
            ),
            (
                "quantity 1.2.3",
                |v| set(v, "/job/resources/limits", "cpu", json!("1.2.3")),
                "job.resources.limits.cpu",
            ),
            (
                "quantity abc",
                |v| set(v, "/job/resources/requests", "memory", json!("abc")),
                "job.resources.requests.memory",
            ),
            (
                "quantity negative",
                |v| set(v, "/job/resources/limits", "memory", json!("-1Gi")),
                "job.resources.limits.memory",
            ),
            (
                "quantity as bool",
                |v| set(v, "/job/resources/limits", "cpu", json!(true)),
                "job.resources.limits.cpu",
            ),
            (
                "requests above limits",
                |v| set(v, "/job/resources/requests", "cpu", json!("2")),
                "job.resources.requests.cpu",
            ),
            (
                "env name 1A=",
                |v| set(v, "/job", "env", json!([{ "name": "1A=", "value": "x" }])),
                "job.env[0].name",
            ),
            (
                "env value number",
                |v| set(v, "/job", "env", json!([{ "name": "A", "value": 1 }])),
                "job.env[0].value",
            ),
            (
                "env duplicate",
                |v| {
                    set(
                        v,
                        "/job",
                        "env",
                        json!([{ "name": "A", "value": "1" }, { "name": "A", "value": "2" }]),
                    )
                },
                "job.env[1].name",
            ),
            (
                "env item not object",
                |v| set(v, "/job", "env", json!(["A=1"])),
                "job.env[0]",
            ),
            (
                "envRef type",
                |v| {
                    set(
                        v,
                        "/job",
                        "envRef",
                        json!([{ "name": "cfg", "type": "volume" }]),
                    )
                },
                "job.envRef[0].type",
            ),
            (
                "envFrom name",
                |v| {
                    remove(v, "/job", "envRef");
                    set(
                        v,
                        "/job",
                        "envFrom",
                        json!([{ "name": "Cfg", "type": "secret" }]),
                    )
                },
                "job.envFrom[0].name",
            ),
            (
                "envRef and envFrom",
                |v| set(v, "/job", "envFrom", json!([])),
                "job.envFrom",
            ),
            (
                "nodeSelector key",
                |v| set(v, "/job/nodeSelector", "matchKey", json!("bad key")),
                "job.nodeSelector.matchKey",
            ),
            (
                "nodeSelector value",
                |v| set(v, "/job/nodeSelector", "matchValue", json!("-x")),
                "job.nodeSelector.matchValue",
            ),
            (
                "nodeSelector missing key",
                |v| remove(v, "/job/nodeSelector", "matchKey"),
                "job.nodeSelector.matchKey",
            ),
            (
                "toleration key",
                |v| set(v, "/job/toleration", "key", json!("a/b/c")),
                "job.toleration.key",
            ),
            (
                "fargate reserved key",
                |v| set(v, "/job", "fargate", json!({ "key": "app", "value": "x" })),
                "job.fargate.key",
            ),
            (
                "volume dotdot",
                |v| set(v, "/job/volume", "mountPath", json!("/data/../etc")),
                "job.volume.mountPath",
            ),
            (
                "volume colon",
                |v| set(v, "/job/volume", "mountPath", json!("c:/data")),
                "job.volume.mountPath",
            ),
            (
                "volume root",
                |v| set(v, "/job/volume", "mountPath", json!("/")),
                "job.volume.mountPath",
            ),
            (
                "volume pvc",
                |v| set(v, "/job/volume", "pvc", json!("PVC")),
                "job.volume.pvc",
            ),
            (
                "volume: alias pvc",
                |v| {
                    remove(v, "/job", "volume");
                    set(v, "/job", "volume:", json!({ "mountPath": "w", "pvc": "" }))
                },
                "job.volume.pvc",
            ),
            (
                "webhook ftp",
                |v| set(v, "/webhook", "url", json!("ftp://x")),
                "webhook.url",
            ),
            (
                "webhook no host",
                |v| set(v, "/webhook", "url", json!("http:///path")),
                "webhook.url",
            ),
            (
                "webhook as string",
                |v| set(v, "", "webhook", json!("http://x")),
                "webhook",
            ),
            (
                "queueName as number",
                |v| set(v, "/job", "queueName", json!(7)),
                "job.queueName",
            ),
            (
                "queueName upper case",
                |v| set(v, "/job", "queueName", json!("Team-A")),
                "job.queueName",
            ),
            (
                "queueName with a dot",
                |v| set(v, "/job", "queueName", json!("team.a")),
                "job.queueName",
            ),
            (
                "queueName too long",
                |v| set(v, "/job", "queueName", json!("q".repeat(64))),
                "job.queueName",
            ),
            (
                "queueName leading dash",
                |v| set(v, "/job", "queueName", json!("-q")),
                "job.queueName",
            ),
            (
                "queued without resources",
                |v| {
                    set(v, "/job", "queueName", json!("team-a"));
                    remove(v, "/job", "resources");
                },
                "job.resources",
            ),
            (
                "queued with empty resources",
                |v| {
                    set(v, "/job", "queueName", json!("team-a"));
                    set(
                        v,
                        "/job",
                        "resources",
                        json!({"limits": {}, "requests": null}),
                    );
                },
                "job.resources",
            ),
        ];
        for (what, mutate, field) in cases {
            let mut v = base();
            mutate(&mut v);
            let r = rejected(&v);
            assert_eq!(r.code, ErrorCode::InvalidMessage, "{what}");
            assert!(
                r.problems.iter().any(|p| p.field == *field),
                "{what}: no problem for {field}: {r}"
            );
            assert!(
                r.problems.iter().all(|p| !p.field.is_empty()),
                "{what}: a problem names no field: {r}"
            );
        }
    }

    /// The Job-spec fields of issue 9 §4: priorityClass, podFailurePolicy,
    /// completions, parallelism, completionMode, imagePullSecrets.
    #[test]
    fn job_spec_fields_are_validated_field_by_field() {
        let rule = |r: Value| json!({ "rules": [r] });
        let codes = |op: &str, values: Value| json!({ "action": "FailJob", "onExitCodes": { "operator": op, "values": values } });
        let cases: Vec<(&str, &str, Value, &str)> = vec![
            (
                "priority class with capitals",
                "priorityClass",
                json!("High"),
                "job.priorityClass",
            ),
            (
                "priority class as number",
                "priorityClass",
                json!(1),
                "job.priorityClass",
            ),
            ("completions 0", "completions", json!(0), "job.completions"),
            (
                "completions huge",
                "completions",
                json!(100_001),
                "job.completions",
            ),
            (
                "completions as string",
                "completions",
                json!("3"),
                "job.completions",
            ),
            ("parallelism 0", "parallelism", json!(0), "job.parallelism"),
            (
                "parallelism fraction",
                "parallelism",
                json!(1.5),
                "job.parallelism",
            ),
            (
                "completion mode unknown",
                "completionMode",
                json!("indexed"),
                "job.completionMode",
            ),
            (
                "pull secrets as string",
                "imagePullSecrets",
                json!("regcred"),
                "job.imagePullSecrets",
            ),
            (
                "pull secret bad name",
                "imagePullSecrets",
                json!(["Reg_Cred"]),
                "job.imagePullSecrets[0]",
            ),
            (
                "pull secret duplicate",
                "imagePullSecrets",
                json!(["a", {"name": "a"}]),
                "job.imagePullSecrets[1]",
            ),
            (
                "pull secret object without name",
                "imagePullSecrets",
                json!([{}]),
                "job.imagePullSecrets[0].name",
            ),
            (
                "pull secrets too many",
                "imagePullSecrets",
                json!((0..21).map(|i| format!("s{i}")).collect::<Vec<_>>()),
                "job.imagePullSecrets",
            ),
            (
                "policy as list",
                "podFailurePolicy",
                json!([]),
                "job.podFailurePolicy",
            ),
            (
                "policy without rules",
                "podFailurePolicy",
                json!({ "rules": [] }),
                "job.podFailurePolicy.rules",
            ),
            (
                "policy with 21 rules",
                "podFailurePolicy",
                json!({ "rules": vec![codes("In", json!([1])); 21] }),
                "job.podFailurePolicy.rules",
            ),
            (
                "rule action unknown",
                "podFailurePolicy",
                rule(
                    json!({ "action": "Retry", "onExitCodes": { "operator": "In", "values": [1] } }),
                ),
                "job.podFailurePolicy.rules[0].action",
            ),
            (
                "rule without action",
                "podFailurePolicy",
                rule(json!({ "onExitCodes": { "operator": "In", "values": [1] } })),
                "job.podFailurePolicy.rules[0].action",
            ),
            (
                "rule without matcher",
                "podFailurePolicy",
                rule(json!({ "action": "Ignore" })),
                "job.podFailurePolicy.rules[0]",
            ),
            (
                "rule with both matchers",
                "podFailurePolicy",
                rule(
                    json!({ "action": "Ignore", "onExitCodes": { "operator": "In", "values": [1] }, "onPodConditions": [{ "type": "DisruptionTarget" }] }),
                ),
                "job.podFailurePolicy.rules[0]",
            ),
            (
                "operator unknown",
                "podFailurePolicy",
                rule(codes("Equals", json!([1]))),
                "job.podFailurePolicy.rules[0].onExitCodes.operator",
            ),
            (
                "no exit codes",
                "podFailurePolicy",
                rule(codes("In", json!([]))),
                "job.podFailurePolicy.rules[0].onExitCodes.values",
            ),
            (
                "256 exit codes",
                "podFailurePolicy",
                rule(codes("NotIn", json!((1..=256).collect::<Vec<_>>()))),
                "job.podFailurePolicy.rules[0].onExitCodes.values",
            ),
            (
                "exit code 0 with In",
                "podFailurePolicy",
                rule(codes("In", json!([0, 1]))),
                "job.podFailurePolicy.rules[0].onExitCodes.values[0]",
            ),
            (
                "exit code duplicate",
                "podFailurePolicy",
                rule(codes("In", json!([3, 3]))),
                "job.podFailurePolicy.rules[0].onExitCodes.values[1]",
            ),
            (
                "exit code as string",
                "podFailurePolicy",
                rule(codes("In", json!(["1"]))),
                "job.podFailurePolicy.rules[0].onExitCodes.values[0]",
            ),
            (
                "exit code beyond int32",
                "podFailurePolicy",
                rule(codes("In", json!([4_294_967_296_i64]))),
                "job.podFailurePolicy.rules[0].onExitCodes.values[0]",
            ),
            (
                "other container",
                "podFailurePolicy",
                rule(
                    json!({ "action": "FailJob", "onExitCodes": { "containerName": "main", "operator": "In", "values": [1] } }),
                ),
                "job.podFailurePolicy.rules[0].onExitCodes.containerName",
            ),
            (
                "no pod conditions",
                "podFailurePolicy",
                rule(json!({ "action": "Ignore", "onPodConditions": [] })),
                "job.podFailurePolicy.rules[0].onPodConditions",
            ),
            (
                "pod condition bad type",
                "podFailurePolicy",
                rule(
                    json!({ "action": "Ignore", "onPodConditions": [{ "type": "no spaces allowed" }] }),
                ),
                "job.podFailurePolicy.rules[0].onPodConditions[0].type",
            ),
            (
                "pod condition bad status",
                "podFailurePolicy",
                rule(
                    json!({ "action": "Ignore", "onPodConditions": [{ "type": "DisruptionTarget", "status": "Yes" }] }),
                ),
                "job.podFailurePolicy.rules[0].onPodConditions[0].status",
            ),
            (
                "FailIndex without Indexed",
                "podFailurePolicy",
                rule(
                    json!({ "action": "FailIndex", "onExitCodes": { "operator": "In", "values": [42] } }),
                ),
                "job.podFailurePolicy.rules[0].action",
            ),
        ];
        for (what, key, value, field) in cases {
            let mut v = base();
            set(&mut v, "/job", key, value);
            let r = rejected(&v);
            assert_eq!(r.code, ErrorCode::InvalidMessage, "{what}");
            assert!(
                r.problems.iter().any(|p| p.field == field),
                "{what}: no problem for {field}: {r}"
            );
        }
        // Indexed needs completions.
        let mut v = base();
        set(&mut v, "/job", "completionMode", json!("Indexed"));
        assert!(
            rejected(&v)
                .problems
                .iter()
                .any(|p| p.field == "job.completions")
        );

        // Everything at once, accepted and normalised (exit codes sorted).
        let mut v = base();
        for (k, val) in [
            ("priorityClass", json!("batch-high")),
            ("completions", json!(4)),
            ("parallelism", json!(2)),
            ("completionMode", json!("Indexed")),
            ("imagePullSecrets", json!(["regcred", { "name": "mirror" }])),
            (
                "podFailurePolicy",
                json!({ "rules": [
                    { "action": "FailIndex", "onExitCodes": { "containerName": "job", "operator": "In", "values": [42, 3] } },
                    { "action": "Ignore", "onPodConditions": [{ "type": "DisruptionTarget" }] },
                    { "action": "Count", "onExitCodes": { "operator": "NotIn", "values": [0] } }
                ] }),
            ),
        ] {
            set(&mut v, "/job", k, val);
        }
        let m = parse_value(&v).expect("valid");
        let j = &m.job;
        assert_eq!(j.priority_class.as_deref(), Some("batch-high"));
        assert_eq!((j.completions, j.parallelism), (Some(4), Some(2)));
        assert_eq!(j.completion_mode, Some(CompletionMode::Indexed));
        assert_eq!(j.image_pull_secrets, vec!["regcred", "mirror"]);
        assert_eq!(j.pod_failure_policy.len(), 3);
        assert_eq!(j.pod_failure_policy[0].action, FailureAction::FailIndex);
        assert_eq!(
            j.pod_failure_policy[0].on_exit_codes,
            Some(OnExitCodes {
                in_values: true,
                values: vec![3, 42]
            })
        );
        assert_eq!(j.pod_failure_policy[1].on_pod_conditions[0].status, "True");
        assert!(
            !j.pod_failure_policy[2]
                .on_exit_codes
                .as_ref()
                .is_some_and(|c| c.in_values)
        );
    }

    #[test]
    fn payload_is_any_json_value_kept_byte_for_byte() {
        let body = |payload: &str| {
            let mut v = base();
            remove(&mut v, "", "payload");
            let text = v.to_string();
            format!("{{\"payload\": {payload}, {}", &text[1..])
        };
        let parsed = |b: &str| parse(b.as_bytes(), &Limits::default());
        // Absent and null: no payload.
        assert_eq!(parse_value(&base()).map(|m| m.payload), Ok(None));
        assert_eq!(parsed(&body("null")).map(|m| m.payload), Ok(None));
        // Everything else is a payload, exactly as sent (big numbers, key
        // order, escapes and inner whitespace kept).
        for p in [
            "{}",
            "[]",
            "\"\"",
            "false",
            "0",
            "-1.50",
            "123456789012345678901234567890",
            "{\"b\": 1,  \"a\": [\"\\u00e9\", null]}",
            "\"a secret\"",
        ] {
            let m = parsed(&body(p)).unwrap_or_else(|r| panic!("{p}: {r}"));
            assert_eq!(m.payload.as_ref().map(Payload::as_str), Some(p));
        }
    }

    #[test]
    fn payload_rules() {
        let big = Limits {
            max_message_bytes: 3 * MAX_PAYLOAD_BYTES,
            ..Limits::default()
        };
        // Exactly 1 MiB of JSON text fits a Secret; one byte more does not.
        let fill = |n: usize| json!("x".repeat(n - 2));
        let mut v = base();
        set(&mut v, "", "payload", fill(MAX_PAYLOAD_BYTES));
        let m = parse(v.to_string().as_bytes(), &big).expect("1 MiB payload");
        assert_eq!(m.payload.map(|p| p.len()), Some(MAX_PAYLOAD_BYTES));
        set(&mut v, "", "payload", fill(MAX_PAYLOAD_BYTES + 1));
        let r = parse(v.to_string().as_bytes(), &big).expect_err("over 1 MiB");
        assert_eq!(r.code, ErrorCode::InvalidMessage);
        assert_eq!(r.problems.len(), 1, "{r}");
        assert_eq!(r.problems[0].field, "payload");
        assert_eq!(
            r.problems[0].message,
            "is 1048577 bytes, over the 1048576 bytes a Kubernetes Secret can hold"
        );
        assert!(r.id.is_some() && r.webhook_url.is_some());
        // The payload counts in MAX_MESSAGE_BYTES like any other byte.
        let r = parse(v.to_string().as_bytes(), &Limits::default()).expect_err("too large");
        assert_eq!(r.code, ErrorCode::MessageTooLarge);

        // A second `payload` key is ambiguous.
        let text = base().to_string();
        let twice = format!("{{\"payload\": 1, \"payload\": 2, {}", &text[1..]);
        let r = parse(twice.as_bytes(), &Limits::default()).expect_err("two payloads");
        assert_eq!(r.problems_text(), "payload: appears more than once");

        // The worker's variables cannot be set by the message.
        for name in ["JOB_WORKER_PAYLOAD", "JOB_WORKER_MESSAGE_ID"] {
            let mut v = base();
            set(
                &mut v,
                "/job",
                "env",
                json!([{ "name": name, "value": "x" }]),
            );
            let r = rejected(&v);
            assert_eq!(
                r.problems_text(),
                format!("job.env[0].name: {name} is set by the worker itself")
            );
        }

        // With a payload, /etc/k8s-job-worker is the worker's; without, free.
        for path in [
            "/etc/k8s-job-worker",
            "etc/k8s-job-worker/",
            "/etc//k8s-job-worker/./x",
        ] {
            let mut v = base();
            set(&mut v, "/job/volume", "mountPath", json!(path));
            assert!(parse_value(&v).is_ok(), "{path} without a payload");
            set(&mut v, "", "payload", json!({"k": 1}));
            let r = rejected(&v);
            assert_eq!(
                r.problems_text(),
                "job.volume.mountPath: /etc/k8s-job-worker is where the worker mounts the payload",
                "{path}"
            );
        }
        let mut v = base();
        set(
            &mut v,
            "/job/volume",
            "mountPath",
            json!("/etc/k8s-job-worker2"),
        );
        set(&mut v, "", "payload", json!({"k": 1}));
        assert!(parse_value(&v).is_ok());
    }

    #[test]
    fn the_payload_never_shows_in_debug_or_problems() {
        let canary = "payload-canary-3f9a1c";
        let mut v = base();
        set(&mut v, "", "payload", json!({ "secret": canary }));
        let m = parse_value(&v).expect("valid");
        assert!(!format!("{m:?}").contains(canary), "{m:?}");
        assert!(format!("{m:?}").contains("Payload(<"));
        // Refused messages name the field, never its content.
        set(&mut v, "/job", "image", json!(""));
        let r = rejected(&v);
        assert!(!format!("{r} {r:?}").contains(canary));
        let big = Limits {
            max_message_bytes: 3 * MAX_PAYLOAD_BYTES,
            ..Limits::default()
        };
        set(
            &mut v,
            "",
            "payload",
            json!(canary.repeat(MAX_PAYLOAD_BYTES / 10)),
        );
        let r = parse(v.to_string().as_bytes(), &big).expect_err("too big");
        assert!(!format!("{r} {r:?}").contains(canary));
    }

    #[test]
    fn delayed_starts_are_validated_field_by_field() {
        use std::time::{Duration, UNIX_EPOCH};
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01T00:00:00Z
        let start = |fields: &[(&str, Value)], limits: &Limits| {
            let mut v = base();
            for (k, val) in fields {
                set(&mut v, "/job", k, val.clone());
            }
            parse_at(v.to_string().as_bytes(), limits, now).map(|m| m.job.start_after)
        };
        let d = Limits::default();
        let at = |s: u64| Some(now + Duration::from_secs(s));
        assert_eq!(start(&[], &d), Ok(None));
        assert_eq!(start(&[("startDelaySeconds", json!(8))], &d), Ok(at(8)));
        assert_eq!(start(&[("startDelaySeconds", json!(0))], &d), Ok(None));
        assert_eq!(start(&[("startDelaySeconds", Value::Null)], &d), Ok(None));
        assert_eq!(
            start(&[("startAfter", json!("2026-01-01T03:00:00+02:00"))], &d),
            Ok(at(3600))
        );
        assert_eq!(start(&[("startAfter", json!(""))], &d), Ok(None));
        // Within the 60 s skew in the past: now, not delayed.
        assert_eq!(
            start(&[("startAfter", json!("2025-12-31T23:59:30Z"))], &d),
            Ok(None)
        );
        assert_eq!(
            start(&[("startDelaySeconds", json!(7 * 86_400))], &d),
            Ok(at(7 * 86_400))
        );
        let short = Limits {
            max_start_delay: Duration::from_secs(60),
            ..Limits::default()
        };
        for (fields, limits, field, words) in [
            (
                vec![("startDelaySeconds", json!(7 * 86_400 + 1))],
                &d,
                "job.startDelaySeconds",
                "MAX_START_DELAY",
            ),
            (
                vec![("startDelaySeconds", json!(61))],
                &short,
                "job.startDelaySeconds",
                "≤ 60",
            ),
            (
                vec![("startDelaySeconds", json!(-1))],
                &d,
                "job.startDelaySeconds",
                "≥ 0",
            ),
            (
                vec![("startDelaySeconds", json!(1.5))],
                &d,
                "job.startDelaySeconds",
                "integer",
            ),
            (
                vec![("startDelaySeconds", json!("8"))],
                &d,
                "job.startDelaySeconds",
                "integer",
            ),
            (
                vec![("startAfter", json!("2026-01-01T00:00:00"))],
                &d,
                "job.startAfter",
                "offset",
            ),
            (
                vec![("startAfter", json!("next tuesday"))],
                &d,
                "job.startAfter",
                "RFC 3339",
            ),
            (
                vec![("startAfter", json!(1767225600))],
                &d,
                "job.startAfter",
                "string",
            ),
            (
                vec![("startAfter", json!("2025-12-31T23:58:00Z"))],
                &d,
                "job.startAfter",
                "in the past",
            ),
            (
                vec![("startAfter", json!("2026-01-08T00:00:01Z"))],
                &d,
                "job.startAfter",
                "MAX_START_DELAY",
            ),
            (
                vec![
                    ("startAfter", json!("2026-01-01T00:10:00Z")),
                    ("startDelaySeconds", json!(8)),
                ],
                &d,
                "job.startAfter",
                "exclusive",
            ),
        ] {
            let r = start(&fields, limits).expect_err("refused");
            assert_eq!(r.code, ErrorCode::InvalidMessage);
            assert_eq!(r.problems.len(), 1, "{fields:?}: {r}");
            assert_eq!(r.problems[0].field, field, "{fields:?}: {r}");
            assert!(r.problems[0].message.contains(words), "{fields:?}: {r}");
        }
    }

    #[test]
    fn queue_names_and_the_default_queue() {
        let queued = |v: &Value, default: Option<&str>| {
            let limits = Limits {
                default_queue_name: default.map(str::to_string),
                ..Limits::default()
            };
            parse(v.to_string().as_bytes(), &limits).map(|m| m.job.queue_name)
        };
        let mut v = base();
        // Not queued: no queueName, no default.
        assert_eq!(queued(&v, None), Ok(None));
        // The default queue applies to a message without its own.
        assert_eq!(queued(&v, Some("batch")), Ok(Some("batch".into())));
        set(&mut v, "/job", "queueName", json!("team-a"));
        assert_eq!(queued(&v, None), Ok(Some("team-a".into())));
        assert_eq!(queued(&v, Some("batch")), Ok(Some("team-a".into())));
        // null and "" mean absent.
        set(&mut v, "/job", "queueName", json!(""));
        assert_eq!(queued(&v, None), Ok(None));
        set(&mut v, "/job", "queueName", Value::Null);
        assert_eq!(queued(&v, Some("batch")), Ok(Some("batch".into())));
        // A 63-character label is fine.
        set(&mut v, "/job", "queueName", json!("q".repeat(63)));
        assert_eq!(queued(&v, None), Ok(Some("q".repeat(63))));
        // Limits alone, requests alone, or GPUs alone are enough for Kueue.
        for resources in [
            json!({"limits": {"cpu": "1"}}),
            json!({"requests": {"memory": "64Mi"}}),
        ] {
            set(&mut v, "/job", "resources", resources);
            assert!(queued(&v, None).is_ok());
        }
        remove(&mut v, "/job", "resources");
        set(&mut v, "/job", "gpuEnable", json!(true));
        assert!(queued(&v, None).is_ok());
        set(&mut v, "/job", "gpuEnable", json!(false));
        let r = queued(&v, None).expect_err("queued without resources");
        assert_eq!(
            r.to_string(),
            "invalid message: job.resources: requests or limits (cpu or memory) are required for a queued Job (job.queueName is set)"
        );
        // Through the default queue, the message says which queue.
        remove(&mut v, "/job", "queueName");
        let r = queued(&v, Some("batch")).expect_err("default-queued without resources");
        assert_eq!(
            r.to_string(),
            "invalid message: job.resources: requests or limits (cpu or memory) are required for a queued Job (DEFAULT_QUEUE_NAME queues this Job in \"batch\")"
        );
        // An unqueued message still needs no resources.
        assert_eq!(queued(&v, None), Ok(None));
        // A refused queueName is reported once, not replaced by the default.
        set(&mut v, "/job", "queueName", json!("Bad"));
        let r = queued(&v, Some("batch")).expect_err("bad queueName");
        let fields: Vec<&str> = r.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["job.queueName"]);
    }

    #[test]
    fn specific_messages() {
        let mut v = base();
        set(&mut v, "/job", "backoffLimit", json!("1"));
        let r = rejected(&v);
        assert_eq!(
            r.to_string(),
            "invalid message: job.backoffLimit: expected an integer, got string"
        );

        let mut v = base();
        set(&mut v, "/job", "image", json!(""));
        set(&mut v, "/job", "backoffLimit", json!(-1));
        let r = rejected(&v);
        assert_eq!(
            r.to_string(),
            "invalid message: job.image: must not be empty; job.backoffLimit: must be ≥ 0 (got -1)"
        );
    }

    #[test]
    fn prefix_name_52_is_accepted() {
        let mut v = base();
        let prefix = "a".repeat(52);
        set(&mut v, "/job", "prefixName", json!(prefix));
        let m = parse_value(&v).expect("52-character prefix is valid");
        let name = job_name(&m.job.prefix_name, &m.id);
        assert_eq!(name.len(), 63);
    }

    #[test]
    fn deadline_bounds_follow_limits() {
        let mut v = base();
        set(&mut v, "/job", "activeDeadlineSeconds", json!(100));
        let limits = Limits {
            active_deadline_max: 99,
            ..Limits::default()
        };
        assert!(parse(v.to_string().as_bytes(), &limits).is_err());
        set(&mut v, "/job", "activeDeadlineSeconds", json!(60));
        let m = parse(v.to_string().as_bytes(), &limits).expect("60 is within 60..=99");
        assert_eq!(m.job.active_deadline_seconds, 60);
        remove(&mut v, "/job", "activeDeadlineSeconds");
        let m = parse(v.to_string().as_bytes(), &limits).expect("default deadline");
        assert_eq!(m.job.active_deadline_seconds, 99);
    }

    #[test]
    fn malformed_json() {
        let r = parse(b"{\"id\": ", &Limits::default()).expect_err("malformed");
        assert_eq!(r.code, ErrorCode::InvalidMessage);
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].field, "");
        assert!(r.problems[0].message.contains("line 1"), "{r}");
        assert_eq!((&r.id, &r.webhook_url), (&None, &None));

        for body in [&b"[1]"[..], b"\"s\"", b"null", b"", b"\xff\xfe", b"{}{}"] {
            let r = parse(body, &Limits::default()).expect_err("not an object");
            assert_eq!(r.code, ErrorCode::InvalidMessage);
            assert_eq!(r.problems.len(), 1, "{r}");
        }
    }

    /// Issue 12: a UTF-8 byte-order mark before the JSON was refused with
    /// "expected value at line 1 column 1"; RFC 8259 lets it be ignored.
    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        let seed: &[u8] = include_bytes!("../tests/golden/seed-002.input.json");
        let plain = parse(seed, &Limits::default()).expect("seed 002 is valid");
        let with_bom = [&b"\xEF\xBB\xBF"[..], seed].concat();
        assert_eq!(parse(&with_bom, &Limits::default()), Ok(plain));
        let compact = [&b"\xEF\xBB\xBF"[..], base().to_string().as_bytes()].concat();
        assert_eq!(parse(&compact, &Limits::default()), parse_value(&base()));
        // Only one, only at the start, and the size limit counts it.
        for body in [
            [&b"\xEF\xBB\xBF\xEF\xBB\xBF"[..], seed].concat(),
            [&b" \xEF\xBB\xBF"[..], seed].concat(),
            [&b"\xEF\xBB"[..], seed].concat(),
        ] {
            let r = parse(&body, &Limits::default()).expect_err("not JSON");
            assert_eq!(r.code, ErrorCode::InvalidMessage);
        }
        let limits = Limits {
            max_message_bytes: seed.len() + 2,
            ..Limits::default()
        };
        let r = parse(&with_bom, &limits).expect_err("too large");
        assert_eq!(r.code, ErrorCode::MessageTooLarge);
    }

    #[test]
    fn body_too_large() {
        let limits = Limits {
            max_message_bytes: 16,
            ..Limits::default()
        };
        let body = base().to_string();
        let r = parse(body.as_bytes(), &limits).expect_err("too large");
        assert_eq!(r.code, ErrorCode::MessageTooLarge);
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].field, "");
        assert!(r.problems[0].message.contains("16"), "{r}");
        assert_eq!((&r.id, &r.webhook_url), (&None, &None));
        assert!(r.to_string().starts_with("message too large: "));
    }

    #[test]
    fn collects_all_problems_and_keeps_id_and_webhook() {
        let mut v = base();
        set(&mut v, "/job", "image", json!(""));
        set(&mut v, "/job", "backoffLimit", json!("x"));
        set(&mut v, "/job", "gpuNumber", json!(0));
        set(&mut v, "/job/resources/limits", "cpu", json!("abc"));
        let r = rejected(&v);
        let fields: Vec<&str> = r.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "job.image",
                "job.backoffLimit",
                "job.gpuNumber",
                "job.resources.limits.cpu"
            ]
        );
        assert_eq!(
            r.id.as_deref(),
            Some("31a89a91-43d8-4786-a195-9b25cec28a44")
        );
        assert_eq!(r.webhook_url.as_deref(), Some("http://webhook.com"));

        // job missing entirely: id and webhook still read.
        let mut v = base();
        set(&mut v, "", "job", json!(7));
        let r = rejected(&v);
        assert!(r.id.is_some() && r.webhook_url.is_some());

        // An unusable webhook URL is not echoed back for callbacks.
        let mut v = base();
        set(&mut v, "/webhook", "url", json!("ftp://x"));
        let r = rejected(&v);
        assert_eq!(r.webhook_url, None);
        assert!(r.id.is_some());
    }

    #[test]
    fn webhook_urls() {
        for ok in [
            "http://webhook.com",
            "HTTPS://example.com:8443/a?b#c",
            "http://[::1]:8080/",
            "http://10.0.0.1",
        ] {
            assert_eq!(
                webhook_url(ok).map(|u| u.as_str().to_string()),
                Ok(ok.into())
            );
        }
        for bad in [
            // The guard refuses userinfo, so the message does too.
            "http://user:pw@host/x",
            "ftp://x",
            "http://",
            "http:///x",
            "https://:80",
            "http://a b",
            "webhook.com",
            "http://user@/x",
            "http://[]/",
        ] {
            assert!(webhook_url(bad).is_err(), "{bad}");
        }
        assert!(webhook_url(&format!("http://h/{}", "a".repeat(2048))).is_err());
    }

    #[test]
    fn name_rules() {
        assert!(qualified_name("kubernetes.io/hostname").is_ok());
        assert!(qualified_name("WorkerType").is_ok());
        assert!(qualified_name("a_b.c-d").is_ok());
        assert!(qualified_name("/x").is_err());
        assert!(qualified_name("x/").is_err());
        assert!(qualified_name("Bad.Prefix/x").is_err());
        assert!(qualified_name(&"a".repeat(64)).is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("k8s-node-1").is_ok());
        assert!(label_value("_x").is_err());
        assert!(label_value(&"a".repeat(64)).is_err());
        assert!(dns_subdomain("a.b-c.d").is_ok());
        assert!(dns_subdomain("a..b").is_err());
        assert!(dns_subdomain(".a").is_err());
        assert!(dns_subdomain(&"a".repeat(254)).is_err());
        assert!(env_name("_A.b-1").is_ok());
        assert!(env_name("1A").is_err());
        assert!(env_name("A=").is_err());
        assert!(env_name("").is_err());
        assert_eq!(mount_path("workdir"), Ok("/workdir".to_string()));
        assert!(mount_path("a/..").is_err());
        assert!(mount_path("a\0b").is_err());
        assert!(mount_path(".").is_err());
    }

    /// Every field replaced by every awkward value: never a panic, and every
    /// refusal names its fields.
    #[test]
    fn awkward_values_never_panic() {
        let awkward = [
            json!(null),
            json!(true),
            json!(0),
            json!(-1),
            json!(1.5),
            json!(u64::MAX),
            json!(-9_223_372_036_854_775_808_i64),
            json!(1e300),
            json!(""),
            json!(" "),
            json!("\u{0}"),
            json!("é"),
            json!("x".repeat(300)),
            json!([]),
            json!([null, 1, "a", {}]),
            json!({}),
            json!({ "a": 1 }),
        ];
        let mut pointers = Vec::new();
        collect_pointers(&base(), String::new(), &mut pointers);
        assert!(pointers.len() > 40);
        for pointer in &pointers {
            for value in &awkward {
                let mut v = base();
                if let Some(slot) = v.pointer_mut(pointer) {
                    *slot = value.clone();
                }
                if let Err(r) = parse_value(&v) {
                    assert!(
                        r.problems.iter().all(|p| !p.field.is_empty()),
                        "{pointer} = {value}: {r}"
                    );
                    assert!(!r.problems.is_empty());
                }
            }
        }
    }

    fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = format!("{at}/{k}");
                    out.push(p.clone());
                    collect_pointers(child, p, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    out.push(p.clone());
                    collect_pointers(child, p, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_action_field_is_validated() {
        let req = |v: &Value| parse_request(v.to_string().as_bytes(), &Limits::default());
        let fields =
            |r: &Rejection| -> Vec<String> { r.problems.iter().map(|p| p.field.clone()).collect() };
        // Absent or null: a job request, as today.
        for action in [None, Some(json!(null))] {
            let mut v = base();
            if let Some(a) = action {
                set(&mut v, "", "action", a);
            }
            assert!(matches!(req(&v), Ok(Request::Job(_))), "{v}");
        }
        // A cancel: only the id counts, every other field is ignored.
        for v in [
            json!({"id": "m1", "action": "cancel"}),
            json!({"id": "m1", "action": "cancel", "job": 7, "webhook": "x", "payload": [1]}),
            {
                let mut v = base();
                set(&mut v, "", "id", json!("m1"));
                set(&mut v, "", "action", json!("cancel"));
                v
            },
        ] {
            assert_eq!(req(&v), Ok(Request::Cancel { id: "m1".into() }), "{v}");
        }
        // A cancel without a usable id: named, and nobody to call back.
        for id in [
            None,
            Some(json!("")),
            Some(json!(5)),
            Some(json!("x".repeat(1025))),
        ] {
            let mut v = json!({"action": "cancel"});
            if let Some(id) = id {
                v["id"] = id;
            }
            let r = req(&v).expect_err("refused");
            assert_eq!(r.code, ErrorCode::InvalidMessage);
            assert_eq!(fields(&r), vec!["id"], "{v}");
            assert_eq!((r.id, r.webhook_url), (None, None));
        }
        // Unknown or wrong-typed actions: INVALID_MESSAGE naming `action`,
        // with the id and webhook read so the sender hears of it.
        for a in [
            json!("stop"),
            json!("CANCEL"),
            json!(""),
            json!(1),
            json!(["cancel"]),
            json!({}),
        ] {
            let mut v = base();
            set(&mut v, "", "action", a.clone());
            let r = req(&v).expect_err("refused");
            assert_eq!(r.code, ErrorCode::InvalidMessage);
            assert_eq!(fields(&r), vec!["action"], "{a}");
            assert!(r.id.is_some() && r.webhook_url.is_some());
        }
        // `parse` (job requests only) names `action` for a cancel.
        let r = parse_value(&json!({"id": "m1", "action": "cancel"})).expect_err("refused");
        assert!(fields(&r).contains(&"action".to_string()), "{r}");
        // Size and JSON are checked first, as for a job request.
        let big = format!(
            r#"{{"id": "m1", "action": "cancel", "pad": "{}"}}"#,
            "x".repeat(300 * 1024)
        );
        assert_eq!(
            parse_request(big.as_bytes(), &Limits::default()).map_err(|r| r.code),
            Err(ErrorCode::MessageTooLarge)
        );
        assert!(parse_request(b"{not json", &Limits::default()).is_err());
        assert_eq!(
            parse_request(
                b"\xEF\xBB\xBF{\"id\": \"m\", \"action\": \"cancel\"}",
                &Limits::default()
            ),
            Ok(Request::Cancel { id: "m".into() })
        );
    }
}
