//! Where AWS credentials come from: static keys, web identity (STS
//! AssumeRoleWithWebIdentity with a projected token file, as IRSA sets up) and
//! container credentials (EKS Pod Identity / ECS endpoint). Refreshing
//! providers cache credentials and fetch new ones shortly before they expire.
//! Constructors take explicit parameters; `provider_from_env` is a thin reader
//! of the standard AWS environment variables.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use serde::Deserialize;

/// ISO 8601 / RFC 3339 expiry times (`2026-11-24T10:00:00Z`) as AWS writes them.
fn parse_iso8601(s: &str) -> Result<std::time::SystemTime, String> {
    crate::clock::parse_rfc3339(s.trim())
        .ok_or_else(|| format!("not an RFC 3339 UTC timestamp: {s:?}"))
}
use super::{AwsError, excerpt};
use crate::encode::percent_encode;

/// Credentials are refreshed when less than this much validity remains.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Upper bound for one credential fetch (the cache lock is held meanwhile).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest credential response body read.
const MAX_BODY: u64 = 1 << 20;

const DEFAULT_SESSION_NAME: &str = "k8s-job-worker";

/// Hands out credentials valid for signing right now.
pub trait CredentialsProvider: Send + Sync {
    fn credentials(&self) -> Result<Credentials, AwsError>;
}

/// Fixed keys (environment variables or tests).
pub struct StaticProvider {
    creds: Credentials,
}

impl StaticProvider {
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Self {
        StaticProvider {
            creds: Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.map(str::to_string),
                None,
                "static",
            ),
        }
    }
}

impl CredentialsProvider for StaticProvider {
    fn credentials(&self) -> Result<Credentials, AwsError> {
        Ok(self.creds.clone())
    }
}

/// How usable cached credentials are at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Use them as they are.
    Fresh,
    /// Still valid, but less than `REFRESH_BEFORE_EXPIRY` remains: refresh,
    /// and fall back to them if the refresh fails.
    RefreshSoon,
    /// Expired (or expiring this instant): they must not be used.
    Expired,
}

/// Pure expiry rule: no expiry means never stale.
pub fn freshness(now: SystemTime, expiry: Option<SystemTime>) -> Freshness {
    let Some(expiry) = expiry else {
        return Freshness::Fresh;
    };
    match expiry.duration_since(now) {
        Ok(left) if left.is_zero() => Freshness::Expired,
        Ok(left) if left < REFRESH_BEFORE_EXPIRY => Freshness::RefreshSoon,
        Ok(_) => Freshness::Fresh,
        Err(_) => Freshness::Expired,
    }
}

/// The cache shared by refreshing providers.
#[derive(Default)]
struct Cache {
    current: Mutex<Option<Credentials>>,
}

impl Cache {
    /// Returns cached credentials while fresh; otherwise calls `fetch` (under
    /// the lock, so concurrent callers do not stampede). A failed refresh
    /// keeps and serves the old credentials while they are still valid, and
    /// returns the error once they are not.
    fn get(
        &self,
        what: &str,
        fetch: impl FnOnce() -> Result<Credentials, AwsError>,
    ) -> Result<Credentials, AwsError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let state = current
            .as_ref()
            .map(|c| freshness(SystemTime::now(), c.expiry()));
        if let (Some(creds), Some(Freshness::Fresh)) = (current.as_ref(), state) {
            return Ok(creds.clone());
        }
        match fetch() {
            Ok(creds) => {
                log::debug!("aws: fetched {what} credentials");
                *current = Some(creds.clone());
                Ok(creds)
            }
            Err(e) => match (current.as_ref(), state) {
                (Some(old), Some(Freshness::RefreshSoon)) => {
                    log::warn!("{e}; using the current {what} credentials until they expire");
                    Ok(old.clone())
                }
                _ => {
                    *current = None;
                    Err(e)
                }
            },
        }
    }
}

/// Reads a token file, trimming surrounding whitespace.
fn read_token_file(path: &PathBuf, what: &str) -> Result<String, AwsError> {
    let text = std::fs::read_to_string(path).map_err(|e| AwsError::Io {
        what: format!("{what} {}", path.display()),
        detail: e.to_string(),
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(AwsError::Io {
            what: format!("{what} {}", path.display()),
            detail: "the file is empty".into(),
        });
    }
    Ok(token)
}

/// The status and (at most MAX_BODY of) the text of a credential endpoint's answer.
fn status_and_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    op: &str,
) -> Result<(u16, String), AwsError> {
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| network(op, e))?;
    Ok((status, body))
}

fn network(op: &str, e: ureq::Error) -> AwsError {
    AwsError::Network {
        op: op.to_string(),
        detail: e.to_string(),
    }
}

/// Returns the text between `<tag>` and `</tag>` (first occurrence), with the
/// five predefined XML entities decoded. Enough for STS's Query responses.
pub fn xml_tag(doc: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = doc.find(&open)? + open.len();
    let len = doc[start..].find(&close)?;
    Some(xml_unescape(doc[start..start + len].trim()))
}

fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#xD;", "\r")
        .replace("&#xA;", "\n")
        .replace("&amp;", "&")
}

/// STS AssumeRoleWithWebIdentity with a token file re-read on each refresh.
pub struct WebIdentityProvider {
    agent: ureq::Agent,
    role_arn: String,
    token_file: PathBuf,
    session_name: String,
    /// Base URL of STS, e.g. `https://sts.eu-west-1.amazonaws.com`.
    sts_endpoint: String,
    cache: Cache,
}

const STS_OP: &str = "sts AssumeRoleWithWebIdentity";

impl WebIdentityProvider {
    /// `session_name` defaults to "k8s-job-worker" when `None`.
    pub fn new(
        agent: ureq::Agent,
        role_arn: &str,
        token_file: impl Into<PathBuf>,
        session_name: Option<&str>,
        sts_endpoint: &str,
    ) -> Self {
        WebIdentityProvider {
            agent,
            role_arn: role_arn.to_string(),
            token_file: token_file.into(),
            session_name: session_name.unwrap_or(DEFAULT_SESSION_NAME).to_string(),
            sts_endpoint: sts_endpoint.trim_end_matches('/').to_string(),
            cache: Cache::default(),
        }
    }

    fn fetch(&self) -> Result<Credentials, AwsError> {
        let token = read_token_file(&self.token_file, "web identity token file")?;
        let form = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName={}&WebIdentityToken={}",
            percent_encode(&self.role_arn),
            percent_encode(&self.session_name),
            percent_encode(&token),
        );
        // This call is unsigned: the web identity token is the credential.
        let mut resp = self
            .agent
            .post(format!("{}/", self.sts_endpoint))
            .config()
            .http_status_as_error(false)
            .timeout_global(Some(FETCH_TIMEOUT))
            .build()
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .header("Accept", "text/xml")
            .send(form.as_bytes())
            .map_err(|e| network(STS_OP, e))?;
        let (status, body) = status_and_body(&mut resp, STS_OP)?;
        parse_sts_response(status, &body)
    }
}

/// Turns an AssumeRoleWithWebIdentity answer into credentials or an error.
pub fn parse_sts_response(status: u16, body: &str) -> Result<Credentials, AwsError> {
    if !(200..300).contains(&status) {
        return Err(AwsError::Service {
            op: STS_OP.into(),
            status,
            code: xml_tag(body, "Code").unwrap_or_default(),
            message: xml_tag(body, "Message")
                .map(|m| excerpt(&m, 300))
                .unwrap_or_else(|| excerpt(body, 200)),
        });
    }
    let parse = |detail: String| AwsError::Parse {
        op: STS_OP.into(),
        detail,
    };
    let Some(block) = xml_tag(body, "Credentials") else {
        return Err(parse("no <Credentials> element".into()));
    };
    let field = |tag: &str| xml_tag(&block, tag).ok_or_else(|| parse(format!("no <{tag}>")));
    let expiry = parse_iso8601(&field("Expiration")?).map_err(parse)?;
    Ok(Credentials::new(
        field("AccessKeyId")?,
        field("SecretAccessKey")?,
        Some(field("SessionToken")?),
        Some(expiry),
        "web-identity",
    ))
}

impl CredentialsProvider for WebIdentityProvider {
    fn credentials(&self) -> Result<Credentials, AwsError> {
        self.cache.get("web identity", || self.fetch())
    }
}

/// How the container credentials endpoint authenticates us.
#[derive(Clone, Debug)]
pub enum ContainerAuth {
    None,
    /// A fixed token (AWS_CONTAINER_AUTHORIZATION_TOKEN).
    Token(String),
    /// A file re-read on every refresh (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE).
    TokenFile(PathBuf),
}

/// Credentials from an HTTP endpoint (EKS Pod Identity agent, ECS).
pub struct ContainerProvider {
    agent: ureq::Agent,
    url: String,
    auth: ContainerAuth,
    cache: Cache,
}

const CONTAINER_OP: &str = "container credentials";

/// The link-local address of the ECS credentials endpoint, for
/// AWS_CONTAINER_CREDENTIALS_RELATIVE_URI.
pub const ECS_CREDENTIALS_HOST: &str = "http://169.254.170.2";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

/// Plain-http endpoints are only allowed on hosts that cannot be elsewhere
/// on the network (loopback, the ECS and EKS link-local agents), as the
/// AWS SDKs require; https may point anywhere.
pub fn check_container_url(url: &str) -> Result<(), AwsError> {
    let bad = |m: &str| AwsError::Config(format!("container credentials URL {url:?}: {m}"));
    let e = super::Endpoint::parse(url).map_err(bad)?;
    let host = e.host.as_str();
    match e.scheme.as_str() {
        "https" => Ok(()),
        "http" => {
            let allowed = host == "localhost"
                || host == "169.254.170.2"
                || host == "169.254.170.23"
                || host.eq_ignore_ascii_case("fd00:ec2::23")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if allowed {
                Ok(())
            } else {
                Err(bad(
                    "plain http is only allowed to loopback or the ECS/EKS agent addresses",
                ))
            }
        }
        _ => Err(bad("scheme must be http or https")),
    }
}

impl ContainerProvider {
    pub fn new(agent: ureq::Agent, url: &str, auth: ContainerAuth) -> Result<Self, AwsError> {
        check_container_url(url)?;
        Ok(ContainerProvider {
            agent,
            url: url.to_string(),
            auth,
            cache: Cache::default(),
        })
    }

    fn fetch(&self) -> Result<Credentials, AwsError> {
        let token = match &self.auth {
            ContainerAuth::None => None,
            ContainerAuth::Token(t) => Some(t.trim().to_string()),
            ContainerAuth::TokenFile(path) => {
                Some(read_token_file(path, "container authorization token file")?)
            }
        };
        if token
            .as_deref()
            .is_some_and(|t| t.contains(['\r', '\n']) || t.is_empty())
        {
            return Err(AwsError::Config(
                "container authorization token is empty or spans lines".into(),
            ));
        }
        let mut req = self
            .agent
            .get(&self.url)
            .config()
            .http_status_as_error(false)
            .timeout_global(Some(FETCH_TIMEOUT))
            .build()
            .header("Accept", "application/json");
        if let Some(t) = &token {
            req = req.header("Authorization", t.as_str());
        }
        let mut resp = req.call().map_err(|e| network(CONTAINER_OP, e))?;
        let (status, body) = status_and_body(&mut resp, CONTAINER_OP)?;
        parse_container_response(status, &body, SystemTime::now())
    }
}

/// Turns a container credentials endpoint answer into credentials. Without
/// an Expiration the credentials are refetched after ten minutes.
pub fn parse_container_response(
    status: u16,
    body: &str,
    now: SystemTime,
) -> Result<Credentials, AwsError> {
    if !(200..300).contains(&status) {
        let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let get = |k: &str, k2: &str| {
            v.as_ref()
                .and_then(|v| v.get(k).or_else(|| v.get(k2)))
                .and_then(|s| s.as_str())
                .map(str::to_string)
        };
        return Err(AwsError::Service {
            op: CONTAINER_OP.into(),
            status,
            code: get("Code", "code").unwrap_or_default(),
            message: get("Message", "message")
                .map(|m| excerpt(&m, 300))
                .unwrap_or_else(|| excerpt(body, 200)),
        });
    }
    let parsed: ContainerCredentials = serde_json::from_str(body).map_err(|e| AwsError::Parse {
        op: CONTAINER_OP.into(),
        // serde_json's message names the field, not the value.
        detail: e.to_string(),
    })?;
    let expiry = match parsed.expiration.as_deref() {
        Some(text) => parse_iso8601(text).map_err(|detail| AwsError::Parse {
            op: CONTAINER_OP.into(),
            detail,
        })?,
        None => now + Duration::from_secs(600),
    };
    Ok(Credentials::new(
        parsed.access_key_id,
        parsed.secret_access_key,
        parsed.token.filter(|t| !t.is_empty()),
        Some(expiry),
        "container",
    ))
}

impl CredentialsProvider for ContainerProvider {
    fn credentials(&self) -> Result<Credentials, AwsError> {
        self.cache.get("container", || self.fetch())
    }
}

/// `provider_from_lookup` over the process environment.
pub fn provider_from_env(agent: ureq::Agent) -> Result<Arc<dyn CredentialsProvider>, AwsError> {
    provider_from_lookup(agent, &|name| std::env::var(name).ok())
}

/// Chooses a provider from AWS environment variables read through `lookup`
/// (empty values count as unset), in this order:
/// 1. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
/// 2. AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (+ AWS_ROLE_SESSION_NAME,
///    AWS_STS_ENDPOINT, else STS of AWS_REGION or AWS_SQS_REGION);
/// 3. AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI (+
///    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or _TOKEN).
pub fn provider_from_lookup(
    agent: ureq::Agent,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn CredentialsProvider>, AwsError> {
    let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => {
            let token = var("AWS_SESSION_TOKEN");
            log::info!("aws: using static credentials from AWS_ACCESS_KEY_ID");
            return Ok(Arc::new(StaticProvider::new(
                id.trim(),
                secret.trim(),
                token.as_deref().map(str::trim),
            )));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(AwsError::Config(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".into(),
            ));
        }
        (None, None) => {}
    }

    if let (Some(role), Some(file)) = (var("AWS_ROLE_ARN"), var("AWS_WEB_IDENTITY_TOKEN_FILE")) {
        let endpoint = match var("AWS_STS_ENDPOINT") {
            Some(e) => e,
            None => match var("AWS_REGION").or_else(|| var("AWS_SQS_REGION")) {
                Some(region) => format!("https://sts.{}.amazonaws.com", region.trim()),
                None => "https://sts.amazonaws.com".to_string(),
            },
        };
        log::info!("aws: using web identity credentials for role {role} from {endpoint}");
        return Ok(Arc::new(WebIdentityProvider::new(
            agent,
            &role,
            file,
            var("AWS_ROLE_SESSION_NAME").as_deref(),
            &endpoint,
        )));
    }

    let url = var("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
        var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .map(|rel| format!("{ECS_CREDENTIALS_HOST}{rel}"))
    });
    if let Some(url) = url {
        let auth = match (
            var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(file), _) => ContainerAuth::TokenFile(file.into()),
            (None, Some(token)) => ContainerAuth::Token(token),
            (None, None) => ContainerAuth::None,
        };
        log::info!("aws: using container credentials from {url}");
        return Ok(Arc::new(ContainerProvider::new(agent, &url, auth)?));
    }

    Err(AwsError::Config(
        "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
         AWS_ROLE_ARN/AWS_WEB_IDENTITY_TOKEN_FILE, or AWS_CONTAINER_CREDENTIALS_FULL_URI"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn freshness_table() {
        let now = 1_000_000;
        let cases: &[(Option<u64>, Freshness)] = &[
            (None, Freshness::Fresh),
            (Some(now + 3600), Freshness::Fresh),
            (Some(now + 301), Freshness::Fresh),
            (Some(now + 300), Freshness::Fresh),
            (Some(now + 299), Freshness::RefreshSoon),
            (Some(now + 1), Freshness::RefreshSoon),
            (Some(now), Freshness::Expired),
            (Some(now - 1), Freshness::Expired),
        ];
        for (expiry, want) in cases {
            assert_eq!(freshness(t(now), expiry.map(t)), *want, "expiry {expiry:?}");
        }
    }

    fn creds(expiry: Option<SystemTime>, id: &str) -> Credentials {
        Credentials::new(id, "secret", None, expiry, "test")
    }

    fn err() -> AwsError {
        AwsError::Config("boom".into())
    }

    #[test]
    fn cache_fetches_once_while_fresh() {
        let cache = Cache::default();
        let calls = Cell::new(0);
        let far = SystemTime::now() + Duration::from_secs(3600);
        for _ in 0..3 {
            let c = cache
                .get("test", || {
                    calls.set(calls.get() + 1);
                    Ok(creds(Some(far), "A"))
                })
                .expect("creds");
            assert_eq!(c.access_key_id(), "A");
        }
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn cache_refresh_failure_serves_valid_old_creds_only() {
        let cache = Cache::default();
        let soon = SystemTime::now() + Duration::from_secs(60);
        cache
            .get("test", || Ok(creds(Some(soon), "OLD")))
            .expect("first");
        // Inside the refresh window: a failed refresh falls back to OLD.
        let c = cache.get("test", || Err(err())).expect("fallback");
        assert_eq!(c.access_key_id(), "OLD");
        // A successful refresh replaces them.
        let c = cache
            .get("test", || {
                Ok(creds(Some(soon + Duration::from_secs(3600)), "NEW"))
            })
            .expect("refresh");
        assert_eq!(c.access_key_id(), "NEW");

        // Expired credentials are never served.
        let cache = Cache::default();
        let past = SystemTime::now() - Duration::from_secs(1);
        cache
            .get("test", || Ok(creds(Some(past), "GONE")))
            .expect("stored");
        assert!(cache.get("test", || Err(err())).is_err());
    }

    const STS_OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>FQoG&amp;token</SessionToken>
      <SecretAccessKey>wJalr/secret</SecretAccessKey>
      <Expiration>2026-11-24T10:00:00Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn parses_sts_success() {
        let c = parse_sts_response(200, STS_OK).expect("creds");
        assert_eq!(c.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key(), "wJalr/secret");
        assert_eq!(c.session_token(), Some("FQoG&token"));
        assert_eq!(c.expiry(), Some(t(1_795_514_400)));
    }

    #[test]
    fn parses_sts_error_into_a_sentence() {
        let body = r#"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>
<Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>"#;
        let e = parse_sts_response(403, body).expect_err("error");
        assert_eq!(
            e.to_string(),
            "aws: sts AssumeRoleWithWebIdentity: 403 AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity"
        );
        assert!(matches!(
            parse_sts_response(200, "<x/>"),
            Err(AwsError::Parse { .. })
        ));
    }

    #[test]
    fn parses_container_responses() {
        let now = t(1000);
        let ok = r#"{"AccessKeyId":"AKID","SecretAccessKey":"S","Token":"T","Expiration":"2026-11-24T10:00:00.000Z","AccountId":"1"}"#;
        let c = parse_container_response(200, ok, now).expect("creds");
        assert_eq!(c.session_token(), Some("T"));
        assert_eq!(c.expiry(), Some(t(1_795_514_400)));
        let c = parse_container_response(200, r#"{"AccessKeyId":"A","SecretAccessKey":"S"}"#, now)
            .expect("creds");
        assert_eq!(c.expiry(), Some(t(1600)));
        let e = parse_container_response(401, r#"{"code":"InvalidToken","message":"nope"}"#, now)
            .expect_err("401");
        assert_eq!(
            e.to_string(),
            "aws: container credentials: 401 InvalidToken: nope"
        );
        assert!(parse_container_response(200, "{}", now).is_err());
    }

    #[test]
    fn container_url_rules() {
        for ok in [
            "http://127.0.0.1:8080/creds",
            "http://localhost/x",
            "http://169.254.170.2/v2/credentials/abc",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "http://[::1]:9/",
            "https://creds.example.com/x",
        ] {
            assert!(check_container_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/creds",
            "ftp://127.0.0.1/",
            "/relative",
            "http:///x",
        ] {
            assert!(check_container_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn xml_tag_extraction() {
        assert_eq!(
            xml_tag("<a><b> x &lt;y&gt; </b></a>", "b").as_deref(),
            Some("x <y>")
        );
        assert_eq!(xml_tag("<a></a>", "b"), None);
        assert_eq!(xml_tag("<b>unterminated", "b"), None);
    }

    fn choose(vars: &[(&str, &str)]) -> Result<Arc<dyn CredentialsProvider>, AwsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        provider_from_lookup(ureq::Agent::new_with_defaults(), &|k| map.get(k).cloned())
    }

    #[test]
    fn env_selection_order() {
        let p = choose(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "S"),
            ("AWS_SESSION_TOKEN", "T"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent"),
        ])
        .expect("static");
        let c = p.credentials().expect("static creds");
        assert_eq!((c.access_key_id(), c.session_token()), ("AKID", Some("T")));

        // Web identity is chosen over container credentials; its token file
        // is read lazily, so a missing file shows at the first fetch.
        let p = choose(&[
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token"),
            ("AWS_STS_ENDPOINT", "http://127.0.0.1:9"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/"),
        ])
        .expect("web identity");
        let e = p.credentials().expect_err("no token file");
        assert!(e.to_string().contains("web identity token file"), "{e}");

        assert!(choose(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds")]).is_ok());
        assert!(choose(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.1.1.1/")]).is_err());
        assert!(choose(&[("AWS_ACCESS_KEY_ID", "AKID")]).is_err());
        assert!(choose(&[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")]).is_err());
        let e = choose(&[]).err().expect("nothing set");
        assert!(
            e.to_string()
                .starts_with("aws: configuration: no AWS credentials")
        );
    }
}
