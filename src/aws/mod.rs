//! AWS request signing (SigV4 through aws-sigv4) and credential providers:
//! environment keys, web identity (STS AssumeRoleWithWebIdentity, as IRSA
//! does) and container credentials (EKS Pod Identity), refreshed before expiry.
//! This module owns `AwsError`, the one error type of all AWS plumbing; the
//! SQS client itself lives in `queue::sqs`.

pub mod credentials;
mod endpoint;
pub mod sign;

use std::fmt;

pub use credentials::{
    ContainerAuth, ContainerProvider, CredentialsProvider, StaticProvider, WebIdentityProvider,
    provider_from_env, provider_from_lookup,
};
pub use endpoint::Endpoint;
pub use sign::{SignRequest, sign};

/// Errors from signing and from fetching credentials. `Display` reads as a
/// sentence starting with "aws:" and never contains a secret.
#[derive(Debug)]
pub enum AwsError {
    /// The environment or the caller gave an unusable setting.
    Config(String),
    /// A local file (a token file) could not be read.
    Io { what: String, detail: String },
    /// The network failed or timed out while calling `op`.
    Network { op: String, detail: String },
    /// The service answered `status` with an error code and message.
    Service {
        op: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The service answered 2xx but the body did not make sense.
    Parse { op: String, detail: String },
    /// aws-sigv4 refused to sign.
    Sign(String),
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsError::Config(m) => write!(f, "aws: configuration: {m}"),
            AwsError::Io { what, detail } => write!(f, "aws: cannot read {what}: {detail}"),
            AwsError::Network { op, detail } => write!(f, "aws: {op}: network error: {detail}"),
            AwsError::Service {
                op,
                status,
                code,
                message,
            } => {
                write!(f, "aws: {op}: {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            AwsError::Parse { op, detail } => {
                write!(f, "aws: {op}: unexpected response: {detail}")
            }
            AwsError::Sign(m) => write!(f, "aws: cannot sign request: {m}"),
        }
    }
}

impl std::error::Error for AwsError {}

/// A short single-line excerpt of a response body for error messages (bodies
/// of error responses carry no secrets; request headers are never included).
pub fn excerpt(body: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut last_space = false;
    for (n, c) in body.trim().chars().enumerate() {
        if n >= max_chars {
            out.push('…');
            break;
        }
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::percent_encode;

    #[test]
    fn display_reads_as_a_sentence() {
        let e = AwsError::Service {
            op: "sts AssumeRoleWithWebIdentity".into(),
            status: 403,
            code: "AccessDenied".into(),
            message: "Not authorized".into(),
        };
        assert_eq!(
            e.to_string(),
            "aws: sts AssumeRoleWithWebIdentity: 403 AccessDenied: Not authorized"
        );
    }

    #[test]
    fn excerpt_is_short_and_single_line() {
        assert_eq!(excerpt("  a\n\n  b  ", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(
            percent_encode("arn:aws:iam::1:role/x y~"),
            "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx%20y~"
        );
    }
}
