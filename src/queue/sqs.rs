//! AWS SQS over its JSON protocol (`X-Amz-Target: AmazonSQS.*`), signed with
//! SigV4 through `aws::sign`, on a plain blocking ureq agent. Owns `SqsQueue`
//! (the `Queue` implementation), the mapping of SQS error answers onto
//! `QueueError` kinds, and FIFO message group / deduplication ids.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::{Handle, Queue, QueueError, Received};
use crate::aws::{AwsError, CredentialsProvider, Endpoint, SignRequest, excerpt, sign};

/// SQS caps: messages per receive/batch, long-poll seconds, visibility seconds.
const MAX_BATCH: usize = 10;
/// Long polls of MAX_BATCH kept in flight at once while messages flow (each
/// on its own scoped thread, over the agent's pooled connections); at idle
/// one poll of POLLING_INTERVAL.
pub const RECEIVERS: usize = 3;
/// The long poll of each parallel receive while messages flow (seconds): short,
/// so a queue that runs dry falls back to the single idle poll quickly.
const FLOWING_WAIT_SECS: u64 = 1;
const MAX_WAIT_SECS: u64 = 20;
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// Time allowed beyond the long poll for the answer to arrive.
const POLL_SLACK: Duration = Duration::from_secs(10);
/// Time allowed for any call other than the long poll.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read (10 messages of up to 1 MiB each, plus slack).
const MAX_BODY: u64 = 16 << 20;

const RECEIPT_INVALID: &str = "ReceiptHandleIsInvalid";

/// What kind of failure an SQS answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Transient,
    Auth,
    Permanent,
}

/// Error codes that mean the credentials or the signature were refused.
const AUTH_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "InvalidSecurity",
    "MissingAuthenticationToken",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
];

/// Error codes that mean "slow down / try again".
const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "KmsThrottled",
    "RequestThrottled",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
];

/// Classifies an error answer by HTTP status and error code (a pure rule).
pub fn classify(status: u16, code: &str) -> ErrorKind {
    if status == 403 || AUTH_CODES.contains(&code) {
        ErrorKind::Auth
    } else if status >= 500 || status == 429 || TRANSIENT_CODES.contains(&code) {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    }
}

/// A failed call, with the error code kept for callers that branch on it.
#[derive(Debug)]
struct CallError {
    kind: ErrorKind,
    code: String,
    text: String,
}

impl From<CallError> for QueueError {
    fn from(e: CallError) -> Self {
        match e.kind {
            ErrorKind::Transient => QueueError::Transient(e.text),
            ErrorKind::Auth => QueueError::Auth(e.text),
            ErrorKind::Permanent => QueueError::Permanent(e.text),
        }
    }
}

/// Extracts (code, message) from an SQS error answer: JSON protocol
/// (`__type`, `message`), the query-compatibility header, or XML (`<Code>`),
/// as moto answers signature failures.
pub fn parse_error_body(body: &str, query_error_header: Option<&str>) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(t) = s("__type").or_else(|| s("code")).or_else(|| s("Code")) {
            code = t.rsplit('#').next().unwrap_or_default().to_string();
        }
        message = s("message").or_else(|| s("Message")).unwrap_or_default();
    } else if body.trim_start().starts_with('<') {
        code = crate::aws::credentials::xml_tag(body, "Code").unwrap_or_default();
        message = crate::aws::credentials::xml_tag(body, "Message").unwrap_or_default();
    }
    if let Some(h) = query_error_header {
        // "AWS.SimpleQueueService.NonExistentQueue;Sender": prefer the
        // short JSON code, but fall back to this one.
        if code.is_empty() {
            code = h.split(';').next().unwrap_or_default().to_string();
        }
    }
    if message.is_empty() {
        message = excerpt(body, 200);
    } else {
        message = excerpt(&message, 300);
    }
    (code, message)
}

fn credentials_error(e: AwsError) -> CallError {
    let kind = match &e {
        AwsError::Network { .. } | AwsError::Io { .. } => ErrorKind::Transient,
        AwsError::Service { status, .. } if *status >= 500 || *status == 429 => {
            ErrorKind::Transient
        }
        _ => ErrorKind::Auth,
    };
    CallError {
        kind,
        code: String::new(),
        text: format!("no usable credentials: {e}"),
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn endpoint_of(url: &str) -> Result<String, QueueError> {
    let bad = |m: &str| QueueError::Permanent(format!("SQS queue URL {url:?}: {m}"));
    let e = match Endpoint::parse(url) {
        Ok(e) if e.userinfo => return Err(bad("no host (or userinfo, which is not allowed)")),
        Ok(e) => e,
        Err("no host") => return Err(bad("no host (or userinfo, which is not allowed)")),
        Err(m) => return Err(bad(m)),
    };
    if e.path.trim_matches('/').is_empty() {
        return Err(bad("no queue path"));
    }
    Ok(e.base())
}

/// MessageGroupId for a FIFO queue: the message's string `id` when it is a
/// valid group id (1-128 printable ASCII characters), else "default". A
/// leading UTF-8 byte order mark is skipped, as `message::parse` skips it.
pub fn fifo_group_id(body: &[u8]) -> String {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
        .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "default".to_string())
}

/// A queue to send to, with what differs per queue.
#[derive(Clone, Debug)]
struct Target {
    url: String,
    endpoint: String,
    fifo: bool,
}

impl Target {
    fn new(url: &str) -> Result<Self, QueueError> {
        Ok(Target {
            url: url.to_string(),
            endpoint: endpoint_of(url)?,
            fifo: url.trim_end_matches('/').ends_with(".fifo"),
        })
    }
}

/// An SQS queue client: one per consuming thread.
pub struct SqsQueue {
    agent: ureq::Agent,
    creds: Arc<dyn CredentialsProvider>,
    region: String,
    queue: Target,
    dead_letter: Option<Target>,
    /// The last receive came back full: keep several polls in flight.
    flowing: bool,
}

fn handle_parts(handle: &Handle) -> Result<(&str, &str), QueueError> {
    match handle {
        Handle::Sqs {
            receipt,
            message_id,
        } => Ok((receipt, message_id)),
        Handle::Redis { .. } => Err(QueueError::Permanent(
            "a Redis message handle was given to the SQS queue".into(),
        )),
    }
}

impl SqsQueue {
    /// `queue_url` is the full queue URL; requests go to its scheme, host and
    /// port, so local emulators work. Timeouts are set per call here (the long
    /// poll plus 10 s for ReceiveMessage, 30 s for the others), overriding
    /// the agent's.
    pub fn new(
        queue_url: &str,
        region: &str,
        creds: Arc<dyn CredentialsProvider>,
        agent: ureq::Agent,
    ) -> Result<Self, QueueError> {
        if region.trim().is_empty() {
            return Err(QueueError::Permanent("SQS region is empty".into()));
        }
        Ok(SqsQueue {
            agent,
            creds,
            region: region.trim().to_string(),
            queue: Target::new(queue_url)?,
            dead_letter: None,
            flowing: false,
        })
    }

    /// Dead-lettered messages are sent to this queue (then deleted from the
    /// main one) instead of only being deleted.
    pub fn with_dead_letter_url(mut self, url: &str) -> Result<Self, QueueError> {
        self.dead_letter = Some(Target::new(url)?);
        Ok(self)
    }

    /// The queue URL this client consumes.
    pub fn queue_url(&self) -> &str {
        &self.queue.url
    }

    /// One signed JSON-protocol call, bounded by `timeout` (`CALL_TIMEOUT`
    /// when `None`).
    fn call(
        &self,
        endpoint: &str,
        op: &str,
        payload: &Value,
        timeout: Option<Duration>,
    ) -> Result<Value, CallError> {
        let what = format!("sqs {op}");
        let body = serde_json::to_vec(payload).map_err(|e| CallError {
            kind: ErrorKind::Permanent,
            code: String::new(),
            text: format!("{what}: cannot encode request: {e}"),
        })?;
        let creds = self.creds.credentials().map_err(credentials_error)?;
        let url = format!("{endpoint}/");
        let target = format!("AmazonSQS.{op}");
        let content_type = "application/x-amz-json-1.0";
        let signed = sign(
            &creds,
            &SignRequest {
                service: "sqs",
                region: &self.region,
                method: "POST",
                url: &url,
                headers: &[("content-type", content_type), ("x-amz-target", &target)],
                body: &body,
                time: SystemTime::now(),
            },
        )
        .map_err(|e| CallError {
            kind: ErrorKind::Permanent,
            code: String::new(),
            text: format!("{what}: {e}"),
        })?;

        let t = timeout.unwrap_or(CALL_TIMEOUT);
        let mut req = self
            .agent
            .post(&url)
            .config()
            .http_status_as_error(false)
            .timeout_global(Some(t))
            .timeout_per_call(Some(t))
            .timeout_recv_response(Some(t))
            .timeout_per_read(Some(t))
            .build()
            .header("Content-Type", content_type)
            .header("X-Amz-Target", &target);
        for (name, value) in &signed {
            req = req.header(*name, value.as_str());
        }
        let network = |e: ureq::Error| CallError {
            kind: ErrorKind::Transient,
            code: String::new(),
            text: format!("{what}: network error: {e}"),
        };
        let mut resp = req.send(&body[..]).map_err(network)?;
        let status = resp.status().as_u16();
        let query_error = resp
            .headers()
            .get("x-amzn-query-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(network)?;
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(Value::Object(Default::default()));
            }
            return serde_json::from_str(&text).map_err(|e| CallError {
                kind: ErrorKind::Transient,
                code: String::new(),
                text: format!("{what}: unreadable answer ({e}): {}", excerpt(&text, 200)),
            });
        }
        let (code, message) = parse_error_body(&text, query_error.as_deref());
        let kind = classify(status, &code);
        let shown = if code.is_empty() { "error" } else { &code };
        Err(CallError {
            kind,
            text: format!("{what}: {status} {shown}: {message}"),
            code,
        })
    }

    /// One ReceiveMessage call for up to `max` (≤ 10) messages.
    fn receive_one(&self, max: usize, wait_secs: u64) -> Result<Vec<Received>, QueueError> {
        let attributes = ["ApproximateReceiveCount", "SentTimestamp"];
        let payload = json!({
            "QueueUrl": self.queue.url,
            "MaxNumberOfMessages": max.clamp(1, MAX_BATCH),
            "WaitTimeSeconds": wait_secs,
            "AttributeNames": attributes,
            "MessageSystemAttributeNames": attributes,
        });
        let timeout = Duration::from_secs(wait_secs) + POLL_SLACK;
        let answer = self.call(
            &self.queue.endpoint,
            "ReceiveMessage",
            &payload,
            Some(timeout),
        )?;
        let now = Instant::now();
        let mut out = Vec::new();
        if let Some(messages) = answer.get("Messages").and_then(Value::as_array) {
            for m in messages {
                match parse_message(m, now) {
                    Some(r) => out.push(r),
                    None => log::warn!(
                        "sqs: ignoring a received message without MessageId or ReceiptHandle"
                    ),
                }
            }
        }
        Ok(out)
    }

    fn delete_one(&self, receipt: &str, message_id: &str) -> Result<(), CallError> {
        let payload = json!({"QueueUrl": self.queue.url, "ReceiptHandle": receipt});
        match self.call(&self.queue.endpoint, "DeleteMessage", &payload, None) {
            Err(e) if e.code == RECEIPT_INVALID => {
                log::warn!("sqs: message {message_id} was already deleted ({})", e.text);
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    fn send_to(
        &self,
        target: &Target,
        body: &[u8],
        reason: Option<&str>,
    ) -> Result<(), QueueError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| QueueError::Permanent("SQS message bodies must be UTF-8 text".into()))?;
        let mut payload = json!({"QueueUrl": target.url, "MessageBody": text});
        if let Some(reason) = reason {
            let reason = if reason.trim().is_empty() {
                "unspecified".to_string()
            } else {
                reason.chars().take(1000).collect()
            };
            payload["MessageAttributes"] =
                json!({"reason": {"DataType": "String", "StringValue": reason}});
        }
        if target.fifo {
            payload["MessageGroupId"] = json!(fifo_group_id(body));
            payload["MessageDeduplicationId"] = json!(crate::encode::sha256_hex(body));
        }
        self.call(&target.endpoint, "SendMessage", &payload, None)?;
        Ok(())
    }
}

/// Turns one element of ReceiveMessage's `Messages` into a `Received`.
#[doc(hidden)] // public for the `sqs_response` fuzz target
pub fn parse_message(m: &Value, now: Instant) -> Option<Received> {
    let message_id = m.get("MessageId")?.as_str()?.to_string();
    let receipt = m.get("ReceiptHandle")?.as_str()?.to_string();
    let body = m.get("Body").and_then(Value::as_str).unwrap_or_default();
    let receive_count = m
        .get("Attributes")
        .and_then(|a| a.get("ApproximateReceiveCount"))
        .and_then(Value::as_str)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Some(Received {
        body: body.as_bytes().to_vec(),
        handle: Handle::Sqs {
            receipt,
            message_id,
        },
        received_at: now,
        receive_count,
    })
}

impl Queue for SqsQueue {
    fn kind(&self) -> &'static str {
        "sqs"
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH * RECEIVERS
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let polls = if self.flowing {
            max.div_ceil(MAX_BATCH).clamp(1, RECEIVERS)
        } else {
            1
        };
        let out = if polls == 1 {
            self.receive_one(max.clamp(1, MAX_BATCH), wait.as_secs().min(MAX_WAIT_SECS))?
        } else {
            // Several long polls in flight at once, each for up to 10.
            let wait_secs = wait.as_secs().min(FLOWING_WAIT_SECS);
            let this = &*self;
            let results: Vec<Result<Vec<Received>, QueueError>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..polls)
                    .map(|i| {
                        let n = (max - i * MAX_BATCH).min(MAX_BATCH);
                        s.spawn(move || this.receive_one(n, wait_secs))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(QueueError::Transient(
                                "sqs: a receive thread panicked".into(),
                            ))
                        })
                    })
                    .collect()
            });
            let mut out = Vec::new();
            let mut first_error = None;
            for r in results {
                match r {
                    Ok(v) => out.extend(v),
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            // Messages already received are returned; an error only when none were.
            match first_error {
                Some(e) if out.is_empty() => return Err(e),
                _ => out,
            }
        };
        // A full batch means more are probably waiting.
        self.flowing = out.len() >= max.min(MAX_BATCH);
        Ok(out)
    }

    fn ack(&mut self, handles: &[Handle]) -> Result<(), QueueError> {
        let mut failures: Vec<String> = Vec::new();
        let mut worst = ErrorKind::Permanent;
        for chunk in handles.chunks(MAX_BATCH) {
            let parts = chunk
                .iter()
                .map(handle_parts)
                .collect::<Result<Vec<_>, _>>()?;
            let entries: Vec<Value> = parts
                .iter()
                .enumerate()
                .map(|(i, (receipt, _))| json!({"Id": i.to_string(), "ReceiptHandle": receipt}))
                .collect();
            let payload = json!({"QueueUrl": self.queue.url, "Entries": entries});
            let answer = self
                .call(&self.queue.endpoint, "DeleteMessageBatch", &payload, None)
                .map_err(|e| {
                    let ids: Vec<&str> = parts.iter().map(|(_, id)| *id).collect();
                    let mut q = QueueError::from(e);
                    let msg = match &mut q {
                        QueueError::Transient(m)
                        | QueueError::Auth(m)
                        | QueueError::Permanent(m) => m,
                    };
                    *msg = format!("deleting messages {}: {msg}", ids.join(", "));
                    q
                })?;
            let failed = answer
                .get("Failed")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for f in failed {
                let Some((receipt, message_id)) = f
                    .get("Id")
                    .and_then(Value::as_str)
                    .and_then(|id| id.parse::<usize>().ok())
                    .and_then(|i| parts.get(i).copied())
                else {
                    log::warn!("sqs: DeleteMessageBatch reported an unknown entry id");
                    continue;
                };
                let code = f.get("Code").and_then(Value::as_str).unwrap_or_default();
                if code == RECEIPT_INVALID {
                    log::warn!("sqs: message {message_id} was already deleted ({code})");
                    continue;
                }
                if let Err(e) = self.delete_one(receipt, message_id) {
                    if e.kind == ErrorKind::Transient
                        || (e.kind == ErrorKind::Auth && worst == ErrorKind::Permanent)
                    {
                        worst = e.kind;
                    }
                    failures.push(format!("{message_id} ({})", e.text));
                }
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        let text = format!("could not delete messages: {}", failures.join("; "));
        Err(CallError {
            kind: worst,
            code: String::new(),
            text,
        }
        .into())
    }

    fn retry_later(&mut self, handle: &Handle, delay: Duration) -> Result<(), QueueError> {
        let (receipt, _) = handle_parts(handle)?;
        let payload = json!({
            "QueueUrl": self.queue.url,
            "ReceiptHandle": receipt,
            "VisibilityTimeout": delay.as_secs().min(MAX_VISIBILITY_SECS),
        });
        self.call(
            &self.queue.endpoint,
            "ChangeMessageVisibility",
            &payload,
            None,
        )?;
        Ok(())
    }

    fn dead_letter(
        &mut self,
        handle: &Handle,
        body: &[u8],
        reason: &str,
    ) -> Result<(), QueueError> {
        let (receipt, message_id) = handle_parts(handle)?;
        match self.dead_letter.clone() {
            Some(target) => {
                self.send_to(&target, body, Some(reason))?;
                log::info!("sqs: message {message_id} moved to the dead-letter queue: {reason}");
            }
            None => log::warn!(
                "sqs: deleting message {message_id} without a dead-letter queue: {reason}"
            ),
        }
        self.delete_one(receipt, message_id)?;
        Ok(())
    }

    fn recover(&mut self) -> Result<usize, QueueError> {
        // In-flight messages reappear by themselves after the visibility timeout.
        Ok(0)
    }

    fn send(&mut self, body: &[u8]) -> Result<(), QueueError> {
        let target = self.queue.clone();
        self.send_to(&target, body, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(u16, &str, ErrorKind)] = &[
            (403, "InvalidClientTokenId", ErrorKind::Auth),
            (403, "SignatureDoesNotMatch", ErrorKind::Auth),
            (403, "", ErrorKind::Auth),
            (400, "ExpiredToken", ErrorKind::Auth),
            (400, "AccessDenied", ErrorKind::Auth),
            (500, "InternalError", ErrorKind::Transient),
            (503, "", ErrorKind::Transient),
            (429, "", ErrorKind::Transient),
            (400, "ThrottlingException", ErrorKind::Transient),
            (400, "RequestThrottled", ErrorKind::Transient),
            (400, "QueueDoesNotExist", ErrorKind::Permanent),
            (400, "ReceiptHandleIsInvalid", ErrorKind::Permanent),
            (404, "", ErrorKind::Permanent),
        ];
        for (status, code, want) in cases {
            assert_eq!(classify(*status, code), *want, "{status} {code}");
        }
    }

    #[test]
    fn error_bodies() {
        let (c, m) = parse_error_body(
            r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#,
            Some("AWS.SimpleQueueService.NonExistentQueue;Sender"),
        );
        assert_eq!(
            (c.as_str(), m.as_str()),
            ("QueueDoesNotExist", "The specified queue does not exist.")
        );
        let (c, m) = parse_error_body(
            "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error></ErrorResponse>",
            None,
        );
        assert_eq!(c, "SignatureDoesNotMatch");
        assert!(m.starts_with("The request signature"));
        let (c, m) = parse_error_body("Bad Gateway", Some("Throttling;Sender"));
        assert_eq!((c.as_str(), m.as_str()), ("Throttling", "Bad Gateway"));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint_of("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs").ok(),
            Some("https://sqs.eu-west-1.amazonaws.com".to_string())
        );
        assert_eq!(
            endpoint_of("http://127.0.0.1:4566/123456789012/jobs.fifo").ok(),
            Some("http://127.0.0.1:4566".to_string())
        );
        for bad in [
            "sqs/queue",
            "ftp://h/q",
            "https:///q",
            "https://h",
            "https://u@h/q",
        ] {
            assert!(endpoint_of(bad).is_err(), "{bad}");
        }
        assert!(Target::new("http://h:1/1/q.fifo").is_ok_and(|t| t.fifo));
        assert!(Target::new("http://h:1/1/q").is_ok_and(|t| !t.fifo));
    }

    #[test]
    fn fifo_ids() {
        assert_eq!(fifo_group_id(br#"{"id":"job-1","x":2}"#), "job-1");
        assert_eq!(fifo_group_id(br#"{"id":7}"#), "default");
        assert_eq!(fifo_group_id(br#"{"id":"has space"}"#), "default");
        assert_eq!(fifo_group_id(b"not json"), "default");
        assert_eq!(fifo_group_id(b"\xEF\xBB\xBF{\"id\":\"job-2\"}"), "job-2");
        // echo -n abc | sha256sum
        assert_eq!(
            crate::encode::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parses_received_messages() {
        let m = json!({"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}",
                       "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1"}});
        let r = parse_message(&m, Instant::now()).expect("message");
        assert_eq!(r.receive_count, 3);
        assert_eq!(r.body, b"{}");
        assert_eq!(
            r.handle,
            Handle::Sqs {
                receipt: "r1".into(),
                message_id: "m1".into()
            }
        );
        assert!(parse_message(&json!({"MessageId": "m"}), Instant::now()).is_none());
    }
}
