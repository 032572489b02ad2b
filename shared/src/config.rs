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
pub fn claim_settings() -> Result<ClaimSettings, ConfigError> {
    let mut settings = ClaimSettings::default();
    if let Ok(raw) = std::env::var("CLAIM_DEADLINE_SECONDS") {
        let seconds: i64 = raw
            .parse()
            .ok()
            .filter(|s| (10..=86_400).contains(s))
            .ok_or_else(|| ConfigError(format!("CLAIM_DEADLINE_SECONDS must be 10..=86400, got {raw:?}")))?;
        settings.deadline = time::Duration::seconds(seconds);
    }
    Ok(settings)
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
