//! k8s-job-worker as a library: the binary in `main.rs` is a thin CLI over these
//! modules, and the integration tests and fuzz targets reach the same code. The
//! module tree mirrors the roles described in ARCHITECTURE.md.

#![cfg_attr(test, allow(clippy::unwrap_used))]

// The wire contract and the pure core: no I/O (except `WebhookGuard::resolve`,
// which asks DNS).
pub mod backoff;
pub mod cancel;
pub mod caps;
pub mod contract;
pub mod message;
pub mod policy;
pub mod quantity;
pub mod render;
pub mod schedule;
pub mod webhook_guard;

// Boundaries: the only modules that talk to the outside world.
pub mod aws;
pub mod kube;
pub mod queue;

// Threads, each beside the state it owns, and the wiring that starts them.
pub mod callbacks;
pub mod http;
pub mod intake;
pub mod payload;
pub mod tracker;
pub mod worker;

// Plumbing.
pub mod clock;
pub mod config;
pub mod encode;
pub mod env;
pub mod heartbeat;
pub mod logging;
pub mod metrics;
pub mod rate;
pub mod signal;

/// The version printed by `--version` and exported as build info.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
