//! Command-line entry point (std only): `run` (the default), `validate`,
//! `render`, `enqueue`, `--help`, `--version`. Exit codes: 0 success, 1 the
//! input was invalid (validate/render) or the worker failed at run time, 2 bad
//! usage or configuration.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use k8s_job_worker::config::Config;
use k8s_job_worker::contract::{FINALIZER, job_name, selector};
use k8s_job_worker::http::{self, Health};
use k8s_job_worker::kube::Client;
use k8s_job_worker::message::{self, Limits};
use k8s_job_worker::render::{self, RenderConfig};
use k8s_job_worker::{VERSION, logging, metrics, signal, worker};

const HELP: &str = "\
k8s-job-worker — turns queue messages (AWS SQS or Redis) into Kubernetes Jobs
and reports their progress to each message's webhook.

USAGE:
    k8s-job-worker [run]          run the worker (configured by environment; see README)
    k8s-job-worker validate FILE  check a message (FILE or - for stdin); print each problem
    k8s-job-worker render FILE    print the Job the worker would create for a message
    k8s-job-worker enqueue FILE   push a message onto the configured Redis list or SQS queue
    k8s-job-worker cancel ID      push a cancel of message ID onto the configured queue
    k8s-job-worker cleanup        remove the worker's finalizer from all its Jobs (before uninstalling)
    k8s-job-worker schema [message|callback]  print the message (default) or callback JSON Schema
    k8s-job-worker --help | --version

EXIT CODES:
    0  success
    1  invalid message (validate, render), send failure (enqueue), or a fatal run-time error
    2  bad usage or invalid configuration
";

fn read_input(arg: Option<&String>) -> Result<Vec<u8>, String> {
    match arg.map(String::as_str) {
        None => Err("missing FILE (use - for standard input)".into()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Ok(buf)
        }
        Some(path) => std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}")),
    }
}

/// The configuration of a command that needs only part of it: `forced`
/// variables replace the environment's, `fallback` ones fill in where it has
/// none (so the variables a command does not use cannot make it fail).
fn command_config(forced: &[(&str, &str)], fallback: &[(&str, &str)]) -> Result<Config, String> {
    let pick = |list: &[(&str, &str)], k: &str| {
        list.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    Config::from_env(&|k| {
        pick(forced, k)
            .or_else(|| std::env::var(k).ok())
            .or_else(|| pick(fallback, k))
    })
}

/// Limits and render settings from the environment, without requiring the
/// run-time variables (queue, API server) that validate/render do not need.
fn offline_settings() -> (Limits, RenderConfig) {
    let forced = [
        ("LEADER_ELECTION", "false"),
        ("KUBE_API_URL", "http://offline.invalid"),
        ("REDIS_ENDPOINT", "offline.invalid:1"),
        ("QUEUE_TYPE", "redis"),
    ];
    match command_config(&forced, &[]) {
        Ok(c) => (c.limits, c.render),
        Err(_) => (Limits::default(), k8s_job_worker::config::default_render()),
    }
}

fn validate_cmd(arg: Option<&String>, print_job: bool) -> ExitCode {
    let body = match read_input(arg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (limits, rcfg) = offline_settings();
    match message::parse_request(&body, &limits) {
        Ok(message::Request::Cancel { id }) => {
            if print_job {
                eprintln!("error: a cancel of message {id} renders no Job");
                return ExitCode::from(1);
            }
            println!("ok: cancel of message {id}");
            ExitCode::SUCCESS
        }
        Ok(message::Request::Job(msg)) => {
            if print_job {
                let job = render::render(&msg, &rcfg);
                println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
            } else {
                println!(
                    "ok: message {} → Job {}/{}",
                    msg.id,
                    msg.job.namespace,
                    job_name(&msg.job.prefix_name, &msg.id)
                );
            }
            ExitCode::SUCCESS
        }
        Err(rej) => {
            for p in &rej.problems {
                let field = if p.field.is_empty() {
                    "(message)"
                } else {
                    p.field.as_str()
                };
                println!("{}: {field}: {}", rej.code, p.message);
            }
            ExitCode::from(1)
        }
    }
}

/// `cancel ID`: the control message `{"id": ID, "action": "cancel"}`.
fn cancel_cmd(arg: Option<&String>) -> ExitCode {
    let Some(id) = arg.filter(|id| !id.is_empty()) else {
        eprintln!("error: missing ID (the id of the message to cancel)");
        return ExitCode::from(2);
    };
    let body = serde_json::json!({"id": id, "action": "cancel"}).to_string();
    if let Err(rej) = message::parse_request(body.as_bytes(), &Limits::default()) {
        eprintln!("error: {rej}");
        return ExitCode::from(2);
    }
    send_cmd(body.into_bytes())
}

fn enqueue_cmd(arg: Option<&String>) -> ExitCode {
    let body = match read_input(arg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    send_cmd(body)
}

/// Pushes one body onto the configured queue.
fn send_cmd(body: Vec<u8>) -> ExitCode {
    let fallback = [
        ("LEADER_ELECTION", "false"),
        ("KUBE_API_URL", "http://unused.invalid"),
    ];
    let cfg = match command_config(&[], &fallback) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let mut q = match worker::open_queue(&cfg) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match q.send(&body) {
        Ok(()) => {
            println!("enqueued {} bytes on {}", body.len(), q.kind());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn cleanup_cmd() -> ExitCode {
    logging::init(false);
    // The queue and the Lease are not used: only KUBE_*, WORKER_INSTANCE and
    // ALLOWED_NAMESPACES matter here.
    let forced = [
        ("LEADER_ELECTION", "false"),
        ("QUEUE_TYPE", "redis"),
        ("REDIS_ENDPOINT", "unused.invalid:1"),
    ];
    let cfg = match command_config(&forced, &[]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let kube = match Client::new(&cfg.kube) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let sel = k8s_job_worker::encode::percent_encode(&selector(&cfg.render.instance));
    // With an allowlist the worker's RBAC covers only those namespaces.
    let namespaces = &cfg.allowed_namespaces;
    let paths: Vec<String> = if namespaces.is_empty() {
        vec!["/apis/batch/v1/jobs".into()]
    } else {
        namespaces
            .iter()
            .map(|ns| format!("/apis/batch/v1/namespaces/{ns}/jobs"))
            .collect()
    };
    let mut jobs = Vec::new();
    for p in &paths {
        match kube.list_all(p, &format!("labelSelector={sel}"), "list jobs") {
            Ok((j, _)) => jobs.extend(j),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        }
    }
    let mut failed = 0;
    let mut released = 0;
    for j in jobs {
        let held = j
            .pointer("/metadata/finalizers")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|f| f.iter().any(|v| v.as_str() == Some(FINALIZER)));
        if !held {
            continue;
        }
        let ns = j
            .pointer("/metadata/namespace")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let name = j
            .pointer("/metadata/name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let path = format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}");
        match kube.release(
            &path,
            FINALIZER,
            &serde_json::json!({}),
            &format!("release job {ns}/{name}"),
        ) {
            Ok(()) => released += 1,
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
            }
        }
    }
    println!("removed the finalizer from {released} Job(s); {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `schema [message|callback]`: prints a published JSON Schema (schema/ in the repository).
fn schema_cmd(which: Option<&str>) -> ExitCode {
    match which {
        None | Some("message") => print!("{}", include_str!("../schema/message.schema.json")),
        Some("callback") => print!("{}", include_str!("../schema/callback.schema.json")),
        Some(other) => {
            eprintln!("error: unknown schema {other:?} (message or callback)");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn run() -> ExitCode {
    let cfg = match Config::from_process_env() {
        Ok(c) => c,
        Err(e) => {
            let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
            logging::init(json);
            log::error!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(cfg.json_logs);
    signal::install();
    metrics::set(metrics::BUILD_INFO, &[("version", VERSION)], 1.0);
    metrics::set(metrics::LEADER, &[], 0.0);
    let kube = match Client::new(&cfg.kube) {
        Ok(k) => k,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let health = Arc::new(Health::default());
    let port = match http::serve(cfg.http_port, health.clone()) {
        Ok((p, _)) => p,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    log::info!(
        "k8s-job-worker {VERSION} serving health and metrics on port {port}; API server {}",
        kube.base_url()
    );
    let outcome = worker::run_elected(&cfg, kube, health);
    match outcome {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        None | Some("run") => run(),
        Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version" | "version") => {
            println!("k8s-job-worker {VERSION}");
            ExitCode::SUCCESS
        }
        Some("validate") => validate_cmd(args.get(2), false),
        Some("render") => validate_cmd(args.get(2), true),
        Some("enqueue") => enqueue_cmd(args.get(2)),
        Some("cancel") => cancel_cmd(args.get(2)),
        Some("cleanup") => cleanup_cmd(),
        Some("schema") => schema_cmd(args.get(2).map(String::as_str)),
        Some(other) => {
            eprintln!("error: unknown command {other:?}\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}
