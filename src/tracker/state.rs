//! The tracker's state machine: per Job, the stage of its callback sequence
//! and what the watches have shown of it; `Tracker::handle` and `Tracker::tick`
//! turn events into `Action`s for the thread loop (`mod.rs`) to perform. Pure
//! apart from metrics and the shared board: no API calls, no clock of its own
//! (`now` and `wall` come in as arguments).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::board::{self, Board, JobView, LiveJobs, Slot, Stamp};
use super::observe::{self, JobObject, PodInfo, Terminal};
use super::timer::{Delay, Seen, Timer};
use crate::cancel::{self, Consumed, ForJob, Tombstones};
use crate::contract::{ErrorCode, Status, detail};
use crate::kube::watch::Event;
use crate::metrics;
use crate::webhook_guard::WebhookUrl;

/// Messages into the tracker thread (closed set).
#[derive(Debug)]
pub enum TrackerMsg {
    /// A Job intake created or adopted (the API server's copy).
    Created {
        job: Value,
        received_at: Instant,
    },
    /// An event of the cluster-wide Job watch.
    Jobs(Event),
    /// An event of one namespace's Job watch (ALLOWED_NAMESPACES): its relist
    /// speaks for that namespace's Jobs only.
    NamespaceJobs(String, Event),
    Pods(Event),
    /// A message intake refused (its 99 is on its way); shown by /jobs/{id}.
    Rejected {
        id: String,
        code: crate::contract::ErrorCode,
    },
    /// A cancel tombstone for message `id` exists (just written by intake,
    /// `fresh`, or listed when this leader started): apply it to its Job.
    Cancel {
        id: String,
        fresh: bool,
    },
}

/// What the tracker asks its thread to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    Callback {
        message_id: String,
        status: Status,
        detail: Value,
        url: Option<WebhookUrl>,
        job: (String, String),
        /// The uid of the Job the callback is about (empty if not yet known):
        /// a newer Job may take the name, and must not get this one's record.
        uid: String,
    },
    /// Delete a Job (background propagation), e.g. after POD_START_TIMEOUT.
    DeleteJob { namespace: String, name: String },
    /// Remove our finalizer from a Job whose terminal status an earlier leader
    /// already settled (it died before releasing the Job).
    Release {
        namespace: String,
        name: String,
        status: Status,
    },
    /// List the pods of a Job to learn about a pod the watch has not shown.
    FetchPods { namespace: String, name: String },
    /// Start a delayed Job at its start time (one merge PATCH removing its
    /// start-after annotation): unsuspend it, or with `queue` hand it to
    /// Kueue (label `kueue.x-k8s.io/queue-name`, still suspended).
    StartJob {
        namespace: String,
        name: String,
        queue: Option<String>,
    },
    /// Cancel a live Job: write `cancelled-at` and suspend it, mark its
    /// waiting tombstone (`tombstone`, its name) consumed, then delete it
    /// (background). Each step only after the one before it succeeded.
    CancelJob {
        namespace: String,
        name: String,
        id: String,
        at: String,
        tombstone: Option<String>,
    },
    /// Mark a tombstone consumed without touching a Job (its Job had finished).
    ConsumeTombstone {
        id: String,
        tombstone: String,
        how: Consumed,
    },
}

/// How long a cancel in progress waits before the tracker asks again (a
/// step failed, or the Job's deletion has not shown yet).
pub(super) const CANCEL_RETRY: Duration = Duration::from_secs(10);

/// How long a terminal status waits for the pod details it should carry.
pub(super) const POD_INFO_GRACE: Duration = Duration::from_secs(3);

/// Where a Job is in its callback sequence. Stages only move forward, in
/// declaration order; a stage is reached when its status is queued in this
/// worker's lifetime or found recorded in the Job's `delivered` annotation.
/// Whether the Job may run is a separate fact (`Admission`), since Kueue can
/// suspend it again at any stage (eviction, preemption) without moving it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing sent yet: status 0 is owed.
    New,
    /// 0 sent; 1 is owed once a pod starts.
    Created,
    /// 1 sent; a terminal status is owed.
    Running,
    /// This worker queued the terminal status; nothing more is owed.
    Finished,
    /// An earlier worker recorded the terminal `status` as settled; if it died
    /// before removing our finalizer, we remove it (`released` once asked).
    Settled { status: Status, released: bool },
}

impl Stage {
    fn is_done(self) -> bool {
        matches!(self, Stage::Finished | Stage::Settled { .. })
    }

    /// The stage after queuing `status`.
    fn sent(self, status: Status) -> Stage {
        match status {
            Status::Created => Stage::Created,
            Status::Running => Stage::Running,
            Status::Complete | Status::Failed | Status::Exception => Stage::Finished,
        }
    }

    /// The stage once the Job says `status` was settled by some worker.
    fn recorded(self, status: Status) -> Stage {
        match (self, status) {
            (Stage::Settled { released, .. }, s) if s.is_terminal() => Stage::Settled {
                status: s,
                released,
            },
            (_, s) if s.is_terminal() => Stage::Settled {
                status: s,
                released: false,
            },
            (Stage::New | Stage::Created, Status::Running) => Stage::Running,
            (Stage::New, Status::Created) => Stage::Created,
            (stage, _) => stage,
        }
    }
}

/// Whether a Job may run: the fact beside its `Stage`. A waiting Job is never
/// stuck (no POD_START_TIMEOUT) and counts against MAX_QUEUED_JOBS, not
/// MAX_CONCURRENT_JOBS; Kueue moves a Job back and forth between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Suspended (`spec.suspend`): waiting in its queue for admission.
    Waiting,
    /// Unsuspended since `since` (last resume, or creation if never suspended);
    /// POD_START_TIMEOUT counts from there.
    Admitted { since: SystemTime },
}

impl Admission {
    /// The fact after a Job object says `seen`, at wall-clock `wall`.
    fn after(self, seen: observe::Admission, wall: SystemTime) -> Admission {
        match (seen, self) {
            (observe::Admission::Suspended, _) => Admission::Waiting,
            (observe::Admission::Resumed { since: Some(since) }, _) => {
                Admission::Admitted { since }
            }
            // Resumed, but its condition is not updated yet: keep what we know,
            // or count from now.
            (observe::Admission::Resumed { since: None }, Admission::Admitted { since }) => {
                Admission::Admitted { since }
            }
            (observe::Admission::Resumed { since: None }, Admission::Waiting) => {
                Admission::Admitted { since: wall }
            }
        }
    }

    fn slot(self) -> Slot {
        match self {
            Admission::Waiting => Slot::Queued,
            Admission::Admitted { .. } => Slot::Admitted,
        }
    }
}

/// How the Jobs watch has seen a Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Known only from intake; `misses` relists did not contain it (it may be
    /// newer than their snapshot).
    FromIntake { misses: u8 },
    /// Seen on the Jobs watch (list or event).
    Watched,
}

/// A terminal condition, held briefly for the pod details it should carry.
#[derive(Debug, Clone)]
struct Ending {
    terminal: Terminal,
    seen: Instant,
    /// The Job's pods were listed once to learn what the watch missed.
    fetched_pods: bool,
}

#[derive(Debug)]
struct Tracked {
    // The message id, namespace and Job name are the view's (`view.id`,
    // `view.namespace`, `view.job_name`): one copy of each per Job.
    uid: String,
    webhook: Option<WebhookUrl>,
    created: Option<SystemTime>,
    stage: Stage,
    admission: Admission,
    /// Its Kueue LocalQueue, when it was queued.
    queue_name: Option<String>,
    /// Its delayed start (`timer.rs`).
    delay: Delay,
    /// Boxed: most Jobs in flight have none, and a slot stays a pointer.
    ending: Option<Box<Ending>>,
    /// The Job has a deletionTimestamp (held by our finalizer).
    deleting: bool,
    /// Our finalizer is on the Job.
    held: bool,
    /// queue_to_job_seconds was observed for this Job (once).
    latency_observed: bool,
    /// When its cancel was received (`cancelled-at`): 3 CANCELLED is owed.
    cancelled_at: Option<String>,
    /// When this worker last asked for the cancel's writes.
    cancel_asked: Option<Instant>,
    listing: Listing,
    /// Shared with the board once shown (one copy per Job, not two).
    view: Arc<JobView>,
}

pub struct Tracker {
    /// Boxed: a table slot is a pointer, not the whole record, so the
    /// table's spare capacity and its growth (old and new table side by side)
    /// cost little with thousands of Jobs in flight.
    jobs: HashMap<String, Box<Tracked>>,
    /// Latest pod info per Job key ("ns/name"), kept even before the Job is known.
    /// Boxed, like `jobs`: the table's slots stay small as it grows.
    pods: HashMap<String, Box<PodInfo>>,
    pub(super) live: Arc<LiveJobs>,
    board: Board,
    pod_start_timeout: Duration,
    /// uids of Jobs reported gone (or whose name a newer Job took): a late
    /// sighting of one starts nothing again.
    gone: HashSet<String>,
    /// The start times of the delayed Jobs.
    timer: Timer,
    /// MAX_CONCURRENT_JOBS (0 = unlimited): a delayed Job starts only into a
    /// free admitted slot.
    max_concurrent: usize,
    /// The leader's cancel tombstones (none in table tests that do not cancel).
    cancels: Option<Arc<Tombstones>>,
}

/// At most this many uids are remembered as gone (bounded memory).
const MAX_GONE: usize = 100_000;

/// The 99 detail of a Job deleted before it finished.
fn job_deleted(ns: &str, name: &str) -> Value {
    let text = format!("Job {ns}/{name} was deleted before it finished");
    detail::error(&ErrorCode::JobDeleted, &text)
}

impl Tracker {
    pub fn new(live: Arc<LiveJobs>, board: Board, pod_start_timeout: Duration) -> Tracker {
        Tracker {
            jobs: HashMap::new(),
            pods: HashMap::new(),
            live,
            board,
            pod_start_timeout,
            gone: HashSet::new(),
            timer: Timer::default(),
            max_concurrent: 0,
            cancels: None,
        }
    }

    /// Delayed Jobs start only while fewer than `cap` Jobs are admitted
    /// (MAX_CONCURRENT_JOBS, 0 = unlimited).
    pub fn with_max_concurrent(mut self, cap: usize) -> Tracker {
        self.max_concurrent = cap;
        self
    }

    /// The tracker applies the cancel tombstones of `index` to its Jobs.
    pub fn with_cancels(mut self, index: Arc<Tombstones>) -> Tracker {
        self.cancels = Some(index);
        self
    }

    /// Remembers a Job's uid as gone.
    fn forget(&mut self, uid: String) {
        if uid.is_empty() {
            return;
        }
        if self.gone.len() >= MAX_GONE {
            self.gone.clear();
        }
        self.gone.insert(uid);
    }

    fn is_gone(&self, job: &Value) -> bool {
        job.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .is_some_and(|uid| self.gone.contains(uid))
    }

    /// Handles one message and returns what to do, in order.
    pub fn handle(&mut self, msg: TrackerMsg, now: Instant, wall: SystemTime) -> Vec<Action> {
        let mut out = Vec::new();
        match msg {
            TrackerMsg::Created { job, received_at } => {
                if let Some(key) = self.upsert_job(&job, now, wall) {
                    if let Some(t) = self.jobs.get_mut(&key)
                        && !t.latency_observed
                    {
                        t.latency_observed = true;
                        metrics::observe(
                            metrics::QUEUE_TO_JOB_SECONDS,
                            &[],
                            now.duration_since(received_at).as_secs_f64(),
                        );
                    }
                    self.advance(&key, now, wall, &mut out);
                }
            }
            TrackerMsg::Rejected { id, code } => {
                let ts = Stamp(wall);
                let view = JobView {
                    id: id.clone(),
                    status: Some(Status::Exception),
                    status_name: Some(format!("exception ({code})").into()),
                    finished_at: Some(ts),
                    updated_at: Some(ts),
                    ..JobView::default()
                };
                board::show(&self.board, id, Arc::new(view));
            }
            TrackerMsg::Cancel { id, fresh } => {
                let keys: Vec<String> = self
                    .jobs
                    .iter()
                    .filter(|(_, t)| t.view.id == id)
                    .map(|(k, _)| k.clone())
                    .collect();
                if keys.is_empty() {
                    if fresh {
                        metrics::inc(metrics::CANCELS, &[("outcome", "early")]);
                        log::info!(
                            "message {id}: cancel recorded before its job request; no pod of it will run"
                        );
                    }
                    return out;
                }
                for key in keys {
                    self.advance(&key, now, wall, &mut out);
                }
            }
            TrackerMsg::Jobs(Event::Applied(job)) => {
                if let Some(key) = self.upsert_job(&job, now, wall) {
                    self.mark_watched(&key);
                    self.advance(&key, now, wall, &mut out);
                }
            }
            TrackerMsg::Jobs(Event::Deleted(job)) => {
                if self.is_gone(&job) {
                    return out; // an older Job of the name: the tracked one lives on
                }
                let key = observe::job_object_key(&job);
                // A deleted Job's final state may carry its terminal condition.
                if self.upsert_job(&job, now, wall).is_some() {
                    self.advance(&key, now, wall, &mut out);
                }
                self.job_gone(&key, wall, &mut out);
            }
            TrackerMsg::Jobs(Event::Restarted(list)) => {
                self.relisted(None, &list, now, wall, &mut out);
            }
            TrackerMsg::NamespaceJobs(ns, Event::Restarted(list)) => {
                self.relisted(Some(&ns), &list, now, wall, &mut out);
            }
            TrackerMsg::NamespaceJobs(_, event) => {
                return self.handle(TrackerMsg::Jobs(event), now, wall);
            }
            TrackerMsg::Pods(Event::Applied(pod)) => {
                if let Some(key) = self.upsert_pod(&pod) {
                    self.advance(&key, now, wall, &mut out);
                }
            }
            TrackerMsg::Pods(Event::Deleted(pod)) => {
                // Keep what we learned: a terminal status may still need it.
                if let Some(key) = self.upsert_pod(&pod) {
                    self.advance(&key, now, wall, &mut out);
                }
            }
            TrackerMsg::Pods(Event::Restarted(list)) => {
                for pod in &list {
                    if let Some(key) = self.upsert_pod(pod) {
                        self.advance(&key, now, wall, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Periodic work: pod start timeouts and terminal statuses held for pod info.
    pub fn tick(&mut self, now: Instant, wall: SystemTime) -> Vec<Action> {
        let mut out = Vec::new();
        let keys: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, t)| !t.stage.is_done())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.advance(&key, now, wall, &mut out);
        }
        self.start_due(now, wall, &mut out);
        // Forget pods whose Job is unknown and long gone from view.
        if self.pods.len() > 4 * self.jobs.len() + 1000 {
            let jobs = &self.jobs;
            self.pods.retain(|k, _| jobs.contains_key(k));
        }
        out
    }

    /// Starts the delayed Jobs whose time has come, earliest first: a queued
    /// one is handed to Kueue; another is unsuspended only into a free
    /// admitted slot (MAX_CONCURRENT_JOBS), else it stays suspended, holding
    /// its queued slot and claiming the next admitted one before intake does.
    fn start_due(&mut self, now: Instant, wall: SystemTime, out: &mut Vec<Action>) {
        let mut blocked = 0;
        for key in self.timer.due(wall) {
            let Some(t) = self.jobs.get_mut(&key) else {
                self.timer.set(&key, None);
                continue;
            };
            if t.cancelled_at.is_some() {
                // Cancelled while it waited: it is never started.
                self.timer.set(&key, None);
                continue;
            }
            let (at, queue) = match &t.delay {
                Delay::Waiting { at, queue } => (*at, queue.clone()),
                Delay::Starting { asked, .. }
                    if now.duration_since(*asked) < super::timer::START_RETRY =>
                {
                    continue;
                }
                Delay::Starting { at, queue, .. } => (*at, queue.clone()),
                Delay::None => {
                    self.timer.set(&key, None);
                    continue;
                }
            };
            let admitted = matches!(t.delay, Delay::Starting { queue: None, .. });
            if queue.is_none() && !admitted && !self.live.try_start(&key, self.max_concurrent) {
                blocked += 1;
                continue;
            }
            log::info!(
                "message {} job {}/{}: starting (start after {}{})",
                t.view.id,
                t.view.namespace,
                t.view.job_name,
                crate::schedule::annotation(at),
                queue
                    .as_deref()
                    .map(|q| format!(", into Kueue queue {q}"))
                    .unwrap_or_default()
            );
            metrics::inc(metrics::DELAYED_STARTS, &[]);
            t.delay = Delay::Starting {
                at,
                queue: queue.clone(),
                asked: now,
            };
            out.push(Action::StartJob {
                namespace: t.view.namespace.clone(),
                name: t.view.job_name.clone(),
                queue,
            });
        }
        self.live.set_due(blocked);
    }

    #[cfg(test)]
    pub(super) fn board_for_tests(&self) -> std::collections::HashMap<String, JobView> {
        self.board
            .lock()
            .map(|b| {
                b.iter()
                    .map(|(k, v)| (k.clone(), JobView::clone(v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn mark_watched(&mut self, key: &str) {
        if let Some(t) = self.jobs.get_mut(key) {
            t.listing = Listing::Watched;
        }
    }

    fn upsert_pod(&mut self, pod: &Value) -> Option<String> {
        let key = observe::pod_job_key(pod)?;
        let info = observe::pod_info(pod);
        let entry = self.pods.entry(key.clone()).or_default();
        // The first pod that started is the one reported in status 1; later pods
        // (retries, or a pod after Kueue re-admitted the Job) only add how they
        // ended: a failure, or the result of the one that succeeded.
        if entry.uid.is_empty() || (!entry.started && info.started) || entry.uid == info.uid {
            let keep_failure = entry.failed_container.take();
            let keep_result = entry.result.take();
            **entry = info;
            if entry.failed_container.is_none() {
                entry.failed_container = keep_failure;
            }
            if entry.result.is_none() {
                entry.result = keep_result;
            }
        } else {
            if info.failed_container.is_some() {
                entry.failed_container = info.failed_container;
            }
            if info.result.is_some() {
                entry.result = info.result;
            }
        }
        Some(key)
    }

    fn upsert_job(&mut self, job: &Value, now: Instant, wall: SystemTime) -> Option<String> {
        if self.is_gone(job) {
            return None;
        }
        let JobObject {
            key,
            namespace,
            name,
            id,
            uid,
            webhook,
            delivered,
            deleting,
            held,
            created,
            terminal,
            queue_name,
            admission,
            start_after,
            delayed_queue,
            cancelled_at,
        } = observe::job_object(job)?;
        let t = self.jobs.entry(key.clone()).or_insert_with(|| {
            Box::new(Tracked {
                view: Arc::new(JobView {
                    id,
                    namespace,
                    job_name: name,
                    ..JobView::default()
                }),
                uid: String::new(),
                webhook: None,
                created: None,
                stage: Stage::New,
                admission: Admission::Waiting,
                queue_name: None,
                delay: Delay::None,
                ending: None,
                deleting: false,
                held: false,
                latency_observed: false,
                cancelled_at: None,
                cancel_asked: None,
                listing: Listing::FromIntake { misses: 0 },
            })
        });
        let mut stale = None;
        if let Some(uid) = uid {
            if !t.uid.is_empty() && t.uid != uid {
                // The name now belongs to a newer Job: the old one is stale.
                stale = Some(std::mem::replace(&mut t.uid, uid));
            } else {
                t.uid = uid;
            }
        }
        t.webhook = webhook;
        if cancelled_at.is_some() {
            t.cancelled_at = cancelled_at;
        }
        t.deleting = deleting;
        t.held = held;
        t.created = created.or(t.created);
        t.admission = t.admission.after(admission, wall);
        let seen = Seen {
            at: start_after,
            queue: delayed_queue.clone(),
            suspended: admission == observe::Admission::Suspended,
            queue_labelled: queue_name.is_some(),
        };
        t.delay = std::mem::replace(&mut t.delay, Delay::None).after(&seen, now);
        if queue_name.is_some() {
            t.queue_name = queue_name;
        } else if delayed_queue.is_some() {
            t.queue_name = delayed_queue;
        }
        let shown = match (t.admission, &t.queue_name) {
            (Admission::Waiting, _) if t.delay != Delay::None => Some("delayed"),
            (Admission::Waiting, _) => Some("queued"),
            (Admission::Admitted { .. }, Some(_)) => Some("admitted"),
            (Admission::Admitted { .. }, None) => None,
        };
        // Written only when changed: the board shares the view until then.
        if t.view.queue_name != t.queue_name || t.view.admission != shown {
            let v = Arc::make_mut(&mut t.view);
            v.queue_name = t.queue_name.clone();
            v.admission = shown;
        }
        if t.view.created_at.is_none() && created.is_some() {
            Arc::make_mut(&mut t.view).created_at = created.map(Stamp);
        }
        if let Some(d) = delivered {
            t.stage = t.stage.recorded(d);
        }
        if let (None, Some(terminal)) = (&t.ending, terminal) {
            t.ending = Some(Box::new(Ending {
                terminal,
                seen: now,
                fetched_pods: false,
            }));
        }
        let timed = (!t.stage.is_done() && !t.deleting && t.cancelled_at.is_none())
            .then(|| t.delay.at())
            .flatten();
        self.timer.set(&key, timed);
        if !t.stage.is_done() {
            // A start in flight already holds its admitted slot.
            let slot = if t.delay.holds_admitted_slot() {
                Slot::Admitted
            } else {
                t.admission.slot()
            };
            self.live.insert(&key, slot);
            if let Some(service) = observe::service(job) {
                self.live.tag(&key, service);
            }
        } else {
            // An adopted Job that already finished: intake counted it.
            self.live.end(&key);
        }
        if let Some(old) = stale {
            self.forget(old);
        }
        Some(key)
    }

    fn emit(
        t: &mut Tracked,
        status: Status,
        detail: Value,
        wall: SystemTime,
        out: &mut Vec<Action>,
    ) {
        t.stage = t.stage.sent(status);
        let ts = Stamp(wall);
        let view = Arc::make_mut(&mut t.view);
        view.status = Some(status);
        view.status_name = Some(status.name().into());
        view.updated_at = Some(ts);
        match status {
            Status::Created => {}
            Status::Running => view.started_at = Some(ts),
            Status::Complete | Status::Failed | Status::Exception => view.finished_at = Some(ts),
        }
        log::info!(
            "message {} job {}/{}: status {status} ({})",
            t.view.id,
            t.view.namespace,
            t.view.job_name,
            status.name()
        );
        out.push(Action::Callback {
            message_id: t.view.id.clone(),
            status,
            detail,
            url: t.webhook.clone(),
            job: (t.view.namespace.clone(), t.view.job_name.clone()),
            uid: t.uid.clone(),
        });
    }

    fn finish(&mut self, key: &str, result: &str) {
        self.timer.set(key, None);
        if self.jobs.contains_key(key) {
            metrics::inc(metrics::JOBS_FINISHED, &[("result", result)]);
        }
        self.live.end(key);
    }

    fn publish(&self, key: &str) {
        if let Some(t) = self.jobs.get(key) {
            board::show(&self.board, t.view.id.clone(), t.view.clone());
        }
    }

    /// Applies a waiting cancel tombstone of the Job's id: a live Job is
    /// marked cancelled (the writes follow in `advance`), a finished one only
    /// consumes the tombstone.
    fn check_cancel(&mut self, key: &str, out: &mut Vec<Action>) {
        let Some(index) = &self.cancels else {
            return;
        };
        let Some(t) = self.jobs.get_mut(key) else {
            return;
        };
        if t.cancelled_at.is_some() {
            return;
        }
        let Some(tomb) = index.get(&t.view.id) else {
            return;
        };
        let finished = t.stage.is_done() || t.ending.is_some();
        match cancel::for_job(finished, false, Some(&tomb)) {
            ForJob::Nothing => {}
            ForJob::Cancel { at } => {
                metrics::inc(metrics::CANCELS, &[("outcome", "cancelled")]);
                log::info!(
                    "message {} job {}/{}: cancelled by request at {at}; deleting it",
                    t.view.id,
                    t.view.namespace,
                    t.view.job_name
                );
                t.cancelled_at = Some(at);
            }
            ForJob::AlreadyFinished => {
                metrics::inc(metrics::CANCELS, &[("outcome", "already_finished")]);
                log::info!(
                    "message {} job {}/{}: cancel received after it finished; nothing changes",
                    t.view.id,
                    t.view.namespace,
                    t.view.job_name
                );
                // Marked at once, so that neither a second event nor the
                // tick asks again; `perform` writes it.
                index.mark(&t.view.id, Consumed::AlreadyFinished);
                out.push(Action::ConsumeTombstone {
                    id: t.view.id.clone(),
                    tombstone: tomb.name,
                    how: Consumed::AlreadyFinished,
                });
            }
        }
    }

    /// Emits whatever the Job is owed now, in order.
    fn advance(&mut self, key: &str, now: Instant, wall: SystemTime, out: &mut Vec<Action>) {
        self.check_cancel(key, out);
        let waiting_tombstone = self.jobs.get(key).and_then(|t| {
            let index = self.cancels.as_ref()?;
            t.cancelled_at.as_ref()?;
            index.get(&t.view.id).filter(|tb| tb.consumed.is_none())
        });
        let pod = self.pods.get(key).map(|p| PodInfo::clone(p));
        let timeout = self.pod_start_timeout;
        let Some(t) = self.jobs.get_mut(key) else {
            return;
        };
        if let Stage::Settled {
            status,
            released: false,
        } = t.stage
            && t.held
        {
            t.stage = Stage::Settled {
                status,
                released: true,
            };
            out.push(Action::Release {
                namespace: t.view.namespace.clone(),
                name: t.view.job_name.clone(),
                status,
            });
        }
        if t.stage.is_done() {
            return;
        }
        // A Job cancelled before its 0 (created cancelled) gets only its 3.
        if t.stage == Stage::New && t.cancelled_at.is_none() {
            let mut detail = detail::created(&t.uid, &t.view.job_name, t.queue_name.as_deref());
            if let Some(at) = t.delay.at() {
                detail::add_start_after(&mut detail, &crate::schedule::annotation(at));
            }
            Self::emit(t, Status::Created, detail, wall, out);
        }
        let pod_started = pod.as_ref().is_some_and(|p| p.started);
        // After a cancel, no new 1: a pod stopped by it shows as terminated.
        if t.stage == Stage::Created && pod_started && t.cancelled_at.is_none() {
            let p = pod.clone().unwrap_or_default();
            let detail = detail::running(&p.uid, &p.name);
            Self::emit(t, Status::Running, detail, wall, out);
        }
        // Cancelled: 3 CANCELLED once the Job shows its deletion (whatever a
        // pod stopped by the cancel reported in between); until then, the
        // cancel's writes, asked again every CANCEL_RETRY.
        if let Some(at) = t.cancelled_at.clone() {
            if t.deleting {
                let detail = detail::error(&ErrorCode::Cancelled, &cancel::reason(&at));
                Self::emit(t, Status::Failed, detail, wall, out);
                self.finish(key, "cancelled");
                self.publish(key);
                return;
            }
            if t.cancel_asked
                .is_none_or(|asked| now.duration_since(asked) >= CANCEL_RETRY)
            {
                t.cancel_asked = Some(now);
                out.push(Action::CancelJob {
                    namespace: t.view.namespace.clone(),
                    name: t.view.job_name.clone(),
                    id: t.view.id.clone(),
                    at,
                    tombstone: waiting_tombstone.map(|tb| tb.name),
                });
            }
            self.publish(key);
            return;
        }
        if let Some(ending) = &mut t.ending {
            let term = ending.terminal.clone();
            let waited = now.duration_since(ending.seen);
            let need_pod = t.stage == Stage::Created;
            let need_failure = matches!(term, Terminal::Failed { .. })
                && pod.as_ref().is_none_or(|p| p.failed_container.is_none());
            // Status 2 carries the termination message of the pod that succeeded.
            let need_result = matches!(term, Terminal::Complete { .. })
                && pod.as_ref().is_none_or(|p| p.result.is_none());
            if (need_pod || need_failure || need_result) && waited < POD_INFO_GRACE {
                if !ending.fetched_pods {
                    ending.fetched_pods = true;
                    out.push(Action::FetchPods {
                        namespace: t.view.namespace.clone(),
                        name: t.view.job_name.clone(),
                    });
                }
                return; // hold the terminal status briefly for the pod's details
            }
            if t.stage == Stage::Created {
                // The Job finished, so a pod did start even if we never saw it run.
                let p = pod.clone().unwrap_or_default();
                let detail = detail::running(&p.uid, &p.name);
                Self::emit(t, Status::Running, detail, wall, out);
            }
            let result = match term {
                Terminal::Complete { duration, pods } => {
                    metrics::observe(
                        metrics::JOB_DURATION_SECONDS,
                        &[("result", "complete")],
                        duration as f64,
                    );
                    let result = pod.as_ref().and_then(|p| p.result.as_deref());
                    let mut detail = detail::complete(duration, result.unwrap_or(""));
                    if let Some(counts) = pods {
                        detail::add_pod_counts(&mut detail, counts);
                    }
                    Self::emit(t, Status::Complete, detail, wall, out);
                    "complete"
                }
                Terminal::Failed {
                    reason,
                    message,
                    duration,
                    pods,
                } => {
                    if let Some(d) = duration {
                        metrics::observe(
                            metrics::JOB_DURATION_SECONDS,
                            &[("result", "failed")],
                            d as f64,
                        );
                    }
                    let mut text = if message.is_empty() {
                        reason.clone()
                    } else {
                        message.clone()
                    };
                    let failed = pod.as_ref().and_then(|p| p.failed_container.as_deref());
                    if let Some(c) = failed {
                        text.push_str(&format!(
                            "; container exited with code {} ({})",
                            c.exit_code, c.reason
                        ));
                    }
                    let mut detail = detail::failed(&ErrorCode::job_failed(&reason), &text, failed);
                    if let Some(counts) = pods {
                        // Several pods: say which one failed, and how many did.
                        if let Some(p) = pod.as_ref().filter(|p| p.failed_container.is_some()) {
                            detail["error"]["podName"] = p.name.clone().into();
                        }
                        detail::add_pod_counts(&mut detail, counts);
                    }
                    Self::emit(t, Status::Failed, detail, wall, out);
                    "failed"
                }
            };
            self.finish(key, result);
            self.publish(key);
            return;
        }
        // Deleted (held only by our finalizer) before it finished.
        if t.deleting {
            let detail = job_deleted(&t.view.namespace, &t.view.job_name);
            Self::emit(t, Status::Exception, detail, wall, out);
            self.finish(key, "deleted");
            self.publish(key);
            return;
        }
        // Pod start timeout: no pod has started since the Job was created, or
        // last admitted. A suspended Job is waiting in its queue, never stuck.
        if let (Stage::Created, false, Admission::Admitted { since }) =
            (t.stage, pod_started, t.admission)
        {
            let from = t.created.map_or(since, |c| c.max(since));
            let age = wall.duration_since(from).unwrap_or_default();
            if age >= timeout {
                let why = pod
                    .as_ref()
                    .and_then(|p| p.waiting.clone())
                    .unwrap_or_else(|| "no pod was created".into());
                let text = format!(
                    "no pod of Job {}/{} started within {} s: {why}",
                    t.view.namespace,
                    t.view.job_name,
                    timeout.as_secs()
                );
                let detail = detail::error(&ErrorCode::PodStartTimeout, &text);
                Self::emit(t, Status::Exception, detail, wall, out);
                out.push(Action::DeleteJob {
                    namespace: t.view.namespace.clone(),
                    name: t.view.job_name.clone(),
                });
                self.finish(key, "pod_start_timeout");
            }
        }
        self.publish(key);
    }

    /// A complete Job list of `scope` (a namespace, or cluster-wide): what it
    /// shows is upserted; what it misses of that scope is gone once a second
    /// list misses it too (or at once if a watch had shown it).
    fn relisted(
        &mut self,
        scope: Option<&str>,
        list: &[Value],
        now: Instant,
        wall: SystemTime,
        out: &mut Vec<Action>,
    ) {
        let mut present = HashSet::new();
        for job in list {
            if let Some(key) = self.upsert_job(job, now, wall) {
                present.insert(key.clone());
                self.mark_watched(&key);
                self.advance(&key, now, wall, out);
            }
        }
        self.live.listed(scope.unwrap_or(""));
        // A Job known only from intake may have been created after the
        // list's snapshot: its ADDED event follows. Gone only if a
        // later relist misses it too.
        let mut gone = Vec::new();
        for (k, t) in self.jobs.iter_mut() {
            // A namespace's list says nothing of the Jobs of another.
            if present.contains(k) || scope.is_some_and(|ns| t.view.namespace != ns) {
                continue;
            }
            match &mut t.listing {
                Listing::FromIntake { misses: 0 } => t.listing = Listing::FromIntake { misses: 1 },
                Listing::FromIntake { .. } | Listing::Watched => gone.push(k.clone()),
            }
        }
        for key in gone {
            self.job_gone(&key, wall, out);
        }
    }

    fn job_gone(&mut self, key: &str, wall: SystemTime, out: &mut Vec<Action>) {
        let Some(mut t) = self.jobs.remove(key) else {
            return;
        };
        self.pods.remove(key);
        self.timer.set(key, None);
        self.forget(t.uid.clone());
        if !t.stage.is_done() && t.cancelled_at.is_some() {
            let at = t.cancelled_at.clone().unwrap_or_default();
            let detail = detail::error(&ErrorCode::Cancelled, &cancel::reason(&at));
            Self::emit(&mut t, Status::Failed, detail, wall, out);
            metrics::inc(metrics::JOBS_FINISHED, &[("result", "cancelled")]);
            board::show(&self.board, t.view.id.clone(), t.view.clone());
        } else if !t.stage.is_done() {
            // Never announce a Job that no longer exists: straight to the 99.
            let detail = job_deleted(&t.view.namespace, &t.view.job_name);
            Self::emit(&mut t, Status::Exception, detail, wall, out);
            metrics::inc(metrics::JOBS_FINISHED, &[("result", "deleted")]);
            board::show(&self.board, t.view.id.clone(), t.view.clone());
        }
        self.live.end(key);
    }
}

#[cfg(test)]
mod stage_tests {
    use super::*;

    #[test]
    fn stages_only_move_forward() {
        use Status::*;
        let settled = |status| Stage::Settled {
            status,
            released: false,
        };
        // What the `delivered` annotation can do to each stage.
        for (from, recorded, to) in [
            (Stage::New, Created, Stage::Created),
            (Stage::New, Running, Stage::Running),
            (Stage::Created, Created, Stage::Created),
            (Stage::Running, Created, Stage::Running),
            (Stage::Finished, Running, Stage::Finished),
            (Stage::New, Complete, settled(Complete)),
            (Stage::Finished, Exception, settled(Exception)),
            (
                Stage::Settled {
                    status: Failed,
                    released: true,
                },
                Failed,
                Stage::Settled {
                    status: Failed,
                    released: true,
                },
            ),
        ] {
            assert_eq!(
                from.recorded(recorded),
                to,
                "{from:?} + recorded {recorded}"
            );
        }
        assert_eq!(Stage::New.sent(Created), Stage::Created);
        assert_eq!(Stage::Created.sent(Exception), Stage::Finished);
        assert!(Stage::Finished.is_done() && settled(Complete).is_done());
        assert!(!Stage::Running.is_done());
    }
}
