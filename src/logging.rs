//! Logging setup: env_logger filtered by RUST_LOG (default `info`), as plain
//! text or, with LOG_FORMAT=json, one JSON object per line (ts, level, target,
//! msg, and id/job when the message names them as `message <id> job <ns/name>`
//! or `... for message <id> ...`).
//!
//! The HTTP and TLS stacks (ureq, ureq_proto, rustls) never log below info,
//! whatever RUST_LOG says: at debug/trace they print request headers
//! (Authorization, X-Amz-Security-Token) and TLS details.

use std::io::Write;

/// Crates whose records are dropped below info (targets `<crate>` and `<crate>::…`).
const CAPPED: &[&str] = &["ureq", "ureq_proto", "rustls"];

fn capped(target: &str, level: log::Level) -> bool {
    level > log::Level::Info
        && CAPPED.iter().any(|c| {
            target
                .strip_prefix(c)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// env_logger's logger behind the cap above. env_logger's own directives are
/// not enough: a more specific RUST_LOG directive such as `ureq::unit=trace`
/// outranks a `ureq=info` one, so the cap is applied here, after filtering.
struct Capped(env_logger::Logger);

impl log::Log for Capped {
    fn enabled(&self, m: &log::Metadata) -> bool {
        !capped(m.target(), m.level()) && self.0.enabled(m)
    }
    fn log(&self, r: &log::Record) {
        if !capped(r.target(), r.level()) {
            self.0.log(r);
        }
    }
    fn flush(&self) {
        self.0.flush();
    }
}

/// Initialises the global logger once; later calls do nothing.
pub fn init(json: bool) {
    let mut b = env_logger::Builder::new();
    b.filter_level(log::LevelFilter::Info);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    // Also as directives, so that `RUST_LOG=trace` alone does not make
    // ureq/rustls build records that `Capped` then drops.
    for c in CAPPED {
        b.filter_module(c, log::LevelFilter::Info);
    }
    if json {
        b.format(|buf, r| {
            let msg = r.args().to_string();
            let (id, job) = ids(&msg);
            let mut o = serde_json::json!({
                "ts": crate::clock::format_micros(std::time::SystemTime::now()),
                "level": r.level().as_str(),
                "target": r.target(),
                "msg": msg,
            });
            if let Some(id) = id {
                o["id"] = id.into();
            }
            if let Some(job) = job {
                o["job"] = job.into();
            }
            writeln!(buf, "{o}")
        });
    } else {
        b.format(|buf, r| {
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                crate::clock::format_micros(std::time::SystemTime::now()),
                r.level(),
                r.target(),
                r.args()
            )
        });
    }
    let logger = b.build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Capped(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// Pulls `message <id>` and `job <ns/name>` out of a log line.
fn ids(msg: &str) -> (Option<String>, Option<String>) {
    let word_after = |tag: &str| {
        msg.split(tag)
            .nth(1)
            .and_then(|rest| rest.split([' ', ':', ',']).next())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
    };
    let id = if msg.starts_with("message ") {
        word_after("message ")
    } else if msg.contains("for message ") {
        word_after("for message ")
    } else {
        None
    };
    (
        id,
        word_after(" job ").or_else(|| {
            if msg.starts_with("job ") {
                word_after("job ")
            } else {
                None
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_extracted() {
        assert_eq!(
            super::ids("message abc job ns/bb-1: status 0 (created)"),
            (Some("abc".into()), Some("ns/bb-1".into()))
        );
        assert_eq!(super::ids("intake: stopped"), (None, None));
        assert_eq!(
            super::ids("callback for message m-1 status 2 delivered after 1 attempt(s)"),
            (Some("m-1".into()), None)
        );
        // An SQS MessageId is not the message's id.
        assert_eq!(
            super::ids("sqs: message 9f1e was already deleted"),
            (None, None)
        );
    }

    #[test]
    fn http_and_tls_stacks_are_capped_at_info() {
        use log::Level::*;
        for t in ["ureq", "ureq::unit", "ureq_proto::client", "rustls::conn"] {
            assert!(super::capped(t, Debug), "{t}");
            assert!(super::capped(t, Trace), "{t}");
            assert!(!super::capped(t, Info), "{t}");
        }
        assert!(!super::capped("k8s_job_worker::kube", Trace));
        assert!(!super::capped("ureqx", Trace));
    }
}
