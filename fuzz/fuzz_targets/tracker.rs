//! Fuzz target `tracker`: arbitrary bytes as a script of what the API server
//! and intake tell the tracker: a JSON array of one-key objects,
//! `{"created": job}`, `{"jobs"|"pods": {"applied"|"deleted": object}}`,
//! `{"jobs"|"pods": {"restarted": [objects]}}`, the same events of one
//! namespace's watch as `{"nsjobs": {"ns": "<namespace>", "applied": object}}`
//! (or "deleted", "restarted"), `{"rejected": "id"}`,
//! `{"cancel": "id"}` (a waiting cancel tombstone for the id, then the cancel
//! notice), `{"consume": "id"}` (its tombstone marked consumed, as the
//! tracker's thread does once its write landed) and `{"tick": seconds}`, each
//! a second after the last. The Job and Pod objects
//! come from outside the process, so `Tracker::handle` and `tick` must never
//! panic, and per Job (namespace, name, uid) the callbacks keep their order:
//! 0 → 1 → terminal, each at most once, nothing after the terminal one.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_job_worker::cancel::{Consumed, Tombstone, Tombstones};
use k8s_job_worker::kube::watch::Event;
use k8s_job_worker::tracker::{Action, Board, LiveJobs, Tracker, TrackerMsg, callback_msg};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn rank(status: u8) -> u8 {
    match status {
        0 => 0,
        1 => 1,
        _ => 2,
    }
}

/// The Job objects a step carries.
fn jobs_in<'a>(kind: &str, v: &'a Value) -> Vec<&'a Value> {
    match (kind, v.as_object().and_then(|m| m.iter().next())) {
        ("created", _) => vec![v],
        ("jobs", Some((_, Value::Array(list)))) => list.iter().collect(),
        ("jobs", Some((_, obj))) => vec![obj],
        ("nsjobs", _) => match scoped(v).map(|(_, e)| e) {
            Some((_, Value::Array(list))) => list.iter().collect(),
            Some((_, obj)) => vec![obj],
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// A namespaced step's namespace and its (first) event entry.
fn scoped(v: &Value) -> Option<(String, (&String, &Value))> {
    let m = v.as_object()?;
    let ns = m.get("ns")?.as_str()?.to_string();
    Some((ns, m.iter().find(|(k, _)| k.as_str() != "ns")?))
}

fn event(v: &Value) -> Option<Event> {
    let (kind, obj) = v.as_object()?.iter().next()?;
    event_of(kind, obj)
}

fn event_of(kind: &str, obj: &Value) -> Option<Event> {
    Some(match kind {
        "applied" => Event::Applied(obj.clone()),
        "deleted" => Event::Deleted(obj.clone()),
        "restarted" => Event::Restarted(obj.as_array()?.clone()),
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Array(steps)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let cancels = Arc::new(Tombstones::default());
    let mut t = Tracker::new(
        Arc::new(LiveJobs::default()),
        Board::default(),
        Duration::from_secs(60),
    )
    .with_cancels(cancels.clone());
    let start = Instant::now();
    let wall0 = UNIX_EPOCH + Duration::from_secs(1_795_503_600);
    // Per Job (namespace, name, uid): the ranks sent so far. A new uid under a
    // name is a new Job (the old one was deleted and created again).
    let mut sent: HashMap<(String, String, String), Vec<u8>> = HashMap::new();
    let mut uid_of: HashMap<(String, String), String> = HashMap::new();
    let mut secs = 0u64;
    for step in steps.iter().take(64) {
        let Some((kind, v)) = step.as_object().and_then(|m| m.iter().next()) else {
            continue;
        };
        // The API server always sets a uid: Job objects without one (which
        // the tracker could not tell apart) are not sent.
        if jobs_in(kind, v)
            .iter()
            .any(|j| j.pointer("/metadata/uid").and_then(Value::as_str).is_none())
        {
            continue;
        }
        secs += 1;
        for j in jobs_in(kind, v) {
            let field = |p: &str| j.pointer(p).and_then(Value::as_str);
            if let (Some(ns), Some(name), Some(uid)) = (
                field("/metadata/namespace"),
                field("/metadata/name"),
                field("/metadata/uid"),
            ) {
                uid_of.insert((ns.into(), name.into()), uid.into());
            }
        }
        let now = start + Duration::from_secs(secs);
        let wall: SystemTime = wall0 + Duration::from_secs(secs);
        let actions = match kind.as_str() {
            "created" => t.handle(
                TrackerMsg::Created {
                    job: v.clone(),
                    received_at: now,
                },
                now,
                wall,
            ),
            "jobs" | "pods" => {
                let Some(e) = event(v) else { continue };
                let msg = if kind == "jobs" {
                    TrackerMsg::Jobs(e)
                } else {
                    TrackerMsg::Pods(e)
                };
                t.handle(msg, now, wall)
            }
            "nsjobs" => {
                let Some((ns, (k, obj))) = scoped(v) else {
                    continue;
                };
                let Some(e) = event_of(k, obj) else { continue };
                t.handle(TrackerMsg::NamespaceJobs(ns, e), now, wall)
            }
            "rejected" => t.handle(
                TrackerMsg::Rejected {
                    id: v.as_str().unwrap_or_default().to_string(),
                    code: k8s_job_worker::contract::ErrorCode::InvalidMessage,
                },
                now,
                wall,
            ),
            "cancel" => {
                let id = v.as_str().unwrap_or_default().to_string();
                cancels.insert(Tombstone::new("fuzz", &id, wall, Duration::from_secs(86_400)));
                t.handle(TrackerMsg::Cancel { id, fresh: true }, now, wall)
            }
            "consume" => {
                cancels.mark(v.as_str().unwrap_or_default(), Consumed::Cancelled);
                continue;
            }
            "tick" => {
                secs += v.as_u64().unwrap_or(0).min(86_400);
                let now = start + Duration::from_secs(secs);
                t.tick(now, wall0 + Duration::from_secs(secs))
            }
            _ => continue,
        };
        for a in &actions {
            let _ = callback_msg(a);
            if let Action::Callback {
                status, job, uid, ..
            } = a
            {
                // The Job the callback is about, by the uid the tracker gives
                // (a newer Job may have taken the name in the same step).
                let uid = if uid.is_empty() {
                    uid_of.get(job).cloned().unwrap_or_default()
                } else {
                    uid.clone()
                };
                let ranks = sent.entry((job.0.clone(), job.1.clone(), uid)).or_default();
                let r = rank(status.code());
                assert!(
                    ranks.last().is_none_or(|&last| last < r),
                    "Job {job:?}: status {status} after ranks {ranks:?}"
                );
                ranks.push(r);
            }
        }
    }
});
