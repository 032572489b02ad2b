//! Endpoint selection: which of the OEM's AWS IoT endpoints (account, region, data endpoint host) a
//! claimed device is sent to. The rules are checked in order and the first that matches decides;
//! without a match the default does. The decision and the rule that made it are kept on the claim.
//!
//! Configuration (`OEM_ENDPOINTS`, JSON; checked once at cold start):
//!
//! ```json
//! {"endpoints": {"us": {"host": "abc-ats.iot.us-east-1.amazonaws.com", "account": "111122223333", "region": "us-east-1"},
//!                "eu": {"host": "abc-ats.iot.eu-west-1.amazonaws.com", "account": "111122223333", "region": "eu-west-1"}},
//!  "rules": [{"sku": "PRO-EU-*", "endpoint": "eu"}, {"region": "eu-*", "endpoint": "eu"}],
//!  "default": "us"}
//! ```
//!
//! A rule names `region` (the app's hint), `sku` (the device's, from the import), or both; a trailing
//! `*` matches any suffix.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OemEndpoint {
    /// The AWS IoT data endpoint host the module is sent to.
    pub host: String,
    /// Documentation for operators (where the things will live); not used to connect.
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRule {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub sku: Option<String>,
    pub endpoint: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    endpoints: BTreeMap<String, OemEndpoint>,
    #[serde(default)]
    rules: Vec<EndpointRule>,
    default: String,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    endpoints: BTreeMap<String, OemEndpoint>,
    rules: Vec<EndpointRule>,
    default: String,
}

/// What selection decided: the host sent to the device and the rule that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub host: String,
    /// `default`, or `rules[<i>]` with what it matched, e.g. `rules[0] sku=PRO-EU-*`.
    pub rule: String,
}

/// A DNS host name: dot-separated labels of letters, digits and hyphens (no scheme, port or path).
pub fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn matches(pattern: &str, value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

impl EndpointPlan {
    /// One endpoint for every device (the `OEM_ENDPOINT` setting).
    pub fn single(host: impl Into<String>) -> Self {
        let endpoint = OemEndpoint {
            host: host.into(),
            account: None,
            region: None,
        };
        Self {
            endpoints: BTreeMap::from([("default".to_owned(), endpoint)]),
            rules: Vec::new(),
            default: "default".to_owned(),
        }
    }

    /// Parses and checks `OEM_ENDPOINTS`; the error names the bad entry.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawPlan = serde_json::from_str(text).map_err(|err| format!("not valid: {err}"))?;
        if raw.endpoints.is_empty() {
            return Err("endpoints: at least one endpoint is needed".into());
        }
        let names = || raw.endpoints.keys().cloned().collect::<Vec<_>>().join(", ");
        for (name, endpoint) in &raw.endpoints {
            if !is_host_name(&endpoint.host) {
                return Err(format!(
                    "endpoints.{name}.host {:?} is not a host name such as xxxx-ats.iot.eu-west-1.amazonaws.com",
                    endpoint.host
                ));
            }
            if let Some(account) = &endpoint.account {
                if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "endpoints.{name}.account {account:?} is not a 12-digit AWS account id"
                    ));
                }
            }
        }
        if !raw.endpoints.contains_key(&raw.default) {
            return Err(format!(
                "default {:?} is not one of the endpoints ({})",
                raw.default,
                names()
            ));
        }
        for (index, rule) in raw.rules.iter().enumerate() {
            if !raw.endpoints.contains_key(&rule.endpoint) {
                return Err(format!(
                    "rules[{index}].endpoint {:?} is not one of the endpoints ({})",
                    rule.endpoint,
                    names()
                ));
            }
            if rule.region.is_none() && rule.sku.is_none() {
                return Err(format!("rules[{index}] needs a region or a sku to match"));
            }
            for (field, pattern) in [("region", &rule.region), ("sku", &rule.sku)] {
                if pattern.as_deref().is_some_and(|p| p.is_empty() || p == "*") {
                    return Err(format!("rules[{index}].{field} must not be empty or only \"*\""));
                }
            }
        }
        Ok(Self {
            endpoints: raw.endpoints,
            rules: raw.rules,
            default: raw.default,
        })
    }

    /// The endpoint for a device with `sku`, claimed with the app's `region_hint`.
    pub fn select(&self, sku: Option<&str>, region_hint: Option<&str>) -> Selection {
        let chosen = self.rules.iter().enumerate().find(|(_, rule)| {
            rule.region.as_deref().is_none_or(|p| matches(p, region_hint))
                && rule.sku.as_deref().is_none_or(|p| matches(p, sku))
        });
        let (name, rule) = match chosen {
            Some((index, rule)) => {
                let mut label = format!("rules[{index}]");
                if let Some(region) = &rule.region {
                    label.push_str(&format!(" region={region}"));
                }
                if let Some(sku) = &rule.sku {
                    label.push_str(&format!(" sku={sku}"));
                }
                (&rule.endpoint, label)
            }
            None => (&self.default, "default".to_owned()),
        };
        // Every name was checked against the endpoints when the plan was built.
        let host = self.endpoints.get(name).map(|e| e.host.clone()).unwrap_or_default();
        Selection { host, rule }
    }

    /// Every host a device may be sent to.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.endpoints.values().map(|endpoint| endpoint.host.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"{
        "endpoints": {
            "us": {"host": "abc-ats.iot.us-east-1.amazonaws.com", "account": "111122223333", "region": "us-east-1"},
            "eu": {"host": "abc-ats.iot.eu-west-1.amazonaws.com"},
            "pro": {"host": "pro-ats.iot.eu-central-1.amazonaws.com"}
        },
        "rules": [
            {"sku": "PRO-*", "endpoint": "pro"},
            {"region": "eu-*", "endpoint": "eu"}
        ],
        "default": "us"
    }"#;

    #[test]
    fn the_first_matching_rule_decides_and_the_default_catches_the_rest() {
        let plan = EndpointPlan::from_json(PLAN).unwrap_or_else(|e| panic!("{e}"));
        let pick = |sku, region| plan.select(sku, region);
        assert_eq!(
            pick(Some("PRO-1"), Some("eu-west-1")).host,
            "pro-ats.iot.eu-central-1.amazonaws.com"
        );
        assert_eq!(pick(Some("PRO-1"), None).rule, "rules[0] sku=PRO-*");
        assert_eq!(
            pick(Some("BASIC"), Some("eu-west-1")).host,
            "abc-ats.iot.eu-west-1.amazonaws.com"
        );
        assert_eq!(pick(Some("BASIC"), Some("eu-west-1")).rule, "rules[1] region=eu-*");
        assert_eq!(pick(Some("BASIC"), Some("us-west-2")).rule, "default");
        assert_eq!(pick(None, None).host, "abc-ats.iot.us-east-1.amazonaws.com");
    }

    #[test]
    fn a_broken_configuration_names_the_bad_entry() {
        let cases = [
            (r#"{"endpoints": {}, "default": "x"}"#, "endpoints: at least one"),
            (
                r#"{"endpoints": {"a": {"host": "https://x"}}, "default": "a"}"#,
                "endpoints.a.host",
            ),
            (
                r#"{"endpoints": {"a": {"host": "x.com", "account": "12"}}, "default": "a"}"#,
                "endpoints.a.account",
            ),
            (
                r#"{"endpoints": {"a": {"host": "x.com"}}, "default": "b"}"#,
                "default \"b\"",
            ),
            (
                r#"{"endpoints": {"a": {"host": "x.com"}}, "rules": [{"sku": "S", "endpoint": "z"}], "default": "a"}"#,
                "rules[0].endpoint \"z\" is not one of the endpoints (a)",
            ),
            (
                r#"{"endpoints": {"a": {"host": "x.com"}}, "rules": [{"endpoint": "a"}], "default": "a"}"#,
                "rules[0] needs",
            ),
            (
                r#"{"endpoints": {"a": {"host": "x.com"}}, "rules": [{"sku": "*", "endpoint": "a"}], "default": "a"}"#,
                "rules[0].sku",
            ),
            (
                r#"{"endpoints": {"a": {"host": "x.com", "hots": 1}}, "default": "a"}"#,
                "unknown field `hots`",
            ),
        ];
        for (text, expected) in cases {
            let err = EndpointPlan::from_json(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn a_single_endpoint_serves_everyone() {
        let plan = EndpointPlan::single("one-ats.iot.us-east-1.amazonaws.com");
        let selection = plan.select(Some("ANY"), Some("eu-west-1"));
        assert_eq!(
            selection,
            Selection {
                host: "one-ats.iot.us-east-1.amazonaws.com".into(),
                rule: "default".into()
            }
        );
    }
}
