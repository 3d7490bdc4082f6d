//! Everything that talks to the Kubernetes API server: the REST client, the
//! list+watch state machine and Lease leader election. No other module opens a
//! connection to the API server.

pub mod client;
pub mod lease;
pub mod slim;
pub mod tombstone;
pub mod watch;

pub use client::{Client, KubeConfig, KubeError};
