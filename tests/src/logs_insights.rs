//! The subset of CloudWatch Logs Insights that `docs/operations.md`'s queries use, evaluated over
//! the functions' local log (one JSON object per line), so a test runs each documented query
//! as written against what the functions really wrote. A query using anything outside the subset
//! is an error, not a silent pass: the docs then need a query this can check, or this a new verb.
//!
//! Commands (joined by `|`): `fields a, b`; `filter <condition>`; `stats <aggregate>[ as name], …
//! [by <field or bin(<n>m|h)>, …]`; `sort <field> [asc|desc]`; `limit <n>`. Conditions: `field =
//! value`, `!=`, `<`, `<=`, `>`, `>=`, `ispresent(field)`, `not <condition>`, joined by `and`
//! (binds first) and `or`; values are quoted strings or numbers. Aggregates: `count(*)`,
//! `count(field)`, `max(field)`, `min(field)`, `avg(field)`, `pct(field, p)`. `@timestamp` is
//! the line's `timestamp` (epoch ms), `@message` the whole line, as in Logs Insights.

use std::{cmp::Ordering, collections::BTreeMap};

use serde_json::{json, Map, Value};

pub type Row = Map<String, Value>;

/// Runs `query` over `lines` (non-JSON lines are skipped, as Logs Insights discovers no fields in
/// them and no documented query matches them).
pub fn run(query: &str, lines: &[&str]) -> Result<Vec<Row>, String> {
    let mut rows: Vec<Row> = lines.iter().filter_map(|line| event(line)).collect();
    for command in split_outside(query, "|") {
        let command = command.trim();
        let (verb, rest) = command.split_once(char::is_whitespace).unwrap_or((command, ""));
        let rest = rest.trim();
        rows = match verb {
            "fields" => rows, // projection does not change which rows match; kept whole for checks
            "filter" => {
                let condition = Condition::parse(rest)?;
                rows.into_iter().filter(|row| condition.holds(row)).collect()
            }
            "sort" => sort(rows, rest)?,
            "limit" => {
                let n: usize = rest.parse().map_err(|_| format!("limit {rest:?}"))?;
                rows.into_iter().take(n).collect()
            }
            "stats" => stats(&rows, rest)?,
            other => return Err(format!("unsupported command {other:?} in {command:?}")),
        };
    }
    Ok(rows)
}

fn event(line: &str) -> Option<Row> {
    let Value::Object(mut row) = serde_json::from_str::<Value>(line).ok()? else {
        return None;
    };
    if let Some(ms) = row
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|ts| time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok())
    {
        let ms = i64::try_from(ms.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        row.insert("@timestamp".into(), json!(ms));
    }
    row.insert("@message".into(), Value::String(line.to_owned()));
    Some(row)
}

/// Splits on `needle` outside quotes and parentheses.
fn split_outside<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    let (mut parts, mut start, mut depth, mut quote) = (Vec::new(), 0, 0i32, None);
    let mut chars = text.char_indices();
    while let Some((index, ch)) = chars.next() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(ch),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, _) if depth == 0 && text[index..].starts_with(needle) => {
                parts.push(&text[start..index]);
                start = index + needle.len();
                // Skip the rest of the needle.
                for _ in 1..needle.chars().count() {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Splits on a keyword (` and `, ` or `, ` by `, ` as `) outside quotes and parentheses.
fn split_keyword<'a>(text: &'a str, keyword: &str) -> Vec<&'a str> {
    split_outside(text, &format!(" {keyword} "))
}

enum Condition {
    Any(Vec<Condition>),
    All(Vec<Condition>),
    Not(Box<Condition>),
    Present(String),
    Compare(String, String, Value),
}

impl Condition {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let alternatives = split_keyword(text, "or");
        if alternatives.len() > 1 {
            return alternatives
                .into_iter()
                .map(Self::parse)
                .collect::<Result<_, _>>()
                .map(Self::Any);
        }
        let conjuncts = split_keyword(text, "and");
        if conjuncts.len() > 1 {
            return conjuncts
                .into_iter()
                .map(Self::parse)
                .collect::<Result<_, _>>()
                .map(Self::All);
        }
        if let Some(rest) = text.strip_prefix("not ") {
            return Ok(Self::Not(Box::new(Self::parse(rest)?)));
        }
        if let Some(field) = text.strip_prefix("ispresent(").and_then(|rest| rest.strip_suffix(')')) {
            return Ok(Self::Present(field.trim().to_owned()));
        }
        for op in ["!=", "<=", ">=", "=", "<", ">"] {
            if let Some((field, value)) = text.split_once(op) {
                return Ok(Self::Compare(
                    field.trim().to_owned(),
                    op.to_owned(),
                    literal(value.trim())?,
                ));
            }
        }
        Err(format!("unsupported condition {text:?}"))
    }

    fn holds(&self, row: &Row) -> bool {
        match self {
            Self::Any(all) => all.iter().any(|c| c.holds(row)),
            Self::All(all) => all.iter().all(|c| c.holds(row)),
            Self::Not(inner) => !inner.holds(row),
            Self::Present(field) => row.get(field).is_some_and(|v| !v.is_null()),
            Self::Compare(field, op, value) => {
                // A missing field matches no comparison (as in Logs Insights), not even `!=`.
                let Some(actual) = row.get(field) else {
                    return false;
                };
                let order = compare(actual, value);
                match op.as_str() {
                    "=" => order == Some(Ordering::Equal),
                    "!=" => order != Some(Ordering::Equal),
                    "<" => order == Some(Ordering::Less),
                    "<=" => matches!(order, Some(Ordering::Less | Ordering::Equal)),
                    ">" => order == Some(Ordering::Greater),
                    _ => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
                }
            }
        }
    }
}

fn literal(text: &str) -> Result<Value, String> {
    for q in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(q).and_then(|t| t.strip_suffix(q)) {
            return Ok(Value::String(inner.to_owned()));
        }
    }
    text.parse::<f64>()
        .map(|n| json!(n))
        .map_err(|_| format!("unsupported value {text:?}"))
}

fn compare(actual: &Value, expected: &Value) -> Option<Ordering> {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::String(a), Value::Number(b)) => a.parse::<f64>().ok()?.partial_cmp(&b.as_f64()?),
        (Value::Bool(a), Value::String(b)) => Some(a.to_string().cmp(b)),
        _ => None,
    }
}

fn sort(mut rows: Vec<Row>, spec: &str) -> Result<Vec<Row>, String> {
    let mut words = spec.split_whitespace();
    let field = words.next().ok_or("sort needs a field")?.to_owned();
    let descending = match words.next() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(format!("sort order {other:?}")),
    };
    rows.sort_by(|a, b| {
        let order = match (a.get(&field), b.get(&field)) {
            (Some(x), Some(y)) => compare(x, y).unwrap_or(Ordering::Equal),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        if descending {
            order.reverse()
        } else {
            order
        }
    });
    Ok(rows)
}

fn stats(rows: &[Row], spec: &str) -> Result<Vec<Row>, String> {
    let by = split_keyword(spec, "by");
    let aggregates: Vec<(String, String)> = split_outside(by[0], ",")
        .into_iter()
        .map(|part| {
            let parts = split_keyword(part.trim(), "as");
            let expression = parts[0].trim().to_owned();
            let name = parts.get(1).map_or_else(|| expression.clone(), |n| n.trim().to_owned());
            (expression, name)
        })
        .collect();
    let groups: Vec<String> = by
        .get(1)
        .map(|g| split_outside(g, ",").into_iter().map(|f| f.trim().to_owned()).collect())
        .unwrap_or_default();
    let mut grouped: BTreeMap<Vec<String>, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        let key = groups
            .iter()
            .map(|g| group_value(row, g))
            .collect::<Result<Vec<_>, _>>()?;
        grouped.entry(key).or_default().push(row);
    }
    let mut out = Vec::new();
    for (key, members) in grouped {
        let mut row = Row::new();
        for (group, value) in groups.iter().zip(key) {
            row.insert(group.clone(), Value::String(value));
        }
        for (expression, name) in &aggregates {
            row.insert(name.clone(), aggregate(expression, &members)?);
        }
        out.push(row);
    }
    Ok(out)
}

fn group_value(row: &Row, group: &str) -> Result<String, String> {
    if let Some(width) = group.strip_prefix("bin(").and_then(|g| g.strip_suffix(')')) {
        let (n, unit) = width.split_at(width.len() - 1);
        let n: i64 = n.parse().map_err(|_| format!("bin width {width:?}"))?;
        let ms = match unit {
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            _ => return Err(format!("bin unit {unit:?}")),
        };
        let at = row.get("@timestamp").and_then(Value::as_i64).unwrap_or_default();
        return Ok((at - at.rem_euclid(ms)).to_string());
    }
    Ok(match row.get(group) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    })
}

fn aggregate(expression: &str, rows: &[&Row]) -> Result<Value, String> {
    let (function, argument) = expression
        .strip_suffix(')')
        .and_then(|e| e.split_once('('))
        .ok_or_else(|| format!("unsupported aggregate {expression:?}"))?;
    if function == "count" {
        let argument = argument.trim();
        let n = rows
            .iter()
            .filter(|row| argument == "*" || row.get(argument).is_some_and(|v| !v.is_null()))
            .count();
        return Ok(json!(n));
    }
    let (field, percentile) = match argument.split_once(',') {
        Some((field, p)) => (
            field.trim(),
            Some(p.trim().parse::<f64>().map_err(|_| format!("pct {p:?}"))?),
        ),
        None => (argument.trim(), None),
    };
    let mut values: Vec<f64> = rows.iter().filter_map(|row| row.get(field)?.as_f64()).collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    if values.is_empty() {
        return Ok(Value::Null);
    }
    let value = match (function, percentile) {
        ("max", None) => values[values.len() - 1],
        ("min", None) => values[0],
        ("avg", None) => values.iter().sum::<f64>() / values.len() as f64,
        ("pct", Some(p)) => {
            let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        }
        _ => return Err(format!("unsupported aggregate {expression:?}")),
    };
    Ok(json!(value))
}

/// The queries of a Markdown document: each ```` ```logs-insights ```` block with the heading it
/// sits under.
pub fn documented_queries(markdown: &str) -> Vec<(String, String)> {
    let mut heading = String::new();
    let mut queries = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            Some(query) if line.trim_start().starts_with("```") => {
                queries.push((heading.clone(), query.trim().to_owned()));
                current = None;
            }
            Some(query) => {
                query.push_str(line);
                query.push('\n');
            }
            None if line.trim_start().starts_with("```logs-insights") => current = Some(String::new()),
            None if line.starts_with('#') => heading = line.trim_start_matches('#').trim().to_owned(),
            None => {}
        }
    }
    queries
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[&str] = &[
        r#"{"timestamp":"2026-01-01T10:00:00.000Z","level":"INFO","event":"claim_decision","outcome":"created","claim_id":"c1","latency_ms":12}"#,
        r#"{"timestamp":"2026-01-01T10:00:01.000Z","level":"INFO","event":"claim_publish","outcome":"published","claim_id":"c1","latency_ms":3}"#,
        r#"{"timestamp":"2026-01-01T10:30:00.000Z","level":"INFO","event":"claim_decision","outcome":"already_claimed","latency_ms":40}"#,
        r#"{"timestamp":"2026-01-01T11:10:00.000Z","level":"WARN","event":"claim_decision","outcome":"rate_limited","latency_ms":5}"#,
        r#"{"_aws":{"Timestamp":1},"ClaimRequests":1,"outcome":"created"}"#,
        "not json",
    ];

    #[test]
    fn filters_sorts_limits_and_counts_by_hour_like_logs_insights() {
        let story = run(
            r#"fields @timestamp, event | filter claim_id = "c1" | sort @timestamp desc"#,
            LOG,
        )
        .unwrap();
        let events: Vec<_> = story.iter().map(|r| r["event"].clone()).collect();
        assert_eq!(events, vec![json!("claim_publish"), json!("claim_decision")]);

        let refused = run(
            r#"filter event = "claim_decision" and outcome != "created" and outcome != "existing"
               | stats count(*) as refused by bin(1h), outcome"#,
            LOG,
        )
        .unwrap();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused.iter().all(|r| r["refused"] == 1));

        let slowest = run(
            r#"filter event = "claim_decision" | sort latency_ms desc | limit 1"#,
            LOG,
        )
        .unwrap();
        assert_eq!(slowest[0]["outcome"], "already_claimed");

        let p99 = run(
            r#"filter ispresent(latency_ms) | stats pct(latency_ms, 99) as p99, count(*) as n"#,
            LOG,
        )
        .unwrap();
        assert_eq!((p99[0]["p99"].clone(), p99[0]["n"].clone()), (json!(40.0), json!(4)));

        let warned = run(
            r#"filter level = "ERROR" or level = "WARN" | stats count(*) by event"#,
            LOG,
        )
        .unwrap();
        assert_eq!(warned.len(), 1);
        let absent = run(r#"filter not ispresent(_aws) and outcome = "created""#, LOG).unwrap();
        assert_eq!(absent.len(), 1, "the metric document is excluded");
    }

    #[test]
    fn anything_outside_the_subset_is_an_error() {
        assert!(run("parse @message /x/", LOG).is_err());
        assert!(run(r#"filter outcome like /fail/"#, LOG).is_err());
        assert!(run("stats sum(latency_ms)", LOG).is_err());
    }

    #[test]
    fn queries_are_found_under_their_headings() {
        let doc = "# Ops\n### A claim\n```logs-insights\nfilter claim_id = \"x\"\n```\n```sh\nls\n```\n";
        assert_eq!(
            documented_queries(doc),
            vec![("A claim".to_owned(), "filter claim_id = \"x\"".to_owned())]
        );
    }
}
