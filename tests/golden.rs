//! Golden tests: every `tests/golden/<name>.input.json` is parsed with the
//! default limits, as if received at `GOLDEN_NOW` (a delayed start is relative
//! to it), and rendered with the default configuration; the result must
//! equal `<name>.job.json` (compared as JSON values); a message with a
//! `payload` also renders its Secret (owner uid `GOLDEN_JOB_UID`), compared with
//! `<name>.secret.json`. A message that is refused is compared with
//! `<name>.rejection.json` instead, and a control message (`"action":
//! "cancel"`) with `<name>.cancel.json` (what `parse_request` read). With
//! `UPDATE_GOLDEN=1` the expected files are (re)written rather than compared.

use std::fs;
use std::path::{Path, PathBuf};

use k8s_job_worker::config::default_render;
use k8s_job_worker::message::{self, Limits, Rejection};
use k8s_job_worker::render;
use serde_json::{Value, json};

/// When the golden messages are received: 2026-12-01T12:00:00Z.
fn golden_now() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_126_400)
}

/// The Job uid the golden Secrets are owned by.
const GOLDEN_JOB_UID: &str = "00000000-0000-4000-8000-000000000000";

/// Compares (or, updating, writes) one expected file.
fn check(update: bool, name: &str, actual: &Value, path: &Path, failures: &mut Vec<String>) {
    if update {
        let text = serde_json::to_string_pretty(actual).expect("serializable") + "\n";
        fs::write(path, text).expect("writable golden file");
        return;
    }
    let expected: Value = match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("golden file is JSON"),
        Err(e) => {
            failures.push(format!("{name}: {}: {e}", path.display()));
            return;
        }
    };
    if *actual != expected {
        failures.push(format!(
            "{name}: output differs from {}:\n{}",
            path.display(),
            serde_json::to_string_pretty(actual).unwrap_or_default()
        ));
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn rejection_json(r: &Rejection) -> Value {
    let problems: Vec<Value> = r
        .problems
        .iter()
        .map(|p| json!({ "field": p.field, "message": p.message }))
        .collect();
    json!({
        "code": r.code,
        "id": r.id,
        "webhookUrl": r.webhook_url,
        "problems": problems,
        "display": r.to_string(),
    })
}

#[test]
fn golden() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let dir = golden_dir();
    let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("tests/golden exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".input.json"))
        })
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 9,
        "expected the golden cases, found {inputs:?}"
    );

    let mut failures = Vec::new();
    for input in &inputs {
        let file = input.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let name = file.trim_end_matches(".input.json");
        let body = fs::read(input).expect("readable input");
        let cancel_path = dir.join(format!("{name}.cancel.json"));
        if let Ok(message::Request::Cancel { id }) =
            message::parse_request_at(&body, &Limits::default(), golden_now())
        {
            check(
                update,
                name,
                &json!({"action": "cancel", "id": id}),
                &cancel_path,
                &mut failures,
            );
            continue;
        }
        if cancel_path.exists() {
            failures.push(format!(
                "{name}: not a cancel, but {} exists",
                cancel_path.display()
            ));
        }
        let parsed = message::parse_at(&body, &Limits::default(), golden_now());
        let secret_path = dir.join(format!("{name}.secret.json"));
        match parsed
            .as_ref()
            .ok()
            .and_then(|m| render::render_secret(m, &default_render(), GOLDEN_JOB_UID))
        {
            Some(secret) => check(update, name, &secret, &secret_path, &mut failures),
            None if update => {
                let _ = fs::remove_file(&secret_path);
            }
            None if secret_path.exists() => failures.push(format!(
                "{name}: renders no Secret, but {} exists",
                secret_path.display()
            )),
            None => {}
        }
        let (actual, expected_path, other_path) = match parsed {
            Ok(msg) => (
                render::render(&msg, &default_render()),
                dir.join(format!("{name}.job.json")),
                dir.join(format!("{name}.rejection.json")),
            ),
            Err(rej) => (
                rejection_json(&rej),
                dir.join(format!("{name}.rejection.json")),
                dir.join(format!("{name}.job.json")),
            ),
        };
        if update {
            let text = serde_json::to_string_pretty(&actual).expect("serializable") + "\n";
            fs::write(&expected_path, text).expect("writable golden file");
            let _ = fs::remove_file(&other_path);
            continue;
        }
        if other_path.exists() {
            failures.push(format!(
                "{name}: expected {}, but the outcome matches {}",
                other_path.display(),
                expected_path.display()
            ));
            continue;
        }
        let expected: Value = match fs::read(&expected_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("golden file is JSON"),
            Err(e) => {
                failures.push(format!("{name}: {}: {e}", expected_path.display()));
                continue;
            }
        };
        if actual != expected {
            failures.push(format!(
                "{name}: output differs from {}:\n{}",
                expected_path.display(),
                serde_json::to_string_pretty(&actual).unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (rerun with UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n\n")
    );
}

/// Rendering is deterministic: the same message always gives the same Job.
#[test]
fn render_is_deterministic() {
    let body = fs::read(golden_dir().join("seed-002.input.json")).expect("seed input");
    let a = message::parse(&body, &Limits::default()).expect("seed 002 is valid");
    let b = message::parse(&body, &Limits::default()).expect("seed 002 is valid");
    let cfg = default_render();
    assert_eq!(render::render(&a, &cfg), render::render(&b, &cfg));
}
