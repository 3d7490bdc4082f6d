//! The tracker: one thread that owns what the worker knows about its Jobs and
//! decides which callback each message is owed. It consumes Job and Pod watch
//! events and "created/adopted" notices from intake, and emits callbacks in the
//! order 0 (created) → 1 (pod running) → one terminal (2 complete, 3 failed,
//! 99 exception), each at most once per worker lifetime and never one that the
//! Job's `delivered` annotation says an earlier worker already delivered.
//!
//! `state.rs` is the state machine (`Tracker::handle` and `tick` return
//! `Action`s), `observe.rs` reads Jobs and Pods out of JSON, `board.rs` holds
//! what other threads read (`LiveJobs`, the /jobs board), and `spawn` below is
//! the thread loop that performs the actions.

mod board;
#[cfg(test)]
mod cancel_tests;
#[cfg(test)]
mod delay_tests;
mod observe;
#[cfg(test)]
mod slim_tests;
mod state;
#[cfg(test)]
mod tests;
mod timer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, select, tick};
use serde_json::json;

pub use board::{Board, JobView, Known, LiveJobs, Slot};
pub use state::{Action, Tracker, TrackerMsg};

use crate::callbacks::{Callback, CallbackMsg, JobRef};
use crate::cancel::{self, Consumed, Tombstones};
use crate::contract::{
    ANN_DELIVERED, ANN_QUEUE_NAME, ANN_START_AFTER, FINALIZER, LABEL_JOB_NAME,
    LABEL_KUEUE_QUEUE_NAME,
};
use crate::kube::Client;
use crate::kube::watch::Event;

/// Converts tracker actions' callbacks into callback-thread messages.
pub fn callback_msg(a: &Action) -> Option<CallbackMsg> {
    match a {
        Action::Callback {
            message_id,
            status,
            detail,
            url,
            job,
            uid,
        } => Some(CallbackMsg::Send(Callback {
            message_id: message_id.clone(),
            status: *status,
            detail: detail.into(),
            url: url.clone(),
            job: Some(JobRef {
                namespace: job.0.clone(),
                name: job.1.clone(),
                uid: uid.clone(),
            }),
            token: None,
            queued_at: Instant::now(),
        })),
        _ => None,
    }
}

/// What the tracker thread talks to.
pub struct Channels {
    pub rx: Receiver<TrackerMsg>,
    /// Its own inbox, for the pods a `FetchPods` lists.
    pub me: Sender<TrackerMsg>,
    pub callbacks: Sender<CallbackMsg>,
    /// Beaten once per loop iteration and per action performed.
    pub heartbeat: Arc<crate::heartbeat::Heartbeat>,
    /// The cancel tombstones (shared with intake) and their namespace.
    pub cancels: Arc<Tombstones>,
    pub tombstone_ns: String,
}

/// The tracker's tick: timeouts are checked, and `stop` is noticed, this often.
pub const TICK: Duration = Duration::from_secs(1);

/// Starts the `tracker` thread. It returns when every sender of `rx` is
/// dropped, or at its next tick (`TICK`) after `stop` is set.
pub fn spawn(
    tracker: Tracker,
    ch: Channels,
    kube: Client,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tracker".into())
        .spawn(move || run(tracker, ch, kube, stop))
}

fn run(mut t: Tracker, ch: Channels, kube: Client, stop: Arc<AtomicBool>) {
    let ticker = tick(TICK);
    loop {
        ch.heartbeat.beat();
        let actions = select! {
            recv(ch.rx) -> m => match m {
                Ok(m) => t.handle(m, Instant::now(), SystemTime::now()),
                Err(_) => return,
            },
            recv(ticker) -> _ => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                t.tick(Instant::now(), SystemTime::now())
            },
        };
        for a in actions {
            ch.heartbeat.beat();
            perform(a, &ch, &kube);
        }
    }
}

fn perform(a: Action, ch: &Channels, kube: &Client) {
    let job_path = |ns: &str, name: &str| format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}");
    match &a {
        Action::Callback { .. } => {
            if let Some(m) = callback_msg(&a) {
                let _ = ch.callbacks.send(m);
            }
        }
        Action::Release {
            namespace,
            name,
            status,
        } => {
            let ann = json!({ANN_DELIVERED: status.to_string()});
            let op = format!("release job {namespace}/{name}");
            if let Err(e) = kube.release(&job_path(namespace, name), FINALIZER, &ann, &op) {
                log::warn!("{e}");
            }
        }
        Action::DeleteJob { namespace, name } => {
            let op = format!("delete job {namespace}/{name}");
            if let Err(e) = kube.delete(&job_path(namespace, name), "Background", &op) {
                log::warn!("{e}");
            }
        }
        Action::StartJob {
            namespace,
            name,
            queue,
        } => {
            // Dropping the annotation in the same PATCH makes the start
            // happen once: a later leader sees a started Job.
            let body = match queue {
                Some(q) => json!({"metadata": {
                    "labels": {LABEL_KUEUE_QUEUE_NAME: q},
                    "annotations": {ANN_START_AFTER: null, ANN_QUEUE_NAME: null},
                }}),
                None => json!({
                    "metadata": {"annotations": {ANN_START_AFTER: null}},
                    "spec": {"suspend": false},
                }),
            };
            let op = format!("start delayed job {namespace}/{name}");
            if let Err(e) = kube.merge_patch(&job_path(namespace, name), &body, &op) {
                // Asked again after timer::START_RETRY while the Job still waits.
                log::warn!("{e}");
            }
        }
        Action::CancelJob {
            namespace,
            name,
            id,
            at,
            tombstone,
        } => {
            let path = job_path(namespace, name);
            let key = format!("{namespace}/{name}");
            // The decision first, durable on the Job (and its pods stopped).
            let op = format!("cancel job {key}");
            match kube.merge_patch(&path, &cancel::cancel_patch(at), &op) {
                Ok(_) => {}
                Err(e) if e.code() == Some(404) => return, // gone: the tracker reports it
                Err(e) => return log::warn!("{e}; retrying"),
            }
            if let Some(tb) = tombstone {
                match crate::kube::tombstone::consume(
                    kube,
                    &ch.tombstone_ns,
                    tb,
                    Consumed::Cancelled,
                ) {
                    Ok(()) => ch.cancels.mark(id, Consumed::Cancelled),
                    Err(e) => return log::warn!("{e}; retrying"),
                }
            }
            if let Err(e) = kube.delete(&path, "Background", &format!("delete job {key}")) {
                log::warn!("{e}; retrying");
            }
        }
        Action::ConsumeTombstone { id, tombstone, how } => {
            if let Err(e) = crate::kube::tombstone::consume(kube, &ch.tombstone_ns, tombstone, *how)
            {
                // The index says consumed: the next leader retries from the list.
                log::warn!("message {id}: {e}");
            }
        }
        Action::FetchPods { namespace, name } => {
            let q = format!(
                "labelSelector={}",
                crate::encode::percent_encode(&format!("{LABEL_JOB_NAME}={name}"))
            );
            match kube.list_all(
                &format!("/api/v1/namespaces/{namespace}/pods"),
                &q,
                &format!("list pods of job {namespace}/{name}"),
            ) {
                Ok((pods, _)) => {
                    for p in pods {
                        let _ = ch
                            .me
                            .send(TrackerMsg::Pods(Event::Applied(crate::kube::slim::pod(p))));
                    }
                }
                Err(e) => log::warn!("{e}"),
            }
        }
    }
}
