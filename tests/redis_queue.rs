//! The Redis queue against the bed's real redis-server: a message stays in the
//! consumer's own processing list until settled, retries count up, recovery
//! returns stranded entries, dead letters keep their reason, and a former
//! leader's late receive can be swept back or handed back.

mod support;

use std::time::Duration;

use k8s_job_worker::queue::Queue;
use k8s_job_worker::queue::redis::RedisQueue;
use support::{bed, unique};

fn len(key: &str) -> i64 {
    match bed().redis_cmd(&["LLEN", key]) {
        redis::Value::Int(n) => n,
        v => panic!("LLEN {key}: {v:?}"),
    }
}

#[test]
fn receive_retry_ack_recover_and_dead_letter() {
    let prefix = format!("{}-", unique("rq"));
    let endpoint = format!("127.0.0.1:{}", bed().redis_port);
    let mut q = RedisQueue::new(&endpoint, 0, &prefix, "w-a", None).expect("queue");
    q.send(b"one").expect("send");
    let got = q.receive(10, Duration::from_secs(1)).expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].body.as_slice(), got[0].receive_count),
        (&b"one"[..], 1)
    );
    assert_eq!(
        len(&format!("{prefix}processing:w-a")),
        1,
        "held in the consumer's own list while unsettled"
    );

    // Each retry hands the message out again with a growing count.
    for want in 2..=4 {
        q.retry_later(&got[0].handle, Duration::ZERO)
            .expect("retry");
        let again = q.receive(10, Duration::from_secs(1)).expect("receive");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].receive_count, want);
    }
    q.ack(&[got[0].handle.clone()]).expect("ack");
    assert_eq!(len(&format!("{prefix}processing:w-a")), 0);

    // A consumer that died with a message in processing: the next one recovers it.
    q.send(b"two").expect("send");
    let stranded = q.receive(1, Duration::from_secs(1)).expect("receive");
    assert_eq!(stranded.len(), 1);
    let mut next = RedisQueue::new(&endpoint, 0, &prefix, "w-b", None).expect("queue");
    assert_eq!(next.recover().expect("recover"), 1);
    let back = next.receive(1, Duration::from_secs(1)).expect("receive");
    assert_eq!(back[0].body, b"two");
    next.dead_letter(&back[0].handle, &back[0].body, "INVALID_MESSAGE: test")
        .expect("dead letter");
    assert_eq!(len(&format!("{prefix}processing:w-a")), 0);
    assert_eq!(len(&format!("{prefix}processing:w-b")), 0);
    assert_eq!(len(&format!("{prefix}dead")), 1);
    assert!(
        next.receive(1, Duration::from_millis(200))
            .expect("receive")
            .is_empty()
    );
}

/// The stranding that per-consumer lists prevent: a former leader's blocking
/// receive returns after the new leader already recovered. The new leader's
/// sweep takes it back (the old one may be cut off), or the old one hands it
/// back itself; neither touches the other's unsettled messages.
#[test]
fn late_receive_is_swept_or_handed_back() {
    let prefix = format!("{}-", unique("rq"));
    let endpoint = format!("127.0.0.1:{}", bed().redis_port);
    let mut old = RedisQueue::new(&endpoint, 0, &prefix, "w-old", None).expect("queue");
    let mut new = RedisQueue::new(&endpoint, 0, &prefix, "w-new", None).expect("queue");
    assert_eq!(new.recover().expect("recover"), 0);
    // The new leader holds one message of its own, unsettled.
    new.send(b"mine").expect("send");
    let mine = new.receive(1, Duration::from_secs(1)).expect("receive");
    assert_eq!(mine.len(), 1);
    // The old leader's receive returns late with another, retried in memory.
    new.send(b"late").expect("send");
    let late = old.receive(1, Duration::from_secs(1)).expect("receive");
    assert_eq!(late[0].body, b"late");
    old.retry_later(&late[0].handle, Duration::from_secs(60))
        .expect("retry");
    assert_eq!(len(&format!("{prefix}processing:w-old")), 1);
    // A pre-0.2 worker's shared list is recovered too.
    bed().redis_cmd(&["LPUSH", &format!("{prefix}processing"), "legacy"]);

    assert_eq!(
        new.sweep().expect("sweep"),
        2,
        "the late and the legacy entry"
    );
    assert_eq!(len(&format!("{prefix}processing:w-old")), 0);
    assert_eq!(len(&format!("{prefix}processing")), 0);
    assert_eq!(
        len(&format!("{prefix}processing:w-new")),
        1,
        "a sweep never takes the sweeper's own"
    );
    let again = new.receive(10, Duration::from_secs(1)).expect("receive");
    let mut bodies: Vec<&[u8]> = again.iter().map(|r| r.body.as_slice()).collect();
    bodies.sort();
    assert_eq!(bodies, vec![&b"late"[..], &b"legacy"[..]]);

    // Handing back: everything this consumer holds, deferred ones included,
    // returns to the queue, and its in-memory retries are forgotten.
    new.retry_later(&again[0].handle, Duration::from_secs(60))
        .expect("retry");
    assert_eq!(new.hand_back().expect("hand back"), 3);
    assert_eq!(len(&format!("{prefix}processing:w-new")), 0);
    assert_eq!(len(&format!("{prefix}queue")), 3);
    let all = old
        .receive(10, Duration::from_millis(200))
        .expect("receive");
    assert_eq!(all.len(), 3);
}

/// A batch receive moves up to `max_batch` messages in FIFO order onto the
/// consumer's processing list (each message in exactly one list at every
/// moment), and one ack removes them all; at idle a receive blocks for its wait.
#[test]
fn batched_receive_moves_many_in_order_and_acks_in_one_call() {
    let prefix = format!("{}-", unique("rqb"));
    let endpoint = format!("127.0.0.1:{}", bed().redis_port);
    let mut q = RedisQueue::new(&endpoint, 0, &prefix, "w-a", None).expect("queue");
    assert_eq!(q.max_batch(), 64);
    for i in 0..150 {
        q.send(format!("m{i}").as_bytes()).expect("send");
    }
    let (qk, pk) = (format!("{prefix}queue"), format!("{prefix}processing:w-a"));
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    while seen.len() < 150 {
        let got = q.receive(64, Duration::from_secs(1)).expect("receive");
        assert!(!got.is_empty());
        sizes.push(got.len());
        assert_eq!(
            len(&qk) + len(&pk),
            150 - seen.len() as i64,
            "every unacknowledged message is in the queue or in processing"
        );
        seen.extend(
            got.iter()
                .map(|r| String::from_utf8_lossy(&r.body).to_string()),
        );
        let handles: Vec<_> = got.iter().map(|r| r.handle.clone()).collect();
        q.ack(&handles).expect("ack");
        assert_eq!(len(&pk), 0, "one ack removes the whole batch");
    }
    assert_eq!(sizes, vec![64, 64, 22]);
    let want: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want, "FIFO order");
    // Idle: the receive blocks for its wait (a lower bound), then returns nothing.
    let t = std::time::Instant::now();
    assert!(
        q.receive(64, Duration::from_millis(500))
            .expect("receive")
            .is_empty()
    );
    assert!(t.elapsed() >= Duration::from_millis(450));
}
