//! Delayed start (`job.startAfter` / `job.startDelaySeconds`): when a Job may
//! start, as an absolute wall-clock time. Pure: the clock comes in as `now`.
//!
//! A start within `START_SKEW` in the past (or a delay of 0) means "now": the
//! Job is not delayed at all. A start further in the past, or more than
//! MAX_START_DELAY ahead, is refused naming its field. Start times are kept to
//! whole seconds (the annotation `k8s-job-worker.io/start-after` is RFC 3339
//! with seconds, UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far in the past a `startAfter` may be (clock skew between the sender
/// and the worker); within it the Job starts at once.
pub const START_SKEW: Duration = Duration::from_secs(60);

/// MAX_START_DELAY's default: 7 days.
pub const DEFAULT_MAX_START_DELAY: Duration = Duration::from_secs(7 * 86_400);

/// What the message asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// `job.startAfter`: an absolute time.
    At(SystemTime),
    /// `job.startDelaySeconds`: this long after the worker received the message.
    In(Duration),
}

/// A refused start: the field and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub field: &'static str,
    pub message: String,
}

pub const FIELD_START_AFTER: &str = "job.startAfter";
pub const FIELD_START_DELAY: &str = "job.startDelaySeconds";

/// `t` cut down to whole seconds.
fn whole_secs(t: SystemTime) -> SystemTime {
    let s = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(s)
}

/// The absolute start of `start` received at `now`: `Ok(None)` when it is
/// due already (start at once), `Ok(Some(t))` for a delayed start at `t`
/// (whole seconds), or the field's problem.
pub fn resolve(
    start: Start,
    now: SystemTime,
    max_delay: Duration,
) -> Result<Option<SystemTime>, Refused> {
    let max = max_delay.as_secs();
    match start {
        Start::In(d) if d > max_delay => Err(Refused {
            field: FIELD_START_DELAY,
            message: format!("must be ≤ {max} (MAX_START_DELAY, got {})", d.as_secs()),
        }),
        Start::In(d) if d.is_zero() => Ok(None),
        Start::In(d) => match now.checked_add(d) {
            Some(t) => Ok(Some(whole_secs(t))),
            None => Err(Refused {
                field: FIELD_START_DELAY,
                message: format!("is out of range (got {})", d.as_secs()),
            }),
        },
        Start::At(t) => match t.duration_since(now) {
            // Ahead of now.
            Ok(ahead) if ahead > max_delay => Err(Refused {
                field: FIELD_START_AFTER,
                message: format!(
                    "is {} s ahead, more than MAX_START_DELAY ({max} s)",
                    ahead.as_secs()
                ),
            }),
            Ok(ahead) if ahead < Duration::from_secs(1) => Ok(None),
            Ok(_) => Ok(Some(whole_secs(t))),
            // In the past: within the skew it means now.
            Err(e) if e.duration().as_secs() <= START_SKEW.as_secs() => Ok(None),
            Err(e) => Err(Refused {
                field: FIELD_START_AFTER,
                message: format!(
                    "is {} s in the past (at most {} s allowed for clock skew)",
                    e.duration().as_secs(),
                    START_SKEW.as_secs()
                ),
            }),
        },
    }
}

/// The start time in a Job's `k8s-job-worker.io/start-after` annotation
/// (`None` when it does not parse: the tracker then starts the Job at once).
pub fn parse_annotation(text: &str) -> Option<SystemTime> {
    crate::clock::parse_rfc3339(text)
}

/// The annotation's value for `t`: RFC 3339, seconds, UTC.
pub fn annotation(t: SystemTime) -> String {
    crate::clock::format_secs(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn starts_resolve_or_name_their_field() {
        let now = at(1_000_000) + Duration::from_millis(400);
        let max = Duration::from_secs(3600);
        let secs = Duration::from_secs;
        let ok = |t: u64| Ok(Some(at(t)));
        for (start, want) in [
            (Start::In(secs(0)), Ok(None)),
            (Start::In(secs(8)), ok(1_000_008)),
            (Start::In(secs(3600)), ok(1_003_600)),
            (Start::At(at(1_000_010)), ok(1_000_010)),
            (Start::At(at(1_000_000) + secs(3600)), ok(1_003_600)),
            // Within a second, or within the skew in the past: now.
            (Start::At(now + Duration::from_millis(300)), Ok(None)),
            (Start::At(now), Ok(None)),
            (Start::At(at(1_000_000 - 60)), Ok(None)),
        ] {
            assert_eq!(resolve(start, now, max), want, "{start:?}");
        }
        for (start, field) in [
            (Start::In(secs(3601)), FIELD_START_DELAY),
            (Start::At(at(1_003_602)), FIELD_START_AFTER),
            (Start::At(at(1_000_000 - 62)), FIELD_START_AFTER),
            (Start::At(at(0)), FIELD_START_AFTER),
        ] {
            let e = resolve(start, now, max).expect_err("refused");
            assert_eq!(e.field, field, "{start:?}: {}", e.message);
        }
        let e = resolve(Start::At(at(1_000_000 - 120)), now, max).expect_err("past");
        assert!(e.message.contains("120 s in the past"), "{}", e.message);
        // Extreme values never panic.
        let _ = resolve(Start::In(Duration::MAX), now, Duration::MAX);
        let _ = resolve(Start::At(UNIX_EPOCH), UNIX_EPOCH, Duration::ZERO);
    }

    #[test]
    fn the_annotation_round_trips() {
        let t = at(1_767_225_600); // 2026-01-01T00:00:00Z
        assert_eq!(annotation(t), "2026-01-01T00:00:00Z");
        assert_eq!(parse_annotation(&annotation(t)), Some(t));
        assert_eq!(
            parse_annotation("2026-01-01T01:00:00+01:00"),
            Some(t),
            "offsets are honoured"
        );
        assert_eq!(parse_annotation("tomorrow"), None);
        assert_eq!(parse_annotation("2026-01-01T00:00:00"), None, "no offset");
    }
}
