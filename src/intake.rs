//! Intake, the poller thread: receives messages from the queue, validates and
//! renders each, creates its Job, and settles the message only once its outcome
//! is durable — the Job exists (ack), or the message was dead-lettered with its
//! reason, or its 99 callback was settled (SQS without a dead-letter queue).
//! Transient API errors leave the message in the queue with a growing delay.
//! At MAX_CONCURRENT_JOBS live Jobs it stops receiving (back-pressure); it never
//! sleeps between receives while messages flow.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;

use crate::backoff::{Backoff, redelivery_delay as retry_delay};
use crate::callbacks::{Callback, CallbackMsg};
use crate::contract::{self, ANN_MESSAGE_ID, ErrorCode, Status};
use crate::kube::Client;
use crate::message::{self, Limits};
use crate::metrics;
use crate::payload;
use crate::queue::{Handle, Queue, QueueError, Received};
use crate::render::{self, RenderConfig};
use crate::tracker::{LiveJobs, Slot, TrackerMsg};
use crate::webhook_guard::WebhookUrl;

/// Everything intake needs; built by `worker.rs`.
pub struct Intake {
    pub queue: Box<dyn Queue>,
    pub kube: Client,
    pub limits: Limits,
    pub render: RenderConfig,
    pub policy: crate::policy::Policy,
    /// Webhook URLs the worker may call (checked again at each delivery).
    pub guard: crate::webhook_guard::WebhookGuard,
    pub tracker: Sender<TrackerMsg>,
    pub callbacks: Sender<CallbackMsg>,
    /// Tokens of 99 callbacks whose outcome is final (from the callback hooks).
    pub settled: Receiver<u64>,
    pub live: Arc<LiveJobs>,
    pub max_concurrent_jobs: usize,
    pub polling_interval: Duration,
    /// How often the leader takes back what other consumers hold (a former
    /// leader's receive that returned after it lost the Lease).
    pub sweep_interval: Duration,
    /// How long an SQS message stays hidden while its 99 callback is retried.
    pub callback_horizon: Duration,
    pub stop: Arc<AtomicBool>,
    /// Where intake reports whether the queue answers (for /readyz).
    pub health: Arc<crate::http::Health>,
    /// Beaten once per loop iteration and per message (for /healthz).
    pub heartbeat: Arc<crate::heartbeat::Heartbeat>,
}

struct Pending {
    handle: Handle,
    body: Vec<u8>,
    reason: String,
}

/// Outcome of one message.
enum Outcome {
    Ack,
    Later(Duration),
    Rejected,
}

impl Intake {
    /// Runs until `stop` is set; then returns (the caller joins).
    pub fn run(mut self) {
        let mut backoff = Backoff::new(std::process::id() as u64);
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let mut next_token: u64 = 1;
        // Take back what a previous consumer left half-done.
        while !self.stop.load(Ordering::SeqCst) {
            self.heartbeat.beat();
            match self.queue.recover() {
                Ok(n) => {
                    if n > 0 {
                        log::info!(
                            "intake: recovered {n} message(s) left in processing by a previous consumer"
                        );
                    }
                    break;
                }
                Err(e) => {
                    self.queue_error("recover", &e);
                    std::thread::sleep(backoff.next_delay());
                }
            }
        }
        backoff.reset();
        let mut last_sweep = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            self.heartbeat.beat();
            self.settle(&mut pending);
            if last_sweep.elapsed() >= self.sweep_interval {
                last_sweep = Instant::now();
                match self.queue.sweep() {
                    Ok(0) => {}
                    Ok(n) => {
                        log::info!("intake: took back {n} message(s) held by another consumer")
                    }
                    Err(e) => self.queue_error("sweep", &e),
                }
            }
            let room = self
                .live
                .wait_for_room(self.max_concurrent_jobs, Duration::from_millis(500));
            if room == 0 {
                continue; // back-pressure: at the cap, receive nothing
            }
            let max = room.min(10);
            let batch = match self.queue.receive(max, self.polling_interval) {
                Ok(b) => {
                    backoff.reset();
                    self.health.queue_reachable.store(true, Ordering::SeqCst);
                    b
                }
                Err(e) => {
                    self.health.queue_reachable.store(false, Ordering::SeqCst);
                    self.queue_error("receive", &e);
                    std::thread::sleep(backoff.next_delay());
                    continue;
                }
            };
            let mut acks = Vec::new();
            for m in batch {
                // Leadership may have ended while the receive blocked: create
                // nothing more; what is left goes back to the queue below.
                if self.stop.load(Ordering::SeqCst) {
                    break;
                }
                self.heartbeat.beat();
                metrics::inc(metrics::MESSAGES_RECEIVED, &[("queue", self.queue.kind())]);
                match self.process(&m, &mut pending, &mut next_token) {
                    Outcome::Ack => acks.push(m.handle.clone()),
                    Outcome::Later(d) => {
                        if let Err(e) = self.queue.retry_later(&m.handle, d) {
                            self.queue_error("retry_later", &e);
                        }
                    }
                    Outcome::Rejected => {}
                }
            }
            if !acks.is_empty() {
                match self.queue.ack(&acks) {
                    Ok(()) => metrics::add(
                        metrics::MESSAGES_ACKNOWLEDGED,
                        &[("queue", self.queue.kind())],
                        acks.len() as f64,
                    ),
                    // Redelivery is harmless: the Job exists and is adopted.
                    Err(e) => self.queue_error("ack", &e),
                }
            }
        }
        self.settle(&mut pending);
        match self.queue.hand_back() {
            Ok(0) => {}
            Ok(n) => log::info!("intake: handed {n} unsettled message(s) back to the queue"),
            Err(e) => self.queue_error("hand_back", &e),
        }
        log::info!(
            "intake: stopped ({} rejected message(s) still waiting for their 99 callback)",
            pending.len()
        );
    }

    fn queue_error(&self, op: &str, e: &QueueError) {
        let kind = match e {
            QueueError::Transient(_) => "transient",
            QueueError::Auth(_) => "auth",
            QueueError::Permanent(_) => "permanent",
        };
        metrics::inc(metrics::QUEUE_ERRORS, &[("op", op), ("kind", kind)]);
        match e {
            QueueError::Auth(_) => log::error!("intake: {op}: {e}"),
            _ => log::warn!("intake: {op}: {e}"),
        }
    }

    fn settle(&mut self, pending: &mut HashMap<u64, Pending>) {
        while let Ok(token) = self.settled.try_recv() {
            if let Some(p) = pending.remove(&token) {
                match self.queue.dead_letter(&p.handle, &p.body, &p.reason) {
                    Ok(()) => metrics::inc(
                        metrics::MESSAGES_ACKNOWLEDGED,
                        &[("queue", self.queue.kind())],
                    ),
                    Err(e) => self.queue_error("dead_letter", &e),
                }
            }
        }
    }

    fn process(
        &mut self,
        m: &Received,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) -> Outcome {
        let msg = match message::parse(&m.body, &self.limits) {
            Ok(msg) => msg,
            Err(rej) => {
                let text = rej.to_string();
                return self.reject(
                    m,
                    rej.code.clone(),
                    &text,
                    rej.id,
                    rej.webhook_url,
                    pending,
                    next_token,
                );
            }
        };
        if let Err(denied) = self.policy.check(&msg) {
            return self.reject(
                m,
                ErrorCode::PolicyDenied,
                &denied.to_string(),
                Some(msg.id.clone()),
                msg.webhook_url.clone(),
                pending,
                next_token,
            );
        }
        if let Some(url) = &msg.webhook_url
            && let Err(denied) = self.guard.check(url)
        {
            // Never call a refused URL, not even with the 99: dead-letter only.
            let id = Some(msg.id.clone());
            return self.reject(
                m,
                ErrorCode::PolicyDenied,
                &denied.to_string(),
                id,
                None,
                pending,
                next_token,
            );
        }
        if let Err(e) = payload::precheck(&self.kube, &msg) {
            return self.payload_refused(m, &msg, e, None, pending, next_token);
        }
        let job = render::render(&msg, &self.render);
        let ns = msg.job.namespace.clone();
        let name = job
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let key = format!("{ns}/{name}");
        let path = format!("/apis/batch/v1/namespaces/{ns}/jobs");
        match self.kube.post(&path, &job, &format!("create job {key}")) {
            Ok(created) => {
                log::info!("message {} job {key}: created", msg.id);
                metrics::inc(metrics::JOBS_CREATED, &[]);
                self.live.insert(&key, Slot::of_job(&created));
                payload::fault_exit_after_job_create();
                self.job_ready(m, &msg, created, &key, pending, next_token)
            }
            Err(e) if e.code() == Some(409) => self.adopt(m, &msg, &key, pending, next_token),
            Err(e) => {
                let code = e
                    .code()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "transport".into());
                metrics::inc(metrics::JOB_CREATE_ERRORS, &[("code", &code)]);
                if e.is_transient() {
                    let d = retry_delay(m.receive_count);
                    log::warn!(
                        "message {} job {key}: {e}; retrying in {} s",
                        msg.id,
                        d.as_secs()
                    );
                    Outcome::Later(d)
                } else {
                    let text = format!("cannot create Job {key}: {}", e.api_message());
                    self.reject_msg(
                        m,
                        ErrorCode::JobCreateFailed,
                        &text,
                        &msg,
                        pending,
                        next_token,
                    )
                }
            }
        }
    }

    /// The Job name exists: adopt it when it is this message's Job.
    fn adopt(
        &mut self,
        m: &Received,
        msg: &message::Message,
        key: &str,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) -> Outcome {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        match self.kube.get(
            &format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"),
            &format!("get job {key}"),
        ) {
            Ok(existing) => {
                let owner = existing
                    .pointer(&contract::annotation_pointer(ANN_MESSAGE_ID))
                    .and_then(Value::as_str);
                if owner == Some(msg.id.as_str()) {
                    log::info!("message {} job {key}: already exists, adopted", msg.id);
                    metrics::inc(metrics::JOBS_ADOPTED, &[]);
                    self.job_ready(m, msg, existing, key, pending, next_token)
                } else {
                    let text = format!(
                        "Job {key} already exists for another message; choose another job.prefixName or id"
                    );
                    self.reject_msg(
                        m,
                        ErrorCode::JobNameConflict,
                        &text,
                        msg,
                        pending,
                        next_token,
                    )
                }
            }
            // Deleted between our create and get: try again soon.
            Err(e) if e.code() == Some(404) || e.is_transient() => Outcome::Later(retry_delay(1)),
            Err(e) => {
                let text = format!("cannot read existing Job {key}: {}", e.api_message());
                self.reject_msg(
                    m,
                    ErrorCode::JobCreateFailed,
                    &text,
                    msg,
                    pending,
                    next_token,
                )
            }
        }
    }

    /// The message's Job exists (created or adopted): its payload Secret next,
    /// then the tracker hears of the Job and the message is acknowledged.
    fn job_ready(
        &mut self,
        m: &Received,
        msg: &message::Message,
        job: Value,
        key: &str,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) -> Outcome {
        match payload::ensure(&self.kube, msg, &self.render, &job) {
            Ok(true) => log::info!("message {} job {key}: payload Secret created", msg.id),
            Ok(false) => {}
            Err(e) => return self.payload_refused(m, msg, e, Some(key), pending, next_token),
        }
        let _ = self.tracker.send(TrackerMsg::Created {
            job,
            received_at: m.received_at,
        });
        Outcome::Ack
    }

    /// The payload Secret could not be made. Transient: the message stays
    /// (a redelivery adopts the Job and tries again). Permanent before the Job
    /// exists (`job` None): a 99 like a refused Job create. Permanent after:
    /// the Job cannot run without its input, so it is deleted (the tracker
    /// reports it, 99 JOB_DELETED, held by the finalizer until delivered) and
    /// the message is dead-lettered with the reason.
    fn payload_refused(
        &mut self,
        m: &Received,
        msg: &message::Message,
        e: payload::SecretError,
        job: Option<&str>,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) -> Outcome {
        metrics::inc(
            metrics::PAYLOAD_SECRET_ERRORS,
            &[("code", &e.metric_code())],
        );
        if e.is_transient() {
            let d = retry_delay(m.receive_count);
            log::warn!(
                "message {}: payload Secret: {e}; retrying in {} s",
                msg.id,
                d.as_secs()
            );
            return Outcome::Later(d);
        }
        let code = match e {
            payload::SecretError::Conflict { .. } => ErrorCode::JobNameConflict,
            _ => ErrorCode::JobCreateFailed,
        };
        let text = format!("cannot create the payload Secret: {e}");
        let Some(key) = job else {
            return self.reject_msg(m, code, &text, msg, pending, next_token);
        };
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        if let Err(de) = self.kube.delete(
            &format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"),
            "Background",
            &format!("delete job {key}"),
        ) {
            log::warn!("message {} job {key}: {text}; {de}; retrying", msg.id);
            return Outcome::Later(retry_delay(m.receive_count));
        }
        log::error!("message {} job {key}: {text}; Job deleted", msg.id);
        metrics::inc(metrics::MESSAGES_REJECTED, &[("reason", code.as_str())]);
        match self
            .queue
            .dead_letter(&m.handle, &m.body, &format!("{code}: {text}"))
        {
            Ok(()) => metrics::inc(
                metrics::MESSAGES_ACKNOWLEDGED,
                &[("queue", self.queue.kind())],
            ),
            Err(qe) => self.queue_error("dead_letter", &qe),
        }
        Outcome::Rejected
    }

    /// `reject` for a message that parsed (its id and webhook are known).
    fn reject_msg(
        &mut self,
        m: &Received,
        code: ErrorCode,
        text: &str,
        msg: &message::Message,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) -> Outcome {
        let (id, url) = (Some(msg.id.clone()), msg.webhook_url.clone());
        self.reject(m, code, text, id, url, pending, next_token)
    }

    /// A message that can never succeed: record it, tell its sender (99).
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        m: &Received,
        code: ErrorCode,
        text: &str,
        id: Option<String>,
        url: Option<WebhookUrl>,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) -> Outcome {
        metrics::inc(metrics::MESSAGES_REJECTED, &[("reason", code.as_str())]);
        log::warn!(
            "message {}: rejected {code}: {text}",
            id.as_deref().unwrap_or("<no id>")
        );
        let reason = format!("{code}: {text}");
        let Some(id) = id else {
            // Nobody to tell: the dead-letter record is the outcome.
            match self.queue.dead_letter(&m.handle, &m.body, &reason) {
                Ok(()) => metrics::inc(
                    metrics::MESSAGES_ACKNOWLEDGED,
                    &[("queue", self.queue.kind())],
                ),
                Err(e) => self.queue_error("dead_letter", &e),
            }
            return Outcome::Rejected;
        };
        let mut token = None;
        let _ = self.tracker.send(TrackerMsg::Rejected {
            id: id.clone(),
            code: code.clone(),
        });
        if self.queue.dead_letter_is_durable() || url.is_none() {
            match self.queue.dead_letter(&m.handle, &m.body, &reason) {
                Ok(()) => metrics::inc(
                    metrics::MESSAGES_ACKNOWLEDGED,
                    &[("queue", self.queue.kind())],
                ),
                Err(e) => self.queue_error("dead_letter", &e),
            }
        } else {
            // Keep the message hidden until its 99 callback is settled.
            if let Err(e) = self
                .queue
                .retry_later(&m.handle, self.callback_horizon + Duration::from_secs(60))
            {
                self.queue_error("retry_later", &e);
            }
            let t = *next_token;
            *next_token += 1;
            pending.insert(
                t,
                Pending {
                    handle: m.handle.clone(),
                    body: m.body.clone(),
                    reason,
                },
            );
            token = Some(t);
        }
        let _ = self.callbacks.send(CallbackMsg::Send(Callback {
            message_id: id,
            status: Status::Exception,
            detail: contract::detail::error(&code, text),
            url,
            job: None,
            token,
            queued_at: Instant::now(),
        }));
        Outcome::Rejected
    }
}
