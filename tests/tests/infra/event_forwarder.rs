//! `infra/event-forwarder.yaml` (beside an OEM endpoint in another account or region) forwards
//! exactly the events the stack's own rules take: the same SQL as `template.yaml`'s rules plus the
//! two origin fields provisioning-events checks (`forwarded_from_account`, `forwarded_from_region`:
//! the forwarder's own account and region), each sent with the SQS action to the claim stack's queue,
//! with a role that may send there and nowhere else. The stack's presence rule may skip the
//! reconnects of owned devices with a lookup in its own table (`NarrowPresenceRule`); the forwarder
//! has no such lookup and forwards them all, which the function answers `already_owned` as before: it
//! is compared with the rules as they are without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use claim_tests::schema::template_path;
use serde_yaml::Value;

use super::template::{render, rule_sql};

/// What the forwarder's rules add to the stack's SQL, before `FROM`.
const ORIGIN: &str = ", '${AWS::AccountId}' AS forwarded_from_account, '${AWS::Region}' AS forwarded_from_region FROM ";

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

fn forwarder() -> Value {
    let path = template_path()
        .parent()
        .expect("repository root")
        .join("infra/event-forwarder.yaml");
    load(&path)
}

#[test]
fn the_forwarder_sends_what_the_stacks_rules_take_with_its_origin_to_the_stacks_queue() {
    let (stack, forwarder) = (load(&template_path()), forwarder());
    let forwarded = rules(&forwarder);
    let mut without_origin = BTreeSet::new();
    for rule in &forwarded {
        let payload = &rule["Properties"]["TopicRulePayload"];
        let sql = render(&payload["Sql"]);
        assert_eq!(sql.matches(ORIGIN).count(), 1, "the origin fields, once: {sql}");
        without_origin.insert(sql.replace(ORIGIN, " FROM "));
        let action = &payload["Actions"][0]["Sqs"];
        assert_eq!(render(&action["QueueUrl"]), "ref:ClaimStackQueueUrl", "{payload:?}");
        assert_eq!(render(&action["RoleArn"]), "ForwardingRole.Arn", "{payload:?}");
        assert_eq!(
            action["UseBase64"].as_bool(),
            Some(false),
            "the body is the event's JSON"
        );
        assert_eq!(payload["Actions"].as_sequence().map(Vec::len), Some(1), "{payload:?}");
        assert!(
            !payload["ErrorAction"]["Sqs"].is_null(),
            "{payload:?}: no dead-letter queue"
        );
    }
    let stack_sql: BTreeSet<String> = rules(&stack).iter().map(|rule| rule_sql(rule).unfiltered).collect();
    assert_eq!(without_origin, stack_sql);
}

#[test]
fn the_forwarding_role_may_send_to_the_stacks_queue_only() {
    let forwarder = forwarder();
    let role = &forwarder["Resources"]["ForwardingRole"]["Properties"];
    let trust = &role["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Principal"]["Service"].as_str(), Some("iot.amazonaws.com"));
    assert_eq!(
        render(&trust["Condition"]["StringEquals"]["aws:SourceAccount"]),
        "ref:AWS::AccountId"
    );
    let statements = role["Policies"][0]["PolicyDocument"]["Statement"]
        .as_sequence()
        .expect("statements");
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Action"].as_str(), Some("sqs:SendMessage"));
    // The ARN the role names, computed by the template's own intrinsics from a queue URL of the
    // claim stack's shape.
    let url = "https://sqs.eu-west-1.amazonaws.com/444455556666/claims-ForwardedEventsQueue-AbC";
    let Value::Tagged(sub) = &statements[0]["Resource"] else {
        panic!("the queue ARN is made from its URL with !Sub")
    };
    let parts = sub.value.as_sequence().expect("!Sub [template, variables]");
    let mut arn = parts[0]
        .as_str()
        .expect("the ARN template")
        .replace("${AWS::Partition}", "aws");
    for (name, expression) in parts[1].as_mapping().expect("variables") {
        let name = name.as_str().expect("a variable name");
        arn = arn.replace(&format!("${{{name}}}"), &evaluate(expression, url).as_string());
    }
    assert_eq!(
        arn,
        "arn:aws:sqs:eu-west-1:444455556666:claims-ForwardedEventsQueue-AbC"
    );
}

/// A string or a list of strings: what `!Ref`, `!Split` and `!Select` give.
enum Evaluated {
    One(String),
    Many(Vec<String>),
}

impl Evaluated {
    fn as_string(&self) -> String {
        match self {
            Evaluated::One(text) => text.clone(),
            Evaluated::Many(items) => panic!("a list where a string is needed: {items:?}"),
        }
    }
}

/// The intrinsics the forwarder uses on its one parameter, `ClaimStackQueueUrl` (= `url`).
fn evaluate(expression: &Value, url: &str) -> Evaluated {
    let Value::Tagged(tagged) = expression else {
        return Evaluated::One(expression.as_str().expect("a string").to_owned());
    };
    let arguments = || tagged.value.as_sequence().expect("arguments");
    match tagged.tag.to_string().as_str() {
        "!Ref" => {
            assert_eq!(tagged.value.as_str(), Some("ClaimStackQueueUrl"));
            Evaluated::One(url.to_owned())
        }
        "!Split" => {
            let (separator, text) = (
                arguments()[0].as_str().expect("separator"),
                evaluate(&arguments()[1], url),
            );
            Evaluated::Many(text.as_string().split(separator).map(str::to_owned).collect())
        }
        "!Select" => {
            let index = arguments()[0].as_u64().expect("an index") as usize;
            match evaluate(&arguments()[1], url) {
                Evaluated::Many(items) => Evaluated::One(items[index].clone()),
                Evaluated::One(text) => panic!("!Select on a string: {text}"),
            }
        }
        other => panic!("an intrinsic this test does not evaluate: {other}"),
    }
}
