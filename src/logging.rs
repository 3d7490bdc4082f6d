//! Logging setup: env_logger filtered by RUST_LOG (default `info`), as plain
//! text or, with LOG_FORMAT=json, one JSON object per line (ts, level, target,
//! msg, and id/job when the message names them as `message <id> job <ns/name>`).

use std::io::Write;

/// Initialises the global logger once; later calls do nothing.
pub fn init(json: bool) {
    let mut b = env_logger::Builder::new();
    b.filter_level(log::LevelFilter::Info);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    // The HTTP and TLS stacks are chatty at debug/trace and would log headers.
    b.filter_module("ureq", log::LevelFilter::Info);
    b.filter_module("ureq_proto", log::LevelFilter::Info);
    b.filter_module("rustls", log::LevelFilter::Info);
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
    let _ = b.try_init();
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
    }
}
