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
        ];
        for (what, mutate, field) in cases {
            let mut v = base();
            mutate(&mut v);
            let r = rejected(&v);
            assert_eq!(r.code, CODE_INVALID, "{what}");
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
        let name = crate::render::job_name(&m.job.prefix_name, &m.id);
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
        assert_eq!(r.code, CODE_INVALID);
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].field, "");
        assert!(r.problems[0].message.contains("line 1"), "{r}");
        assert_eq!((&r.id, &r.webhook_url), (&None, &None));

        for body in [&b"[1]"[..], b"\"s\"", b"null", b"", b"\xff\xfe", b"{}{}"] {
            let r = parse(body, &Limits::default()).expect_err("not an object");
            assert_eq!(r.code, CODE_INVALID);
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
            assert_eq!(r.code, CODE_INVALID);
        }
        let limits = Limits {
            max_message_bytes: seed.len() + 2,
            ..Limits::default()
        };
        let r = parse(&with_bom, &limits).expect_err("too large");
        assert_eq!(r.code, CODE_TOO_LARGE);
    }

    #[test]
    fn body_too_large() {
        let limits = Limits {
            max_message_bytes: 16,
            ..Limits::default()
        };
        let body = base().to_string();
        let r = parse(body.as_bytes(), &limits).expect_err("too large");
        assert_eq!(r.code, CODE_TOO_LARGE);
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
            "http://user:pw@host/x",
            "http://[::1]:8080/",
            "http://10.0.0.1",
        ] {
            assert_eq!(webhook_url(ok), Ok(()), "{ok}");
        }
        for bad in [
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
}
