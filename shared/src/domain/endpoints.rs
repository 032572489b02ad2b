//! Endpoint selection: which of the OEM's AWS IoT endpoints (account, region, data endpoint host) a
//! claimed device is sent to. The rules are checked in order and the first that matches decides;
//! without a match the default does. The decision and the rule that made it are kept on the claim.
//!
//! Configuration (`OEM_ENDPOINTS`, JSON; checked once at cold start):
//!
//! ```json
//! {"endpoints": {"us": {"host": "abc-ats.iot.us-east-1.amazonaws.com", "account": "111122223333", "region": "us-east-1"},
//!                "pro": {"host": "def-ats.iot.us-east-1.amazonaws.com", "account": "444455556666", "events": "forwarded"}},
//!  "rules": [{"sku": "PRO-EU-*", "endpoint": "pro"}, {"region": "eu-*", "endpoint": "pro"}],
//!  "default": "us"}
//! ```
//!
//! A rule names `region` (the app's hint), `sku` (the device's, from the import), or both; a trailing
//! `*` matches any suffix.
//!
//! A claim completes when AWS IoT reports the device's arrival, and those events are raised in the
//! endpoint's own account and region, where only that account's topic rules see them. So an endpoint
//! outside the stack's account or region is refused at cold start ([`EndpointPlan::check_events_reach`])
//! unless it says `"events": "forwarded"`: the OEM has set up forwarding to this stack
//! (infra/README.md). The region is the entry's `region`, else the one in an AWS IoT host name
//! (`<prefix>-ats.iot.<region>.amazonaws.com`); an entry with neither (local placeholder hosts,
//! custom domains) cannot be checked and is taken as it is.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::forwarding::{is_account_id, Forwarders};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OemEndpoint {
    /// The AWS IoT data endpoint host the module is sent to.
    pub host: String,
    /// The AWS account the things will live in; checked against the stack's at cold start.
    #[serde(default)]
    pub account: Option<String>,
    /// The endpoint's region; checked against the host's and the stack's at cold start.
    #[serde(default)]
    pub region: Option<String>,
    /// How this endpoint's AWS IoT events reach the stack.
    #[serde(default)]
    pub events: EventRoute,
}

/// How an endpoint's AWS IoT events (thing created, device connected) reach `provisioning-events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventRoute {
    /// Through the stack's own topic rules: the endpoint is in the stack's account and region.
    #[default]
    Direct,
    /// The OEM forwards them from the endpoint's account or region (infra/README.md). Declared, not
    /// verified: the stack cannot see the other account's rules.
    Forwarded,
}

/// Where the stack runs: the account and region whose AWS IoT events its topic rules receive.
/// `None` where it is not known (a local run without `STACK_ACCOUNT_ID`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackLocation<'a> {
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
    /// The accounts whose forwarded events the stack takes (`None`: none besides its own).
    pub forwarders: Option<&'a Forwarders>,
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
    /// Built from `OEM_ENDPOINT` (one unnamed endpoint) rather than `OEM_ENDPOINTS`; only changes
    /// how errors name the endpoint.
    single: bool,
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

/// An AWS region name such as `eu-west-1` or `us-gov-west-1`.
pub fn is_region_name(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|part| !part.is_empty())
        && parts[..parts.len() - 1]
            .iter()
            .all(|part| part.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// The region in an AWS IoT endpoint host (`<prefix>-ats.iot.<region>.amazonaws.com`, also
/// `iot-fips` and `.amazonaws.com.cn`); `None` for any other host.
pub fn host_region(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let (prefix, region) = rest.rsplit_once('.')?;
    let (name, service) = prefix.rsplit_once('.')?;
    (!name.is_empty() && matches!(service, "iot" | "iot-fips") && is_region_name(region)).then(|| region.to_owned())
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
            events: EventRoute::Direct,
        };
        Self {
            endpoints: BTreeMap::from([("default".to_owned(), endpoint)]),
            rules: Vec::new(),
            default: "default".to_owned(),
            single: true,
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
                if !is_account_id(account) {
                    return Err(format!(
                        "endpoints.{name}.account {account:?} is not a 12-digit AWS account id"
                    ));
                }
            }
            if let Some(region) = &endpoint.region {
                if !is_region_name(region) {
                    return Err(format!(
                        "endpoints.{name}.region {region:?} is not an AWS region name such as eu-west-1"
                    ));
                }
                if let Some(host_region) = host_region(&endpoint.host).filter(|r| r != region) {
                    return Err(format!(
                        "endpoints.{name}.region {region:?} does not match the region of its host {:?} ({host_region})",
                        endpoint.host
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
            single: false,
        })
    }

    /// Refuses an endpoint whose AWS IoT events would not reach the stack's topic rules: one in
    /// another account or region than `stack`, or one naming an account or region the stack's own
    /// cannot be compared with; unless the entry says `"events": "forwarded"`. The error names the
    /// entry.
    pub fn check_events_reach(&self, stack: StackLocation<'_>) -> Result<(), String> {
        for (name, endpoint) in &self.endpoints {
            if endpoint.events == EventRoute::Forwarded {
                // Forwarded events reach the stack from its own account (any region) and from the
                // accounts allowed to forward; an entry that names another account must be one.
                match endpoint.account.as_deref() {
                    Some(account)
                        if stack.account != Some(account) && !stack.forwarders.is_some_and(|f| f.admits(account)) =>
                    {
                        return Err(format!(
                            "endpoint {name:?} is in account {account}, which may not forward events to this stack: add it to the template parameter ForwardingAccountIds (FORWARDING_ACCOUNT_IDS) so that its forwarder's events are taken (infra/README.md)"
                        ));
                    }
                    _ => continue,
                }
            }
            let region = endpoint.region.clone().or_else(|| host_region(&endpoint.host));
            let checks = [
                ("region", region.as_deref(), stack.region, "AWS_REGION"),
                (
                    "account",
                    endpoint.account.as_deref(),
                    stack.account,
                    "STACK_ACCOUNT_ID",
                ),
            ];
            for (what, theirs, ours, variable) in checks {
                let problem = match (theirs, ours) {
                    (Some(theirs), Some(ours)) if theirs != ours => format!(
                        "is in {what} {theirs} but this stack runs in {ours}: its devices' IoT events never reach this stack"
                    ),
                    (Some(theirs), None) => format!(
                        "is in {what} {theirs} but this stack's {what} is not known ({variable} is not set): whether its devices' IoT events reach this stack cannot be checked"
                    ),
                    _ => continue,
                };
                return Err(if self.single {
                    format!(
                        "{:?} {problem}; deploy the stack in the endpoint's account and region, or use OEM_ENDPOINTS with \"events\": \"forwarded\" on the entry once its events are forwarded (infra/README.md)",
                        endpoint.host
                    )
                } else {
                    format!(
                        "endpoint {name:?} {problem}; deploy the event forwarding (infra/README.md) and set \"events\": \"forwarded\" on the entry"
                    )
                });
            }
        }
        Ok(())
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
            (
                r#"{"endpoints": {"a": {"host": "x.com", "region": "euwest1"}}, "default": "a"}"#,
                r#"endpoints.a.region "euwest1" is not an AWS region name such as eu-west-1"#,
            ),
            (
                r#"{"endpoints": {"a": {"host": "x-ats.iot.eu-west-1.amazonaws.com", "region": "us-east-1"}}, "default": "a"}"#,
                r#"endpoints.a.region "us-east-1" does not match the region of its host "x-ats.iot.eu-west-1.amazonaws.com" (eu-west-1)"#,
            ),
            (
                r#"{"endpoints": {"a": {"host": "x.com", "events": "mirrored"}}, "default": "a"}"#,
                "unknown variant `mirrored`, expected `direct` or `forwarded`",
            ),
        ];
        for (text, expected) in cases {
            let err = EndpointPlan::from_json(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    const STACK: StackLocation<'static> = StackLocation {
        account: Some("111122223333"),
        region: Some("us-east-1"),
        forwarders: None,
    };

    fn reach(text: &str, stack: StackLocation<'_>) -> Result<(), String> {
        EndpointPlan::from_json(text)?.check_events_reach(stack)
    }

    #[test]
    fn the_region_comes_from_the_entry_or_an_aws_iot_host() {
        for (host, region) in [
            ("abc-ats.iot.eu-west-1.amazonaws.com", "eu-west-1"),
            ("ABC-ats.IOT.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
            ("abc-ats.iot.cn-north-1.amazonaws.com.cn", "cn-north-1"),
            ("data.iot-fips.us-east-1.amazonaws.com", "us-east-1"),
        ] {
            assert_eq!(host_region(host).as_deref(), Some(region), "{host}");
        }
        for other in [
            "iot.example.com",
            "iot.eu-west-1.amazonaws.com",
            "abc.s3.eu-west-1.amazonaws.com",
            "x.com",
        ] {
            assert_eq!(host_region(other), None, "{other}");
        }
    }

    #[test]
    fn an_endpoint_in_another_region_or_account_is_refused_naming_it() {
        let cases = [
            (
                r#"{"endpoints": {"us": {"host": "a-ats.iot.us-east-1.amazonaws.com"}, "eu": {"host": "b-ats.iot.eu-west-1.amazonaws.com"}}, "default": "us"}"#,
                STACK,
                r#"endpoint "eu" is in region eu-west-1 but this stack runs in us-east-1: its devices' IoT events never reach this stack; deploy the event forwarding (infra/README.md) and set "events": "forwarded" on the entry"#,
            ),
            (
                r#"{"endpoints": {"eu": {"host": "iot.example.com", "region": "eu-west-1"}}, "default": "eu"}"#,
                STACK,
                r#"endpoint "eu" is in region eu-west-1 but this stack runs in us-east-1"#,
            ),
            (
                r#"{"endpoints": {"b": {"host": "a-ats.iot.us-east-1.amazonaws.com", "account": "444455556666"}}, "default": "b"}"#,
                STACK,
                r#"endpoint "b" is in account 444455556666 but this stack runs in 111122223333: its devices' IoT events never reach this stack; deploy the event forwarding"#,
            ),
            (
                r#"{"endpoints": {"b": {"host": "iot.example.com", "account": "444455556666"}}, "default": "b"}"#,
                StackLocation { account: None, ..STACK },
                r#"endpoint "b" is in account 444455556666 but this stack's account is not known (STACK_ACCOUNT_ID is not set): whether its devices' IoT events reach this stack cannot be checked; deploy"#,
            ),
            (
                r#"{"endpoints": {"b": {"host": "a-ats.iot.us-east-1.amazonaws.com"}}, "default": "b"}"#,
                StackLocation { region: None, ..STACK },
                r#"endpoint "b" is in region us-east-1 but this stack's region is not known (AWS_REGION is not set)"#,
            ),
        ];
        for (text, stack, expected) in cases {
            let err = reach(text, stack).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn forwarded_same_place_and_unplaced_endpoints_are_accepted() {
        let forwarded = r#"{"endpoints": {
            "us": {"host": "a-ats.iot.us-east-1.amazonaws.com", "account": "111122223333", "region": "us-east-1"},
            "eu": {"host": "b-ats.iot.eu-west-1.amazonaws.com", "account": "444455556666", "events": "forwarded"}},
            "default": "us"}"#;
        let forwarders = Forwarders::parse(Some("111122223333"), "444455556666").unwrap_or_default();
        let allowed = StackLocation {
            forwarders: Some(&forwarders),
            ..STACK
        };
        assert_eq!(reach(forwarded, allowed), Ok(()));
        // Its own account's forwarders (other regions) need no list.
        let own = r#"{"endpoints": {"eu": {"host": "b-ats.iot.eu-west-1.amazonaws.com", "account": "111122223333", "events": "forwarded"}}, "default": "eu"}"#;
        assert_eq!(reach(own, STACK), Ok(()));
        // A host that is not AWS-shaped and names no region or account cannot be checked.
        let unplaced = r#"{"endpoints": {"x": {"host": "iot.example.com"}}, "default": "x"}"#;
        assert_eq!(reach(unplaced, StackLocation::default()), Ok(()));
        let explicit = r#"{"endpoints": {"x": {"host": "a-ats.iot.us-east-1.amazonaws.com", "events": "direct"}}, "default": "x"}"#;
        assert_eq!(reach(explicit, STACK), Ok(()));
    }

    #[test]
    fn a_forwarded_endpoint_in_an_account_not_allowed_to_forward_is_refused_naming_it() {
        let plan = r#"{"endpoints": {"us": {"host": "a-ats.iot.us-east-1.amazonaws.com"},
            "eu": {"host": "b-ats.iot.eu-west-1.amazonaws.com", "account": "444455556666", "events": "forwarded"}},
            "default": "us"}"#;
        let others = Forwarders::parse(Some("111122223333"), "777788889999").unwrap_or_default();
        for forwarders in [None, Some(&others)] {
            let err = reach(plan, StackLocation { forwarders, ..STACK }).unwrap_err();
            assert_eq!(
                err,
                r#"endpoint "eu" is in account 444455556666, which may not forward events to this stack: add it to the template parameter ForwardingAccountIds (FORWARDING_ACCOUNT_IDS) so that its forwarder's events are taken (infra/README.md)"#
            );
        }
    }

    #[test]
    fn a_single_endpoint_in_another_region_is_refused_too() {
        let plan = EndpointPlan::single("one-ats.iot.eu-west-1.amazonaws.com");
        let err = plan.check_events_reach(STACK).unwrap_err();
        assert_eq!(
            err,
            r#""one-ats.iot.eu-west-1.amazonaws.com" is in region eu-west-1 but this stack runs in us-east-1: its devices' IoT events never reach this stack; deploy the stack in the endpoint's account and region, or use OEM_ENDPOINTS with "events": "forwarded" on the entry once its events are forwarded (infra/README.md)"#
        );
        assert_eq!(
            EndpointPlan::single("one-ats.iot.us-east-1.amazonaws.com").check_events_reach(STACK),
            Ok(())
        );
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
