//! Fuzz target `sqs_response`: arbitrary bytes as an SQS answer: a
//! ReceiveMessage result (`Messages` turned into `Received`s with
//! `queue::sqs::parse_message`) and an error answer (`parse_error_body`, with
//! the body's first line as the x-amzn-query-error header). Must never panic.
#![no_main]

use std::time::Instant;

use k8s_job_worker::queue::sqs::{classify, fifo_group_id, parse_error_body, parse_message};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let _ = fifo_group_id(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    if let Ok(answer) = serde_json::from_str::<Value>(text) {
        if let Some(messages) = answer.get("Messages").and_then(Value::as_array) {
            for m in messages {
                let _ = parse_message(m, now);
            }
        }
    }
    let header = text.lines().next();
    for h in [None, header] {
        let (code, message) = parse_error_body(text, h);
        let _ = classify(400, &code);
        assert!(!message.contains('\n'), "message spans lines: {message:?}");
    }
});
