//! Events forwarded from an OEM endpoint in another account or region.
//!
//! AWS IoT raises a device's arrival events in the account and region of the endpoint it connects
//! to. For an endpoint elsewhere, the OEM deploys `infra/event-forwarder.yaml` beside it: its topic
//! rules send the same events, plus where they come from ([`Origin`]), to this stack's forwarded
//! events queue. Who may send there is the stack's [`Forwarders`]: its own account (other regions)
//! and the accounts listed in `FORWARDING_ACCOUNT_IDS` (template parameter `ForwardingAccountIds`),
//! enforced twice: by the queue's policy on AWS, and by `provisioning-events` on every event.

use std::collections::BTreeSet;

use serde_json::Value;

use super::endpoints::is_region_name;

/// A 12-digit AWS account id.
pub fn is_account_id(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

/// The accounts whose forwarders this stack takes events from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarders {
    /// The stack's own account (`None` where it is not known: a local run without `STACK_ACCOUNT_ID`).
    stack_account: Option<String>,
    /// The other accounts (`FORWARDING_ACCOUNT_IDS`).
    accounts: BTreeSet<String>,
}

impl Forwarders {
    /// `list` is comma-separated account ids; blanks around them and an empty list are fine.
    pub fn parse(stack_account: Option<&str>, list: &str) -> Result<Self, String> {
        let mut accounts = BTreeSet::new();
        for account in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if !is_account_id(account) {
                return Err(format!(
                    "FORWARDING_ACCOUNT_IDS: {account:?} is not a 12-digit AWS account id"
                ));
            }
            accounts.insert(account.to_owned());
        }
        Ok(Self {
            stack_account: stack_account.filter(|a| !a.is_empty()).map(str::to_owned),
            accounts,
        })
    }

    /// Whether events forwarded from `account` are taken: the stack's own account or a listed one.
    pub fn admits(&self, account: &str) -> bool {
        self.stack_account.as_deref() == Some(account) || self.accounts.contains(account)
    }

    /// Whether `account` is this stack's own.
    pub fn is_stack_account(&self, account: &str) -> bool {
        self.stack_account.as_deref() == Some(account)
    }
}

/// Where a forwarded event comes from, as the forwarder's rules state it: the account and region of
/// the endpoint the device connected to (`forwarded_from_account`, `forwarded_from_region`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub account: String,
    pub region: String,
}

/// Why a forwarded event is refused. Short fixed texts (`reason`) that never quote the event, plus
/// the account where it is one (account ids are not secret; they say whose forwarder to look at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No usable `forwarded_from_account` / `forwarded_from_region`: not sent by a forwarder.
    NoOrigin,
    /// From an account that may not forward to this stack.
    AccountNotAllowed(String),
    /// The event names another account than its forwarder says it comes from.
    AccountMismatch(String),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoOrigin => "no_origin",
            Refusal::AccountNotAllowed(_) => "account_not_allowed",
            Refusal::AccountMismatch(_) => "account_mismatch",
        }
    }

    pub fn account(&self) -> Option<&str> {
        match self {
            Refusal::NoOrigin => None,
            Refusal::AccountNotAllowed(account) | Refusal::AccountMismatch(account) => Some(account),
        }
    }
}

impl Origin {
    /// The origin of a forwarded event, if `forwarders` take events from there. A thing event names
    /// its own account (`accountId`); it must be the forwarder's.
    pub fn of(event: &Value, forwarders: &Forwarders) -> Result<Origin, Refusal> {
        let field = |name: &str| event.get(name).and_then(Value::as_str);
        let (Some(account), Some(region)) = (field("forwarded_from_account"), field("forwarded_from_region")) else {
            return Err(Refusal::NoOrigin);
        };
        if !is_account_id(account) || !is_region_name(region) {
            return Err(Refusal::NoOrigin);
        }
        if !forwarders.admits(account) {
            return Err(Refusal::AccountNotAllowed(account.to_owned()));
        }
        if field("accountId").is_some_and(|named| named != account) {
            return Err(Refusal::AccountMismatch(account.to_owned()));
        }
        Ok(Origin {
            account: account.to_owned(),
            region: region.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn forwarders() -> Forwarders {
        Forwarders::parse(Some("111122223333"), " 444455556666, ,777788889999").unwrap_or_default()
    }

    #[test]
    fn the_list_takes_account_ids_only() {
        assert!(forwarders().admits("444455556666"));
        assert!(forwarders().admits("777788889999"));
        assert!(
            forwarders().admits("111122223333"),
            "the stack's own account, other regions"
        );
        assert!(!forwarders().admits("999999999999"));
        assert_eq!(Forwarders::parse(None, ""), Ok(Forwarders::default()));
        assert!(!Forwarders::default().admits("111122223333"));
        assert_eq!(
            Forwarders::parse(None, "4444-5555-6666"),
            Err(r#"FORWARDING_ACCOUNT_IDS: "4444-5555-6666" is not a 12-digit AWS account id"#.to_owned())
        );
    }

    #[test]
    fn an_origin_is_an_allowed_account_and_a_region() {
        let event = |account: Value, region: Value| json!({"forwarded_from_account": account, "forwarded_from_region": region, "eventType": "connected"});
        assert_eq!(
            Origin::of(&event(json!("444455556666"), json!("eu-west-1")), &forwarders()),
            Ok(Origin {
                account: "444455556666".into(),
                region: "eu-west-1".into()
            })
        );
        for (account, region) in [
            (json!(null), json!("eu-west-1")),
            (json!("444455556666"), json!(null)),
            (json!(444455556666_u64), json!("eu-west-1")),
            (json!("44445555666"), json!("eu-west-1")),
            (json!("444455556666"), json!("Europe")),
        ] {
            assert_eq!(
                Origin::of(&event(account.clone(), region.clone()), &forwarders()),
                Err(Refusal::NoOrigin),
                "{account} {region}"
            );
        }
        let refused = Origin::of(&event(json!("999999999999"), json!("eu-west-1")), &forwarders());
        assert_eq!(refused, Err(Refusal::AccountNotAllowed("999999999999".into())));
    }

    #[test]
    fn a_thing_event_must_name_its_forwarders_account() {
        let event = json!({"forwarded_from_account": "444455556666", "forwarded_from_region": "eu-west-1",
            "eventType": "THING_EVENT", "accountId": "777788889999"});
        let refused = Origin::of(&event, &forwarders()).unwrap_err();
        assert_eq!(
            (refused.reason(), refused.account()),
            ("account_mismatch", Some("444455556666"))
        );
    }
}
