//! What the claim API reads at cold start besides the shared wiring: where devices are sent
//! (`OEM_ENDPOINT` or `OEM_ENDPOINTS`), who may use the admin routes (`OPERATOR_PRINCIPALS`) and
//! how long a request may take (`REQUEST_BUDGET_MS`). A bad value stops the cold start with a
//! message that names the setting.

use std::{sync::Arc, time::Duration};

pub use claim_shared::config::ConfigError;
use claim_shared::{
    config::{env_or, required},
    domain::{
        endpoints::{is_host_name, EndpointPlan, StackLocation},
        forwarding::Forwarders,
    },
};

use crate::identity::OperatorAllowlist;

/// `REQUEST_BUDGET_MS` when it is not set. An app's user waits at most this long for an answer. A
/// claim normally takes about 10 DynamoDB calls (milliseconds each) and an inline publish (a TLS
/// connection and a PUBACK, 0.1–0.5 s), so 3 s leaves the publish over 2 s; and it is above the
/// SDK's 2 s deadline of one call (`claim_shared::wiring::OPERATION_TIMEOUT`), so a dependency that
/// hangs is reported by its own error, naming it, before the budget runs out.
pub const DEFAULT_REQUEST_BUDGET: Duration = Duration::from_millis(3000);

/// The least `REQUEST_BUDGET_MS` may be: a claim with its inline publish still fits.
pub const MIN_REQUEST_BUDGET: Duration = Duration::from_millis(1000);

/// The most `REQUEST_BUDGET_MS` may be: 2 s below the function's timeout ([`FUNCTION_TIMEOUT`]),
/// far below API Gateway's ([`API_GATEWAY_TIMEOUT`]), so the function always answers `503` itself
/// instead of being cut off by Lambda (`502`) or API Gateway (`504`).
pub const MAX_REQUEST_BUDGET: Duration = Duration::from_millis(8000);

/// The function's timeout in `template.yaml` (`Globals.Function.Timeout`; a test checks it).
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(10);

/// API Gateway's integration timeout for a REST API (29 s, its default and usual maximum).
pub const API_GATEWAY_TIMEOUT: Duration = Duration::from_secs(29);

const _: () = assert!(
    MAX_REQUEST_BUDGET.as_millis() + 2000 <= FUNCTION_TIMEOUT.as_millis()
        // A drain leaves an https/iam claim to the request that made it due for INLINE_GRACE: the
        // whole invocation, and some slack for the clocks.
        && FUNCTION_TIMEOUT.as_secs() as i64 + 1 < claim_shared::service::INLINE_GRACE.whole_seconds()
        && FUNCTION_TIMEOUT.as_millis() < API_GATEWAY_TIMEOUT.as_millis()
        && MIN_REQUEST_BUDGET.as_millis() <= DEFAULT_REQUEST_BUDGET.as_millis()
        && DEFAULT_REQUEST_BUDGET.as_millis() <= MAX_REQUEST_BUDGET.as_millis()
);

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The OEM AWS IoT endpoints devices are sent to, and the rules that choose one.
    pub endpoints: Arc<EndpointPlan>,
    /// Who may use the admin routes, beyond what IAM authorization already checked.
    pub operators: OperatorAllowlist,
    /// How long one request may take before it answers `503 unavailable` (`REQUEST_BUDGET_MS`).
    pub request_budget: Duration,
    /// The one browser origin allowed to read the API's answers (`CORS_ALLOW_ORIGIN`: the portal's).
    pub cors_origin: Option<String>,
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
    /// rules would never complete its claim; a forwarded endpoint of another account must be one of
    /// `FORWARDING_ACCOUNT_IDS`. Then `OPERATOR_PRINCIPALS` and `REQUEST_BUDGET_MS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let (config, setting) = match std::env::var("OEM_ENDPOINTS")
            .ok()
            .filter(|rules| !rules.trim().is_empty())
        {
            Some(rules) => (Self::from_rules(&rules)?, "OEM_ENDPOINTS"),
            None => (Self::new(&required("OEM_ENDPOINT")?)?, "OEM_ENDPOINT"),
        };
        let (region, account) = (env_or("AWS_REGION", ""), env_or("STACK_ACCOUNT_ID", ""));
        let account = Some(account.as_str()).filter(|a| !a.is_empty());
        let forwarders = Forwarders::parse(account, &env_or("FORWARDING_ACCOUNT_IDS", "")).map_err(ConfigError)?;
        let stack = StackLocation {
            account,
            region: Some(region.as_str()).filter(|r| !r.is_empty()),
            forwarders: Some(&forwarders),
        };
        config
            .endpoints
            .check_events_reach(stack)
            .map_err(|err| ConfigError(format!("{setting}: {err}")))?;
        let mut config = config.with_operators(&env_or("OPERATOR_PRINCIPALS", ""))?;
        config.request_budget = request_budget_from(std::env::var("REQUEST_BUDGET_MS").ok().as_deref())?;
        config.with_cors_origin(&env_or("CORS_ALLOW_ORIGIN", ""))
    }

    fn with_plan(plan: EndpointPlan) -> Self {
        Self {
            endpoints: Arc::new(plan),
            operators: OperatorAllowlist::default(),
            request_budget: DEFAULT_REQUEST_BUDGET,
            cors_origin: None,
        }
    }

    /// Lets a browser on `raw` read the answers (`CORS_ALLOW_ORIGIN`; empty: no browser origin). An
    /// origin is `https://host[:port]`, or `http://` for `localhost`/`127.0.0.1` (the local stack);
    /// anything else (a path, `*`, a list) stops the cold start.
    pub fn with_cors_origin(mut self, raw: &str) -> Result<Self, ConfigError> {
        let raw = raw.trim();
        if raw.is_empty() {
            self.cors_origin = None;
            return Ok(self);
        }
        let host = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://").filter(|h| is_loopback(h)))
            .filter(|host| is_origin_host(host));
        if host.is_none() {
            return Err(ConfigError(format!(
                "CORS_ALLOW_ORIGIN must be one origin such as https://portal.example.com (http:// only for \
                 localhost), got {raw:?}"
            )));
        }
        self.cors_origin = Some(raw.to_owned());
        Ok(self)
    }

    /// Narrows the operators to `OPERATOR_PRINCIPALS` (comma-separated ARNs; empty: no narrowing).
    pub fn with_operators(mut self, raw: &str) -> Result<Self, ConfigError> {
        self.operators = OperatorAllowlist::parse(raw).map_err(ConfigError)?;
        Ok(self)
    }
}

/// `host` or `host:port` of an origin: a host name and an optional port, nothing else.
fn is_origin_host(host: &str) -> bool {
    let (name, port) = host.split_once(':').unwrap_or((host, ""));
    is_host_name(name) && (port.is_empty() || port.parse::<u16>().is_ok_and(|p| p > 0))
}

fn is_loopback(host: &str) -> bool {
    let name = host.split_once(':').map_or(host, |(name, _)| name);
    name == "localhost" || name == "127.0.0.1"
}

/// `REQUEST_BUDGET_MS`: whole milliseconds in `MIN_REQUEST_BUDGET..=MAX_REQUEST_BUDGET`;
/// [`DEFAULT_REQUEST_BUDGET`] when unset or empty.
pub fn request_budget_from(raw: Option<&str>) -> Result<Duration, ConfigError> {
    let Some(raw) = raw.filter(|raw| !raw.trim().is_empty()) else {
        return Ok(DEFAULT_REQUEST_BUDGET);
    };
    let (min, max) = (MIN_REQUEST_BUDGET.as_millis(), MAX_REQUEST_BUDGET.as_millis());
    raw.trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
        .filter(|budget| (MIN_REQUEST_BUDGET..=MAX_REQUEST_BUDGET).contains(budget))
        .ok_or_else(|| {
            ConfigError(format!(
                "REQUEST_BUDGET_MS must be {min}..={max} (milliseconds; well below the function's {} s timeout \
                 and API Gateway's {} s), got {raw:?}",
                FUNCTION_TIMEOUT.as_secs(),
                API_GATEWAY_TIMEOUT.as_secs()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_budget_defaults_to_3_s_and_stays_well_below_the_timeouts() {
        assert_eq!(request_budget_from(None), Ok(Duration::from_millis(3000)));
        assert_eq!(request_budget_from(Some("")), Ok(Duration::from_millis(3000)));
        assert_eq!(request_budget_from(Some("1500")), Ok(Duration::from_millis(1500)));
        assert_eq!(request_budget_from(Some("8000")), Ok(Duration::from_millis(8000)));
        for bad in ["999", "8001", "10000", "29000", "-1", "3s", "3000.5", "abc"] {
            let err = request_budget_from(Some(bad)).expect_err(bad);
            assert!(err.0.contains("REQUEST_BUDGET_MS must be 1000..=8000"), "{err}");
        }
    }

    #[test]
    fn the_endpoint_must_be_a_host_name() {
        assert!(ApiConfig::new("abc123-ats.iot.eu-west-1.amazonaws.com").is_ok());
        for bad in ["", "https://x.com", "a..b", "host/path", "a b", "x.com:8883"] {
            assert!(ApiConfig::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cors_origin_is_one_https_origin_or_a_local_one() {
        let origin = |raw: &str| ApiConfig::new("x-ats.iot.eu-west-1.amazonaws.com")?.with_cors_origin(raw);
        for good in [
            "https://portal.example.com",
            "https://d111111abcdef8.cloudfront.net",
            "http://127.0.0.1:8080",
            "http://localhost:3000",
        ] {
            assert_eq!(origin(good).map(|c| c.cors_origin), Ok(Some(good.to_owned())), "{good}");
        }
        assert_eq!(origin("").map(|c| c.cors_origin), Ok(None));
        for bad in [
            "*",
            "http://portal.example.com",
            "https://portal.example.com/",
            "https://a.com,https://b.com",
            "portal.example.com",
            "https://a.com:0",
            "https://a.com:99999",
            "https://",
        ] {
            let err = origin(bad).expect_err(bad);
            assert!(err.0.contains("CORS_ALLOW_ORIGIN must be one origin"), "{err}");
        }
    }
}
