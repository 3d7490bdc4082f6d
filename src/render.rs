//! Job rendering: a validated `Message` plus operator settings become the
//! batch/v1 Job the worker creates, and, for a message with a `payload`, the
//! Secret that carries it into the pod (`render_secret`). Pure: no I/O, no
//! clock; the same message always renders the same Job (that is what makes
//! redelivery idempotent).

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::contract::{
    ANN_MESSAGE_ID, ANN_QUEUE_NAME, ANN_START_AFTER, ANN_WEBHOOK_URL, ENV_MESSAGE_ID, ENV_PAYLOAD,
    FINALIZER, LABEL_APP, LABEL_INSTANCE, LABEL_KUEUE_PRIORITY_CLASS, LABEL_KUEUE_QUEUE_NAME,
    LABEL_MANAGED_BY, MANAGER, PAYLOAD_DIR, PAYLOAD_KEY, job_name, payload_path,
};
use crate::message::{EnvRefKind, FailureAction, Message, PodFailureRule, ResourceList};

/// Operator settings that shape every Job (read, with their defaults, by
/// `config.rs`; `config::default_render` gives the defaults alone).
#[derive(Clone, Debug)]
pub struct RenderConfig {
    /// Value of LABEL_INSTANCE (WORKER_INSTANCE, default "default").
    pub instance: String,
    /// Node selector added when gpuEnable (GPU_NODE_SELECTOR, e.g. nvidia.com/gpu.present=true).
    pub gpu_node_selector: Option<(String, String)>,
    /// Toleration added when gpuEnable (GPU_TOLERATION key=value, effect NoSchedule).
    pub gpu_toleration: Option<(String, String)>,
    /// Add `sidecar.istio.io/inject: "false"` to the pod template.
    pub istio_inject_false: bool,
    /// Service accounts whose API token is mounted when a message names them
    /// (those named explicitly in ALLOWED_SERVICE_ACCOUNTS, default `default`);
    /// every other pod gets `automountServiceAccountToken: false`.
    pub automount_service_accounts: Vec<String>,
}

/// The container name in every Job.
pub const CONTAINER_NAME: &str = "job";
/// The volume name for `job.volume`.
pub const VOLUME_NAME: &str = "data";
/// Extended resource requested per GPU.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The volume name of the payload Secret.
pub const PAYLOAD_VOLUME_NAME: &str = "job-worker-payload";

/// The labels of the Job (and of its payload Secret).
fn labels(msg: &Message, cfg: &RenderConfig) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    labels.insert(LABEL_APP.into(), msg.service.clone().into());
    labels.insert(LABEL_INSTANCE.into(), cfg.instance.clone().into());
    labels
}

/// The payload Secret of a message's Job, or `None` without a payload: named
/// like the Job, labelled like it, annotated with the message id, owned by the
/// Job `job_uid` (so the garbage collector deletes it with the Job), immutable,
/// holding the payload as `payload.json`. `blockOwnerDeletion` is not set: it
/// would need `update` on `jobs/finalizers` where the
/// OwnerReferencesPermissionEnforcement admission plugin runs, and nothing
/// needs the Job to wait for its Secret's deletion.
pub fn render_secret(msg: &Message, cfg: &RenderConfig, job_uid: &str) -> Option<Value> {
    let payload = msg.payload.as_ref()?;
    let name = job_name(&msg.job.prefix_name, &msg.id);
    let data = base64::engine::general_purpose::STANDARD.encode(payload.as_str());
    Some(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": msg.job.namespace,
            "labels": labels(msg, cfg),
            "annotations": { ANN_MESSAGE_ID: msg.id },
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name,
                "uid": job_uid,
            }],
        },
        "type": "Opaque",
        "immutable": true,
        "data": { PAYLOAD_KEY: data },
    }))
}

/// The Job object (apiVersion batch/v1) for a validated message.
pub fn render(msg: &Message, cfg: &RenderConfig) -> Value {
    let job = &msg.job;
    let gpu = job.gpus.is_some();

    let labels = labels(msg, cfg);

    let mut job_labels = labels.clone();
    let mut annotations = Map::new();
    annotations.insert(ANN_MESSAGE_ID.into(), msg.id.clone().into());
    if let Some(t) = job.start_after {
        // Delayed: suspended until the tracker starts it at this time. A
        // queued one reaches Kueue only then: its queue name waits in our
        // annotation (Kueue ignores a Job without its label).
        annotations.insert(
            ANN_START_AFTER.into(),
            crate::schedule::annotation(t).into(),
        );
        if let Some(q) = &job.queue_name {
            annotations.insert(ANN_QUEUE_NAME.into(), q.clone().into());
        }
    }
    if let Some(q) = &job.queue_name {
        if job.start_after.is_none() {
            job_labels.insert(LABEL_KUEUE_QUEUE_NAME.into(), q.clone().into());
        }
        // Queued: the priority is Kueue's WorkloadPriorityClass (it orders
        // admission and preemption), not the pod's PriorityClass.
        if let Some(pc) = &job.priority_class {
            job_labels.insert(LABEL_KUEUE_PRIORITY_CLASS.into(), pc.clone().into());
        }
    }

    if let Some(url) = &msg.webhook_url {
        annotations.insert(ANN_WEBHOOK_URL.into(), url.as_str().into());
    }

    let mut pod_labels = labels.clone();
    if let Some(f) = &job.fargate {
        pod_labels.insert(f.key.clone(), f.value.clone().into());
    }
    let mut pod_meta = Map::new();
    pod_meta.insert("labels".into(), pod_labels.into());
    if cfg.istio_inject_false {
        pod_meta.insert(
            "annotations".into(),
            json!({ "sidecar.istio.io/inject": "false" }),
        );
    }

    let mut container = Map::new();
    container.insert("name".into(), CONTAINER_NAME.into());
    container.insert("image".into(), job.image.clone().into());
    if !job.command.is_empty() {
        container.insert("command".into(), job.command.clone().into());
    }
    if !job.args.is_empty() {
        container.insert("args".into(), job.args.clone().into());
    }
    let mut env: Vec<Value> = job
        .env
        .iter()
        .map(|e| json!({ "name": e.name, "value": e.value }))
        .collect();
    env.push(json!({ "name": ENV_MESSAGE_ID, "value": msg.id }));
    if msg.payload.is_some() {
        env.push(json!({ "name": ENV_PAYLOAD, "value": payload_path() }));
    }
    container.insert("env".into(), env.into());
    if !job.env_refs.is_empty() {
        let env_from: Vec<Value> = job
            .env_refs
            .iter()
            .map(|r| match r.kind {
                EnvRefKind::ConfigMap => json!({ "configMapRef": { "name": r.name } }),
                EnvRefKind::Secret => json!({ "secretRef": { "name": r.name } }),
            })
            .collect();
        container.insert("envFrom".into(), env_from.into());
    }
    let mut limits = resource_map(&job.resources.limits);
    if let Some(n) = job.gpus {
        limits.insert(GPU_RESOURCE.into(), n.to_string().into());
    }
    let requests = resource_map(&job.resources.requests);
    let mut resources = Map::new();
    if !limits.is_empty() {
        resources.insert("limits".into(), limits.into());
    }
    if !requests.is_empty() {
        resources.insert("requests".into(), requests.into());
    }
    container.insert("resources".into(), resources.into());
    let mut mounts = Vec::new();
    if let Some(v) = &job.volume {
        mounts.push(json!({ "name": VOLUME_NAME, "mountPath": v.mount_path }));
    }
    if msg.payload.is_some() {
        mounts.push(json!({
            "name": PAYLOAD_VOLUME_NAME,
            "mountPath": PAYLOAD_DIR,
            "readOnly": true
        }));
    }
    if !mounts.is_empty() {
        container.insert("volumeMounts".into(), mounts.into());
    }
    // The log tail stands in for an empty termination message of a failed
    // container; either comes back as `result` (2) or `terminationMessage` (3).
    container.insert(
        "terminationMessagePolicy".into(),
        "FallbackToLogsOnError".into(),
    );
    container.insert(
        "securityContext".into(),
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] }
        }),
    );

    let mut pod_spec = Map::new();
    pod_spec.insert("restartPolicy".into(), "Never".into());
    match &job.service_account {
        Some(sa) => {
            pod_spec.insert("serviceAccountName".into(), sa.clone().into());
            if !cfg.automount_service_accounts.contains(sa) {
                pod_spec.insert("automountServiceAccountToken".into(), false.into());
            }
        }
        None => {
            pod_spec.insert("automountServiceAccountToken".into(), false.into());
        }
    }
    pod_spec.insert("containers".into(), json!([container]));
    if let (Some(pc), None) = (&job.priority_class, &job.queue_name) {
        pod_spec.insert("priorityClassName".into(), pc.clone().into());
    }
    if !job.image_pull_secrets.is_empty() {
        let secrets: Vec<Value> = job
            .image_pull_secrets
            .iter()
            .map(|n| json!({ "name": n }))
            .collect();
        pod_spec.insert("imagePullSecrets".into(), secrets.into());
    }
    let mut volumes = Vec::new();
    if let Some(v) = &job.volume {
        volumes.push(json!({
            "name": VOLUME_NAME,
            "persistentVolumeClaim": { "claimName": v.pvc }
        }));
    }
    if msg.payload.is_some() {
        // Created right after the Job; until then the kubelet retries the mount.
        volumes.push(json!({
            "name": PAYLOAD_VOLUME_NAME,
            "secret": { "secretName": job_name(&job.prefix_name, &msg.id) }
        }));
    }
    if !volumes.is_empty() {
        pod_spec.insert("volumes".into(), volumes.into());
    }
    let mut node_selector = Map::new();
    if let Some(ns) = &job.node_selector {
        node_selector.insert(ns.key.clone(), ns.value.clone().into());
    }
    if let (true, Some((k, v))) = (gpu, &cfg.gpu_node_selector) {
        // The operator's GPU selector wins over a message key of the same name.
        node_selector.insert(k.clone(), v.clone().into());
    }
    if !node_selector.is_empty() {
        pod_spec.insert("nodeSelector".into(), node_selector.into());
    }
    let mut tolerations = Vec::new();
    if let Some(t) = &job.toleration {
        tolerations.push(toleration(&t.key, &t.value));
    }
    if let (true, Some((k, v))) = (gpu, &cfg.gpu_toleration) {
        tolerations.push(toleration(k, v));
    }
    if !tolerations.is_empty() {
        pod_spec.insert("tolerations".into(), tolerations.into());
    }

    let mut spec = Map::new();
    if job.queue_name.is_some() || job.start_after.is_some() {
        // Kueue unsuspends the Job when it admits it; the tracker a delayed one.
        spec.insert("suspend".into(), true.into());
    }
    let per_index = job
        .pod_failure_policy
        .iter()
        .any(|r| r.action == FailureAction::FailIndex);
    if per_index {
        // FailIndex needs a per-index retry budget; backoffLimit then applies
        // to each index (the Job's own limit is left to its default).
        spec.insert("backoffLimitPerIndex".into(), job.backoff_limit.into());
    } else {
        spec.insert("backoffLimit".into(), job.backoff_limit.into());
    }
    if let Some(n) = job.completions {
        spec.insert("completions".into(), n.into());
    }
    if let Some(n) = job.parallelism {
        spec.insert("parallelism".into(), n.into());
    }
    if let Some(m) = job.completion_mode {
        spec.insert("completionMode".into(), m.as_str().into());
    }
    if !job.pod_failure_policy.is_empty() {
        let rules: Vec<Value> = job.pod_failure_policy.iter().map(failure_rule).collect();
        spec.insert("podFailurePolicy".into(), json!({ "rules": rules }));
    }
    spec.insert(
        "activeDeadlineSeconds".into(),
        job.active_deadline_seconds.into(),
    );
    if let Some(ttl) = job.ttl_seconds_after_finished {
        spec.insert("ttlSecondsAfterFinished".into(), ttl.into());
    }
    spec.insert(
        "template".into(),
        json!({ "metadata": pod_meta, "spec": pod_spec }),
    );

    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(&job.prefix_name, &msg.id),
            "namespace": job.namespace,
            "labels": job_labels,
            "annotations": annotations,
            // Holds the finished Job (past its TTL) until its terminal callback is settled.
            "finalizers": [FINALIZER],
        },
        "spec": spec,
    })
}

/// One `podFailurePolicy` rule as the API takes it.
fn failure_rule(r: &PodFailureRule) -> Value {
    let mut rule = Map::new();
    rule.insert("action".into(), r.action.as_str().into());
    if let Some(c) = &r.on_exit_codes {
        rule.insert(
            "onExitCodes".into(),
            json!({
                "containerName": CONTAINER_NAME,
                "operator": if c.in_values { "In" } else { "NotIn" },
                "values": c.values,
            }),
        );
    }
    if !r.on_pod_conditions.is_empty() {
        let patterns: Vec<Value> = r
            .on_pod_conditions
            .iter()
            .map(|p| json!({ "type": p.condition_type, "status": p.status }))
            .collect();
        rule.insert("onPodConditions".into(), patterns.into());
    }
    Value::Object(rule)
}

fn resource_map(list: &ResourceList) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(cpu) = &list.cpu {
        m.insert("cpu".into(), cpu.clone().into());
    }
    if let Some(memory) = &list.memory {
        m.insert("memory".into(), memory.clone().into());
    }
    m
}

fn toleration(key: &str, value: &str) -> Value {
    json!({
        "key": key,
        "operator": "Equal",
        "value": value,
        "effect": "NoSchedule",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_render;
    use crate::message::{KeyValue, Limits, parse};

    fn msg(body: Value) -> Message {
        parse(body.to_string().as_bytes(), &Limits::default()).expect("valid test message")
    }

    #[test]
    fn gpu_adds_limit_selector_and_toleration() {
        let mut m = msg(json!({
            "id": "g",
            "job": {
                "prefixName": "g",
                "image": "cuda",
                "gpuEnable": true,
                "gpuNumber": 2,
                "nodeSelector": { "matchKey": "nvidia.com/gpu.present", "matchValue": "false" },
                "toleration": { "key": "k", "value": "v" }
            }
        }));
        let job = render(&m, &default_render());
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["resources"],
            json!({ "limits": { "nvidia.com/gpu": "2" } })
        );
        // The operator's GPU selector wins over the message's key.
        assert_eq!(
            pod["nodeSelector"],
            json!({ "nvidia.com/gpu.present": "true" })
        );
        assert_eq!(pod["tolerations"].as_array().map(Vec::len), Some(2));
        assert_eq!(pod["tolerations"][1]["key"], "nvidia.com/gpu");

        // Without operator GPU settings only the resource limit is added.
        let cfg = RenderConfig {
            gpu_node_selector: None,
            gpu_toleration: None,
            istio_inject_false: false,
            instance: "blue".into(),
            automount_service_accounts: Vec::new(),
        };
        m.job.node_selector = None;
        m.job.toleration = None;
        let job = render(&m, &cfg);
        let pod = &job["spec"]["template"]["spec"];
        assert!(pod.get("nodeSelector").is_none());
        assert!(pod.get("tolerations").is_none());
        assert!(
            job["spec"]["template"]["metadata"]
                .get("annotations")
                .is_none()
        );
        assert_eq!(job["metadata"]["labels"][LABEL_INSTANCE], "blue");
    }

    #[test]
    fn gpu_settings_ignored_without_gpu_enable() {
        let m = msg(json!({
            "id": "g",
            "job": { "prefixName": "g", "image": "cuda", "gpuNumber": 4 }
        }));
        let job = render(&m, &default_render());
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["resources"], json!({}));
        assert!(pod.get("nodeSelector").is_none());
        assert!(pod.get("tolerations").is_none());
    }

    #[test]
    fn a_priority_becomes_kueues_label_when_queued_and_the_pods_class_otherwise() {
        let parse = |queue: Option<&str>| {
            let mut v = json!({"id": "p-1", "job": {"prefixName": "p", "image": "busybox",
                "priorityClass": "high", "resources": {"requests": {"cpu": "1"}}}});
            if let Some(q) = queue {
                v["job"]["queueName"] = json!(q);
            }
            crate::message::parse(v.to_string().as_bytes(), &crate::message::Limits::default())
                .expect("valid")
        };
        let queued = render(&parse(Some("team-a")), &crate::config::default_render());
        assert_eq!(
            queued["metadata"]["labels"][LABEL_KUEUE_PRIORITY_CLASS],
            "high"
        );
        assert!(
            queued["spec"]["template"]["spec"]
                .get("priorityClassName")
                .is_none()
        );
        let plain = render(&parse(None), &crate::config::default_render());
        assert_eq!(
            plain["spec"]["template"]["spec"]["priorityClassName"],
            "high"
        );
        assert!(
            plain["metadata"]["labels"]
                .get(LABEL_KUEUE_PRIORITY_CLASS)
                .is_none()
        );
    }

    #[test]
    fn a_queued_job_is_labelled_and_suspended() {
        let m = msg(json!({ "id": "q", "job": {
            "prefixName": "q", "image": "i", "queueName": "team-a",
            "resources": { "requests": { "cpu": "1" } }
        } }));
        let job = render(&m, &default_render());
        assert_eq!(job["metadata"]["labels"][LABEL_KUEUE_QUEUE_NAME], "team-a");
        assert_eq!(job["spec"]["suspend"], true);
        // Only the Job is labelled: Kueue reads the Job, not its pods.
        assert!(
            job["spec"]["template"]["metadata"]["labels"]
                .get(LABEL_KUEUE_QUEUE_NAME)
                .is_none()
        );
        let plain = msg(json!({ "id": "p", "job": { "prefixName": "p", "image": "i" } }));
        let job = render(&plain, &default_render());
        assert!(
            job["metadata"]["labels"]
                .get(LABEL_KUEUE_QUEUE_NAME)
                .is_none()
        );
        assert!(job["spec"].get("suspend").is_none());
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"],
            "FallbackToLogsOnError"
        );
    }

    #[test]
    fn a_delayed_job_is_suspended_with_its_start_and_reaches_kueue_later() {
        use std::time::{Duration, UNIX_EPOCH};
        let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01
        let parse_now = |body: Value| {
            crate::message::parse_at(body.to_string().as_bytes(), &Limits::default(), now)
                .expect("valid test message")
        };
        let m = parse_now(json!({ "id": "d", "job": {
            "prefixName": "d", "image": "i", "startDelaySeconds": 90
        } }));
        let job = render(&m, &default_render());
        assert_eq!(job["spec"]["suspend"], true);
        assert_eq!(
            job["metadata"]["annotations"][ANN_START_AFTER],
            "2026-01-01T00:01:30Z"
        );
        assert!(job["metadata"]["annotations"].get(ANN_QUEUE_NAME).is_none());
        let q = parse_now(json!({ "id": "dq", "job": {
            "prefixName": "d", "image": "i", "queueName": "team-a",
            "startAfter": "2026-01-01T02:00:00+01:00", "priorityClass": "high",
            "resources": { "requests": { "cpu": "1" } }
        } }));
        let job = render(&q, &default_render());
        assert_eq!(job["spec"]["suspend"], true);
        assert_eq!(
            job["metadata"]["annotations"][ANN_START_AFTER],
            "2026-01-01T01:00:00Z"
        );
        assert_eq!(job["metadata"]["annotations"][ANN_QUEUE_NAME], "team-a");
        // Not Kueue's until its start: no queue label yet.
        assert!(
            job["metadata"]["labels"]
                .get(LABEL_KUEUE_QUEUE_NAME)
                .is_none()
        );
        assert_eq!(
            job["metadata"]["labels"][LABEL_KUEUE_PRIORITY_CLASS],
            "high"
        );
    }

    #[test]
    fn fargate_labels_only_the_pod() {
        let mut m = msg(json!({ "id": "f", "job": { "prefixName": "f", "image": "i" } }));
        m.job.fargate = Some(KeyValue {
            key: "WorkerType".into(),
            value: "fargate".into(),
        });
        let job = render(&m, &default_render());
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["WorkerType"],
            "fargate"
        );
        assert!(job["metadata"]["labels"].get("WorkerType").is_none());
    }

    #[test]
    fn no_privileged_settings() {
        let m = msg(json!({ "id": "s", "job": { "prefixName": "s", "image": "i" } }));
        let job = render(&m, &default_render());
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["securityContext"],
            json!({ "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } })
        );
        assert_eq!(
            job["spec"]["template"]["spec"]["automountServiceAccountToken"],
            false
        );
    }

    #[test]
    fn payload_mounts_its_secret_and_every_job_gets_its_message_id() {
        let plain = msg(json!({ "id": "m-1", "job": { "prefixName": "p", "image": "i" } }));
        assert_eq!(render_secret(&plain, &default_render(), "u"), None);
        let job = render(&plain, &default_render());
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["env"],
            json!([{ "name": "JOB_WORKER_MESSAGE_ID", "value": "m-1" }])
        );
        assert!(pod["containers"][0].get("volumeMounts").is_none());
        assert!(pod.get("volumes").is_none());

        let m = msg(json!({
            "id": "m-1",
            "payload": { "b": [1, 2], "a": "x" },
            "job": { "prefixName": "p", "image": "i", "env": [{ "name": "A", "value": "1" }],
                     "volume": { "mountPath": "/data", "pvc": "c" } }
        }));
        let job = render(&m, &default_render());
        let name = job["metadata"]["name"].as_str().unwrap_or_default();
        let pod = &job["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            c["env"],
            json!([
                { "name": "A", "value": "1" },
                { "name": "JOB_WORKER_MESSAGE_ID", "value": "m-1" },
                { "name": "JOB_WORKER_PAYLOAD", "value": "/etc/k8s-job-worker/payload.json" }
            ])
        );
        assert_eq!(
            c["volumeMounts"][1],
            json!({ "name": PAYLOAD_VOLUME_NAME, "mountPath": "/etc/k8s-job-worker", "readOnly": true })
        );
        assert_eq!(
            pod["volumes"][1],
            json!({ "name": PAYLOAD_VOLUME_NAME, "secret": { "secretName": name } })
        );
        // The payload is in the Secret only, never in the Job.
        assert!(!job.to_string().contains("\"b\""), "{job}");

        let secret = render_secret(&m, &default_render(), "uid-1").expect("a Secret");
        assert_eq!(secret["metadata"]["name"], name);
        assert_eq!(secret["metadata"]["labels"], job["metadata"]["labels"]);
        assert_eq!(
            secret["metadata"]["annotations"],
            json!({ ANN_MESSAGE_ID: "m-1" })
        );
        assert_eq!(
            secret["metadata"]["ownerReferences"],
            json!([{ "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "uid-1" }])
        );
        assert_eq!(secret["immutable"], true);
        let data = secret["data"]["payload.json"].as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_default();
        // (json! sorted the keys before the message was serialized)
        assert_eq!(bytes, br#"{"a":"x","b":[1,2]}"#);
    }

    #[test]
    fn token_mounted_only_for_explicitly_allowed_accounts() {
        let pod = |sa: Option<&str>, allowed: &[&str]| {
            let mut m = msg(json!({ "id": "t", "job": { "prefixName": "t", "image": "i" } }));
            m.job.service_account = sa.map(str::to_string);
            let cfg = RenderConfig {
                automount_service_accounts: allowed.iter().map(|s| s.to_string()).collect(),
                ..default_render()
            };
            render(&m, &cfg)["spec"]["template"]["spec"].clone()
        };
        let p = pod(None, &["default"]);
        assert_eq!(p["automountServiceAccountToken"], false);
        assert!(p.get("serviceAccountName").is_none());
        let p = pod(Some("trainer"), &["trainer"]);
        assert_eq!(p["serviceAccountName"], "trainer");
        assert!(p.get("automountServiceAccountToken").is_none());
        let p = pod(Some("trainer"), &["default"]);
        assert_eq!(p["serviceAccountName"], "trainer");
        assert_eq!(p["automountServiceAccountToken"], false);
        // The default RenderConfig mounts only the `default` account's token.
        let p = pod(Some("default"), &["default"]);
        assert!(p.get("automountServiceAccountToken").is_none());
    }
}
