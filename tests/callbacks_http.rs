//! End-to-end tests of the callback thread against real HTTP receivers on
//! 127.0.0.1: ordering per message, retries on 503 (with Retry-After), a dead
//! and a hanging webhook not delaying a healthy one, final 4xx/3xx answers,
//! Standard Webhooks signatures checked independently with ring, callbacks
//! without a webhook settling as Skipped, and a DNS name that rebinds between
//! check and connect reaching only the address the guard checked.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crossbeam_channel::{Receiver, Sender, unbounded};
use k8s_job_worker::callbacks::{self, Callback, CallbackMsg, Config, Hooks, Outcome, SigningKey};
use k8s_job_worker::contract::Status;
use k8s_job_worker::webhook_guard::{PinnedResolver, WebhookGuard, WebhookUrl};
use serde_json::{Value, json};

// ---- receivers ----

#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    raw: Vec<u8>,
    body: Value,
    headers: HashMap<String, String>,
    header_names: Vec<String>,
    answered: u16,
}

/// How a receiver answers its n-th request (0-based): status and Retry-After.
type Answer = Box<dyn Fn(usize, &Value) -> (u16, Option<&'static str>) + Send>;

struct HttpReceiver {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl HttpReceiver {
    fn start(bind: &str, answer: Answer) -> HttpReceiver {
        let server = tiny_http::Server::http(bind).expect("bind receiver");
        let addr = server.server_addr().to_ip().expect("ip address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (Arc::clone(&log), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let mut raw = Vec::new();
                let _ = req.as_reader().read_to_end(&mut raw);
                let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                let headers = req
                    .headers()
                    .iter()
                    .map(|h| {
                        (
                            h.field.as_str().as_str().to_ascii_lowercase(),
                            h.value.as_str().to_string(),
                        )
                    })
                    .collect();
                let header_names = req
                    .headers()
                    .iter()
                    .map(|h| h.field.as_str().as_str().to_ascii_lowercase())
                    .collect();
                let (code, retry_after) = answer(n, &body);
                n += 1;
                l.lock().expect("log").push(Received {
                    at: Instant::now(),
                    raw,
                    body,
                    headers,
                    header_names,
                    answered: code,
                });
                let mut resp = tiny_http::Response::from_string("ok").with_status_code(code);
                if let Some(ra) = retry_after {
                    resp = resp.with_header(
                        tiny_http::Header::from_bytes("Retry-After", ra).expect("header"),
                    );
                }
                if (300..400).contains(&code) {
                    resp = resp.with_header(
                        tiny_http::Header::from_bytes("Location", "/elsewhere").expect("header"),
                    );
                }
                let _ = req.respond(resp);
            }
        });
        HttpReceiver {
            addr,
            log,
            stop,
            handle: Some(handle),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn always_ok() -> Answer {
    Box::new(|_, _| (200, None))
}

/// A free 127.0.0.1 port with nothing listening on it (connections are refused).
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Accepts connections and never answers them.
struct BlackHole {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BlackHole {
            addr,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---- the callback thread ----

type Settled = (String, u8, Outcome, Instant);

struct ChannelHooks(Sender<Settled>);

impl Hooks for ChannelHooks {
    fn settled(&self, cb: &Callback, outcome: &Outcome) {
        let _ = self.0.send((
            cb.message_id.clone(),
            cb.status.code(),
            outcome.clone(),
            Instant::now(),
        ));
    }
}

struct Running {
    tx: Sender<CallbackMsg>,
    settled: Receiver<Settled>,
    handle: JoinHandle<()>,
}

impl Running {
    fn start(cfg: Config) -> Running {
        Running::start_resolving(cfg, None)
    }

    /// With `resolver` instead of the guard's system-resolver one.
    fn start_resolving(cfg: Config, resolver: Option<PinnedResolver>) -> Running {
        let (tx, rx) = unbounded();
        let (stx, settled) = unbounded();
        let agent = ureq::Agent::config_builder().build();
        let hooks = Arc::new(ChannelHooks(stx));
        let handle = match resolver {
            Some(r) => callbacks::spawn_resolving(cfg, agent, r, rx, hooks),
            None => callbacks::spawn(cfg, agent, rx, hooks),
        }
        .expect("spawn");
        Running {
            tx,
            settled,
            handle,
        }
    }

    fn send(&self, id: &str, status: u8, url: Option<&str>, detail: Value) {
        let cb = Callback {
            message_id: id.into(),
            status: Status::from_code(status).expect("a wire status"),
            detail: detail.into(),
            url: url.map(|u| WebhookUrl::parse(u).expect("a webhook URL")),
            job: None,
            token: None,
            queued_at: Instant::now(),
        };
        self.tx.send(CallbackMsg::Send(cb)).expect("send");
    }

    /// Waits for `n` settlements of message `id` (others are kept aside).
    fn wait(&self, id: &str, n: usize, within: Duration, aside: &mut Vec<Settled>) -> Vec<Settled> {
        let deadline = Instant::now() + within;
        let mut got: Vec<Settled> = Vec::new();
        let mut rest = Vec::new();
        for s in aside.drain(..) {
            if s.0 == id && got.len() < n {
                got.push(s)
            } else {
                rest.push(s)
            }
        }
        *aside = rest;
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.settled.recv_timeout(left) {
                Ok(s) if s.0 == id => got.push(s),
                Ok(s) => aside.push(s),
                Err(_) => panic!(
                    "only {} of {n} callbacks of {id} settled within {within:?}: {got:?}",
                    got.len()
                ),
            }
        }
        got
    }

    fn stop(self) {
        drop(self.tx);
        self.handle.join().expect("callback thread");
    }
}

fn fast_cfg() -> Config {
    Config {
        request_timeout: Duration::from_secs(5),
        retry_horizon: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(2),
        ..Config::default()
    }
}

fn statuses(s: &[Settled]) -> Vec<(u8, Outcome)> {
    s.iter().map(|x| (x.1, x.2.clone())).collect()
}

fn delivered(sts: &[u8]) -> Vec<(u8, Outcome)> {
    sts.iter().map(|s| (*s, Outcome::Delivered)).collect()
}

fn expected_webhook_id(message_id: &str, status: u8) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{message_id}\n{status}").as_bytes(),
    );
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{}", &hex[..32])
}

// ---- the tests ----

#[test]
fn statuses_of_one_message_arrive_in_order_with_the_right_json() {
    let rcv = HttpReceiver::start("127.0.0.1:0", always_ok());
    let run = Running::start(fast_cfg());
    let url = rcv.url("/hook?x=1");
    let details = [
        json!({"step": "received"}),
        json!({"job": "j-1", "pods": 1}),
        json!({"ok": true}),
    ];
    for (st, d) in details.iter().enumerate() {
        run.send("order-1", st as u8, Some(&url), d.clone());
    }
    let got = run.wait("order-1", 3, Duration::from_secs(10), &mut Vec::new());
    assert_eq!(statuses(&got), delivered(&[0, 1, 2]));
    let recv = rcv.received();
    assert_eq!(recv.len(), 3);
    for (st, r) in recv.iter().enumerate() {
        assert_eq!(
            r.body,
            json!({"id": "order-1", "status": st, "detail": details[st]})
        );
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let n_ct = r
            .header_names
            .iter()
            .filter(|h| *h == "content-type")
            .count();
        assert_eq!(n_ct, 1, "exactly one content-type header");
        let ua = format!("k8s-job-worker/{}", k8s_job_worker::VERSION);
        assert_eq!(r.headers.get("user-agent"), Some(&ua));
        assert_eq!(
            r.headers.get("webhook-id"),
            Some(&expected_webhook_id("order-1", st as u8))
        );
        assert!(
            !r.headers.contains_key("webhook-signature"),
            "unsigned without a secret"
        );
    }
    run.stop();
}

#[test]
fn a_receiver_failing_with_503_gets_everything_in_order_eventually() {
    let retries_before =
        k8s_job_worker::metrics::value("callback_retries_total", &[("status", "0")]);
    // The first 3 requests get 503 (the first one with Retry-After: 1), then 200.
    let rcv = HttpReceiver::start(
        "127.0.0.1:0",
        Box::new(|n, _| match n {
            0 => (503, Some("1")),
            1 | 2 => (503, None),
            _ => (200, None),
        }),
    );
    let run = Running::start(fast_cfg());
    let url = rcv.url("/cb");
    for st in 0..3u8 {
        run.send("retry-1", st, Some(&url), json!({ "n": st }));
    }
    let got = run.wait("retry-1", 3, Duration::from_secs(20), &mut Vec::new());
    assert_eq!(statuses(&got), delivered(&[0, 1, 2]));
    let recv = rcv.received();
    assert_eq!(recv.len(), 6, "3 failures + 3 deliveries");
    let seen: Vec<u64> = recv
        .iter()
        .map(|r| r.body["status"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(
        seen,
        vec![0, 0, 0, 0, 1, 2],
        "status 1 waits until status 0 is delivered"
    );
    let ok: Vec<u64> = recv
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.body["status"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(ok, vec![0, 1, 2]);
    // Retries keep the same webhook-id, and Retry-After: 1 was honoured up to
    // backoff_max (500 ms), well above the first jittered delay (at most 100 ms).
    let id0 = expected_webhook_id("retry-1", 0);
    assert!(
        recv[..4]
            .iter()
            .all(|r| r.headers.get("webhook-id") == Some(&id0))
    );
    let gap = recv[1].at.duration_since(recv[0].at);
    assert!(
        gap >= Duration::from_millis(450),
        "Retry-After honoured: {gap:?}"
    );
    let retries = k8s_job_worker::metrics::value("callback_retries_total", &[("status", "0")])
        - retries_before;
    assert!(retries >= 3.0, "retries counted: {retries}");
    run.stop();
}

#[test]
fn a_dead_or_hanging_webhook_does_not_delay_another_one() {
    let healthy = HttpReceiver::start("127.0.0.1:0", always_ok());
    let dead = dead_addr();
    let hole = BlackHole::start();
    let cfg = Config {
        request_timeout: Duration::from_secs(3),
        workers_per_host: 2,
        ..fast_cfg()
    };
    let run = Running::start(cfg);
    let t0 = Instant::now();
    let dead_url = format!("http://{dead}/hook");
    let hole_url = format!("http://{}/hook", hole.addr);
    for st in 0..3u8 {
        run.send("hol-dead", st, Some(&dead_url), json!({ "n": st }));
    }
    // More hanging messages than the hanging destination has workers.
    for i in 0..4 {
        run.send(&format!("hol-hang-{i}"), 0, Some(&hole_url), json!({}));
    }
    std::thread::sleep(Duration::from_millis(300));

    // While one webhook refuses connections and the other hangs, the healthy one is served at once.
    let sent = Instant::now();
    let url = healthy.url("/ok");
    for st in 0..3u8 {
        run.send("hol-healthy", st, Some(&url), json!({ "n": st }));
    }
    let mut aside = Vec::new();
    let got = run.wait("hol-healthy", 3, Duration::from_secs(10), &mut aside);
    assert_eq!(statuses(&got), delivered(&[0, 1, 2]));
    let recv = healthy.received();
    assert_eq!(recv.len(), 3);
    for r in &recv {
        let late = r.at.duration_since(sent);
        assert!(
            late < Duration::from_secs(1),
            "healthy webhook delayed by {late:?}"
        );
    }

    // The dead webhook comes back after ~5 s and gets all its callbacks, in order.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed()));
    assert!(
        aside.iter().all(|s| s.0 != "hol-dead"),
        "nothing of hol-dead settled while it was down"
    );
    let back = HttpReceiver::start(&dead.to_string(), always_ok());
    let got = run.wait("hol-dead", 3, Duration::from_secs(15), &mut aside);
    assert_eq!(statuses(&got), delivered(&[0, 1, 2]));
    let seen: Vec<u64> = back
        .received()
        .iter()
        .map(|r| r.body["status"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(seen, vec![0, 1, 2]);
    drop(hole);
    run.stop();
}

#[test]
fn a_4xx_or_redirect_answer_is_final_and_the_next_callback_follows() {
    let sent_failed = || {
        k8s_job_worker::metrics::value(
            "callbacks_sent_total",
            &[("status", "0"), ("outcome", "failed")],
        )
    };
    let failed_before = sent_failed();
    let rcv = HttpReceiver::start(
        "127.0.0.1:0",
        Box::new(
            |_, body| match (body["id"].as_str(), body["status"].as_u64()) {
                (Some("final-400"), Some(0)) => (400, None),
                (Some("final-302"), Some(0)) => (302, None),
                _ => (200, None),
            },
        ),
    );
    let run = Running::start(fast_cfg());
    let url = rcv.url("/cb");
    for id in ["final-400", "final-302"] {
        run.send(id, 0, Some(&url), json!({}));
        run.send(id, 1, Some(&url), json!({}));
    }
    let mut aside = Vec::new();
    for (id, code) in [("final-400", "400"), ("final-302", "302")] {
        let got = run.wait(id, 2, Duration::from_secs(10), &mut aside);
        assert!(
            matches!(&got[0].2, Outcome::Abandoned(m) if m.contains(code)),
            "{got:?}"
        );
        assert_eq!(got[0].1, 0);
        assert_eq!((got[1].1, got[1].2.clone()), (1, Outcome::Delivered));
    }
    let recv = rcv.received();
    assert_eq!(
        recv.len(),
        4,
        "no retries of final answers, no redirect followed"
    );
    assert!(recv.iter().all(|r| r.body["id"] != "elsewhere"));
    assert!(sent_failed() - failed_before >= 2.0);
    run.stop();
}

#[test]
fn signatures_verify_independently_in_the_receiver() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rcv = HttpReceiver::start("127.0.0.1:0", always_ok());
    let cfg = Config {
        signing_secret: Some(SigningKey::from_whsec(SECRET).expect("secret")),
        ..fast_cfg()
    };
    let run = Running::start(cfg);
    let url = rcv.url("/signed");
    for st in [0u8, 2, 99] {
        run.send(
            "signed-1",
            st,
            Some(&url),
            json!({ "reason": "ünïcode ✓", "n": st }),
        );
    }
    let got = run.wait("signed-1", 3, Duration::from_secs(10), &mut Vec::new());
    assert_eq!(statuses(&got), delivered(&[0, 2, 99]));

    let key_bytes = STANDARD.decode(&SECRET["whsec_".len()..]).expect("base64");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let recv = rcv.received();
    assert_eq!(recv.len(), 3);
    for r in &recv {
        let id = r.headers.get("webhook-id").expect("webhook-id");
        let ts = r
            .headers
            .get("webhook-timestamp")
            .expect("webhook-timestamp");
        let sigs = r
            .headers
            .get("webhook-signature")
            .expect("webhook-signature");
        let status = r.body["status"].as_u64().expect("status") as u8;
        assert_eq!(id, &expected_webhook_id("signed-1", status));
        let ts_n: u64 = ts.parse().expect("numeric timestamp");
        assert!(ts_n.abs_diff(now) < 300, "timestamp within tolerance");
        // The header may carry several space-separated signatures; one must verify.
        let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", &r.raw].concat();
        let ok = sigs.split(' ').any(|s| {
            s.strip_prefix("v1,")
                .and_then(|b| STANDARD.decode(b).ok())
                .is_some_and(|mac| ring::hmac::verify(&key, &signed, &mac).is_ok())
        });
        assert!(ok, "signature verifies");
        // A tampered body does not.
        let tampered = [id.as_bytes(), b".", ts.as_bytes(), b".", b"{}"].concat();
        let mac = STANDARD
            .decode(&sigs["v1,".len()..])
            .expect("base64 signature");
        assert!(ring::hmac::verify(&key, &tampered, &mac).is_err());
    }
    run.stop();
}

#[test]
fn no_webhook_settles_as_skipped_immediately() {
    let run = Running::start(fast_cfg());
    let sent = Instant::now();
    run.send("skip-1", 0, None, json!({}));
    run.send("skip-1", 2, None, json!({}));
    let got = run.wait("skip-1", 2, Duration::from_secs(5), &mut Vec::new());
    assert_eq!(
        statuses(&got),
        vec![(0, Outcome::Skipped), (2, Outcome::Skipped)]
    );
    assert!(got[1].3.duration_since(sent) < Duration::from_secs(1));
    run.stop();
}

/// DNS rebinding: `rebind.test` resolves to an allowed receiver the first time
/// and to a refused address afterwards (the "API server", refused on its
/// loopback port). The callback agent resolves once and connects only to the
/// address the guard checked, so the allowed receiver gets the callback and the
/// refused one nothing (a check followed by a second resolution at connect
/// time would have sent it to the refused address). A name that resolves to a
/// refused address, alone or among allowed ones, is final and nothing is sent.
#[test]
fn a_rebinding_dns_name_reaches_only_the_checked_address() {
    let good = HttpReceiver::start("127.0.0.1:0", always_ok());
    let api = HttpReceiver::start("127.0.0.1:0", always_ok());
    let mut guard = WebhookGuard::default();
    guard.deny_api_server(api.addr.ip(), api.addr.port());
    let lookups = Arc::new(AtomicUsize::new(0));
    let (n, good_addr, api_addr) = (Arc::clone(&lookups), good.addr, api.addr);
    let lookup = move |host: &str, _port: u16| -> std::io::Result<Vec<SocketAddr>> {
        match host {
            "rebind.test" => {
                let first = n.fetch_add(1, Ordering::SeqCst) == 0;
                Ok(vec![if first { good_addr } else { api_addr }])
            }
            "evil.test" => Ok(vec![api_addr]),
            "mixed.test" => Ok(vec![good_addr, api_addr]),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such host",
            )),
        }
    };
    let resolver = PinnedResolver::with_lookup(Arc::new(guard.clone()), Arc::new(lookup));
    let cfg = Config {
        guard: Some(guard),
        ..fast_cfg()
    };
    let run = Running::start_resolving(cfg, Some(resolver));
    let port = good.addr.port();
    run.send(
        "rebind",
        0,
        Some(&format!("http://rebind.test:{port}/hook")),
        json!({}),
    );
    let mut aside = Vec::new();
    let got = run.wait("rebind", 1, Duration::from_secs(10), &mut aside);
    assert_eq!(statuses(&got), delivered(&[0]));
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        1,
        "one lookup serves both the check and the connection"
    );
    assert_eq!(good.received().len(), 1);

    for id in ["evil", "mixed"] {
        run.send(
            id,
            0,
            Some(&format!("http://{id}.test:{port}/hook")),
            json!({}),
        );
        let got = run.wait(id, 1, Duration::from_secs(10), &mut aside);
        assert!(
            matches!(&got[0].2, Outcome::Abandoned(m) if m.contains("API server")),
            "{id}: {got:?}"
        );
    }
    assert!(api.received().is_empty(), "the refused address got nothing");
    assert_eq!(
        good.received().len(),
        1,
        "refused names are not retried elsewhere"
    );
    run.stop();
}
