//! Process-wide Prometheus metrics: a small registry of counters, gauges and
//! histograms keyed by family name and label set, rendered in the text
//! exposition format 0.0.4. Every family is declared once in `FAMILIES` with its
//! HELP text and type, so the output always carries HELP and TYPE lines even
//! before the first observation. No I/O happens here; `http.rs` serves `render()`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Metric kinds of the exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A declared metric family, named without the `job_worker_` prefix. Only the
/// constants below exist (the field is private), so a misspelt metric does not
/// compile; each is declared in `FAMILIES` with its kind and help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric(&'static str);

impl Metric {
    pub fn name(self) -> &'static str {
        self.0
    }
}

pub const BUILD_INFO: Metric = Metric("build_info");
pub const LEADER: Metric = Metric("leader");
pub const MESSAGES_RECEIVED: Metric = Metric("messages_received_total");
pub const MESSAGES_ACKNOWLEDGED: Metric = Metric("messages_acknowledged_total");
pub const MESSAGES_REJECTED: Metric = Metric("messages_rejected_total");
pub const MESSAGES_DEFERRED: Metric = Metric("messages_deferred_total");
pub const MESSAGES_ALREADY_ENDED: Metric = Metric("messages_already_ended_total");
pub const QUEUE_ERRORS: Metric = Metric("queue_errors_total");
pub const JOBS_CREATED: Metric = Metric("jobs_created_total");
pub const JOBS_ADOPTED: Metric = Metric("jobs_adopted_total");
pub const JOB_CREATE_ERRORS: Metric = Metric("job_create_errors_total");
pub const PAYLOAD_SECRET_ERRORS: Metric = Metric("payload_secret_errors_total");
pub const JOBS_FINISHED: Metric = Metric("jobs_finished_total");
pub const JOBS_IN_FLIGHT: Metric = Metric("jobs_in_flight");
pub const DELAYED_STARTS: Metric = Metric("delayed_starts_total");
pub const CALLBACKS_SENT: Metric = Metric("callbacks_sent_total");
pub const CALLBACK_RETRIES: Metric = Metric("callback_retries_total");
pub const CALLBACK_DELIVERY_SECONDS: Metric = Metric("callback_delivery_seconds");
pub const JOB_DURATION_SECONDS: Metric = Metric("job_duration_seconds");
pub const QUEUE_TO_JOB_SECONDS: Metric = Metric("queue_to_job_seconds");
pub const WATCH_RESTARTS: Metric = Metric("watch_restarts_total");
pub const CANCELS: Metric = Metric("cancels_total");

/// (name without the `job_worker_` prefix, kind, help).
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        BUILD_INFO.0,
        Kind::Gauge,
        "Build information; the value is always 1.",
    ),
    (
        LEADER.0,
        Kind::Gauge,
        "1 while this replica holds the leader Lease, else 0.",
    ),
    (
        MESSAGES_RECEIVED.0,
        Kind::Counter,
        "Messages received from the queue.",
    ),
    (
        MESSAGES_ACKNOWLEDGED.0,
        Kind::Counter,
        "Messages removed from the queue after their outcome was durable.",
    ),
    (
        MESSAGES_REJECTED.0,
        Kind::Counter,
        "Messages rejected, by reason (error code).",
    ),
    (
        MESSAGES_DEFERRED.0,
        Kind::Counter,
        "Messages deferred because their service was at its SERVICE_MAX_CONCURRENT cap, by service (named ones, else other).",
    ),
    (
        MESSAGES_ALREADY_ENDED.0,
        Kind::Counter,
        "Redelivered messages whose Job this leader saw end and that no longer exists, acknowledged without a new Job.",
    ),
    (
        QUEUE_ERRORS.0,
        Kind::Counter,
        "Errors talking to the queue, by operation.",
    ),
    (JOBS_CREATED.0, Kind::Counter, "Jobs created."),
    (
        CANCELS.0,
        Kind::Counter,
        "Cancel requests, by outcome (cancelled, already_finished, early, expired).",
    ),
    (
        JOBS_ADOPTED.0,
        Kind::Counter,
        "Existing Jobs adopted for a redelivered message.",
    ),
    (
        JOB_CREATE_ERRORS.0,
        Kind::Counter,
        "Job create errors, by HTTP status code or transport error.",
    ),
    (
        PAYLOAD_SECRET_ERRORS.0,
        Kind::Counter,
        "Payload Secret errors, by HTTP status code, transport, conflict or stale.",
    ),
    (
        JOBS_FINISHED.0,
        Kind::Counter,
        "Jobs that reached a terminal status, by result.",
    ),
    (
        JOBS_IN_FLIGHT.0,
        Kind::Gauge,
        "Jobs of this worker that have not reached a terminal status, by service (named ones, else other).",
    ),
    (
        DELAYED_STARTS.0,
        Kind::Counter,
        "Delayed Jobs started (unsuspended, or handed to Kueue) at their start time.",
    ),
    (
        CALLBACKS_SENT.0,
        Kind::Counter,
        "Callback deliveries, by status and outcome.",
    ),
    (
        CALLBACK_RETRIES.0,
        Kind::Counter,
        "Callback delivery attempts that will be retried.",
    ),
    (
        CALLBACK_DELIVERY_SECONDS.0,
        Kind::Histogram,
        "Time from a callback being queued to its successful delivery.",
    ),
    (
        JOB_DURATION_SECONDS.0,
        Kind::Histogram,
        "Job run time from startTime to completion or failure.",
    ),
    (
        QUEUE_TO_JOB_SECONDS.0,
        Kind::Histogram,
        "Time from a message being received to its Job existing.",
    ),
    (
        WATCH_RESTARTS.0,
        Kind::Counter,
        "Watch streams restarted, by resource and reason.",
    ),
];

const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    values: BTreeMap<(&'static str, Labels), f64>,
    hists: BTreeMap<(&'static str, Labels), Hist>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

fn family(name: &str) -> &'static str {
    FAMILIES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(n, _, _)| *n)
        .unwrap_or_else(|| panic!("metric family {name} is not declared in FAMILIES"))
}

fn labels(l: &[(&str, &str)]) -> Labels {
    let mut v: Labels = l
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut g = registry().lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g)
}

/// Adds 1 to a counter.
pub fn inc(m: Metric, l: &[(&str, &str)]) {
    add(m, l, 1.0);
}

/// Adds `v` to a counter (or gauge).
pub fn add(m: Metric, l: &[(&str, &str)], v: f64) {
    let key = (m.0, labels(l));
    with(|r| *r.values.entry(key).or_insert(0.0) += v);
}

/// Sets a gauge.
pub fn set(m: Metric, l: &[(&str, &str)], v: f64) {
    let key = (m.0, labels(l));
    with(|r| {
        r.values.insert(key, v);
    });
}

/// Records one histogram observation in seconds.
pub fn observe(m: Metric, l: &[(&str, &str)], v: f64) {
    let key = (m.0, labels(l));
    with(|r| {
        let h = r.hists.entry(key).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += v;
        h.count += 1;
    });
}

/// Current value of a counter or gauge (0 when never touched); for tests and /readyz.
pub fn value(name: &str, l: &[(&str, &str)]) -> f64 {
    let key = (family(name), labels(l));
    with(|r| r.values.get(&key).copied().unwrap_or(0.0))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

fn fmt_labels(l: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn fmt_f64(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Renders every family in the Prometheus text format 0.0.4.
pub fn render() -> String {
    let mut out = String::new();
    with(|r| {
        for (name, kind, help) in FAMILIES {
            let full = format!("job_worker_{name}");
            let t = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {full} {help}");
            let _ = writeln!(out, "# TYPE {full} {t}");
            if *kind == Kind::Histogram {
                for ((_, l), h) in r.hists.iter().filter(|((n, _), _)| n == name) {
                    for (i, b) in BUCKETS.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "{full}_bucket{} {}",
                            fmt_labels(l, Some(("le", fmt_f64(*b)))),
                            h.counts[i]
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{full}_bucket{} {}",
                        fmt_labels(l, Some(("le", "+Inf".into()))),
                        h.count
                    );
                    let _ = writeln!(out, "{full}_sum{} {}", fmt_labels(l, None), fmt_f64(h.sum));
                    let _ = writeln!(out, "{full}_count{} {}", fmt_labels(l, None), h.count);
                }
            } else {
                for ((_, l), v) in r.values.iter().filter(|((n, _), _)| n == name) {
                    let _ = writeln!(out, "{full}{} {}", fmt_labels(l, None), fmt_f64(*v));
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_labelled_samples() {
        inc(JOBS_CREATED, &[("namespace", "a\"b")]);
        observe(JOB_DURATION_SECONDS, &[("result", "complete")], 0.2);
        let text = render();
        assert!(text.contains("# TYPE job_worker_jobs_created_total counter"));
        assert!(text.contains("job_worker_jobs_created_total{namespace=\"a\\\"b\"} "));
        assert!(
            text.contains(
                "job_worker_job_duration_seconds_bucket{result=\"complete\",le=\"0.25\"} 1"
            )
        );
        assert!(
            text.contains(
                "job_worker_job_duration_seconds_bucket{result=\"complete\",le=\"0.1\"} 0"
            )
        );
        assert!(text.contains("job_worker_job_duration_seconds_count{result=\"complete\"} 1"));
    }

    #[test]
    #[should_panic(expected = "not declared")]
    fn undeclared_family_is_a_programming_error() {
        // Writers take a `Metric`, so only a reader can name an unknown family.
        value("no_such_metric", &[]);
    }

    #[test]
    fn every_family_has_a_unique_name() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }
}
