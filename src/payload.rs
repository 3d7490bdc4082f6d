//! The payload Secret: intake's second create. A message with a `payload`
//! gets, right after its Job exists, an immutable Secret of the same name,
//! owned by the Job (`render::render_secret`); the message is acknowledged
//! only once both exist. A redelivery adopts an existing Secret when it is
//! this Job's (owner uid, message-id annotation, managed-by label); a Secret
//! left by an earlier Job of the same name (garbage collection pending) is
//! waited for; any other Secret of that name is a conflict. The payload itself
//! never reaches a log line or an error: only names, sizes and API statuses.

use std::fmt;

use serde_json::Value;

use crate::contract::{ANN_MESSAGE_ID, LABEL_MANAGED_BY, MANAGER, annotation_pointer, job_name};
use crate::kube::{Client, KubeError};
use crate::message::Message;
use crate::render::{self, RenderConfig};

/// Why the payload Secret is not (yet) there.
#[derive(Debug)]
pub enum SecretError {
    /// A Secret of the Job's name exists and is not this message's Job's.
    Conflict { key: String },
    /// A Secret of the Job's name belongs to an earlier Job of that name,
    /// deleted and not yet garbage-collected: try again shortly.
    Stale { key: String },
    /// The API server refused or was not reached.
    Kube(KubeError),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Conflict { key } => write!(
                f,
                "Secret {key} already exists and does not belong to this message's Job; \
                 choose another job.prefixName or id"
            ),
            SecretError::Stale { key } => write!(
                f,
                "Secret {key} still belongs to an earlier Job of the same name (being garbage-collected)"
            ),
            SecretError::Kube(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SecretError {}

impl SecretError {
    /// Worth retrying later (the message stays in the queue).
    pub fn is_transient(&self) -> bool {
        match self {
            SecretError::Stale { .. } => true,
            SecretError::Conflict { .. } => false,
            SecretError::Kube(e) => e.is_transient() || e.code() == Some(404),
        }
    }

    /// The `code` label of `payload_secret_errors_total`.
    pub fn metric_code(&self) -> String {
        match self {
            SecretError::Conflict { .. } => "conflict".into(),
            SecretError::Stale { .. } => "stale".into(),
            SecretError::Kube(e) => e
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "transport".into()),
        }
    }
}

/// Whose an existing Secret of the Job's name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This message's Job (uid `job_uid`): adopt it.
    ThisJob,
    /// An earlier Job of the same name (another uid): the garbage collector
    /// removes it once it sees that Job gone.
    EarlierJob,
    /// Anything else.
    Foreign,
}

/// Classifies an existing Secret `secret` against the Job `name`/`job_uid` of
/// message `id`. With `job_uid` None (before the Job exists) an owner Job of
/// that name counts as `EarlierJob`.
pub fn owner(secret: &Value, name: &str, job_uid: Option<&str>, id: &str) -> Owner {
    let refs = secret
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let job_refs: Vec<&Value> = refs
        .iter()
        .filter(|r| {
            r["kind"] == "Job"
                && r["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("batch/"))
                && r["name"] == name
        })
        .collect();
    if job_refs.is_empty() {
        return Owner::Foreign;
    }
    let ours = secret
        .pointer(&format!(
            "/metadata/labels/{}",
            LABEL_MANAGED_BY.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some(MANAGER)
        && secret
            .pointer(&annotation_pointer(ANN_MESSAGE_ID))
            .and_then(Value::as_str)
            == Some(id);
    match job_uid {
        Some(uid) if job_refs.iter().any(|r| r["uid"] == uid) => {
            if ours {
                Owner::ThisJob
            } else {
                Owner::Foreign
            }
        }
        _ => Owner::EarlierJob,
    }
}

fn secret_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/secrets")
}

/// Before the Job is created: refuses a message whose Secret name is held by
/// a Secret that no Job of that name owns (JOB_NAME_CONFLICT with no Job
/// created), and finds out early when the worker may not read Secrets there.
/// Nothing to do without a payload.
pub fn precheck(kube: &Client, msg: &Message) -> Result<(), SecretError> {
    if msg.payload.is_none() {
        return Ok(());
    }
    let ns = &msg.job.namespace;
    let name = job_name(&msg.job.prefix_name, &msg.id);
    let key = format!("{ns}/{name}");
    match kube.get(
        &format!("{}/{name}", secret_path(ns)),
        &format!("get secret {key}"),
    ) {
        Ok(existing) => match owner(&existing, &name, None, &msg.id) {
            Owner::Foreign => Err(SecretError::Conflict { key }),
            Owner::ThisJob | Owner::EarlierJob => Ok(()),
        },
        Err(e) if e.code() == Some(404) => Ok(()),
        Err(e) => Err(SecretError::Kube(e)),
    }
}

/// After the Job `job` (the API server's copy, with its uid) exists: creates
/// its payload Secret, or adopts it on 409 when it is this Job's. Returns
/// whether a Secret was created (false: none needed, or adopted).
pub fn ensure(
    kube: &Client,
    msg: &Message,
    cfg: &RenderConfig,
    job: &Value,
) -> Result<bool, SecretError> {
    let uid = job
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(secret) = render::render_secret(msg, cfg, uid) else {
        return Ok(false);
    };
    let ns = &msg.job.namespace;
    let name = job_name(&msg.job.prefix_name, &msg.id);
    let key = format!("{ns}/{name}");
    match kube.post(&secret_path(ns), &secret, &format!("create secret {key}")) {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(409) => {
            let existing = kube
                .get(
                    &format!("{}/{name}", secret_path(ns)),
                    &format!("get secret {key}"),
                )
                .map_err(SecretError::Kube)?;
            match owner(&existing, &name, Some(uid), &msg.id) {
                Owner::ThisJob => Ok(false),
                Owner::EarlierJob => Err(SecretError::Stale { key }),
                Owner::Foreign => Err(SecretError::Conflict { key }),
            }
        }
        Err(e) => Err(SecretError::Kube(e)),
    }
}

/// Test-only fault (feature `fault-injection`): with
/// K8S_JOB_WORKER_FAULT_EXIT_AFTER_JOB_CREATE=1 the worker SIGKILLs itself
/// right after creating a Job, before its payload Secret (the kill test in
/// tests/payload.rs). Without the feature this is empty and the variable is
/// never read.
#[cfg(feature = "fault-injection")]
pub fn fault_exit_after_job_create() {
    if std::env::var("K8S_JOB_WORKER_FAULT_EXIT_AFTER_JOB_CREATE").as_deref() == Ok("1") {
        log::error!("fault injection: SIGKILL between the Job create and its Secret's");
        // SAFETY: kill(2) on our own pid; nothing is borrowed.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn fault_exit_after_job_create() {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(owner: Value, managed: bool, id: &str) -> Value {
        let mut labels = json!({});
        if managed {
            labels[LABEL_MANAGED_BY] = json!(MANAGER);
        }
        json!({"metadata": {"name": "p-1", "labels": labels,
            "annotations": {ANN_MESSAGE_ID: id}, "ownerReferences": owner}})
    }

    #[test]
    fn owners_of_an_existing_secret() {
        let job_ref = |uid: &str| json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "p-1", "uid": uid}]);
        let o = |s: &Value, uid: Option<&str>| owner(s, "p-1", uid, "m");
        // This Job's, by uid, label and annotation.
        let s = secret(job_ref("u1"), true, "m");
        assert_eq!(o(&s, Some("u1")), Owner::ThisJob);
        // An earlier Job of the same name, being collected.
        assert_eq!(o(&s, Some("u2")), Owner::EarlierJob);
        // Before the Job exists, an owner Job of the name is not a conflict.
        assert_eq!(o(&s, None), Owner::EarlierJob);
        // Right uid but another message's, or not ours: foreign.
        assert_eq!(
            o(&secret(job_ref("u1"), true, "x"), Some("u1")),
            Owner::Foreign
        );
        assert_eq!(
            o(&secret(job_ref("u1"), false, "m"), Some("u1")),
            Owner::Foreign
        );
        // No owner, another owner kind or name: foreign, with or without a uid.
        for refs in [
            json!(null),
            json!([]),
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "p-1", "uid": "u1"}]),
            json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "p-2", "uid": "u1"}]),
        ] {
            let s = secret(refs.clone(), true, "m");
            assert_eq!(o(&s, Some("u1")), Owner::Foreign, "{refs}");
            assert_eq!(o(&s, None), Owner::Foreign, "{refs}");
        }
    }

    #[test]
    fn errors_read_as_sentences_and_classify() {
        let c = SecretError::Conflict {
            key: "ns/p-1".into(),
        };
        assert!(c.to_string().starts_with("Secret ns/p-1 already exists"));
        assert!(!c.is_transient());
        assert_eq!(c.metric_code(), "conflict");
        assert!(
            SecretError::Stale {
                key: "ns/p-1".into()
            }
            .is_transient()
        );
        let forbidden = crate::kube::client::status_error("create secret ns/p-1", 403, "");
        let e = SecretError::Kube(forbidden);
        assert!(!e.is_transient());
        assert_eq!(e.metric_code(), "403");
        let gone = crate::kube::client::status_error("get secret ns/p-1", 404, "");
        assert!(SecretError::Kube(gone).is_transient());
    }
}
