//! The queue message contract: parsing an untrusted body into a validated
//! `Message`, with every problem reported against the field it concerns. This is
//! the only place that knows the JSON shape producers send (including the
//! drafts' aliases). Pure: no I/O, no clock, never panics on input.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::quantity;

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

/// Rejection code for a body that is not a valid message.
pub const CODE_INVALID: &str = "INVALID_MESSAGE";
/// Rejection code for a body over `Limits::max_message_bytes`.
pub const CODE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";

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

/// Labels the worker sets itself; a message may not override them.
const RESERVED_LABELS: [&str; 3] = [
    crate::render::LABEL_MANAGED_BY,
    crate::render::LABEL_APP,
    crate::render::LABEL_INSTANCE,
];

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
        let what = if self.code == CODE_TOO_LARGE {
            "message too large"
        } else {
            "invalid message"
        };
        write!(f, "{what}: {}", self.problems_text())
    }
}

impl std::error::Error for Rejection {}

/// Parses and validates one queue message body.
pub fn parse(body: &[u8], limits: &Limits) -> Result<Message, Rejection> {
    if body.len() > limits.max_message_bytes {
        return Err(Rejection {
            code: CODE_TOO_LARGE,
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
        });
    }
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
    w.unknown(root, "", &["id", "service", "job", "webhook"]);
    let id = w.id(root.get("id"));
    let webhook_url = w.webhook(root.get("webhook"));
    let service = w.opt_string(root.get("service"), "service");
    if let Some(service) = &service {
        w.check("service", label_value(service));
    }
    let job = w.job(root.get("job"), limits);

    if let (Some(id), Some(job)) = (&id, &job) {
        let name = crate::render::job_name(&job.prefix_name, id);
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
        }),
        (id, _) => Err(Rejection {
            code: CODE_INVALID,
            problems: w.problems,
            id,
            webhook_url,
        }),
    }
}

fn body_problem(message: String) -> Rejection {
    Rejection {
        code: CODE_INVALID,
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

    fn webhook(&mut self, v: Option<&Value>) -> Option<String> {
        let obj = self.opt_object(v, "webhook")?;
        self.unknown(obj, "webhook", &["url"]);
        let url = self.opt_string(obj.get("url"), "webhook.url")?;
        self.check("webhook.url", webhook_url(&url)).then_some(url)
    }

    fn job(&mut self, v: Option<&Value>, limits: &Limits) -> Option<JobSpec> {
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
        })
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

/// http(s) URL with a host, at most 2048 bytes.
fn webhook_url(s: &str) -> Result<(), String> {
    if s.len() > MAX_URL_BYTES {
        return Err(format!(
            "must be at most {MAX_URL_BYTES} bytes (got {})",
            s.len()
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    let lower = s.to_ascii_lowercase();
    let scheme_len = if lower.starts_with("http://") {
        7
    } else if lower.starts_with("https://") {
        8
    } else {
        return Err(format!("must be an http:// or https:// URL (got {s:?})"));
    };
    let rest = s.get(scheme_len..).unwrap_or("");
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err(format!("must name a host (got {s:?})"));
    }
    Ok(())
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
