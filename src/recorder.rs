//! The recorder threads (`record-N`): the callback hook that records each
//! settled status on its Job (the `delivered` annotation; the terminal one
//! also releases our finalizer) and settles rejected messages. The callback
//! dispatcher calls `Hooks::settled` in order per message; the PATCHes run on
//! RECORDERS threads, each message always on the same one (sharded by its id),
//! so one message's records stay in order while records of different messages
//! run in parallel and never hold up the dispatcher. Dropping the recorder (when
//! the dispatcher ends) closes the shards and joins their threads.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};
use serde_json::json;

use crate::callbacks::{Callback, Hooks, JobRef, Outcome};
use crate::contract::{ANN_DELIVERED, FINALIZER, Status};
use crate::kube::Client;

/// Recorder threads: enough PATCHes in flight to follow the callbacks.
pub const RECORDERS: usize = 8;

struct Record {
    job: JobRef,
    status: Status,
}

pub struct Recorder {
    shards: Vec<Sender<Record>>,
    handles: Vec<JoinHandle<()>>,
    /// Tokens of settled 99 callbacks, to intake.
    settled: Sender<u64>,
}

impl Recorder {
    pub fn spawn(kube: Client, settled: Sender<u64>) -> std::io::Result<Recorder> {
        let mut shards = Vec::new();
        let mut handles = Vec::new();
        for i in 1..=RECORDERS {
            let (tx, rx) = unbounded::<Record>();
            let kube = kube.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("record-{i}"))
                    .spawn(move || record_loop(&kube, rx))?,
            );
            shards.push(tx);
        }
        Ok(Recorder {
            shards,
            handles,
            settled,
        })
    }
}

/// Which shard records `id` (the same one for every status of a message).
fn shard(id: &str, n: usize) -> usize {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    (h.finish() % n.max(1) as u64) as usize
}

fn record_loop(kube: &Client, rx: Receiver<Record>) {
    for r in rx {
        // Delivered or given up: either way a successor must not send it again.
        let ann = json!({ANN_DELIVERED: r.status.to_string()});
        let path = format!(
            "/apis/batch/v1/namespaces/{}/jobs/{}",
            r.job.namespace, r.job.name
        );
        let op = format!(
            "record status {} on job {}/{}",
            r.status, r.job.namespace, r.job.name
        );
        let res = if r.status.is_terminal() {
            // Terminal: the Job no longer needs holding for us.
            kube.release(&path, FINALIZER, &ann, &op)
        } else {
            kube.merge_patch(&path, &json!({"metadata": {"annotations": ann}}), &op)
                .map(|_| ())
        };
        if let Err(e) = res
            && e.code() != Some(404)
        {
            log::warn!("{e}");
        }
    }
}

impl Hooks for Recorder {
    fn settled(&self, cb: &Callback, outcome: &Outcome) {
        if let Some(job) = &cb.job {
            let i = shard(&cb.message_id, self.shards.len());
            if let Some(tx) = self.shards.get(i) {
                let _ = tx.send(Record {
                    job: job.clone(),
                    status: cb.status,
                });
            }
        }
        if let Some(t) = cb.token {
            log::debug!(
                "message {}: 99 callback settled ({outcome:?})",
                cb.message_id
            );
            let _ = self.settled.send(t);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shards.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_always_lands_on_the_same_shard() {
        for id in ["a", "msg-1", "x".repeat(300).as_str()] {
            let s = shard(id, RECORDERS);
            assert!(s < RECORDERS);
            assert_eq!(shard(id, RECORDERS), s);
        }
        assert_eq!(shard("a", 1), 0);
        let spread: std::collections::HashSet<usize> = (0..200)
            .map(|i| shard(&format!("m{i}"), RECORDERS))
            .collect();
        assert_eq!(spread.len(), RECORDERS, "ids spread over every shard");
    }
}
