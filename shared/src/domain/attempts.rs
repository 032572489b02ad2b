//! Rate limits on failed claim attempts (`429 rate_limited` with `Retry-After`).
//!
//! Failed claims are counted in fixed windows (default one hour) under two scopes:
//!
//! - the user: their claims answered `device_not_found` (an unknown or wrong code: what guessing
//!   label codes looks like) or `already_claimed` (probing which devices are held), whatever the
//!   code;
//! - the user and one device: their claims of that device answered `already_claimed` (the code was
//!   right, someone else holds it). An app that keeps retrying is stopped on that device after 10,
//!   so it uses at most that much of the user's budget: a buyer whose seller has not released the
//!   device yet can still claim everything else.
//!
//! Only a device that exists is ever part of a key, so a mistyped label code is never stored.
//!
//! There is deliberately no count per device across users: anybody who knows a ThingName could then
//! lock the buyer out of their own product by failing on it on purpose.

use time::{Duration, OffsetDateTime};

use super::ids::{ThingName, UserId};

/// Where failed attempts are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptScope {
    User(UserId),
    UserDevice(UserId, ThingName),
}

impl AttemptScope {
    /// A unique key per scope (ThingNames never contain `#`, so the two shapes cannot collide).
    pub fn key(&self) -> String {
        match self {
            AttemptScope::User(user) => format!("USER#{user}"),
            AttemptScope::UserDevice(user, thing) => format!("DEVICE#{thing}#USER#{user}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimits {
    /// Failed attempts one user may make per window, across all codes.
    pub per_user: u32,
    /// Failed attempts one user may make on one device per window.
    pub per_user_device: u32,
    pub window: Duration,
}

impl Default for AttemptLimits {
    fn default() -> Self {
        Self {
            per_user: 20,
            per_user_device: 10,
            window: Duration::hours(1),
        }
    }
}

/// One counting window: `[start, start + window)`, aligned to the Unix epoch so every function
/// instance counts into the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptWindow {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

impl AttemptLimits {
    pub fn limit(&self, scope: &AttemptScope) -> u32 {
        match scope {
            AttemptScope::User(_) => self.per_user,
            AttemptScope::UserDevice(..) => self.per_user_device,
        }
    }

    pub fn window_at(&self, now: OffsetDateTime) -> AttemptWindow {
        let window_ms = (self.window.whole_milliseconds()).max(1);
        let now_ms = (now - OffsetDateTime::UNIX_EPOCH).whole_milliseconds();
        let start_ms = now_ms - now_ms.rem_euclid(window_ms);
        let start = OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(i64::try_from(start_ms).unwrap_or(0));
        AttemptWindow {
            start,
            end: start + self.window,
        }
    }

    /// `Some(wait)`: `failed` attempts already reached the scope's limit in the window around `now`;
    /// the next attempt is allowed after `wait` (when the window ends).
    pub fn exceeded(&self, scope: &AttemptScope, failed: u32, now: OffsetDateTime) -> Option<Duration> {
        (failed >= self.limit(scope)).then(|| self.window_at(now).end - now)
    }
}

/// A wait as `Retry-After` states it: whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let seconds = wait.whole_seconds() + i64::from(wait.subsec_nanoseconds() > 0);
    u64::try_from(seconds.max(1)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::seconds(seconds)
    }

    #[test]
    fn windows_are_aligned_so_every_instance_counts_into_the_same_one() {
        let limits = AttemptLimits::default();
        let window = limits.window_at(at(3600 * 5 + 42));
        assert_eq!(window.start, at(3600 * 5));
        assert_eq!(window.end, at(3600 * 6));
        assert_eq!(limits.window_at(at(3600 * 6)).start, at(3600 * 6));
    }

    #[test]
    fn the_limit_is_reached_at_its_count_and_the_wait_ends_with_the_window() {
        let limits = AttemptLimits {
            per_user: 3,
            per_user_device: 2,
            window: Duration::minutes(10),
        };
        let user = AttemptScope::User(UserId::parse("u").expect("user"));
        let thing = ThingName::parse("t1").expect("thing");
        let device = AttemptScope::UserDevice(UserId::parse("u").expect("user"), thing);
        let now = at(600 + 240);
        assert_eq!(limits.exceeded(&user, 2, now), None);
        assert_eq!(limits.exceeded(&user, 3, now), Some(Duration::minutes(6)));
        assert_eq!(limits.exceeded(&device, 1, now), None);
        assert_eq!(limits.exceeded(&device, 2, now), Some(Duration::minutes(6)));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::milliseconds(1)), 1);
        assert_eq!(retry_after_seconds(Duration::milliseconds(59_001)), 60);
        assert_eq!(retry_after_seconds(Duration::seconds(60)), 60);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn scope_keys_differ_between_users_devices_and_shapes() {
        let user = |u: &str| UserId::parse(u).expect("user");
        let thing = |t: &str| ThingName::parse(t).expect("thing");
        let keys = [
            AttemptScope::User(user("a")).key(),
            AttemptScope::User(user("b")).key(),
            AttemptScope::UserDevice(user("a"), thing("t1")).key(),
            AttemptScope::UserDevice(user("a"), thing("t2")).key(),
            AttemptScope::UserDevice(user("b"), thing("t1")).key(),
            // A user id may contain `#`: it still cannot pose as a device scope.
            AttemptScope::User(user("DEVICE#t1#USER#a")).key(),
        ];
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
    }
}
