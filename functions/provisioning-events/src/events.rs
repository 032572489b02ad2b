//! The AWS IoT events that tell us a device arrived in the OEM account, as the topic rules deliver
//! them (protocol §5): the event payload plus the fields each rule's SQL adds
//! (`event_kind`, and the topic-derived thing name or client id). Unknown fields are ignored,
//! missing optional ones are tolerated; anything that cannot name a device is refused.
//!
//! A refusal's reason ([`MalformedEvent`]) is a short fixed text: it never quotes the payload, so it
//! can go to the log as it is.

use claim_shared::domain::ids::ThingName;
use serde::Deserialize;
use serde_json::{error::Category, Value};
use time::OffsetDateTime;

/// `$aws/events/thing/<name>/created|updated|deleted` (registry events).
/// Rule: `SELECT *, topic(4) AS thing_name_from_topic, 'thing_created' AS event_kind FROM '$aws/events/thing/+/created'`
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingEvent {
    pub operation: Option<String>,
    pub account_id: Option<String>,
    pub thing_name: Option<String>,
    pub timestamp: Option<i64>,
    #[serde(rename = "thing_name_from_topic")]
    pub thing_name_from_topic: Option<String>,
}

/// `$aws/events/presence/connected/<clientId>` (lifecycle events, always on).
/// Rule: `SELECT *, topic(5) AS client_id_from_topic, 'presence_connected' AS event_kind FROM '$aws/events/presence/connected/+'`
/// (with `NarrowPresenceRule`, a WHERE clause skips owned, fully recorded devices: template.yaml).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEvent {
    pub client_id: Option<String>,
    pub event_type: Option<String>,
    /// For mutual TLS: the certificate id.
    pub principal_identifier: Option<String>,
    /// Present only with the "exclusive thing" feature.
    pub thing_name: Option<String>,
    pub timestamp: Option<i64>,
    #[serde(rename = "client_id_from_topic")]
    pub client_id_from_topic: Option<String>,
}

/// `$aws/events/certificates/registered/<caCertificateId>` (JITR notice; diagnostics only).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRegisteredEvent {
    pub certificate_id: Option<String>,
    pub ca_certificate_id: Option<String>,
    pub aws_account_id: Option<String>,
}

#[derive(Debug, Clone)]
pub enum IotEvent {
    Thing(ThingEvent),
    Presence(PresenceEvent),
    CertificateRegistered(CertificateRegisteredEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedEvent(pub String);

impl MalformedEvent {
    fn new(reason: &str) -> Self {
        MalformedEvent(reason.to_owned())
    }
}

/// The largest payload accepted. AWS IoT rule payloads are at most 128 KB (plus what the rule's SQL
/// adds); anything larger is not one of our events.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// The invocation payload, as the bytes Lambda received, to the JSON object of an event. Refuses
/// anything that is not one, whatever the bytes: too large, empty, not UTF-8, not JSON (including
/// JSON nested deeper than serde_json's recursion limit of 128, which it refuses without
/// recursing further), or JSON but not an object.
pub fn decode(payload: &[u8]) -> Result<Value, MalformedEvent> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(MalformedEvent::new("too large"));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(MalformedEvent::new("empty"));
    }
    if std::str::from_utf8(payload).is_err() {
        return Err(MalformedEvent::new("not UTF-8"));
    }
    let value: Value = serde_json::from_slice(payload).map_err(|err| {
        MalformedEvent::new(match err.classify() {
            Category::Eof => "truncated JSON",
            _ if err.to_string().starts_with("recursion limit exceeded") => "JSON nested too deep",
            _ => "not JSON",
        })
    })?;
    if !value.is_object() {
        return Err(MalformedEvent::new("not a JSON object"));
    }
    Ok(value)
}

impl IotEvent {
    /// Classifies by the rule's `event_kind`, or by the payload's own markers when a rule did not
    /// add one.
    pub fn parse(value: &Value) -> Result<Self, MalformedEvent> {
        let kind = value.get("event_kind").and_then(Value::as_str);
        let marker = value.get("eventType").and_then(Value::as_str);
        let event = match (kind, marker) {
            (Some("thing_created"), _) | (None, Some("THING_EVENT")) => {
                IotEvent::Thing(serde_json::from_value(value.clone()).map_err(wrong_type("thing event"))?)
            }
            (Some("presence_connected"), _) | (None, Some("connected")) => {
                IotEvent::Presence(serde_json::from_value(value.clone()).map_err(wrong_type("presence event"))?)
            }
            (Some("certificate_registered"), _) | (None, None) if value.get("certificateStatus").is_some() => {
                IotEvent::CertificateRegistered(
                    serde_json::from_value(value.clone()).map_err(wrong_type("certificate event"))?,
                )
            }
            _ => return Err(MalformedEvent("not a thing, presence or certificate event".into())),
        };
        Ok(event)
    }
}

/// A device showing up in the OEM account, in domain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub thing_name: ThingName,
    pub certificate_id: Option<String>,
    pub account_id: Option<String>,
    pub at: Option<OffsetDateTime>,
}

/// What an event means for claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meaning {
    Arrival(Arrival),
    /// Valid, but says nothing about a device arriving (an update, a disconnect, a JITR notice).
    Irrelevant(&'static str),
}

impl IotEvent {
    pub fn meaning(&self) -> Result<Meaning, MalformedEvent> {
        match self {
            IotEvent::Thing(event) => {
                if event.operation.as_deref() != Some("CREATED") {
                    return Ok(Meaning::Irrelevant("thing_event_not_created"));
                }
                let name = consistent(event.thing_name_from_topic.as_deref(), event.thing_name.as_deref())?;
                Ok(Meaning::Arrival(Arrival {
                    thing_name: thing(name)?,
                    certificate_id: None,
                    account_id: event.account_id.clone(),
                    at: event.timestamp.and_then(from_millis),
                }))
            }
            IotEvent::Presence(event) => {
                if event.event_type.as_deref() != Some("connected") {
                    return Ok(Meaning::Irrelevant("presence_not_connected"));
                }
                // ExpressLink connects with its ThingName as client id (protocol §8.4, assumed);
                // the exclusive-thing feature names the thing outright.
                let name = match event.thing_name.as_deref() {
                    Some(name) => Some(name),
                    None => Some(consistent(
                        event.client_id_from_topic.as_deref(),
                        event.client_id.as_deref(),
                    )?),
                };
                Ok(Meaning::Arrival(Arrival {
                    thing_name: thing(name.unwrap_or_default())?,
                    certificate_id: event.principal_identifier.clone(),
                    account_id: None,
                    at: event.timestamp.and_then(from_millis),
                }))
            }
            IotEvent::CertificateRegistered(_) => Ok(Meaning::Irrelevant("certificate_registered")),
        }
    }
}

/// Every field is optional, so a type is all that can be wrong; serde's message is not used, as it
/// would quote the offending value.
fn wrong_type(event: &'static str) -> impl Fn(serde_json::Error) -> MalformedEvent {
    move |_| MalformedEvent(format!("{event}: a field has the wrong type"))
}

/// The name from the topic and from the payload must agree when both are present.
fn consistent<'a>(from_topic: Option<&'a str>, from_payload: Option<&'a str>) -> Result<&'a str, MalformedEvent> {
    match (from_topic, from_payload) {
        (Some(a), Some(b)) if a != b => Err(MalformedEvent("topic and payload name different things".into())),
        (Some(name), _) | (None, Some(name)) => Ok(name),
        (None, None) => Err(MalformedEvent("no thing name in the event".into())),
    }
}

fn thing(name: &str) -> Result<ThingName, MalformedEvent> {
    ThingName::parse(name).map_err(|err| MalformedEvent(format!("thing name: {err}")))
}

fn from_millis(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any payload: an event and its meaning, or a short reason, never a panic and never the
        /// payload's own text.
        #[test]
        fn any_payload_is_classified(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(value) = decode(&bytes) {
                let _ = IotEvent::parse(&value).and_then(|event| event.meaning());
            }
        }

        #[test]
        fn any_json_event_is_classified_without_quoting_it(marker in "[A-Z]{10}", kind in 0usize..4) {
            let event = match kind {
                0 => serde_json::json!({"event_kind": "thing_created", "operation": "CREATED", "thingName": marker.clone(), "thing_name_from_topic": "x"}),
                1 => serde_json::json!({"event_kind": "presence_connected", "eventType": "connected", "clientId": [marker.clone()]}),
                2 => serde_json::json!({"eventType": marker.clone()}),
                _ => serde_json::json!({"event_kind": "thing_created", "operation": 7, "timestamp": marker.clone()}),
            };
            if let Err(MalformedEvent(reason)) = IotEvent::parse(&event).and_then(|event| event.meaning()) {
                proptest::prop_assert!(!reason.contains(&marker), "{}", reason);
            }
        }
    }
}
