//! What the claim API reads at cold start besides the shared wiring: where devices are sent
//! (`OEM_ENDPOINT` or `OEM_ENDPOINTS`) and who may use the admin routes (`OPERATOR_PRINCIPALS`).
//! A bad value stops the cold start with a message that names the setting.

use std::sync::Arc;

pub use claim_shared::config::ConfigError;
use claim_shared::{
    config::{env_or, required},
    domain::endpoints::{is_host_name, EndpointPlan, StackLocation},
};

use crate::identity::OperatorAllowlist;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The OEM AWS IoT endpoints devices are sent to, and the rules that choose one.
    pub endpoints: Arc<EndpointPlan>,
    /// Who may use the admin routes, beyond what IAM authorization already checked.
    pub operators: OperatorAllowlist,
}

impl ApiConfig {
    /// One endpoint for every device (`OEM_ENDPOINT`). Checked at cold start, so a bad deployment
    /// fails loudly instead of publishing garbage.
    pub fn new(target_endpoint: &str) -> Result<Self, ConfigError> {
        if !is_host_name(target_endpoint) {
            return Err(ConfigError(format!(
                "OEM_ENDPOINT must be a host name such as xxxx-ats.iot.eu-west-1.amazonaws.com, got {target_endpoint:?}"
            )));
        }
        Ok(Self::with_plan(EndpointPlan::single(target_endpoint)))
    }

    /// Several endpoints with selection rules (`OEM_ENDPOINTS`, JSON; see `domain::endpoints`).
    pub fn from_rules(json: &str) -> Result<Self, ConfigError> {
        EndpointPlan::from_json(json)
            .map(Self::with_plan)
            .map_err(|err| ConfigError(format!("OEM_ENDPOINTS: {err}")))
    }

    /// `OEM_ENDPOINTS` when it is set and not empty, otherwise `OEM_ENDPOINT`; either way checked
    /// against where the stack runs (`AWS_REGION`, always set in Lambda; `STACK_ACCOUNT_ID`, from
    /// template.yaml): a device sent to an endpoint whose IoT events never reach this stack's topic
    /// rules would never complete its claim. Then `OPERATOR_PRINCIPALS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let (config, setting) = match std::env::var("OEM_ENDPOINTS")
            .ok()
            .filter(|rules| !rules.trim().is_empty())
        {
            Some(rules) => (Self::from_rules(&rules)?, "OEM_ENDPOINTS"),
            None => (Self::new(&required("OEM_ENDPOINT")?)?, "OEM_ENDPOINT"),
        };
        let (region, account) = (env_or("AWS_REGION", ""), env_or("STACK_ACCOUNT_ID", ""));
        let stack = StackLocation {
            account: Some(account.as_str()).filter(|a| !a.is_empty()),
            region: Some(region.as_str()).filter(|r| !r.is_empty()),
        };
        config
            .endpoints
            .check_events_reach(stack)
            .map_err(|err| ConfigError(format!("{setting}: {err}")))?;
        config.with_operators(&env_or("OPERATOR_PRINCIPALS", ""))
    }

    fn with_plan(plan: EndpointPlan) -> Self {
        Self {
            endpoints: Arc::new(plan),
            operators: OperatorAllowlist::default(),
        }
    }

    /// Narrows the operators to `OPERATOR_PRINCIPALS` (comma-separated ARNs; empty: no narrowing).
    pub fn with_operators(mut self, raw: &str) -> Result<Self, ConfigError> {
        self.operators = OperatorAllowlist::parse(raw).map_err(ConfigError)?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_must_be_a_host_name() {
        assert!(ApiConfig::new("abc123-ats.iot.eu-west-1.amazonaws.com").is_ok());
        for bad in ["", "https://x.com", "a..b", "host/path", "a b", "x.com:8883"] {
            assert!(ApiConfig::new(bad).is_err(), "{bad:?}");
        }
    }
}
