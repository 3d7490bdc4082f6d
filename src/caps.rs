//! Per-service caps (SERVICE_MAX_CONCURRENT) as pure data (core, no I/O): the table parse,
//! each service's cap, the bounded metric label of an untrusted service name,
//! and the deferral schedule of a message whose service is at its cap. No I/O;
//! the counting lives in `tracker::LiveJobs`, the deferral in `queue`.

use std::time::Duration;

/// SERVICE_MAX_CONCURRENT, e.g. `ocr=10,render=2,*=50`: live (unfinished)
/// Jobs per message `service`. `*` is the cap of each service not named; with
/// no `*`, services not named have no cap of their own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceCaps {
    named: Vec<(String, usize)>,
    default: Option<usize>,
}

/// The metric label of every service not named in SERVICE_MAX_CONCURRENT.
pub const OTHER: &str = "other";

/// The longest deferral of one message (seconds).
pub const MAX_DEFER_SECS: u64 = 60;

impl ServiceCaps {
    /// Parses `name=N,...` (`*` for the others). Errors name the variable and
    /// the entry; an empty value is no caps at all.
    pub fn parse(name: &str, v: &str) -> Result<ServiceCaps, String> {
        let mut caps = ServiceCaps::default();
        for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |why: &str| format!("{name}: entry {entry:?} {why}");
            let Some((service, n)) = entry.split_once('=') else {
                return Err(bad("must be service=N"));
            };
            let (service, n) = (service.trim(), n.trim());
            let n: usize = match n.parse() {
                Ok(n) if n >= 1 => n,
                _ => return Err(bad("needs a whole number of Jobs of at least 1")),
            };
            if service == "*" {
                if caps.default.replace(n).is_some() {
                    return Err(bad("repeats *"));
                }
                continue;
            }
            if !is_service(service) {
                return Err(bad(
                    "names no valid service (a label value: 1-63 of [A-Za-z0-9-_.], alphanumeric at both ends)",
                ));
            }
            if caps.named.iter().any(|(s, _)| s == service) {
                return Err(bad("repeats a service"));
            }
            caps.named.push((service.to_string(), n));
        }
        Ok(caps)
    }

    /// No cap at all (SERVICE_MAX_CONCURRENT unset).
    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && self.default.is_none()
    }

    /// The cap of `service`: its own entry, else `*`, else none.
    pub fn cap(&self, service: &str) -> Option<usize> {
        self.named
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, n)| *n)
            .or(self.default)
    }

    /// The services named (each gets its own metric label value).
    pub fn named(&self) -> Vec<String> {
        self.named.iter().map(|(s, _)| s.clone()).collect()
    }
}

/// The metric label of `service` (untrusted): itself when the operator named
/// it in `named`, else `other` (bounded cardinality).
pub fn label<'a>(named: &[String], service: &'a str) -> &'a str {
    if named.iter().any(|s| s == service) {
        service
    } else {
        OTHER
    }
}

/// How long a message whose service is at its cap waits before it is received
/// again: 1, 2, 4 … seconds by attempt (1 = first deferral), at most
/// `MAX_DEFER_SECS`.
pub fn defer_delay(attempt: u32) -> Duration {
    let n = attempt.clamp(1, 32) - 1;
    Duration::from_secs(1u64.checked_shl(n).unwrap_or(u64::MAX).min(MAX_DEFER_SECS))
}

/// A label value as Kubernetes accepts it (what `message` checks `service` against).
fn is_service(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_table_parses_and_each_service_gets_its_cap() {
        let c = ServiceCaps::parse("S", "ocr=10, render=2,*=50").unwrap();
        assert_eq!(c.cap("ocr"), Some(10));
        assert_eq!(c.cap("render"), Some(2));
        assert_eq!(c.cap("anything"), Some(50));
        assert_eq!(c.named(), vec!["ocr", "render"]);
        let c = ServiceCaps::parse("S", "ocr=1").unwrap();
        assert_eq!((c.cap("ocr"), c.cap("x")), (Some(1), None));
        let c = ServiceCaps::parse("S", "*=3").unwrap();
        assert_eq!((c.cap("ocr"), c.named().len()), (Some(3), 0));
        assert!(ServiceCaps::parse("S", "").unwrap().is_empty());
        assert!(ServiceCaps::parse("S", " , ").unwrap().is_empty());
        assert!(!c.is_empty());
    }

    #[test]
    fn bad_cap_tables_are_errors_naming_the_entry() {
        for (v, needle) in [
            ("ocr", "\"ocr\" must be service=N"),
            ("ocr=", "at least 1"),
            ("ocr=0", "at least 1"),
            ("ocr=-1", "at least 1"),
            ("ocr=1.5", "at least 1"),
            ("ocr=99999999999999999999999", "at least 1"),
            ("=3", "no valid service"),
            ("bad name=3", "no valid service"),
            ("-ocr=3", "no valid service"),
            ("ocr=1,ocr=2", "repeats a service"),
            ("*=1,*=2", "repeats *"),
            (&format!("{}=1", "a".repeat(64)), "no valid service"),
        ] {
            let e = ServiceCaps::parse("SERVICE_MAX_CONCURRENT", v).unwrap_err();
            assert!(e.starts_with("SERVICE_MAX_CONCURRENT: entry"), "{v}: {e}");
            assert!(e.contains(needle), "{v}: {e}");
        }
    }

    #[test]
    fn only_named_services_get_their_own_label() {
        let named = vec!["ocr".to_string(), "render".to_string()];
        for (service, want) in [
            ("ocr", "ocr"),
            ("render", "render"),
            ("Ocr", "other"),
            ("evil\"label", "other"),
            ("", "other"),
        ] {
            assert_eq!(label(&named, service), want, "{service}");
        }
        assert_eq!(label(&[], "ocr"), "other");
    }

    #[test]
    fn the_deferral_schedule_doubles_to_a_minute() {
        for (attempt, secs) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 16),
            (6, 32),
            (7, 60),
            (8, 60),
            (1000, 60),
            (u32::MAX, 60),
        ] {
            assert_eq!(defer_delay(attempt), Duration::from_secs(secs), "{attempt}");
        }
    }
}
