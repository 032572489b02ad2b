//! Settings the functions read from their environment at cold start. A bad value stops the cold
//! start with a message that names the variable, instead of misbehaving later.

use crate::{
    domain::quarantine::{is_certificate_id, GatePolicy},
    service::ClaimSettings,
};

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

/// The rogue-device gate: `QUARANTINE_ROGUE_DEVICES` (`true` or `false`, default `true`) and
/// `VENDOR_CA_CERTIFICATE_IDS` (the module vendors' CA certificate ids in this account,
/// comma-separated; only their certificates are ever deactivated).
pub fn gate_policy() -> Result<GatePolicy, ConfigError> {
    gate_policy_from(
        std::env::var("QUARANTINE_ROGUE_DEVICES").ok().as_deref(),
        std::env::var("VENDOR_CA_CERTIFICATE_IDS").ok().as_deref(),
    )
}

fn gate_policy_from(enabled: Option<&str>, ca_ids: Option<&str>) -> Result<GatePolicy, ConfigError> {
    let enabled = match enabled.map(str::trim) {
        None | Some("") | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ConfigError(format!(
                "QUARANTINE_ROGUE_DEVICES must be true or false, got {other:?}"
            )))
        }
    };
    let mut vendor_ca_ids = Vec::new();
    for id in ca_ids
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
    {
        if !is_certificate_id(id) {
            return Err(ConfigError(format!(
                "VENDOR_CA_CERTIFICATE_IDS: {id:?} is not a certificate id (64 lowercase hex digits)"
            )));
        }
        vendor_ca_ids.push(id.to_owned());
    }
    Ok(GatePolicy { enabled, vendor_ca_ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_is_on_by_default_and_takes_only_certificate_ids() {
        let ca = "ab".repeat(32);
        let policy = gate_policy_from(None, Some(&format!(" {ca} ,"))).expect("valid");
        assert!(policy.enabled && policy.armed());
        assert_eq!(policy.vendor_ca_ids, vec![ca.clone()]);
        assert!(!gate_policy_from(Some("false"), Some(&ca)).expect("valid").armed());
        assert!(!gate_policy_from(Some("true"), None).expect("valid").armed());
        for (enabled, ids) in [(Some("yes"), None), (None, Some("not-a-ca"))] {
            assert!(gate_policy_from(enabled, ids).is_err());
        }
    }

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
