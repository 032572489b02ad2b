//! Logs of `template.yaml`: the functions' level is the `LogLevel` parameter, applied by the
//! functions themselves while Lambda keeps every line (metric documents carry no level and would
//! be dropped by a Lambda filter above INFO); API Gateway access logs in JSON, with the account's
//! CloudWatch role when the stack is asked to set it; AWS IoT logging only on request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use serde_yaml::Value;

use super::template::{
    assert_trusted_by_this_accounts_iot, list, of_type, render, resources, role_statements, template,
};

/// `!If [condition, then, else]` as its three parts.
fn if_parts(value: &Value) -> (&str, &Value, &Value) {
    let Value::Tagged(tagged) = value else {
        panic!("not an !If: {value:?}")
    };
    assert_eq!(tagged.tag.to_string(), "!If", "{value:?}");
    let parts = tagged.value.as_sequence().expect("!If [condition, then, else]");
    (parts[0].as_str().expect("a condition"), &parts[1], &parts[2])
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

fn allowed_values(template: &Value, parameter: &str) -> Vec<String> {
    list(&template["Parameters"][parameter]["AllowedValues"])
        .into_iter()
        .map(|value| value.as_str().expect("a string value").to_owned())
        .collect()
}

#[test]
fn lambda_keeps_every_line_and_the_functions_filter_at_the_log_level_parameter() {
    let template = template();
    assert_eq!(
        allowed_values(&template, "LogLevel"),
        ["DEBUG", "INFO", "WARN", "ERROR"]
    );
    assert_eq!(template["Parameters"]["LogLevel"]["Default"].as_str(), Some("INFO"));
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    let functions = of_type(&template, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 4);
    for (name, function) in functions {
        let properties = &function["Properties"];
        let logging = &properties["LoggingConfig"];
        assert_eq!(logging["LogFormat"].as_str(), Some("JSON"), "{name}");
        // TRACE: Lambda drops nothing; a metric line (no level, INFO to Lambda) always reaches
        // CloudWatch, whatever LogLevel says.
        assert_eq!(logging["ApplicationLogLevel"].as_str(), Some("TRACE"), "{name}");
        assert_eq!(logging["SystemLogLevel"].as_str(), Some("WARN"), "{name}");
        let own = &properties["Environment"]["Variables"]["LOG_LEVEL"];
        let level = if own.is_null() { &globals["LOG_LEVEL"] } else { own };
        assert_eq!(render(level), "ref:LogLevel", "{name}: LOG_LEVEL");
    }
}

#[test]
fn api_access_logs_are_json_without_tokens_and_the_account_role_is_set_only_on_request() {
    let template = template();
    assert_eq!(
        allowed_values(&template, "ApiAccessLogs"),
        ["with-account-role", "existing-account-role", "off"]
    );
    assert_eq!(
        template["Parameters"]["ApiAccessLogs"]["Default"].as_str(),
        Some("with-account-role")
    );
    let conditions = &template["Conditions"];
    assert_eq!(
        conditions["ApiAccessLogsOn"],
        yaml("!Not [!Equals [!Ref ApiAccessLogs, \"off\"]]")
    );
    assert_eq!(
        conditions["SetApiGatewayAccountRole"],
        yaml("!Equals [!Ref ApiAccessLogs, with-account-role]")
    );

    // The stage logs to the stack's own log group, kept as long as the functions' logs.
    let api = &resources(&template)["ClaimApi"];
    let (condition, setting, otherwise) = if_parts(&api["Properties"]["AccessLogSetting"]);
    assert_eq!(condition, "ApiAccessLogsOn");
    assert_eq!(otherwise, &yaml("!Ref AWS::NoValue"));
    let destination = render(&setting["DestinationArn"]);
    assert_eq!(
        destination,
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${ApiAccessLogGroup}"
    );
    let group = &resources(&template)["ApiAccessLogGroup"];
    assert_eq!(group["Type"].as_str(), Some("AWS::Logs::LogGroup"));
    assert_eq!(group["Condition"].as_str(), Some("ApiAccessLogsOn"));
    assert_eq!(render(&group["Properties"]["RetentionInDays"]), "ref:LogRetentionDays");

    // One JSON object per request once API Gateway fills in the variables (messageString comes
    // quoted), with what operations needs and nothing that carries a credential.
    let format = setting["Format"].as_str().expect("Format");
    let filled = format
        .replace("$context.error.messageString", "\"a message\"")
        .split("$context.")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part.to_owned()
            } else {
                // The variable name ends where the JSON string does.
                let end = part.find('"').unwrap_or(part.len());
                format!("value{}", &part[end..])
            }
        })
        .collect::<String>();
    let line: serde_json::Value = serde_json::from_str(&filled).unwrap_or_else(|err| panic!("{err}: {filled}"));
    let fields: BTreeSet<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
    for field in [
        "requestId",
        "httpMethod",
        "resourcePath",
        "status",
        "responseLatency",
        "integrationLatency",
        "authorizerError",
        "errorMessage",
        "sub",
    ] {
        assert!(fields.contains(field), "access log lacks {field}: {format}");
    }
    for variable in [
        "$context.requestId",
        "$context.resourcePath",
        "$context.status",
        "$context.responseLatency",
        "$context.integrationLatency",
        "$context.authorizer.error",
        "$context.error.messageString",
        "$context.authorizer.claims.sub",
    ] {
        assert!(format.contains(variable), "access log lacks {variable}");
    }
    let lowered = format.to_ascii_lowercase();
    for secret in [
        "authorization",
        "token",
        "apikey",
        "api_key",
        "header",
        "sourceip",
        "useragent",
    ] {
        assert!(!lowered.contains(secret), "access log carries {secret}: {format}");
    }

    // The account's CloudWatch role: only with with-account-role, and the API (so its stage) after it.
    let role = &resources(&template)["ApiGatewayCloudWatchRole"];
    assert_eq!(role["Condition"].as_str(), Some("SetApiGatewayAccountRole"));
    assert_eq!(
        role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"].as_str(),
        Some("apigateway.amazonaws.com")
    );
    let managed: Vec<String> = list(&role["Properties"]["ManagedPolicyArns"])
        .into_iter()
        .map(render)
        .collect();
    assert_eq!(
        managed,
        ["arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"]
    );
    assert!(role_statements(role).is_empty(), "nothing beyond the documented policy");
    let account = &resources(&template)["ApiGatewayAccount"];
    assert_eq!(account["Type"].as_str(), Some("AWS::ApiGateway::Account"));
    assert_eq!(account["Condition"].as_str(), Some("SetApiGatewayAccountRole"));
    assert_eq!(
        render(&account["Properties"]["CloudWatchRoleArn"]),
        "ApiGatewayCloudWatchRole.Arn"
    );
    // DependsOn cannot be conditional: the API depends on a handle that refers to the account
    // setting exactly when the stack makes it (SAM puts DependsOn on the REST API; its stage and
    // deployment refer to the REST API, so they come after it).
    let depends_on: Vec<String> = list(&api["DependsOn"]).into_iter().map(render).collect();
    assert_eq!(depends_on, ["ApiGatewayAccountReady"]);
    let handle = &resources(&template)["ApiGatewayAccountReady"];
    assert_eq!(
        handle["Type"].as_str(),
        Some("AWS::CloudFormation::WaitConditionHandle")
    );
    assert!(handle["Condition"].is_null(), "the handle always exists");
    let (condition, then, _) = if_parts(&handle["Metadata"]["AccountSettings"]);
    assert_eq!(condition, "SetApiGatewayAccountRole");
    assert_eq!(then, &yaml("!Ref ApiGatewayAccount"));
}

#[test]
fn aws_iot_logging_is_off_unless_asked_and_its_role_writes_only_the_iot_log_group() {
    let template = template();
    assert_eq!(
        allowed_values(&template, "IotLogLevel"),
        ["DISABLED", "ERROR", "WARN", "INFO", "DEBUG"]
    );
    assert_eq!(
        template["Parameters"]["IotLogLevel"]["Default"].as_str(),
        Some("DISABLED")
    );
    assert_eq!(
        template["Conditions"]["IotLoggingOn"],
        yaml("!Not [!Equals [!Ref IotLogLevel, DISABLED]]")
    );
    let logging = of_type(&template, "AWS::IoT::Logging");
    assert_eq!(logging.len(), 1);
    let (_, logging) = logging[0];
    assert_eq!(logging["Condition"].as_str(), Some("IotLoggingOn"));
    let properties = &logging["Properties"];
    assert_eq!(render(&properties["AccountId"]), "ref:AWS::AccountId");
    assert_eq!(render(&properties["DefaultLogLevel"]), "ref:IotLogLevel");
    let role_name = render(&properties["RoleArn"]);
    let role_name = role_name.strip_suffix(".Arn").expect("!GetAtt <role>.Arn");
    let role = &resources(&template)[role_name];
    assert_eq!(role["Condition"].as_str(), Some("IotLoggingOn"));
    assert_trusted_by_this_accounts_iot(role);
    let statements = role_statements(role);
    assert!(!statements.is_empty());
    let documented = [
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:PutMetricFilter",
        "logs:PutRetentionPolicy",
    ];
    let group = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:AWSIotLogsV2";
    for statement in statements {
        for action in &statement.actions {
            assert!(documented.contains(&action.as_str()), "{role_name}: {action}");
        }
        for resource in &statement.resources {
            assert!(
                resource == group || *resource == format!("{group}:*"),
                "{role_name}: {resource} is not the AWS IoT log group"
            );
        }
    }
}
