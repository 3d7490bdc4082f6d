//! The Redis queue against the bed's real redis-server: a message stays in the
//! processing list until settled, retries count up, recovery returns stranded
//! entries, dead letters keep their reason.

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
    let mut q = RedisQueue::new(&endpoint, 0, &prefix, None).expect("queue");
    q.send(b"one").expect("send");
    let got = q.receive(10, Duration::from_secs(1)).expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].body.as_slice(), got[0].receive_count),
        (&b"one"[..], 1)
    );
    assert_eq!(
        len(&format!("{prefix}processing")),
        1,
        "held while unsettled"
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
    assert_eq!(len(&format!("{prefix}processing")), 0);

    // A consumer that died with a message in processing: the next one recovers it.
    q.send(b"two").expect("send");
    let stranded = q.receive(1, Duration::from_secs(1)).expect("receive");
    assert_eq!(stranded.len(), 1);
    let mut next = RedisQueue::new(&endpoint, 0, &prefix, None).expect("queue");
    assert_eq!(next.recover().expect("recover"), 1);
    let back = next.receive(1, Duration::from_secs(1)).expect("receive");
    assert_eq!(back[0].body, b"two");
    next.dead_letter(&back[0].handle, &back[0].body, "INVALID_MESSAGE: test")
        .expect("dead letter");
    assert_eq!(len(&format!("{prefix}processing")), 0);
    assert_eq!(len(&format!("{prefix}dead")), 1);
    assert!(
        next.receive(1, Duration::from_millis(200))
            .expect("receive")
            .is_empty()
    );
}
