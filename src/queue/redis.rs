//! Redis list queue. Producers LPUSH onto `<prefix>queue`; the worker BLMOVEs
//! the oldest entry (RIGHT), then up to MAX_BATCH - 1 more in one pipeline of
//! LMOVEs (each atomic on its own), onto its own processing list
//! `<prefix>processing:<consumer>` (LEFT; the consumer is POD_NAME), so a
//! received message stays durable in Redis until it is settled: LREM on ack,
//! LPUSH to `<prefix>dead` (with the reason) plus LREM in one MULTI on
//! dead-letter. Each consumer has its own list, so a former leader whose BLMOVE
//! returns after the new leader recovered cannot strand anything: `recover`
//! (on taking the Lease) moves every consumer's list back to the queue, `sweep`
//! (periodically, while leading) every other consumer's, and `hand_back` (on
//! losing the Lease or stopping) this consumer's own. The pre-0.2 shared list
//! `<prefix>processing` is recovered too. A broken connection is dropped and
//! re-opened on the next call.
//!
//! A message deferred (its service at its cap, `defer`) moves atomically, in
//! one Lua script, from this consumer's processing list into the sorted set
//! `<prefix>delayed`, scored by its due time (the server's clock, ms); another
//! script moves every due member back to the consumer end of the queue
//! (ZRANGEBYSCORE, RPUSH, ZREM) before a receive once the earliest is due, and
//! at `recover` and `sweep`, so the set survives any leader change. Byte-identical
//! entries (the same message sent twice) wait there as one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Handle, Queue, QueueError, Received};

/// The most messages one receive moves (one pipelined round trip).
pub const MAX_BATCH: usize = 64;

pub struct RedisQueue {
    client: redis::Client,
    conn: Option<redis::Connection>,
    queue_key: String,
    /// `<prefix>processing`: the shared list of earlier versions, and the stem
    /// of every consumer's own list.
    processing_stem: String,
    /// This consumer's own list: `<prefix>processing:<consumer>`.
    processing_key: String,
    dead_key: String,
    /// `<prefix>delayed`: deferred messages by due time.
    delayed_key: String,
    /// When the earliest deferred message is due (None: the set was empty
    /// when last looked at; `sweep` looks again).
    next_promote: Option<Instant>,
    /// Messages told to retry later: still in the processing list, handed out
    /// again once due.
    deferred: Vec<(Instant, Received)>,
    /// How often each handed-out message was received (so a retried message's
    /// backoff keeps growing); forgotten when it is settled.
    attempts: HashMap<Vec<u8>, u32>,
    /// The last receive filled its batch: more are probably waiting.
    flowing: bool,
}

/// Builds a connection URL from REDIS_ENDPOINT (host:port or a redis:// URL) and REDIS_DB.
pub fn connection_url(endpoint: &str, db: i64) -> Result<String, QueueError> {
    let url = if endpoint.starts_with("redis://") || endpoint.starts_with("rediss://") {
        endpoint.to_string()
    } else {
        format!("redis://{endpoint}")
    };
    // Append the database unless the URL names one already.
    let after_host = url
        .trim_start_matches("rediss://")
        .trim_start_matches("redis://");
    Ok(if after_host.contains('/') {
        url
    } else {
        format!("{url}/{db}")
    })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

fn classify(op: &str, e: redis::RedisError) -> QueueError {
    let msg = format!("redis {op}: {e}");
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        QueueError::Transient(msg)
    } else if matches!(e.kind(), redis::ErrorKind::AuthenticationFailed) {
        QueueError::Auth(msg)
    } else {
        QueueError::Transient(msg)
    }
}

impl RedisQueue {
    /// `consumer`: this worker's name (POD_NAME), unique among the replicas;
    /// `ca_file`: PEM roots for `rediss://` (default: the built-in Mozilla roots).
    pub fn new(
        endpoint: &str,
        db: i64,
        key_prefix: &str,
        consumer: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<RedisQueue, QueueError> {
        if consumer.is_empty() {
            return Err(QueueError::Permanent(
                "redis: the consumer name (POD_NAME) is empty".into(),
            ));
        }
        let url = connection_url(endpoint, db)?;
        let bad = |e: redis::RedisError| {
            QueueError::Permanent(format!("redis endpoint {}: {e}", redact(&url)))
        };
        let client = match ca_file {
            Some(ca) if url.starts_with("rediss://") => {
                let pem = std::fs::read(ca).map_err(|e| {
                    QueueError::Permanent(format!("REDIS_CA_FILE {}: {e}", ca.display()))
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(url.as_str(), certs).map_err(bad)?
            }
            _ => redis::Client::open(url.as_str()).map_err(bad)?,
        };
        Ok(RedisQueue {
            client,
            conn: None,
            queue_key: format!("{key_prefix}queue"),
            processing_stem: format!("{key_prefix}processing"),
            processing_key: format!("{key_prefix}processing:{consumer}"),
            dead_key: format!("{key_prefix}dead"),
            delayed_key: format!("{key_prefix}delayed"),
            next_promote: None,
            deferred: Vec::new(),
            attempts: HashMap::new(),
            flowing: false,
        })
    }

    fn conn(&mut self) -> Result<&mut redis::Connection, QueueError> {
        if self.conn.is_none() {
            let c = self
                .client
                .get_connection_with_timeout(Duration::from_secs(5))
                .map_err(|e| classify("connect", e))?;
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| QueueError::Transient("redis: no connection".into()))
    }

    /// Runs `f` on the connection; drops the connection on any error so the next
    /// call reconnects.
    fn with<T>(
        &mut self,
        op: &str,
        read_timeout: Duration,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, QueueError> {
        let conn = self.conn()?;
        let _ = conn.set_read_timeout(Some(read_timeout));
        match f(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.conn = None;
                Err(classify(op, e))
            }
        }
    }

    /// The processing lists of every other consumer (and the legacy shared one).
    fn other_lists(&mut self) -> Result<Vec<String>, QueueError> {
        let pattern = format!("{}:*", glob_escape(&self.processing_stem));
        let mut keys = vec![self.processing_stem.clone()];
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) =
                self.with("SCAN", Duration::from_secs(5), |c| {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query(c)
                })?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        keys.retain(|k| *k != self.processing_key);
        Ok(keys)
    }

    /// Moves every entry of `list` back to the head of the queue (the end
    /// consumers take from), keeping their order.
    fn drain(&mut self, list: &str) -> Result<usize, QueueError> {
        let q = self.queue_key.clone();
        let mut n = 0;
        loop {
            let got: Option<Vec<u8>> = self.with("LMOVE", Duration::from_secs(5), |c| {
                redis::cmd("LMOVE")
                    .arg(list)
                    .arg(&q)
                    .arg("LEFT")
                    .arg("RIGHT")
                    .query(c)
            })?;
            if got.is_none() {
                return Ok(n);
            }
            n += 1;
        }
    }

    fn drain_others(&mut self) -> Result<usize, QueueError> {
        let mut n = 0;
        for list in self.other_lists()? {
            n += self.drain(&list)?;
        }
        Ok(n)
    }

    /// Moves up to `n` entries from the queue to this consumer's processing
    /// list in one round trip: a pipeline of `n` LMOVEs, each atomic on its
    /// own (a message is always in exactly one of the two lists); the ones
    /// after the queue ran empty answer nil.
    fn move_batch(&mut self, n: usize) -> Result<Vec<Received>, QueueError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let (q, p) = (self.queue_key.clone(), self.processing_key.clone());
        let got: Vec<Option<Vec<u8>>> = self.with("LMOVE", Duration::from_secs(5), |c| {
            let mut pipe = redis::pipe();
            for _ in 0..n {
                pipe.cmd("LMOVE").arg(&q).arg(&p).arg("RIGHT").arg("LEFT");
            }
            pipe.query(c)
        })?;
        Ok(got.into_iter().flatten().map(Self::received).collect())
    }

    /// Runs a Lua script by EVALSHA, falling back to EVAL when the server
    /// does not have it cached (NOSCRIPT).
    fn script<T: redis::FromRedisValue>(
        &mut self,
        op: &str,
        src: &str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, QueueError> {
        let sha = sha1_hex(src);
        self.with(op, Duration::from_secs(5), |c| {
            let call = |verb: &str, first: &str| {
                let mut cmd = redis::cmd(verb);
                cmd.arg(first).arg(keys.len());
                for k in keys {
                    cmd.arg(*k);
                }
                for a in args {
                    cmd.arg(*a);
                }
                cmd
            };
            match call("EVALSHA", &sha).query(c) {
                Err(e) if e.code() == Some("NOSCRIPT") => call("EVAL", src).query(c),
                other => other,
            }
        })
    }

    /// Moves the deferred messages that are due back to the queue; notes
    /// when the next one is due. Returns how many moved.
    fn promote(&mut self) -> Result<usize, QueueError> {
        let (d, q) = (self.delayed_key.clone(), self.queue_key.clone());
        let limit = PROMOTE_BATCH.to_string();
        let (moved, wait_ms): (usize, i64) =
            self.script("EVAL promote", PROMOTE, &[&d, &q], &[limit.as_bytes()])?;
        let now = Instant::now();
        self.next_promote = if moved >= PROMOTE_BATCH {
            Some(now)
        } else if wait_ms >= 0 {
            Some(now + Duration::from_millis(wait_ms as u64))
        } else {
            None
        };
        Ok(moved)
    }

    fn received(raw: Vec<u8>) -> Received {
        Received {
            body: raw.clone(),
            handle: Handle::Redis { raw },
            received_at: Instant::now(),
            receive_count: 1,
        }
    }
}

impl Queue for RedisQueue {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let max = max.max(1);
        if self.next_promote.is_some_and(|t| t <= Instant::now()) {
            self.promote()?;
        }
        let now = Instant::now();
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.deferred.len() && out.len() < max {
            if self.deferred[i].0 <= now {
                let (_, mut r) = self.deferred.remove(i);
                r.receive_count += 1;
                r.received_at = now;
                if let Handle::Redis { raw } = &r.handle {
                    self.attempts.insert(raw.clone(), r.receive_count);
                }
                out.push(r);
            } else {
                i += 1;
            }
        }
        if out.len() >= max {
            return Ok(out);
        }
        // Block only when nothing is due, and never past the next deferred entry.
        let mut block = if out.is_empty() { wait } else { Duration::ZERO };
        if let Some(next) = self.deferred.iter().map(|(due, _)| *due).min() {
            block = block.min(next.saturating_duration_since(now));
        }
        if let Some(next) = self.next_promote {
            // Wake for the earliest deferred message (at least 10 ms).
            block = block.min(
                next.saturating_duration_since(now)
                    .max(Duration::from_millis(10)),
            );
        }
        // While messages flow (the last receive was full), take a batch first
        // and block only if it came back empty.
        if self.flowing && out.is_empty() {
            let got = self.move_batch(max)?;
            self.flowing = got.len() >= max;
            out.extend(got);
            if !out.is_empty() {
                return Ok(out);
            }
        }
        let (q, p) = (self.queue_key.clone(), self.processing_key.clone());
        if !block.is_zero() {
            // BLMOVE takes fractional seconds; 0 would mean forever.
            let secs = block.as_secs_f64().max(0.01);
            let got: Option<Vec<u8>> =
                self.with("BLMOVE", block + Duration::from_secs(5), |c| {
                    redis::cmd("BLMOVE")
                        .arg(&q)
                        .arg(&p)
                        .arg("RIGHT")
                        .arg("LEFT")
                        .arg(format!("{secs:.3}"))
                        .query(c)
                })?;
            match got {
                Some(raw) => out.push(Self::received(raw)),
                None => {
                    self.flowing = false;
                    return Ok(out);
                }
            }
        }
        let rest = max.saturating_sub(out.len());
        if rest > 0 {
            let got = self.move_batch(rest)?;
            self.flowing = got.len() >= rest;
            out.extend(got);
        }
        Ok(out)
    }

    fn ack(&mut self, handles: &[Handle]) -> Result<(), QueueError> {
        let p = self.processing_key.clone();
        let raws: Vec<&Vec<u8>> = handles
            .iter()
            .filter_map(|h| match h {
                Handle::Redis { raw } => Some(raw),
                Handle::Sqs { .. } => None,
            })
            .collect();
        if raws.is_empty() {
            return Ok(());
        }
        for raw in &raws {
            self.attempts.remove(*raw);
        }
        // One round trip for the whole batch.
        let _: Vec<i64> = self.with("LREM", Duration::from_secs(5), |c| {
            let mut pipe = redis::pipe();
            for raw in &raws {
                pipe.cmd("LREM").arg(&p).arg(1).arg(*raw);
            }
            pipe.query(c)
        })?;
        Ok(())
    }

    fn retry_later(&mut self, handle: &Handle, delay: Duration) -> Result<(), QueueError> {
        if let Handle::Redis { raw } = handle {
            self.deferred.retain(|(_, r)| r.handle != *handle);
            let mut r = Self::received(raw.clone());
            r.receive_count = self.attempts.get(raw).copied().unwrap_or(1);
            self.deferred.push((Instant::now() + delay, r));
        }
        Ok(())
    }

    fn dead_letter(
        &mut self,
        handle: &Handle,
        body: &[u8],
        reason: &str,
    ) -> Result<(), QueueError> {
        let Handle::Redis { raw } = handle else {
            return Ok(());
        };
        let record = serde_json::json!({
            "reason": reason,
            "body": String::from_utf8_lossy(body),
            "at": crate::clock::now_rfc3339(),
        })
        .to_string();
        let (p, d) = (self.processing_key.clone(), self.dead_key.clone());
        self.attempts.remove(raw);
        let _: () = self.with("MULTI LPUSH LREM", Duration::from_secs(5), |c| {
            redis::pipe()
                .atomic()
                .cmd("LPUSH")
                .arg(&d)
                .arg(&record)
                .ignore()
                .cmd("LREM")
                .arg(&p)
                .arg(1)
                .arg(raw)
                .ignore()
                .query(c)
        })?;
        Ok(())
    }

    fn dead_letter_is_durable(&self) -> bool {
        true
    }

    fn defer(&mut self, handle: &Handle, delay: Duration) -> Result<(), QueueError> {
        let Handle::Redis { raw } = handle else {
            return Ok(());
        };
        self.deferred.retain(|(_, r)| r.handle != *handle);
        self.attempts.remove(raw);
        let (p, d) = (self.processing_key.clone(), self.delayed_key.clone());
        let ms = delay.as_millis().min(u64::MAX as u128).to_string();
        let _: i64 = self.script("EVAL defer", DEFER, &[&p, &d], &[raw, ms.as_bytes()])?;
        let due = Instant::now() + delay;
        self.next_promote = Some(self.next_promote.map_or(due, |t| t.min(due)));
        Ok(())
    }

    fn recover(&mut self) -> Result<usize, QueueError> {
        let own = self.hand_back()?;
        let others = self.drain_others()?;
        Ok(own + others + self.promote()?)
    }

    fn sweep(&mut self) -> Result<usize, QueueError> {
        // Also what a deposed leader deferred after this one last looked.
        let others = self.drain_others()?;
        Ok(others + self.promote()?)
    }

    fn hand_back(&mut self) -> Result<usize, QueueError> {
        self.deferred.clear();
        self.attempts.clear();
        let own = self.processing_key.clone();
        self.drain(&own)
    }

    fn send(&mut self, body: &[u8]) -> Result<(), QueueError> {
        let q = self.queue_key.clone();
        let _: i64 = self.with("LPUSH", Duration::from_secs(5), |c| {
            redis::cmd("LPUSH").arg(&q).arg(body).query(c)
        })?;
        Ok(())
    }
}

/// The most deferred messages one promote moves (one script run).
const PROMOTE_BATCH: usize = 256;

/// KEYS: processing list, delayed set; ARGV: the entry, the delay (ms).
/// Moves the entry from the list into the set, scored by the server's clock
/// plus the delay; nothing when the list no longer holds it.
const DEFER: &str = r#"
redis.replicate_commands()
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
"#;

/// KEYS: delayed set, queue; ARGV: the most to move. Moves the due members
/// to the consumer end of the queue (the earliest is received first) and
/// returns {moved, ms until the next is due or -1 when none is left}.
const PROMOTE: &str = r#"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for i = #due, 1, -1 do
  redis.call('RPUSH', KEYS[2], due[i])
  redis.call('ZREM', KEYS[1], due[i])
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then wait = math.max(0, tonumber(nxt[2]) - now) end
return {#due, wait}
"#;

/// Lowercase hex SHA-1 of a script (its EVALSHA name).
fn sha1_hex(src: &str) -> String {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, src.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `s` with Redis glob metacharacters escaped, for SCAN MATCH.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_named_by_their_sha1() {
        // echo -n abc | sha1sum
        assert_eq!(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(glob_escape("jobs-"), "jobs-");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn endpoints_become_urls_with_the_database() {
        assert_eq!(
            connection_url("127.0.0.1:6379", 2).ok(),
            Some("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            connection_url("redis://:pw@h:1", 0).ok(),
            Some("redis://:pw@h:1/0".into())
        );
        assert_eq!(
            connection_url("redis://h:1/5", 0).ok(),
            Some("redis://h:1/5".into())
        );
        assert_eq!(
            connection_url("rediss://:pw@h:1", 3).ok(),
            Some("rediss://:pw@h:1/3".into())
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
