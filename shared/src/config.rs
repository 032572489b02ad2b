//! Settings the functions read from their environment at cold start. A bad value stops the cold
//! start with a message that names the variable, instead of misbehaving later.

use crate::service::ClaimSettings;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

pub fn required(name: &str) -> Result<String, ConfigError> {
    std::env::var(name).map_err(|_| ConfigError(format!("environment variable {name} is not set")))
}

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// `CLAIM_DEADLINE_SECONDS` (10..=86400, default 900): how long a claim reserves its device.
/// Failed claims allowed per window (see `domain::attempts`):
/// `FAILED_CLAIMS_PER_USER` (1..=10000, default 20), `FAILED_CLAIMS_PER_USER_DEVICE` (1..=10000,
/// default 10), `FAILED_CLAIMS_WINDOW_SECONDS` (60..=86400, default 3600).
pub fn claim_settings() -> Result<ClaimSettings, ConfigError> {
    let mut settings = ClaimSettings::default();
    if let Some(seconds) = bounded_env("CLAIM_DEADLINE_SECONDS", 10, 86_400)? {
        settings.deadline = time::Duration::seconds(seconds);
    }
    let limits = &mut settings.attempt_limits;
    if let Some(count) = bounded_env("FAILED_CLAIMS_PER_USER", 1, 10_000)? {
        limits.per_user = u32::try_from(count).unwrap_or(u32::MAX);
    }
    if let Some(count) = bounded_env("FAILED_CLAIMS_PER_USER_DEVICE", 1, 10_000)? {
        limits.per_user_device = u32::try_from(count).unwrap_or(u32::MAX);
    }
    if let Some(seconds) = bounded_env("FAILED_CLAIMS_WINDOW_SECONDS", 60, 86_400)? {
        limits.window = time::Duration::seconds(seconds);
    }
    Ok(settings)
}

/// An optional whole number in `min..=max`; the error names the variable and the bounds.
fn bounded_env(name: &str, min: i64, max: i64) -> Result<Option<i64>, ConfigError> {
    let Ok(raw) = std::env::var(name) else {
        return Ok(None);
    };
    raw.parse()
        .ok()
        .filter(|value| (min..=max).contains(value))
        .map(Some)
        .ok_or_else(|| ConfigError(format!("{name} must be {min}..={max}, got {raw:?}")))
}

/// `CLAIM_THING_SECRET_TTL_SECONDS` (1..=3600, default 300): how long a warm function reuses a
/// vendor profile read from Secrets Manager, i.e. how long a rotated or corrected secret takes to
/// reach it.
pub fn secret_ttl() -> Result<std::time::Duration, ConfigError> {
    secret_ttl_from(std::env::var("CLAIM_THING_SECRET_TTL_SECONDS").ok().as_deref())
}

fn secret_ttl_from(raw: Option<&str>) -> Result<std::time::Duration, ConfigError> {
    let Some(raw) = raw else {
        return Ok(std::time::Duration::from_secs(300));
    };
    raw.parse::<u64>()
        .ok()
        .filter(|s| (1..=3600).contains(s))
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| ConfigError(format!("CLAIM_THING_SECRET_TTL_SECONDS must be 1..=3600, got {raw:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ttl_defaults_to_five_minutes_and_refuses_nonsense() {
        assert_eq!(secret_ttl_from(None), Ok(std::time::Duration::from_secs(300)));
        assert_eq!(secret_ttl_from(Some("2")), Ok(std::time::Duration::from_secs(2)));
        for bad in ["0", "3601", "-1", "5m", ""] {
            let err = secret_ttl_from(Some(bad)).expect_err(bad);
            assert!(err.0.contains("CLAIM_THING_SECRET_TTL_SECONDS"), "{err}");
        }
    }
}
