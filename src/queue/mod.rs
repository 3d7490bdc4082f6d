//! Queue backends behind one blocking interface: receive a batch, then settle
//! each message (ack, retry later, dead-letter). `redis.rs` keeps a message in a
//! processing list until it is settled; `sqs.rs` relies on the visibility
//! timeout. Only intake (the poller thread) and the `enqueue` CLI use a queue.

pub mod redis;
pub mod sqs;

use std::fmt;
use std::time::{Duration, Instant};

/// Identifies a received message for settling it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handle {
    /// The exact bytes of the entry in the processing list.
    Redis { raw: Vec<u8> },
    /// SQS receipt handle and message id.
    Sqs { receipt: String, message_id: String },
}

/// One received message.
#[derive(Clone, Debug)]
pub struct Received {
    pub body: Vec<u8>,
    pub handle: Handle,
    pub received_at: Instant,
    /// How many times the queue has handed this message out (1 = first time),
    /// when the backend knows it.
    pub receive_count: u32,
}

/// Errors at the queue boundary.
#[derive(Debug)]
pub enum QueueError {
    /// Network, timeout, 5xx, throttling: try again with backoff.
    Transient(String),
    /// Credentials or signature refused (403): retried, but also reported loudly.
    Auth(String),
    /// Anything else the backend refused.
    Permanent(String),
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Transient(m) => write!(f, "queue: transient error: {m}"),
            QueueError::Auth(m) => write!(f, "queue: credentials refused: {m}"),
            QueueError::Permanent(m) => write!(f, "queue: request refused: {m}"),
        }
    }
}

impl std::error::Error for QueueError {}

/// A blocking queue client owned by one thread.
pub trait Queue: Send {
    /// Short name for logs and metric labels ("redis", "sqs").
    fn kind(&self) -> &'static str;
    /// Waits at most `wait` for up to `max` messages (max ≥ 1). Returns early as
    /// soon as at least one message is available.
    fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError>;
    /// The most messages one `receive` returns (intake asks for no more).
    fn max_batch(&self) -> usize {
        10
    }
    /// Removes settled messages from the queue for good.
    fn ack(&mut self, handles: &[Handle]) -> Result<(), QueueError>;
    /// Makes the message receivable again after `delay` (the message stays
    /// durable meanwhile).
    fn retry_later(&mut self, handle: &Handle, delay: Duration) -> Result<(), QueueError>;
    /// Puts a message aside for `delay` because it cannot start now (its
    /// service is at its SERVICE_MAX_CONCURRENT cap); it stays durable and is
    /// received again once due. Redis: the `<prefix>delayed` sorted set; SQS
    /// (the default): a longer visibility timeout, like `retry_later`.
    fn defer(&mut self, handle: &Handle, delay: Duration) -> Result<(), QueueError> {
        self.retry_later(handle, delay)
    }
    /// Moves a message that can never succeed out of the queue, recording why
    /// (a dead-letter list, or a delete when the backend has no such place).
    fn dead_letter(&mut self, handle: &Handle, body: &[u8], reason: &str)
    -> Result<(), QueueError>;
    /// Called when this worker becomes the consumer: returns messages stranded by
    /// any previous consumer (this one's own earlier life included) to the
    /// queue. Returns how many were recovered.
    fn recover(&mut self) -> Result<usize, QueueError>;
    /// Called by the leader periodically: returns to the queue what *other*
    /// consumers hold, for example a former leader whose blocking receive
    /// returned after it had lost the Lease. Never touches this consumer's own
    /// unsettled messages. Returns how many were recovered.
    fn sweep(&mut self) -> Result<usize, QueueError> {
        Ok(0)
    }
    /// Called when this worker stops consuming (it lost the Lease or is shutting
    /// down): every message it holds unsettled goes back to the queue, so the
    /// next leader receives it at once. Returns how many were handed back.
    fn hand_back(&mut self) -> Result<usize, QueueError> {
        Ok(0)
    }
    /// True when `dead_letter` keeps the message and its reason durably (so a
    /// rejected message can leave the queue at once); false when it only deletes
    /// and the 99 callback must be settled first.
    fn dead_letter_is_durable(&self) -> bool {
        false
    }
    /// Sends a message (the `enqueue` CLI and tests).
    fn send(&mut self, body: &[u8]) -> Result<(), QueueError>;
}
