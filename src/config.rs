//! Configuration from the environment (the seed's variable names where one
//! exists). `Config::from_env` reads every variable once at start-up, applies the
//! documented defaults and reports every invalid value at once. Every variable
//! is read through `env::Reader` (here, in `Policy` and in `WebhookGuard`); only
//! the AWS credential chain reads the environment on its own (at each refresh).

use std::time::Duration;

use crate::env::Reader;
use crate::kube::KubeConfig;
use crate::message::Limits;
use crate::policy::Policy;
use crate::render::RenderConfig;
use crate::webhook_guard::WebhookGuard;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueConfig {
    Redis {
        /// `host:port`, `redis://[:password@]host:port[/db]` or `rediss://...`.
        endpoint: String,
        db: i64,
        key_prefix: String,
        /// PEM roots for rediss:// (REDIS_CA_FILE).
        ca_file: Option<std::path::PathBuf>,
    },
    Sqs {
        url: String,
        region: String,
        dead_letter_url: Option<String>,
    },
}

/// CREATE_CONCURRENCY's default (see README, Performance).
pub const DEFAULT_CREATE_CONCURRENCY: usize = 32;
/// CALLBACK_CONCURRENCY_PER_HOST's default (see README, Performance).
pub const DEFAULT_CALLBACK_CONCURRENCY_PER_HOST: usize = 16;
/// Upper bound of both pools (the agents keep this many idle connections).
pub const MAX_POOL: usize = 64;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub enabled: bool,
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub queue: QueueConfig,
    pub kube: KubeConfig,
    pub lease: LeaseConfig,
    pub limits: Limits,
    pub render: RenderConfig,
    /// Upper bound of one blocking receive.
    pub polling_interval: Duration,
    /// Admitted (not suspended) Jobs; 0 = unlimited.
    pub max_concurrent_jobs: usize,
    /// Suspended Jobs waiting in a Kueue queue (MAX_QUEUED_JOBS); 0 = unlimited.
    pub max_queued_jobs: usize,
    /// Live Jobs per message `service` (SERVICE_MAX_CONCURRENT).
    pub service_max_concurrent: crate::caps::ServiceCaps,
    /// Job creates per second, burst of the same size (JOB_CREATE_RATE); None = unlimited.
    pub job_create_rate: Option<f64>,
    /// Creator threads (`create-N`) creating Jobs in parallel (1..=64).
    pub create_concurrency: usize,
    /// Concurrent callback attempts per destination (1..=64).
    pub callback_concurrency_per_host: usize,
    pub pod_start_timeout: Duration,
    pub callback_timeout: Duration,
    pub callback_retry_horizon: Duration,
    /// Longest wait between two attempts of one callback.
    pub callback_backoff_max: Duration,
    pub webhook_signing_secret: Option<String>,
    pub http_port: u16,
    /// Empty = every namespace (cluster-wide watches).
    pub allowed_namespaces: Vec<String>,
    pub shutdown_grace: Duration,
    pub json_logs: bool,
    /// PEM CA bundle for https webhooks (WEBHOOK_CA_FILE); replaces the built-in roots.
    pub webhook_ca_file: Option<std::path::PathBuf>,
    /// How long a cancel tombstone waits for its job request (CANCEL_TOMBSTONE_TTL).
    pub cancel_tombstone_ttl: Duration,
    /// What a message may ask for (ALLOWED_*, MAX_*, REQUIRE_IMAGE_DIGEST); see `policy`.
    pub policy: Policy,
    /// Where callbacks may go (WEBHOOK_ALLOWED_HOSTS, WEBHOOK_DENY_PRIVATE); see `webhook_guard`.
    pub webhook_guard: WebhookGuard,
}

/// The settings that shape every Job (WORKER_INSTANCE, GPU_*, ISTIO_*),
/// with their defaults; the token-mounting accounts come from `policy`.
fn read_render(r: &mut Reader, policy: &Policy) -> RenderConfig {
    RenderConfig {
        instance: r.string("WORKER_INSTANCE", "default"),
        gpu_node_selector: r.pair(
            "GPU_NODE_SELECTOR",
            Some(("nvidia.com/gpu.present", "true")),
        ),
        gpu_toleration: r.pair("GPU_TOLERATION", Some(("nvidia.com/gpu", "present"))),
        istio_inject_false: r.bool("ISTIO_SIDECAR_INJECT_FALSE", true),
        automount_service_accounts: policy.automount_service_accounts(),
    }
}

/// The render settings of an empty environment: every default, from the same
/// reader `Config::from_env` uses (for tests, fuzzing and offline commands).
pub fn default_render() -> RenderConfig {
    read_render(&mut Reader::new(&|_| None), &Policy::default())
}

impl Config {
    /// Reads the configuration through `get` (the process environment in
    /// production, a map in tests). Every problem is reported in one error.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut r = Reader::new(get);
        let queue_type = r.string("QUEUE_TYPE", "redis").to_ascii_lowercase();
        let queue = match queue_type.as_str() {
            "redis" => QueueConfig::Redis {
                endpoint: r.required("REDIS_ENDPOINT", "when QUEUE_TYPE=redis"),
                db: r.num("REDIS_DB", 0),
                key_prefix: r.string("REDIS_JOB_KEY_PREFIX", "job-worker-"),
                ca_file: r.str("REDIS_CA_FILE").map(std::path::PathBuf::from),
            },
            "sqs" => {
                let url = r.required("AWS_SQS_URL", "when QUEUE_TYPE=sqs");
                let region = r
                    .str("AWS_SQS_REGION")
                    .or_else(|| r.str("AWS_REGION"))
                    .or_else(|| region_from_sqs_url(&url))
                    .unwrap_or_default();
                if region.is_empty() {
                    r.error("AWS_SQS_REGION is required when QUEUE_TYPE=sqs".into());
                }
                QueueConfig::Sqs {
                    url,
                    region,
                    dead_letter_url: r.str("AWS_SQS_DEAD_LETTER_URL"),
                }
            }
            other => {
                r.error(format!("QUEUE_TYPE={other:?} must be redis or sqs"));
                QueueConfig::Redis {
                    endpoint: String::new(),
                    db: 0,
                    key_prefix: String::new(),
                    ca_file: None,
                }
            }
        };
        let kube = match KubeConfig::from_env(get) {
            Ok(k) => k,
            Err(e) => {
                r.error(e);
                KubeConfig {
                    api_url: String::new(),
                    token_file: None,
                    ca_file: None,
                }
            }
        };
        let enabled = r.bool("LEADER_ELECTION", true);
        let lease = LeaseConfig {
            enabled,
            name: r.string("LEADER_ELECTION_LOCK_NAME", "aws-sqs-job-worker-lock"),
            namespace: if enabled {
                r.required("POD_NAMESPACE", "for the leader-election Lease")
            } else {
                r.string("POD_NAMESPACE", "default")
            },
            identity: if enabled {
                r.required("POD_NAME", "as the leader-election identity")
            } else {
                r.string("POD_NAME", "k8s-job-worker")
            },
            lease_duration: r.secs("LEASE_DURATION", 15.0),
            renew_deadline: r.secs("RENEW_DEADLINE", 10.0),
            retry_period: r.secs("RETRY_PERIOD", 2.0),
        };
        if lease.enabled
            && !(lease.lease_duration > lease.renew_deadline
                && lease.renew_deadline > lease.retry_period.mul_f64(1.2))
        {
            r.error(format!(
                "leader election needs LEASE_DURATION > RENEW_DEADLINE > 1.2 × RETRY_PERIOD (got {:?}, {:?}, {:?})",
                lease.lease_duration, lease.renew_deadline, lease.retry_period
            ));
        }
        // Limits::default() holds the documented defaults (86400 s, 256 KiB).
        let defaults = Limits::default();
        let active_deadline_max: i64 =
            r.num("ACTIVE_DEADLINE_SECONDS_MAX", defaults.active_deadline_max);
        if active_deadline_max < 60 {
            r.error("ACTIVE_DEADLINE_SECONDS_MAX must be at least 60".into());
        }
        let limits = Limits {
            active_deadline_max,
            max_message_bytes: r.num("MAX_MESSAGE_BYTES", defaults.max_message_bytes),
            default_queue_name: r.str("DEFAULT_QUEUE_NAME").filter(|q| !q.is_empty()),
            max_start_delay: r.secs("MAX_START_DELAY", defaults.max_start_delay.as_secs_f64()),
        };
        let policy = Policy::read(&mut r);
        if let Some(q) = &limits.default_queue_name {
            if !crate::policy::is_dns_label(q) {
                r.error(format!(
                    "DEFAULT_QUEUE_NAME={q:?} must be a LocalQueue name (a DNS-1123 label)"
                ));
            } else if !policy.allowed_queues.is_empty()
                && !policy.allowed_queues.iter().any(|a| a == "*" || a == q)
            {
                r.error(format!(
                    "DEFAULT_QUEUE_NAME={q:?} is not one of ALLOWED_QUEUES ({})",
                    policy.allowed_queues.join(",")
                ));
            }
        }
        let webhook_guard = WebhookGuard::read(&mut r, &kube.api_url);
        let render = read_render(&mut r, &policy);
        if !is_label_value(&render.instance) || render.instance.is_empty() {
            r.error(format!(
                "WORKER_INSTANCE={:?} must be a valid label value",
                render.instance
            ));
        }
        let polling_interval = r.secs("POLLING_INTERVAL", 5.0);
        let create_concurrency: usize = r.num("CREATE_CONCURRENCY", DEFAULT_CREATE_CONCURRENCY);
        if !(1..=MAX_POOL).contains(&create_concurrency) {
            r.error(format!(
                "CREATE_CONCURRENCY={create_concurrency} must be between 1 and {MAX_POOL}"
            ));
        }
        let callback_concurrency: usize = r.num(
            "CALLBACK_CONCURRENCY_PER_HOST",
            DEFAULT_CALLBACK_CONCURRENCY_PER_HOST,
        );
        if !(1..=MAX_POOL).contains(&callback_concurrency) {
            r.error(format!(
                "CALLBACK_CONCURRENCY_PER_HOST={callback_concurrency} must be between 1 and {MAX_POOL}"
            ));
        }
        let service_max_concurrent = match r.str("SERVICE_MAX_CONCURRENT") {
            None => crate::caps::ServiceCaps::default(),
            Some(v) => crate::caps::ServiceCaps::parse("SERVICE_MAX_CONCURRENT", &v)
                .unwrap_or_else(|e| {
                    r.error(e);
                    crate::caps::ServiceCaps::default()
                }),
        };
        let job_create_rate: f64 = r.num("JOB_CREATE_RATE", 0.0);
        if !(job_create_rate.is_finite() && (0.0..=1e6).contains(&job_create_rate)) {
            r.error(format!(
                "JOB_CREATE_RATE={job_create_rate} must be a number of Jobs per second between 0 (unlimited) and 1000000"
            ));
        }
        let job_create_rate =
            (job_create_rate.is_finite() && job_create_rate > 0.0).then_some(job_create_rate);
        let cfg = Config {
            queue,
            kube,
            lease,
            limits,
            render,
            polling_interval: polling_interval.max(Duration::from_millis(100)),
            max_concurrent_jobs: r.num("MAX_CONCURRENT_JOBS", 0),
            max_queued_jobs: r.num("MAX_QUEUED_JOBS", 0),
            service_max_concurrent,
            job_create_rate,
            create_concurrency: create_concurrency.clamp(1, MAX_POOL),
            callback_concurrency_per_host: callback_concurrency.clamp(1, MAX_POOL),
            pod_start_timeout: r.secs("POD_START_TIMEOUT", 600.0),
            callback_timeout: r.secs("CALLBACK_TIMEOUT", 10.0),
            callback_retry_horizon: r.secs("CALLBACK_RETRY_HORIZON", 3600.0),
            callback_backoff_max: r
                .secs("CALLBACK_BACKOFF_MAX", 60.0)
                .max(Duration::from_millis(100)),
            webhook_signing_secret: r.str("WEBHOOK_SIGNING_SECRET"),
            http_port: r.num("HTTP_SERVER_PORT", 8080),
            allowed_namespaces: policy.allowed_namespaces.clone(),
            shutdown_grace: r.secs("SHUTDOWN_GRACE", 20.0),
            json_logs: r.string("LOG_FORMAT", "text").eq_ignore_ascii_case("json"),
            webhook_ca_file: r.str("WEBHOOK_CA_FILE").map(std::path::PathBuf::from),
            cancel_tombstone_ttl: r
                .secs("CANCEL_TOMBSTONE_TTL", 86_400.0)
                .max(Duration::from_secs(1)),
            policy,
            webhook_guard,
        };
        r.finish(cfg).map_err(|errors| errors.join("; "))
    }

    /// Reads the process environment.
    pub fn from_process_env() -> Result<Config, String> {
        Config::from_env(&|k| std::env::var(k).ok())
    }
}

/// `https://sqs.eu-west-1.amazonaws.com/...` → `eu-west-1`.
fn region_from_sqs_url(url: &str) -> Option<String> {
    crate::aws::Endpoint::parse(url).ok()?.sqs_region()
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && (v.is_empty()
            || (v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(&move |k| m.get(k).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("KUBE_API_URL", "http://127.0.0.1:8001"),
        ("POD_NAME", "w-1"),
        ("POD_NAMESPACE", "jobs"),
    ];

    #[test]
    fn defaults_follow_the_seed_table() {
        let mut p = BASE.to_vec();
        p.push(("REDIS_ENDPOINT", "127.0.0.1:6379"));
        let c = cfg(&p).expect("valid");
        assert_eq!(
            c.queue,
            QueueConfig::Redis {
                endpoint: "127.0.0.1:6379".into(),
                db: 0,
                key_prefix: "job-worker-".into(),
                ca_file: None,
            }
        );
        assert_eq!(c.lease.name, "aws-sqs-job-worker-lock");
        assert_eq!(c.polling_interval, Duration::from_secs(5));
        assert_eq!(c.create_concurrency, DEFAULT_CREATE_CONCURRENCY);
        assert_eq!(
            c.callback_concurrency_per_host,
            DEFAULT_CALLBACK_CONCURRENCY_PER_HOST
        );
        assert_eq!(c.limits.active_deadline_max, 86_400);
        assert_eq!(c.lease.lease_duration, Duration::from_secs(15));
        assert_eq!(c.http_port, 8080);
        assert_eq!(c.max_queued_jobs, 0);
        assert_eq!(c.cancel_tombstone_ttl, Duration::from_secs(86_400));
        assert_eq!(c.limits.default_queue_name, None);
        assert_eq!(c.limits.max_start_delay, Duration::from_secs(7 * 86_400));
        assert!(c.policy.allowed_queues.is_empty());
    }

    #[test]
    fn queue_settings_are_read_and_checked() {
        let mut p = BASE.to_vec();
        p.extend([
            ("REDIS_ENDPOINT", "x:1"),
            ("ALLOWED_QUEUES", "team-a,batch"),
            ("DEFAULT_QUEUE_NAME", "batch"),
            ("MAX_QUEUED_JOBS", "500"),
            ("MAX_START_DELAY", "3600"),
        ]);
        let c = cfg(&p).expect("valid");
        assert_eq!(c.limits.max_start_delay, Duration::from_secs(3600));
        assert_eq!(c.limits.default_queue_name.as_deref(), Some("batch"));
        assert_eq!(c.policy.allowed_queues, vec!["team-a", "batch"]);
        assert_eq!(c.max_queued_jobs, 500);
        for (env, needle) in [
            (
                [("DEFAULT_QUEUE_NAME", "Batch"), ("ALLOWED_QUEUES", "")],
                "DEFAULT_QUEUE_NAME=\"Batch\" must be a LocalQueue name",
            ),
            (
                [
                    ("DEFAULT_QUEUE_NAME", "other"),
                    ("ALLOWED_QUEUES", "team-a"),
                ],
                "DEFAULT_QUEUE_NAME=\"other\" is not one of ALLOWED_QUEUES (team-a)",
            ),
            (
                [("MAX_QUEUED_JOBS", "-1"), ("ALLOWED_QUEUES", "")],
                "MAX_QUEUED_JOBS",
            ),
        ] {
            let mut p = BASE.to_vec();
            p.push(("REDIS_ENDPOINT", "x:1"));
            p.extend(env);
            let e = cfg(&p).unwrap_err();
            assert!(e.contains(needle), "{needle} missing from {e}");
        }
    }

    #[test]
    fn service_caps_and_the_create_rate_are_read_and_checked() {
        let mut p = BASE.to_vec();
        p.push(("REDIS_ENDPOINT", "x:1"));
        let c = cfg(&p).expect("valid");
        assert!(c.service_max_concurrent.is_empty());
        assert_eq!(c.job_create_rate, None);
        for (caps, rate, ocr, other, want_rate) in [
            ("ocr=10,render=2,*=50", "5", Some(10), Some(50), Some(5.0)),
            ("ocr=1", "0.5", Some(1), None, Some(0.5)),
            ("", "0", None, None, None),
        ] {
            let mut p = p.clone();
            p.extend([("SERVICE_MAX_CONCURRENT", caps), ("JOB_CREATE_RATE", rate)]);
            let c = cfg(&p).expect("valid");
            assert_eq!(c.service_max_concurrent.cap("ocr"), ocr, "{caps}");
            assert_eq!(c.service_max_concurrent.cap("x"), other, "{caps}");
            assert_eq!(c.job_create_rate, want_rate, "{rate}");
        }
        for (k, v, needle) in [
            (
                "SERVICE_MAX_CONCURRENT",
                "ocr=0",
                "SERVICE_MAX_CONCURRENT: entry \"ocr=0\"",
            ),
            ("SERVICE_MAX_CONCURRENT", "ocr", "must be service=N"),
            ("JOB_CREATE_RATE", "-1", "JOB_CREATE_RATE=-1 must be"),
            ("JOB_CREATE_RATE", "NaN", "JOB_CREATE_RATE=NaN must be"),
            ("JOB_CREATE_RATE", "inf", "JOB_CREATE_RATE=inf must be"),
            (
                "JOB_CREATE_RATE",
                "fast",
                "JOB_CREATE_RATE=\"fast\" is not a valid number",
            ),
        ] {
            let mut p = p.clone();
            p.push((k, v));
            let e = cfg(&p).unwrap_err();
            assert!(e.contains(needle), "{needle} missing from {e}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = cfg(&[
            ("QUEUE_TYPE", "sqs"),
            ("KUBE_API_URL", "http://x"),
            ("POLLING_INTERVAL", "abc"),
        ])
        .unwrap_err();
        assert!(e.contains("AWS_SQS_URL is required"), "{e}");
        assert!(e.contains("POD_NAMESPACE is required"), "{e}");
        assert!(e.contains("POLLING_INTERVAL=\"abc\""), "{e}");
    }

    #[test]
    fn lease_timing_must_be_ordered() {
        let mut p = BASE.to_vec();
        p.extend([
            ("REDIS_ENDPOINT", "x:1"),
            ("LEASE_DURATION", "10"),
            ("RENEW_DEADLINE", "10"),
        ]);
        assert!(
            cfg(&p)
                .unwrap_err()
                .contains("LEASE_DURATION > RENEW_DEADLINE")
        );
        let mut p = BASE.to_vec();
        p.extend([
            ("REDIS_ENDPOINT", "x:1"),
            ("RENEW_DEADLINE", "2.4"),
            ("RETRY_PERIOD", "2"),
        ]);
        assert!(cfg(&p).is_err(), "2.4 is not > 1.2 × 2");
    }

    #[test]
    fn cancel_tombstone_ttl_is_seconds_of_at_least_one() {
        let with = |v: &str| {
            let mut p = BASE.to_vec();
            p.extend([
                ("REDIS_ENDPOINT", "127.0.0.1:6379"),
                ("CANCEL_TOMBSTONE_TTL", v),
            ]);
            cfg(&p)
        };
        assert_eq!(
            with("3600").map(|c| c.cancel_tombstone_ttl),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(
            with("0").map(|c| c.cancel_tombstone_ttl),
            Ok(Duration::from_secs(1))
        );
        for bad in ["a day", "-5", "1e99"] {
            let e = with(bad).map(|_| ()).expect_err(bad);
            assert!(e.contains("CANCEL_TOMBSTONE_TTL"), "{e}");
        }
    }

    #[test]
    fn sqs_region_falls_back_to_the_queue_url() {
        let mut p = BASE.to_vec();
        p.extend([
            ("QUEUE_TYPE", "sqs"),
            ("AWS_SQS_URL", "https://sqs.eu-west-1.amazonaws.com/1/q"),
        ]);
        match cfg(&p).expect("valid").queue {
            QueueConfig::Sqs { region, .. } => assert_eq!(region, "eu-west-1"),
            q => panic!("{q:?}"),
        }
    }

    #[test]
    fn policy_and_webhook_guard_are_read() {
        let mut p = BASE.to_vec();
        p.extend([
            ("REDIS_ENDPOINT", "x:1"),
            ("ALLOWED_NAMESPACES", "a,b"),
            ("ALLOWED_SERVICE_ACCOUNTS", "*,trainer"),
            ("MAX_JOB_GPUS", "2"),
            ("WEBHOOK_ALLOWED_HOSTS", "*.example.com"),
            ("WEBHOOK_DENY_PRIVATE", "true"),
        ]);
        let c = cfg(&p).expect("valid");
        assert_eq!(c.policy.allowed_namespaces, c.allowed_namespaces);
        assert_eq!(c.policy.max_job_gpus, 2);
        assert_eq!(c.render.automount_service_accounts, vec!["trainer"]);
        assert_eq!(c.webhook_guard.allowed_hosts, vec!["*.example.com"]);
        assert!(c.webhook_guard.deny_private);
        // KUBE_API_URL is http://127.0.0.1:8001: its port is refused.
        assert_eq!(
            c.webhook_guard.deny_sockets,
            vec!["127.0.0.1:8001".parse().expect("socket address")]
        );

        let mut p = BASE.to_vec();
        p.extend([
            ("REDIS_ENDPOINT", "x:1"),
            ("MAX_JOB_CPU", "lots"),
            ("WEBHOOK_DENY_PRIVATE", "maybe"),
        ]);
        let e = cfg(&p).unwrap_err();
        assert!(e.contains("MAX_JOB_CPU=\"lots\""), "{e}");
        assert!(e.contains("WEBHOOK_DENY_PRIVATE=\"maybe\""), "{e}");

        let mut p = BASE.to_vec();
        p.push(("REDIS_ENDPOINT", "x:1"));
        let c = cfg(&p).expect("valid");
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.render.automount_service_accounts, vec!["default"]);
    }
}
