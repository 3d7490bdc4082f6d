//! The Kubernetes REST client: one ureq agent that trusts only the cluster CA,
//! a bearer token re-read from its file (bound service-account tokens rotate),
//! and a few verbs over JSON values (get, post, merge-patch, release a
//! finalizer, delete, paginated list, watch) on the paths the callers name.
//! Non-2xx answers are decoded from their `Status` body into
//! `KubeError::Api`, so callers can tell 404/409/410/422 apart.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::encode::percent_encode;

/// How often the token file is re-read even without a 401.
const TOKEN_REFRESH: Duration = Duration::from_secs(60);
/// Timeout of an ordinary (non-watch) call (heartbeat bounds scale with it).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest body of an ordinary call we accept (lists are paginated).
/// Idle connections to the API server kept for reuse (≥ CREATE_CONCURRENCY's
/// upper bound plus the tracker's and the Lease's).
pub const MAX_IDLE_CONNECTIONS: usize = 72;

/// Each connection's buffers (ureq's default is 128 KiB for each of input and
/// output, in both the TCP and the TLS layer: 512 KiB per kept-alive
/// connection, most of the worker's heap with dozens of them). Responses
/// stream through in pieces; only a response's header block must fit
/// (`MAX_RESPONSE_HEADER`), and a request's headers in the output buffer.
pub const IO_BUFFER_BYTES: usize = 16 * 1024;
/// The largest response header block accepted (the API server's are < 1 KiB).
pub const MAX_RESPONSE_HEADER: usize = 8 * 1024;
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// Where the client finds the API server and its credentials.
#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// `https://host:port` (or `http://` for `kubectl proxy`).
    pub api_url: String,
    /// Bearer token file (re-read periodically); `None` for `kubectl proxy`.
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle that signs the API server's certificate.
    pub ca_file: Option<PathBuf>,
}

impl KubeConfig {
    /// In-cluster defaults: KUBERNETES_SERVICE_HOST/PORT and the mounted
    /// service-account files; KUBE_API_URL, KUBE_TOKEN_FILE and KUBE_CA_FILE
    /// override them (out-of-cluster use and tests).
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<KubeConfig, String> {
        const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
        let api_url = match get("KUBE_API_URL") {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                match (
                    get("KUBERNETES_SERVICE_HOST"),
                    get("KUBERNETES_SERVICE_PORT"),
                ) {
                    (Some(h), Some(p)) if h.contains(':') => format!("https://[{h}]:{p}"),
                    (Some(h), Some(p)) => format!("https://{h}:{p}"),
                    _ => {
                        return Err("KUBE_API_URL is not set and KUBERNETES_SERVICE_HOST/PORT are not either \
                         (not running in a cluster)"
                        .into());
                    }
                }
            }
        };
        let token_file = get("KUBE_TOKEN_FILE")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from(format!("{SA}/token"))).filter(|p| p.exists()));
        let ca_file = get("KUBE_CA_FILE")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from(format!("{SA}/ca.crt"))).filter(|p| p.exists()));
        if api_url.starts_with("https://") && ca_file.is_none() {
            return Err("KUBE_CA_FILE is required for an https API server outside the cluster (TLS is always verified)".into());
        }
        Ok(KubeConfig {
            api_url,
            token_file,
            ca_file,
        })
    }
}

/// An error at the Kubernetes API boundary; `op` names what was attempted.
#[derive(Debug, Clone)]
pub enum KubeError {
    /// The API server was not reached, or the connection broke.
    Transport { op: String, message: String },
    /// The API server answered with a non-2xx status.
    Api {
        op: String,
        code: u16,
        reason: String,
        message: String,
        /// How long the server asked us to wait (Retry-After, or the Status
        /// body's `details.retryAfterSeconds`), on 429 and some 5xx.
        retry_after: Option<Duration>,
    },
    /// A 2xx answer whose body could not be decoded.
    Decode { op: String, message: String },
    /// Local configuration (CA file, token file) is unusable.
    Config(String),
}

impl fmt::Display for KubeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeError::Transport { op, message } => {
                write!(f, "kube: {op}: API server unreachable: {message}")
            }
            KubeError::Api {
                op,
                code,
                reason,
                message,
                ..
            } => write!(f, "kube: {op}: {code} {reason}: {message}"),
            KubeError::Decode { op, message } => {
                write!(f, "kube: {op}: unreadable answer: {message}")
            }
            KubeError::Config(m) => write!(f, "kube: configuration: {m}"),
        }
    }
}

impl std::error::Error for KubeError {}

impl KubeError {
    /// The HTTP status of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The wait the API server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            KubeError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Worth retrying later: transport errors, 5xx, 429.
    pub fn is_transient(&self) -> bool {
        match self {
            KubeError::Transport { .. } | KubeError::Decode { .. } => true,
            KubeError::Api { code, .. } => *code >= 500 || *code == 429,
            KubeError::Config(_) => false,
        }
    }

    /// The message the API server gave (or the transport error), without the op.
    pub fn api_message(&self) -> String {
        match self {
            KubeError::Api {
                reason, message, ..
            } => format!("{reason}: {message}"),
            KubeError::Transport { message, .. } | KubeError::Decode { message, .. } => {
                message.clone()
            }
            KubeError::Config(m) => m.clone(),
        }
    }
}

struct Token {
    value: Option<String>,
    read_at: Option<Instant>,
}

/// A cheap-to-clone client; clones share the connection pool and token.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token_file: Option<PathBuf>,
    token: Arc<Mutex<Token>>,
}

/// Lines of a watch response, read with a per-read timeout.
pub struct WatchStream {
    reader: BufReader<Box<dyn Read + Send>>,
    op: String,
}

impl WatchStream {
    /// The next non-empty line; `Ok(None)` at the end of the stream.
    pub fn next_line(&mut self) -> Result<Option<String>, KubeError> {
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    if line.trim().is_empty() {
                        continue;
                    }
                    return Ok(Some(line));
                }
                Err(e) => {
                    return Err(KubeError::Transport {
                        op: self.op.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
    }
}

impl Client {
    pub fn new(cfg: &KubeConfig) -> Result<Client, KubeError> {
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(format!("k8s-job-worker/{}", crate::VERSION))
            .timeout_connect(Some(Duration::from_secs(10)))
            // Creator threads (CREATE_CONCURRENCY, at most 64) each keep a
            // connection alive between creates; ureq's default keeps only 3
            // per host, which would mean a TLS handshake for most creates.
            .max_idle_connections(MAX_IDLE_CONNECTIONS)
            .max_idle_connections_per_host(MAX_IDLE_CONNECTIONS)
            .input_buffer_size(IO_BUFFER_BYTES)
            .output_buffer_size(IO_BUFFER_BYTES)
            .max_response_header_size(MAX_RESPONSE_HEADER);
        if let Some(ca) = &cfg.ca_file {
            builder = builder.tls_config(tls_with_ca(ca)?);
        }
        let client = Client {
            agent: builder.build().new_agent(),
            base: cfg.api_url.trim_end_matches('/').to_string(),
            token_file: cfg.token_file.clone(),
            token: Arc::new(Mutex::new(Token {
                value: None,
                read_at: None,
            })),
        };
        client.token(false)?;
        Ok(client)
    }

    /// A client with a connection pool of its own (same API server, CA and
    /// token), so that its `shutdown` interrupts only its own requests.
    pub fn with_own_pool(&self) -> Client {
        Client {
            agent: ureq::Agent::new_with_config(self.agent.config().clone()),
            ..self.clone()
        }
    }

    /// Closes every connection of this client's pool (shared with its clones):
    /// a request blocked in a read, such as a watch, fails at once, and later
    /// requests fail too.
    pub fn shutdown(&self) {
        self.agent.clone().shutdown();
    }

    /// The API server URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn token(&self, force: bool) -> Result<Option<String>, KubeError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let mut t = self.token.lock().unwrap_or_else(|e| e.into_inner());
        let stale = t.read_at.is_none_or(|at| at.elapsed() >= TOKEN_REFRESH);
        if force || stale || t.value.is_none() {
            match std::fs::read_to_string(path) {
                Ok(s) => {
                    t.value = Some(s.trim().to_string());
                    t.read_at = Some(Instant::now());
                }
                Err(e) if t.value.is_none() => {
                    return Err(KubeError::Config(format!(
                        "cannot read token file {}: {e}",
                        path.display()
                    )));
                }
                Err(e) => log::warn!(
                    "kube: cannot re-read token file {}: {e}; keeping the previous token",
                    path.display()
                ),
            }
        }
        Ok(t.value.clone())
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        per_read: Option<Duration>,
        op: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, KubeError> {
        let url = format!("{}{}", self.base, path);
        for attempt in 0..2 {
            let token = self.token(attempt > 0)?;
            let mut req = ureq::http::Request::builder()
                .method(method)
                .uri(&url)
                .header("Accept", "application/json");
            if let Some(t) = &token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            if let Some((ct, _)) = &body {
                req = req.header("Content-Type", *ct);
            }
            let payload = body.as_ref().map(|(_, b)| b.clone()).unwrap_or_default();
            let req = req.body(payload).map_err(|e| KubeError::Transport {
                op: op.to_string(),
                message: e.to_string(),
            })?;
            let mut cfg = self.agent.configure_request(req);
            cfg = match per_read {
                Some(d) => cfg.timeout_per_read(Some(d)).timeout_recv_response(Some(d)),
                None => cfg.timeout_global(Some(CALL_TIMEOUT)),
            };
            let resp = self
                .agent
                .run(cfg.build())
                .map_err(|e| KubeError::Transport {
                    op: op.to_string(),
                    message: e.to_string(),
                })?;
            if resp.status().as_u16() == 401 && attempt == 0 && self.token_file.is_some() {
                continue; // the token may have rotated: re-read it once
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &Value)>,
        op: &str,
    ) -> Result<Value, KubeError> {
        let bytes = match body {
            Some((ct, v)) => Some((
                ct,
                serde_json::to_vec(v).map_err(|e| KubeError::Decode {
                    op: op.into(),
                    message: e.to_string(),
                })?,
            )),
            None => None,
        };
        let resp = self.send(method, path, bytes, None, op)?;
        let code = resp.status().as_u16();
        let retry_after_header = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp
            .into_body()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| KubeError::Transport {
                op: op.into(),
                message: e.to_string(),
            })?;
        if (200..300).contains(&code) {
            if text.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| KubeError::Decode {
                op: op.into(),
                message: e.to_string(),
            });
        }
        let mut err = status_error(op, code, &text);
        if let (KubeError::Api { retry_after, .. }, Some(h)) = (&mut err, retry_after_header) {
            *retry_after = Some(h);
        }
        Err(err)
    }

    /// GET a path and decode the JSON answer.
    pub fn get(&self, path: &str, op: &str) -> Result<Value, KubeError> {
        self.call("GET", path, None, op)
    }

    /// POST a JSON object.
    pub fn post(&self, path: &str, body: &Value, op: &str) -> Result<Value, KubeError> {
        self.call("POST", path, Some(("application/json", body)), op)
    }

    /// PUT a JSON object (carrying the resourceVersion it read).
    pub fn put(&self, path: &str, body: &Value, op: &str) -> Result<Value, KubeError> {
        self.call("PUT", path, Some(("application/json", body)), op)
    }

    /// PATCH with a JSON merge patch.
    pub fn merge_patch(&self, path: &str, body: &Value, op: &str) -> Result<Value, KubeError> {
        self.call(
            "PATCH",
            path,
            Some(("application/merge-patch+json", body)),
            op,
        )
    }

    /// DELETE with a propagation policy; a 404 counts as done.
    pub fn delete(&self, path: &str, propagation: &str, op: &str) -> Result<(), KubeError> {
        let body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation});
        match self.call("DELETE", path, Some(("application/json", &body)), op) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lists every item at `path` (with `query` like `labelSelector=...`),
    /// following `continue` tokens. Returns the items and the list's resourceVersion.
    pub fn list_all(
        &self,
        path: &str,
        query: &str,
        op: &str,
    ) -> Result<(Vec<Value>, String), KubeError> {
        let mut items = Vec::new();
        let mut cont = String::new();
        loop {
            let mut q = format!("limit=500&{query}");
            if !cont.is_empty() {
                q.push_str(&format!("&continue={}", percent_encode(&cont)));
            }
            let mut v = self.get(&format!("{path}?{q}"), op)?;
            if let Some(Value::Array(list)) = v.get_mut("items") {
                items.append(list);
            }
            let rv = v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            cont = v
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if cont.is_empty() {
                return Ok((items, rv));
            }
        }
    }

    /// Opens a watch (`watch=1` is added); `per_read` bounds each read, not the stream.
    pub fn watch(
        &self,
        path: &str,
        query: &str,
        per_read: Duration,
        op: &str,
    ) -> Result<WatchStream, KubeError> {
        let resp = self.send(
            "GET",
            &format!("{path}?watch=1&{query}"),
            None,
            Some(per_read),
            op,
        )?;
        let code = resp.status().as_u16();
        if !(200..300).contains(&code) {
            let text = resp
                .into_body()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default();
            return Err(status_error(op, code, &text));
        }
        let reader: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
        Ok(WatchStream {
            reader: BufReader::with_capacity(64 * 1024, reader),
            op: op.to_string(),
        })
    }
}

impl Client {
    /// Sets `annotations` on an object and removes `finalizer` from it. A
    /// missing object is fine. One strategic merge patch (the API server
    /// deletes the finalizer from the list itself, so nothing is read first
    /// and no concurrent change of the list is lost); where the type has no
    /// strategic merge (415, or refused as 400/422), a read and a merge patch
    /// guarded by the resourceVersion read (retried on 409).
    pub fn release(
        &self,
        path: &str,
        finalizer: &str,
        annotations: &Value,
        op: &str,
    ) -> Result<(), KubeError> {
        self.release_uid(path, "", finalizer, annotations, op)
    }

    /// `release`, but only of the object with this `uid` (any when empty): an
    /// object that took the name since is another one, and left alone. One
    /// strategic merge patch (it removes only our finalizer; with a uid the
    /// API server refuses it, 422, on a newer object of the name); on 400,
    /// 415 or 422 it reads the object first (its uid checked) and writes a
    /// guarded merge patch.
    pub fn release_uid(
        &self,
        path: &str,
        uid: &str,
        finalizer: &str,
        annotations: &Value,
        op: &str,
    ) -> Result<(), KubeError> {
        let mut meta = serde_json::json!({
            "$deleteFromPrimitiveList/finalizers": [finalizer],
            "annotations": annotations});
        if !uid.is_empty() {
            meta["uid"] = Value::String(uid.to_string());
        }
        let smp = serde_json::json!({ "metadata": meta });
        match self.call(
            "PATCH",
            path,
            Some(("application/strategic-merge-patch+json", &smp)),
            op,
        ) {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(404) => return Ok(()),
            Err(e) if matches!(e.code(), Some(400 | 415 | 422)) => {
                log::debug!("{op}: no strategic merge patch ({e}); reading first");
            }
            Err(e) => return Err(e),
        }
        for _ in 0..5 {
            let obj = match self.get(path, op) {
                Ok(o) => o,
                Err(e) if e.code() == Some(404) => return Ok(()),
                Err(e) => return Err(e),
            };
            if !uid.is_empty() && obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
            {
                return Ok(());
            }
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            let finalizers: Vec<Value> = obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|f| {
                    f.iter()
                        .filter(|v| v.as_str() != Some(finalizer))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": rv, "finalizers": finalizers, "annotations": annotations}});
            match self.merge_patch(path, &patch, op) {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some(404) => return Ok(()),
                Err(e) if e.code() == Some(409) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(KubeError::Api {
            op: op.into(),
            code: 409,
            reason: "Conflict".into(),
            message: "object kept changing".into(),
            retry_after: None,
        })
    }
}

/// A TLS configuration that trusts exactly the certificates of a PEM file.
pub fn tls_with_ca(ca: &std::path::Path) -> Result<ureq::tls::TlsConfig, KubeError> {
    let pem = std::fs::read(ca)
        .map_err(|e| KubeError::Config(format!("cannot read CA file {}: {e}", ca.display())))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(KubeError::Config(format!("CA file {}: {e}", ca.display()))),
        }
    }
    if certs.is_empty() {
        return Err(KubeError::Config(format!(
            "CA file {} holds no certificate",
            ca.display()
        )));
    }
    Ok(ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
        .build())
}

/// Decodes a Kubernetes `Status` body into an API error.
pub fn status_error(op: &str, code: u16, text: &str) -> KubeError {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let reason = v
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or(match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Gone",
            422 => "Invalid",
            429 => "TooManyRequests",
            _ => "Error",
        });
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            let t: String = text.chars().take(300).collect();
            t.trim().to_string()
        });
    let retry_after = v
        .pointer("/details/retryAfterSeconds")
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    KubeError::Api {
        op: op.to_string(),
        code,
        reason: reason.to_string(),
        message,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_become_sentences() {
        let e = status_error(
            "create job default/bb-1a2b",
            422,
            r#"{"kind":"Status","reason":"Invalid","message":"Job.batch \"bb\" is invalid"}"#,
        );
        assert_eq!(
            e.to_string(),
            "kube: create job default/bb-1a2b: 422 Invalid: Job.batch \"bb\" is invalid"
        );
        assert!(!e.is_transient());
        let e = status_error("list jobs", 503, "upstream down");
        assert_eq!(e.to_string(), "kube: list jobs: 503 Error: upstream down");
        assert!(e.is_transient());
        assert!(status_error("x", 429, "").is_transient());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(percent_encode("a=b,c/d"), "a%3Db%2Cc%2Fd");
    }

    #[test]
    fn in_cluster_config_needs_a_ca_for_https() {
        let env = |k: &str| match k {
            "KUBE_API_URL" => Some("https://127.0.0.1:6443/".to_string()),
            _ => None,
        };
        assert!(KubeConfig::from_env(&env).is_err());
        let env = |k: &str| match k {
            "KUBE_API_URL" => Some("http://127.0.0.1:8001".to_string()),
            _ => None,
        };
        let c = KubeConfig::from_env(&env).expect("plain http for kubectl proxy");
        assert_eq!(c.api_url, "http://127.0.0.1:8001");
    }
}
