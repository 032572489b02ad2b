//! `infra/event-forwarder.yaml` (an OEM endpoint in another account of the stack's region) forwards
//! exactly the events the stack's own rules take: the same SQL as `template.yaml`'s rules, each sent
//! to the stack's `provisioning-events`, which reads the fields that SQL adds. The stack's presence
//! rule may skip the reconnects of owned devices with a lookup in its own table
//! (`NarrowPresenceRule`); the forwarder has no such lookup and forwards them all, which the
//! function answers `already_owned` as before: it is compared with the rules as they are without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use claim_tests::schema::template_path;
use serde_yaml::Value;

use super::template::rule_sql;

fn load(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn rules(template: &Value) -> Vec<&Value> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .values()
        .filter(|resource| resource["Type"].as_str() == Some("AWS::IoT::TopicRule"))
        .collect()
}

/// Each rule's SQL without the stack's optional lookup.
fn sql(rules: &[&Value]) -> BTreeSet<String> {
    rules.iter().map(|rule| rule_sql(rule).unfiltered).collect()
}

#[test]
fn the_forwarder_sends_what_the_stacks_rules_take_to_provisioning_events() {
    let stack_path = template_path();
    let forwarder_path = stack_path
        .parent()
        .expect("repository root")
        .join("infra/event-forwarder.yaml");
    let (stack, forwarder) = (load(&stack_path), load(&forwarder_path));
    let forwarded = rules(&forwarder);
    for rule in &forwarded {
        assert!(
            rule_sql(rule).narrowed.is_none(),
            "the forwarder cannot read the stack's table: {rule:?}"
        );
    }
    assert_eq!(sql(&forwarded), sql(&rules(&stack)));
    for rule in forwarded {
        let rule = &rule["Properties"]["TopicRulePayload"];
        let arn = &rule["Actions"][0]["Lambda"]["FunctionArn"];
        assert_eq!(
            serde_yaml::to_string(arn).unwrap().trim(),
            "!Ref ProvisioningEventsFunctionArn",
            "{rule:?}"
        );
        assert!(!rule["ErrorAction"]["Sqs"].is_null(), "{rule:?}: no dead-letter queue");
    }
}
