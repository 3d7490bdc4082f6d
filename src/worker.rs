//! Wiring: builds the threads of a leading worker — intake (poller), the Job
//! and Pod watchers, the tracker, the callback thread — connects them with typed
//! crossbeam channels, and stops them in order: intake first (no new Jobs), then
//! the tracker, then the callback thread, which flushes within the grace period.
//! Watch threads block in reads and are detached; they end with the process or
//! at their next event after `stop`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, select, tick, unbounded};
use serde_json::json;

use crate::callbacks::{self, Callback, CallbackMsg, Hooks, Outcome};
use crate::config::{Config, QueueConfig};
use crate::intake::Intake;
use crate::kube::Client;
use crate::kube::watch::{Machine, RestApi, Step};
use crate::metrics;
use crate::queue::Queue;
use crate::render::{ANN_DELIVERED, FINALIZER, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER};
use crate::tracker::{Action, Board, LiveJobs, Tracker, TrackerMsg, callback_msg};

/// Opens the configured queue.
pub fn open_queue(cfg: &Config) -> Result<Box<dyn Queue>, String> {
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
            )
            .map_err(|e| e.to_string())?;
            Ok(Box::new(q))
        }
        QueueConfig::Sqs {
            url,
            region,
            dead_letter_url,
        } => {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(10)))
                .build()
                .new_agent();
            let creds = crate::aws::provider_from_env(agent.clone()).map_err(|e| e.to_string())?;
            let mut q = crate::queue::sqs::SqsQueue::new(url, region, creds, agent)
                .map_err(|e| e.to_string())?;
            if let Some(d) = dead_letter_url {
                q = q.with_dead_letter_url(d).map_err(|e| e.to_string())?;
            }
            Ok(Box::new(q))
        }
    }
}

/// The label selector of this worker's Jobs and Pods.
pub fn selector(instance: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_INSTANCE}={instance}")
}

/// Records each settled callback on its Job and settles rejected messages.
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
            let res = if matches!(cb.status, 2 | 3 | 99) {
                // Terminal: the Job no longer needs holding for us.
                self.kube.release(&path, FINALIZER, &ann, &op)
            } else {
                self.kube
                    .merge_patch(&path, &json!({"metadata": {"annotations": ann}}), &op)
                    .map(|_| ())
            };
            if let Err(e) = res
                && e.code() != Some(404)
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

/// The threads of a leading worker.
pub struct Leading {
    stop: Arc<AtomicBool>,
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

fn spawn_watch(
    kube: Client,
    path: String,
    what: String,
    sel: String,
    stop: Arc<AtomicBool>,
    to: Sender<TrackerMsg>,
    wrap: fn(crate::kube::watch::Event) -> TrackerMsg,
) -> std::io::Result<()> {
    let name = format!("watch-{what}");
    spawn_named(&name, move || {
        let api = RestApi {
            client: kube,
            path,
            label_selector: sel,
            timeout_seconds: 290,
            what: what.clone(),
        };
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1);
        let mut m = Machine::new(api, seed);
        while !stop.load(Ordering::SeqCst) {
            match m.step() {
                Step::Event(ev) => {
                    if to.send(wrap(ev)).is_err() {
                        return;
                    }
                }
                Step::Restarted(r) => {
                    let reason = format!("{r:?}").to_lowercase();
                    metrics::inc(
                        "watch_restarts_total",
                        &[("resource", &what), ("reason", &reason)],
                    );
                }
                Step::Continue => {}
            }
            if let Some(d) = m.take_delay() {
                std::thread::sleep(d);
            }
        }
    })?;
    Ok(())
}

impl Leading {
    /// Starts every thread of a leader.
    pub fn start(
        cfg: &Config,
        kube: Client,
        queue: Box<dyn Queue>,
        cb_agent: ureq::Agent,
    ) -> Result<Leading, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(LiveJobs::default());
        let board: Board = Arc::new(Mutex::new(HashMap::new()));
        let (cb_tx, cb_rx) = unbounded::<CallbackMsg>();
        let (tr_tx, tr_rx) = unbounded::<TrackerMsg>();
        let (settle_tx, settle_rx) = unbounded::<u64>();

        let signing_secret = match &cfg.webhook_signing_secret {
            Some(s) => Some(
                callbacks::SigningKey::from_whsec(s)
                    .map_err(|e| format!("WEBHOOK_SIGNING_SECRET: {e}"))?,
            ),
            None => None,
        };
        let cb_cfg = callbacks::Config {
            request_timeout: cfg.callback_timeout,
            retry_horizon: cfg.callback_retry_horizon,
            backoff_initial: Duration::from_secs(1),
            backoff_max: cfg.callback_backoff_max,
            workers_per_host: 4,
            max_response_bytes: 4096,
            signing_secret,
            // Stopping intake can take one receive (POLLING_INTERVAL) and the
            // tracker one tick; the rest of SHUTDOWN_GRACE is for flushing.
            shutdown_grace: cfg
                .shutdown_grace
                .saturating_sub(cfg.polling_interval + Duration::from_secs(2))
                .max(Duration::from_secs(1)),
            guard: Some(cfg.webhook_guard.clone()),
            ..callbacks::Config::default()
        };
        let hooks = Arc::new(Recorder {
            kube: kube.clone(),
            settled: settle_tx,
        });
        let callbacks =
            callbacks::spawn(cb_cfg, cb_agent, cb_rx, hooks).map_err(|e| e.to_string())?;

        // Watches: per namespace when an allowlist is set, cluster-wide otherwise.
        let sel = selector(&cfg.render.instance);
        let scopes: Vec<(String, String)> = if cfg.allowed_namespaces.is_empty() {
            vec![("/apis/batch/v1/jobs".into(), "/api/v1/pods".into())]
        } else {
            cfg.allowed_namespaces
                .iter()
                .map(|ns| {
                    (
                        format!("/apis/batch/v1/namespaces/{ns}/jobs"),
                        format!("/api/v1/namespaces/{ns}/pods"),
                    )
                })
                .collect()
        };
        for (jobs, pods) in scopes {
            spawn_watch(
                kube.clone(),
                jobs,
                "jobs".into(),
                sel.clone(),
                stop.clone(),
                tr_tx.clone(),
                TrackerMsg::Jobs,
            )
            .map_err(|e| e.to_string())?;
            spawn_watch(
                kube.clone(),
                pods,
                "pods".into(),
                sel.clone(),
                stop.clone(),
                tr_tx.clone(),
                TrackerMsg::Pods,
            )
            .map_err(|e| e.to_string())?;
        }

        let tracker = {
            let t = Tracker::new(live.clone(), board.clone(), cfg.pod_start_timeout);
            let (stop, kube, cb_tx, tr_tx) =
                (stop.clone(), kube.clone(), cb_tx.clone(), tr_tx.clone());
            spawn_named("tracker", move || {
                run_tracker(t, tr_rx, tr_tx, cb_tx, kube, stop)
            })
            .map_err(|e| e.to_string())?
        };

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
            polling_interval: cfg.polling_interval,
            sweep_interval: cfg.lease.lease_duration,
            callback_horizon: cfg.callback_retry_horizon,
            stop: stop.clone(),
        };
        let intake = spawn_named("intake", move || intake.run()).map_err(|e| e.to_string())?;
        Ok(Leading {
            stop,
            intake: Some(intake),
            tracker: Some(tracker),
            callbacks: Some(callbacks),
            cb_ctl: Some(cb_ctl),
            live,
            board,
        })
    }

    /// Stops in order and joins: intake, tracker, then callbacks (which flush).
    pub fn stop(mut self, abort: bool) {
        self.stop.store(true, Ordering::SeqCst);
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
    }

    /// True while every thread is alive (for /healthz).
    pub fn healthy(&self) -> bool {
        [&self.intake, &self.tracker, &self.callbacks]
            .iter()
            .all(|h| h.as_ref().is_some_and(|h| !h.is_finished()))
    }
}

fn join(h: JoinHandle<()>) {
    let name = h.thread().name().unwrap_or("?").to_string();
    if h.join().is_err() {
        log::error!("thread {name} panicked");
    }
}

fn run_tracker(
    mut t: Tracker,
    rx: Receiver<TrackerMsg>,
    me: Sender<TrackerMsg>,
    cb: Sender<CallbackMsg>,
    kube: Client,
    stop: Arc<AtomicBool>,
) {
    let ticker = tick(Duration::from_secs(1));
    loop {
        let actions = select! {
            recv(rx) -> m => match m {
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
            match &a {
                Action::Callback { .. } => {
                    if let Some(m) = callback_msg(&a) {
                        let _ = cb.send(m);
                    }
                }
                Action::Release {
                    namespace,
                    name,
                    status,
                } => {
                    let path = format!("/apis/batch/v1/namespaces/{namespace}/jobs/{name}");
                    let ann = json!({ANN_DELIVERED: status.to_string()});
                    if let Err(e) = kube.release(
                        &path,
                        FINALIZER,
                        &ann,
                        &format!("release job {namespace}/{name}"),
                    ) {
                        log::warn!("{e}");
                    }
                }
                Action::DeleteJob { namespace, name } => {
                    let path = format!("/apis/batch/v1/namespaces/{namespace}/jobs/{name}");
                    if let Err(e) = kube.delete(
                        &path,
                        "Background",
                        &format!("delete job {namespace}/{name}"),
                    ) {
                        log::warn!("{e}");
                    }
                }
                Action::FetchPods { namespace, name } => {
                    let q = format!(
                        "labelSelector={}",
                        crate::kube::client::urlencode(&format!(
                            "batch.kubernetes.io/job-name={name}"
                        ))
                    );
                    match kube.list_all(
                        &format!("/api/v1/namespaces/{namespace}/pods"),
                        &q,
                        &format!("list pods of job {namespace}/{name}"),
                    ) {
                        Ok((pods, _)) => {
                            for p in pods {
                                let _ = me
                                    .send(TrackerMsg::Pods(crate::kube::watch::Event::Applied(p)));
                            }
                        }
                        Err(e) => log::warn!("{e}"),
                    }
                }
            }
        }
    }
}

/// The agent for webhooks: built-in Mozilla roots (or exactly WEBHOOK_CA_FILE's
/// certificates), no redirects, status codes as values.
pub fn webhook_agent(ca_file: Option<&std::path::Path>) -> Result<ureq::Agent, String> {
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(format!("k8s-job-worker/{}", crate::VERSION))
        .timeout_connect(Some(Duration::from_secs(5)));
    if let Some(ca) = ca_file {
        b = b.tls_config(
            crate::kube::client::tls_with_ca(ca).map_err(|e| format!("WEBHOOK_CA_FILE: {e}"))?,
        );
    }
    Ok(b.build().new_agent())
}

/// Sleeps up to `d`, waking early when a signal arrives; true if one did.
fn sleep_or_signal(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if crate::signal::received() != 0 {
            return true;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())),
        );
    }
    crate::signal::received() != 0
}

fn start_leading(
    cfg: &Config,
    kube: &Client,
    health: &crate::http::Health,
) -> Result<Leading, String> {
    let queue = open_queue(cfg)?;
    let leading = Leading::start(
        cfg,
        kube.clone(),
        queue,
        webhook_agent(cfg.webhook_ca_file.as_deref())?,
    )?;
    *health.board.lock().unwrap_or_else(|e| e.into_inner()) = Some(leading.board.clone());
    health.leader.store(true, Ordering::SeqCst);
    metrics::set("leader", &[], 1.0);
    Ok(leading)
}

fn stop_leading(leading: Leading, health: &crate::http::Health, abort: bool) {
    health.leader.store(false, Ordering::SeqCst);
    metrics::set("leader", &[], 0.0);
    leading.stop(abort);
}

/// Runs the worker until SIGTERM/SIGINT: elected through the Lease when
/// leader election is on (the default), otherwise leading at once.
pub fn run_elected(
    cfg: &Config,
    kube: Client,
    health: Arc<crate::http::Health>,
) -> Result<(), String> {
    use crate::kube::lease::{Attempt, Candidate, LeaseLock, Role, Transition, after_attempt};
    if !cfg.lease.enabled {
        log::warn!("leader election is off (LEADER_ELECTION=false): run exactly one replica");
        let leading = start_leading(cfg, &kube, &health)?;
        health.ready.store(true, Ordering::SeqCst);
        while !sleep_or_signal(Duration::from_millis(500)) {
            health.alive.store(leading.healthy(), Ordering::SeqCst);
        }
        log::info!("signal {} received: stopping", crate::signal::received());
        stop_leading(leading, &health, false);
        return Ok(());
    }
    let lock = LeaseLock {
        client: kube.clone(),
        namespace: cfg.lease.namespace.clone(),
        name: cfg.lease.name.clone(),
    };
    let me = cfg.lease.identity.clone();
    let mut cand = Candidate::default();
    let mut role = Role::Follower;
    let mut leading: Option<Leading> = None;
    let mut last_holder: Option<String> = None;
    log::info!(
        "campaigning for lease {}/{} as {me}",
        lock.namespace,
        lock.name
    );
    loop {
        let now = Instant::now();
        let attempt = match cand.try_acquire_or_renew(
            &lock,
            &me,
            cfg.lease.lease_duration,
            now,
            SystemTime::now(),
        ) {
            Ok(true) => Attempt::Held,
            Ok(false) => Attempt::Lost,
            Err(e) => {
                log::warn!("{e}");
                Attempt::Error
            }
        };
        health.ready.store(
            attempt != Attempt::Error || leading.is_some(),
            Ordering::SeqCst,
        );
        let holder = cand.holder().map(str::to_string);
        if holder != last_holder {
            log::info!(
                "lease {}/{} held by {}",
                lock.namespace,
                lock.name,
                holder.as_deref().unwrap_or("nobody")
            );
            last_holder = holder;
        }
        let (next, t) = after_attempt(role, attempt, now, cfg.lease.renew_deadline);
        role = next;
        match t {
            Transition::StartLeading => {
                log::info!("became leader of {}/{}", lock.namespace, lock.name);
                match start_leading(cfg, &kube, &health) {
                    Ok(l) => leading = Some(l),
                    Err(e) => {
                        log::error!("cannot start leading: {e}; releasing the lease");
                        let _ = cand.release(&lock, &me, SystemTime::now());
                        role = Role::Follower;
                    }
                }
            }
            Transition::StopLeading => {
                log::warn!(
                    "lost the lease {}/{}: stopping all work and campaigning again",
                    lock.namespace,
                    lock.name
                );
                if let Some(l) = leading.take() {
                    stop_leading(l, &health, true);
                }
            }
            Transition::None => {}
        }
        if let Some(l) = &leading {
            health.alive.store(l.healthy(), Ordering::SeqCst);
        }
        if sleep_or_signal(cfg.lease.retry_period) {
            break;
        }
    }
    log::info!("signal {} received: stopping", crate::signal::received());
    if let Some(l) = leading.take() {
        stop_leading(l, &health, false);
        match cand.release(&lock, &me, SystemTime::now()) {
            Ok(()) => log::info!("released lease {}/{}", lock.namespace, lock.name),
            Err(e) => log::warn!("could not release the lease: {e}"),
        }
    }
    Ok(())
}
