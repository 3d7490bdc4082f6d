//! The list+watch state machine (after kube-runtime's watcher): list → watch
//! from the list's resourceVersion → on 410 Gone relist, on EOF re-watch from
//! the last resourceVersion, bookmarks only move the resourceVersion, errors back
//! off 0.8 s → 30 s with jitter. The machine is data (`State`) plus one `step`
//! function over an injected `WatchApi`, so its transitions are table-tested
//! in memory; `spawn` runs it against the real API server (`RestApi`) on a
//! thread of its own, forwarding events to a channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;

use serde_json::Value;

use super::client::{Client, KubeError, WatchStream};
use crate::backoff::Backoff;

/// What the watcher reports to its consumer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A complete list: the consumer replaces its view (objects missing from it
    /// were deleted while we were not watching).
    Restarted(Vec<Value>),
    /// An object was added or modified.
    Applied(Value),
    /// An object was deleted (its last state).
    Deleted(Value),
}

/// One decoded watch line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Added(Value),
    Modified(Value),
    Deleted(Value),
    Bookmark(String),
    /// An ERROR event carrying a Status (code, message).
    Error(u16, String),
}

/// Drops what no reader of a watched object uses and what makes up much of
/// its size (`metadata.managedFields`), so that objects waiting in the
/// tracker's channel hold less memory.
pub fn slim(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

/// Decodes one line of a watch stream. Pure; never panics on input.
pub fn decode_line(line: &str) -> Result<Line, String> {
    let mut v: Value =
        serde_json::from_str(line).map_err(|e| format!("watch event is not JSON: {e}"))?;
    let mut obj = v.get_mut("object").map(Value::take).unwrap_or(Value::Null);
    slim(&mut obj);
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or("watch event has no type")?;
    if !obj.is_object() {
        return Err(format!("watch event {kind} has no object"));
    }
    match kind {
        "ADDED" => Ok(Line::Added(obj)),
        "MODIFIED" => Ok(Line::Modified(obj)),
        "DELETED" => Ok(Line::Deleted(obj)),
        "BOOKMARK" => Ok(Line::Bookmark(
            resource_version(&obj).ok_or("bookmark without resourceVersion")?,
        )),
        "ERROR" => {
            let code = obj.get("code").and_then(Value::as_u64).unwrap_or(0);
            let code = u16::try_from(code).unwrap_or(0);
            let msg = obj
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok(Line::Error(code, msg))
        }
        other => Err(format!("unknown watch event type {other:?}")),
    }
}

fn resource_version(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A source of watch lines (the real stream, or a scripted one in tests).
pub trait Lines {
    fn next_line(&mut self) -> Result<Option<String>, KubeError>;
}

impl Lines for WatchStream {
    fn next_line(&mut self) -> Result<Option<String>, KubeError> {
        WatchStream::next_line(self)
    }
}

/// What the state machine needs from the API server.
pub trait WatchApi {
    type Stream: Lines;
    fn list(&mut self) -> Result<(Vec<Value>, String), KubeError>;
    fn watch(&mut self, resource_version: &str) -> Result<Self::Stream, KubeError>;
}

/// Why a watch restarted (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Gone,
    Eof,
    Error,
}

enum State<S> {
    /// Nothing known: list next.
    Empty,
    /// Listed or watched up to `rv`; open a watch next.
    Ready { rv: String },
    /// A watch is open.
    Watching { rv: String, stream: S },
    /// Waiting before retrying: re-watch from `rv`, or list when it is `None`.
    Backoff { rv: Option<String> },
}

/// What one `step` produced.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// An event for the consumer.
    Event(Event),
    /// Nothing to report (state moved on).
    Continue,
    /// The stream restarted (metric), then continue.
    Restarted(Restart),
}

/// The watcher: state plus backoff.
pub struct Machine<A: WatchApi> {
    api: A,
    state: State<A::Stream>,
    backoff: Backoff,
    delay: Option<Duration>,
}

impl<A: WatchApi> Machine<A> {
    pub fn new(api: A, seed: u64) -> Self {
        Machine {
            api,
            state: State::Empty,
            backoff: Backoff::new(seed),
            delay: None,
        }
    }

    /// Advances the machine by one transition.
    pub fn step(&mut self) -> Step {
        let state = std::mem::replace(&mut self.state, State::Empty);
        let (next, out) = match state {
            State::Empty | State::Backoff { rv: None } => match self.api.list() {
                Ok((items, rv)) => {
                    self.backoff.reset();
                    (State::Ready { rv }, Step::Event(Event::Restarted(items)))
                }
                Err(e) => {
                    log::warn!("{e}; retrying");
                    (State::Backoff { rv: None }, Step::Continue)
                }
            },
            State::Ready { rv } | State::Backoff { rv: Some(rv) } => match self.api.watch(&rv) {
                Ok(stream) => (State::Watching { rv, stream }, Step::Continue),
                Err(e) if e.code() == Some(410) => (State::Empty, Step::Restarted(Restart::Gone)),
                Err(e) => {
                    log::warn!("{e}; retrying");
                    (State::Backoff { rv: Some(rv) }, Step::Continue)
                }
            },
            State::Watching { rv, mut stream } => match stream.next_line() {
                Ok(None) => (State::Ready { rv }, Step::Restarted(Restart::Eof)),
                Err(e) => {
                    log::info!("{e}; re-watching");
                    (
                        State::Backoff { rv: Some(rv) },
                        Step::Restarted(Restart::Error),
                    )
                }
                Ok(Some(line)) => match decode_line(&line) {
                    Ok(Line::Added(o)) | Ok(Line::Modified(o)) => {
                        self.backoff.reset();
                        let rv = resource_version(&o).unwrap_or(rv);
                        (
                            State::Watching { rv, stream },
                            Step::Event(Event::Applied(o)),
                        )
                    }
                    Ok(Line::Deleted(o)) => {
                        self.backoff.reset();
                        let rv = resource_version(&o).unwrap_or(rv);
                        (
                            State::Watching { rv, stream },
                            Step::Event(Event::Deleted(o)),
                        )
                    }
                    Ok(Line::Bookmark(new_rv)) => {
                        (State::Watching { rv: new_rv, stream }, Step::Continue)
                    }
                    Ok(Line::Error(410, _)) => (State::Empty, Step::Restarted(Restart::Gone)),
                    Ok(Line::Error(code, msg)) => {
                        log::warn!("watch error {code}: {msg}; re-watching");
                        (
                            State::Backoff { rv: Some(rv) },
                            Step::Restarted(Restart::Error),
                        )
                    }
                    Err(e) => {
                        log::warn!("{e}; re-watching");
                        (
                            State::Backoff { rv: Some(rv) },
                            Step::Restarted(Restart::Error),
                        )
                    }
                },
            },
        };
        if matches!(next, State::Backoff { .. }) {
            self.delay = Some(self.backoff.next_delay());
        }
        self.state = next;
        out
    }

    /// How long to wait before the next step, once, after an error.
    pub fn take_delay(&mut self) -> Option<Duration> {
        self.delay.take()
    }
}

/// The real API: a collection path and label selector on a `Client`.
pub struct RestApi {
    pub client: Client,
    /// e.g. `/apis/batch/v1/jobs` or `/apis/batch/v1/namespaces/x/jobs`.
    pub path: String,
    pub label_selector: String,
    /// Server-side watch timeout; the per-read timeout is 30 s more.
    pub timeout_seconds: u64,
    pub what: String,
}

impl WatchApi for RestApi {
    type Stream = WatchStream;

    fn list(&mut self) -> Result<(Vec<Value>, String), KubeError> {
        let q = format!(
            "labelSelector={}",
            crate::encode::percent_encode(&self.label_selector)
        );
        let (mut items, rv) =
            self.client
                .list_all(&self.path, &q, &format!("list {}", self.what))?;
        items.iter_mut().for_each(slim);
        Ok((items, rv))
    }

    fn watch(&mut self, rv: &str) -> Result<WatchStream, KubeError> {
        let q = format!(
            "labelSelector={}&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}",
            crate::encode::percent_encode(&self.label_selector),
            crate::encode::percent_encode(rv),
            self.timeout_seconds
        );
        self.client.watch(
            &self.path,
            &q,
            Duration::from_secs(self.timeout_seconds + 30),
            &format!("watch {}", self.what),
        )
    }
}

/// A running `watch-<what>` thread.
pub struct Watch {
    thread: std::thread::JoinHandle<()>,
    /// The thread's own client (its own connection pool).
    client: Client,
}

impl Watch {
    /// Interrupts the thread's blocking read by closing its connections; it
    /// then ends at once if `stop` is set (else it re-watches, and fails).
    pub fn interrupt(&self) {
        self.client.shutdown();
    }

    /// Waits for the thread to end (after `stop` and `interrupt`).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Sleeps `d`, or less once `stop` is set.
fn nap(stop: &AtomicBool, d: Duration) {
    let until = std::time::Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Starts the `watch-<what>` thread: runs the machine over `api` (on a
/// connection pool of its own, so that `Watch::interrupt` cuts only its
/// reads) and sends each event, wrapped by `wrap`, to `to`. It ends when `to`
/// is closed, or at once after `stop` is set and `Watch::interrupt` called.
/// It beats `heartbeat` once per step.
pub fn spawn<T: Send + 'static>(
    mut api: RestApi,
    stop: Arc<AtomicBool>,
    to: Sender<T>,
    wrap: impl Fn(Event) -> T + Send + 'static,
    heartbeat: Arc<crate::heartbeat::Heartbeat>,
) -> std::io::Result<Watch> {
    let what = api.what.clone();
    api.client = api.client.with_own_pool();
    let client = api.client.clone();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(1);
    let thread = std::thread::Builder::new()
        .name(format!("watch-{what}"))
        .spawn(move || {
            let mut m = Machine::new(api, seed);
            while !stop.load(Ordering::SeqCst) {
                heartbeat.beat();
                match m.step() {
                    Step::Event(ev) => {
                        if to.send(wrap(ev)).is_err() {
                            return;
                        }
                    }
                    Step::Restarted(r) => {
                        let reason = format!("{r:?}").to_lowercase();
                        crate::metrics::inc(
                            crate::metrics::WATCH_RESTARTS,
                            &[("resource", &what), ("reason", &reason)],
                        );
                    }
                    Step::Continue => {}
                }
                if let Some(d) = m.take_delay() {
                    nap(&stop, d);
                }
            }
        })?;
    Ok(Watch { thread, client })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    struct Script(VecDeque<Result<Option<String>, KubeError>>);
    impl Lines for Script {
        fn next_line(&mut self) -> Result<Option<String>, KubeError> {
            self.0.pop_front().unwrap_or(Ok(None))
        }
    }

    #[derive(Default)]
    struct FakeApi {
        lists: VecDeque<Result<(Vec<Value>, String), KubeError>>,
        watches: VecDeque<Result<Script, KubeError>>,
        watched_from: Vec<String>,
        list_calls: usize,
    }
    impl WatchApi for FakeApi {
        type Stream = Script;
        fn list(&mut self) -> Result<(Vec<Value>, String), KubeError> {
            self.list_calls += 1;
            self.lists.pop_front().unwrap_or(Ok((vec![], "0".into())))
        }
        fn watch(&mut self, rv: &str) -> Result<Script, KubeError> {
            self.watched_from.push(rv.to_string());
            self.watches
                .pop_front()
                .unwrap_or(Ok(Script(VecDeque::new())))
        }
    }

    fn obj(name: &str, rv: &str) -> Value {
        serde_json::json!({"metadata": {"name": name, "resourceVersion": rv}})
    }
    fn line(t: &str, o: &Value) -> Result<Option<String>, KubeError> {
        Ok(Some(
            serde_json::json!({"type": t, "object": o}).to_string(),
        ))
    }
    fn transport() -> KubeError {
        KubeError::Transport {
            op: "watch jobs".into(),
            message: "connection reset".into(),
        }
    }

    #[test]
    fn list_then_watch_then_events_move_the_resource_version() {
        let mut api = FakeApi::default();
        api.lists.push_back(Ok((vec![obj("a", "5")], "10".into())));
        api.watches.push_back(Ok(Script(VecDeque::from(vec![
            line("ADDED", &obj("b", "11")),
            line("BOOKMARK", &obj("", "15")),
            line("MODIFIED", &obj("b", "16")),
            line("DELETED", &obj("a", "17")),
        ]))));
        let mut m = Machine::new(api, 7);
        assert_eq!(m.step(), Step::Event(Event::Restarted(vec![obj("a", "5")])));
        assert_eq!(m.step(), Step::Continue); // watch opened
        assert_eq!(m.step(), Step::Event(Event::Applied(obj("b", "11"))));
        assert_eq!(m.step(), Step::Continue); // bookmark: no event
        assert_eq!(m.step(), Step::Event(Event::Applied(obj("b", "16"))));
        assert_eq!(m.step(), Step::Event(Event::Deleted(obj("a", "17"))));
        assert_eq!(m.step(), Step::Restarted(Restart::Eof)); // EOF → re-watch
        assert_eq!(m.step(), Step::Continue);
        assert_eq!(m.api.watched_from, vec!["10".to_string(), "17".to_string()]);
        assert_eq!(m.api.list_calls, 1);
    }

    #[test]
    fn bookmark_only_moves_the_resource_version() {
        let mut api = FakeApi::default();
        api.lists.push_back(Ok((vec![], "10".into())));
        api.watches.push_back(Ok(Script(VecDeque::from(vec![line(
            "BOOKMARK",
            &obj("", "99"),
        )]))));
        let mut m = Machine::new(api, 1);
        m.step();
        m.step();
        assert_eq!(m.step(), Step::Continue);
        assert_eq!(m.step(), Step::Restarted(Restart::Eof));
        m.step();
        assert_eq!(m.api.watched_from, vec!["10".to_string(), "99".to_string()]);
    }

    #[test]
    fn gone_in_stream_or_on_open_relists() {
        let mut api = FakeApi::default();
        api.lists.push_back(Ok((vec![], "10".into())));
        api.lists.push_back(Ok((vec![obj("c", "30")], "30".into())));
        api.watches.push_back(Ok(Script(VecDeque::from(vec![Ok(Some(
            r#"{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old"}}"#
                .to_string(),
        ))]))));
        api.watches.push_back(Err(KubeError::Api {
            op: "watch".into(),
            code: 410,
            reason: "Gone".into(),
            message: "too old".into(),
            retry_after: None,
        }));
        let mut m = Machine::new(api, 3);
        m.step();
        m.step();
        assert_eq!(m.step(), Step::Restarted(Restart::Gone));
        assert_eq!(
            m.step(),
            Step::Event(Event::Restarted(vec![obj("c", "30")]))
        );
        assert_eq!(m.step(), Step::Restarted(Restart::Gone)); // 410 when opening the watch
        assert_eq!(m.api.list_calls, 2);
        assert!(matches!(m.step(), Step::Event(Event::Restarted(_))));
        assert_eq!(m.api.list_calls, 3);
    }

    #[test]
    fn errors_back_off_and_rewatch_from_the_last_version() {
        let mut api = FakeApi::default();
        api.lists.push_back(Err(transport()));
        api.lists.push_back(Ok((vec![], "10".into())));
        api.watches.push_back(Ok(Script(VecDeque::from(vec![
            line("ADDED", &obj("a", "12")),
            Err(transport()),
        ]))));
        api.watches.push_back(Err(transport()));
        let mut m = Machine::new(api, 5);
        assert_eq!(m.step(), Step::Continue);
        let d1 = m.take_delay().expect("list error must back off");
        assert!(
            d1 >= Duration::from_millis(600) && d1 <= Duration::from_millis(1000),
            "{d1:?}"
        );
        assert!(matches!(m.step(), Step::Event(Event::Restarted(_))));
        m.step();
        assert!(matches!(m.step(), Step::Event(Event::Applied(_))));
        assert_eq!(m.step(), Step::Restarted(Restart::Error));
        assert!(m.take_delay().is_some());
        assert_eq!(m.step(), Step::Continue); // watch open fails
        assert!(m.take_delay().is_some(), "watch open error must back off");
        assert_eq!(m.step(), Step::Continue);
        assert!(m.take_delay().is_none());
        assert_eq!(m.api.watched_from, vec!["10", "12", "12"]);
    }

    #[test]
    fn decode_rejects_garbage_without_panicking() {
        for l in [
            "",
            "{",
            "[]",
            r#"{"type":"ADDED"}"#,
            r#"{"type":"X","object":{}}"#,
            r#"{"type":"BOOKMARK","object":{}}"#,
        ] {
            assert!(decode_line(l).is_err(), "{l}");
        }
        assert_eq!(
            decode_line(r#"{"type":"ERROR","object":{"code":99999999999}}"#),
            Ok(Line::Error(0, String::new()))
        );
    }

    #[test]
    fn decoded_objects_lose_their_managed_fields_only() {
        let line = r#"{"type":"MODIFIED","object":{"metadata":{"name":"j","uid":"u","resourceVersion":"7","managedFields":[{"manager":"kube-controller-manager","fieldsV1":{"f:status":{}}}]},"status":{"active":1}}}"#;
        assert_eq!(
            decode_line(line),
            Ok(Line::Modified(serde_json::json!({
                "metadata": {"name": "j", "uid": "u", "resourceVersion": "7"},
                "status": {"active": 1}
            })))
        );
        let mut odd = serde_json::json!({"metadata": "not an object"});
        slim(&mut odd);
        assert_eq!(odd, serde_json::json!({"metadata": "not an object"}));
    }
}
