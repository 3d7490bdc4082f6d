//! Cancel, the pure part: the tombstone that records a cancel durably in the
//! cluster (a ConfigMap in the worker's namespace, one per message id and
//! instance, with an expiry), what a job request does given its tombstone,
//! what the tracker does with a Job given the tombstone of its id, and the
//! leader's in-memory index of its tombstones. No I/O: the REST calls are in
//! `kube/tombstone.rs`, the actions in intake and the tracker.
//!
//! The flow: intake turns every cancel into a tombstone (create; 409 = a
//! repeated cancel, a no-op) and acknowledges it once it exists. The tracker
//! applies a waiting tombstone to a live Job of the id: it writes
//! `cancelled-at` on the Job (and suspends it, so its pods stop and no new one
//! starts), marks the tombstone consumed, deletes the Job, and sends 3
//! CANCELLED once the Job shows its deletionTimestamp; the finalizer is
//! released when that callback is settled. A job request that finds a waiting
//! tombstone is created already suspended and carrying `cancelled-at` (no pod
//! can ever run) and goes the same way, without status 0; one that finds a
//! consumed tombstone is a redelivery of a handled message and creates nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::contract::{
    ANN_CANCELLED_AT, ANN_CONSUMED, ANN_EXPIRES_AT, ANN_MESSAGE_ID, LABEL_INSTANCE,
    LABEL_MANAGED_BY, LABEL_TOMBSTONE, MANAGER, annotation_pointer, tombstone_name,
};

/// What a tombstone was applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumed {
    /// A live Job of the id was cancelled (or created cancelled).
    Cancelled,
    /// The id's Job had already finished: nothing changed.
    AlreadyFinished,
}

impl Consumed {
    pub fn as_str(self) -> &'static str {
        match self {
            Consumed::Cancelled => "cancelled",
            Consumed::AlreadyFinished => "already_finished",
        }
    }

    pub fn parse(s: &str) -> Option<Consumed> {
        [Consumed::Cancelled, Consumed::AlreadyFinished]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// One recorded cancel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The message id it cancels.
    pub id: String,
    /// Its ConfigMap's name (`contract::tombstone_name`).
    pub name: String,
    /// When the cancel was received (RFC 3339, seconds): the time the sender's
    /// 3 CANCELLED names.
    pub cancelled_at: String,
    pub expires_at: SystemTime,
    /// `None` while it waits for its job request.
    pub consumed: Option<Consumed>,
}

impl Tombstone {
    /// A new, waiting tombstone for a cancel received at `now`.
    pub fn new(instance: &str, id: &str, now: SystemTime, ttl: Duration) -> Tombstone {
        Tombstone {
            id: id.to_string(),
            name: tombstone_name(instance, id),
            cancelled_at: crate::clock::format_secs(now),
            expires_at: now + ttl,
            consumed: None,
        }
    }

    /// Its ConfigMap (labelled with the instance, everything in annotations;
    /// the message id is not a valid label value in general).
    pub fn to_object(&self, instance: &str, namespace: &str) -> Value {
        let mut ann = json!({
            ANN_MESSAGE_ID: self.id,
            ANN_CANCELLED_AT: self.cancelled_at,
            ANN_EXPIRES_AT: crate::clock::format_secs(self.expires_at),
        });
        if let Some(c) = self.consumed {
            ann[ANN_CONSUMED] = json!(c.as_str());
        }
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": {
                    LABEL_MANAGED_BY: MANAGER,
                    LABEL_INSTANCE: instance,
                    LABEL_TOMBSTONE: "cancel",
                },
                "annotations": ann,
            },
        })
    }

    /// Reads a tombstone ConfigMap; `None` when a required annotation is
    /// missing or unreadable (such an object is left alone).
    pub fn from_object(v: &Value) -> Option<Tombstone> {
        let ann = |k: &str| v.pointer(&annotation_pointer(k)).and_then(Value::as_str);
        let name = v.pointer("/metadata/name").and_then(Value::as_str)?;
        let cancelled_at = ann(ANN_CANCELLED_AT)?;
        crate::clock::parse_rfc3339(cancelled_at)?;
        Some(Tombstone {
            id: ann(ANN_MESSAGE_ID)?.to_string(),
            name: name.to_string(),
            cancelled_at: cancelled_at.to_string(),
            expires_at: ann(ANN_EXPIRES_AT).and_then(crate::clock::parse_rfc3339)?,
            consumed: ann(ANN_CONSUMED).and_then(Consumed::parse),
        })
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

/// The detail message of 3 CANCELLED.
pub fn reason(cancelled_at: &str) -> String {
    format!("cancelled by request at {cancelled_at}")
}

/// What a valid job request does, given the tombstone of its id (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// No cancel recorded: create its Job as usual.
    Create,
    /// Cancelled before it arrived: create its Job suspended and carrying
    /// `cancelled-at` (no pod ever runs); the tracker ends it with 3 CANCELLED.
    CreateCancelled { at: String },
    /// Its tombstone was consumed (a redelivery of a message already
    /// cancelled or finished): create nothing, acknowledge.
    AlreadyHandled,
}

pub fn admit(t: Option<&Tombstone>) -> Admit {
    match t {
        None => Admit::Create,
        Some(Tombstone { consumed: None, .. }) => Admit::CreateCancelled {
            at: t.map(|t| t.cancelled_at.clone()).unwrap_or_default(),
        },
        Some(_) => Admit::AlreadyHandled,
    }
}

/// What the tracker does with a Job, given the tombstone of its id (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForJob {
    /// No waiting tombstone, or the Job already carries `cancelled-at`.
    Nothing,
    /// Cancel the live Job: the time to write and report.
    Cancel { at: String },
    /// The Job had finished before the cancel: consume the tombstone only.
    AlreadyFinished,
}

/// `finished`: the Job's terminal status is owed or sent (a terminal
/// condition seen, or the stage is done); `cancelled`: it carries
/// `cancelled-at` already.
pub fn for_job(finished: bool, cancelled: bool, t: Option<&Tombstone>) -> ForJob {
    match t {
        Some(t) if t.consumed.is_none() && !cancelled => {
            if finished {
                ForJob::AlreadyFinished
            } else {
                ForJob::Cancel {
                    at: t.cancelled_at.clone(),
                }
            }
        }
        _ => ForJob::Nothing,
    }
}

/// The Job of a request cancelled before it arrived: suspended, carrying
/// `cancelled-at`, and out of Kueue's and the start timer's hands (no queue
/// labels, no start-after), so nothing ever unsuspends it.
pub fn cancelled_job(mut job: Value, at: &str) -> Value {
    if let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("suspend".into(), Value::Bool(true));
    }
    if let Some(meta) = job.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(crate::contract::LABEL_KUEUE_QUEUE_NAME);
            labels.remove(crate::contract::LABEL_KUEUE_PRIORITY_CLASS);
        }
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(ann) = ann {
            // Never started: no delayed start, no hand-off to Kueue.
            ann.remove(crate::contract::ANN_START_AFTER);
            ann.remove(crate::contract::ANN_QUEUE_NAME);
            ann.insert(ANN_CANCELLED_AT.into(), Value::String(at.to_string()));
        }
    }
    job
}

/// The merge patch that cancels a live Job: the durable decision and the
/// suspension (its pods are stopped by the Job controller) in one write.
pub fn cancel_patch(at: &str) -> Value {
    json!({"metadata": {"annotations": {ANN_CANCELLED_AT: at}}, "spec": {"suspend": true}})
}

/// The leader's tombstones by message id: listed when it starts leading and
/// kept current by its own writes (only the leader handles messages). Shared
/// by intake (writes new ones, reads at each job request, expires old ones)
/// and the tracker (marks them consumed).
#[derive(Debug, Default)]
pub struct Tombstones {
    by_id: Mutex<HashMap<String, Tombstone>>,
}

impl Tombstones {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tombstone>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the index with a fresh list.
    pub fn replace_all(&self, list: Vec<Tombstone>) {
        let mut m = self.lock();
        m.clear();
        for t in list {
            m.insert(t.id.clone(), t);
        }
    }

    pub fn get(&self, id: &str) -> Option<Tombstone> {
        self.lock().get(id).cloned()
    }

    /// Whether any tombstone is waiting (the tracker skips lookups otherwise).
    pub fn any_waiting(&self) -> bool {
        self.lock().values().any(|t| t.consumed.is_none())
    }

    pub fn insert(&self, t: Tombstone) {
        self.lock().insert(t.id.clone(), t);
    }

    pub fn mark(&self, id: &str, how: Consumed) {
        if let Some(t) = self.lock().get_mut(id) {
            t.consumed = Some(how);
        }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The tombstones past their expiry at `now`.
    pub fn expired(&self, now: SystemTime) -> Vec<Tombstone> {
        self.lock()
            .values()
            .filter(|t| t.is_expired(now))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn tomb(consumed: Option<Consumed>) -> Tombstone {
        Tombstone {
            consumed,
            ..Tombstone::new("i", "m1", at(1_700_000_000), Duration::from_secs(86_400))
        }
    }

    #[test]
    fn a_job_request_given_its_tombstone() {
        let at_text = tomb(None).cancelled_at;
        for (t, want) in [
            (None, Admit::Create),
            (
                Some(tomb(None)),
                Admit::CreateCancelled {
                    at: at_text.clone(),
                },
            ),
            (Some(tomb(Some(Consumed::Cancelled))), Admit::AlreadyHandled),
            (
                Some(tomb(Some(Consumed::AlreadyFinished))),
                Admit::AlreadyHandled,
            ),
        ] {
            assert_eq!(admit(t.as_ref()), want, "{t:?}");
        }
    }

    #[test]
    fn a_job_given_the_tombstone_of_its_id() {
        let waiting = tomb(None);
        let at_text = waiting.cancelled_at.clone();
        let done = tomb(Some(Consumed::Cancelled));
        // (finished, already carries cancelled-at, tombstone) → decision
        for (finished, cancelled, t, want) in [
            (false, false, None, ForJob::Nothing),
            (
                false,
                false,
                Some(&waiting),
                ForJob::Cancel {
                    at: at_text.clone(),
                },
            ),
            (true, false, Some(&waiting), ForJob::AlreadyFinished),
            // Created cancelled (or cancelled by an earlier leader): its own path.
            (false, true, Some(&waiting), ForJob::Nothing),
            (true, true, Some(&waiting), ForJob::Nothing),
            // A consumed tombstone never acts again.
            (false, false, Some(&done), ForJob::Nothing),
            (true, false, Some(&done), ForJob::Nothing),
        ] {
            assert_eq!(
                for_job(finished, cancelled, t),
                want,
                "finished {finished}, cancelled {cancelled}, {t:?}"
            );
        }
    }

    #[test]
    fn tombstones_round_trip_their_configmap_and_expire() {
        for consumed in [
            None,
            Some(Consumed::Cancelled),
            Some(Consumed::AlreadyFinished),
        ] {
            let t = tomb(consumed);
            let obj = t.to_object("i", "ns");
            assert_eq!(obj["metadata"]["labels"][LABEL_TOMBSTONE], "cancel");
            assert_eq!(obj["metadata"]["labels"][LABEL_INSTANCE], "i");
            assert_eq!(Tombstone::from_object(&obj), Some(t.clone()));
        }
        let t = tomb(None);
        assert_eq!(t.cancelled_at, "2023-11-14T22:13:20Z");
        assert!(!t.is_expired(at(1_700_000_000 + 86_399)));
        assert!(t.is_expired(at(1_700_000_000 + 86_400)));
        // Unreadable objects are left alone, never a panic.
        let mut bad = t.to_object("i", "ns");
        bad["metadata"]["annotations"][ANN_EXPIRES_AT] = json!("soon");
        assert_eq!(Tombstone::from_object(&bad), None);
        for v in [json!(null), json!({}), json!({"metadata": {"name": 1}})] {
            assert_eq!(Tombstone::from_object(&v), None);
        }
        // An unknown consumed value reads as waiting.
        let mut odd = t.to_object("i", "ns");
        odd["metadata"]["annotations"][ANN_CONSUMED] = json!("maybe");
        assert_eq!(Tombstone::from_object(&odd).map(|t| t.consumed), Some(None));
    }

    #[test]
    fn the_index_tracks_writes_and_expiry() {
        let idx = Tombstones::default();
        assert!(idx.is_empty() && !idx.any_waiting());
        idx.insert(tomb(None));
        assert!(idx.any_waiting());
        idx.mark("m1", Consumed::Cancelled);
        assert!(!idx.any_waiting());
        assert_eq!(
            idx.get("m1").and_then(|t| t.consumed),
            Some(Consumed::Cancelled)
        );
        assert!(idx.expired(at(1_700_000_000)).is_empty());
        assert_eq!(idx.expired(at(1_800_000_000)).len(), 1);
        idx.remove("m1");
        assert!(idx.get("m1").is_none());
        idx.replace_all(vec![tomb(None)]);
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn a_request_cancelled_early_renders_a_job_nothing_can_start() {
        let job = json!({
            "metadata": {"name": "j", "labels": {crate::contract::LABEL_KUEUE_QUEUE_NAME: "q", "app": "a"},
                         "annotations": {"k8s-job-worker.io/start-after": "x"}},
            "spec": {"template": {}},
        });
        let j = cancelled_job(job, "2023-11-14T22:13:20Z");
        assert_eq!(j["spec"]["suspend"], true);
        assert_eq!(
            j["metadata"]["annotations"][ANN_CANCELLED_AT],
            "2023-11-14T22:13:20Z"
        );
        assert!(
            j["metadata"]["annotations"]
                .get("k8s-job-worker.io/start-after")
                .is_none()
        );
        assert!(
            j["metadata"]["labels"]
                .get(crate::contract::LABEL_KUEUE_QUEUE_NAME)
                .is_none()
        );
        assert_eq!(j["metadata"]["labels"]["app"], "a");
        // Without annotations it gains them.
        let j = cancelled_job(json!({"metadata": {}, "spec": {}}), "t");
        assert_eq!(j["metadata"]["annotations"][ANN_CANCELLED_AT], "t");
        assert_eq!(reason("t"), "cancelled by request at t");
        assert_eq!(cancel_patch("t")["spec"]["suspend"], true);
    }
}
