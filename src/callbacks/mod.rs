//! The callback thread: delivers each message's progress callbacks
//! (`{"id", "status", "detail"}` JSON POSTs) to the message's webhook, strictly
//! in order per message and independently across messages, with Standard
//! Webhooks headers, retries with exponential backoff and full jitter up to a
//! retry horizon, and a bounded drain on shutdown. A dispatcher thread named
//! `callbacks` owns all scheduling state (the pure state machine in `state.rs`)
//! and hands attempts to per-destination worker threads (`pool.rs`), so a slow
//! or dead webhook only ever occupies its own destination's workers. Every
//! callback ends in exactly one `Hooks::settled` call (its record), made on a
//! worker of its destination in the order the callbacks of a message were
//! sent, unless shutdown's grace period runs out first. Recording is part of
//! a message's turn: its next callback is not sent before the previous one's
//! `settled` returned, so a successor that reads the records never resends an
//! earlier status after a later one.

mod deliver;
mod pool;
mod sign;
mod state;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, select, unbounded};

use crate::contract::Status;
use crate::webhook_guard::{PinnedResolver, WebhookUrl};

pub use sign::{SigningKey, webhook_id};

use deliver::HttpDeliverer;
use pool::{Deliver, Finished, Pool, Work};
use state::{Action, Attempt, Event, Policy, Random, Scheduler, Verdict};

/// The Kubernetes Job a callback is about; opaque here, handed back in `settled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRef {
    pub namespace: String,
    pub name: String,
    /// Empty when not known; otherwise the record applies to this Job only.
    pub uid: String,
}

/// One callback to deliver.
#[derive(Clone, Debug)]
pub struct Callback {
    pub message_id: String,
    pub status: Status,
    pub detail: crate::contract::Detail,
    /// `None`: the message has no webhook; the callback settles as `Skipped` in its turn.
    pub url: Option<WebhookUrl>,
    /// Opaque; handed back in `settled`.
    pub job: Option<JobRef>,
    /// Opaque; handed back in `settled`.
    pub token: Option<u64>,
    /// When the callback was produced; the retry horizon counts from here.
    pub queued_at: Instant,
}

/// The pseudo-destination whose workers record callbacks without a webhook.
const NO_WEBHOOK: &str = "";

/// How a callback ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The webhook answered 2xx.
    Delivered,
    /// There was no webhook to call.
    Skipped,
    /// A final failure (4xx other than 408/429, a redirect, an unusable URL) or
    /// still failing when the retry horizon ran out; the text says which.
    Abandoned(String),
}

/// Told about every callback's final outcome.
pub trait Hooks: Send + Sync {
    /// Called once per callback, on a worker thread of its destination (many
    /// at once for different messages), in send order for the callbacks of one
    /// message and never two of one message at once: the message's next
    /// callback is sent only after this returned. It may block for an API
    /// request or two; only its own message and destination wait.
    fn settled(&self, cb: &Callback, outcome: &Outcome);
}

/// Messages to the callback thread; dropping every sender starts shutdown.
#[derive(Debug)]
pub enum CallbackMsg {
    Send(Callback),
    /// Stop now without draining (the worker lost its Lease: the next leader
    /// resends what was not recorded as delivered).
    Abort,
}

/// Settings of the callback thread.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bound on one HTTP attempt, connect to last byte read.
    pub request_timeout: Duration,
    /// How long after `queued_at` failing attempts are still retried.
    pub retry_horizon: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Concurrent attempts per destination (scheme://host:port); at least 1.
    pub workers_per_host: usize,
    /// Largest part of a webhook's answer that is read (the rest is dropped).
    pub max_response_bytes: u64,
    /// Signs callbacks (Standard Webhooks) when set.
    pub signing_secret: Option<SigningKey>,
    /// After the last sender is dropped, how long queued callbacks may still take.
    pub shutdown_grace: Duration,
    /// A destination's worker thread stops after being idle this long.
    pub worker_idle_timeout: Duration,
    /// SSRF rules (WEBHOOK_ALLOWED_HOSTS, link-local and API-server addresses).
    pub guard: Option<crate::webhook_guard::WebhookGuard>,
    /// The dispatcher beats it once per loop iteration; it has work while
    /// callbacks are pending.
    pub heartbeat: Option<Arc<crate::heartbeat::Heartbeat>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            request_timeout: Duration::from_secs(10),
            retry_horizon: Duration::from_secs(3600),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            workers_per_host: 4,
            max_response_bytes: 4096,
            signing_secret: None,
            shutdown_grace: Duration::from_secs(10),
            worker_idle_timeout: Duration::from_secs(30),
            guard: None,
            heartbeat: None,
        }
    }
}

/// Starts the `callbacks` dispatcher thread. It returns once every sender of
/// `rx` is dropped and everything queued is settled (or `shutdown_grace` ran
/// out), after joining its workers. The webhook agent is built here from
/// `agent` (TLS roots, timeouts) with the guard's `PinnedResolver`, so every
/// connection goes only to addresses the guard checked (without a guard in
/// `cfg`, the always-refused addresses still are).
pub fn spawn(
    cfg: Config,
    agent: ureq::config::Config,
    rx: Receiver<CallbackMsg>,
    hooks: Arc<dyn Hooks>,
) -> std::io::Result<JoinHandle<()>> {
    let guard = Arc::new(cfg.guard.clone().unwrap_or_default());
    spawn_resolving(cfg, agent, PinnedResolver::new(guard), rx, hooks)
}

/// `spawn` with a given resolver (tests: a DNS name whose answer changes).
pub fn spawn_resolving(
    cfg: Config,
    agent: ureq::config::Config,
    resolver: PinnedResolver,
    rx: Receiver<CallbackMsg>,
    hooks: Arc<dyn Hooks>,
) -> std::io::Result<JoinHandle<()>> {
    let proxied = agent.proxy().is_some();
    let http = HttpDeliverer {
        agent: ureq::Agent::with_parts(
            agent,
            ureq::unversioned::transport::DefaultConnector::new(),
            resolver,
        ),
        timeout: cfg.request_timeout,
        max_response_bytes: cfg.max_response_bytes,
        key: cfg.signing_secret.clone().map(Arc::new),
        guard: Arc::new(cfg.guard.clone().unwrap_or_default()),
        proxied,
    };
    let deliver: Deliver = Arc::new(move |cb: &Callback| http.deliver(cb));
    spawn_with(cfg, deliver, rx, hooks, random_source())
}

fn spawn_with(
    cfg: Config,
    deliver: Deliver,
    rx: Receiver<CallbackMsg>,
    hooks: Arc<dyn Hooks>,
    random: Random,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("callbacks".into())
        .spawn(move || run(cfg, deliver, rx, hooks, random))
}

/// How long the dispatcher sleeps when nothing at all is scheduled.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

fn run(
    cfg: Config,
    deliver: Deliver,
    rx: Receiver<CallbackMsg>,
    hooks: Arc<dyn Hooks>,
    random: Random,
) {
    let policy = Policy {
        backoff_initial: cfg.backoff_initial,
        backoff_max: cfg.backoff_max,
        retry_horizon: cfg.retry_horizon,
    };
    let mut sched = Scheduler::new(policy, random);
    let (done_tx, done_rx) = unbounded();
    let mut pool = Pool::new(
        cfg.workers_per_host,
        cfg.worker_idle_timeout,
        deliver,
        Arc::clone(&hooks),
        done_tx,
    );
    let never = crossbeam_channel::never::<CallbackMsg>();
    let mut input = Some(rx);
    let mut closed_deadline: Option<Instant> = None;

    loop {
        if let Some(hb) = &cfg.heartbeat {
            hb.beat_with(sched.pending() > 0);
        }
        let now = Instant::now();
        let wake = [sched.next_due(), pool.next_reap(), closed_deadline]
            .into_iter()
            .flatten()
            .min();
        let timeout = wake.map_or(IDLE_WAKE, |w| w.saturating_duration_since(now));
        let mut events = Vec::new();
        select! {
            recv(input.as_ref().unwrap_or(&never)) -> msg => match msg {
                Ok(CallbackMsg::Send(cb)) => events.push(Event::Enqueued(cb)),
                Ok(CallbackMsg::Abort) => {
                    input = None;
                    closed_deadline = Some(Instant::now());
                    log::info!("callbacks: aborted with {} pending callback(s)", sched.pending());
                }
                Err(_) => {
                    input = None;
                    closed_deadline = Some(Instant::now() + cfg.shutdown_grace);
                    log::info!("callbacks: input closed; draining {} pending callback(s)", sched.pending());
                }
            },
            recv(done_rx) -> done => if let Ok(d) = done {
                pool.finished(&d.dest, d.worker, Instant::now());
                events.push(match d.finished {
                    Finished::Attempt(attempt) => Event::Result { message_id: d.message_id, attempt },
                    Finished::Recorded => Event::Recorded { message_id: d.message_id },
                });
            },
            default(timeout) => {}
        }
        events.push(Event::Tick);
        let now = Instant::now();
        let mut events = std::collections::VecDeque::from(events);
        while let Some(ev) = events.pop_front() {
            for action in sched.step(now, ev) {
                if let Some(ev) = perform(action, &mut pool, hooks.as_ref()) {
                    events.push_back(ev);
                }
            }
        }
        pool.reap(now);
        if let Some(deadline) = closed_deadline {
            if sched.pending() == 0 {
                break;
            }
            if now >= deadline {
                log::warn!(
                    "callbacks: shutdown grace of {:?} ran out; {} callback(s) left undelivered",
                    cfg.shutdown_grace,
                    sched.pending()
                );
                break;
            }
        }
    }
    pool.shutdown();
    log::info!("callbacks: stopped");
}

/// Carries out one action; returns an event when the action finished at once
/// (an unusable URL, no worker thread).
fn perform(action: Action, pool: &mut Pool, hooks: &dyn Hooks) -> Option<Event> {
    match action {
        Action::Dispatch(cb) => {
            let Some((dest, host)) = cb.url.as_ref().map(WebhookUrl::destination) else {
                return Some(Event::Result {
                    message_id: cb.message_id.clone(),
                    attempt: Attempt::Final("no webhook URL".into()),
                });
            };
            pool.submit(&dest, &host, Work::Deliver(cb))
                .err()
                .map(|u| Event::Result {
                    attempt: Attempt::Retry {
                        reason: u.reason.clone(),
                        retry_after: None,
                    },
                    message_id: u.message_id(),
                })
        }
        Action::Retrying {
            message_id,
            status,
            attempts,
            delay,
            reason,
        } => {
            crate::metrics::inc(
                crate::metrics::CALLBACK_RETRIES,
                &[("status", &status.to_string())],
            );
            log::warn!(
                "callback for message {message_id} status {status}: attempt {attempts} failed ({reason}); retrying in {:.1}s",
                delay.as_secs_f64()
            );
            None
        }
        Action::Settle {
            cb,
            verdict,
            attempts,
        } => {
            let outcome = settle(&cb, verdict, attempts);
            let (dest, host) = cb
                .url
                .as_ref()
                .map(WebhookUrl::destination)
                .unwrap_or_else(|| (NO_WEBHOOK.to_string(), "record".to_string()));
            match pool.submit(&dest, &host, Work::Record(cb, outcome)) {
                Ok(()) => None,
                // No thread to record on: record here, in the message's turn.
                Err(u) => {
                    log::warn!("{}; recording on the dispatcher", u.reason);
                    let Work::Record(cb, outcome) = *u.work else {
                        return None;
                    };
                    // No catch_unwind: the shipped build aborts on panic.
                    hooks.settled(&cb, &outcome);
                    Some(Event::Recorded {
                        message_id: cb.message_id.clone(),
                    })
                }
            }
        }
    }
}

/// Counts and logs a settled callback; its record (`Hooks::settled`) follows
/// on a worker.
fn settle(cb: &Callback, verdict: Verdict, attempts: u32) -> Outcome {
    let status = cb.status.to_string();
    let (label, outcome) = match verdict {
        Verdict::Delivered => {
            let secs = cb.queued_at.elapsed().as_secs_f64();
            crate::metrics::observe(crate::metrics::CALLBACK_DELIVERY_SECONDS, &[], secs);
            log::info!(
                "callback for message {} status {status} delivered after {attempts} attempt(s), {secs:.3}s after it was queued",
                cb.message_id
            );
            ("delivered", Outcome::Delivered)
        }
        Verdict::Skipped => {
            log::debug!(
                "callback for message {} status {status} skipped: no webhook",
                cb.message_id
            );
            ("skipped", Outcome::Skipped)
        }
        Verdict::Failed(reason) => {
            log::warn!(
                "callback for message {} status {status} failed for good: {reason}",
                cb.message_id
            );
            ("failed", Outcome::Abandoned(reason))
        }
        Verdict::Abandoned(reason) => {
            log::warn!(
                "callback for message {} status {status} abandoned: {reason}",
                cb.message_id
            );
            ("abandoned", Outcome::Abandoned(reason))
        }
    };
    crate::metrics::inc(
        crate::metrics::CALLBACKS_SENT,
        &[("status", &status), ("outcome", label)],
    );
    outcome
}

/// A xorshift64* generator seeded from the system's secure random source
/// (the clock if that fails), giving values in [0, 1) for backoff jitter.
fn random_source() -> Random {
    use ring::rand::SecureRandom as _;
    let mut seed = [0u8; 8];
    let mut x = if ring::rand::SystemRandom::new().fill(&mut seed).is_ok() {
        u64::from_le_bytes(seed)
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
    };
    if x == 0 {
        x = 0x9E37_79B9_7F4A_7C15;
    }
    Box::new(move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests;
