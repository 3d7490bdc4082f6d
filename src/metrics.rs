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

/// (name without the `job_worker_` prefix, kind, help).
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "build_info",
        Kind::Gauge,
        "Build information; the value is always 1.",
    ),
    (
        "leader",
        Kind::Gauge,
        "1 while this replica holds the leader Lease, else 0.",
    ),
    (
        "messages_received_total",
        Kind::Counter,
        "Messages received from the queue.",
    ),
    (
        "messages_acknowledged_total",
        Kind::Counter,
        "Messages removed from the queue after their outcome was durable.",
    ),
    (
        "messages_rejected_total",
        Kind::Counter,
        "Messages rejected, by reason (error code).",
    ),
    (
        "queue_errors_total",
        Kind::Counter,
        "Errors talking to the queue, by operation.",
    ),
    ("jobs_created_total", Kind::Counter, "Jobs created."),
    (
        "jobs_adopted_total",
        Kind::Counter,
        "Existing Jobs adopted for a redelivered message.",
    ),
    (
        "job_create_errors_total",
        Kind::Counter,
        "Job create errors, by HTTP status code or transport error.",
    ),
    (
        "jobs_finished_total",
        Kind::Counter,
        "Jobs that reached a terminal status, by result.",
    ),
    (
        "jobs_in_flight",
        Kind::Gauge,
        "Jobs of this worker that have not reached a terminal status.",
    ),
    (
        "callbacks_sent_total",
        Kind::Counter,
        "Callback deliveries, by status and outcome.",
    ),
    (
        "callback_retries_total",
        Kind::Counter,
        "Callback delivery attempts that will be retried.",
    ),
    (
        "callback_delivery_seconds",
        Kind::Histogram,
        "Time from a callback being queued to its successful delivery.",
    ),
    (
        "job_duration_seconds",
        Kind::Histogram,
        "Job run time from startTime to completion or failure.",
    ),
    (
        "queue_to_job_seconds",
        Kind::Histogram,
        "Time from a message being received to its Job existing.",
    ),
    (
        "watch_restarts_total",
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
pub fn inc(name: &str, l: &[(&str, &str)]) {
    add(name, l, 1.0);
}

/// Adds `v` to a counter (or gauge).
pub fn add(name: &str, l: &[(&str, &str)], v: f64) {
    let key = (family(name), labels(l));
    with(|r| *r.values.entry(key).or_insert(0.0) += v);
}

/// Sets a gauge.
pub fn set(name: &str, l: &[(&str, &str)], v: f64) {
    let key = (family(name), labels(l));
    with(|r| {
        r.values.insert(key, v);
    });
}

/// Records one histogram observation in seconds.
pub fn observe(name: &str, l: &[(&str, &str)], v: f64) {
    let key = (family(name), labels(l));
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
                for ((n, l), h) in r.hists.iter().filter(|((n, _), _)| n == name) {
                    let _ = n;
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
        inc("jobs_created_total", &[("namespace", "a\"b")]);
        observe("job_duration_seconds", &[("result", "complete")], 0.2);
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
        inc("no_such_metric", &[]);
    }
}
