//! Leader election on a coordination.k8s.io/v1 Lease, with client-go's
//! semantics. The timing rules are the pure `decide` and `must_step_down`: a
//! candidate takes over only after the record has not changed for a full
//! leaseDuration on its own clock (the holder's renewTime is never compared
//! with our clock), and a leader that has not renewed within renewDeadline
//! steps down. `LeaseLock` does the REST: every write is a PUT carrying the
//! resourceVersion it read, and 409 means another candidate won the race.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::client::{Client, KubeError};
use crate::clock;

/// The Lease spec fields the election uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub holder: String,
    pub lease_duration_seconds: i64,
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub lease_transitions: i64,
}

/// What a candidate should do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Someone else holds a live lease: keep following.
    Follow,
    /// Write this record (acquire or renew) with the resourceVersion read.
    Write(Record),
}

/// The election rule. `observed_at` is when *we* last saw `current` change;
/// `now` is our monotonic clock; `wall` only stamps the record we write.
pub fn decide(
    current: &Record,
    observed_at: Instant,
    now: Instant,
    wall: SystemTime,
    me: &str,
    lease: Duration,
) -> Decision {
    let held_by_other = !current.holder.is_empty() && current.holder != me;
    if held_by_other && now.duration_since(observed_at) < lease {
        return Decision::Follow;
    }
    let stamp = clock::format_micros(wall);
    let renewing = current.holder == me;
    Decision::Write(Record {
        holder: me.to_string(),
        lease_duration_seconds: lease.as_secs().max(1) as i64,
        acquire_time: if renewing {
            current.acquire_time.clone().or(Some(stamp.clone()))
        } else {
            Some(stamp.clone())
        },
        renew_time: Some(stamp),
        lease_transitions: if renewing {
            current.lease_transitions
        } else {
            current.lease_transitions.saturating_add(1)
        },
    })
}

/// True when a leader whose last successful renew was at `last_renew` must
/// stop leading.
pub fn must_step_down(last_renew: Instant, now: Instant, renew_deadline: Duration) -> bool {
    now.duration_since(last_renew) >= renew_deadline
}

/// A replica's role in the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    Leader { last_renew: Instant },
}

/// Result of one acquire-or-renew attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease (written with our identity).
    Held,
    /// Another holder is live, or our PUT got 409 (lost the race).
    Lost,
    /// The API server could not be asked.
    Error,
}

/// What the election loop must do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    StartLeading,
    StopLeading,
}

/// The role after an attempt. A leader that sees another holder (or loses a
/// write race) steps down at once; one that cannot reach the API server keeps
/// leading until `renew_deadline` after its last successful renew.
pub fn after_attempt(
    role: Role,
    attempt: Attempt,
    now: Instant,
    renew_deadline: Duration,
) -> (Role, Transition) {
    match (role, attempt) {
        (Role::Follower, Attempt::Held) => {
            (Role::Leader { last_renew: now }, Transition::StartLeading)
        }
        (Role::Follower, _) => (Role::Follower, Transition::None),
        (Role::Leader { .. }, Attempt::Held) => {
            (Role::Leader { last_renew: now }, Transition::None)
        }
        (Role::Leader { .. }, Attempt::Lost) => (Role::Follower, Transition::StopLeading),
        (Role::Leader { last_renew }, Attempt::Error) => {
            if must_step_down(last_renew, now, renew_deadline) {
                (Role::Follower, Transition::StopLeading)
            } else {
                (Role::Leader { last_renew }, Transition::None)
            }
        }
    }
}

/// The record that releases a Lease on shutdown, so a successor takes over at once.
pub fn released(current: &Record, wall: SystemTime) -> Record {
    let stamp = clock::format_micros(wall);
    Record {
        holder: String::new(),
        lease_duration_seconds: 1,
        acquire_time: Some(stamp.clone()),
        renew_time: Some(stamp),
        lease_transitions: current.lease_transitions,
    }
}

fn record_of(lease: &Value) -> Record {
    let spec = lease.get("spec").cloned().unwrap_or(Value::Null);
    let s = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_string);
    Record {
        holder: s("holderIdentity").unwrap_or_default(),
        lease_duration_seconds: spec
            .get("leaseDurationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        acquire_time: s("acquireTime"),
        renew_time: s("renewTime"),
        lease_transitions: spec
            .get("leaseTransitions")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    }
}

fn spec_json(r: &Record) -> Value {
    let mut spec = json!({
        "holderIdentity": r.holder,
        "leaseDurationSeconds": r.lease_duration_seconds,
        "leaseTransitions": r.lease_transitions,
    });
    if let Some(t) = &r.acquire_time {
        spec["acquireTime"] = json!(t);
    }
    if let Some(t) = &r.renew_time {
        spec["renewTime"] = json!(t);
    }
    spec
}

/// The Lease as last read: its record and resourceVersion.
#[derive(Debug, Clone)]
pub struct Read {
    pub record: Record,
    pub resource_version: String,
}

/// Decodes a Lease answer (public for the `lease` fuzz target).
#[doc(hidden)]
pub fn read_of(v: &Value) -> Read {
    Read {
        record: record_of(v),
        resource_version: v
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
    }
}

/// REST access to one Lease.
pub struct LeaseLock {
    pub client: Client,
    pub namespace: String,
    pub name: String,
}

impl LeaseLock {
    fn path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.namespace, self.name
        )
    }

    /// Reads the Lease; `Ok(None)` when it does not exist.
    pub fn get(&self) -> Result<Option<Read>, KubeError> {
        match self.client.get(
            &self.path(),
            &format!("get lease {}/{}", self.namespace, self.name),
        ) {
            Ok(v) => Ok(Some(read_of(&v))),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the Lease holding `r` (409 when someone created it first).
    pub fn create(&self, r: &Record) -> Result<Read, KubeError> {
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec_json(r),
        });
        let path = format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        );
        let v = self.client.post(
            &path,
            &body,
            &format!("create lease {}/{}", self.namespace, self.name),
        )?;
        Ok(read_of(&v))
    }

    /// Replaces the spec, guarded by the resourceVersion read (409 = lost race).
    pub fn update(&self, r: &Record, resource_version: &str) -> Result<Read, KubeError> {
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": resource_version},
            "spec": spec_json(r),
        });
        let v = self.client.put(
            &self.path(),
            &body,
            &format!("update lease {}/{}", self.namespace, self.name),
        )?;
        Ok(read_of(&v))
    }
}

/// A candidate's memory of the Lease: what it last saw and when (our clock).
#[derive(Debug, Default)]
pub struct Candidate {
    observed: Option<(Record, Instant)>,
}

impl Candidate {
    /// One acquire-or-renew attempt. `Ok(true)` = we hold the Lease now.
    pub fn try_acquire_or_renew(
        &mut self,
        lock: &LeaseLock,
        me: &str,
        lease: Duration,
        now: Instant,
        wall: SystemTime,
    ) -> Result<bool, KubeError> {
        let Some(read) = lock.get()? else {
            let r = match decide(&Record::default(), now, now, wall, me, lease) {
                Decision::Write(r) => r,
                Decision::Follow => return Ok(false),
            };
            return match lock.create(&r) {
                Ok(read) => {
                    self.observed = Some((read.record, now));
                    Ok(true)
                }
                Err(e) if e.code() == Some(409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let observed_at = match &self.observed {
            Some((rec, at)) if *rec == read.record => *at,
            _ => now,
        };
        self.observed = Some((read.record.clone(), observed_at));
        match decide(&read.record, observed_at, now, wall, me, lease) {
            Decision::Follow => Ok(false),
            Decision::Write(r) => match lock.update(&r, &read.resource_version) {
                Ok(done) => {
                    self.observed = Some((done.record, now));
                    Ok(true)
                }
                Err(e) if e.code() == Some(409) => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    /// Who holds the Lease as last seen.
    pub fn holder(&self) -> Option<&str> {
        self.observed
            .as_ref()
            .map(|(r, _)| r.holder.as_str())
            .filter(|h| !h.is_empty())
    }

    /// Releases the Lease if we still hold it.
    pub fn release(
        &mut self,
        lock: &LeaseLock,
        me: &str,
        wall: SystemTime,
    ) -> Result<(), KubeError> {
        let Some(read) = lock.get()? else {
            return Ok(());
        };
        if read.record.holder != me {
            return Ok(());
        }
        lock.update(&released(&read.record, wall), &read.resource_version)?;
        self.observed = None;
        Ok(())
    }
}

/// The leader's side of the election loop: what starts and stops with the
/// Lease, and where the loop reports what it learns.
pub trait Leadership {
    type Error: std::fmt::Display;
    /// We became leader. `Err` gives the Lease back; we stay a follower.
    fn start(&mut self) -> Result<(), Self::Error>;
    /// Stop leading: `abort` when the Lease was lost (drain nothing), not on shutdown.
    fn stop(&mut self, abort: bool);
    /// After each attempt: whether the API server answered it.
    fn api_answered(&mut self, answered: bool);
    /// Once per RETRY_PERIOD, after the attempt's transition.
    fn tick(&mut self);
}

/// LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// The election loop (the main thread): every RETRY_PERIOD one
/// acquire-or-renew attempt, then `after_attempt` decides whether `leader`
/// starts or stops. Returns when `wait` reports a signal, after stopping the
/// leader's work and releasing the Lease.
pub fn campaign<L: Leadership>(
    lock: &LeaseLock,
    me: &str,
    timing: &Timing,
    leader: &mut L,
    wait: &dyn Fn(Duration) -> bool,
) {
    let mut cand = Candidate::default();
    let mut role = Role::Follower;
    let mut last_holder: Option<String> = None;
    log::info!(
        "campaigning for lease {}/{} as {me}",
        lock.namespace,
        lock.name
    );
    loop {
        let now = Instant::now();
        let attempt = match cand.try_acquire_or_renew(
            lock,
            me,
            timing.lease_duration,
            now,
            SystemTime::now(),
        ) {
            Ok(true) => Attempt::Held,
            Ok(false) => Attempt::Lost,
            Err(e) => {
                log::warn!("{e}");
                Attempt::Error
            }
        };
        leader.api_answered(attempt != Attempt::Error);
        let holder = cand.holder().map(str::to_string);
        if holder != last_holder {
            log::info!(
                "lease {}/{} held by {}",
                lock.namespace,
                lock.name,
                holder.as_deref().unwrap_or("nobody")
            );
            last_holder = holder;
        }
        let (next, t) = after_attempt(role, attempt, now, timing.renew_deadline);
        role = next;
        match t {
            Transition::StartLeading => {
                log::info!("became leader of {}/{}", lock.namespace, lock.name);
                if let Err(e) = leader.start() {
                    log::error!("cannot start leading: {e}; releasing the lease");
                    let _ = cand.release(lock, me, SystemTime::now());
                    role = Role::Follower;
                }
            }
            Transition::StopLeading => {
                log::warn!(
                    "lost the lease {}/{}: stopping all work and campaigning again",
                    lock.namespace,
                    lock.name
                );
                leader.stop(true);
            }
            Transition::None => {}
        }
        leader.tick();
        if wait(timing.retry_period) {
            break;
        }
    }
    log::info!("signal {} received: stopping", crate::signal::received());
    if matches!(role, Role::Leader { .. }) {
        leader.stop(false);
        match cand.release(lock, me, SystemTime::now()) {
            Ok(()) => log::info!("released lease {}/{}", lock.namespace, lock.name),
            Err(e) => log::warn!("could not release the lease: {e}"),
        }
    }
}

/// LEADER_ELECTION=false: lead at once, until `wait` reports a signal.
pub fn lead_unelected<L: Leadership>(
    leader: &mut L,
    wait: &dyn Fn(Duration) -> bool,
) -> Result<(), L::Error> {
    leader.start()?;
    leader.api_answered(true);
    while !wait(Duration::from_millis(500)) {
        leader.tick();
    }
    log::info!("signal {} received: stopping", crate::signal::received());
    leader.stop(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_secs(15);

    fn rec(holder: &str, transitions: i64) -> Record {
        Record {
            holder: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some("2026-11-24T07:00:00.000000Z".into()),
            renew_time: Some("2026-11-24T07:00:10.000000Z".into()),
            lease_transitions: transitions,
        }
    }

    #[test]
    fn a_live_lease_of_another_holder_is_followed_until_exactly_lease_duration() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let other = rec("b", 3);
        assert_eq!(decide(&other, t0, t0, wall, "a", L), Decision::Follow);
        assert_eq!(
            decide(&other, t0, t0 + L - Duration::from_millis(1), wall, "a", L),
            Decision::Follow
        );
        // Exactly at the boundary the record is stale: take over.
        let Decision::Write(r) = decide(&other, t0, t0 + L, wall, "a", L) else {
            panic!("must take over")
        };
        assert_eq!(r.holder, "a");
        assert_eq!(r.lease_transitions, 4);
        assert_eq!(
            r.acquire_time.as_deref(),
            Some("1970-01-01T00:00:00.000000Z")
        );
    }

    #[test]
    fn the_holders_renew_time_is_not_compared_with_our_clock() {
        // renewTime years in the past, but we only just observed the record.
        let t0 = Instant::now();
        let mut old = rec("b", 0);
        old.renew_time = Some("2001-01-01T00:00:00.000000Z".into());
        assert_eq!(
            decide(
                &old,
                t0,
                t0 + Duration::from_secs(1),
                SystemTime::now(),
                "a",
                L
            ),
            Decision::Follow
        );
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let mine = rec("a", 2);
        let Decision::Write(r) = decide(&mine, t0, t0, SystemTime::now(), "a", L) else {
            panic!()
        };
        assert_eq!(r.acquire_time, mine.acquire_time);
        assert_eq!(r.lease_transitions, 2);
        assert_ne!(r.renew_time, mine.renew_time);
    }

    #[test]
    fn an_empty_or_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let released = released(&rec("b", 5), SystemTime::now());
        let Decision::Write(r) = decide(&released, t0, t0, SystemTime::now(), "a", L) else {
            panic!()
        };
        assert_eq!((r.holder.as_str(), r.lease_transitions), ("a", 6));
        assert!(matches!(
            decide(&Record::default(), t0, t0, SystemTime::now(), "a", L),
            Decision::Write(_)
        ));
    }

    /// leaseTransitions comes from the API server: i64::MAX must not
    /// overflow when another candidate takes the Lease.
    #[test]
    fn a_huge_transition_count_saturates() {
        let lease = json!({"metadata": {"resourceVersion": "7"},
            "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15,
                "leaseTransitions": i64::MAX}});
        let read = read_of(&lease);
        assert_eq!(read.record.lease_transitions, i64::MAX);
        let now = Instant::now();
        let past = now.checked_sub(Duration::from_secs(20)).unwrap_or(now);
        let wall = SystemTime::UNIX_EPOCH;
        match decide(&read.record, past, now, wall, "me", Duration::from_secs(15)) {
            Decision::Write(r) => assert_eq!(r.lease_transitions, i64::MAX),
            Decision::Follow => panic!("an expired Lease is taken"),
        }
    }

    #[test]
    fn role_transitions() {
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        let leader = Role::Leader { last_renew: t0 };
        let s = Duration::from_secs;
        let table = [
            (
                Role::Follower,
                Attempt::Held,
                t0,
                Role::Leader { last_renew: t0 },
                Transition::StartLeading,
            ),
            (
                Role::Follower,
                Attempt::Lost,
                t0,
                Role::Follower,
                Transition::None,
            ),
            (
                Role::Follower,
                Attempt::Error,
                t0,
                Role::Follower,
                Transition::None,
            ),
            (
                leader,
                Attempt::Held,
                t0 + s(2),
                Role::Leader {
                    last_renew: t0 + s(2),
                },
                Transition::None,
            ),
            // 409 on renew: someone else wrote the Lease.
            (
                leader,
                Attempt::Lost,
                t0 + s(2),
                Role::Follower,
                Transition::StopLeading,
            ),
            (leader, Attempt::Error, t0 + s(9), leader, Transition::None),
            // Renew deadline passed without a successful renew.
            (
                leader,
                Attempt::Error,
                t0 + d,
                Role::Follower,
                Transition::StopLeading,
            ),
        ];
        for (i, (role, attempt, now, want_role, want_t)) in table.into_iter().enumerate() {
            assert_eq!(
                after_attempt(role, attempt, now, d),
                (want_role, want_t),
                "row {i}"
            );
        }
    }

    #[test]
    fn a_leader_steps_down_when_the_renew_deadline_passes() {
        let t0 = Instant::now();
        let d = Duration::from_secs(10);
        assert!(!must_step_down(t0, t0 + d - Duration::from_millis(1), d));
        assert!(must_step_down(t0, t0 + d, d));
    }
}
