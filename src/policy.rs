//! Operator policy enforced before any API call: what a queue message may ask
//! for. `Policy::from_env` reads the rules once at start-up; `Policy::check`
//! looks only at the validated message (pure, never panics) and its `Err` text
//! names the rule (the environment variable) and the field that broke it, which
//! intake sends as a 99 callback with errorCode `POLICY_DENIED`.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `ALLOWED_NAMESPACES` | empty = any | comma list of namespaces a Job may be created in |
//! | `ALLOWED_IMAGES` | empty = any | comma list; `registry.local/team/` (prefix), `registry/repo:*` (any tag or digest of that repository); an entry not ending in `/` or `:*` matches that name and any tag/digest of it (`busybox` ⇒ `busybox`, `busybox:1.36`, `busybox@sha256:…`). Docker Hub short names are also matched in their `docker.io/library/…` form |
//! | `REQUIRE_IMAGE_DIGEST` | `false` | the image must end in `@sha256:` + 64 lowercase hex |
//! | `ALLOWED_SERVICE_ACCOUNTS` | `default` | comma list; `*` = any; `-` = none. A message without serviceAccount is always fine. Only accounts named explicitly get their token mounted (see `automount_service_accounts`) |
//! | `ALLOWED_ENV_REFS` | none | comma list of `configmap/<name>`, `secret/<name>`, `configmap/*`, `secret/*`; any other envRef is denied |
//! | `ALLOWED_PVCS` | none | comma list of PVC names; `*` = any |
//! | `MAX_JOB_CPU` | none | quantity; when set, `job.resources.limits.cpu` is required and neither limit nor request may exceed it |
//! | `MAX_JOB_MEMORY` | none | quantity; as `MAX_JOB_CPU` for memory |
//! | `MAX_JOB_GPUS` | `8` | largest gpuNumber (0 = no GPU jobs) |
//! | `MAX_ENV_ENTRIES` | `100` | largest number of `job.env` entries |
//! | `MIN_TTL_SECONDS_AFTER_FINISHED` | `31` | smallest ttlSecondsAfterFinished (when given) |
//! | `MAX_TTL_SECONDS_AFTER_FINISHED` | `604800` | largest ttlSecondsAfterFinished (when given) |
//! | `ALLOWED_PRIORITY_CLASSES` | none | comma list of priority class names a message may ask for (`job.priorityClass`); `*` = any. None by default: a priority can preempt other people's work |
//! | `ALLOWED_IMAGE_PULL_SECRETS` | none | comma list of Secret names a message may use as `job.imagePullSecrets`; `*` = any |
//! | `MAX_JOB_PARALLELISM` | `32` | largest `job.parallelism` (pods run at once; Kubernetes defaults it to 1) |
//! | `ALLOWED_QUEUES` | empty = any | comma list of Kueue LocalQueue names a message may name in `job.queueName` (or get from DEFAULT_QUEUE_NAME); `*` = any. A message that is not queued is not affected |
//!
//! A message without ttlSecondsAfterFinished, resources or GPUs is not affected
//! by the corresponding bounds (except the CPU/memory limit requirement above).

use crate::env::Reader;
use crate::message::{EnvRefKind, Message};
use crate::quantity;

/// A configured upper bound on a quantity, as written and in milli-units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxQuantity {
    pub text: String,
    pub milli: i128,
}

impl MaxQuantity {
    /// Parses an operator-supplied quantity (must be positive).
    pub fn parse(text: &str) -> Result<MaxQuantity, String> {
        let milli = quantity::parse_milli(text)?;
        if milli <= 0 {
            return Err(format!("{text:?} must be positive"));
        }
        Ok(MaxQuantity {
            text: text.to_string(),
            milli,
        })
    }
}

/// The operator's rules; see the module documentation for the variables and
/// defaults. `Policy::default()` equals the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// ALLOWED_NAMESPACES. Empty = any namespace the RBAC permits.
    pub allowed_namespaces: Vec<String>,
    /// ALLOWED_IMAGES. Empty = any image.
    pub allowed_images: Vec<String>,
    /// REQUIRE_IMAGE_DIGEST.
    pub require_image_digest: bool,
    /// ALLOWED_SERVICE_ACCOUNTS. `*` = any; empty = none.
    pub allowed_service_accounts: Vec<String>,
    /// ALLOWED_ENV_REFS (`configmap/<name>`, `secret/<name>`, `*` as name). Empty = none.
    pub allowed_env_refs: Vec<String>,
    /// ALLOWED_PVCS. `*` = any; empty = none.
    pub allowed_pvcs: Vec<String>,
    /// MAX_JOB_CPU.
    pub max_job_cpu: Option<MaxQuantity>,
    /// MAX_JOB_MEMORY.
    pub max_job_memory: Option<MaxQuantity>,
    /// MAX_JOB_GPUS.
    pub max_job_gpus: u32,
    /// MAX_ENV_ENTRIES.
    pub max_env_entries: usize,
    /// MIN_TTL_SECONDS_AFTER_FINISHED.
    pub min_ttl_seconds_after_finished: i64,
    /// MAX_TTL_SECONDS_AFTER_FINISHED.
    pub max_ttl_seconds_after_finished: i64,
    /// ALLOWED_PRIORITY_CLASSES. `*` = any; empty = none.
    pub allowed_priority_classes: Vec<String>,
    /// ALLOWED_IMAGE_PULL_SECRETS. `*` = any; empty = none.
    pub allowed_image_pull_secrets: Vec<String>,
    /// MAX_JOB_PARALLELISM.
    pub max_job_parallelism: i64,
    /// ALLOWED_QUEUES. Empty or `*` = any queue.
    pub allowed_queues: Vec<String>,
}

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
pub const DEFAULT_MAX_JOB_GPUS: u32 = 8;
pub const DEFAULT_MAX_ENV_ENTRIES: usize = 100;
pub const DEFAULT_MIN_TTL: i64 = 31;
pub const DEFAULT_MAX_TTL: i64 = 604_800;
pub const DEFAULT_MAX_JOB_PARALLELISM: i64 = 32;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_namespaces: Vec::new(),
            allowed_images: Vec::new(),
            require_image_digest: false,
            allowed_service_accounts: vec![DEFAULT_SERVICE_ACCOUNT.to_string()],
            allowed_env_refs: Vec::new(),
            allowed_pvcs: Vec::new(),
            max_job_cpu: None,
            max_job_memory: None,
            max_job_gpus: DEFAULT_MAX_JOB_GPUS,
            max_env_entries: DEFAULT_MAX_ENV_ENTRIES,
            min_ttl_seconds_after_finished: DEFAULT_MIN_TTL,
            max_ttl_seconds_after_finished: DEFAULT_MAX_TTL,
            allowed_priority_classes: Vec::new(),
            allowed_image_pull_secrets: Vec::new(),
            max_job_parallelism: DEFAULT_MAX_JOB_PARALLELISM,
            allowed_queues: Vec::new(),
        }
    }
}

/// Why a message was denied: the rule (the environment variable), the field
/// of the message and what is wrong with it. Displays as
/// `RULE: field message`, the text of the 99 callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    pub rule: &'static str,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} {}", self.rule, self.field, self.message)
    }
}

impl std::error::Error for Denied {}

/// `none` for an empty list (error texts).
fn show(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(",")
    }
}

impl Policy {
    /// Reads the policy variables through `get` (the process environment in
    /// production). Every invalid value is reported.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Policy, Vec<String>> {
        let mut r = Reader::new(get);
        let p = Policy::read(&mut r);
        r.finish(p)
    }

    /// Reads the policy variables through `r`, which collects the problems.
    pub(crate) fn read(r: &mut Reader) -> Policy {
        let mut p = Policy {
            allowed_namespaces: r.list("ALLOWED_NAMESPACES", &[]),
            allowed_images: r.list("ALLOWED_IMAGES", &[]),
            allowed_service_accounts: r
                .list("ALLOWED_SERVICE_ACCOUNTS", &[DEFAULT_SERVICE_ACCOUNT]),
            allowed_env_refs: r.list("ALLOWED_ENV_REFS", &[]),
            allowed_pvcs: r.list("ALLOWED_PVCS", &[]),
            allowed_priority_classes: r.list("ALLOWED_PRIORITY_CLASSES", &[]),
            allowed_image_pull_secrets: r.list("ALLOWED_IMAGE_PULL_SECRETS", &[]),
            allowed_queues: r.list("ALLOWED_QUEUES", &[]),
            ..Policy::default()
        };
        for q in &p.allowed_queues {
            if q != "*" && !is_dns_label(q) {
                r.error(format!(
                    "ALLOWED_QUEUES entry {q:?} must be a LocalQueue name (a DNS-1123 label) or *"
                ));
            }
        }
        for e in &mut p.allowed_env_refs {
            match e.split_once('/') {
                Some((kind, name))
                    if !name.is_empty()
                        && (kind.eq_ignore_ascii_case("configmap")
                            || kind.eq_ignore_ascii_case("secret")) =>
                {
                    *e = format!("{}/{name}", kind.to_ascii_lowercase());
                }
                _ => r.error(format!(
                    "ALLOWED_ENV_REFS entry {e:?} must be configmap/<name>, secret/<name>, configmap/* or secret/*"
                )),
            }
        }
        p.require_image_digest = r.bool("REQUIRE_IMAGE_DIGEST", false);
        for (name, slot) in [
            ("MAX_JOB_CPU", &mut p.max_job_cpu),
            ("MAX_JOB_MEMORY", &mut p.max_job_memory),
        ] {
            if let Some(v) = r.str(name) {
                match MaxQuantity::parse(&v) {
                    Ok(q) => *slot = Some(q),
                    Err(e) => r.error(format!("{name}={v:?} is not a valid quantity: {e}")),
                }
            }
        }
        p.max_job_gpus = r.num("MAX_JOB_GPUS", DEFAULT_MAX_JOB_GPUS);
        p.max_env_entries = r.num("MAX_ENV_ENTRIES", DEFAULT_MAX_ENV_ENTRIES);
        p.max_job_parallelism = r.num("MAX_JOB_PARALLELISM", DEFAULT_MAX_JOB_PARALLELISM);
        p.min_ttl_seconds_after_finished = r.num("MIN_TTL_SECONDS_AFTER_FINISHED", DEFAULT_MIN_TTL);
        p.max_ttl_seconds_after_finished = r.num("MAX_TTL_SECONDS_AFTER_FINISHED", DEFAULT_MAX_TTL);
        if p.min_ttl_seconds_after_finished > p.max_ttl_seconds_after_finished {
            r.error(format!(
                "MIN_TTL_SECONDS_AFTER_FINISHED ({}) must not exceed MAX_TTL_SECONDS_AFTER_FINISHED ({})",
                p.min_ttl_seconds_after_finished, p.max_ttl_seconds_after_finished
            ));
        }
        p
    }

    /// Service accounts whose token may be mounted in the pod: the ones named
    /// explicitly in ALLOWED_SERVICE_ACCOUNTS (`*` allows naming any account
    /// but mounts no token). Feeds `RenderConfig::automount_service_accounts`.
    pub fn automount_service_accounts(&self) -> Vec<String> {
        self.allowed_service_accounts
            .iter()
            .filter(|s| *s != "*")
            .cloned()
            .collect()
    }

    /// `Err` names the rule (the environment variable) and the field that
    /// denied the message. Rules are checked in the order of the table above;
    /// the first violation is reported.
    pub fn check(&self, msg: &Message) -> Result<(), Denied> {
        let job = &msg.job;
        if !self.allowed_namespaces.is_empty() && !self.allowed_namespaces.contains(&job.namespace)
        {
            return Err(Denied {
                rule: "ALLOWED_NAMESPACES",
                field: "job.namespace".into(),
                message: format!(
                    "{:?} is not one of {}",
                    job.namespace,
                    self.allowed_namespaces.join(",")
                ),
            });
        }
        if !self.allowed_images.is_empty()
            && !self
                .allowed_images
                .iter()
                .any(|entry| image_allowed(entry, &job.image))
        {
            return Err(Denied {
                rule: "ALLOWED_IMAGES",
                field: "job.image".into(),
                message: format!(
                    "{:?} matches none of {}",
                    job.image,
                    self.allowed_images.join(",")
                ),
            });
        }
        if self.require_image_digest && !has_sha256_digest(&job.image) {
            return Err(Denied {
                rule: "REQUIRE_IMAGE_DIGEST",
                field: "job.image".into(),
                message: format!(
                    "{:?} is not pinned by an @sha256:<64 hex> digest",
                    job.image
                ),
            });
        }
        if let Some(sa) = &job.service_account
            && !in_list(&self.allowed_service_accounts, sa)
        {
            return Err(Denied {
                rule: "ALLOWED_SERVICE_ACCOUNTS",
                field: "job.serviceAccount".into(),
                message: format!(
                    "{sa:?} is not one of {}",
                    show(&self.allowed_service_accounts)
                ),
            });
        }
        for (i, r) in job.env_refs.iter().enumerate() {
            let kind = match r.kind {
                EnvRefKind::ConfigMap => "configmap",
                EnvRefKind::Secret => "secret",
            };
            let wanted = format!("{kind}/{}", r.name);
            let wildcard = format!("{kind}/*");
            if !self
                .allowed_env_refs
                .iter()
                .any(|e| *e == wanted || *e == wildcard)
            {
                return Err(Denied {
                    rule: "ALLOWED_ENV_REFS",
                    field: format!("job.envRef[{i}]"),
                    message: format!("{wanted:?} is not one of {}", show(&self.allowed_env_refs)),
                });
            }
        }
        if let Some(v) = &job.volume
            && !in_list(&self.allowed_pvcs, &v.pvc)
        {
            return Err(Denied {
                rule: "ALLOWED_PVCS",
                field: "job.volume.pvc".into(),
                message: format!("{:?} is not one of {}", v.pvc, show(&self.allowed_pvcs)),
            });
        }
        let res = &job.resources;
        for (rule, max, name, limit, request) in [
            (
                "MAX_JOB_CPU",
                &self.max_job_cpu,
                "cpu",
                &res.limits.cpu,
                &res.requests.cpu,
            ),
            (
                "MAX_JOB_MEMORY",
                &self.max_job_memory,
                "memory",
                &res.limits.memory,
                &res.requests.memory,
            ),
        ] {
            let Some(max) = max else { continue };
            if limit.is_none() {
                return Err(Denied {
                    rule,
                    field: format!("job.resources.limits.{name}"),
                    message: format!("is required (at most {})", max.text),
                });
            }
            for (which, value) in [("limits", limit), ("requests", request)] {
                let Some(text) = value else { continue };
                // Unparsable cannot happen for a validated message; deny anyway.
                let over = quantity::parse_milli(text).map_or(true, |m| m > max.milli);
                if over {
                    return Err(Denied {
                        rule,
                        field: format!("job.resources.{which}.{name}"),
                        message: format!("{text:?} exceeds {}", max.text),
                    });
                }
            }
        }
        if let Some(n) = job.gpus
            && n > self.max_job_gpus
        {
            return Err(Denied {
                rule: "MAX_JOB_GPUS",
                field: "job.gpuNumber".into(),
                message: format!("{n} exceeds {}", self.max_job_gpus),
            });
        }
        if job.env.len() > self.max_env_entries {
            return Err(Denied {
                rule: "MAX_ENV_ENTRIES",
                field: "job.env".into(),
                message: format!(
                    "has {} entries, over {}",
                    job.env.len(),
                    self.max_env_entries
                ),
            });
        }
        if let Some(pc) = &job.priority_class
            && !in_list(&self.allowed_priority_classes, pc)
        {
            return Err(Denied {
                rule: "ALLOWED_PRIORITY_CLASSES",
                field: "job.priorityClass".into(),
                message: format!(
                    "{pc:?} is not one of {}",
                    show(&self.allowed_priority_classes)
                ),
            });
        }
        for (i, name) in job.image_pull_secrets.iter().enumerate() {
            if !in_list(&self.allowed_image_pull_secrets, name) {
                return Err(Denied {
                    rule: "ALLOWED_IMAGE_PULL_SECRETS",
                    field: format!("job.imagePullSecrets[{i}]"),
                    message: format!(
                        "{name:?} is not one of {}",
                        show(&self.allowed_image_pull_secrets)
                    ),
                });
            }
        }
        // Kubernetes runs min(parallelism, completions) pods at once; parallelism
        // defaults to 1 when not given.
        if let Some(p) = job.parallelism
            && i64::from(p) > self.max_job_parallelism
        {
            return Err(Denied {
                rule: "MAX_JOB_PARALLELISM",
                field: "job.parallelism".into(),
                message: format!("{p} exceeds {}", self.max_job_parallelism),
            });
        }
        if let Some(ttl) = job.ttl_seconds_after_finished {
            if ttl < self.min_ttl_seconds_after_finished {
                return Err(Denied {
                    rule: "MIN_TTL_SECONDS_AFTER_FINISHED",
                    field: "job.ttlSecondsAfterFinished".into(),
                    message: format!("{ttl} is under {}", self.min_ttl_seconds_after_finished),
                });
            }
            if ttl > self.max_ttl_seconds_after_finished {
                return Err(Denied {
                    rule: "MAX_TTL_SECONDS_AFTER_FINISHED",
                    field: "job.ttlSecondsAfterFinished".into(),
                    message: format!("{ttl} is over {}", self.max_ttl_seconds_after_finished),
                });
            }
        }
        if let Some(q) = &job.queue_name
            && !self.allowed_queues.is_empty()
            && !in_list(&self.allowed_queues, q)
        {
            return Err(Denied {
                rule: "ALLOWED_QUEUES",
                field: "job.queueName".into(),
                message: format!("{q:?} is not one of {}", self.allowed_queues.join(",")),
            });
        }
        Ok(())
    }
}

/// A DNS-1123 label: 1..=63 of `a-z0-9-`, alphanumeric at both ends.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `*` in the list allows anything.
fn in_list(list: &[String], value: &str) -> bool {
    list.iter().any(|e| e == "*" || e == value)
}

/// `@sha256:` followed by exactly 64 lowercase hex digits at the end.
fn has_sha256_digest(image: &str) -> bool {
    image.rsplit_once("@sha256:").is_some_and(|(_, hex)| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// One ALLOWED_IMAGES entry against an image, in its written form or its
/// Docker Hub canonical form (`busybox` is `docker.io/library/busybox`).
fn image_allowed(entry: &str, image: &str) -> bool {
    entry_matches(entry, image) || canonical(image).is_some_and(|c| entry_matches(entry, &c))
}

fn entry_matches(entry: &str, image: &str) -> bool {
    if let Some(repo) = entry.strip_suffix(":*") {
        // Any tag and/or digest of exactly this repository.
        let Some(rest) = image.strip_prefix(repo) else {
            return false;
        };
        let (tag, digest) = match rest.split_once('@') {
            Some((t, d)) => (t, Some(d)),
            None => (rest, None),
        };
        let tag_ok = match tag.strip_prefix(':') {
            Some(t) => is_tag(t),
            None => tag.is_empty() && digest.is_some(),
        };
        tag_ok && digest.is_none_or(|d| !d.is_empty() && !d.contains(['/', '@']))
    } else if entry.ends_with('/') {
        image.starts_with(entry)
    } else {
        // A name: itself, or followed by a tag or digest (not a longer name).
        image.strip_prefix(entry).is_some_and(|rest| {
            rest.is_empty() || (rest.starts_with([':', '@']) && !rest.contains('/'))
        })
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (the distribution reference grammar).
fn is_tag(t: &str) -> bool {
    t.len() <= 128
        && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The Docker Hub form of a short name, as container runtimes resolve it:
/// a single component lives under `library/`; a first component (before a
/// `/`) without `.`/`:` that is not `localhost` is a Docker Hub path. `None` when the image
/// already names a registry.
fn canonical(image: &str) -> Option<String> {
    let (first, rest) = match image.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (image, None),
    };
    match rest {
        None => Some(format!("docker.io/library/{image}")),
        Some(_) if first.contains(['.', ':']) || first == "localhost" => None,
        Some(_) => Some(format!("docker.io/{image}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Limits, parse};
    use serde_json::{Value, json};
    use std::collections::HashMap;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn msg(job: Value) -> Message {
        let mut j = json!({ "prefixName": "p", "image": "busybox" });
        if let (Some(base), Value::Object(extra)) = (j.as_object_mut(), job) {
            base.extend(extra);
        }
        let body = json!({ "id": "m-1", "job": j });
        parse(body.to_string().as_bytes(), &Limits::default()).expect("valid test message")
    }

    fn policy(pairs: &[(&str, &str)]) -> Policy {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Policy::from_env(&move |k| m.get(k).cloned()).expect("valid policy")
    }

    /// (env, job fields, Ok or the expected start of the Err text)
    type Case = (
        &'static [(&'static str, &'static str)],
        Value,
        Option<&'static str>,
    );

    fn run(cases: Vec<Case>) {
        for (i, (env, job, want)) in cases.into_iter().enumerate() {
            let p = policy(env);
            let m = msg(job.clone());
            let got = p.check(&m);
            match (want, &got) {
                (None, Ok(())) => {}
                (Some(prefix), Err(e)) if e.to_string().starts_with(prefix) => {}
                _ => panic!("case {i}: env {env:?} job {job}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn defaults_match_the_table() {
        let p = policy(&[]);
        assert_eq!(p, Policy::default());
        assert_eq!(p.allowed_service_accounts, vec!["default"]);
        assert_eq!(p.max_job_gpus, 8);
        assert_eq!(p.max_env_entries, 100);
        assert_eq!(
            (
                p.min_ttl_seconds_after_finished,
                p.max_ttl_seconds_after_finished
            ),
            (31, 604_800)
        );
        // The minimal message passes the default policy.
        assert_eq!(p.check(&msg(json!({}))), Ok(()));
    }

    #[test]
    fn namespaces() {
        run(vec![
            (&[], json!({ "namespace": "anything" }), None),
            (
                &[("ALLOWED_NAMESPACES", "a, b")],
                json!({ "namespace": "b" }),
                None,
            ),
            (
                &[("ALLOWED_NAMESPACES", "a,b")],
                json!({ "namespace": "c" }),
                Some("ALLOWED_NAMESPACES: job.namespace \"c\" is not one of a,b"),
            ),
            // The default namespace is checked too.
            (
                &[("ALLOWED_NAMESPACES", "a")],
                json!({}),
                Some("ALLOWED_NAMESPACES: job.namespace \"default\""),
            ),
        ]);
    }

    #[test]
    fn images() {
        const PREFIX: &[(&str, &str)] = &[("ALLOWED_IMAGES", "registry.local/")];
        const TEAM: &[(&str, &str)] =
            &[("ALLOWED_IMAGES", "registry.local/team/, ghcr.io/org/tool:*")];
        const NAME: &[(&str, &str)] = &[("ALLOWED_IMAGES", "busybox,docker.io/library/alpine")];
        run(vec![
            (&[], json!({ "image": "evil/miner:1" }), None),
            (PREFIX, json!({ "image": "registry.local/x/y:1" }), None),
            (
                PREFIX,
                json!({ "image": "evil/miner:1" }),
                Some("ALLOWED_IMAGES: job.image \"evil/miner:1\" matches none of registry.local/"),
            ),
            (
                PREFIX,
                json!({ "image": "registry.local.evil.com/x" }),
                Some("ALLOWED_IMAGES"),
            ),
            (TEAM, json!({ "image": "registry.local/team/app:2" }), None),
            (
                TEAM,
                json!({ "image": "registry.local/other/app:2" }),
                Some("ALLOWED_IMAGES"),
            ),
            (TEAM, json!({ "image": "ghcr.io/org/tool:v1.2" }), None),
            (
                TEAM,
                json!({ "image": format!("ghcr.io/org/tool:v1@sha256:{DIGEST}") }),
                None,
            ),
            (
                TEAM,
                json!({ "image": format!("ghcr.io/org/tool@sha256:{DIGEST}") }),
                None,
            ),
            (
                TEAM,
                json!({ "image": "ghcr.io/org/tool" }),
                Some("ALLOWED_IMAGES"),
            ),
            (
                TEAM,
                json!({ "image": "ghcr.io/org/tool:" }),
                Some("ALLOWED_IMAGES"),
            ),
            (
                TEAM,
                json!({ "image": "ghcr.io/org/tool:v1/../x" }),
                Some("ALLOWED_IMAGES"),
            ),
            (
                TEAM,
                json!({ "image": "ghcr.io/org/tool-evil:v1" }),
                Some("ALLOWED_IMAGES"),
            ),
            (
                TEAM,
                json!({ "image": "ghcr.io/org/toolbox:v1" }),
                Some("ALLOWED_IMAGES"),
            ),
            (NAME, json!({ "image": "busybox" }), None),
            (NAME, json!({ "image": "busybox:1.36" }), None),
            (
                NAME,
                json!({ "image": "busybox-evil" }),
                Some("ALLOWED_IMAGES"),
            ),
            (
                NAME,
                json!({ "image": "busybox/evil" }),
                Some("ALLOWED_IMAGES"),
            ),
            // Docker Hub short names match their canonical form.
            (NAME, json!({ "image": "alpine:3" }), None),
            (NAME, json!({ "image": "docker.io/library/alpine:3" }), None),
            (
                NAME,
                json!({ "image": "evil.io/library/alpine:3" }),
                Some("ALLOWED_IMAGES"),
            ),
            (
                &[("ALLOWED_IMAGES", "docker.io/myorg/")],
                json!({ "image": "myorg/app:1" }),
                None,
            ),
            (
                &[("ALLOWED_IMAGES", "docker.io/myorg/")],
                json!({ "image": "localhost/myorg/app:1" }),
                Some("ALLOWED_IMAGES"),
            ),
        ]);
    }

    #[test]
    fn image_digest() {
        const REQ: &[(&str, &str)] = &[("REQUIRE_IMAGE_DIGEST", "true")];
        run(vec![
            (&[], json!({ "image": "busybox:1" }), None),
            (
                REQ,
                json!({ "image": format!("busybox@sha256:{DIGEST}") }),
                None,
            ),
            (
                REQ,
                json!({ "image": format!("busybox:1@sha256:{DIGEST}") }),
                None,
            ),
            (
                REQ,
                json!({ "image": "busybox:1" }),
                Some("REQUIRE_IMAGE_DIGEST: job.image \"busybox:1\""),
            ),
            (
                REQ,
                json!({ "image": format!("busybox@sha256:{}", &DIGEST[1..]) }),
                Some("REQUIRE_IMAGE_DIGEST"),
            ),
            (
                REQ,
                json!({ "image": format!("busybox@sha256:{}0", DIGEST) }),
                Some("REQUIRE_IMAGE_DIGEST"),
            ),
            (
                REQ,
                json!({ "image": format!("busybox@sha256:{}", DIGEST.to_uppercase()) }),
                Some("REQUIRE_IMAGE_DIGEST"),
            ),
            (
                REQ,
                json!({ "image": format!("busybox@sha512:{DIGEST}") }),
                Some("REQUIRE_IMAGE_DIGEST"),
            ),
        ]);
    }

    #[test]
    fn service_accounts() {
        run(vec![
            (&[], json!({}), None),
            (&[], json!({ "serviceAccount": "default" }), None),
            (
                &[],
                json!({ "serviceAccount": "admin" }),
                Some(
                    "ALLOWED_SERVICE_ACCOUNTS: job.serviceAccount \"admin\" is not one of default",
                ),
            ),
            (
                &[("ALLOWED_SERVICE_ACCOUNTS", "trainer,runner")],
                json!({ "serviceAccount": "runner" }),
                None,
            ),
            (
                &[("ALLOWED_SERVICE_ACCOUNTS", "trainer")],
                json!({ "serviceAccount": "default" }),
                Some("ALLOWED_SERVICE_ACCOUNTS"),
            ),
            (
                &[("ALLOWED_SERVICE_ACCOUNTS", "*")],
                json!({ "serviceAccount": "anything" }),
                None,
            ),
            (
                &[("ALLOWED_SERVICE_ACCOUNTS", "-")],
                json!({ "serviceAccount": "default" }),
                Some("ALLOWED_SERVICE_ACCOUNTS: job.serviceAccount \"default\" is not one of none"),
            ),
            (&[("ALLOWED_SERVICE_ACCOUNTS", "-")], json!({}), None),
        ]);
        assert_eq!(
            policy(&[("ALLOWED_SERVICE_ACCOUNTS", "*,trainer")]).automount_service_accounts(),
            vec!["trainer"]
        );
    }

    #[test]
    fn env_refs() {
        let cm = |n: &str| json!({ "envRef": [{ "name": n, "type": "configmap" }] });
        let secret = |n: &str| json!({ "envFrom": [{ "name": n, "type": "Secret" }] });
        const SOME: &[(&str, &str)] = &[("ALLOWED_ENV_REFS", "configmap/app, Secret/db")];
        const ALL_CM: &[(&str, &str)] = &[("ALLOWED_ENV_REFS", "configmap/*")];
        const ALL: &[(&str, &str)] = &[("ALLOWED_ENV_REFS", "configmap/*,secret/*")];
        run(vec![
            (&[], json!({}), None),
            (
                &[],
                cm("app"),
                Some("ALLOWED_ENV_REFS: job.envRef[0] \"configmap/app\" is not one of none"),
            ),
            (SOME, cm("app"), None),
            (SOME, secret("db"), None),
            (
                SOME,
                secret("app"),
                Some("ALLOWED_ENV_REFS: job.envRef[0] \"secret/app\""),
            ),
            (SOME, cm("db"), Some("ALLOWED_ENV_REFS")),
            (ALL_CM, cm("anything"), None),
            (ALL_CM, secret("anything"), Some("ALLOWED_ENV_REFS")),
            (ALL, secret("anything"), None),
            (
                SOME,
                json!({ "envRef": [
                    { "name": "app", "type": "configmap" },
                    { "name": "other", "type": "configmap" }
                ] }),
                Some("ALLOWED_ENV_REFS: job.envRef[1] \"configmap/other\""),
            ),
        ]);
    }

    #[test]
    fn pvcs() {
        let vol = |p: &str| json!({ "volume": { "mountPath": "/data", "pvc": p } });
        run(vec![
            (&[], json!({}), None),
            (
                &[],
                vol("data"),
                Some("ALLOWED_PVCS: job.volume.pvc \"data\" is not one of none"),
            ),
            (&[("ALLOWED_PVCS", "data,scratch")], vol("scratch"), None),
            (
                &[("ALLOWED_PVCS", "data")],
                vol("other"),
                Some("ALLOWED_PVCS: job.volume.pvc \"other\" is not one of data"),
            ),
            (&[("ALLOWED_PVCS", "*")], vol("anything"), None),
        ]);
    }

    #[test]
    fn resource_limits() {
        let res =
            |lim: Value, req: Value| json!({ "resources": { "limits": lim, "requests": req } });
        const CPU: &[(&str, &str)] = &[("MAX_JOB_CPU", "8")];
        const MEM: &[(&str, &str)] = &[("MAX_JOB_MEMORY", "16Gi")];
        run(vec![
            (&[], res(json!({ "cpu": "1000" }), json!({})), None),
            (
                CPU,
                res(json!({ "cpu": "8" }), json!({ "cpu": "8000m" })),
                None,
            ),
            (CPU, res(json!({ "cpu": "7500m" }), json!({})), None),
            (
                CPU,
                res(json!({ "cpu": "16" }), json!({})),
                Some("MAX_JOB_CPU: job.resources.limits.cpu \"16\" exceeds 8"),
            ),
            (
                CPU,
                res(json!({ "cpu": "8001m" }), json!({})),
                Some("MAX_JOB_CPU"),
            ),
            (
                CPU,
                res(json!({ "cpu": "1e3" }), json!({})),
                Some("MAX_JOB_CPU"),
            ),
            (
                CPU,
                res(json!({}), json!({ "cpu": "1" })),
                Some("MAX_JOB_CPU: job.resources.limits.cpu is required (at most 8)"),
            ),
            (
                CPU,
                json!({}),
                Some("MAX_JOB_CPU: job.resources.limits.cpu is required"),
            ),
            (
                MEM,
                res(json!({ "memory": "16Gi" }), json!({ "memory": "1G" })),
                None,
            ),
            (
                MEM,
                res(json!({ "memory": "17179869185" }), json!({})),
                Some("MAX_JOB_MEMORY: job.resources.limits.memory \"17179869185\" exceeds 16Gi"),
            ),
            (
                MEM,
                res(json!({ "memory": "1Ti" }), json!({})),
                Some("MAX_JOB_MEMORY"),
            ),
            // A CPU maximum says nothing about memory.
            (
                CPU,
                res(json!({ "cpu": "1", "memory": "1Ei" }), json!({})),
                None,
            ),
        ]);
    }

    #[test]
    fn priority_pull_secrets_and_parallelism() {
        run(vec![
            (
                &[],
                json!({ "priorityClass": "high" }),
                Some("ALLOWED_PRIORITY_CLASSES: job.priorityClass \"high\" is not one of none"),
            ),
            (
                &[("ALLOWED_PRIORITY_CLASSES", "low,high")],
                json!({ "priorityClass": "high" }),
                None,
            ),
            (
                &[("ALLOWED_PRIORITY_CLASSES", "low")],
                json!({ "priorityClass": "high" }),
                Some("ALLOWED_PRIORITY_CLASSES: job.priorityClass \"high\" is not one of low"),
            ),
            (
                &[("ALLOWED_PRIORITY_CLASSES", "*")],
                json!({ "priorityClass": "anything" }),
                None,
            ),
            (
                &[],
                json!({ "imagePullSecrets": ["regcred"] }),
                Some(
                    "ALLOWED_IMAGE_PULL_SECRETS: job.imagePullSecrets[0] \"regcred\" is not one of none",
                ),
            ),
            (
                &[("ALLOWED_IMAGE_PULL_SECRETS", "regcred")],
                json!({ "imagePullSecrets": ["regcred", "other"] }),
                Some(
                    "ALLOWED_IMAGE_PULL_SECRETS: job.imagePullSecrets[1] \"other\" is not one of regcred",
                ),
            ),
            (
                &[("ALLOWED_IMAGE_PULL_SECRETS", "*")],
                json!({ "imagePullSecrets": ["a", "b"] }),
                None,
            ),
            (&[], json!({ "parallelism": 32, "completions": 1000 }), None),
            (
                &[],
                json!({ "parallelism": 33 }),
                Some("MAX_JOB_PARALLELISM: job.parallelism 33 exceeds 32"),
            ),
            (
                &[("MAX_JOB_PARALLELISM", "2")],
                json!({ "parallelism": 3 }),
                Some("MAX_JOB_PARALLELISM: job.parallelism 3 exceeds 2"),
            ),
        ]);
    }

    #[test]
    fn gpus_env_and_ttl() {
        let gpus = |n: u32| json!({ "gpuEnable": true, "gpuNumber": n });
        let env = |n: usize| {
            let list: Vec<Value> = (0..n)
                .map(|i| json!({ "name": format!("V{i}"), "value": "x" }))
                .collect();
            json!({ "env": list })
        };
        let ttl = |t: i64| json!({ "ttlSecondsAfterFinished": t });
        run(vec![
            (&[], gpus(8), None),
            (
                &[],
                gpus(9),
                Some("MAX_JOB_GPUS: job.gpuNumber 9 exceeds 8"),
            ),
            (
                &[("MAX_JOB_GPUS", "0")],
                gpus(1),
                Some("MAX_JOB_GPUS: job.gpuNumber 1 exceeds 0"),
            ),
            (&[("MAX_JOB_GPUS", "0")], json!({ "gpuNumber": 4 }), None),
            (&[], env(100), None),
            (
                &[],
                env(101),
                Some("MAX_ENV_ENTRIES: job.env has 101 entries, over 100"),
            ),
            (&[("MAX_ENV_ENTRIES", "0")], env(1), Some("MAX_ENV_ENTRIES")),
            (&[], ttl(31), None),
            (&[], ttl(604_800), None),
            (
                &[],
                ttl(604_801),
                Some(
                    "MAX_TTL_SECONDS_AFTER_FINISHED: job.ttlSecondsAfterFinished 604801 is over 604800",
                ),
            ),
            (
                &[("MIN_TTL_SECONDS_AFTER_FINISHED", "3600")],
                ttl(60),
                Some(
                    "MIN_TTL_SECONDS_AFTER_FINISHED: job.ttlSecondsAfterFinished 60 is under 3600",
                ),
            ),
            (
                &[("MIN_TTL_SECONDS_AFTER_FINISHED", "3600")],
                json!({}),
                None,
            ),
        ]);
    }

    #[test]
    fn queues() {
        let queued = json!({ "queueName": "team-a", "resources": { "requests": { "cpu": "1" } } });
        run(vec![
            // Default: any queue.
            (&[], queued.clone(), None),
            (&[("ALLOWED_QUEUES", "team-a,team-b")], queued.clone(), None),
            (&[("ALLOWED_QUEUES", "*")], queued.clone(), None),
            (
                &[("ALLOWED_QUEUES", "team-b")],
                queued.clone(),
                Some("ALLOWED_QUEUES: job.queueName \"team-a\" is not one of team-b"),
            ),
            // A message that is not queued is not affected.
            (&[("ALLOWED_QUEUES", "team-b")], json!({}), None),
        ]);
        assert!(is_dns_label("a") && is_dns_label(&"q".repeat(63)));
        for bad in ["", "A", "a.b", "-a", "a-", "a_b", &"q".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn invalid_settings_are_all_reported() {
        let m: HashMap<&str, &str> = [
            ("ALLOWED_ENV_REFS", "configmap/a,volume/b,secret/"),
            ("REQUIRE_IMAGE_DIGEST", "maybe"),
            ("MAX_JOB_CPU", "lots"),
            ("MAX_JOB_MEMORY", "0"),
            ("MAX_JOB_GPUS", "-1"),
            ("MAX_ENV_ENTRIES", "x"),
            ("MIN_TTL_SECONDS_AFTER_FINISHED", "100"),
            ("MAX_TTL_SECONDS_AFTER_FINISHED", "50"),
            ("ALLOWED_QUEUES", "ok,Not_A_Label"),
        ]
        .into_iter()
        .collect();
        let errors = Policy::from_env(&|k| m.get(k).map(|v| v.to_string())).unwrap_err();
        let text = errors.join("\n");
        for needle in [
            "\"volume/b\"",
            "\"secret/\"",
            "REQUIRE_IMAGE_DIGEST=\"maybe\"",
            "MAX_JOB_CPU=\"lots\"",
            "MAX_JOB_MEMORY=\"0\"",
            "MAX_JOB_GPUS=\"-1\"",
            "MAX_ENV_ENTRIES=\"x\"",
            "MIN_TTL_SECONDS_AFTER_FINISHED (100) must not exceed",
            "ALLOWED_QUEUES entry \"Not_A_Label\"",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert_eq!(errors.len(), 9, "{text}");
    }
}
