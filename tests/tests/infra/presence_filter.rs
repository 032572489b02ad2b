//! The presence rule's narrowing (`NarrowPresenceRule`): its WHERE clause looks the device up with
//! `get_dynamodb` and drops the event only when the item reads as owned, not disabled and fully
//! recorded. Checked here: the lookup names the claims table, its key names and the device item's
//! key as the code writes them, with a role that may only read an item; and, on DynamoDB Local, that
//! for items the real store wrote in every state the filter drops exactly the presence events on
//! which `provisioning-events` would change nothing.
//!
//! AWS IoT's SQL engine cannot run here. What these tests assume of it, from its documentation
//! (iot-sql-functions, iot-sql-case): `get_dynamodb` returns the item as a JSON object (Undefined
//! when there is none), `regexp_matches` reads an object as its JSON text and returns Undefined for
//! Undefined, a `CASE` without a match and without `ELSE` is Undefined, `isUndefined` is a plain
//! boolean. The pattern is evaluated by [`Pattern`], a matcher for the small regex subset the
//! pattern may use (literals, `.`, classes, `*`, `^`, lookaheads), whose meaning is the same in
//! Java's engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, sync::Arc};

use aws_sdk_dynamodb::types::AttributeValue;
use claim_shared::{
    domain::{
        device::Provisioning,
        endpoints::EndpointPlan,
        history::Actor,
        ids::{ThingName, UserId},
        registry::NewDevice,
    },
    service::{ArrivalOutcome, ClaimRequest, ClaimService, ClaimSettings},
};
use claim_tests::{
    fixture::{LocalTable, T0},
    schema::template_path,
    ManualClock,
};
use serde_yaml::Value;

use super::template::{
    assert_trusted_by_this_accounts_iot, list, render, resources, role_statements, rule_sql, template,
};

/// The narrowed SQL of the presence rule, `${…}` unresolved.
fn narrowed_sql(template: &Value) -> String {
    let rule = &resources(template)["PresenceConnectedRule"];
    let (condition, sql) = rule_sql(rule).narrowed.expect("the presence rule has a narrowed form");
    assert_eq!(condition, "NarrowPresence");
    sql
}

/// The arguments of the first call of `function` in `sql`, split at its own commas (not those in
/// nested calls or quoted strings).
fn call_arguments(sql: &str, function: &str) -> Vec<String> {
    let start = sql.find(&format!("{function}(")).expect("the call") + function.len() + 1;
    let (mut depth, mut quoted, mut current, mut arguments) = (0, false, String::new(), Vec::new());
    for c in sql[start..].chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => {
                arguments.push(current.trim().to_owned());
                return arguments;
            }
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                arguments.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    panic!("{function}( is not closed in {sql}")
}

fn quoted(argument: &str) -> &str {
    argument
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("not a quoted literal: {argument}"))
}

/// A string constant of the store's key module, as the code defines it.
fn code_constant(name: &str) -> String {
    let path = template_path().with_file_name("shared/src/adapters/dynamodb/keys.rs");
    let source = std::fs::read_to_string(&path).unwrap();
    let definition = format!("const {name}: &str = \"");
    let start = source
        .find(&definition)
        .unwrap_or_else(|| panic!("{name} in {}", path.display()))
        + definition.len();
    source[start..].split('"').next().unwrap().to_owned()
}

#[test]
fn the_presence_lookup_reads_the_device_item_of_the_claims_table_with_a_read_only_role() {
    let template = template();
    assert_eq!(
        template["Parameters"]["NarrowPresenceRule"]["Default"].as_str(),
        Some("true")
    );
    let sql = narrowed_sql(&template);
    // AWS IoT stops a rule that calls get_dynamodb twice.
    assert_eq!(sql.matches("get_dynamodb(").count(), 1, "{sql}");
    let args = call_arguments(&sql, "get_dynamodb");
    assert_eq!(args.len(), 6, "{args:?}");

    // The claims table, with its own key names.
    assert_eq!(args[0], "'${ClaimsTable}'");
    let table = &resources(&template)["ClaimsTable"];
    assert_eq!(table["Type"].as_str(), Some("AWS::DynamoDB::Table"));
    let key = |kind: &str| {
        list(&table["Properties"]["KeySchema"])
            .into_iter()
            .find(|key| key["KeyType"].as_str() == Some(kind))
            .and_then(|key| key["AttributeName"].as_str())
            .unwrap()
            .to_owned()
    };
    assert_eq!(quoted(&args[1]), key("HASH"));
    assert_eq!(quoted(&args[3]), key("RANGE"));

    // The device item's key as the store writes it (keys.rs: device_pk, DEVICE_SK), for the thing
    // the function would name: thingName when the event has one, else the client id.
    let keys = template_path().with_file_name("shared/src/adapters/dynamodb/keys.rs");
    let keys = std::fs::read_to_string(keys).unwrap();
    assert!(
        keys.contains("format!(\"DEVICE#{thing}\")"),
        "device_pk changed: update the rule"
    );
    assert_eq!(
        args[2],
        "concat('DEVICE#', CASE isUndefined(thingName) WHEN true THEN topic(5) ELSE thingName END)"
    );
    assert_eq!(quoted(&args[4]), code_constant("DEVICE_SK"));

    // Its own role: trusted by AWS IoT for this account only, one action on the table only.
    assert_eq!(args[5], "'${PresenceLookupRole.Arn}'");
    let role = &resources(&template)["PresenceLookupRole"];
    assert_eq!(role["Condition"].as_str(), Some("NarrowPresence"));
    assert_trusted_by_this_accounts_iot(role);
    let statements = role_statements(role);
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0].actions, ["dynamodb:GetItem"]);
    assert_eq!(statements[0].resources, ["ClaimsTable.Arn"]);

    // The event passes unless the CASE matched: isUndefined of it, nothing else in the clause.
    let clause = sql.split_once(" WHERE ").unwrap().1;
    assert!(
        clause.starts_with("isUndefined(CASE regexp_matches(get_dynamodb("),
        "{clause}"
    );
    assert!(clause.ends_with("WHEN true THEN 'steady' END)"), "{clause}");
    let rule = &resources(&template)["PresenceConnectedRule"]["Properties"]["TopicRulePayload"];
    assert_eq!(rule["AwsIotSqlVersion"].as_str(), Some("2016-03-23"));
    assert_eq!(
        render(&rule["ErrorAction"]["Sqs"]["QueueUrl"]),
        "ref:EventsDeadLetterQueue"
    );
}

/// The regular expression `regexp_matches` gets.
fn rule_pattern() -> Pattern {
    let sql = narrowed_sql(&template());
    let args = call_arguments(&sql, "regexp_matches");
    assert_eq!(args.len(), 2, "{args:?}");
    Pattern::parse(quoted(&args[1]))
}

// ---- A matcher for the pattern's regex subset ------------------------------------------------------

#[derive(Debug, Clone)]
enum Atom {
    /// `.`: any character but a line break.
    Any,
    Char(char),
    /// `[…]` or `[^…]`: single characters only.
    Class {
        negated: bool,
        chars: Vec<char>,
    },
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Any => c != '\n' && c != '\r',
            Atom::Char(want) => c == *want,
            Atom::Class { negated, chars } => chars.contains(&c) != *negated,
        }
    }
}

#[derive(Debug, Clone)]
enum Node {
    Start,
    Lookahead(Vec<Node>),
    Atom { atom: Atom, star: bool },
}

/// A regular expression of the subset `^`, `(?=…)`, `.`, `[…]`, `[^…]`, `*` and literal
/// characters. Anything else (escapes, alternation, groups, other quantifiers) is refused, so the
/// rule's pattern stays within what this matcher and Java's engine read alike.
#[derive(Debug, Clone)]
struct Pattern(Vec<Node>);

impl Pattern {
    fn parse(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let (nodes, end) = Self::sequence(&chars, 0);
        assert_eq!(end, chars.len(), "unbalanced ) in {text}");
        Pattern(nodes)
    }

    fn sequence(chars: &[char], mut at: usize) -> (Vec<Node>, usize) {
        let mut nodes = Vec::new();
        while at < chars.len() {
            let atom = match chars[at] {
                ')' => return (nodes, at),
                '^' => {
                    nodes.push(Node::Start);
                    at += 1;
                    continue;
                }
                '(' => {
                    assert_eq!(chars.get(at + 1..at + 3), Some(&['?', '='][..]), "only (?= groups");
                    let (inner, end) = Self::sequence(chars, at + 3);
                    assert_eq!(chars.get(end), Some(&')'), "unclosed (?=");
                    nodes.push(Node::Lookahead(inner));
                    at = end + 1;
                    continue;
                }
                '[' => {
                    let close = chars[at..].iter().position(|c| *c == ']').expect("unclosed [") + at;
                    let mut body = &chars[at + 1..close];
                    let negated = body.first() == Some(&'^');
                    if negated {
                        body = &body[1..];
                    }
                    assert!(!body.contains(&'\\') && !body.contains(&'-'), "plain classes only");
                    at = close + 1;
                    Atom::Class {
                        negated,
                        chars: body.to_vec(),
                    }
                }
                '.' => {
                    at += 1;
                    Atom::Any
                }
                c @ ('\\' | '+' | '?' | '{' | '}' | '|' | '$' | '*' | ']') => {
                    panic!("{c} is outside the pattern subset")
                }
                c => {
                    at += 1;
                    Atom::Char(c)
                }
            };
            let star = chars.get(at) == Some(&'*');
            if star {
                at += 1;
            }
            nodes.push(Node::Atom { atom, star });
        }
        (nodes, at)
    }

    /// `regexp_matches`: whether the text contains a match.
    fn is_found_in(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        (0..=chars.len()).any(|start| Self::matches_at(&self.0, &chars, start))
    }

    fn matches_at(nodes: &[Node], text: &[char], at: usize) -> bool {
        let Some((node, rest)) = nodes.split_first() else {
            return true;
        };
        match node {
            Node::Start => at == 0 && Self::matches_at(rest, text, at),
            Node::Lookahead(inner) => Self::matches_at(inner, text, at) && Self::matches_at(rest, text, at),
            Node::Atom { atom, star: false } => {
                text.get(at).is_some_and(|c| atom.matches(*c)) && Self::matches_at(rest, text, at + 1)
            }
            Node::Atom { atom, star: true } => {
                let longest = text[at..].iter().take_while(|c| atom.matches(**c)).count();
                (0..=longest).rev().any(|n| Self::matches_at(rest, text, at + n))
            }
        }
    }
}

#[test]
fn the_matcher_reads_the_subset_as_regular_expressions_do() {
    let p = |pattern: &str, text: &str| Pattern::parse(pattern).is_found_in(text);
    assert!(p("ab*c", "xxacxx") && p("ab*c", "abbbc") && !p("ab*c", "abd"));
    assert!(p("^a", "ab") && !p("^b", "ab"));
    assert!(p("a.c", "abc") && !p("a.c", "a\nc"));
    assert!(p("[{]x", "{x") && p("[^}]*y", "abcy") && !p("^[^}]*y", "a}y"));
    // Lookaheads: every condition, in any order, at the position they start.
    let both = "^(?=.*one)(?=.*two)";
    assert!(p(both, "two and one") && p(both, "one, two") && !p(both, "one only"));
    assert!(p("x(?=[^}]*b)(?=[^}]*a)", "x ab}") && !p("x(?=[^}]*b)", "x a}b"));
}

#[test]
fn the_rule_pattern_stays_within_the_subset() {
    // Parsing refuses anything outside it.
    let pattern = rule_pattern();
    assert!(!pattern.0.is_empty());
    let refused = std::panic::catch_unwind(|| Pattern::parse("a|b"));
    assert!(refused.is_err());
}

// ---- The filter against the function, on items the real store wrote ----------------------------

/// A DynamoDB item as AWS IoT hands `get_dynamodb`'s result to the SQL: plain JSON.
fn plain_json(value: &AttributeValue) -> serde_json::Value {
    match value {
        AttributeValue::S(text) => serde_json::Value::String(text.clone()),
        AttributeValue::N(number) => serde_json::from_str(number).unwrap(),
        AttributeValue::Bool(flag) => serde_json::Value::Bool(*flag),
        AttributeValue::Null(_) => serde_json::Value::Null,
        AttributeValue::M(map) => item_json(map),
        AttributeValue::L(items) => serde_json::Value::Array(items.iter().map(plain_json).collect()),
        AttributeValue::Ss(items) => serde_json::json!(items),
        other => panic!("unexpected attribute {other:?}"),
    }
}

fn item_json(item: &HashMap<String, AttributeValue>) -> serde_json::Value {
    serde_json::Value::Object(item.iter().map(|(k, v)| (k.clone(), plain_json(v))).collect())
}

/// The item's JSON text in the ways a serializer may write it: compact, with spaces after `:` and
/// `,`, and with the members in reverse order.
fn renderings(item: &serde_json::Value) -> Vec<String> {
    fn reversed(value: &serde_json::Value) -> String {
        match value {
            serde_json::Value::Object(map) => {
                let members: Vec<String> = map
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), reversed(v)))
                    .collect();
                format!("{{{}}}", members.join(","))
            }
            other => other.to_string(),
        }
    }
    let compact = item.to_string();
    let spaced = compact.replace("\":", "\": ").replace(",\"", ", \"");
    vec![compact, spaced, reversed(item)]
}

/// What the rule does with a presence event of the device whose item (if any) `item` is.
fn rule_passes(pattern: &Pattern, item: Option<&HashMap<String, AttributeValue>>) -> bool {
    let Some(item) = item else {
        // get_dynamodb: Undefined; regexp_matches: Undefined; CASE: Undefined; isUndefined: true.
        return true;
    };
    let verdicts: Vec<bool> = renderings(&item_json(item))
        .iter()
        .map(|text| !pattern.is_found_in(text))
        .collect();
    assert!(
        verdicts.iter().all(|v| *v == verdicts[0]),
        "the verdict depends on how the item is written: {item:?}"
    );
    verdicts[0]
}

const ACCOUNT: &str = "111122223333";
const REGION: &str = "eu-west-1";

fn thing(name: &str) -> ThingName {
    ThingName::parse(name).unwrap()
}

/// What the function passes on for a presence event of a module connecting with its certificate
/// (`principalIdentifier`), in this account and region.
fn presence_details() -> Provisioning {
    Provisioning {
        certificate_id: Some("ab".repeat(32)),
        account_id: Some(ACCOUNT.into()),
        region: Some(REGION.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_drops_exactly_the_presence_events_the_function_would_change_nothing_for() {
    let pattern = rule_pattern();
    let template = template();
    let sql = narrowed_sql(&template);
    let args = call_arguments(&sql, "get_dynamodb");
    let (pk_name, sk_name, sk_value) = (quoted(&args[1]), quoted(&args[3]), quoted(&args[4]));
    let table = LocalTable::fresh().await;
    let service = ClaimService::new(table.store(), ManualClock::at(T0), ClaimSettings::default());
    let import = |name: &'static str| {
        let service = &service;
        async move {
            let new = NewDevice {
                thing_name: thing(name),
                vendor: "espressif".into(),
                sku: Some("KETTLE-2 \"holder_kind\":\"owned\"".into()),
                code_hash: None,
                allow_thing_name: None,
                code_as_thing_name: None,
            };
            service.import(&new, Actor::Operator("factory".into())).await.unwrap();
        }
    };
    let claim = |name: &'static str| {
        let service = &service;
        async move {
            let request = ClaimRequest {
                user: UserId::parse("alice").unwrap(),
                code: thing(name).into(),
                endpoints: Arc::new(EndpointPlan::single("oem-ats.iot.eu-west-1.amazonaws.com")),
                region_hint: None,
                idempotency_key: None,
            };
            service.claim(&request).await.unwrap();
        }
    };
    // Every state a device item can be in when its module connects.
    import("free").await;
    import("reserved").await;
    claim("reserved").await;
    // Completed by JITP's thing-created event: no certificate id yet.
    import("owned-no-cert").await;
    claim("owned-no-cert").await;
    let thing_created = Provisioning {
        certificate_id: None,
        account_id: Some(ACCOUNT.into()),
        region: Some(REGION.into()),
    };
    service
        .record_arrival(&thing("owned-no-cert"), &thing_created)
        .await
        .unwrap();
    // Completed by a connection: everything recorded.
    for name in ["owned", "owned-disabled", "owned-enabled-again", "released"] {
        import(name).await;
        claim(name).await;
        service.record_arrival(&thing(name), &presence_details()).await.unwrap();
    }
    service
        .set_disabled(&thing("owned-disabled"), true, "ops", None)
        .await
        .unwrap();
    service
        .set_disabled(&thing("owned-enabled-again"), true, "ops", None)
        .await
        .unwrap();
    service
        .set_disabled(&thing("owned-enabled-again"), false, "ops", None)
        .await
        .unwrap();
    service
        .release(&UserId::parse("alice").unwrap(), &thing("released"))
        .await
        .unwrap();
    import("disabled-free").await;
    service
        .set_disabled(&thing("disabled-free"), true, "ops", None)
        .await
        .unwrap();

    let mut dropped = Vec::new();
    for name in [
        "never-imported",
        "free",
        "reserved",
        "owned-no-cert",
        "owned",
        "owned-disabled",
        "owned-enabled-again",
        "released",
        "disabled-free",
    ] {
        // The rule's lookup: its key names and values, on the table the store wrote.
        let item = table
            .client
            .get_item()
            .table_name(&table.name)
            .key(pk_name, AttributeValue::S(format!("DEVICE#{name}")))
            .key(sk_name, AttributeValue::S(sk_value.to_owned()))
            .send()
            .await
            .unwrap()
            .item;
        let passes = rule_passes(&pattern, item.as_ref());
        let before = item.as_ref().map(item_json);
        // The function on the same event, and whether it changed anything.
        let outcome = service.record_arrival(&thing(name), &presence_details()).await.unwrap();
        let after = table
            .client
            .get_item()
            .table_name(&table.name)
            .key(pk_name, AttributeValue::S(format!("DEVICE#{name}")))
            .key(sk_name, AttributeValue::S(sk_value.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .as_ref()
            .map(item_json);
        let ignored = outcome == ArrivalOutcome::AlreadyOwned;
        assert_eq!(
            passes,
            !ignored,
            "{name}: the rule {} an event the function answers {outcome:?}",
            if passes { "passes" } else { "drops" }
        );
        if ignored {
            assert_eq!(before, after, "{name}: already_owned changed the item");
            dropped.push(name);
        }
    }
    assert_eq!(dropped, ["owned", "owned-enabled-again"]);
}
