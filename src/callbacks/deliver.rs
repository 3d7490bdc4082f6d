//! One HTTP delivery attempt of a callback: builds the JSON body, the
//! Standard Webhooks headers (signed when a key is configured), POSTs it with
//! ureq under a per-request timeout and no redirects, reads at most a bounded
//! amount of the answer, and classifies the result as delivered, retryable or
//! final. Headers are never logged.

use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Callback;
use super::sign::{SigningKey, webhook_id};
use super::state::Attempt;
use crate::webhook_guard::Refusal;

/// What a delivery attempt needs besides the callback.
pub(crate) struct HttpDeliverer {
    pub agent: ureq::Agent,
    pub timeout: Duration,
    pub max_response_bytes: u64,
    pub key: Option<Arc<SigningKey>>,
    /// SSRF rules: the static check before each attempt; the resolved
    /// addresses are checked by the agent's `PinnedResolver` as it connects.
    pub guard: Arc<crate::webhook_guard::WebhookGuard>,
    /// The agent goes through a proxy (HTTPS_PROXY and friends), which
    /// resolves the host itself: the addresses are checked before the attempt
    /// instead, which a rebinding DNS name can race.
    pub proxied: bool,
}

/// The JSON body of a callback.
pub(crate) fn body(cb: &Callback) -> Vec<u8> {
    crate::contract::callback_body(&cb.message_id, cb.status, &cb.detail)
}

impl HttpDeliverer {
    pub(crate) fn deliver(&self, cb: &Callback) -> Attempt {
        let Some(url) = cb.url.as_ref() else {
            return Attempt::Final("no webhook URL".into());
        };
        let checked = if self.proxied {
            self.guard.resolve(url).map(drop)
        } else {
            self.guard.check(url)
        };
        if let Err(r) = checked {
            return refused(r);
        }
        let body = body(cb);
        let id = webhook_id(&cb.message_id, cb.status);
        let mut req = self
            .agent
            .post(url.as_str())
            .config()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .header("content-type", "application/json")
            .header("user-agent", format!("k8s-job-worker/{}", crate::VERSION))
            .header("webhook-id", id.as_str());
        if let Some(key) = &self.key {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            req = req
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", key.sign(&id, ts, &body));
        }
        match req.send(&body[..]) {
            Ok(mut resp) => {
                let code = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // Read (and discard) a bounded part of the answer; its content does not matter.
                let mut reader = resp.body_mut().as_reader().take(self.max_response_bytes);
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                classify(code, retry_after)
            }
            Err(e) => classify_error(e),
        }
    }
}

/// Classifies an HTTP status code.
pub(crate) fn classify(code: u16, retry_after: Option<Duration>) -> Attempt {
    match code {
        200..=299 => Attempt::Delivered,
        300..=399 => Attempt::Final(format!("HTTP {code}: redirects are not followed")),
        408 | 429 | 500..=599 => Attempt::Retry {
            reason: format!("HTTP {code}"),
            retry_after: if code == 429 || code == 503 {
                retry_after
            } else {
                None
            },
        },
        _ => Attempt::Final(format!("HTTP {code}")),
    }
}

/// A refusal of the guard: final, except a name that does not resolve now (it
/// may later).
fn refused(r: Refusal) -> Attempt {
    match r {
        Refusal::Unresolved(reason) => Attempt::Retry {
            reason,
            retry_after: None,
        },
        Refusal::Refused(why) => Attempt::Final(why),
    }
}

fn classify_error(e: ureq::Error) -> Attempt {
    use ureq::Error as E;
    if let Some(r) = crate::webhook_guard::refusal_of(&e) {
        return refused(r.clone());
    }
    match e {
        // The URL may carry a credential in its query: never echo it.
        E::BadUri(_) => Attempt::Final("request failed: the webhook URL is not usable".into()),
        E::Http(_) | E::InvalidProxyUrl | E::RedirectFailed | E::TooManyRedirects => {
            Attempt::Final(format!("request failed: {e}"))
        }
        E::Timeout(t) => Attempt::Retry {
            reason: format!("timeout: {t}"),
            retry_after: None,
        },
        other => Attempt::Retry {
            reason: format!("transport error: {other}"),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = |u: &str| {
            crate::webhook_guard::WebhookUrl::parse(u)
                .ok()
                .map(|w| w.destination().0)
        };
        assert_eq!(
            d("http://Example.com/a?b"),
            Some("http://example.com:80".into())
        );
        assert_eq!(
            d("https://example.com"),
            Some("https://example.com:443".into())
        );
        // Userinfo is refused by the one (strict) parser.
        assert_eq!(d("https://u:p@example.com:8443/x"), None);
        assert_eq!(
            d("https://example.com:8443/x"),
            Some("https://example.com:8443".into())
        );
        assert_eq!(
            d("http://127.0.0.1:9000/hook"),
            Some("http://127.0.0.1:9000".into())
        );
        assert_eq!(
            d("http://[::1]:9000/hook"),
            Some("http://[::1]:9000".into())
        );
        assert_eq!(d("http://[::1]/hook"), Some("http://[::1]:80".into()));
        assert_eq!(d("ftp://example.com"), None);
        assert_eq!(d("example.com/hook"), None);
        assert_eq!(d("http:///hook"), None);
        assert_eq!(d("http://h:notaport/"), None);
    }

    #[test]
    fn status_classes() {
        let ra = Some(Duration::from_secs(7));
        assert_eq!(classify(204, ra), Attempt::Delivered);
        assert!(matches!(classify(302, None), Attempt::Final(_)));
        assert!(matches!(classify(400, ra), Attempt::Final(_)));
        assert!(matches!(classify(404, None), Attempt::Final(_)));
        for code in [408, 500, 502, 504] {
            assert_eq!(
                classify(code, ra),
                Attempt::Retry {
                    reason: format!("HTTP {code}"),
                    retry_after: None
                }
            );
        }
        for code in [429, 503] {
            assert_eq!(
                classify(code, ra),
                Attempt::Retry {
                    reason: format!("HTTP {code}"),
                    retry_after: ra
                }
            );
        }
    }
}
