//! Standard Webhooks identity and signing for callbacks: the stable
//! `webhook-id` of a (message id, status) pair and the `v1` HMAC-SHA256
//! signature over `<id>.<timestamp>.<body>` made with a `whsec_` secret. The
//! key never leaves this module in any printable form: its `Debug` output is
//! redacted and nothing here logs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// Prefix of Standard Webhooks secrets; the rest is the base64 of the key bytes.
const WHSEC_PREFIX: &str = "whsec_";

/// An HMAC-SHA256 key for Standard Webhooks signatures.
#[derive(Clone)]
pub struct SigningKey {
    key: hmac::Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Parses a `whsec_<base64>` secret (surrounding whitespace is ignored).
    /// Error messages never contain the secret.
    pub fn from_whsec(secret: &str) -> Result<SigningKey, String> {
        let encoded = secret
            .trim()
            .strip_prefix(WHSEC_PREFIX)
            .ok_or_else(|| format!("webhook signing secret must start with {WHSEC_PREFIX:?}"))?;
        let bytes = STANDARD.decode(encoded).map_err(|_| {
            "webhook signing secret is not valid base64 after the whsec_ prefix".to_string()
        })?;
        if bytes.is_empty() {
            return Err("webhook signing secret is empty".to_string());
        }
        Ok(SigningKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The value of the `webhook-signature` header: `v1,<base64 HMAC-SHA256>`
    /// of `"<webhook_id>.<timestamp>.<body>"`.
    pub fn sign(&self, webhook_id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(webhook_id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// The `webhook-id` of a callback: `msg_` and the first 32 hex digits of
/// SHA-256(`"<message id>\n<status>"`), the same across retries and restarts so
/// that receivers can deduplicate.
pub fn webhook_id(message_id: &str, status: crate::contract::Status) -> String {
    let hex = crate::encode::sha256_hex(format!("{message_id}\n{status}").as_bytes());
    format!("msg_{}", &hex[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification
    /// (re-computed independently with Python's hmac module).
    #[test]
    fn standard_webhooks_test_vector() {
        let key =
            SigningKey::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid secret");
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rejects_bad_secrets_without_echoing_them() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!notbase64",
            "whsec_",
        ] {
            let err = SigningKey::from_whsec(bad).expect_err(bad);
            assert!(!err.contains("MfKQ") && !err.contains("notbase64"), "{err}");
        }
        let key =
            SigningKey::from_whsec(" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").expect("trimmed");
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    }

    #[test]
    fn webhook_id_is_stable_and_distinct_per_status() {
        // python3: "msg_" + hashlib.sha256(b"m-1\n2").hexdigest()[:32]
        use crate::contract::Status::{Complete, Created, Running};
        assert_eq!(
            webhook_id("m-1", Complete),
            "msg_69fb1a135c2db16078d523aa378b3604"
        );
        assert_eq!(webhook_id("m-1", Complete), webhook_id("m-1", Complete));
        assert_ne!(webhook_id("m-1", Running), webhook_id("m-1", Complete));
        assert_eq!(webhook_id("x", Created).len(), 36);
    }
}
