//! Redis list queue: BLMOVE from `<prefix>queue` to `<prefix>processing`, LREM on
//! ack, `<prefix>dead` for rejected messages, with reconnect and backoff.
