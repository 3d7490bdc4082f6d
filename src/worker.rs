//! Wiring: what starts, in which order, and how it stops. `run_elected` hands
//! the election loop (`kube::lease::campaign`) a `Worker`, whose `start` builds
//! the threads of a leader — the callback thread, the Job and Pod watches
//! (`kube::watch::spawn`), the tracker (`tracker::spawn`), intake — connected
//! by typed crossbeam channels, and whose `stop` stops them in order: intake
//! first (no new Jobs), then the tracker, then the callback thread, which
//! flushes within the grace period (or aborts when the Lease was lost). Watch
//! threads are interrupted (their connections closed) and joined first. It also
//! sets each thread's heartbeat bound (`Bounds`), which /healthz checks. No
//! thread loop lives here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, unbounded};
use serde_json::json;

use crate::callbacks::{self, Callback, CallbackMsg, Hooks, Outcome};
use crate::config::{Config, QueueConfig};
use crate::contract::{ANN_DELIVERED, FINALIZER};
use crate::heartbeat::Heartbeat;
use crate::http::Health;
use crate::intake::Intake;
use crate::kube::Client;
use crate::kube::client::CALL_TIMEOUT;
use crate::kube::lease::{self, Leadership, LeaseLock};
use crate::kube::slim;
use crate::kube::watch::{self, RestApi, Watch};
use crate::queue::{Queue, QueueError};
use crate::tracker::{self, Board, LiveJobs, Tracker, TrackerMsg};
use crate::{metrics, signal};

/// Why the worker could not start (or start leading). `Display` reads as a
/// sentence naming the part that failed.
#[derive(Debug)]
pub enum StartError {
    /// The queue could not be opened.
    Queue(QueueError),
    /// AWS credentials could not be set up.
    Aws(crate::aws::AwsError),
    /// A setting is unusable (its variable and why).
    Setting { name: &'static str, detail: String },
    /// A thread could not be started.
    Spawn {
        thread: &'static str,
        error: std::io::Error,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Queue(e) => write!(f, "{e}"),
            StartError::Aws(e) => write!(f, "{e}"),
            StartError::Setting { name, detail } => write!(f, "{name}: {detail}"),
            StartError::Spawn { thread, error } => {
                write!(f, "cannot start the {thread} thread: {error}")
            }
        }
    }
}

impl std::error::Error for StartError {}

impl From<QueueError> for StartError {
    fn from(e: QueueError) -> Self {
        StartError::Queue(e)
    }
}

impl From<crate::aws::AwsError> for StartError {
    fn from(e: crate::aws::AwsError) -> Self {
        StartError::Aws(e)
    }
}

fn spawn_error(thread: &'static str) -> impl FnOnce(std::io::Error) -> StartError {
    move |error| StartError::Spawn { thread, error }
}

/// Opens the configured queue.
pub fn open_queue(cfg: &Config) -> Result<Box<dyn Queue>, StartError> {
    match &cfg.queue {
        QueueConfig::Redis {
            endpoint,
            db,
            key_prefix,
            ca_file,
        } => {
            let q = crate::queue::redis::RedisQueue::new(
                endpoint,
                *db,
                key_prefix,
                &cfg.lease.identity,
                ca_file.as_deref(),
            )?;
            Ok(Box::new(q))
        }
        QueueConfig::Sqs {
            url,
            region,
            dead_letter_url,
        } => {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .max_idle_connections_per_host(crate::queue::sqs::RECEIVERS + 4)
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(10)))
                .build()
                .new_agent();
            let creds = crate::aws::provider_from_env(agent.clone())?;
            let mut q = crate::queue::sqs::SqsQueue::new(url, region, creds, agent)?;
            if let Some(d) = dead_letter_url {
                q = q.with_dead_letter_url(d)?;
            }
            Ok(Box::new(q))
        }
    }
}

/// Records each settled callback on its Job and settles rejected messages.
/// Runs on the callback workers, many Jobs at once; the callback thread sends
/// a message's next callback only after its previous record returned, so a
/// successor reading `k8s-job-worker.io/delivered` never resends an earlier
/// status after a later one.
struct Recorder {
    kube: Client,
    settled: Sender<u64>,
}

impl Hooks for Recorder {
    fn settled(&self, cb: &Callback, outcome: &Outcome) {
        if let Some(job) = &cb.job {
            // Delivered or given up: either way a successor must not send it again.
            let ann = json!({ANN_DELIVERED: cb.status.to_string()});
            let path = format!(
                "/apis/batch/v1/namespaces/{}/jobs/{}",
                job.namespace, job.name
            );
            let op = format!(
                "record status {} on job {}/{}",
                cb.status, job.namespace, job.name
            );
            // Only on the Job the callback is about: a newer Job that took
            // the name is left alone (the API server answers a merge patch
            // whose uid differs with 422, "field is immutable").
            let res = if cb.status.is_terminal() {
                // Terminal: the Job no longer needs holding for us.
                self.kube.release_uid(&path, &job.uid, FINALIZER, &ann, &op)
            } else {
                let mut meta = json!({"annotations": ann});
                if !job.uid.is_empty() {
                    meta["uid"] = json!(job.uid);
                }
                self.kube
                    .merge_patch(&path, &json!({ "metadata": meta }), &op)
                    .map(|_| ())
            };
            if let Err(e) = res
                && e.code() != Some(404)
                && (e.code() != Some(422) || job.uid.is_empty())
            {
                log::warn!("{e}");
            }
        }
        if let Some(t) = cb.token {
            log::debug!(
                "message {}: 99 callback settled ({outcome:?})",
                cb.message_id
            );
            let _ = self.settled.send(t);
        }
    }
}

/// Server-side timeout of a watch; its per-read timeout is 30 s more.
const WATCH_TIMEOUT_SECONDS: u64 = 290;
/// Longest backoff of the watch and intake loops (`backoff::Backoff`).
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Added to every heartbeat bound (scheduling, logging, a slow machine).
const SLACK: Duration = Duration::from_secs(10);

/// How long each thread may go without a heartbeat while it has work: the
/// longest its loop can legitimately take between two beats, from that loop's
/// own timeouts (CALL_TIMEOUT is one API server request, 30 s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// One receive (POLLING_INTERVAL) or a backoff, then per message a create,
    /// a get (on 409) and a queue call: POLLING_INTERVAL + 3 × CALL_TIMEOUT + slack.
    pub intake: Duration,
    /// One tick, then per action up to two API requests (a release reads and
    /// patches): 5 × TICK + 2 × CALL_TIMEOUT.
    pub tracker: Duration,
    /// With callbacks pending it wakes at the next retry (≤ CALLBACK_BACKOFF_MAX)
    /// or when an attempt ends (≤ CALLBACK_TIMEOUT); the records of settled
    /// statuses run on its workers, on the dispatcher only when no worker
    /// thread can be started: CALLBACK_BACKOFF_MAX + CALLBACK_TIMEOUT + 3 ×
    /// CALL_TIMEOUT + slack. Without pending callbacks it is idle (no bound).
    pub callbacks: Duration,
    /// One read (the watch's per-read timeout, 320 s) or one list, then at
    /// most one backoff: per-read timeout + 30 s + slack.
    pub watch: Duration,
    /// The election loop (main thread): one attempt (a get and an update of
    /// the Lease), then at most a start (opening the queue) or a stop (joining
    /// the leading threads within SHUTDOWN_GRACE, one in-flight request each),
    /// then RETRY_PERIOD: RETRY_PERIOD + 4 × CALL_TIMEOUT + SHUTDOWN_GRACE + slack.
    pub election: Duration,
}

impl Bounds {
    pub fn new(cfg: &Config) -> Bounds {
        Bounds {
            intake: cfg.polling_interval + 3 * CALL_TIMEOUT + SLACK,
            tracker: 5 * tracker::TICK + 2 * CALL_TIMEOUT,
            callbacks: cfg.callback_backoff_max + cfg.callback_timeout + 3 * CALL_TIMEOUT + SLACK,
            watch: Duration::from_secs(WATCH_TIMEOUT_SECONDS + 30) + BACKOFF_MAX + SLACK,
            election: cfg.lease.retry_period + 4 * CALL_TIMEOUT + cfg.shutdown_grace + SLACK,
        }
    }
}

/// The threads of a leading worker.
pub struct Leading {
    stop: Arc<AtomicBool>,
    watches: Vec<Watch>,
    /// The heartbeats registered in `health` while leading.
    beats: Vec<Arc<Heartbeat>>,
    health: Arc<Health>,
    intake: Option<JoinHandle<()>>,
    tracker: Option<JoinHandle<()>>,
    callbacks: Option<JoinHandle<()>>,
    /// Our own sender to the callback thread, for `Abort`.
    cb_ctl: Option<Sender<CallbackMsg>>,
    pub live: Arc<LiveJobs>,
    pub board: Board,
}

fn spawn_named(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_string()).spawn(f)
}

impl Leading {
    /// Starts every thread of a leader.
    pub fn start(
        cfg: &Config,
        kube: Client,
        queue: Box<dyn Queue>,
        cb_agent: ureq::config::Config,
        health: Arc<Health>,
    ) -> Result<Leading, StartError> {
        let stop = Arc::new(AtomicBool::new(false));
        let bounds = Bounds::new(cfg);
        let mut beats = Vec::new();
        let mut beat = |name: &str, bound: Duration| {
            let hb = Heartbeat::new(name, bound);
            beats.push(hb.clone());
            hb
        };
        let live = Arc::new(
            LiveJobs::new(cfg.max_queued_jobs)
                .with_service_labels(cfg.service_max_concurrent.named())
                .expecting_lists(cfg.allowed_namespaces.len().max(1)),
        );
        let board: Board = Arc::new(Mutex::new(HashMap::new()));
        let (cb_tx, cb_rx) = unbounded::<CallbackMsg>();
        let (tr_tx, tr_rx) = unbounded::<TrackerMsg>();
        let (settle_tx, settle_rx) = unbounded::<u64>();
        let tombstones = Arc::new(crate::cancel::Tombstones::default());

        let signing_secret = match &cfg.webhook_signing_secret {
            Some(s) => Some(callbacks::SigningKey::from_whsec(s).map_err(|detail| {
                StartError::Setting {
                    name: "WEBHOOK_SIGNING_SECRET",
                    detail,
                }
            })?),
            None => None,
        };
        let cb_cfg = callbacks::Config {
            request_timeout: cfg.callback_timeout,
            retry_horizon: cfg.callback_retry_horizon,
            backoff_initial: Duration::from_secs(1),
            backoff_max: cfg.callback_backoff_max,
            workers_per_host: cfg.callback_concurrency_per_host,
            max_response_bytes: 4096,
            signing_secret,
            // Stopping intake can take one receive (POLLING_INTERVAL) and the
            // tracker one tick; the rest of SHUTDOWN_GRACE is for flushing.
            shutdown_grace: cfg
                .shutdown_grace
                .saturating_sub(cfg.polling_interval + Duration::from_secs(2))
                .max(Duration::from_secs(1)),
            guard: Some(cfg.webhook_guard.clone()),
            heartbeat: Some(beat("callbacks", bounds.callbacks)),
            ..callbacks::Config::default()
        };
        let hooks = Arc::new(Recorder {
            kube: kube.clone(),
            settled: settle_tx,
        });
        let callbacks =
            callbacks::spawn(cb_cfg, cb_agent, cb_rx, hooks).map_err(spawn_error("callbacks"))?;

        // Watches: per namespace when an allowlist is set, cluster-wide otherwise.
        let sel = crate::contract::selector(&cfg.render.instance);
        // A namespace's Job watch tags its events with the namespace: its
        // relist speaks for that namespace only.
        type Wrap = Box<dyn Fn(watch::Event) -> TrackerMsg + Send>;
        let scopes: Vec<(String, String, Wrap)> = if cfg.allowed_namespaces.is_empty() {
            vec![(
                "/apis/batch/v1/jobs".into(),
                "/api/v1/pods".into(),
                Box::new(|e| TrackerMsg::Jobs(slim::event(e, slim::job))),
            )]
        } else {
            cfg.allowed_namespaces
                .iter()
                .map(|ns| {
                    let scope = ns.clone();
                    let wrap: Wrap = Box::new(move |e| {
                        TrackerMsg::NamespaceJobs(scope.clone(), slim::event(e, slim::job))
                    });
                    (
                        format!("/apis/batch/v1/namespaces/{ns}/jobs"),
                        format!("/api/v1/namespaces/{ns}/pods"),
                        wrap,
                    )
                })
                .collect()
        };
        let mut watches = Vec::new();
        for (jobs, pods, wrap_jobs) in scopes {
            let wrap_pods: Wrap = Box::new(|e| TrackerMsg::Pods(slim::event(e, slim::pod)));
            for (path, what, wrap) in [(jobs, "jobs", wrap_jobs), (pods, "pods", wrap_pods)] {
                let api = RestApi {
                    client: kube.clone(),
                    path,
                    label_selector: sel.clone(),
                    timeout_seconds: WATCH_TIMEOUT_SECONDS,
                    what: what.into(),
                };
                let hb = beat(&format!("watch-{what}"), bounds.watch);
                watches.push(
                    watch::spawn(api, stop.clone(), tr_tx.clone(), wrap, hb)
                        .map_err(spawn_error("watch"))?,
                );
            }
        }

        let tracker = tracker::spawn(
            Tracker::new(live.clone(), board.clone(), cfg.pod_start_timeout)
                .with_max_concurrent(cfg.max_concurrent_jobs)
                .with_cancels(tombstones.clone()),
            tracker::Channels {
                rx: tr_rx,
                me: tr_tx.clone(),
                callbacks: cb_tx.clone(),
                heartbeat: beat("tracker", bounds.tracker),
                cancels: tombstones.clone(),
                tombstone_ns: cfg.lease.namespace.clone(),
            },
            kube.clone(),
            stop.clone(),
        )
        .map_err(spawn_error("tracker"))?;

        let cb_ctl = cb_tx.clone();
        let intake = Intake {
            queue,
            kube,
            limits: cfg.limits.clone(),
            render: cfg.render.clone(),
            policy: cfg.policy.clone(),
            guard: cfg.webhook_guard.clone(),
            tracker: tr_tx,
            callbacks: cb_tx,
            settled: settle_rx,
            live: live.clone(),
            max_concurrent_jobs: cfg.max_concurrent_jobs,
            service_caps: cfg.service_max_concurrent.clone(),
            job_create_rate: cfg.job_create_rate,
            create_concurrency: cfg.create_concurrency,
            polling_interval: cfg.polling_interval,
            sweep_interval: cfg.lease.lease_duration,
            callback_horizon: cfg.callback_retry_horizon,
            stop: stop.clone(),
            health: health.clone(),
            heartbeat: beat("intake", bounds.intake),
            tombstones,
            tombstone_ns: cfg.lease.namespace.clone(),
            tombstone_ttl: cfg.cancel_tombstone_ttl,
        };
        let intake = spawn_named("intake", move || intake.run()).map_err(spawn_error("intake"))?;
        for hb in &beats {
            health.beats.insert(hb.clone());
        }
        Ok(Leading {
            stop,
            watches,
            beats,
            health,
            intake: Some(intake),
            tracker: Some(tracker),
            callbacks: Some(callbacks),
            cb_ctl: Some(cb_ctl),
            live,
            board,
        })
    }

    /// Stops in order and joins: the watches (interrupted in their reads),
    /// intake, tracker, then callbacks (which flush).
    pub fn stop(mut self, abort: bool) {
        let t0 = Instant::now();
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.watches {
            w.interrupt();
        }
        let n = self.watches.len();
        for w in self.watches.drain(..) {
            w.join();
        }
        log::info!(
            "{n} watch thread(s) joined {} ms after stop (per-read timeout {} s)",
            t0.elapsed().as_millis(),
            WATCH_TIMEOUT_SECONDS + 30
        );
        for h in [self.intake.take(), self.tracker.take()]
            .into_iter()
            .flatten()
        {
            join(h);
        }
        if let Some(ctl) = self.cb_ctl.take() {
            if abort {
                let _ = ctl.send(CallbackMsg::Abort);
            }
            drop(ctl);
        }
        if let Some(h) = self.callbacks.take() {
            join(h);
        }
        for hb in &self.beats {
            self.health.beats.remove(hb);
        }
        log::info!("stopped leading in {} ms", t0.elapsed().as_millis());
    }
}

/// Joins a thread. There is no `Err` to handle: a panic aborts the process
/// (crash-only, `panic = "abort"`), it never ends just one thread.
fn join(h: JoinHandle<()>) {
    let _ = h.join();
}

/// The configuration of the webhook agent: built-in Mozilla roots (or exactly
/// WEBHOOK_CA_FILE's certificates), no redirects, status codes as values. The
/// callback thread builds the agent from it with the guard's resolver.
pub fn webhook_agent(
    ca_file: Option<&std::path::Path>,
) -> Result<ureq::config::Config, StartError> {
    let mut b = ureq::Agent::config_builder()
        // Each of a destination's workers (CALLBACK_CONCURRENCY_PER_HOST, at
        // most 64) keeps its connection between callbacks.
        .max_idle_connections(4 * crate::config::MAX_POOL)
        .max_idle_connections_per_host(crate::config::MAX_POOL)
        // Small connection buffers (see kube::client::IO_BUFFER_BYTES); a
        // receiver's response headers may take up to 16 KiB.
        .input_buffer_size(2 * crate::kube::client::IO_BUFFER_BYTES)
        .output_buffer_size(crate::kube::client::IO_BUFFER_BYTES)
        .max_response_header_size(16 * 1024)
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(format!("k8s-job-worker/{}", crate::VERSION))
        .timeout_connect(Some(Duration::from_secs(5)));
    if let Some(ca) = ca_file {
        b = b.tls_config(crate::kube::client::tls_with_ca(ca).map_err(|e| {
            StartError::Setting {
                name: "WEBHOOK_CA_FILE",
                detail: e.to_string(),
            }
        })?);
    }
    Ok(b.build())
}

fn start_leading(cfg: &Config, kube: &Client, health: &Arc<Health>) -> Result<Leading, StartError> {
    let queue = open_queue(cfg)?;
    health.queue_reachable.store(true, Ordering::SeqCst);
    let leading = Leading::start(
        cfg,
        kube.clone(),
        queue,
        webhook_agent(cfg.webhook_ca_file.as_deref())?,
        health.clone(),
    )?;
    *health.board.lock().unwrap_or_else(|e| e.into_inner()) = Some(leading.board.clone());
    health.leader.store(true, Ordering::SeqCst);
    metrics::set(metrics::LEADER, &[], 1.0);
    Ok(leading)
}

/// What starts and stops with the Lease, and the health it reports.
struct Worker<'a> {
    cfg: &'a Config,
    kube: Client,
    health: Arc<Health>,
    leading: Option<Leading>,
    /// The election loop's own heartbeat (it always has work: it renews).
    election: Arc<Heartbeat>,
}

impl Leadership for Worker<'_> {
    type Error = StartError;

    fn start(&mut self) -> Result<(), StartError> {
        self.leading = Some(start_leading(self.cfg, &self.kube, &self.health)?);
        Ok(())
    }

    fn stop(&mut self, abort: bool) {
        if let Some(leading) = self.leading.take() {
            self.health.leader.store(false, Ordering::SeqCst);
            metrics::set(metrics::LEADER, &[], 0.0);
            leading.stop(abort);
        }
    }

    fn api_answered(&mut self, answered: bool) {
        // A leader stays ready while it may still renew.
        let ready = answered || self.leading.is_some();
        self.health.ready.store(ready, Ordering::SeqCst);
    }

    fn tick(&mut self) {
        // Once per iteration of the election loop (or of the unelected wait).
        self.election.beat();
    }
}

/// Runs the worker until SIGTERM/SIGINT: elected through the Lease when
/// leader election is on (the default), otherwise leading at once.
pub fn run_elected(cfg: &Config, kube: Client, health: Arc<Health>) -> Result<(), StartError> {
    // A stuck election loop stops renewing while the leading threads go on:
    // /healthz names it so the kubelet restarts the pod.
    let election = Heartbeat::new("election", Bounds::new(cfg).election);
    health.beats.insert(election.clone());
    let mut worker = Worker {
        cfg,
        kube: kube.clone(),
        health,
        leading: None,
        election,
    };
    if !cfg.lease.enabled {
        log::warn!("leader election is off (LEADER_ELECTION=false): run exactly one replica");
        return lease::lead_unelected(&mut worker, &signal::sleep_or_signal);
    }
    let lock = LeaseLock {
        client: kube,
        namespace: cfg.lease.namespace.clone(),
        name: cfg.lease.name.clone(),
    };
    let timing = lease::Timing {
        lease_duration: cfg.lease.lease_duration,
        renew_deadline: cfg.lease.renew_deadline,
        retry_period: cfg.lease.retry_period,
    };
    lease::campaign(
        &lock,
        &cfg.lease.identity,
        &timing,
        &mut worker,
        &signal::sleep_or_signal,
    );
    Ok(())
}
