//! `template.yaml` read as data: least privilege per function, nothing deployed that the code does
//! not expect (environment, binaries), and the pieces an OEM deployment cannot work without.
//! The table definition needs no check here: the local stack and the tests create their tables from
//! this same template (`claim_tests::schema`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use claim_tests::schema::template_path;
use serde_yaml::{value::TaggedValue, Mapping, Value};

pub(crate) fn template() -> Value {
    let text = std::fs::read_to_string(template_path()).expect("template.yaml");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

pub(crate) fn resources(template: &Value) -> &Mapping {
    template["Resources"].as_mapping().expect("Resources")
}

pub(crate) fn of_type<'a>(template: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    resources(template)
        .iter()
        .filter(|(_, resource)| resource["Type"].as_str() == Some(kind))
        .map(|(name, resource)| (name.as_str().expect("logical id"), resource))
        .collect()
}

/// A scalar or a list of scalars as a list.
/// The items of a list (a single value is a list of one); `!If [condition, a, b]` is both branches.
pub(crate) fn list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().flat_map(list).collect(),
        Value::Tagged(tagged) if tagged.tag == "!If" => match &tagged.value {
            Value::Sequence(parts) if parts.len() == 3 => parts[1..].iter().flat_map(list).collect(),
            _ => vec![value],
        },
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// A resource expression in a form tests can compare: `!GetAtt X.Arn` → `X.Arn`, `!Ref X` → `ref:X`,
/// `!Sub "…"` → the string, a literal → itself.
pub(crate) fn render(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Tagged(tagged) => {
            let TaggedValue { tag, value } = tagged.as_ref();
            let inner = value
                .as_str()
                .unwrap_or_else(|| panic!("{tag} with a non-string argument: {value:?}"));
            match tag.to_string().as_str() {
                "!GetAtt" => inner.to_owned(),
                "!Ref" => format!("ref:{inner}"),
                "!Sub" => inner.to_owned(),
                other => panic!("unexpected intrinsic {other} in a policy resource"),
            }
        }
        other => panic!("unexpected policy resource {other:?}"),
    }
}

/// `role` is assumable by AWS IoT on behalf of this account only (its first trust statement).
pub(crate) fn assert_trusted_by_this_accounts_iot(role: &Value) {
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Principal"]["Service"].as_str(), Some("iot.amazonaws.com"));
    assert_eq!(
        render(&trust["Condition"]["StringEquals"]["aws:SourceAccount"]),
        "ref:AWS::AccountId"
    );
}

#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub(crate) sid: String,
    pub(crate) actions: Vec<String>,
    pub(crate) resources: Vec<String>,
}

pub(crate) fn role_statements(role: &Value) -> Vec<Statement> {
    let mut statements = Vec::new();
    for policy in list(&role["Properties"]["Policies"]) {
        for statement in list(&policy["PolicyDocument"]["Statement"]) {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{statement:?}");
            assert!(
                statement["NotAction"].is_null() && statement["NotResource"].is_null(),
                "{statement:?}"
            );
            statements.push(Statement {
                sid: statement["Sid"].as_str().unwrap_or("").to_owned(),
                actions: list(&statement["Action"]).into_iter().map(render).collect(),
                resources: list(&statement["Resource"]).into_iter().map(render).collect(),
            });
        }
    }
    statements
}

/// Function logical id → the logical id of its role (`Role: !GetAtt <Role>.Arn`).
fn function_roles(template: &Value) -> BTreeMap<String, String> {
    of_type(template, "AWS::Serverless::Function")
        .into_iter()
        .map(|(name, function)| {
            let role = render(&function["Properties"]["Role"]);
            let role = role
                .strip_suffix(".Arn")
                .unwrap_or_else(|| panic!("{name}: Role must be !GetAtt <role>.Arn, got {role}"));
            (name.to_owned(), role.to_owned())
        })
        .collect()
}

const SECRETS: &str =
    "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ClaimThingSecretPrefix}*";
const LABEL_CODE_KEY: &str = "ref:LabelCodeKeySecret";
const CONFIG_TOPICS: &str = "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:topic/*/expresslink_config";
const CERTIFICATES: &str = "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:cert/*";
const FORWARDED_EVENTS: &str = "ForwardedEventsQueue.Arn";
/// What an SQS event source mapping needs of its queue.
const SQS_POLLER_ACTIONS: [&str; 4] = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
];

/// What each function may reach: its own log group, the claims table (and only the indexes it
/// queries), the claim-thing secrets, the configuration topics, the dead-letter queue.
fn allowed_resources(function: &str) -> BTreeSet<String> {
    let table = |indexes: &[&str]| {
        let mut all = vec!["ClaimsTable.Arn".to_owned()];
        all.extend(
            indexes
                .iter()
                .map(|index| format!("${{ClaimsTable.Arn}}/index/{index}")),
        );
        all
    };
    let mut allowed: BTreeSet<String> = match function {
        "ClaimApiFunction" => table(&["by_user"])
            .into_iter()
            .chain([
                SECRETS.into(),
                LABEL_CODE_KEY.into(),
                CONFIG_TOPICS.into(),
                CERTIFICATES.into(),
            ])
            .collect(),
        "ClaimPublisherFunction" => table(&["outbox", "by_state"])
            .into_iter()
            .chain([SECRETS.into(), CONFIG_TOPICS.into(), STREAMS.into()])
            .collect(),
        "ProvisioningEventsFunction" => table(&[])
            .into_iter()
            .chain([
                "EventsDeadLetterQueue.Arn".into(),
                FORWARDED_EVENTS.into(),
                CERTIFICATES.into(),
            ])
            .collect(),
        // The table's change stream (not the table), the bus it puts events on, the dead-letter
        // queue of its stream positions.
        "LifecycleEventsFunction" => [
            STREAMS.to_owned(),
            "LifecycleEventBus.Arn".to_owned(),
            "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}".to_owned(),
            "EventsDeadLetterQueue.Arn".to_owned(),
        ]
        .into_iter()
        .collect(),
        other => panic!("a function this test does not know: {other}; say what it may reach"),
    };
    allowed.insert(format!("{}LogGroup.Arn", function.trim_end_matches("Function")));
    allowed
}

/// The table's change streams (lifecycle-events reads them through its event source mapping).
const STREAMS: &str = "${ClaimsTable.Arn}/stream/*";

const DYNAMODB_STREAM_ACTIONS: [&str; 4] = [
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
];

const DYNAMODB_ITEM_ACTIONS: [&str; 7] = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:Query",
];

#[test]
fn every_function_has_its_own_role_with_every_permission_written_out() {
    let template = template();
    let roles = function_roles(&template);
    assert_eq!(roles.len(), 4, "{roles:?}");
    let distinct: BTreeSet<_> = roles.values().collect();
    assert_eq!(distinct.len(), roles.len(), "functions share a role: {roles:?}");
    for (function, role) in &roles {
        let properties = &resources(&template)[function.as_str()]["Properties"];
        // SAM adds permissions of its own for `Policies`; with an explicit role it adds none.
        assert!(properties["Policies"].is_null(), "{function} uses SAM Policies");
        let role = &resources(&template)[role.as_str()];
        assert_eq!(role["Type"].as_str(), Some("AWS::IAM::Role"), "{function}");
        assert!(
            role["Properties"]["ManagedPolicyArns"].is_null(),
            "{function}: managed policies"
        );
        let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
        assert_eq!(
            trust["Principal"]["Service"].as_str(),
            Some("lambda.amazonaws.com"),
            "{function}"
        );
    }
}

/// The claim path reads what it decides on with one `BatchGetItem`
/// (`shared/src/adapters/dynamodb/reads.rs`), and the publisher reads a batch's claims and devices
/// afresh the same way: DynamoDB Local does not check IAM, so without this every claim (every
/// delivery) would fail first on AWS. No other function batches reads.
#[test]
fn only_claim_api_and_the_publisher_read_items_in_batches() {
    let template = template();
    for (function, role) in function_roles(&template) {
        let batches = role_statements(&resources(&template)[role.as_str()])
            .iter()
            .any(|statement| statement.actions.iter().any(|action| action == "dynamodb:BatchGetItem"));
        let reads_batches = ["ClaimApiFunction", "ClaimPublisherFunction"].contains(&function.as_str());
        assert_eq!(batches, reads_batches, "{function}");
    }
}

#[test]
fn no_permission_is_a_wildcard_and_each_function_reaches_only_its_own_resources() {
    let template = template();
    for (function, role) in function_roles(&template) {
        let allowed = allowed_resources(&function);
        let statements = role_statements(&resources(&template)[role.as_str()]);
        assert!(!statements.is_empty(), "{function} has no permissions");
        for statement in statements {
            let Statement {
                sid,
                actions,
                resources,
            } = &statement;
            for action in actions {
                assert!(!action.contains('*'), "{function}/{sid}: wildcard action {action}");
            }
            for resource in resources {
                assert!(
                    allowed.contains(resource),
                    "{function}/{sid}: {resource} is not one of its own resources {allowed:?}"
                );
            }
            let services: BTreeSet<&str> = actions.iter().filter_map(|a| a.split(':').next()).collect();
            assert_eq!(
                services.len(),
                1,
                "{function}/{sid}: one service per statement: {actions:?}"
            );
            let expected_resources: Box<dyn Fn(&str) -> bool> = match services.first().copied() {
                Some("logs") => Box::new(|r: &str| r.ends_with("LogGroup.Arn")),
                Some("dynamodb") => {
                    Box::new(|r: &str| r.starts_with("ClaimsTable.Arn") || r.starts_with("${ClaimsTable"))
                }
                Some("secretsmanager") => Box::new(|r: &str| r == SECRETS || r == LABEL_CODE_KEY),
                Some("iot") => Box::new(|r: &str| r == CONFIG_TOPICS || r == CERTIFICATES),
                Some("sqs") => Box::new(|r: &str| r == "EventsDeadLetterQueue.Arn" || r == FORWARDED_EVENTS),
                Some("events") => {
                    Box::new(|r: &str| r == "LifecycleEventBus.Arn" || r.ends_with(":event-bus/${EventBusName}"))
                }
                other => panic!("{function}/{sid}: unexpected service {other:?}"),
            };
            for resource in resources {
                assert!(
                    expected_resources(resource),
                    "{function}/{sid}: {actions:?} on {resource}"
                );
            }
            for action in actions {
                let allowed_action = match services.first().copied() {
                    Some("logs") => ["logs:CreateLogStream", "logs:PutLogEvents"].contains(&action.as_str()),
                    // Items of the table; the change stream's read actions only on its streams.
                    Some("dynamodb") => match resources.first().map(String::as_str) {
                        Some(STREAMS) => DYNAMODB_STREAM_ACTIONS.contains(&action.as_str()),
                        _ => DYNAMODB_ITEM_ACTIONS.contains(&action.as_str()),
                    },
                    Some("secretsmanager") => {
                        ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"].contains(&action.as_str())
                    }
                    // Publish on the configuration topics; the gate's two certificate calls (only
                    // the events function needs to read a certificate).
                    Some("iot") => match resources.first().map(String::as_str) {
                        Some(CONFIG_TOPICS) => action == "iot:Publish",
                        Some(CERTIFICATES) => {
                            action == "iot:UpdateCertificate"
                                || (action == "iot:DescribeCertificate" && function == "ProvisioningEventsFunction")
                        }
                        _ => false,
                    },
                    // Send dead letters; read (as the event source mapping) the forwarded events.
                    Some("sqs") => match resources.first().map(String::as_str) {
                        Some(FORWARDED_EVENTS) => SQS_POLLER_ACTIONS.contains(&action.as_str()),
                        _ => action == "sqs:SendMessage",
                    },
                    Some("events") => action == "events:PutEvents",
                    _ => false,
                };
                assert!(allowed_action, "{function}/{sid}: {action} is more than it needs");
            }
        }
    }
}

#[test]
fn forwarded_events_reach_provisioning_events_from_the_allowed_accounts_only() {
    let template = template();
    let resources = resources(&template);
    let queue = &resources["ForwardedEventsQueue"]["Properties"];
    assert_eq!(
        queue["FifoQueue"],
        Value::Null,
        "the IoT SQS action takes no FIFO queue"
    );
    assert_eq!(
        render(&queue["RedrivePolicy"]["deadLetterTargetArn"]),
        "EventsDeadLetterQueue.Arn"
    );
    assert!(queue["RedrivePolicy"]["maxReceiveCount"].as_u64() > Some(1));
    assert_eq!(queue["SqsManagedSseEnabled"].as_bool(), Some(true));
    let timeout = template["Globals"]["Function"]["Timeout"]
        .as_u64()
        .expect("function timeout");
    assert!(
        queue["VisibilityTimeout"].as_u64() >= Some(6 * timeout),
        "a message must not reappear while a batch is still being handled"
    );

    // Read by provisioning-events, reporting failed messages one by one.
    let function = &resources["ProvisioningEventsFunction"]["Properties"];
    let source = &function["Events"]["Forwarded"];
    assert_eq!(source["Type"].as_str(), Some("SQS"));
    assert_eq!(render(&source["Properties"]["Queue"]), FORWARDED_EVENTS);
    assert_eq!(
        list(&source["Properties"]["FunctionResponseTypes"]),
        vec![&Value::from("ReportBatchItemFailures")]
    );
    let variables = &function["Environment"]["Variables"];
    assert_eq!(render(&variables["FORWARDING_ACCOUNT_IDS"]), "ref:ForwardingAccountIds");
    assert_eq!(render(&variables["STACK_ACCOUNT_ID"]), "ref:AWS::AccountId");
    let claim_api = &resources["ClaimApiFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(render(&claim_api["FORWARDING_ACCOUNT_IDS"]), "ref:ForwardingAccountIds");

    // Sent to over TLS only; by other accounts only when listed, and then only SendMessage.
    let policy = &resources["ForwardedEventsQueuePolicy"]["Properties"];
    assert_eq!(
        list(&policy["Queues"]).into_iter().map(render).collect::<Vec<_>>(),
        ["ref:ForwardedEventsQueue"]
    );
    let statements = policy["PolicyDocument"]["Statement"].as_sequence().expect("statements");
    assert_eq!(statements.len(), 2);
    let tls = &statements[0];
    assert_eq!(
        (tls["Effect"].as_str(), tls["Principal"].as_str()),
        (Some("Deny"), Some("*"))
    );
    assert_eq!(tls["Condition"]["Bool"]["aws:SecureTransport"].as_str(), Some("false"));
    let Value::Tagged(conditional) = &statements[1] else {
        panic!("the accounts' statement exists only when accounts are listed")
    };
    let branches = conditional
        .value
        .as_sequence()
        .expect("!If [condition, statement, no value]");
    assert_eq!(
        (conditional.tag.to_string().as_str(), branches[0].as_str()),
        ("!If", Some("HasForwardingAccounts"))
    );
    assert_eq!(render(&branches[2]), "ref:AWS::NoValue");
    let allow = &branches[1];
    assert_eq!(allow["Effect"].as_str(), Some("Allow"));
    assert_eq!(allow["Action"].as_str(), Some("sqs:SendMessage"));
    assert_eq!(render(&allow["Resource"]), FORWARDED_EVENTS);
    assert_eq!(
        serde_yaml::to_string(&allow["Principal"]["AWS"]).unwrap().trim(),
        "!Split\n- ','\n- !Ref ForwardingAccountIds"
    );
    let parameter = &template["Parameters"]["ForwardingAccountIds"];
    assert_eq!(
        parameter["AllowedPattern"].as_str(),
        Some("^([0-9]{12}(,[0-9]{12})*)?$")
    );
    assert_eq!(
        serde_yaml::to_string(&template["Conditions"]["HasForwardingAccounts"])
            .unwrap()
            .trim(),
        "!Not\n- !Equals\n  - !Ref ForwardingAccountIds\n  - ''"
    );
}

/// Deletes: the publisher gives its vendor leases back; claim-api lifts a device's quarantine
/// (its list entry) when a claim brings the device back.
#[test]
fn only_the_functions_that_give_leases_back_or_lift_quarantines_may_delete_items() {
    let template = template();
    for (function, role) in function_roles(&template) {
        let deletes = role_statements(&resources(&template)[role.as_str()])
            .iter()
            .any(|statement| statement.actions.iter().any(|action| action == "dynamodb:DeleteItem"));
        let may_delete = ["ClaimApiFunction", "ClaimPublisherFunction"].contains(&function.as_str());
        assert_eq!(deletes, may_delete, "{function}");
    }
}

#[test]
fn no_other_role_or_policy_in_the_template_has_a_wildcard_action_or_resource() {
    let template = template();
    for (name, role) in of_type(&template, "AWS::IAM::Role") {
        for statement in role_statements(role) {
            for action in &statement.actions {
                assert!(!action.contains('*'), "{name}: {action}");
            }
            for resource in &statement.resources {
                assert_ne!(resource, "*", "{name}/{}", statement.sid);
            }
        }
        // Managed policies only where the service's documentation names one: JITP's role (not the
        // logging and rule actions policies the OEM guide also names: their actions on every
        // resource go unused), and API Gateway's account-wide CloudWatch role, which must reach
        // the log groups of every API in the region.
        let managed: Vec<String> = list(&role["Properties"]["ManagedPolicyArns"])
            .into_iter()
            .map(render)
            .collect();
        let names: Vec<&str> = managed.iter().filter_map(|arn| arn.rsplit('/').next()).collect();
        match name {
            "ProvisioningRole" => assert_eq!(names, ["AWSIoTThingsRegistration"]),
            "ApiGatewayCloudWatchRole" => assert_eq!(names, ["AmazonAPIGatewayPushToCloudWatchLogs"]),
            _ => assert!(managed.is_empty(), "{name}: {managed:?}"),
        }
        // Each role is assumed by one AWS service only; one that is not Lambda only on behalf of
        // this account (the confused-deputy guard). API Gateway documents no such condition for
        // its CloudWatch role (and a role is passed to it only from its own account).
        let trust = list(&role["Properties"]["AssumeRolePolicyDocument"]["Statement"]);
        assert_eq!(trust.len(), 1, "{name}: one trust statement");
        let service = trust[0]["Principal"]["Service"].as_str().unwrap_or_default();
        assert!(service.ends_with(".amazonaws.com"), "{name}: {service:?}");
        assert_eq!(trust[0]["Action"].as_str(), Some("sts:AssumeRole"), "{name}");
        if service == "apigateway.amazonaws.com" {
            assert_eq!(
                name, "ApiGatewayCloudWatchRole",
                "only the account's CloudWatch role trusts API Gateway"
            );
        } else if service != "lambda.amazonaws.com" {
            assert!(
                !trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"].is_null(),
                "{name}: assumable by {service} for any account"
            );
        }
    }
    for kind in ["AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User"] {
        assert!(of_type(&template, kind).is_empty(), "{kind} in the template");
    }
    // The device policy may name only a module's own client id and topics.
    for (_, policy) in of_type(&template, "AWS::IoT::Policy") {
        for statement in list(&policy["Properties"]["PolicyDocument"]["Statement"]) {
            for resource in list(&statement["Resource"]).into_iter().map(render) {
                assert!(resource.contains("${!iot:Connection.Thing.ThingName}"), "{resource}");
            }
            for action in list(&statement["Action"]).into_iter().map(render) {
                assert!(!action.contains('*'), "{action}");
            }
        }
    }
}

/// The environment variables a function's `main.rs` requires at cold start (`required("NAME")`).
/// The settings a function stops its cold start without: every `required("…")` in its own source,
/// and in the shared wiring root when its `main.rs` builds the claim service there.
fn required_env(binary: &str) -> BTreeSet<String> {
    let root = template_path().with_file_name("");
    let crate_src = root.join(format!("functions/{binary}/src"));
    let mut sources: Vec<std::path::PathBuf> = std::fs::read_dir(&crate_src)
        .unwrap_or_else(|err| panic!("{}: {err}", crate_src.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    let main = std::fs::read_to_string(crate_src.join("main.rs")).unwrap();
    if main.contains("wiring.service()") {
        sources.push(root.join("shared/src/wiring.rs"));
    }
    sources
        .iter()
        .flat_map(|path| {
            let source = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            source
                .split("required(\"")
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_function_is_built_from_a_workspace_binary_and_gets_the_settings_it_requires() {
    let template = template();
    let globals: BTreeSet<String> = template["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping()
        .expect("global variables")
        .keys()
        .filter_map(|key| key.as_str().map(str::to_owned))
        .collect();
    let mut binaries = BTreeSet::new();
    for (name, function) in of_type(&template, "AWS::Serverless::Function") {
        assert_eq!(
            function["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{name}"
        );
        let binary = function["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .expect("Binary");
        binaries.insert(binary.to_owned());
        let mut provided = globals.clone();
        if let Some(own) = function["Properties"]["Environment"]["Variables"].as_mapping() {
            provided.extend(own.keys().filter_map(|key| key.as_str().map(str::to_owned)));
        }
        let required = required_env(binary);
        assert!(
            !required.is_empty(),
            "{binary}: found no required(..) settings; did main.rs change?"
        );
        let missing: Vec<_> = required.difference(&provided).collect();
        assert!(missing.is_empty(), "{name} ({binary}) lacks {missing:?}");
        let logging = &function["Properties"]["LoggingConfig"];
        assert_eq!(logging["LogFormat"].as_str(), Some("JSON"), "{name}: JSON logs");
        let group = render(&logging["LogGroup"]);
        assert_eq!(
            group,
            format!("ref:{}LogGroup", name.trim_end_matches("Function")),
            "{name}"
        );
    }
    assert_eq!(
        binaries,
        [
            "claim-api",
            "claim-publisher",
            "lifecycle-events",
            "provisioning-events"
        ]
        .map(str::to_owned)
        .into(),
    );
    // claim-api reads its endpoints in ApiConfig::from_env rather than main.rs.
    let api_env = &resources(&template)["ClaimApiFunction"]["Properties"]["Environment"]["Variables"];
    for name in ["OEM_ENDPOINT", "OEM_ENDPOINTS"] {
        assert!(!api_env[name].is_null(), "claim-api lacks {name}");
    }
    assert_eq!(
        template["Globals"]["Function"]["Runtime"].as_str(),
        Some("provided.al2023")
    );
    assert_eq!(
        template["Globals"]["Function"]["Architectures"][0].as_str(),
        Some("arm64")
    );
    for (name, group) in of_type(&template, "AWS::Logs::LogGroup") {
        assert!(
            !group["Properties"]["RetentionInDays"].is_null(),
            "{name} keeps logs forever"
        );
    }
}

/// A topic rule's SQL: as written, or `!If [<condition>, !Sub <narrowed>, <unfiltered>]` when a
/// condition adds a WHERE clause (the presence rule's lookup).
#[derive(Debug, Clone)]
pub(crate) struct RuleSql {
    pub(crate) unfiltered: String,
    /// The condition and the SQL with its WHERE clause, `${…}` references unresolved.
    pub(crate) narrowed: Option<(String, String)>,
}

pub(crate) fn rule_sql(rule: &Value) -> RuleSql {
    let sql = &rule["Properties"]["TopicRulePayload"]["Sql"];
    if let Some(unfiltered) = sql.as_str() {
        return RuleSql {
            unfiltered: unfiltered.to_owned(),
            narrowed: None,
        };
    }
    let Value::Tagged(tagged) = sql else {
        panic!("Sql is neither a string nor an intrinsic: {sql:?}")
    };
    assert_eq!(tagged.tag.to_string(), "!If", "{sql:?}");
    let branches = tagged.value.as_sequence().expect("!If [condition, then, else]");
    let condition = branches[0].as_str().expect("a condition name").to_owned();
    let narrowed = render(&branches[1]);
    let unfiltered = branches[2]
        .as_str()
        .expect("the unfiltered SQL is a plain string")
        .to_owned();
    RuleSql {
        unfiltered,
        narrowed: Some((condition, narrowed)),
    }
}

#[test]
fn every_iot_rule_feeds_provisioning_events_and_has_a_dead_letter_queue() {
    let template = template();
    let rules = of_type(&template, "AWS::IoT::TopicRule");
    let sources: BTreeSet<String> = rules
        .iter()
        .map(|(_, rule)| {
            let sql = rule_sql(rule).unfiltered;
            sql.rsplit("FROM '")
                .next()
                .unwrap_or_default()
                .trim_end_matches('\'')
                .to_owned()
        })
        .collect();
    assert_eq!(
        sources,
        [
            "$aws/events/thing/+/created",
            "$aws/events/presence/connected/+",
            "$aws/events/certificates/registered/+",
        ]
        .map(str::to_owned)
        .into()
    );
    for (name, rule) in &rules {
        let payload = &rule["Properties"]["TopicRulePayload"];
        let sql = rule_sql(rule);
        assert!(sql.unfiltered.contains("AS event_kind"), "{name}");
        // A narrowed rule is the same rule with a WHERE clause: it selects and adds the same fields.
        if let Some((_, narrowed)) = &sql.narrowed {
            assert!(
                narrowed.starts_with(&format!("{} WHERE ", sql.unfiltered)),
                "{name}: {narrowed}"
            );
        }
        assert_eq!(payload["AwsIotSqlVersion"].as_str(), Some("2016-03-23"), "{name}");
        assert_eq!(
            render(&payload["Actions"][0]["Lambda"]["FunctionArn"]),
            "ProvisioningEventsFunction.Arn",
            "{name}"
        );
        assert_eq!(
            render(&payload["ErrorAction"]["Sqs"]["QueueUrl"]),
            "ref:EventsDeadLetterQueue",
            "{name}"
        );
        // AWS IoT may invoke the function only for this rule, from this account.
        let permitted = of_type(&template, "AWS::Lambda::Permission")
            .into_iter()
            .any(|(_, permission)| {
                let p = &permission["Properties"];
                p["Principal"].as_str() == Some("iot.amazonaws.com")
                    && render(&p["SourceArn"]) == format!("{name}.Arn")
                    && render(&p["SourceAccount"]) == "ref:AWS::AccountId"
            });
        assert!(permitted, "{name}: no invoke permission scoped to the rule");
    }
}

#[test]
fn the_vendor_ca_is_registered_for_jitp_in_sni_only_mode() {
    let template = template();
    let ca = &resources(&template)["VendorCaCertificate"]["Properties"];
    assert_eq!(ca["CertificateMode"].as_str(), Some("SNI_ONLY"));
    assert_eq!(ca["AutoRegistrationStatus"].as_str(), Some("ENABLE"));
    // JITP is a named provisioning template, the one the CA registers with.
    assert_eq!(
        render(&ca["RegistrationConfig"]["TemplateName"]),
        "ref:VendorJitpTemplate"
    );
    let jitp = &resources(&template)["VendorJitpTemplate"];
    assert_eq!(jitp["Type"].as_str(), Some("AWS::IoT::ProvisioningTemplate"));
    assert_eq!(jitp["Condition"].as_str(), Some("RegisterVendorCa"));
    let jitp = &jitp["Properties"];
    assert_eq!(jitp["TemplateType"].as_str(), Some("JITP"));
    assert_eq!(render(&jitp["ProvisioningRoleArn"]), "ProvisioningRole.Arn");
    // The JITP template body is JSON once CloudFormation substitutes the parameters.
    let body = render(&jitp["TemplateBody"])
        .replace("${JitpThingNameField}", "CommonName")
        .replace("${DevicePolicy}", "device-policy");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JITP template body is JSON");
    assert_eq!(
        body["Resources"]["thing"]["Properties"]["ThingName"]["Ref"],
        "AWS::IoT::Certificate::CommonName"
    );
    assert_eq!(body["Resources"]["certificate"]["Properties"]["Status"], "ACTIVE");
    assert_eq!(body["Resources"]["policy"]["Properties"]["PolicyName"], "device-policy");
    let parameters = body["Parameters"].as_object().expect("Parameters");
    assert_eq!(
        parameters.len(),
        2,
        "every declared parameter must exist in the certificate"
    );
}

#[test]
fn the_rogue_device_gate_is_on_by_default_and_knows_the_vendor_ca() {
    let template = template();
    let parameter = &template["Parameters"]["QuarantineRogueDevices"];
    assert_eq!(parameter["Default"].as_str(), Some("true"));
    let variables = &resources(&template)["ProvisioningEventsFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        render(&variables["QUARANTINE_ROGUE_DEVICES"]),
        "ref:QuarantineRogueDevices"
    );
    // The CA this stack registers, else the ids the OEM gives: only their certificates are touched.
    let ca_ids = serde_yaml::to_string(&variables["VENDOR_CA_CERTIFICATE_IDS"]).expect("yaml");
    assert!(
        ca_ids.contains("RegisterVendorCa") && ca_ids.contains("VendorCaCertificate.Id"),
        "{ca_ids}"
    );
    assert!(ca_ids.contains("VendorCaCertificateIds"), "{ca_ids}");
}

#[test]
fn the_table_is_protected_and_the_api_is_throttled_and_authorized() {
    let template = template();
    let table = &resources(&template)["ClaimsTable"];
    assert_eq!(table["DeletionPolicy"].as_str(), Some("Retain"));
    let props = &table["Properties"];
    assert_eq!(
        props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(props["SSESpecification"]["SSEEnabled"].as_bool(), Some(true));
    assert_eq!(props["TimeToLiveSpecification"]["AttributeName"].as_str(), Some("ttl"));
    let api = &resources(&template)["ClaimApi"]["Properties"];
    assert_eq!(api["Auth"]["DefaultAuthorizer"].as_str(), Some("CognitoUsers"));
    let throttle = &api["MethodSettings"][0];
    assert!(!throttle["ThrottlingRateLimit"].is_null() && !throttle["ThrottlingBurstLimit"].is_null());
}

#[test]
fn what_cannot_be_recreated_survives_replacement_and_deletion() {
    let template = template();
    // The ownership records, the label-code key (without it no stored code hash matches) and the
    // claim-thing's key (it lives nowhere else).
    for name in ["ClaimsTable", "LabelCodeKeySecret", "ClaimThingSecret"] {
        let resource = &resources(&template)[name];
        assert_eq!(resource["DeletionPolicy"].as_str(), Some("Retain"), "{name}");
        assert_eq!(resource["UpdateReplacePolicy"].as_str(), Some("Retain"), "{name}");
    }
}

#[test]
fn gateway_responses_map_headers_only_from_sources_api_gateway_documents() {
    // Gateway responses take header values from request parameters or static values only
    // (x-amazon-apigateway-gateway-responses.responseParameters); $context goes into the body.
    let template = template();
    let responses = resources(&template)["ClaimApi"]["Properties"]["GatewayResponses"]
        .as_mapping()
        .expect("GatewayResponses");
    assert!(!responses.is_empty());
    for (name, response) in responses {
        if let Some(headers) = response["ResponseParameters"]["Headers"].as_mapping() {
            for (header, value) in headers {
                let value = value.as_str().unwrap_or_default();
                let documented =
                    (value.starts_with('\'') && value.ends_with('\'')) || value.starts_with("method.request.");
                assert!(documented, "{name:?}: {header:?} from {value}");
            }
        }
        let body = response["ResponseTemplates"]["application/json"]
            .as_str()
            .unwrap_or_default();
        assert!(
            body.contains("\"request_id\":\"$context.requestId\""),
            "{name:?}: {body}"
        );
    }
}

/// Lifecycle events (docs/events.md): the table's stream with both images, read in order from the
/// start with partial batch responses, retried until the stream drops a record and then
/// dead-lettered, filtered to the two kinds of records that can be events (the entity names the
/// store writes), and put on the stack's own bus unless EventBusName names one.
#[test]
fn lifecycle_events_read_the_tables_stream_with_partial_batches_and_a_dead_letter_queue() {
    let template = template();
    let table = &resources(&template)["ClaimsTable"]["Properties"];
    assert_eq!(
        table["StreamSpecification"]["StreamViewType"].as_str(),
        Some("NEW_AND_OLD_IMAGES")
    );
    let function = &resources(&template)["LifecycleEventsFunction"]["Properties"];
    let source = &function["Events"]["TableStream"];
    assert_eq!(source["Type"].as_str(), Some("DynamoDB"));
    let properties = &source["Properties"];
    assert_eq!(render(&properties["Stream"]), "ClaimsTable.StreamArn");
    assert_eq!(properties["StartingPosition"].as_str(), Some("TRIM_HORIZON"));
    assert_eq!(
        list(&properties["FunctionResponseTypes"])
            .into_iter()
            .map(render)
            .collect::<Vec<_>>(),
        ["ReportBatchItemFailures"]
    );
    assert_eq!(
        properties["MaximumRetryAttempts"].as_i64(),
        Some(-1),
        "retried, not dropped"
    );
    assert_eq!(
        render(&properties["DestinationConfig"]["OnFailure"]["Destination"]),
        "EventsDeadLetterQueue.Arn"
    );
    let patterns: Vec<serde_json::Value> = list(&properties["FilterCriteria"]["Filters"])
        .into_iter()
        .map(|filter| serde_json::from_str(filter["Pattern"].as_str().unwrap()).unwrap())
        .collect();
    let entities: BTreeSet<(String, String)> = patterns
        .iter()
        .map(|p| {
            (
                p["eventName"][0].as_str().unwrap().to_owned(),
                p["dynamodb"]["NewImage"]["entity"]["S"][0].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        entities,
        [("INSERT", "history"), ("MODIFY", "claim")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .into()
    );
    // The store writes these entity names (shared/src/adapters/dynamodb/items.rs).
    let items =
        std::fs::read_to_string(template_path().with_file_name("shared/src/adapters/dynamodb/items.rs")).unwrap();
    for entity in ["history", "claim"] {
        assert!(
            items.contains(&format!("(\"entity\".to_owned(), s(\"{entity}\"))")),
            "{entity}"
        );
    }
    let parameters = &template["Parameters"];
    assert_eq!(parameters["EventBusName"]["Default"].as_str(), Some(""));
    assert_eq!(
        parameters["EventSource"]["Default"].as_str(),
        Some("expresslink.claims")
    );
    assert_eq!(
        resources(&template)["LifecycleEventBus"]["Condition"].as_str(),
        Some("CreateEventBus")
    );
}

/// mqtt endpoint messages (docs/architecture.md, "Delivery"): claim-publisher runs one instance at
/// a time (a vendor's client id never connects twice at once), and the table's stream hands it the
/// claims written owing a publish, at once, from the stream's end, retried briefly (the schedule is
/// the safety net), filtered on the attributes the store writes.
#[test]
fn one_publisher_instance_is_fed_the_owed_claims_by_the_tables_stream() {
    let template = template();
    let function = &resources(&template)["ClaimPublisherFunction"]["Properties"];
    assert_eq!(function["ReservedConcurrentExecutions"].as_i64(), Some(1));
    let source = &function["Events"]["OwedClaims"];
    assert_eq!(source["Type"].as_str(), Some("DynamoDB"));
    let properties = &source["Properties"];
    assert_eq!(render(&properties["Stream"]), "ClaimsTable.StreamArn");
    assert_eq!(properties["StartingPosition"].as_str(), Some("LATEST"));
    assert_eq!(properties["MaximumBatchingWindowInSeconds"].as_i64(), Some(0));
    let retries = properties["MaximumRetryAttempts"].as_i64().unwrap();
    assert!((0..=10).contains(&retries), "bounded: {retries}");
    let oldest = properties["MaximumRecordAgeInSeconds"].as_i64().unwrap();
    assert!(
        (60..=300).contains(&oldest),
        "a record older is the schedule's: {oldest}"
    );
    let batch = properties["BatchSize"].as_i64().unwrap();
    assert!((1..=1000).contains(&batch), "{batch}");
    let patterns: Vec<serde_json::Value> = list(&properties["FilterCriteria"]["Filters"])
        .into_iter()
        .map(|filter| serde_json::from_str(filter["Pattern"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(patterns.len(), 1);
    let pattern = &patterns[0];
    assert_eq!(pattern["eventName"], serde_json::json!(["INSERT", "MODIFY"]));
    let image = &pattern["dynamodb"]["NewImage"];
    assert_eq!(image["entity"]["S"], serde_json::json!(["claim"]));
    assert_eq!(image["next_publish_at"]["N"], serde_json::json!([{ "exists": true }]));
    // The store writes a claim's due time as a number under that name.
    let items =
        std::fs::read_to_string(template_path().with_file_name("shared/src/adapters/dynamodb/items.rs")).unwrap();
    assert!(items.contains("item.insert(\"next_publish_at\".to_owned(), n("));
}

/// The registration portal (docs/portal.md): a private bucket that only the stack's CloudFront
/// distribution reads (origin access control), security headers on every answer, the API answering
/// the portal's origin only, the hosted UI's callback, and nothing of it with DeployPortal "false".
#[test]
fn the_portal_is_a_private_bucket_behind_cloudfront_with_security_headers_and_can_be_left_out() {
    let template = template();
    let resources = resources(&template);
    let portal = [
        "PortalBucket",
        "PortalBucketPolicy",
        "PortalOriginAccessControl",
        "PortalHeadersPolicy",
        "PortalDistribution",
    ];
    for name in portal {
        assert_eq!(
            resources[name]["Condition"].as_str(),
            Some("PortalOn"),
            "{name}: only with DeployPortal"
        );
    }
    let deploy = &template["Parameters"]["DeployPortal"];
    assert_eq!(
        render(&list(&deploy["AllowedValues"])[1].clone()),
        "false",
        "it can be left out"
    );
    assert_eq!(
        serde_yaml::to_string(&template["Conditions"]["PortalOn"])
            .unwrap()
            .trim(),
        "!Equals\n- !Ref DeployPortal\n- 'true'"
    );

    // Not public: every public access blocked, no ACLs, and reads only by this distribution.
    let bucket = &resources["PortalBucket"]["Properties"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(
            bucket["PublicAccessBlockConfiguration"][setting].as_bool(),
            Some(true),
            "{setting}"
        );
    }
    assert_eq!(
        bucket["OwnershipControls"]["Rules"][0]["ObjectOwnership"].as_str(),
        Some("BucketOwnerEnforced")
    );
    let statements = list(&resources["PortalBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]);
    for statement in &statements {
        let allow = statement["Effect"].as_str() == Some("Allow");
        if allow {
            assert_eq!(
                statement["Principal"]["Service"].as_str(),
                Some("cloudfront.amazonaws.com")
            );
            assert_eq!(render(&statement["Action"]), "s3:GetObject");
            let source = render(&statement["Condition"]["StringEquals"]["AWS:SourceArn"]);
            assert!(source.ends_with(":distribution/${PortalDistribution}"), "{source}");
        } else {
            assert_eq!(
                statement["Condition"]["Bool"]["aws:SecureTransport"].as_str(),
                Some("false")
            );
        }
    }
    assert_eq!(
        statements
            .iter()
            .filter(|s| s["Effect"].as_str() == Some("Allow"))
            .count(),
        1
    );

    // Origin access control: CloudFront signs every read; no legacy origin access identity.
    let control = &resources["PortalOriginAccessControl"]["Properties"]["OriginAccessControlConfig"];
    assert_eq!(control["OriginAccessControlOriginType"].as_str(), Some("s3"));
    assert_eq!(control["SigningBehavior"].as_str(), Some("always"));
    let config = &resources["PortalDistribution"]["Properties"]["DistributionConfig"];
    let origin = &config["Origins"][0];
    assert_eq!(render(&origin["OriginAccessControlId"]), "PortalOriginAccessControl.Id");
    assert_eq!(origin["S3OriginConfig"]["OriginAccessIdentity"].as_str(), Some(""));
    let behaviour = &config["DefaultCacheBehavior"];
    assert_eq!(behaviour["ViewerProtocolPolicy"].as_str(), Some("redirect-to-https"));
    assert_eq!(render(&behaviour["ResponseHeadersPolicyId"]), "ref:PortalHeadersPolicy");

    // Security headers: CSP without inline code or framing, HSTS, no sniffing, no framing.
    let headers =
        &resources["PortalHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"];
    let csp = render(&headers["ContentSecurityPolicy"]["ContentSecurityPolicy"]);
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    // No inline code and no JavaScript eval; WebAssembly may compile (the QR decoder).
    for unsafe_source in ["'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'"] {
        assert!(!csp.contains(unsafe_source), "{csp}");
    }
    assert!(headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"].as_u64() >= Some(31_536_000));
    assert_eq!(headers["FrameOptions"]["FrameOption"].as_str(), Some("DENY"));
    assert_eq!(headers["ContentTypeOptions"]["Override"].as_bool(), Some(true));
    for header in [
        &headers["ContentSecurityPolicy"],
        &headers["StrictTransportSecurity"],
        &headers["FrameOptions"],
    ] {
        assert_eq!(header["Override"].as_bool(), Some(true));
    }

    // CORS: the function and the API's preflight answer one origin, PortalOrigin or else the
    // distribution's, and none without a portal; the parameter takes an https origin only.
    let api_env = &resources["ClaimApiFunction"]["Properties"]["Environment"]["Variables"]["CORS_ALLOW_ORIGIN"];
    let cors = &resources["ClaimApi"]["Properties"]["Cors"];
    for origin in [api_env, &cors["AllowOrigin"]] {
        let written = serde_yaml::to_string(origin).unwrap();
        for part in [
            "PortalOriginGiven",
            "!Ref PortalOrigin",
            "https://${PortalDistribution.DomainName}",
            "''",
        ] {
            assert!(written.contains(part), "{part} not in {written}");
        }
    }
    let pattern = template["Parameters"]["PortalOrigin"]["AllowedPattern"]
        .as_str()
        .unwrap();
    assert_eq!(
        pattern, "^(https://[a-z0-9.-]+(:[0-9]{1,5})?)?$",
        "one https origin, or empty"
    );
    assert!(
        !render(&cors["AllowHeaders"]).contains("x-local-user"),
        "no local header on AWS"
    );

    // Sign-in: the hosted UI's domain and the app client's code flow back to the portal.
    assert_eq!(resources["UserPoolDomain"]["Condition"].as_str(), Some("PortalSignIn"));
    let client = serde_yaml::to_string(&resources["UserPoolAppClient"]["Properties"]).unwrap();
    for part in ["- code", "/callback", "PortalSignIn", "- openid"] {
        assert!(client.contains(part), "{part} not in the app client: {client}");
    }
    assert_eq!(
        resources["UserPoolAppClient"]["Properties"]["GenerateSecret"].as_bool(),
        Some(false)
    );
}
