//! The creator pool: CREATE_CONCURRENCY threads named `create-N` that take
//! rendered Jobs from intake, create them over the shared `kube::Client`
//! (whose agent keeps one connection per creator alive), and report each
//! message's verdict back on a typed channel. Intake alone touches the queue:
//! creators never ack, retry or dead-letter, they only say what should happen.
//!
//! A creator checks the stop flag before each create: once leadership ends it
//! creates nothing more and reports the rest `Skipped`, which intake leaves in
//! the queue for `hand_back`. Each task carries a slot reserved in `LiveJobs`
//! (admitted, or queued for a Kueue Job); the creator commits it to the Job's
//! key when the Job exists (created or adopted) and releases it otherwise, so
//! MAX_CONCURRENT_JOBS and MAX_QUEUED_JOBS hold while creates run in parallel.
//! A message with a payload gets its Secret right after its Job exists, before
//! the verdict: it is acknowledged only when both exist.
//!
//! Each task also holds a slot of its message's service (SERVICE_MAX_CONCURRENT),
//! committed or released with the other. With JOB_CREATE_RATE a creator takes
//! a token of the shared bucket before each create and sleeps until it is
//! due (checking the stop flag); intake then holds at most two seconds' worth
//! of creates, so throttled messages wait in the queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use serde_json::Value;

use crate::backoff::redelivery_delay;
use crate::contract::{self, ANN_MESSAGE_ID, ErrorCode};
use crate::kube::Client;
use crate::message::Message;
use crate::metrics;
use crate::payload;
use crate::queue::Received;
use crate::rate::TokenBucket;
use crate::render::RenderConfig;
use crate::tracker::{LiveJobs, Slot, TrackerMsg};
use crate::webhook_guard::WebhookUrl;

/// One validated, rendered message whose Job is to be created; it holds one
/// reserved `LiveJobs` slot.
pub(super) struct Task {
    pub m: Received,
    pub id: String,
    pub url: Option<WebhookUrl>,
    pub job: Value,
    pub ns: String,
    pub name: String,
    /// The `LiveJobs` slot reserved for it.
    pub slot: Slot,
    /// Its Job is live or ended under this leader (`Known`, a redelivery): it
    /// is adopted if it still exists, never created again.
    pub adopt_only: bool,
    /// The validated message (its payload, for the Secret).
    pub msg: Message,
}

/// What intake should do with the message of a finished task.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// The Job exists (created or adopted): acknowledge.
    Ack,
    /// Transient failure: keep the message, receive it again after the delay.
    Later(Duration),
    /// It can never succeed: reject with a 99.
    Reject { code: ErrorCode, text: String },
    /// Its Job existed but could never run (its payload Secret was refused
    /// for good) and was deleted: dead-letter with the reason (the tracker
    /// reports the deletion).
    Deleted { code: ErrorCode, text: String },
    /// Not attempted: leadership ended first. The message stays where it is.
    Skipped,
}

/// A task's result, back to intake.
pub(super) struct Done {
    pub m: Received,
    pub id: String,
    pub url: Option<WebhookUrl>,
    pub verdict: Verdict,
}

/// The next step after a create answered (pure).
#[derive(Debug, PartialEq)]
pub(super) enum AfterCreate {
    /// 409: the name exists; adopt it if it is this message's Job.
    Adopt,
    Later(Duration),
    Reject,
}

/// Decides from a create's error what comes next: 409 adopts; 429, 5xx and
/// transport errors keep the message for the server's Retry-After (when it
/// gave one) or the growing redelivery delay; anything else rejects.
pub(super) fn after_create_error(
    code: Option<u16>,
    transient: bool,
    retry_after: Option<Duration>,
    receive_count: u32,
) -> AfterCreate {
    if code == Some(409) {
        return AfterCreate::Adopt;
    }
    if transient {
        let d = match retry_after {
            Some(d) if !d.is_zero() => d.min(Duration::from_secs(300)),
            _ => redelivery_delay(receive_count),
        };
        return AfterCreate::Later(d);
    }
    AfterCreate::Reject
}

/// Decides from the existing Job's message-id annotation whether a 409 is
/// this message's own Job (pure).
pub(super) fn adopt_verdict(owner: Option<&str>, id: &str, key: &str) -> Verdict {
    if owner == Some(id) {
        Verdict::Ack
    } else {
        Verdict::Reject {
            code: ErrorCode::JobNameConflict,
            text: format!(
                "Job {key} already exists for another message; choose another job.prefixName or id"
            ),
        }
    }
}

/// What each creator thread shares.
#[derive(Clone)]
pub(super) struct Shared {
    pub kube: Client,
    pub render: Arc<RenderConfig>,
    pub tracker: Sender<TrackerMsg>,
    pub live: Arc<LiveJobs>,
    pub stop: Arc<AtomicBool>,
    /// JOB_CREATE_RATE's bucket, shared by the creators (None: unlimited).
    pub rate: Option<Arc<Mutex<TokenBucket>>>,
}

impl Shared {
    /// Waits for a create token (at once without JOB_CREATE_RATE); false when
    /// leadership ended meanwhile.
    fn throttle(&self) -> bool {
        let Some(bucket) = &self.rate else {
            return true;
        };
        let wait = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve(Instant::now());
        let until = Instant::now() + wait;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// The running pool; `close` stops it.
pub(super) struct Creators {
    tx: Option<Sender<Box<Task>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Creators {
    /// Starts `n` (at least 1) threads `create-1` … `create-n`. Fails only when
    /// not one thread could be started.
    pub(super) fn spawn(n: usize, shared: Shared, results: Sender<Done>) -> std::io::Result<Self> {
        let (tx, rx) = unbounded::<Box<Task>>();
        let mut handles = Vec::new();
        for i in 1..=n.max(1) {
            let (rx, shared, results) = (rx.clone(), shared.clone(), results.clone());
            match std::thread::Builder::new()
                .name(format!("create-{i}"))
                .spawn(move || creator_loop(rx, shared, results))
            {
                Ok(h) => handles.push(h),
                Err(e) if handles.is_empty() => return Err(e),
                Err(e) => {
                    log::warn!("intake: started {} creator thread(s) of {n}: {e}", i - 1);
                    break;
                }
            }
        }
        Ok(Creators {
            tx: Some(tx),
            handles,
        })
    }

    /// Hands a task to the next free creator; gives it back if the pool is gone.
    pub(super) fn submit(&self, task: Box<Task>) -> Result<(), Box<Task>> {
        match &self.tx {
            Some(tx) => tx.send(task).map_err(|e| e.0),
            None => Err(task),
        }
    }

    /// Lets the creators finish what they hold (skipping it once `stop` is
    /// set) and joins them.
    pub(super) fn close(mut self) {
        self.tx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn creator_loop(rx: Receiver<Box<Task>>, shared: Shared, results: Sender<Done>) {
    for task in rx {
        let verdict = if shared.stop.load(Ordering::SeqCst) || !shared.throttle() {
            shared.live.release(task.slot);
            shared.live.release_service(&task.msg.service);
            Verdict::Skipped
        } else {
            create(&shared, &task)
        };
        let Task { m, id, url, .. } = *task;
        let done = Done {
            m,
            id,
            url,
            verdict,
        };
        if results.send(done).is_err() {
            break;
        }
    }
}

/// Creates the task's Job (or adopts it on 409), commits or releases its slot,
/// and tells the tracker about a Job that exists.
fn create(s: &Shared, t: &Task) -> Verdict {
    let key = format!("{}/{}", t.ns, t.name);
    let existing = if t.adopt_only {
        adopt(s, t, &key)
    } else {
        post(s, t, &key)
    };
    match existing {
        Ok(job) => {
            s.live.commit(&key, t.slot, Slot::of_job(&job));
            s.live.commit_service(&key, &t.msg.service);
            job_ready(s, t, &key, job)
        }
        Err(v) => {
            s.live.release(t.slot);
            s.live.release_service(&t.msg.service);
            v
        }
    }
}

/// POSTs the task's Job: the created Job, or on 409 this message's existing
/// one (adopted), or what intake should do with the message.
fn post(s: &Shared, t: &Task, key: &str) -> Result<Value, Verdict> {
    let path = format!("/apis/batch/v1/namespaces/{}/jobs", t.ns);
    let result = s.kube.post(&path, &t.job, &format!("create job {key}"));
    match result {
        Ok(created) => {
            log::info!("message {} job {key}: created", t.id);
            metrics::inc(metrics::JOBS_CREATED, &[]);
            payload::fault_exit_after_job_create();
            Ok(created)
        }
        Err(e) => {
            let code = e
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "transport".into());
            if e.code() != Some(409) {
                metrics::inc(metrics::JOB_CREATE_ERRORS, &[("code", &code)]);
            }
            match after_create_error(
                e.code(),
                e.is_transient(),
                e.retry_after(),
                t.m.receive_count,
            ) {
                AfterCreate::Adopt => adopt(s, t, key),
                AfterCreate::Later(d) => {
                    log::warn!(
                        "message {} job {key}: {e}; retrying in {} s",
                        t.id,
                        d.as_secs()
                    );
                    Err(Verdict::Later(d))
                }
                AfterCreate::Reject => Err(Verdict::Reject {
                    code: ErrorCode::JobCreateFailed,
                    text: format!("cannot create Job {key}: {}", e.api_message()),
                }),
            }
        }
    }
}

/// The message's Job exists (created or adopted): its payload Secret next,
/// then the tracker hears of the Job and the message is acknowledged.
/// Transient Secret errors keep the message (a redelivery adopts the Job and
/// tries again); a permanent one deletes the Job, which cannot run without its
/// input.
fn job_ready(s: &Shared, t: &Task, key: &str, job: Value) -> Verdict {
    match payload::ensure(&s.kube, &t.msg, &s.render, &job) {
        Ok(true) => log::info!("message {} job {key}: payload Secret created", t.id),
        Ok(false) => {}
        Err(e) => {
            metrics::inc(
                metrics::PAYLOAD_SECRET_ERRORS,
                &[("code", &e.metric_code())],
            );
            if e.is_transient() {
                let d = redelivery_delay(t.m.receive_count);
                log::warn!(
                    "message {}: payload Secret: {e}; retrying in {} s",
                    t.id,
                    d.as_secs()
                );
                return Verdict::Later(d);
            }
            let code = match e {
                payload::SecretError::Conflict { .. } => ErrorCode::JobNameConflict,
                _ => ErrorCode::JobCreateFailed,
            };
            let text = format!("cannot create the payload Secret: {e}");
            if let Err(de) = s.kube.delete(
                &format!("/apis/batch/v1/namespaces/{}/jobs/{}", t.ns, t.name),
                "Background",
                &format!("delete job {key}"),
            ) {
                log::warn!("message {} job {key}: {text}; {de}; retrying", t.id);
                return Verdict::Later(redelivery_delay(t.m.receive_count));
            }
            log::error!("message {} job {key}: {text}; Job deleted", t.id);
            return Verdict::Deleted { code, text };
        }
    }
    let _ = s.tracker.send(TrackerMsg::Created {
        job: crate::kube::slim::job(job),
        received_at: t.m.received_at,
    });
    Verdict::Ack
}

/// The Job name exists: this message's Job (returned) or another's (a verdict).
fn adopt(s: &Shared, t: &Task, key: &str) -> Result<Value, Verdict> {
    match s.kube.get(
        &format!("/apis/batch/v1/namespaces/{}/jobs/{}", t.ns, t.name),
        &format!("get job {key}"),
    ) {
        Ok(existing) => {
            let owner = existing
                .pointer(&contract::annotation_pointer(ANN_MESSAGE_ID))
                .and_then(Value::as_str);
            let deleting = existing
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null());
            match adopt_verdict(owner, &t.id, key) {
                // Being deleted (held by the result finalizer), and this
                // leader saw it live: it ends; nothing to adopt.
                Verdict::Ack if t.adopt_only && deleting => Err(already_ended(t, key)),
                Verdict::Ack => {
                    log::info!("message {} job {key}: already exists, adopted", t.id);
                    metrics::inc(metrics::JOBS_ADOPTED, &[]);
                    Ok(existing)
                }
                other => Err(other),
            }
        }
        // Gone, and this leader saw it (it ended, or it was deleted since
        // intake looked): its terminal status is out; nothing is made again.
        Err(e) if e.code() == Some(404) && t.adopt_only => Err(already_ended(t, key)),
        // Deleted between our create and get: try again soon.
        Err(e) if e.code() == Some(404) || e.is_transient() => {
            Err(Verdict::Later(redelivery_delay(1)))
        }
        Err(e) => Err(Verdict::Reject {
            code: ErrorCode::JobCreateFailed,
            text: format!("cannot read existing Job {key}: {}", e.api_message()),
        }),
    }
}

/// A redelivery (`Task::adopt_only`) whose Job is gone or going: its terminal
/// status is this leader's to report (or reported), so the message is
/// acknowledged and nothing is made again.
fn already_ended(t: &Task, key: &str) -> Verdict {
    log::info!(
        "message {} job {key}: redelivered after its Job ended; acknowledged, no new Job",
        t.id
    );
    metrics::inc(metrics::MESSAGES_ALREADY_ENDED, &[]);
    Verdict::Ack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_errors_decide_adopt_retry_or_reject() {
        assert_eq!(
            after_create_error(Some(409), false, None, 1),
            AfterCreate::Adopt
        );
        // 429 with Retry-After: wait what the server asked.
        assert_eq!(
            after_create_error(Some(429), true, Some(Duration::from_secs(2)), 1),
            AfterCreate::Later(Duration::from_secs(2))
        );
        // 5xx without it: the growing redelivery delay.
        assert_eq!(
            after_create_error(Some(503), true, None, 3),
            AfterCreate::Later(redelivery_delay(3))
        );
        assert_eq!(
            after_create_error(None, true, None, 1),
            AfterCreate::Later(redelivery_delay(1))
        );
        // An absurd Retry-After is capped.
        assert_eq!(
            after_create_error(Some(429), true, Some(Duration::from_secs(86_400)), 1),
            AfterCreate::Later(Duration::from_secs(300))
        );
        assert_eq!(
            after_create_error(Some(422), false, None, 1),
            AfterCreate::Reject
        );
        assert_eq!(
            after_create_error(Some(403), false, None, 1),
            AfterCreate::Reject
        );
    }

    #[test]
    fn a_409_is_adopted_only_for_the_same_message() {
        assert_eq!(adopt_verdict(Some("m1"), "m1", "ns/j"), Verdict::Ack);
        for owner in [Some("m2"), None] {
            match adopt_verdict(owner, "m1", "ns/j") {
                Verdict::Reject { code, text } => {
                    assert_eq!(code, ErrorCode::JobNameConflict);
                    assert!(text.contains("ns/j"), "{text}");
                }
                v => panic!("{v:?}"),
            }
        }
    }
}
