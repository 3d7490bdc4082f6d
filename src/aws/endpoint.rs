//! The one parser of AWS endpoint URLs (SQS queue URLs, STS and container
//! credential endpoints, the region in an SQS host name): an absolute http(s)
//! URL split into scheme, authority, host and path. Pure.

/// An absolute http(s) URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`, lower case.
    pub scheme: String,
    /// `host[:port]` as written, without userinfo.
    pub authority: String,
    /// The host, without brackets for IPv6 and without the port.
    pub host: String,
    /// Whatever follows the authority (path, query, fragment).
    pub path: String,
    /// The URL carried a `user@` part (dropped from `authority`).
    pub userinfo: bool,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, &'static str> {
        let (scheme, rest) = url.split_once("://").ok_or("not absolute")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err("scheme must be http or https");
        }
        let raw = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let path = rest[raw.len()..].to_string();
        let (userinfo, authority) = match raw.rsplit_once('@') {
            Some((_, a)) => (true, a),
            None => (false, raw),
        };
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or_default()
        } else {
            authority.split(':').next().unwrap_or_default()
        };
        if host.is_empty() {
            return Err("no host");
        }
        Ok(Endpoint {
            scheme,
            host: host.to_string(),
            authority: authority.to_string(),
            path,
            userinfo,
        })
    }

    /// `scheme://authority`.
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// `eu-west-1` of `sqs.eu-west-1.amazonaws.com`.
    pub fn sqs_region(&self) -> Option<String> {
        let mut parts = self.host.split('.');
        (parts.next()? == "sqs")
            .then(|| parts.next().map(str::to_string))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let e = Endpoint::parse("HTTPS://u@sqs.eu-west-1.amazonaws.com:443/1/q?x").ok();
        assert_eq!(
            e,
            Some(Endpoint {
                scheme: "https".into(),
                authority: "sqs.eu-west-1.amazonaws.com:443".into(),
                host: "sqs.eu-west-1.amazonaws.com".into(),
                path: "/1/q?x".into(),
                userinfo: true,
            })
        );
        assert_eq!(e.and_then(|e| e.sqs_region()).as_deref(), Some("eu-west-1"));
        let v6 = Endpoint::parse("http://[fd00:ec2::23]/v1").ok();
        assert_eq!(v6.map(|e| e.host).as_deref(), Some("fd00:ec2::23"));
        for bad in ["/relative", "ftp://h/", "http:///x", "http://:80/"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
