//! The alarms and the dashboard of `template.yaml` held against what the code emits. Every metric
//! of the stack's own namespace that an alarm or a widget watches must be one of
//! `claim_shared::metrics::CATALOGUE` with exactly one of its dimension sets (in CloudWatch a metric
//! is its name plus the exact set of its dimensions: the per-vendor series are other metrics than
//! the totals), and with a statistic that means something for its kind. Then: the alarms the
//! runbook describes exist, by what they watch, and the dashboard shows what the on-call needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use claim_shared::metrics::{Kind, CATALOGUE, NAMESPACE};
use serde_yaml::Value;

use super::template::{list, of_type, render, resources, template};

/// One metric an alarm or a widget watches, as CloudWatch identifies it, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watched {
    /// Where it is watched (alarm or widget), for messages.
    origin: String,
    namespace: String,
    metric: String,
    /// Dimension name → value (a Metrics Insights schema names no values: empty strings).
    dimensions: BTreeMap<String, String>,
    stat: String,
}

impl Watched {
    fn dimension_names(&self) -> BTreeSet<&str> {
        self.dimensions.keys().map(String::as_str).collect()
    }
}

/// Statistics that mean something for each kind of metric: counts are summed, distributions read
/// by percentile or their spread, gauges by their extremes or mean.
fn statistic_fits(kind: Kind, stat: &str) -> bool {
    let percentile = |stat: &str| {
        stat.strip_prefix('p')
            .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok_and(|n| n > 0.0 && n < 100.0))
    };
    match kind {
        Kind::Count => stat == "Sum",
        Kind::Distribution => percentile(stat) || ["Average", "Minimum", "Maximum", "SampleCount"].contains(&stat),
        Kind::Gauge => ["Maximum", "Minimum", "Average"].contains(&stat),
    }
}

/// Whether a metric of the stack's namespace is one the code emits, as it emits it.
fn check_against_catalogue(watched: &Watched) -> Result<(), String> {
    let Watched { origin, metric, .. } = watched;
    if watched.namespace != NAMESPACE {
        return Ok(());
    }
    let spec = CATALOGUE
        .iter()
        .find(|spec| spec.name == metric)
        .ok_or_else(|| format!("{origin}: {metric} is not in the metric catalogue"))?;
    let names = watched.dimension_names();
    let emitted = spec
        .dimension_sets
        .iter()
        .any(|set| set.iter().copied().collect::<BTreeSet<&str>>() == names);
    if !emitted {
        return Err(format!(
            "{origin}: {metric} with dimensions {names:?} is never emitted; its dimension sets are {:?}",
            spec.dimension_sets
        ));
    }
    if !statistic_fits(spec.kind, &watched.stat) {
        return Err(format!(
            "{origin}: {} of {metric} means nothing for a {:?}",
            watched.stat, spec.kind
        ));
    }
    Ok(())
}

/// A Metrics Insights query (`SELECT FUNC(metric) FROM SCHEMA(namespace, dims…) [WHERE …] [GROUP BY
/// …]`) as what it watches; `None` for metric math. A query on the stack's namespace must name its
/// schema: `FROM ExpressLinkClaims` alone would add up the totals and the per-vendor series.
fn insights_query(origin: &str, expression: &str) -> Result<Option<Watched>, String> {
    let upper = expression.to_ascii_uppercase();
    if !upper.trim_start().starts_with("SELECT") {
        return Ok(None);
    }
    let function_start = upper.find("SELECT").unwrap() + "SELECT".len();
    let open = upper[function_start..]
        .find('(')
        .map(|at| function_start + at)
        .ok_or_else(|| format!("{origin}: no aggregate in {expression}"))?;
    let close = expression[open..]
        .find(')')
        .map(|at| open + at)
        .ok_or_else(|| format!("{origin}: {expression}"))?;
    let stat = match upper[function_start..open].trim() {
        "SUM" => "Sum",
        "AVG" => "Average",
        "MAX" => "Maximum",
        "MIN" => "Minimum",
        "COUNT" => "SampleCount",
        other => return Err(format!("{origin}: aggregate {other} in {expression}")),
    };
    let metric = expression[open + 1..close].trim().trim_matches('"').to_owned();
    let from = upper[close..]
        .find("FROM")
        .map(|at| close + at + "FROM".len())
        .ok_or_else(|| format!("{origin}: no FROM in {expression}"))?;
    let source = expression[from..].trim_start();
    let Some(schema) = source
        .strip_prefix("SCHEMA(")
        .or_else(|| source.strip_prefix("schema("))
    else {
        let namespace = source.split_whitespace().next().unwrap_or_default().trim_matches('"');
        if namespace == NAMESPACE {
            return Err(format!(
                "{origin}: FROM {NAMESPACE} without SCHEMA(…) adds up every dimension set: {expression}"
            ));
        }
        return Ok(None);
    };
    let schema = &schema[..schema.find(')').ok_or_else(|| format!("{origin}: {expression}"))?];
    let mut parts = schema.split(',').map(|part| part.trim().trim_matches('"').to_owned());
    let namespace = parts.next().unwrap_or_default();
    let dimensions: BTreeMap<String, String> = parts.map(|name| (name, String::new())).collect();
    // GROUP BY and WHERE may only use the schema's own dimensions.
    if let Some(at) = upper.find("GROUP BY") {
        for key in expression[at + "GROUP BY".len()..].split(',') {
            let key = key.split_whitespace().next().unwrap_or_default().trim_matches('"');
            if !dimensions.contains_key(key) {
                return Err(format!("{origin}: GROUP BY {key} is not in the schema: {expression}"));
            }
        }
    }
    Ok(Some(Watched {
        origin: origin.to_owned(),
        namespace,
        metric,
        dimensions,
        stat: stat.to_owned(),
    }))
}

/// The dimensions of an alarm's metric (`[{Name, Value}]`), values rendered.
fn alarm_dimensions(dimensions: &Value) -> BTreeMap<String, String> {
    list(dimensions)
        .into_iter()
        .map(|dimension| {
            (
                dimension["Name"].as_str().expect("dimension Name").to_owned(),
                render(&dimension["Value"]),
            )
        })
        .collect()
}

/// Every metric an alarm watches: its own metric, or each `MetricStat` and Metrics Insights query
/// of its `Metrics` (metric math on their ids watches nothing itself).
fn alarm_watches(name: &str, alarm: &Value) -> Result<Vec<Watched>, String> {
    let properties = &alarm["Properties"];
    let mut watched = Vec::new();
    if let Some(metric) = properties["MetricName"].as_str() {
        let stat = properties["Statistic"]
            .as_str()
            .or_else(|| properties["ExtendedStatistic"].as_str())
            .ok_or_else(|| format!("{name}: no statistic"))?;
        watched.push(Watched {
            origin: name.to_owned(),
            namespace: properties["Namespace"].as_str().unwrap_or_default().to_owned(),
            metric: metric.to_owned(),
            dimensions: alarm_dimensions(&properties["Dimensions"]),
            stat: stat.to_owned(),
        });
    }
    for query in list(&properties["Metrics"]) {
        let origin = format!("{name}/{}", query["Id"].as_str().unwrap_or("?"));
        let stat = &query["MetricStat"];
        if !stat.is_null() {
            let metric = &stat["Metric"];
            watched.push(Watched {
                origin,
                namespace: metric["Namespace"].as_str().unwrap_or_default().to_owned(),
                metric: metric["MetricName"].as_str().unwrap_or_default().to_owned(),
                dimensions: alarm_dimensions(&metric["Dimensions"]),
                stat: stat["Stat"].as_str().unwrap_or_default().to_owned(),
            });
        } else if !query["Expression"].is_null() {
            watched.extend(insights_query(&origin, &render(&query["Expression"]))?);
        }
    }
    Ok(watched)
}

/// Every metric a dashboard widget shows: `[namespace, name, dim, value, …, {options}]` rows
/// (the statistic from the options, else the widget's, else CloudWatch's default Average) and
/// `[{"expression": …}]` rows. Rows must be written out: the `"."` shorthand is refused.
fn widget_watches(index: usize, widget: &serde_json::Value) -> Result<Vec<Watched>, String> {
    let properties = &widget["properties"];
    let title = properties["title"].as_str().unwrap_or("untitled");
    let origin = format!("widget {index} ({title})");
    let default_stat = properties["stat"].as_str().unwrap_or("Average");
    let mut watched = Vec::new();
    for row in properties["metrics"].as_array().into_iter().flatten() {
        let row = row
            .as_array()
            .ok_or_else(|| format!("{origin}: a row is not an array"))?;
        if let Some(expression) = row.first().and_then(|first| first["expression"].as_str()) {
            watched.extend(insights_query(&origin, expression)?);
            continue;
        }
        let strings: Vec<&str> = row.iter().filter_map(serde_json::Value::as_str).collect();
        if strings.contains(&".") {
            return Err(format!("{origin}: write rows out instead of \".\": {row:?}"));
        }
        let options = row.iter().find(|item| item.is_object());
        if strings.len() < 2 || !strings.len().is_multiple_of(2) {
            return Err(format!("{origin}: not [namespace, metric, name, value, …]: {row:?}"));
        }
        let dimensions = strings[2..]
            .chunks(2)
            .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
            .collect();
        let stat = options
            .and_then(|options| options["stat"].as_str())
            .unwrap_or(default_stat);
        watched.push(Watched {
            origin: origin.clone(),
            namespace: strings[0].to_owned(),
            metric: strings[1].to_owned(),
            dimensions,
            stat: stat.to_owned(),
        });
    }
    Ok(watched)
}

/// The dashboard's body as CloudWatch receives it, with each `${…}` of its `!Sub` replaced: a
/// Number parameter by its default (it stands where JSON wants a number), anything else by a
/// placeholder as [`render`] names it (`ref:X`, `X.Attribute`) so tests compare it with the
/// template's own references. Every reference must resolve to a parameter, a resource or a
/// pseudo parameter.
fn substitute(template: &Value, text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("an unterminated ${") + start;
        let reference = &rest[start + 2..end];
        let parameter = &template["Parameters"][reference];
        let resource = reference.split('.').next().unwrap_or_default();
        if parameter["Type"].as_str() == Some("Number") {
            let default = match &parameter["Default"] {
                Value::Number(number) => number.to_string(),
                Value::String(text) => text.clone(),
                other => panic!("{reference}: default {other:?}"),
            };
            out.push_str(&default);
        } else if reference.contains('.') {
            assert!(
                resources(template).contains_key(resource),
                "${{{reference}}} names no resource"
            );
            out.push_str(reference);
        } else {
            assert!(
                reference.starts_with("AWS::") || !parameter.is_null() || resources(template).contains_key(reference),
                "${{{reference}}} resolves to nothing"
            );
            out.push_str(&format!("ref:{reference}"));
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A `!Sub` string with its references as [`substitute`] writes them.
fn substituted(template: &Value, value: &Value) -> String {
    substitute(template, &render(value))
}

fn dashboard_body(template: &Value) -> serde_json::Value {
    let dashboards = of_type(template, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1, "one dashboard");
    let body = substituted(template, &dashboards[0].1["Properties"]["DashboardBody"]);
    serde_json::from_str(&body).unwrap_or_else(|err| panic!("DashboardBody is not JSON ({err}):\n{body}"))
}

fn dashboard_watches(template: &Value) -> Vec<Watched> {
    let body = dashboard_body(template);
    let widgets = body["widgets"].as_array().expect("widgets");
    let mut all = Vec::new();
    for (index, widget) in widgets.iter().enumerate() {
        all.extend(widget_watches(index, widget).unwrap_or_else(|err| panic!("{err}")));
    }
    all
}

#[test]
fn every_alarm_and_widget_on_the_stacks_own_metrics_watches_a_metric_the_code_emits() {
    let template = template();
    let mut checked = 0;
    for (name, alarm) in of_type(&template, "AWS::CloudWatch::Alarm") {
        for watched in alarm_watches(name, alarm).unwrap_or_else(|err| panic!("{err}")) {
            check_against_catalogue(&watched).unwrap_or_else(|err| panic!("{err}"));
            checked += usize::from(watched.namespace == NAMESPACE);
        }
    }
    assert!(checked >= 6, "the stack's own metrics are alarmed on ({checked})");
    let mut shown = 0;
    for watched in dashboard_watches(&template) {
        check_against_catalogue(&watched).unwrap_or_else(|err| panic!("{err}"));
        shown += usize::from(watched.namespace == NAMESPACE);
    }
    assert!(shown >= 10, "the dashboard shows the stack's own metrics ({shown})");
}

/// A hand-made alarm watching `metric` with `dimensions` by `stat`, as the template writes one.
fn alarm(metric: &str, dimensions: &[&str], stat: &str) -> Value {
    let dimensions: Vec<String> = dimensions
        .iter()
        .map(|name| format!("{{Name: {name}, Value: x}}"))
        .collect();
    let yaml = format!(
        "Type: AWS::CloudWatch::Alarm\nProperties:\n  Namespace: {NAMESPACE}\n  MetricName: {metric}\n  Dimensions: [{}]\n  Statistic: {stat}\n",
        dimensions.join(", ")
    );
    serde_yaml::from_str(&yaml).unwrap()
}

fn verdict(alarm: &Value) -> Result<(), String> {
    alarm_watches("hand-made", alarm)?
        .iter()
        .try_for_each(check_against_catalogue)
}

#[test]
fn the_catalogue_check_refuses_names_dimension_sets_and_statistics_the_code_does_not_emit() {
    // As the code emits them.
    assert_eq!(verdict(&alarm("PublishFailed", &[], "Sum")), Ok(()));
    assert_eq!(
        verdict(&alarm("PublishFailed", &["vendor", "error_code", "transport"], "Sum")),
        Ok(())
    );
    assert_eq!(verdict(&alarm("ClaimToPublishMs", &[], "p99")), Ok(()));
    assert_eq!(verdict(&alarm("OutboxAgeSeconds", &[], "Maximum")), Ok(()));
    // A name nobody emits, a misspelt one.
    assert!(verdict(&alarm("PublishFailures", &[], "Sum"))
        .unwrap_err()
        .contains("not in the metric catalogue"));
    assert!(verdict(&alarm("publishfailed", &[], "Sum")).is_err());
    // The old alarm's dimension set: PublishFailed by error_code alone is another metric, never emitted.
    assert!(verdict(&alarm("PublishFailed", &["error_code"], "Sum"))
        .unwrap_err()
        .contains("never emitted"));
    // A total that only exists per dimension.
    assert!(verdict(&alarm("DevicesReleased", &[], "Sum")).is_err());
    // Statistics that mean nothing for the kind.
    assert!(verdict(&alarm("PublishFailed", &[], "p99"))
        .unwrap_err()
        .contains("means nothing"));
    assert!(verdict(&alarm("ClaimToPublishMs", &[], "Sum")).is_err());
    assert!(verdict(&alarm("OutboxAgeSeconds", &[], "Sum")).is_err());
    // Metrics Insights: the schema is the dimension set; FROM the namespace alone is refused.
    let insights = |expression: &str| {
        let yaml = format!("Properties:\n  Metrics:\n    - Id: q\n      Expression: '{expression}'\n");
        verdict(&serde_yaml::from_str(&yaml).unwrap())
    };
    assert_eq!(
        insights("SELECT SUM(PublishFailed) FROM SCHEMA(ExpressLinkClaims, error_code, transport, vendor) GROUP BY error_code"),
        Ok(())
    );
    assert_eq!(
        insights("SELECT SUM(ClaimsExpired) FROM SCHEMA(ExpressLinkClaims, \"by\")"),
        Ok(())
    );
    assert!(insights("SELECT SUM(PublishFailed) FROM SCHEMA(ExpressLinkClaims, error_code)").is_err());
    assert!(insights("SELECT SUM(PublishFailed) FROM ExpressLinkClaims").is_err());
    assert!(insights("SELECT AVG(PublishFailed) FROM SCHEMA(ExpressLinkClaims)").is_err());
    assert!(insights(
        "SELECT SUM(PublishFailed) FROM SCHEMA(ExpressLinkClaims, vendor, transport, error_code) GROUP BY sku"
    )
    .is_err());
    // Metric math on ids and other namespaces are not the catalogue's business.
    assert_eq!(insights("failed / (failed + published)"), Ok(()));
    assert_eq!(
        insights("SELECT SUM(Errors) FROM SCHEMA(\"AWS/Lambda\", FunctionName)"),
        Ok(())
    );
    // Dashboard rows: the same rules, and no "." shorthand.
    let widget = |rows: serde_json::Value| {
        widget_watches(0, &serde_json::json!({"properties": {"stat": "Sum", "metrics": rows}}))?
            .iter()
            .try_for_each(check_against_catalogue)
    };
    assert_eq!(
        widget(serde_json::json!([["ExpressLinkClaims", "ClaimsAccepted"]])),
        Ok(())
    );
    assert_eq!(
        widget(
            serde_json::json!([["ExpressLinkClaims", "ClaimToArrivalMs", "target_endpoint", "a1-ats.iot.eu-west-1.amazonaws.com", "vendor", "espressif", {"stat": "p50"}]])
        ),
        Ok(())
    );
    assert!(widget(serde_json::json!([["ExpressLinkClaims", "ClaimsAccepted", "sku", "A"]])).is_err());
    assert!(widget(serde_json::json!([["ExpressLinkClaims", "ClaimToArrivalMs"]])).is_err());
    assert!(widget(serde_json::json!([
        ["ExpressLinkClaims", "ClaimsAccepted"],
        [".", "ClaimsExpired"]
    ]))
    .is_err());
}

/// The alarms of the template by logical id.
fn alarms(template: &Value) -> BTreeMap<String, &Value> {
    of_type(template, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(name, alarm)| (name.to_owned(), alarm))
        .collect()
}

/// The alarm that watches exactly these metrics (namespace, name, dimension names, statistic).
fn alarm_watching<'a>(template: &'a Value, wanted: &[(&str, &str, &[&str], &str)]) -> (String, &'a Value) {
    let wanted: BTreeSet<(String, String, BTreeSet<String>, String)> = wanted
        .iter()
        .map(|(namespace, metric, dimensions, stat)| {
            (
                (*namespace).to_owned(),
                (*metric).to_owned(),
                dimensions.iter().map(|d| (*d).to_owned()).collect(),
                (*stat).to_owned(),
            )
        })
        .collect();
    let found: Vec<(String, &Value)> = alarms(template)
        .into_iter()
        .filter(|(name, alarm)| {
            let watched: BTreeSet<_> = alarm_watches(name, alarm)
                .unwrap()
                .into_iter()
                .map(|w| {
                    let names = w.dimensions.keys().cloned().collect();
                    (w.namespace, w.metric, names, w.stat)
                })
                .collect();
            watched == wanted
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one alarm watches {wanted:?}; found {:?}",
        found.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    found.into_iter().next().unwrap()
}

/// The expression an alarm reports (`ReturnData: true`), and the ids of its metrics by metric name.
fn reported_expression(alarm: &Value) -> (String, BTreeMap<String, String>) {
    let mut ids = BTreeMap::new();
    let mut reported = None;
    for query in list(&alarm["Properties"]["Metrics"]) {
        let id = query["Id"].as_str().unwrap().to_owned();
        if let Some(metric) = query["MetricStat"]["Metric"]["MetricName"].as_str() {
            assert_eq!(
                query["ReturnData"].as_bool(),
                Some(false),
                "{id}: only the result is reported"
            );
            ids.insert(metric.to_owned(), id);
        } else if query["ReturnData"].as_bool() == Some(true) {
            reported = Some(render(&query["Expression"]));
        }
    }
    (reported.expect("a reported expression"), ids)
}

fn threshold(alarm: &Value) -> String {
    render(&alarm["Properties"]["Threshold"])
}

#[test]
fn the_runbooks_alarms_watch_ratios_of_the_totals_with_a_minimum_volume() {
    let template = template();
    let props = |alarm: &Value| alarm["Properties"].clone();

    // Failed share of publish attempts: PublishFailed / (PublishFailed + EndpointPublished), only
    // above a minimum number of attempts.
    let (_, publish) = alarm_watching(
        &template,
        &[
            (NAMESPACE, "PublishFailed", &[], "Sum"),
            (NAMESPACE, "EndpointPublished", &[], "Sum"),
        ],
    );
    let (expression, ids) = reported_expression(publish);
    let (failed, published) = (&ids["PublishFailed"], &ids["EndpointPublished"]);
    assert!(
        expression.contains(&format!(
            "FILL({failed}, 0) / (FILL({failed}, 0) + FILL({published}, 0))"
        )),
        "{expression}"
    );
    assert!(expression.contains(">= ${PublishFailureMinAttempts}"), "{expression}");
    assert_eq!(threshold(publish), "ref:PublishFailureRatioThreshold");
    assert_eq!(
        props(publish)["ComparisonOperator"].as_str(),
        Some("GreaterThanThreshold")
    );

    // The outbox's oldest due claim.
    let (_, outbox) = alarm_watching(&template, &[(NAMESPACE, "OutboxAgeSeconds", &[], "Maximum")]);
    assert_eq!(threshold(outbox), "ref:OutboxAgeThresholdSeconds");
    assert_eq!(
        props(outbox)["ComparisonOperator"].as_str(),
        Some("GreaterThanThreshold")
    );

    // Claims expired per claim accepted in an hour, above a minimum count of expired claims.
    let (_, expiring) = alarm_watching(
        &template,
        &[
            (NAMESPACE, "ClaimsExpired", &[], "Sum"),
            (NAMESPACE, "ClaimsAccepted", &[], "Sum"),
        ],
    );
    let (expression, ids) = reported_expression(expiring);
    let (expired, accepted) = (&ids["ClaimsExpired"], &ids["ClaimsAccepted"]);
    assert!(
        expression.contains(&format!("FILL({expired}, 0) / FILL({accepted}, 0)")),
        "{expression}"
    );
    assert!(expression.contains(">= ${ExpiredClaimsMinCount}"), "{expression}");
    for query in list(&props(expiring)["Metrics"]) {
        if !query["MetricStat"].is_null() {
            assert_eq!(query["MetricStat"]["Period"].as_u64(), Some(3600), "an hour's claims");
        }
    }
    assert_eq!(threshold(expiring), "ref:ExpiredClaimsRatioThreshold");

    // The API's 5xx share: 5XXError's Average, above a minimum number of requests, on this API.
    let (_, api) = alarm_watching(
        &template,
        &[
            ("AWS/ApiGateway", "5XXError", &["ApiName"], "Average"),
            ("AWS/ApiGateway", "Count", &["ApiName"], "Sum"),
        ],
    );
    let (expression, ids) = reported_expression(api);
    assert!(
        expression.contains(&format!("FILL({}, 0) >= ${{Api5xxMinRequests}}", ids["Count"])),
        "{expression}"
    );
    assert_eq!(threshold(api), "ref:Api5xxRatioThreshold");
    let api_name = render(&resources(&template)["ClaimApi"]["Properties"]["Name"]);
    for watched in alarm_watches("api", api).unwrap() {
        assert_eq!(watched.dimensions["ApiName"], api_name);
    }

    // Kept: dead letters, function errors, quarantines.
    let (_, dead_letters) = alarm_watching(
        &template,
        &[(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            &["QueueName"],
            "Maximum",
        )],
    );
    assert_eq!(
        render(&props(dead_letters)["Dimensions"][0]["Value"]),
        "EventsDeadLetterQueue.QueueName"
    );
    assert_eq!(props(dead_letters)["Threshold"].as_u64(), Some(0));
    assert_eq!(
        props(dead_letters)["ComparisonOperator"].as_str(),
        Some("GreaterThanThreshold")
    );
    let errors: BTreeSet<String> = alarms(&template)
        .values()
        .filter(|alarm| alarm["Properties"]["MetricName"].as_str() == Some("Errors"))
        .map(|alarm| render(&alarm["Properties"]["Dimensions"][0]["Value"]))
        .collect();
    let functions: BTreeSet<String> = of_type(&template, "AWS::Serverless::Function")
        .into_iter()
        .map(|(name, _)| format!("ref:{name}"))
        .collect();
    assert_eq!(errors, functions, "an errors alarm per function");
    let (_, quarantines) = alarm_watching(&template, &[(NAMESPACE, "Quarantines", &["outcome"], "Sum")]);
    assert_eq!(render(&props(quarantines)["Dimensions"][0]["Value"]), "quarantined");
}

#[test]
fn every_alarm_notifies_the_alarm_topic_and_names_its_runbook_entry() {
    let template = template();
    let runbook =
        std::fs::read_to_string(claim_tests::schema::template_path().with_file_name("docs/operations.md")).unwrap();
    let entries: BTreeSet<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix("### "))
        .map(|heading| heading.trim().to_ascii_lowercase())
        .collect();
    let topic = serde_yaml::from_str::<Value>("[!If [CreateAlarmTopic, !Ref AlarmTopic, !Ref AlarmTopicArn]]").unwrap();
    for (name, alarm) in alarms(&template) {
        let properties = &alarm["Properties"];
        assert_eq!(properties["AlarmActions"], topic, "{name}");
        assert_eq!(properties["TreatMissingData"].as_str(), Some("notBreaching"), "{name}");
        let description = properties["AlarmDescription"].as_str().unwrap_or_default();
        let anchor = name.to_ascii_lowercase();
        assert!(
            description.contains(&format!("docs/operations.md#{anchor}")),
            "{name}: the description names no runbook entry: {description}"
        );
        assert!(
            entries.contains(&anchor),
            "{name}: docs/operations.md has no ### {name}"
        );
        // The description stays within CloudWatch's 1024 characters.
        assert!(description.len() <= 1024, "{name}");
    }
    // The stack's own topic only without AlarmTopicArn; the e-mail subscribes to that topic only.
    let own_topic = &resources(&template)["AlarmTopic"];
    assert_eq!(own_topic["Condition"].as_str(), Some("CreateAlarmTopic"));
    let condition = |yaml: &str| serde_yaml::from_str::<Value>(yaml).unwrap();
    assert_eq!(
        template["Conditions"]["CreateAlarmTopic"],
        condition("!Equals [!Ref AlarmTopicArn, \"\"]")
    );
    let subscription = &resources(&template)["AlarmEmailSubscription"];
    assert_eq!(subscription["Condition"].as_str(), Some("SubscribeAlarmEmail"));
    assert_eq!(render(&subscription["Properties"]["TopicArn"]), "ref:AlarmTopic");
    assert_eq!(
        template["Conditions"]["SubscribeAlarmEmail"],
        condition("!And [!Condition CreateAlarmTopic, !Not [!Equals [!Ref AlarmEmail, \"\"]]]")
    );
    assert_eq!(template["Parameters"]["AlarmTopicArn"]["Default"].as_str(), Some(""));
    assert_eq!(template["Outputs"]["AlarmTopicArn"]["Value"], topic[0]);
}

#[test]
fn the_dashboard_shows_the_funnel_latencies_outbox_api_functions_and_dead_letters() {
    let template = template();
    let shown: Vec<Watched> = dashboard_watches(&template);
    let has = |namespace: &str, metric: &str, dimensions: &[(&str, &str)], stat: &str| {
        shown.iter().any(|w| {
            w.namespace == namespace
                && w.metric == metric
                && w.stat == stat
                && w.dimensions
                    == dimensions
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<BTreeMap<_, _>>()
        })
    };
    // The funnel, as totals.
    for metric in [
        "ClaimsAccepted",
        "EndpointPublished",
        "PublishFailed",
        "ClaimsProvisioned",
        "ClaimsExpired",
    ] {
        assert!(has(NAMESPACE, metric, &[], "Sum"), "funnel: {metric}");
    }
    // Releases exist only per `by`: every value the code records.
    for by in ["owner", "operator"] {
        assert!(
            has(NAMESPACE, "DevicesReleased", &[("by", by)], "Sum"),
            "released by {by}"
        );
    }
    // Latencies.
    for metric in ["ClaimToPublishMs", "ClaimToArrivalMs"] {
        for stat in ["p50", "p99"] {
            assert!(has(NAMESPACE, metric, &[], stat), "{metric} {stat}");
        }
    }
    assert!(has(NAMESPACE, "OutboxAgeSeconds", &[], "Maximum"));
    // The API as the alarms name it.
    let api_name = render(&resources(&template)["ClaimApi"]["Properties"]["Name"]);
    let api_name = substitute(&template, &api_name);
    for metric in ["4XXError", "5XXError"] {
        assert!(
            has("AWS/ApiGateway", metric, &[("ApiName", &api_name)], "Sum"),
            "API {metric}"
        );
    }
    // Errors and throttles of every function.
    for (function, _) in of_type(&template, "AWS::Serverless::Function") {
        let name = format!("ref:{function}");
        for metric in ["Errors", "Throttles"] {
            assert!(
                has("AWS/Lambda", metric, &[("FunctionName", &name)], "Sum"),
                "{function} {metric}"
            );
        }
    }
    assert!(has(
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        &[("QueueName", "EventsDeadLetterQueue.QueueName")],
        "Maximum"
    ));
    // Forwarded events that wait: claims of endpoints in other accounts or regions not completing.
    assert!(has(
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        &[("QueueName", "ForwardedEventsQueue.QueueName")],
        "Maximum"
    ));
    // Every widget has a title and this stack's region.
    for widget in dashboard_body(&template)["widgets"].as_array().unwrap() {
        assert!(widget["properties"]["title"].is_string(), "{widget}");
        assert_eq!(widget["properties"]["region"], "ref:AWS::Region", "{widget}");
    }
}
