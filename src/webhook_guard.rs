//! SSRF guard for webhook URLs taken from untrusted messages: which hosts and
//! addresses the worker may POST callbacks to. `check` is static (no I/O) and
//! lets intake refuse a message up front; `resolve` resolves the host and
//! checks every address the connection could use. `PinnedResolver` is that
//! resolution as ureq's resolver: the callback agent connects only to the
//! addresses the guard just checked, from the same lookup, so a DNS answer that
//! changes between check and connect (rebinding) cannot slip through.
//!
//! | Variable | Default | Meaning |
//! |---|---|---|
//! | `WEBHOOK_ALLOWED_HOSTS` | empty = any host | comma list of exact hosts (`hooks.example.com`, `10.0.0.5`, `[::1]`) or `*.example.com` (any subdomain, not `example.com` itself) |
//! | `WEBHOOK_DENY_PRIVATE` | `false` | also refuse loopback and private addresses: 127/8, 10/8, 172.16/12, 192.168/16, 100.64/10, ::1, fc00::/7 |
//!
//! Always refused, whatever the configuration: link-local addresses
//! (169.254.0.0/16 — including the cloud metadata endpoints 169.254.169.254 and
//! 169.254.170.2 — and fe80::/10), unspecified (0.0.0.0/8, ::), multicast
//! (224/4, ff00::/8), reserved and broadcast (240/4, 255.255.255.255), the
//! metadata endpoints fd00:ec2::254 and 100.100.100.200, IPv6 forms that embed
//! any of these (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`), and the Kubernetes API server's own
//! address (from KUBE_API_URL and KUBERNETES_SERVICE_HOST, when an IP literal;
//! an API server on loopback, e.g. `kubectl proxy`, is refused on its port
//! only, so local webhooks keep working).
//!
//! Loopback and private ranges are allowed by default (in-cluster receivers
//! and the tests use them); set WEBHOOK_DENY_PRIVATE=true to refuse them.
//!
//! `WebhookUrl` is the only parser of webhook URLs: message validation builds
//! one, and intake and the callback thread pass it on, so every part of the
//! worker reads a URL the same way. URLs are parsed strictly: `http`/`https` only, no userinfo (`user@`), no
//! percent-encoding or backslashes in the authority, hosts are compared
//! lower-case without a trailing dot, and numeric hosts are read the way
//! resolvers read them (`2852039166`, `0xa9.0xfe.0xa9.0xfe`, `169.254.43518`
//! are all 169.254.169.254).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};

use crate::env::Reader;

/// Where callbacks may go. `Default` allows any host and refuses only the
/// always-refused addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookGuard {
    /// WEBHOOK_ALLOWED_HOSTS: exact hosts or `*.suffix`; empty = any.
    pub allowed_hosts: Vec<String>,
    /// Addresses refused on every port (the API server's own address).
    pub deny_ips: Vec<IpAddr>,
    /// Address and port pairs refused (an API server listening on loopback).
    pub deny_sockets: Vec<SocketAddr>,
    /// WEBHOOK_DENY_PRIVATE.
    pub deny_private: bool,
}

/// The host of a parsed URL.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    /// Lower-case, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

/// Scheme, host and port of a webhook URL.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    https: bool,
    host: Host,
    port: u16,
}

/// A webhook URL that the strict parser accepted (http or https, a valid
/// host, no userinfo, no percent-encoded or backslashed authority). Whether
/// the worker may call it is the guard's decision (`WebhookGuard::check`).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(
    // Shared: a pointer in messages, Jobs and callbacks, and a clone (one per
    // callback) copies nothing.
    std::sync::Arc<Parsed>,
);

#[derive(PartialEq, Eq)]
struct Parsed {
    text: Box<str>,
    target: Target,
}

impl WebhookUrl {
    /// Parses `text`; `Err` says what is wrong, without repeating the URL.
    pub fn parse(text: &str) -> Result<WebhookUrl, String> {
        Ok(WebhookUrl(std::sync::Arc::new(Parsed {
            target: parse_url(text)?,
            text: text.into(),
        })))
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// `scheme://host:port` in lower case (the unit the callback workers are
    /// sharded by), and the host as written there.
    pub fn destination(&self) -> (String, String) {
        let scheme = if self.0.target.https { "https" } else { "http" };
        let host = match &self.0.target.host {
            Host::Name(n) => n.clone(),
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            Host::Ip(ip) => ip.to_string(),
        };
        (format!("{scheme}://{host}:{}", self.0.target.port), host)
    }
}

impl std::ops::Deref for WebhookUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0.text
    }
}

/// Shows the scheme and host only: the path and query may carry a credential.
impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookUrl({}/…)", self.destination().0)
    }
}

impl serde::Serialize for WebhookUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.text)
    }
}

/// Why the guard will not call a webhook URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The URL or an address it resolves to is not allowed: final.
    Refused(String),
    /// The host does not resolve (now): it may later.
    Unresolved(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Refused(why) | Refusal::Unresolved(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Refusal {}

/// Resolves a host name and port to socket addresses.
pub type Lookup = dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync;

/// The system resolver (getaddrinfo).
pub fn system_lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// ureq's resolver for webhook connections: one lookup, every address checked
/// by the guard, and only those addresses handed to the connector. A refusal
/// comes back as `ureq::Error::Io` carrying the `Refusal` (see `refusal_of`).
pub struct PinnedResolver {
    guard: Arc<WebhookGuard>,
    lookup: Arc<Lookup>,
}

impl PinnedResolver {
    /// Resolves through the system resolver.
    pub fn new(guard: Arc<WebhookGuard>) -> PinnedResolver {
        PinnedResolver::with_lookup(guard, Arc::new(system_lookup))
    }

    /// Resolves through `lookup` (tests: a name whose answer changes).
    pub fn with_lookup(guard: Arc<WebhookGuard>, lookup: Arc<Lookup>) -> PinnedResolver {
        PinnedResolver { guard, lookup }
    }
}

impl std::fmt::Debug for PinnedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedResolver").finish_non_exhaustive()
    }
}

impl Resolver for PinnedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let refused = |r: Refusal| {
            let kind = match r {
                Refusal::Refused(_) => std::io::ErrorKind::PermissionDenied,
                Refusal::Unresolved(_) => std::io::ErrorKind::NotFound,
            };
            ureq::Error::Io(std::io::Error::new(kind, r))
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(refused(Refusal::Refused(
                "the webhook URL has no scheme or host".into(),
            )));
        };
        let url = WebhookUrl::parse(&format!("{scheme}://{}/", authority.as_str()))
            .map_err(|why| refused(Refusal::Refused(why)))?;
        let addrs = self
            .guard
            .resolve_with(&url, &*self.lookup)
            .map_err(refused)?;
        let mut out = self.empty();
        for a in addrs {
            // ureq keeps at most 16 addresses; the rest were checked too.
            if out.try_push(a).is_err() {
                break;
            }
        }
        Ok(out)
    }
}

/// The guard's refusal inside an error from a `PinnedResolver` agent.
pub fn refusal_of(e: &ureq::Error) -> Option<&Refusal> {
    match e {
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<Refusal>()),
        _ => None,
    }
}

impl WebhookGuard {
    /// Reads WEBHOOK_ALLOWED_HOSTS and WEBHOOK_DENY_PRIVATE through `get`, and
    /// denies the API server at `api_url` (and KUBERNETES_SERVICE_HOST/PORT).
    pub fn from_env(
        get: &dyn Fn(&str) -> Option<String>,
        api_url: &str,
    ) -> Result<WebhookGuard, Vec<String>> {
        let mut r = Reader::new(get);
        let guard = WebhookGuard::read(&mut r, api_url);
        r.finish(guard)
    }

    /// `from_env` through `r`, which collects the problems.
    pub(crate) fn read(r: &mut Reader, api_url: &str) -> WebhookGuard {
        let mut guard = WebhookGuard::default();
        // Not `r.list`: a lone `-` is an entry here (one that matches no host).
        let hosts = r.str("WEBHOOK_ALLOWED_HOSTS").unwrap_or_default();
        for entry in crate::env::split_list(&hosts) {
            match normalize_allowed(&entry) {
                Ok(e) => guard.allowed_hosts.push(e),
                Err(e) => r.error(format!("WEBHOOK_ALLOWED_HOSTS entry {entry:?} {e}")),
            }
        }
        guard.deny_private = r.bool("WEBHOOK_DENY_PRIVATE", false);
        if let Ok(Target {
            host: Host::Ip(ip),
            port,
            ..
        }) = parse_url(api_url)
        {
            guard.deny_api_server(ip, port);
        }
        if let Some(h) = r.str("KUBERNETES_SERVICE_HOST")
            && let Ok(ip) = h.trim_matches(['[', ']']).parse::<IpAddr>()
        {
            let port = r
                .str("KUBERNETES_SERVICE_PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(443);
            guard.deny_api_server(ip, port);
        }
        guard
    }

    /// Refuses the API server's address: the whole IP, or only its port when
    /// it is loopback (`kubectl proxy`).
    pub fn deny_api_server(&mut self, ip: IpAddr, port: u16) {
        let ip = unmap(ip);
        if ip.is_loopback() {
            let s = SocketAddr::new(ip, port);
            if !self.deny_sockets.contains(&s) {
                self.deny_sockets.push(s);
            }
        } else if !self.deny_ips.contains(&ip) {
            self.deny_ips.push(ip);
        }
    }

    /// Static checks, no I/O: the host is allowed by WEBHOOK_ALLOWED_HOSTS,
    /// and a literal IP is not refused.
    pub fn check(&self, url: &WebhookUrl) -> Result<(), Refusal> {
        let t = &url.0.target;
        if !self.host_allowed(&t.host) {
            return Err(Refusal::Refused(format!(
                "WEBHOOK_ALLOWED_HOSTS: webhook host {} is not one of {}",
                show_host(&t.host),
                self.allowed_hosts.join(",")
            )));
        }
        if let Host::Ip(ip) = t.host
            && let Some(why) = self.refused(ip, t.port)
        {
            return Err(Refusal::Refused(format!("webhook host {ip} is {why}")));
        }
        Ok(())
    }

    /// `check`, then resolves the host and refuses the URL if ANY address
    /// is refused. Returns the addresses to connect to.
    pub fn resolve(&self, url: &WebhookUrl) -> Result<Vec<SocketAddr>, Refusal> {
        self.resolve_with(url, &system_lookup)
    }

    /// `resolve` through `lookup` instead of the system resolver.
    pub fn resolve_with(
        &self,
        url: &WebhookUrl,
        lookup: &Lookup,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        self.check(url)?;
        let t = &url.0.target;
        let addrs: Vec<SocketAddr> = match &t.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, t.port)],
            Host::Name(name) => lookup(name.as_str(), t.port).map_err(|e| {
                Refusal::Unresolved(format!("webhook host {name:?} does not resolve: {e}"))
            })?,
        };
        if addrs.is_empty() {
            return Err(Refusal::Unresolved(format!(
                "webhook host {:?} has no address",
                t.host
            )));
        }
        for a in &addrs {
            if let Some(why) = self.refused(a.ip(), a.port()) {
                return Err(Refusal::Refused(format!(
                    "webhook host {} resolves to {} which is {why}",
                    show_host(&t.host),
                    a.ip()
                )));
            }
        }
        Ok(addrs)
    }

    /// `WebhookUrl::parse` and `check` of a URL still in text (tests, fuzzing).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        self.check(&parse_text(url)?).map_err(|r| r.to_string())
    }

    /// `WebhookUrl::parse` and `resolve` of a URL still in text (tests).
    pub fn check_resolved(&self, url: &str) -> Result<Vec<SocketAddr>, String> {
        self.resolve(&parse_text(url)?).map_err(|r| r.to_string())
    }

    fn host_allowed(&self, host: &Host) -> bool {
        if self.allowed_hosts.is_empty() {
            return true;
        }
        self.allowed_hosts.iter().any(|entry| {
            let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
            match host {
                Host::Name(h) => match e.strip_prefix('*') {
                    Some(suffix) => {
                        suffix.starts_with('.')
                            && suffix.len() > 1
                            && h.len() > suffix.len()
                            && h.ends_with(suffix)
                    }
                    None => *h == e,
                },
                Host::Ip(ip) => e
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|allowed| unmap(allowed) == unmap(*ip)),
            }
        })
    }

    /// Why an address is refused, or `None`.
    fn refused(&self, ip: IpAddr, port: u16) -> Option<String> {
        let plain = unmap(ip);
        let embedded = embedded_v4(ip);
        let candidates: Vec<IpAddr> = [Some(plain), embedded.map(IpAddr::V4)]
            .into_iter()
            .flatten()
            .collect();
        for c in &candidates {
            if self.deny_ips.contains(c) {
                return Some("the Kubernetes API server's address (refused)".into());
            }
            if self.deny_sockets.contains(&SocketAddr::new(*c, port)) {
                return Some(format!(
                    "the Kubernetes API server's address and port {port} (refused)"
                ));
            }
            if let Some(why) = always_refused(*c) {
                return Some(format!("{why} (always refused)"));
            }
            if self.deny_private && is_private(*c) {
                return Some("a loopback or private address (WEBHOOK_DENY_PRIVATE)".into());
            }
        }
        None
    }
}

fn show_host(h: &Host) -> String {
    match h {
        Host::Name(n) => n.clone(),
        Host::Ip(ip) => ip.to_string(),
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The IPv4 address an IPv6 address stands for: IPv4-compatible `::a.b.c.d`
/// (not `::` or `::1`), NAT64 `64:ff9b::/96`, 6to4 `2002:aabb:ccdd::/48`.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let low = Ipv4Addr::new(
        (s[6] >> 8) as u8,
        (s[6] & 0xff) as u8,
        (s[7] >> 8) as u8,
        (s[7] & 0xff) as u8,
    );
    if s[..6] == [0, 0, 0, 0, 0, 0] && (s[6] != 0 || s[7] > 1) {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            (s[1] & 0xff) as u8,
            (s[2] >> 8) as u8,
            (s[2] & 0xff) as u8,
        ));
    }
    None
}

const AWS_IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);

fn always_refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if o[0] == 0 {
                Some("unspecified (0.0.0.0/8)")
            } else if v4.is_link_local() {
                Some("link-local (169.254.0.0/16, cloud metadata)")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if o[0] >= 240 {
                Some("reserved or broadcast (240.0.0.0/4)")
            } else if v4 == ALIBABA_METADATA {
                Some("a cloud metadata endpoint")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s0 = v6.segments()[0];
            if v6.is_unspecified() {
                Some("unspecified (::)")
            } else if s0 & 0xffc0 == 0xfe80 {
                Some("link-local (fe80::/10)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6 == AWS_IMDS_V6 {
                Some("a cloud metadata endpoint")
            } else {
                None
            }
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback() || v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// Checks and normalizes a WEBHOOK_ALLOWED_HOSTS entry.
fn normalize_allowed(entry: &str) -> Result<String, String> {
    let e = entry.trim_end_matches('.').to_ascii_lowercase();
    if let Some(inner) = e.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| "is not an IPv6 address".into());
    }
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let name = e.strip_prefix("*.").unwrap_or(&e);
    if name.is_empty()
        || !name.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        })
    {
        return Err("must be a host name, an IP address or *.domain".into());
    }
    Ok(e)
}

fn parse_text(url: &str) -> Result<WebhookUrl, String> {
    WebhookUrl::parse(url).map_err(|e| format!("webhook URL {url:?}: {e}"))
}

/// Parses the parts of a webhook URL that decide where it connects.
fn parse_url(url: &str) -> Result<Target, String> {
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err("must not contain whitespace, control characters or backslashes".into());
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("must be an http:// or https:// URL")?;
    let (https, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (false, 80),
        "https" => (true, 443),
        _ => return Err(format!("scheme {scheme:?} is not http or https")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not contain userinfo (user@host)".into());
    }
    if authority.contains('%') {
        return Err("must not percent-encode the host".into());
    }
    let (host_text, port_text) = if let Some(after) = authority.strip_prefix('[') {
        let (inside, tail) = after.split_once(']').ok_or("unclosed '[' in the host")?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("{inside:?} is not an IPv6 address"))?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or("unexpected text after ']'")?),
        };
        (Err(ip), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (Ok(h), Some(p)),
            None => (Ok(authority), None),
        }
    };
    let port = match port_text {
        None | Some("") => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("port {p:?} is not a number from 1 to 65535")),
        },
    };
    let host = match host_text {
        Err(v6) => Host::Ip(IpAddr::V6(v6)),
        Ok(h) => {
            let h = h.to_ascii_lowercase();
            let h = h.strip_suffix('.').unwrap_or(&h);
            if h.is_empty() {
                return Err("has no host".into());
            }
            if !h.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            }) {
                return Err(format!("host {h:?} is not a valid host name"));
            }
            if ends_in_number(h) {
                Host::Ip(IpAddr::V4(parse_ipv4_loose(h).ok_or_else(|| {
                    format!("host {h:?} is not a valid IPv4 address")
                })?))
            } else {
                Host::Name(h.to_string())
            }
        }
    };
    Ok(Target { https, host, port })
}

/// WHATWG "ends in a number": the last label is decimal digits or `0x` hex.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or("");
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        || last
            .strip_prefix("0x")
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// IPv4 as `inet_aton` and the WHATWG URL parser read it: 1 to 4 parts, each
/// decimal, octal (leading 0) or hex (0x); the last part fills the rest.
fn parse_ipv4_loose(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x") {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        let n = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        nums.push(n);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let width = 8 * (4 - init.len() as u32);
    if *last >= 1u64 << width {
        return None;
    }
    let mut v: u64 = 0;
    for (i, n) in init.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    v |= last;
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn guard(pairs: &[(&str, &str)], api_url: &str) -> WebhookGuard {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WebhookGuard::from_env(&move |k| m.get(k).cloned(), api_url).expect("valid guard")
    }

    /// (url, Ok or a fragment of the Err text)
    fn table(g: &WebhookGuard, cases: &[(&str, Option<&str>)], resolve: bool) {
        for (url, want) in cases {
            let got = if resolve {
                g.check_resolved(url).map(|_| ())
            } else {
                g.check_url(url)
            };
            match (want, &got) {
                (None, Ok(())) => {}
                (Some(frag), Err(e)) if e.contains(frag) => {}
                _ => panic!("{url}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn syntax() {
        let g = WebhookGuard::default();
        table(
            &g,
            &[
                ("http://hooks.example.com/cb", None),
                ("HTTPS://Hooks.Example.COM./cb?x=1#f", None),
                ("http://10.0.0.5:8080/", None),
                ("http://127.0.0.1:9/x", None),
                ("http://[::1]:9/x", None),
                ("ftp://example.com/", Some("is not http or https")),
                ("file:///etc/passwd", Some("is not http or https")),
                ("example.com/cb", Some("http:// or https://")),
                ("http:///cb", Some("has no host")),
                ("http://:80/cb", Some("has no host")),
                ("http://allowed.com@169.254.169.254/", Some("userinfo")),
                ("http://user:pw@example.com/", Some("userinfo")),
                ("http://example.com\\@169.254.169.254/", Some("backslashes")),
                ("http://exa mple.com/", Some("whitespace")),
                ("http://%31%36%39.254.169.254/", Some("percent-encode")),
                ("http://example.com:0/", Some("port")),
                ("http://example.com:99999/", Some("port")),
                ("http://example.com:+80/", Some("port")),
                ("http://a:1:2/", Some("port")),
                ("http://[::1/", Some("unclosed")),
                ("http://[::1]x/", Some("after ']'")),
                ("http://[fe80::1%25eth0]/", Some("percent-encode")),
                ("http://exa..mple.com/", Some("not a valid host name")),
                ("http://ex\u{e4}mple.com/", Some("not a valid host name")),
                ("http://1.2.3.4.5/", Some("not a valid IPv4")),
                ("http://256.1.1.1/", Some("not a valid IPv4")),
                ("http://0x1g/", None), // a name: "0x1g" is not a number
            ],
            false,
        );
    }

    #[test]
    fn metadata_and_link_local_always_refused() {
        let g = WebhookGuard::default();
        let link = Some("link-local");
        table(
            &g,
            &[
                ("http://169.254.169.254/latest/meta-data", link),
                ("http://169.254.170.2/v2/credentials", link),
                ("http://[::ffff:169.254.169.254]/", link),
                ("http://[::FFFF:a9fe:a9fe]/", link),
                ("http://[::169.254.169.254]/", link),
                ("http://[64:ff9b::a9fe:a9fe]/", link),
                ("http://[2002:a9fe:a9fe::1]/", link),
                ("http://[fe80::1]/", Some("link-local (fe80::/10)")),
                ("http://[febf::1]/", Some("link-local")),
                ("http://[fd00:ec2::254]/", Some("metadata")),
                ("http://100.100.100.200/", Some("metadata")),
                // Numeric host forms resolvers accept.
                ("http://2852039166/", link),
                ("http://0xa9fea9fe/", link),
                ("http://0xA9.0xFE.0xA9.0xFE/", link),
                ("http://0251.0376.0251.0376/", link),
                ("http://169.254.43518/", link),
                ("http://169.254.169.254./", link),
                ("http://0.0.0.0:8080/", Some("unspecified")),
                ("http://0/", Some("unspecified")),
                ("http://[::]/", Some("unspecified")),
                ("http://[::ffff:0.0.0.0]/", Some("unspecified")),
                ("http://224.0.0.1/", Some("multicast")),
                ("http://[ff02::1]/", Some("multicast")),
                ("http://255.255.255.255/", Some("broadcast")),
                ("http://[::ffff:255.255.255.255]/", Some("broadcast")),
            ],
            false,
        );
        // The same through check_resolved (no DNS needed for literals).
        table(
            &g,
            &[
                ("http://169.254.169.254/latest/meta-data", link),
                ("http://[::ffff:169.254.169.254]/", link),
                ("http://127.0.0.1:1/", None),
            ],
            true,
        );
    }

    #[test]
    fn private_ranges_only_with_deny_private() {
        let open = WebhookGuard::default();
        let strict = guard(&[("WEBHOOK_DENY_PRIVATE", "true")], "");
        let urls = [
            "http://127.0.0.1:8080/",
            "http://127.1/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[fd12::1]/",
            "http://[fc00::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[::ffff:127.0.0.1]/",
        ];
        for u in urls {
            table(&open, &[(u, None)], false);
            table(&strict, &[(u, Some("WEBHOOK_DENY_PRIVATE"))], false);
        }
        for u in [
            "http://172.32.0.1/",
            "http://8.8.8.8/",
            "http://[2001:db8::1]/",
        ] {
            table(&strict, &[(u, None)], false);
        }
    }

    #[test]
    fn allowed_hosts() {
        let g = guard(
            &[(
                "WEBHOOK_ALLOWED_HOSTS",
                "*.example.com, Hooks.Partner.IO., 10.0.0.5, [::1]",
            )],
            "",
        );
        let no = Some("WEBHOOK_ALLOWED_HOSTS");
        table(
            &g,
            &[
                ("https://a.example.com/cb", None),
                ("https://A.B.EXAMPLE.COM./cb", None),
                ("https://example.com/cb", no),
                ("https://badexample.com/cb", no),
                ("https://a.example.com.evil.io/cb", no),
                ("https://hooks.partner.io/", None),
                ("https://HOOKS.PARTNER.IO./", None),
                ("https://x.hooks.partner.io/", no),
                ("http://10.0.0.5:9000/", None),
                ("http://012.0.0.5/", None), // octal 012 = 10
                ("http://10.0.0.6/", no),
                ("http://[::1]:8080/", None),
                ("http://[0:0:0:0:0:0:0:1]/", None),
                (
                    "http://allowed.example.com@169.254.169.254/",
                    Some("userinfo"),
                ),
                ("http://169.254.169.254/", no),
            ],
            false,
        );
        // Bad entries are reported.
        let m: HashMap<&str, &str> = [
            ("WEBHOOK_ALLOWED_HOSTS", "ok.com,a/b,*.,[zz],*"),
            ("WEBHOOK_DENY_PRIVATE", "maybe"),
        ]
        .into_iter()
        .collect();
        let errors = WebhookGuard::from_env(&|k| m.get(k).map(|v| v.to_string()), "").unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
    }

    #[test]
    fn api_server_is_refused() {
        // In cluster: the service IP is refused on every port.
        let g = guard(
            &[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443"),
            ],
            "https://10.96.0.1:443",
        );
        assert_eq!(g.deny_ips, vec!["10.96.0.1".parse::<IpAddr>().expect("ip")]);
        table(
            &g,
            &[
                ("https://10.96.0.1/api", Some("API server")),
                ("http://10.96.0.1:8080/", Some("API server")),
                ("http://[::ffff:10.96.0.1]/", Some("API server")),
                ("http://10.96.0.2/", None),
            ],
            false,
        );
        // IPv6 API server from KUBE_API_URL.
        let g = guard(&[], "https://[fd00::1]:6443");
        table(&g, &[("http://[fd00::1]/", Some("API server"))], false);
        // kubectl proxy on loopback: only its port.
        let g = guard(&[], "http://127.0.0.1:8001");
        assert!(g.deny_ips.is_empty());
        table(
            &g,
            &[
                ("http://127.0.0.1:8001/api/v1", Some("port 8001")),
                ("http://localhost.:8001/", Some("port 8001")),
                ("http://127.0.0.1:8002/hook", None),
            ],
            true,
        );
        // A host name API server adds nothing.
        assert_eq!(
            guard(&[], "https://kubernetes.default.svc"),
            WebhookGuard::default()
        );
    }

    #[test]
    fn resolution_checks_every_address() {
        let g = WebhookGuard::default();
        let addrs = g
            .check_resolved("http://localhost:4000/x")
            .expect("localhost");
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == 4000 && a.ip().is_loopback())
        );
        let strict = WebhookGuard {
            deny_private: true,
            ..WebhookGuard::default()
        };
        let e = strict
            .check_resolved("http://localhost:4000/x")
            .expect_err("loopback refused");
        assert!(e.contains("resolves to"), "{e}");
        let e = g
            .check_resolved("http://does-not-exist.invalid/")
            .expect_err("no such host");
        assert!(e.contains("does not resolve"), "{e}");
    }

    #[test]
    fn loose_ipv4() {
        for (text, want) in [
            ("1.2.3.4", Some([1, 2, 3, 4])),
            ("1.2.3", Some([1, 2, 0, 3])),
            ("1.65535", Some([1, 0, 255, 255])),
            ("4294967295", Some([255, 255, 255, 255])),
            ("4294967296", None),
            ("0x", Some([0, 0, 0, 0])),
            ("09", None),
            ("1.2.3.256", None),
            ("99999999999999999999999999", None),
        ] {
            assert_eq!(parse_ipv4_loose(text), want.map(Ipv4Addr::from), "{text}");
        }
    }
}
