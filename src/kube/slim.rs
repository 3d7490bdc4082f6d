//! Watched objects cut down, before they reach the tracker's channel, to the
//! fields the tracker reads (src/tracker/observe.rs, `Slot::of_job`, the
//! per-service counts): a Job loses its `spec.template` (the whole pod spec)
//! and every annotation but ours, a Pod its `spec`. During a burst of
//! thousands of Jobs the tracker lags behind its watches and their events wait
//! in its channel; slim, each costs a few hundred bytes instead of several KiB.
//! `tracker::slim_tests` proves the tracker reads the same from a slim object
//! as from the full one.

use serde_json::{Map, Value};

use super::watch::Event;

/// Annotations the tracker reads all carry this prefix (contract::ANN_*).
const OUR_ANNOTATIONS: &str = "k8s-job-worker.io/";

/// Moves the named keys of `from` (an object) into a new object.
fn keep(from: &mut Value, keys: &[&str]) -> Value {
    let mut out = Map::new();
    if let Some(m) = from.as_object_mut() {
        for k in keys {
            if let Some(v) = m.remove(*k) {
                out.insert((*k).to_string(), v);
            }
        }
    }
    Value::Object(out)
}

/// The metadata fields both kinds keep.
const META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "finalizers",
    "labels",
];

fn metadata(obj: &mut Value, annotations: bool) -> Value {
    let mut src = obj.get_mut("metadata").map(Value::take).unwrap_or_default();
    let mut meta = keep(&mut src, META);
    if annotations && let Some(Value::Object(ann)) = src.get_mut("annotations").map(Value::take) {
        let ours: Map<String, Value> = ann
            .into_iter()
            .filter(|(k, _)| k.starts_with(OUR_ANNOTATIONS))
            .collect();
        if let Some(m) = meta.as_object_mut() {
            m.insert("annotations".into(), Value::Object(ours));
        }
    }
    meta
}

/// A Job as the tracker reads it: metadata (our annotations only), the spec's
/// `suspend`, `completions` and `parallelism`, the whole (small) status.
pub fn job(mut v: Value) -> Value {
    if !v.is_object() {
        return v;
    }
    let meta = metadata(&mut v, true);
    let mut spec = v.get_mut("spec").map(Value::take).unwrap_or_default();
    let spec = keep(&mut spec, &["suspend", "completions", "parallelism"]);
    let status = v.get_mut("status").map(Value::take).unwrap_or_default();
    let mut out = Map::new();
    out.insert("metadata".into(), meta);
    out.insert("spec".into(), spec);
    if !status.is_null() {
        out.insert("status".into(), status);
    }
    Value::Object(out)
}

/// A Pod as the tracker reads it: metadata without annotations, the status's
/// phase, conditions and each container's state.
pub fn pod(mut v: Value) -> Value {
    if !v.is_object() {
        return v;
    }
    let meta = metadata(&mut v, false);
    let mut src = v.get_mut("status").map(Value::take).unwrap_or_default();
    let mut status = keep(&mut src, &["phase", "conditions"]);
    if let Some(Value::Array(cs)) = src.get_mut("containerStatuses").map(Value::take) {
        let cs: Vec<Value> = cs
            .into_iter()
            .map(|mut c| keep(&mut c, &["name", "state"]))
            .collect();
        if let Some(m) = status.as_object_mut() {
            m.insert("containerStatuses".into(), Value::Array(cs));
        }
    }
    let mut out = Map::new();
    out.insert("metadata".into(), meta);
    out.insert("status".into(), status);
    Value::Object(out)
}

/// `ev` with each of its objects passed through `f` (`job` or `pod`).
pub fn event(ev: Event, f: fn(Value) -> Value) -> Event {
    match ev {
        Event::Restarted(list) => Event::Restarted(list.into_iter().map(f).collect()),
        Event::Applied(v) => Event::Applied(f(v)),
        Event::Deleted(v) => Event::Deleted(f(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_keeps_what_the_tracker_reads_and_loses_its_template() {
        let j = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j", "namespace": "n", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "a"}, "finalizers": ["f"],
                "annotations": {"k8s-job-worker.io/message-id": "m", "other.io/x": "big"}},
            "spec": {"suspend": false, "completions": 2, "parallelism": 2,
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"active": 1}
        });
        let s = job(j);
        assert_eq!(
            s,
            json!({
                "metadata": {"name": "j", "namespace": "n", "uid": "u", "resourceVersion": "7",
                    "labels": {"app": "a"}, "finalizers": ["f"],
                    "annotations": {"k8s-job-worker.io/message-id": "m"}},
                "spec": {"suspend": false, "completions": 2, "parallelism": 2},
                "status": {"active": 1}
            })
        );
    }

    #[test]
    fn a_pod_loses_its_spec_and_container_details() {
        let p = json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"job-name": "j"},
                "annotations": {"a": "b"}, "ownerReferences": [{}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                "containerStatuses": [{"name": "c", "image": "i", "state": {"running": {}}}]}
        });
        assert_eq!(
            pod(p),
            json!({
                "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"job-name": "j"}},
                "status": {"phase": "Running", "containerStatuses": [{"name": "c", "state": {"running": {}}}]}
            })
        );
    }

    #[test]
    fn odd_objects_pass_without_panicking() {
        for v in [
            json!(null),
            json!(1),
            json!([]),
            json!({}),
            json!({"metadata": 3, "spec": "x", "status": []}),
        ] {
            let _ = job(v.clone());
            let _ = pod(v);
        }
    }
}
