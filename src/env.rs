//! Reading environment variables: `Reader` trims values, applies defaults,
//! parses numbers, seconds, booleans, `key=value` pairs and comma lists, and
//! collects every problem so that all are reported at once. `config.rs`,
//! `policy.rs` and `webhook_guard.rs` read their variables through it. It
//! depends on nothing else in the crate.

use std::time::Duration;

/// Splits a comma list, trimming entries and dropping empty ones.
pub fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads variables through `get` and collects every problem, so that all of
/// them are reported at once.
pub struct Reader<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Reader<'a> {
        Reader {
            get,
            errors: Vec::new(),
        }
    }

    /// `value` when nothing was wrong, else every problem.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<String>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }

    pub fn error(&mut self, problem: String) {
        self.errors.push(problem);
    }

    /// The trimmed value; unset and empty are the same.
    pub fn str(&self, name: &str) -> Option<String> {
        (self.get)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.str(name).unwrap_or_else(|| default.to_string())
    }

    pub fn required(&mut self, name: &str, why: &str) -> String {
        match self.str(name) {
            Some(v) => v,
            None => {
                self.errors.push(format!("{name} is required {why}"));
                String::new()
            }
        }
    }

    pub fn num<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        match self.str(name) {
            None => default,
            Some(v) => match v.parse() {
                Ok(n) => n,
                Err(_) => {
                    self.errors
                        .push(format!("{name}={v:?} is not a valid number"));
                    default
                }
            },
        }
    }

    pub fn secs(&mut self, name: &str, default: f64) -> Duration {
        let v: f64 = self.num(name, default);
        if !(v.is_finite() && (0.0..1e9).contains(&v)) {
            self.errors
                .push(format!("{name} must be a non-negative number of seconds"));
            return Duration::from_secs_f64(default);
        }
        Duration::from_secs_f64(v)
    }

    pub fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.str(name) {
            None => default,
            Some(v) if ["1", "true", "yes", "on"].contains(&v.to_ascii_lowercase().as_str()) => {
                true
            }
            Some(v) if ["0", "false", "no", "off"].contains(&v.to_ascii_lowercase().as_str()) => {
                false
            }
            Some(v) => {
                self.errors
                    .push(format!("{name}={v:?} is not a boolean (true/false)"));
                default
            }
        }
    }

    /// A comma list; `-` is the empty list, unset is `default`.
    pub fn list(&self, name: &str, default: &[&str]) -> Vec<String> {
        match self.str(name) {
            None => default.iter().map(|s| s.to_string()).collect(),
            Some(v) if v == "-" => Vec::new(),
            Some(v) => split_list(&v),
        }
    }

    pub fn pair(&mut self, name: &str, default: Option<(&str, &str)>) -> Option<(String, String)> {
        match self.str(name) {
            None => default.map(|(k, v)| (k.to_string(), v.to_string())),
            Some(v) if v == "-" || v.eq_ignore_ascii_case("none") => None,
            Some(v) => match v.split_once('=') {
                Some((k, val)) if !k.is_empty() => Some((k.to_string(), val.to_string())),
                _ => {
                    self.errors
                        .push(format!("{name}={v:?} must be key=value (or \"none\")"));
                    None
                }
            },
        }
    }
}
