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
