//! Items of the table and the domain records they hold, both ways. An item that does not read
//! back as a valid record is `StoreError::Corrupt`, with the attribute named and never a label
//! code or its hash in the message.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use super::keys::{
    claim_pk, code_pk, device_pk, idempotency_pk, idempotency_sk, padded_millis, quarantine_sk, state_pk, user_pk,
    CLAIM_SK, CODE_SK, DEVICE_SK, OUTBOX_PK, QUARANTINE_PK,
};
use crate::{
    domain::{
        claim::{Claim, ClaimState, Failure, StateChange},
        device::{Device, Holder, Provisioning},
        history::{Actor, HistoryEntry, HistoryEvent},
        ids::{ClaimId, ThingName, UserId},
        label_code::CodeHash,
        lifecycle::HistoryContext,
        quarantine::{Quarantine, QuarantineReason},
    },
    ports::{IdempotencyRecord, StoreError},
};

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(super) fn device_item(device: &Device) -> Item {
    let mut item = Item::from([
        ("pk".to_owned(), s(device_pk(&device.thing_name))),
        ("sk".to_owned(), s(DEVICE_SK)),
        ("entity".to_owned(), s("device")),
        ("thing_name".to_owned(), s(device.thing_name.as_str())),
        ("vendor".to_owned(), s(&device.vendor)),
        ("disabled".to_owned(), AttributeValue::Bool(device.disabled)),
        ("imported_at".to_owned(), n(millis(device.imported_at))),
        ("version".to_owned(), n(device.version)),
        ("history_len".to_owned(), n(device.history_len)),
    ]);
    if let Some(claim_id) = &device.last_claim {
        item.insert("last_claim_id".to_owned(), s(claim_id.as_str()));
    }
    if let Some(provisioning) = &device.provisioning {
        let mut map = HashMap::new();
        for (name, value) in [
            ("certificate_id", &provisioning.certificate_id),
            ("account_id", &provisioning.account_id),
            ("region", &provisioning.region),
        ] {
            if let Some(value) = value {
                map.insert(name.to_owned(), s(value));
            }
        }
        item.insert("provisioning".to_owned(), AttributeValue::M(map));
    }
    if let Some(sku) = &device.sku {
        item.insert("sku".to_owned(), s(sku));
    }
    if let Some(hash) = &device.code_hash {
        item.insert("code_hash".to_owned(), s(hash.as_str()));
    }
    item.insert(
        "thing_name_claims".to_owned(),
        AttributeValue::Bool(device.thing_name_claims),
    );
    if let Some(quarantine) = &device.quarantine {
        item.insert(
            "quarantine".to_owned(),
            AttributeValue::M(quarantine_fields(quarantine)),
        );
    }
    let held = match &device.holder {
        Holder::Free => None,
        Holder::Reserved {
            claim_id,
            user,
            expires_at,
        } => {
            item.insert("holder_until".to_owned(), n(millis(*expires_at)));
            Some(("reserved", claim_id, user))
        }
        Holder::Owned { claim_id, user, since } => {
            item.insert("holder_since".to_owned(), n(millis(*since)));
            Some(("owned", claim_id, user))
        }
    };
    match held {
        None => {
            item.insert("holder_kind".to_owned(), s("free"));
        }
        Some((kind, claim_id, user)) => {
            item.insert("holder_kind".to_owned(), s(kind));
            item.insert("holder_claim_id".to_owned(), s(claim_id.as_str()));
            item.insert("holder_user".to_owned(), s(user.as_str()));
            item.insert("gsi1pk".to_owned(), s(user_pk(user)));
            item.insert("gsi1sk".to_owned(), s(device_pk(&device.thing_name)));
        }
    }
    item
}

pub(super) fn device_from(item: &Item) -> Result<Device, StoreError> {
    let holder = match str_attr(item, "holder_kind")? {
        "free" => Holder::Free,
        "reserved" => Holder::Reserved {
            claim_id: claim_id_attr(item, "holder_claim_id")?,
            user: user_attr(item, "holder_user")?,
            expires_at: time_attr(item, "holder_until")?,
        },
        "owned" => Holder::Owned {
            claim_id: claim_id_attr(item, "holder_claim_id")?,
            user: user_attr(item, "holder_user")?,
            since: time_attr(item, "holder_since")?,
        },
        other => return Err(corrupt("holder_kind", other)),
    };
    Ok(Device {
        thing_name: thing_attr(item, "thing_name")?,
        vendor: str_attr(item, "vendor")?.to_owned(),
        sku: opt_str_attr(item, "sku")?.map(str::to_owned),
        disabled: match item.get("disabled") {
            Some(AttributeValue::Bool(value)) => *value,
            _ => return Err(corrupt("disabled", "not a boolean")),
        },
        holder,
        imported_at: time_attr(item, "imported_at")?,
        version: u64_attr(item, "version")?,
        history_len: u64_attr(item, "history_len")?,
        last_claim: opt_str_attr(item, "last_claim_id")?
            .map(|raw| ClaimId::parse(raw).ok_or_else(|| corrupt("last_claim_id", raw)))
            .transpose()?,
        provisioning: match item.get("provisioning") {
            None => None,
            Some(AttributeValue::M(map)) => Some(Provisioning {
                certificate_id: opt_str_attr(map, "certificate_id")?.map(str::to_owned),
                account_id: opt_str_attr(map, "account_id")?.map(str::to_owned),
                region: opt_str_attr(map, "region")?.map(str::to_owned),
            }),
            Some(_) => return Err(corrupt("provisioning", "not a map")),
        },
        // The hash is never put into an error message: errors reach logs.
        code_hash: opt_str_attr(item, "code_hash")?
            .map(|raw| CodeHash::parse(raw).ok_or_else(|| corrupt("code_hash", "not a label code hash")))
            .transpose()?,
        // Devices imported before label codes existed are claimed by their ThingName.
        thing_name_claims: match item.get("thing_name_claims") {
            None => true,
            Some(AttributeValue::Bool(value)) => *value,
            Some(_) => return Err(corrupt("thing_name_claims", "not a boolean")),
        },
        quarantine: match item.get("quarantine") {
            None => None,
            Some(AttributeValue::M(map)) => Some(quarantine_from_fields(thing_attr(item, "thing_name")?, map)?),
            Some(_) => return Err(corrupt("quarantine", "not a map")),
        },
    })
}

/// A quarantine as the device item and the list entry both hold it.
fn quarantine_fields(quarantine: &Quarantine) -> Item {
    Item::from([
        ("certificate_id".to_owned(), s(&quarantine.certificate_id)),
        ("reason".to_owned(), s(quarantine.reason.as_str())),
        ("since".to_owned(), n(millis(quarantine.since))),
    ])
}

fn quarantine_from_fields(thing_name: ThingName, fields: &Item) -> Result<Quarantine, StoreError> {
    let reason = str_attr(fields, "reason")?;
    Ok(Quarantine {
        thing_name,
        certificate_id: str_attr(fields, "certificate_id")?.to_owned(),
        reason: QuarantineReason::parse(reason).ok_or_else(|| corrupt("reason", reason))?,
        since: time_attr(fields, "since")?,
    })
}

/// The quarantine list entry: one partition, sorted by ThingName.
pub(super) fn quarantine_item(quarantine: &Quarantine) -> Item {
    let mut item = quarantine_fields(quarantine);
    item.extend([
        ("pk".to_owned(), s(QUARANTINE_PK)),
        ("sk".to_owned(), s(quarantine_sk(&quarantine.thing_name))),
        ("entity".to_owned(), s("quarantine")),
        ("thing_name".to_owned(), s(quarantine.thing_name.as_str())),
    ]);
    item
}

pub(super) fn quarantine_from(item: &Item) -> Result<Quarantine, StoreError> {
    quarantine_from_fields(thing_attr(item, "thing_name")?, item)
}

pub(super) fn claim_item(claim: &Claim) -> Item {
    let history = claim
        .history
        .iter()
        .map(|change| {
            AttributeValue::M(HashMap::from([
                ("state".to_owned(), s(change.state.as_str())),
                ("at".to_owned(), n(millis(change.at))),
            ]))
        })
        .collect();
    let mut item = Item::from([
        ("pk".to_owned(), s(claim_pk(&claim.claim_id))),
        ("sk".to_owned(), s(CLAIM_SK)),
        ("entity".to_owned(), s("claim")),
        ("claim_id".to_owned(), s(claim.claim_id.as_str())),
        ("thing_name".to_owned(), s(claim.thing_name.as_str())),
        ("user_id".to_owned(), s(claim.user.as_str())),
        ("vendor".to_owned(), s(&claim.vendor)),
        ("state".to_owned(), s(claim.state.as_str())),
        ("publish_attempts".to_owned(), n(claim.publish_attempts)),
        ("target_endpoint".to_owned(), s(&claim.target_endpoint)),
        ("target_rule".to_owned(), s(&claim.target_rule)),
        ("created_at".to_owned(), n(millis(claim.created_at))),
        ("updated_at".to_owned(), n(millis(claim.updated_at))),
        ("expires_at".to_owned(), n(millis(claim.expires_at))),
        ("history".to_owned(), AttributeValue::L(history)),
        ("version".to_owned(), n(claim.version)),
        ("gsi1pk".to_owned(), s(user_pk(&claim.user))),
        (
            "gsi1sk".to_owned(),
            s(format!("CLAIM#{}#{}", padded_millis(claim.created_at), claim.claim_id)),
        ),
        ("gsi2pk".to_owned(), s(state_pk(claim.state))),
        (
            "gsi2sk".to_owned(),
            s(format!("{}#{}", padded_millis(claim.expires_at), claim.claim_id)),
        ),
    ]);
    if let Some(due) = claim.next_publish_at {
        // Sparse outbox index: only claims that owe a publish are in it.
        item.insert("next_publish_at".to_owned(), n(millis(due)));
        item.insert("gsi3pk".to_owned(), s(OUTBOX_PK));
        item.insert(
            "gsi3sk".to_owned(),
            s(format!("{}#{}", padded_millis(due), claim.claim_id)),
        );
    }
    if let Some(at) = claim.retried_at {
        item.insert("retried_at".to_owned(), n(millis(at)));
    }
    if let Some(failure) = &claim.failure {
        item.insert("failure_code".to_owned(), s(&failure.code));
        item.insert("failure_message".to_owned(), s(&failure.message));
    }
    item
}

pub(super) fn claim_from(item: &Item) -> Result<Claim, StoreError> {
    let state_name = str_attr(item, "state")?;
    let state = ClaimState::parse(state_name).ok_or_else(|| corrupt("state", state_name))?;
    let history = match item.get("history") {
        Some(AttributeValue::L(entries)) => entries
            .iter()
            .map(|entry| match entry {
                AttributeValue::M(map) => {
                    let name = str_attr(map, "state")?;
                    Ok(StateChange {
                        state: ClaimState::parse(name).ok_or_else(|| corrupt("history.state", name))?,
                        at: time_attr(map, "at")?,
                    })
                }
                _ => Err(corrupt("history", "entry is not a map")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(corrupt("history", "missing")),
    };
    let failure = match (
        opt_str_attr(item, "failure_code")?,
        opt_str_attr(item, "failure_message")?,
    ) {
        (Some(code), Some(message)) => Some(Failure {
            code: code.to_owned(),
            message: message.to_owned(),
        }),
        _ => None,
    };
    Ok(Claim {
        claim_id: claim_id_attr(item, "claim_id")?,
        thing_name: thing_attr(item, "thing_name")?,
        user: user_attr(item, "user_id")?,
        vendor: str_attr(item, "vendor")?.to_owned(),
        state,
        target_endpoint: str_attr(item, "target_endpoint")?.to_owned(),
        // Claims written before endpoint selection existed had the one endpoint.
        target_rule: opt_str_attr(item, "target_rule")?.unwrap_or("default").to_owned(),
        created_at: time_attr(item, "created_at")?,
        updated_at: time_attr(item, "updated_at")?,
        expires_at: time_attr(item, "expires_at")?,
        history,
        failure,
        publish_attempts: u32::try_from(u64_attr(item, "publish_attempts")?)
            .map_err(|_| corrupt("publish_attempts", "too large"))?,
        next_publish_at: item
            .contains_key("next_publish_at")
            .then(|| time_attr(item, "next_publish_at"))
            .transpose()?,
        retried_at: item
            .contains_key("retried_at")
            .then(|| time_attr(item, "retried_at"))
            .transpose()?,
        version: u64_attr(item, "version")?,
    })
}

/// A history entry's item, with the context its lifecycle event names (the device's vendor, and
/// the user and endpoint of the claim the change wrote with it), so the change stream alone makes
/// the event.
pub(super) fn history_item(device: &Device, entry: &HistoryEntry, claim: Option<&Claim>) -> Item {
    let mut item = Item::from([
        ("pk".to_owned(), s(device_pk(&device.thing_name))),
        ("vendor".to_owned(), s(&device.vendor)),
        ("sk".to_owned(), s(format!("HISTORY#{:010}", entry.seq))),
        ("entity".to_owned(), s("history")),
        ("seq".to_owned(), n(entry.seq)),
        ("at".to_owned(), n(millis(entry.at))),
        ("event".to_owned(), s(entry.event.as_str())),
    ]);
    let (kind, id) = match &entry.actor {
        Actor::User(user) => ("user", Some(user.as_str())),
        Actor::Operator(operator) => ("operator", Some(operator.as_str())),
        Actor::System => ("system", None),
    };
    item.insert("actor_kind".to_owned(), s(kind));
    if let Some(id) = id {
        item.insert("actor_id".to_owned(), s(id));
    }
    if let Some(claim_id) = &entry.claim_id {
        item.insert("claim_id".to_owned(), s(claim_id.as_str()));
    }
    if let Some(reason) = &entry.reason {
        item.insert("reason".to_owned(), s(reason));
    }
    if let Some(claim) = claim {
        item.insert("claim_user".to_owned(), s(claim.user.as_str()));
        item.insert("target_endpoint".to_owned(), s(&claim.target_endpoint));
    }
    item
}

/// The thing a history item belongs to and its lifecycle context (see [`history_item`]).
pub(super) fn history_context_from(item: &Item) -> Result<(ThingName, HistoryContext), StoreError> {
    let pk = str_attr(item, "pk")?;
    let thing = pk
        .strip_prefix("DEVICE#")
        .and_then(|raw| ThingName::parse(raw).ok())
        // The key names the device: never in an error (it ends up in logs).
        .ok_or_else(|| corrupt("pk", "not a device key"))?;
    let context = HistoryContext {
        vendor: opt_str_attr(item, "vendor")?.map(str::to_owned),
        claim_user: opt_str_attr(item, "claim_user")?
            .map(|raw| UserId::parse(raw).map_err(|_| corrupt("claim_user", raw)))
            .transpose()?,
        target_endpoint: opt_str_attr(item, "target_endpoint")?.map(str::to_owned),
    };
    Ok((thing, context))
}

pub(super) fn history_from(item: &Item) -> Result<HistoryEntry, StoreError> {
    let event_name = str_attr(item, "event")?;
    let actor = match (str_attr(item, "actor_kind")?, opt_str_attr(item, "actor_id")?) {
        ("user", Some(id)) => Actor::User(UserId::parse(id).map_err(|_| corrupt("actor_id", id))?),
        ("operator", Some(id)) => Actor::Operator(id.to_owned()),
        ("system", None) => Actor::System,
        (kind, _) => return Err(corrupt("actor_kind", kind)),
    };
    Ok(HistoryEntry {
        seq: u64_attr(item, "seq")?,
        at: time_attr(item, "at")?,
        event: HistoryEvent::parse(event_name).ok_or_else(|| corrupt("event", event_name))?,
        actor,
        claim_id: opt_str_attr(item, "claim_id")?
            .map(|raw| ClaimId::parse(raw).ok_or_else(|| corrupt("claim_id", raw)))
            .transpose()?,
        reason: opt_str_attr(item, "reason")?.map(str::to_owned),
    })
}

pub(super) fn idempotency_item(record: &IdempotencyRecord) -> Item {
    Item::from([
        ("pk".to_owned(), s(idempotency_pk(&record.user))),
        ("sk".to_owned(), s(idempotency_sk(&record.key))),
        ("entity".to_owned(), s("idempotency")),
        ("claim_id".to_owned(), s(record.claim_id.as_str())),
        ("fingerprint".to_owned(), s(&record.fingerprint)),
        ("created_at".to_owned(), n(millis(record.created_at))),
        ("expires_at".to_owned(), n(millis(record.expires_at))),
        // DynamoDB TTL (epoch seconds) only reclaims space; correctness uses `expires_at`.
        ("ttl".to_owned(), n(record.expires_at.unix_timestamp())),
    ])
}

pub(super) fn corrupt(attribute: &str, detail: &str) -> StoreError {
    StoreError::Corrupt(format!("attribute {attribute}: {detail}"))
}

pub(super) fn opt_str_attr<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(value)) => Ok(Some(value)),
        Some(_) => Err(corrupt(name, "not a string")),
    }
}

pub(super) fn str_attr<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    opt_str_attr(item, name)?.ok_or_else(|| corrupt(name, "missing"))
}

pub(super) fn u64_attr(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(raw)) => raw.parse().map_err(|_| corrupt(name, raw)),
        _ => Err(corrupt(name, "missing or not a number")),
    }
}

pub(super) fn time_attr(item: &Item, name: &str) -> Result<OffsetDateTime, StoreError> {
    let ms: i64 = match item.get(name) {
        Some(AttributeValue::N(raw)) => raw.parse().map_err(|_| corrupt(name, raw))?,
        _ => return Err(corrupt(name, "missing or not a number")),
    };
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|_| corrupt(name, "out of range"))
}

pub(super) fn thing_attr(item: &Item, name: &str) -> Result<ThingName, StoreError> {
    let raw = str_attr(item, name)?;
    // The value is a label code: errors (which reach logs) never carry it.
    ThingName::parse(raw).map_err(|_| corrupt(name, "not a valid thing name"))
}

pub(super) fn user_attr(item: &Item, name: &str) -> Result<UserId, StoreError> {
    let raw = str_attr(item, name)?;
    UserId::parse(raw).map_err(|_| corrupt(name, raw))
}

pub(super) fn claim_id_attr(item: &Item, name: &str) -> Result<ClaimId, StoreError> {
    let raw = str_attr(item, name)?;
    ClaimId::parse(raw).ok_or_else(|| corrupt(name, raw))
}

/// The lookup entry of a label code: which device it belongs to.
pub(super) fn code_item(hash: &CodeHash, thing: &ThingName) -> Item {
    Item::from([
        ("pk".to_owned(), s(code_pk(hash))),
        ("sk".to_owned(), s(CODE_SK)),
        ("entity".to_owned(), s("label_code")),
        ("thing_name".to_owned(), s(thing.as_str())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample_claim() -> Claim {
        let mut claim = Claim::new(
            ClaimId::new_random(),
            ThingName::parse("dev-1").expect("valid"),
            UserId::parse("user-a").expect("valid"),
            "espressif".into(),
            "oem-ats.iot.eu-west-1.amazonaws.com".into(),
            datetime!(2026-01-01 10:00:00.123 UTC),
            time::Duration::minutes(15),
        );
        claim.failure = Some(Failure {
            code: "staging_unreachable".into(),
            message: "connection refused".into(),
        });
        claim.retried_at = Some(datetime!(2026-01-01 10:01:00.5 UTC));
        claim
    }

    #[test]
    fn claims_survive_the_round_trip() {
        let claim = sample_claim();
        assert_eq!(claim_from(&claim_item(&claim)), Ok(claim));
    }

    #[test]
    fn devices_survive_the_round_trip_in_every_holder_state() {
        let claim = sample_claim();
        for holder in [
            Holder::Free,
            Holder::Reserved {
                claim_id: claim.claim_id.clone(),
                user: claim.user.clone(),
                expires_at: claim.expires_at,
            },
            Holder::Owned {
                claim_id: claim.claim_id.clone(),
                user: claim.user.clone(),
                since: claim.created_at,
            },
        ] {
            let device = Device {
                thing_name: claim.thing_name.clone(),
                vendor: "espressif".into(),
                sku: Some("SKU-1".into()),
                disabled: true,
                holder,
                imported_at: claim.created_at,
                version: 7,
                history_len: 3,
                last_claim: Some(claim.claim_id.clone()),
                provisioning: Some(Provisioning {
                    certificate_id: Some("e3b0c442".into()),
                    account_id: None,
                    region: Some("eu-west-1".into()),
                }),
                code_hash: CodeHash::parse(&"0f".repeat(32)),
                thing_name_claims: false,
                quarantine: Some(Quarantine {
                    thing_name: claim.thing_name.clone(),
                    certificate_id: "ab".repeat(32),
                    reason: QuarantineReason::Disabled,
                    since: claim.created_at,
                }),
            };
            assert_eq!(device_from(&device_item(&device)), Ok(device));
        }
    }
}
