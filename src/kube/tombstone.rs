//! The REST calls of cancel tombstones (`cancel::Tombstone`): ConfigMaps in
//! the worker's namespace, labelled with its instance. Created by intake for
//! each cancel, listed when a leader starts, marked consumed by the tracker,
//! deleted once expired. RBAC: `configmaps` get/list/create/patch/delete in
//! the worker's namespace only.

use serde_json::json;

use crate::cancel::{Consumed, Tombstone};
use crate::contract::{ANN_CONSUMED, tombstone_selector};
use crate::encode::percent_encode;

use super::{Client, KubeError};

fn collection(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps")
}

/// Creates `t`. `Ok(None)`: created; `Ok(Some(existing))` on 409, the
/// tombstone already there (a repeated cancel), as the API server has it.
pub fn create(
    kube: &Client,
    ns: &str,
    instance: &str,
    t: &Tombstone,
) -> Result<Option<Tombstone>, KubeError> {
    let op = format!("create cancel tombstone {ns}/{}", t.name);
    match kube.post(&collection(ns), &t.to_object(instance, ns), &op) {
        Ok(_) => Ok(None),
        Err(e) if e.code() == Some(409) => {
            let path = format!("{}/{}", collection(ns), t.name);
            let v = kube.get(&path, &format!("get cancel tombstone {ns}/{}", t.name))?;
            // Unreadable (edited by hand): treat it as this cancel, waiting.
            Ok(Some(
                Tombstone::from_object(&v).unwrap_or_else(|| t.clone()),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Every readable tombstone of the instance.
pub fn list(kube: &Client, ns: &str, instance: &str) -> Result<Vec<Tombstone>, KubeError> {
    let q = format!(
        "labelSelector={}",
        percent_encode(&tombstone_selector(instance))
    );
    let (items, _) = kube.list_all(&collection(ns), &q, "list cancel tombstones")?;
    Ok(items.iter().filter_map(Tombstone::from_object).collect())
}

/// Marks a tombstone consumed; a 404 (expired and deleted) counts as done.
pub fn consume(kube: &Client, ns: &str, name: &str, how: Consumed) -> Result<(), KubeError> {
    let patch = json!({"metadata": {"annotations": {ANN_CONSUMED: how.as_str()}}});
    let op = format!("mark cancel tombstone {ns}/{name} {}", how.as_str());
    match kube.merge_patch(&format!("{}/{name}", collection(ns)), &patch, &op) {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes an expired tombstone (404 counts as done).
pub fn delete(kube: &Client, ns: &str, name: &str) -> Result<(), KubeError> {
    kube.delete(
        &format!("{}/{name}", collection(ns)),
        "Background",
        &format!("delete cancel tombstone {ns}/{name}"),
    )
}
