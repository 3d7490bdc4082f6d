//! Intake, the poller thread: receives messages from the queue, validates and
//! renders each, hands its Job to the creator pool (`create.rs`), and settles
//! the message only once its outcome is durable — the Job exists (ack), or the
//! message was dead-lettered with its reason, or its 99 callback was settled
//! (SQS without a dead-letter queue). Transient API errors leave the message in
//! the queue with a growing delay (or the server's Retry-After). Intake alone
//! owns the queue client: creators report verdicts back over a channel. At
//! MAX_CONCURRENT_JOBS (live Jobs plus creates in progress) it stops receiving
//! (back-pressure); it never sleeps between receives while messages flow.
//! A message whose service is at its SERVICE_MAX_CONCURRENT cap is deferred
//! (`Queue::defer`, 1, 2, 4 … 60 s by attempt) while other services flow.

mod create;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use serde_json::Value;

use crate::backoff::{Backoff, redelivery_delay};
use crate::callbacks::{Callback, CallbackMsg};
use crate::cancel::{self, Admit, Tombstone, Tombstones};
use crate::caps::{self, ServiceCaps};
use crate::contract::{self, ErrorCode, Status};
use crate::kube::Client;
use crate::message::{self, Limits};
use crate::metrics;
use crate::payload;
use crate::queue::{Handle, Queue, QueueError, Received};
use crate::render::{self, RenderConfig};
use crate::tracker::{Known, LiveJobs, Slot, TrackerMsg};
use crate::webhook_guard::WebhookUrl;

use create::{Creators, Done, Shared, Task, Verdict};

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
    /// SERVICE_MAX_CONCURRENT (empty: no per-service cap).
    pub service_caps: ServiceCaps,
    /// JOB_CREATE_RATE, Jobs per second (None: unlimited).
    pub job_create_rate: Option<f64>,
    /// Creator threads (CREATE_CONCURRENCY).
    pub create_concurrency: usize,
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
    /// The leader's cancel tombstones (shared with the tracker), the
    /// namespace they live in (POD_NAMESPACE) and CANCEL_TOMBSTONE_TTL.
    pub tombstones: Arc<Tombstones>,
    pub tombstone_ns: String,
    pub tombstone_ttl: Duration,
}

struct Pending {
    handle: Handle,
    body: Vec<u8>,
    reason: String,
}

/// What intake makes of one received message before any create.
enum Prepared {
    /// Valid: its Job is rendered and goes to a creator.
    Create(Box<Task>),
    /// Rejected (dead-lettered or waiting for its 99).
    Rejected,
    /// Handled without a create (a cancel, or a request cancelled before).
    Handled,
}

/// How many messages intake may take from the queue now (pure): no more than
/// the free room under MAX_CONCURRENT_JOBS, the queue's batch size, and what
/// the creators can take before `max_in_flight` tasks are waiting or running.
fn receive_budget(room: usize, batch: usize, in_flight: usize, max_in_flight: usize) -> usize {
    room.min(batch).min(max_in_flight.saturating_sub(in_flight))
}

/// The most tasks waiting or running (pure): enough to keep every creator
/// busy while the next batch is received; with JOB_CREATE_RATE no more than
/// two seconds' worth of creates (at least 1), so throttled messages wait in
/// the queue, not in intake (an SQS message would outlive its visibility).
fn max_in_flight(create_concurrency: usize, batch: usize, rate: Option<f64>) -> usize {
    let base = 2 * create_concurrency.max(1) + batch;
    match rate {
        Some(r) if r.is_finite() && r > 0.0 => base.min(((r * 2.0).ceil() as usize).max(1)),
        _ => base,
    }
}

/// How long one receive may block (pure): POLLING_INTERVAL at idle; while
/// creates are in progress only briefly, so their acks are not held back.
fn receive_wait(polling: Duration, in_flight: usize) -> Duration {
    if in_flight == 0 {
        polling
    } else {
        polling.min(Duration::from_millis(20))
    }
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
        // The cancel tombstones, before the first job request is read.
        while !self.stop.load(Ordering::SeqCst) {
            self.heartbeat.beat();
            match crate::kube::tombstone::list(
                &self.kube,
                &self.tombstone_ns,
                &self.render.instance,
            ) {
                Ok(list) => {
                    let waiting: Vec<String> = list
                        .iter()
                        .filter(|t| t.consumed.is_none())
                        .map(|t| t.id.clone())
                        .collect();
                    if !list.is_empty() {
                        log::info!(
                            "intake: {} cancel tombstone(s), {} waiting for their job",
                            list.len(),
                            waiting.len()
                        );
                    }
                    self.tombstones.replace_all(list);
                    for id in waiting {
                        let _ = self.tracker.send(TrackerMsg::Cancel { id, fresh: false });
                    }
                    break;
                }
                Err(e) if e.is_transient() => {
                    log::warn!("intake: {e}");
                    std::thread::sleep(backoff.next_delay());
                }
                // Refused for good (RBAC without ConfigMaps, e.g. mid-upgrade):
                // job requests keep flowing; each cancel reports its own error.
                Err(e) => {
                    log::error!(
                        "intake: {e}; cancels recorded before their job request are not applied"
                    );
                    break;
                }
            }
        }
        backoff.reset();
        let (done_tx, done_rx) = unbounded::<Done>();
        let shared = Shared {
            kube: self.kube.clone(),
            render: Arc::new(self.render.clone()),
            tracker: self.tracker.clone(),
            live: self.live.clone(),
            stop: self.stop.clone(),
            rate: self.job_create_rate.map(|r| {
                Arc::new(std::sync::Mutex::new(crate::rate::TokenBucket::new(
                    r,
                    Instant::now(),
                )))
            }),
        };
        let creators = match Creators::spawn(self.create_concurrency, shared, done_tx) {
            Ok(c) => c,
            Err(e) => {
                log::error!("intake: cannot start a creator thread: {e}");
                self.finish(&done_rx, &mut pending, &mut next_token);
                return;
            }
        };
        let max_in_flight = max_in_flight(
            self.create_concurrency,
            self.queue.max_batch(),
            self.job_create_rate,
        );
        let mut in_flight: usize = 0;
        // Per-service counts come from the Jobs the tracker lists: until every
        // list is in, a capped message is deferred (a new leader would
        // otherwise count its service from nothing).
        let mut listed = self.service_caps.is_empty();
        if !listed {
            let until = Instant::now() + Duration::from_secs(10);
            while !listed && Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                self.heartbeat.beat();
                listed = self.live.wait_listed(Duration::from_millis(200));
            }
        }
        let mut last_sweep = Instant::now();
        // Deferrals so far per message id (Redis has no receive count).
        let mut deferrals: HashMap<String, u32> = HashMap::new();
        while !self.stop.load(Ordering::SeqCst) {
            self.heartbeat.beat();
            self.settle(&mut pending);
            self.collect(
                &done_rx,
                &mut in_flight,
                Duration::ZERO,
                &mut pending,
                &mut next_token,
            );
            if last_sweep.elapsed() >= self.sweep_interval {
                last_sweep = Instant::now();
                match self.queue.sweep() {
                    Ok(0) => {}
                    Ok(n) => {
                        log::info!("intake: took back {n} message(s) held by another consumer")
                    }
                    Err(e) => self.queue_error("sweep", &e),
                }
                self.expire_tombstones();
            }
            if in_flight >= max_in_flight {
                // Every creator busy and a full batch waiting: wait for one.
                let wait = Duration::from_millis(200);
                self.collect(
                    &done_rx,
                    &mut in_flight,
                    wait,
                    &mut pending,
                    &mut next_token,
                );
                continue;
            }
            let room_wait = if in_flight > 0 {
                Duration::from_millis(20)
            } else {
                Duration::from_millis(500)
            };
            let room = self.live.wait_for_room(self.max_concurrent_jobs, room_wait);
            let max = receive_budget(room, self.queue.max_batch(), in_flight, max_in_flight);
            if max == 0 {
                continue; // back-pressure: at the cap, receive nothing
            }
            let wait = receive_wait(self.polling_interval, in_flight);
            let batch = match self.queue.receive(max, wait) {
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
            if batch.is_empty() && in_flight > 0 {
                // Nothing new (an SQS receive of 0 s returns at once): wait
                // for a creator instead of polling again straight away.
                let wait = Duration::from_millis(20);
                self.collect(
                    &done_rx,
                    &mut in_flight,
                    wait,
                    &mut pending,
                    &mut next_token,
                );
            }
            for m in batch {
                // Leadership may have ended while the receive blocked: create
                // nothing more; what is left goes back to the queue below.
                if self.stop.load(Ordering::SeqCst) {
                    break;
                }
                self.heartbeat.beat();
                metrics::inc(metrics::MESSAGES_RECEIVED, &[("queue", self.queue.kind())]);
                let Prepared::Create(mut task) = self.prepare(&m, &mut pending, &mut next_token)
                else {
                    continue;
                };
                let service = task.msg.service.clone();
                let key = format!("{}/{}", task.ns, task.name);
                match self.live.known(&key, &service, task.slot) {
                    // A redelivery whose Job is live or ended under this
                    // leader: adopted or acknowledged, never made again, and
                    // no cap applies (it would count the Job against itself).
                    Known::Live | Known::Ended => task.adopt_only = true,
                    Known::New => {
                        let cap = self.service_caps.cap(&service);
                        listed = listed || self.live.wait_listed(Duration::ZERO);
                        if (cap.is_some() && !listed)
                            || !self.live.try_reserve_service(&service, cap)
                        {
                            self.defer(&task.m, &task.id, &service, listed, &mut deferrals);
                            continue;
                        }
                        if !self.live.try_reserve(self.max_concurrent_jobs, task.slot) {
                            // Cannot happen (intake alone reserves, within `room`).
                            self.live.release_service(&service);
                            self.later(&task.m.handle, Duration::from_secs(1));
                            continue;
                        }
                    }
                }
                deferrals.remove(&task.id);
                match creators.submit(task) {
                    Ok(()) => in_flight += 1,
                    Err(task) => {
                        self.live.release(task.slot);
                        self.live.release_service(&service);
                        self.later(&task.m.handle, Duration::from_secs(1));
                    }
                }
            }
        }
        // Creators skip what they have not started; join them, then settle
        // what they finished before handing the rest back.
        creators.close();
        self.collect(
            &done_rx,
            &mut in_flight,
            Duration::ZERO,
            &mut pending,
            &mut next_token,
        );
        self.finish(&done_rx, &mut pending, &mut next_token);
    }

    /// The end of a leadership: settle, hand back what is held, log.
    fn finish(
        &mut self,
        done_rx: &Receiver<Done>,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) {
        let mut n = 0;
        self.collect(done_rx, &mut n, Duration::ZERO, pending, next_token);
        self.settle(pending);
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

    /// The message's service is at its cap: put it aside (not rejected),
    /// longer each time (the attempt is the larger of this leader's count and
    /// the queue's receive count, SQS's ApproximateReceiveCount).
    fn defer(
        &mut self,
        m: &Received,
        id: &str,
        service: &str,
        listed: bool,
        deferrals: &mut HashMap<String, u32>,
    ) {
        if deferrals.len() >= 100_000 {
            deferrals.clear(); // bounded memory: the schedule restarts
        }
        let n = deferrals.entry(id.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let attempt = (*n).max(m.receive_count);
        let d = caps::defer_delay(attempt);
        let label = caps::label(&self.service_caps.named(), service).to_string();
        metrics::inc(metrics::MESSAGES_DEFERRED, &[("service", &label)]);
        let why = if listed {
            format!(
                "is at its cap of {} live Job(s)",
                self.service_caps.cap(service).unwrap_or(0)
            )
        } else {
            "has a cap and the Jobs are not listed yet".to_string()
        };
        let text = format!(
            "message {id}: service {service} {why}; deferred for {} s (attempt {attempt})",
            d.as_secs()
        );
        if attempt == 1 {
            log::info!("{text}");
        } else {
            log::debug!("{text}");
        }
        if let Err(e) = self.queue.defer(&m.handle, d) {
            self.queue_error("defer", &e);
            self.later(&m.handle, d); // still held: receive it again
        }
    }

    fn later(&mut self, handle: &Handle, d: Duration) {
        if let Err(e) = self.queue.retry_later(handle, d) {
            self.queue_error("retry_later", &e);
        }
    }

    /// Applies the creators' verdicts (waiting up to `wait` for the first one)
    /// and acknowledges the created messages in one call.
    fn collect(
        &mut self,
        done_rx: &Receiver<Done>,
        in_flight: &mut usize,
        wait: Duration,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) {
        let mut acks = Vec::new();
        let mut first = if wait.is_zero() {
            done_rx.try_recv().ok()
        } else {
            done_rx.recv_timeout(wait).ok()
        };
        while let Some(d) = first.take().or_else(|| done_rx.try_recv().ok()) {
            *in_flight = in_flight.saturating_sub(1);
            match d.verdict {
                Verdict::Ack => acks.push(d.m.handle),
                Verdict::Later(delay) => self.later(&d.m.handle, delay),
                Verdict::Reject { code, text } => {
                    self.reject(&d.m, code, &text, Some(d.id), d.url, pending, next_token);
                }
                Verdict::Deleted { code, text } => self.dead_letter_deleted(&d.m, code, &text),
                Verdict::Skipped => {}
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

    /// Dead-letters a message for good and counts it acknowledged (a queue
    /// error is counted and logged; the message then comes back later).
    fn dead_letter(&mut self, handle: &Handle, body: &[u8], reason: &str) {
        match self.queue.dead_letter(handle, body, reason) {
            Ok(()) => metrics::inc(
                metrics::MESSAGES_ACKNOWLEDGED,
                &[("queue", self.queue.kind())],
            ),
            Err(e) => self.queue_error("dead_letter", &e),
        }
    }

    fn settle(&mut self, pending: &mut HashMap<u64, Pending>) {
        while let Ok(token) = self.settled.try_recv() {
            if let Some(p) = pending.remove(&token) {
                self.dead_letter(&p.handle, &p.body, &p.reason);
            }
        }
    }

    /// Deletes the tombstones past CANCEL_TOMBSTONE_TTL; a waiting one expires
    /// unmatched.
    fn expire_tombstones(&mut self) {
        for t in self.tombstones.expired(std::time::SystemTime::now()) {
            match crate::kube::tombstone::delete(&self.kube, &self.tombstone_ns, &t.name) {
                Ok(()) => {
                    self.tombstones.remove(&t.id);
                    if t.consumed.is_none() {
                        metrics::inc(metrics::CANCELS, &[("outcome", "expired")]);
                        log::info!(
                            "message {}: cancel tombstone expired; its job request never arrived",
                            t.id
                        );
                    }
                }
                Err(e) => log::warn!("intake: {e}"),
            }
        }
    }

    fn ack_one(&mut self, handle: &Handle) {
        match self.queue.ack(std::slice::from_ref(handle)) {
            Ok(()) => metrics::inc(
                metrics::MESSAGES_ACKNOWLEDGED,
                &[("queue", self.queue.kind())],
            ),
            Err(e) => self.queue_error("ack", &e),
        }
    }

    /// A cancel: its tombstone first (durable; 409 is a repeated cancel, a
    /// no-op), then the tracker applies it and the message is acknowledged.
    fn cancel(&mut self, m: &Received, id: String) -> Prepared {
        let now = std::time::SystemTime::now();
        let t = Tombstone::new(&self.render.instance, &id, now, self.tombstone_ttl);
        match crate::kube::tombstone::create(
            &self.kube,
            &self.tombstone_ns,
            &self.render.instance,
            &t,
        ) {
            Ok(None) => {
                log::info!(
                    "message {id}: cancel received; tombstone {} written",
                    t.name
                );
                self.tombstones.insert(t);
                let _ = self.tracker.send(TrackerMsg::Cancel { id, fresh: true });
                self.ack_one(&m.handle);
            }
            Ok(Some(existing)) => {
                log::info!(
                    "message {id}: repeated cancel (first at {}); nothing more to do",
                    existing.cancelled_at
                );
                self.tombstones.insert(existing);
                self.ack_one(&m.handle);
            }
            Err(e) if e.is_transient() => {
                let d = redelivery_delay(m.receive_count);
                log::warn!("message {id}: cancel: {e}; retrying in {} s", d.as_secs());
                self.later(&m.handle, d);
            }
            Err(e) => {
                metrics::inc(metrics::MESSAGES_REJECTED, &[("reason", "CANCEL_FAILED")]);
                log::error!("message {id}: cancel cannot be recorded: {e}");
                self.dead_letter(
                    &m.handle,
                    &m.body,
                    &format!("cancel cannot be recorded: {e}"),
                );
            }
        }
        Prepared::Handled
    }

    fn prepare(
        &mut self,
        m: &Received,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) -> Prepared {
        let msg = match message::parse_request(&m.body, &self.limits) {
            Ok(message::Request::Job(msg)) => *msg,
            Ok(message::Request::Cancel { id }) => return self.cancel(m, id),
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
        let mut msg = msg;
        let admit = cancel::admit(self.tombstones.get(&msg.id).as_ref());
        if admit == Admit::AlreadyHandled {
            log::info!(
                "message {}: cancelled or finished before; nothing to create",
                msg.id
            );
            self.ack_one(&m.handle);
            return Prepared::Handled;
        }
        if let Admit::CreateCancelled { .. } = admit {
            // Its Job never runs: no input to hand over.
            msg.payload = None;
        } else if let Err(e) = payload::precheck(&self.kube, &msg) {
            return self.payload_refused(m, &msg, e, pending, next_token);
        }
        let mut job = render::render(&msg, &self.render);
        // A delayed Job waits suspended: a queued slot until its start.
        let mut slot = if msg.job.queue_name.is_some() || msg.job.start_after.is_some() {
            Slot::Queued
        } else {
            Slot::Admitted
        };
        if let Admit::CreateCancelled { at } = &admit {
            log::info!(
                "message {}: cancelled by request at {at} before it arrived; its Job is created suspended and deleted",
                msg.id
            );
            job = cancel::cancelled_job(job, at);
            slot = Slot::Queued;
        }
        let ns = msg.job.namespace.clone();
        let name = job
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Prepared::Create(Box::new(Task {
            m: m.clone(),
            id: msg.id.clone(),
            url: msg.webhook_url.clone(),
            job,
            ns,
            name,
            slot,
            adopt_only: false,
            msg,
        }))
    }

    /// The payload Secret's name check failed before any create: transient
    /// keeps the message (receive it again later); permanent is a 99 like a
    /// refused Job create.
    fn payload_refused(
        &mut self,
        m: &Received,
        msg: &message::Message,
        e: payload::SecretError,
        pending: &mut HashMap<u64, Pending>,
        next_token: &mut u64,
    ) -> Prepared {
        metrics::inc(
            metrics::PAYLOAD_SECRET_ERRORS,
            &[("code", &e.metric_code())],
        );
        if e.is_transient() {
            let d = redelivery_delay(m.receive_count);
            log::warn!(
                "message {}: payload Secret: {e}; retrying in {} s",
                msg.id,
                d.as_secs()
            );
            self.later(&m.handle, d);
            return Prepared::Rejected;
        }
        let code = match e {
            payload::SecretError::Conflict { .. } => ErrorCode::JobNameConflict,
            _ => ErrorCode::JobCreateFailed,
        };
        let text = format!("cannot create the payload Secret: {e}");
        let (id, url) = (Some(msg.id.clone()), msg.webhook_url.clone());
        self.reject(m, code, &text, id, url, pending, next_token)
    }

    /// A message whose Job the creator deleted again (its payload Secret was
    /// refused for good): dead-lettered with the reason; the tracker reports
    /// the deleted Job (99 JOB_DELETED), so the sender gets one terminal status.
    fn dead_letter_deleted(&mut self, m: &Received, code: ErrorCode, text: &str) {
        metrics::inc(metrics::MESSAGES_REJECTED, &[("reason", code.as_str())]);
        self.dead_letter(&m.handle, &m.body, &format!("{code}: {text}"));
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
    ) -> Prepared {
        metrics::inc(metrics::MESSAGES_REJECTED, &[("reason", code.as_str())]);
        log::warn!(
            "message {}: rejected {code}: {text}",
            id.as_deref().unwrap_or("<no id>")
        );
        let reason = format!("{code}: {text}");
        let Some(id) = id else {
            // Nobody to tell: the dead-letter record is the outcome.
            self.dead_letter(&m.handle, &m.body, &reason);
            return Prepared::Rejected;
        };
        let mut token = None;
        let _ = self.tracker.send(TrackerMsg::Rejected {
            id: id.clone(),
            code: code.clone(),
        });
        if self.queue.dead_letter_is_durable() || url.is_none() {
            self.dead_letter(&m.handle, &m.body, &reason);
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
            detail: contract::detail::error(&code, text).into(),
            url,
            job: None,
            token,
            queued_at: Instant::now(),
        }));
        Prepared::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receive_budget_is_the_smallest_limit() {
        // room under MAX_CONCURRENT_JOBS, batch size, creator capacity
        assert_eq!(receive_budget(usize::MAX, 64, 0, 96), 64);
        assert_eq!(receive_budget(5, 64, 0, 96), 5);
        assert_eq!(receive_budget(usize::MAX, 64, 90, 96), 6);
        assert_eq!(receive_budget(usize::MAX, 64, 96, 96), 0);
        assert_eq!(receive_budget(usize::MAX, 64, 100, 96), 0);
        assert_eq!(receive_budget(0, 64, 0, 96), 0);
    }

    #[test]
    fn a_create_rate_bounds_the_tasks_in_flight() {
        // (creators, batch, JOB_CREATE_RATE, most in flight)
        for (c, b, r, want) in [
            (16, 64, None, 96),
            (16, 30, None, 62),
            (0, 10, None, 12),
            (16, 64, Some(5.0), 10),
            (16, 64, Some(0.5), 1),
            (16, 64, Some(0.01), 1),
            (16, 64, Some(1000.0), 96),
            (16, 64, Some(f64::NAN), 96),
        ] {
            assert_eq!(max_in_flight(c, b, r), want, "{c} {b} {r:?}");
        }
    }

    #[test]
    fn only_an_idle_intake_blocks_for_the_polling_interval() {
        let p = Duration::from_secs(5);
        assert_eq!(receive_wait(p, 0), p);
        assert_eq!(receive_wait(p, 1), Duration::from_millis(20));
        assert_eq!(
            receive_wait(Duration::from_millis(10), 3),
            Duration::from_millis(10)
        );
    }
}
