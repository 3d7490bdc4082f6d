//! The HTTP endpoint (tiny_http, one port): /healthz (liveness: no thread that
//! has work is stuck, see `heartbeat`), /readyz (readiness: configuration loaded, API server
//! reachable, and the queue loop or lease loop alive), /metrics (Prometheus
//! text 0.0.4) and GET /jobs/{id} (what the worker knows of a message). Reads
//! shared state only; never blocks on the API server or the queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::heartbeat::Beats;
use crate::tracker::Board;

/// State the endpoint reports; written by the threads that own each fact.
#[derive(Default)]
pub struct Health {
    /// The heartbeats of the long-lived threads running now (/healthz). A
    /// thread that dies takes the process with it (release builds abort on
    /// panic), so a heartbeat that stops moving means a stuck thread.
    pub beats: Beats,
    /// Readiness (see module docs).
    pub ready: AtomicBool,
    pub leader: AtomicBool,
    /// False while the leader's last receive failed (written by intake).
    pub queue_reachable: AtomicBool,
    /// The current leader's message board, while leading.
    pub board: Mutex<Option<Board>>,
}

fn respond(req: tiny_http::Request, code: u16, ctype: &str, body: String) {
    let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()) {
        resp = resp.with_header(h);
    }
    let _ = req.respond(resp);
}

/// Percent-decodes a path segment.
#[doc(hidden)] // public for the `http_path` fuzz target
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Exactly two hex digits (from_str_radix alone would take "+1").
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// /healthz: 503 when a thread with work has not moved within its bound,
/// naming it on the first line; every thread's state on the lines after.
fn healthz(beats: &Beats) -> (u16, String) {
    let all = beats.snapshot();
    let stuck: Vec<&str> = all.iter().filter(|h| h.stuck()).map(|h| h.name()).collect();
    let mut body = if stuck.is_empty() {
        "ok\n".to_string()
    } else {
        format!("stuck: {}\n", stuck.join(", "))
    };
    for h in &all {
        let state = if h.stuck() {
            "stuck"
        } else if h.has_work() {
            "fresh"
        } else {
            "idle"
        };
        body.push_str(&format!(
            "{} {state} last beat {:.1}s ago, bound {}s\n",
            h.name(),
            h.age().as_secs_f64(),
            h.bound().as_secs()
        ));
    }
    (if stuck.is_empty() { 200 } else { 503 }, body)
}

/// Starts the server on `0.0.0.0:port` (port 0 picks a free one); returns the
/// bound port and the thread.
pub fn serve(port: u16, health: Arc<Health>) -> Result<(u16, JoinHandle<()>), String> {
    let server = tiny_http::Server::http(("0.0.0.0", port))
        .map_err(|e| format!("http: cannot listen on port {port}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .map(|a| a.port())
        .unwrap_or(port);
    let h = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("").to_string();
                if *req.method() != tiny_http::Method::Get {
                    respond(req, 405, "text/plain", "method not allowed\n".into());
                    continue;
                }
                match path.as_str() {
                    "/healthz" => {
                        let (code, body) = healthz(&health.beats);
                        respond(req, code, "text/plain", body);
                    }
                    "/readyz" => {
                        let queue_ok = !health.leader.load(Ordering::SeqCst)
                            || health.queue_reachable.load(Ordering::SeqCst);
                        if health.ready.load(Ordering::SeqCst) && queue_ok {
                            respond(req, 200, "text/plain", "ok\n".into());
                        } else {
                            respond(req, 503, "text/plain", "not ready\n".into());
                        }
                    }
                    "/metrics" => respond(
                        req,
                        200,
                        "text/plain; version=0.0.4; charset=utf-8",
                        crate::metrics::render(),
                    ),
                    p if p.starts_with("/jobs/") => {
                        let id = decode(&p["/jobs/".len()..]);
                        let board = health
                            .board
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone();
                        let view = board.and_then(|b| {
                            b.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get(&id)
                                .map(|v| crate::tracker::JobView::clone(v))
                        });
                        match view.and_then(|v| serde_json::to_string(&v).ok()) {
                            Some(json) => respond(req, 200, "application/json", json),
                            None => respond(
                                req,
                                404,
                                "application/json",
                                "{\"error\":\"unknown message id\"}".into(),
                            ),
                        }
                    }
                    _ => respond(req, 404, "text/plain", "not found\n".into()),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok((bound, h))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn healthz_names_the_stuck_thread_and_lists_the_others() {
        let beats = crate::heartbeat::Beats::default();
        let (code, body) = super::healthz(&beats);
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        let add = |name: &str, bound: Duration| {
            let hb = crate::heartbeat::Heartbeat::new(name, bound);
            beats.insert(hb.clone());
            hb
        };
        let stuck = add("tracker", Duration::from_millis(30));
        let fresh = add("intake", Duration::from_secs(60));
        let idle = add("callbacks", Duration::from_millis(30));
        idle.beat_with(false);
        std::thread::sleep(Duration::from_millis(60));
        fresh.beat();
        let (code, body) = super::healthz(&beats);
        assert_eq!(code, 503, "{body}");
        assert!(body.starts_with("stuck: tracker\n"), "{body}");
        assert!(body.contains("intake fresh"), "{body}");
        assert!(body.contains("callbacks idle"), "{body}");
        stuck.beat();
        assert_eq!(super::healthz(&beats).0, 200);
    }

    #[test]
    fn ids_are_percent_decoded() {
        assert_eq!(super::decode("a%20b%2Fc"), "a b/c");
        assert_eq!(super::decode("bad%zz%"), "bad%zz%");
        assert_eq!(super::decode("%"), "%");
        // A sign is not a hex digit: "%+1" and "%-1" stay as they are.
        assert_eq!(super::decode("a%+1b%-1"), "a%+1b%-1");
        assert_eq!(super::decode("%4"), "%4");
    }
}
