//! k8s-job-worker as a library: the binary in `main.rs` is a thin CLI over these
//! modules, and the integration tests and fuzz targets reach the same code. The
//! module tree mirrors the roles described in ARCHITECTURE.md.

pub mod aws;
pub mod backoff;
pub mod callbacks;
pub mod clock;
pub mod config;
pub mod contract;
pub mod encode;
pub mod http;
pub mod intake;
pub mod kube;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod policy;
pub mod quantity;
pub mod queue;
pub mod render;
pub mod signal;
pub mod tracker;
pub mod webhook_guard;
pub mod worker;

/// The version printed by `--version` and exported as build info.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
