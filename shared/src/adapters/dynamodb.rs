//! [`OwnershipStore`] on one DynamoDB table (single-table design; the key design is documented in
//! `docs/data-model.md`).
//!
//! | item        | pk                    | sk                  | gsi1 (`by_user`)                       | gsi2 (`by_state`)                  |
//! |-------------|-----------------------|---------------------|----------------------------------------|------------------------------------|
//! | device      | `DEVICE#<thing>`      | `#DEVICE`           | `USER#<holder>` / `DEVICE#<thing>`     | –                                  |
//! | history     | `DEVICE#<thing>`      | `HISTORY#<seq:010>` | –                                      | –                                  |
//! | claim       | `CLAIM#<claim_id>`    | `#CLAIM`            | `USER#<user>` / `CLAIM#<created>#<id>` | `STATE#<state>` / `<deadline>#<id>`|
//! | idempotency | `IDEMPOTENCY#<user>`  | `KEY#<key>`         | –                                      | –                                  |
//! | lease       | `LEASE#<name>`        | `#LEASE`            | –                                      | –                                  |
//! | label code  | `CODE#<hmac>`         | `#CODE`             | –                                      | –                                  |
//! | attempts    | `ATTEMPTS#<scope>`    | `WINDOW#<start>`    | –                                      | –                                  |
//!
//! Claims that owe a publish are also in the sparse `outbox` index: `gsi3pk = OUTBOX`,
//! `gsi3sk = <next_publish_at>#<id>`.
//!
//! Every write goes through [`OwnershipStore::commit`], one `TransactWriteItems` whose conditions
//! are: the device is still at the version the decision was made on, each updated claim is still
//! at its version, each new claim and history entry does not exist yet, and the idempotency key is
//! free. History items are only ever `Put` with `attribute_not_exists`: nothing updates or deletes
//! them.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    error::{DisplayErrorContext, SdkError},
    types::{AttributeValue, CancellationReason, Delete, Put, TransactWriteItem},
    Client,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use time::OffsetDateTime;

use crate::{
    domain::{
        attempts::AttemptScope,
        claim::{Claim, ClaimState, Failure, StateChange},
        device::{Device, Holder, Provisioning},
        history::{Actor, HistoryEntry, HistoryEvent},
        ids::{ClaimId, IdempotencyKey, ThingName, UserId},
        label_code::CodeHash,
    },
    ports::{CommitError, DeviceChange, IdempotencyRecord, OwnershipStore, Page, PageError, StoreError},
};

type Item = HashMap<String, AttributeValue>;

pub const BY_USER_INDEX: &str = "by_user";
pub const BY_STATE_INDEX: &str = "by_state";
pub const OUTBOX_INDEX: &str = "outbox";
const OUTBOX_PK: &str = "OUTBOX";

#[derive(Clone, Debug)]
pub struct DynamoOwnershipStore {
    client: Client,
    table: String,
}

impl DynamoOwnershipStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    fn put(&self, item: Item, condition: &str, values: Item) -> Result<TransactWriteItem, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition);
        if condition.contains("#version") {
            put = put.expression_attribute_names("#version", "version");
        }
        if condition.contains("#expires_at") {
            put = put.expression_attribute_names("#expires_at", "expires_at");
        }
        if !values.is_empty() {
            put = put.set_expression_attribute_values(Some(values));
        }
        let put = put.build().map_err(|err| StoreError::Corrupt(err.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The writes of a change, in a fixed order: device, claims, history, idempotency record.
    /// [`classify_cancellation`] relies on the idempotency record coming last.
    fn transaction(&self, change: &DeviceChange) -> Result<Vec<TransactWriteItem>, StoreError> {
        if !change.history_is_contiguous() {
            return Err(StoreError::Corrupt(
                "history entries do not continue the device's numbering".into(),
            ));
        }
        let mut writes = Vec::with_capacity(2 + change.claims.len() + change.history.len());
        let device_write = match change.expected_version {
            None => self.put(device_item(&change.device), "attribute_not_exists(pk)", Item::new())?,
            // The history length is checked with the version: new entries continue exactly where
            // the stored numbering ends.
            Some(version) => self.put(
                device_item(&change.device),
                "#version = :expected AND history_len = :history_len",
                Item::from([
                    (":expected".to_owned(), n(version)),
                    (":history_len".to_owned(), n(change.expected_history_len)),
                ]),
            )?,
        };
        writes.push(device_write);
        for write in &change.claims {
            writes.push(self.versioned_put(claim_item(&write.claim), write.expected_version)?);
        }
        for entry in &change.history {
            let item = history_item(&change.device.thing_name, entry);
            writes.push(self.put(item, "attribute_not_exists(pk)", Item::new())?);
        }
        writes.extend(self.code_writes(change)?);
        if let Some(record) = &change.idempotency {
            // An expired record may be taken over; a live one belongs to the first request.
            writes.push(self.put(
                idempotency_item(record),
                "attribute_not_exists(pk) OR #expires_at <= :now",
                Item::from([(":now".to_owned(), n(millis(record.created_at)))]),
            )?);
        }
        Ok(writes)
    }

    /// When a change gives the device another label code: the new code's lookup entry, which must
    /// be free or already this device's (one code, one device), and the removal of the old one.
    /// The new entry, if any, comes first (see [`OwnershipStore::commit`]).
    fn code_writes(&self, change: &DeviceChange) -> Result<Vec<TransactWriteItem>, StoreError> {
        let (old, new) = (&change.previous_code_hash, &change.device.code_hash);
        if old == new {
            return Ok(Vec::new());
        }
        let thing = &change.device.thing_name;
        let ours = Item::from([(":thing".to_owned(), s(thing.as_str()))]);
        let mut writes = Vec::new();
        if let Some(new) = new {
            writes.push(self.put(
                code_item(new, thing),
                "attribute_not_exists(pk) OR thing_name = :thing",
                ours.clone(),
            )?);
        }
        if let Some(old) = old {
            let delete = Delete::builder()
                .table_name(&self.table)
                .key("pk", s(code_pk(old)))
                .key("sk", s(CODE_SK))
                .condition_expression("attribute_not_exists(pk) OR thing_name = :thing")
                .set_expression_attribute_values(Some(ours))
                .build()
                .map_err(|err| StoreError::Corrupt(err.to_string()))?;
            writes.push(TransactWriteItem::builder().delete(delete).build());
        }
        Ok(writes)
    }

    fn versioned_put(&self, item: Item, expected: Option<u64>) -> Result<TransactWriteItem, StoreError> {
        match expected {
            None => self.put(item, "attribute_not_exists(pk)", Item::new()),
            Some(version) => self.put(
                item,
                "#version = :expected",
                Item::from([(":expected".to_owned(), n(version))]),
            ),
        }
    }
}

#[async_trait]
impl OwnershipStore for DynamoOwnershipStore {
    async fn device(&self, thing: &ThingName) -> Result<Option<Device>, StoreError> {
        self.get(device_pk(thing), DEVICE_SK)
            .await?
            .map(|item| device_from(&item))
            .transpose()
    }

    async fn claim(&self, claim_id: &ClaimId) -> Result<Option<Claim>, StoreError> {
        self.get(format!("CLAIM#{claim_id}"), CLAIM_SK)
            .await?
            .map(|item| claim_from(&item))
            .transpose()
    }

    async fn history(&self, thing: &ThingName) -> Result<Vec<HistoryEntry>, StoreError> {
        let items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(device_pk(thing)))
            .expression_attribute_values(":prefix", s("HISTORY#"))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(unavailable)?;
        items.iter().map(history_from).collect()
    }

    async fn idempotency_record(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        now: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(item) = self.get(idempotency_pk(user), &idempotency_sk(key)).await? else {
            return Ok(None);
        };
        // TTL deletion is lazy (up to days late): an expired record is treated as absent.
        let record = IdempotencyRecord {
            user: user.clone(),
            key: key.clone(),
            claim_id: claim_id_attr(&item, "claim_id")?,
            fingerprint: str_attr(&item, "fingerprint")?.to_owned(),
            created_at: time_attr(&item, "created_at")?,
            expires_at: time_attr(&item, "expires_at")?,
        };
        Ok((record.expires_at > now).then_some(record))
    }

    async fn thing_by_code(&self, hash: &CodeHash) -> Result<Option<ThingName>, StoreError> {
        self.get(code_pk(hash), CODE_SK)
            .await?
            .map(|item| thing_attr(&item, "thing_name"))
            .transpose()
    }

    async fn commit(&self, change: DeviceChange) -> Result<(), CommitError> {
        let writes = self.transaction(&change)?;
        let idempotency_index = change.idempotency.as_ref().map(|_| writes.len() - 1);
        // The new label code's entry directly follows the history entries.
        let code_index = (change.device.code_hash.is_some() && change.device.code_hash != change.previous_code_hash)
            .then_some(1 + change.claims.len() + change.history.len());
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                let reasons = err
                    .as_service_error()
                    .and_then(|service| match service {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                            cancelled,
                        ) => Some(cancelled.cancellation_reasons().to_vec()),
                        _ => None,
                    });
                let code_taken = |reasons: &[CancellationReason]| {
                    code_index
                        .and_then(|index| reasons.get(index))
                        .and_then(|reason| reason.code())
                        .is_some_and(|code| code == "ConditionalCheckFailed")
                };
                match reasons {
                    Some(reasons) if code_taken(&reasons) => Err(CommitError::CodeTaken),
                    Some(reasons) => Err(classify_cancellation(&reasons, idempotency_index)),
                    None => Err(CommitError::Store(unavailable(err))),
                }
            }
        }
    }

    async fn devices_held_by(
        &self,
        user: &UserId,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<Page<Device>, PageError> {
        let partition = user_pk(user);
        let start = page_token
            .map(|token| decode_page_token(token, &partition))
            .transpose()?;
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_USER_INDEX)
            .key_condition_expression("gsi1pk = :pk AND begins_with(gsi1sk, :prefix)")
            .expression_attribute_values(":pk", s(partition))
            .expression_attribute_values(":prefix", s("DEVICE#"))
            .limit(i32::try_from(limit.clamp(1, 100)).unwrap_or(100))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let items = out.items().iter().map(device_from).collect::<Result<Vec<_>, _>>()?;
        let next_token = out.last_evaluated_key().map(encode_page_token).transpose()?;
        Ok(Page { items, next_token })
    }

    async fn due_publishes(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Claim>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OUTBOX_INDEX)
            .key_condition_expression("gsi3pk = :pk AND gsi3sk <= :now")
            .expression_attribute_values(":pk", s(OUTBOX_PK))
            // `~` sorts after `#<claim id>`, so everything due at `now` itself is included.
            .expression_attribute_values(":now", s(format!("{}~", padded_millis(now))))
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(unavailable)?;
        // One unreadable record must not block every other delivery: it is logged and skipped.
        Ok(out
            .items()
            .iter()
            .filter_map(|item| match claim_from(item) {
                Ok(claim) => Some(claim),
                Err(err) => {
                    tracing::error!(event = "outbox_record_unreadable", error = %err);
                    None
                }
            })
            .collect())
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("LEASE#{name}")))
            .item("sk", s("#LEASE"))
            .item("entity", s("lease"))
            .item("holder", s(holder))
            .item("until", n(millis(until)))
            .item("ttl", n(until.unix_timestamp() + 3600))
            .condition_expression("attribute_not_exists(pk) OR #until <= :now OR holder = :holder")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":now", n(millis(now)))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("LEASE#{name}")))
            .key("sk", s("#LEASE"))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            // Someone took it over after it lapsed: theirs now, nothing to release.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(unavailable(err)),
            Ok(_) => Ok(()),
        }
    }

    async fn failed_attempts(&self, scope: &AttemptScope, window_start: OffsetDateTime) -> Result<u32, StoreError> {
        let Some(item) = self.get(attempts_pk(scope), &attempts_sk(window_start)).await? else {
            return Ok(0);
        };
        let count = u64_attr(&item, "attempts")?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn count_failed_attempt(
        &self,
        scope: &AttemptScope,
        window_start: OffsetDateTime,
        forget_after: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(attempts_pk(scope)))
            .key("sk", s(attempts_sk(window_start)))
            .update_expression("ADD attempts :one SET entity = :entity, #ttl = :ttl")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":entity", s("attempts"))
            .expression_attribute_values(":ttl", n(forget_after.unix_timestamp()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn overdue_claims(&self, due_before: OffsetDateTime, limit: u32) -> Result<Vec<Claim>, StoreError> {
        let mut claims = Vec::new();
        for state in [ClaimState::Pending, ClaimState::EndpointPublished] {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_STATE_INDEX)
                .key_condition_expression("gsi2pk = :pk AND gsi2sk < :due")
                .expression_attribute_values(":pk", s(state_pk(state)))
                .expression_attribute_values(":due", s(padded_millis(due_before)))
                .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.items() {
                claims.push(claim_from(item)?);
            }
        }
        claims.sort_by_key(|claim| claim.expires_at);
        claims.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(claims)
    }

    async fn claims_in_state(
        &self,
        state: ClaimState,
        deadline_from: OffsetDateTime,
        deadline_to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Claim>, StoreError> {
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut claims = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_STATE_INDEX)
                // Sort keys are `<deadline ms>#<id>`: "from" as a bare prefix sorts before every
                // key with that deadline, and so does "to", which keeps the range half-open.
                .key_condition_expression("gsi2pk = :pk AND gsi2sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(state_pk(state)))
                .expression_attribute_values(":from", s(padded_millis(deadline_from)))
                .expression_attribute_values(":to", s(padded_millis(deadline_to)))
                .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.items() {
                claims.push(claim_from(item)?);
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() || claims.len() >= wanted {
                break;
            }
        }
        claims.truncate(wanted);
        Ok(claims)
    }
}

/// Which condition failed decides what the caller does next.
fn classify_cancellation(reasons: &[CancellationReason], idempotency_index: Option<usize>) -> CommitError {
    let failed = |index: usize| {
        reasons
            .get(index)
            .and_then(|reason| reason.code())
            .is_some_and(|code| code == "ConditionalCheckFailed")
    };
    if idempotency_index.is_some_and(failed) {
        return CommitError::IdempotencyKeyUsed;
    }
    let codes: Vec<&str> = reasons
        .iter()
        .filter_map(|r| r.code())
        .filter(|c| *c != "None")
        .collect();
    let detail = format!("transaction cancelled: [{}]", codes.join(", "));
    if codes.is_empty() {
        CommitError::Store(StoreError::Unavailable(detail))
    } else if codes
        .iter()
        .all(|code| matches!(*code, "ConditionalCheckFailed" | "TransactionConflict"))
    {
        CommitError::Conflict
    } else if codes
        .iter()
        .any(|code| matches!(*code, "ValidationError" | "ItemCollectionSizeLimitExceeded"))
    {
        // Permanent: retrying the same change cannot succeed.
        CommitError::Store(StoreError::Corrupt(detail))
    } else {
        CommitError::Store(StoreError::Unavailable(detail))
    }
}

fn unavailable<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(DisplayErrorContext(&err).to_string())
}

// ---- keys -------------------------------------------------------------------------------------

const DEVICE_SK: &str = "#DEVICE";
const CLAIM_SK: &str = "#CLAIM";
const CODE_SK: &str = "#CODE";

fn code_pk(hash: &CodeHash) -> String {
    format!("CODE#{}", hash.as_str())
}

/// The lookup entry of a label code: which device it belongs to.
fn code_item(hash: &CodeHash, thing: &ThingName) -> Item {
    Item::from([
        ("pk".to_owned(), s(code_pk(hash))),
        ("sk".to_owned(), s(CODE_SK)),
        ("entity".to_owned(), s("label_code")),
        ("thing_name".to_owned(), s(thing.as_str())),
    ])
}

fn device_pk(thing: &ThingName) -> String {
    format!("DEVICE#{thing}")
}

fn user_pk(user: &UserId) -> String {
    format!("USER#{user}")
}

fn state_pk(state: ClaimState) -> String {
    format!("STATE#{}", state.as_str())
}

fn idempotency_pk(user: &UserId) -> String {
    format!("IDEMPOTENCY#{user}")
}

fn idempotency_sk(key: &IdempotencyKey) -> String {
    format!("KEY#{}", key.as_str())
}

fn attempts_pk(scope: &AttemptScope) -> String {
    format!("ATTEMPTS#{}", scope.key())
}

fn attempts_sk(window_start: OffsetDateTime) -> String {
    format!("WINDOW#{}", padded_millis(window_start))
}

/// Milliseconds since the epoch, zero-padded so that string order is time order (until year 2286).
fn padded_millis(at: OffsetDateTime) -> String {
    format!("{:013}", millis(at))
}

// ---- item mapping -----------------------------------------------------------------------------

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn device_item(device: &Device) -> Item {
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

fn device_from(item: &Item) -> Result<Device, StoreError> {
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
    })
}

fn claim_item(claim: &Claim) -> Item {
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
        ("pk".to_owned(), s(format!("CLAIM#{}", claim.claim_id))),
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
    if let Some(failure) = &claim.failure {
        item.insert("failure_code".to_owned(), s(&failure.code));
        item.insert("failure_message".to_owned(), s(&failure.message));
    }
    item
}

fn claim_from(item: &Item) -> Result<Claim, StoreError> {
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
        version: u64_attr(item, "version")?,
    })
}

fn history_item(thing: &ThingName, entry: &HistoryEntry) -> Item {
    let mut item = Item::from([
        ("pk".to_owned(), s(device_pk(thing))),
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
    item
}

fn history_from(item: &Item) -> Result<HistoryEntry, StoreError> {
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

fn idempotency_item(record: &IdempotencyRecord) -> Item {
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

// ---- attribute readers ------------------------------------------------------------------------

fn corrupt(attribute: &str, detail: &str) -> StoreError {
    StoreError::Corrupt(format!("attribute {attribute}: {detail}"))
}

fn opt_str_attr<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(value)) => Ok(Some(value)),
        Some(_) => Err(corrupt(name, "not a string")),
    }
}

fn str_attr<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    opt_str_attr(item, name)?.ok_or_else(|| corrupt(name, "missing"))
}

fn u64_attr(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(raw)) => raw.parse().map_err(|_| corrupt(name, raw)),
        _ => Err(corrupt(name, "missing or not a number")),
    }
}

fn time_attr(item: &Item, name: &str) -> Result<OffsetDateTime, StoreError> {
    let ms: i64 = match item.get(name) {
        Some(AttributeValue::N(raw)) => raw.parse().map_err(|_| corrupt(name, raw))?,
        _ => return Err(corrupt(name, "missing or not a number")),
    };
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|_| corrupt(name, "out of range"))
}

fn thing_attr(item: &Item, name: &str) -> Result<ThingName, StoreError> {
    let raw = str_attr(item, name)?;
    // The value is a label code: errors (which reach logs) never carry it.
    ThingName::parse(raw).map_err(|_| corrupt(name, "not a valid thing name"))
}

fn user_attr(item: &Item, name: &str) -> Result<UserId, StoreError> {
    let raw = str_attr(item, name)?;
    UserId::parse(raw).map_err(|_| corrupt(name, raw))
}

fn claim_id_attr(item: &Item, name: &str) -> Result<ClaimId, StoreError> {
    let raw = str_attr(item, name)?;
    ClaimId::parse(raw).ok_or_else(|| corrupt(name, raw))
}

// ---- page tokens ------------------------------------------------------------------------------

/// The last key of a `by_user` page, as base64url JSON. Decoding checks the token is for the
/// caller's own partition, so a forged token cannot read another user's items.
fn encode_page_token(key: &Item) -> Result<String, PageError> {
    let mut plain = std::collections::BTreeMap::new();
    for (name, value) in key {
        match value {
            AttributeValue::S(text) => {
                plain.insert(name.clone(), text.clone());
            }
            _ => return Err(StoreError::Corrupt(format!("page key {name} is not a string")).into()),
        }
    }
    let json = serde_json::to_vec(&plain).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

fn decode_page_token(token: &str, partition: &str) -> Result<Item, PageError> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| PageError::InvalidToken)?;
    let plain: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|_| PageError::InvalidToken)?;
    let field = |name: &str| plain.get(name).map(String::as_str);
    // Exactly the last key of a device page in the caller's own partition, and nothing else.
    let device_key = field("gsi1sk")
        .and_then(|sk| sk.strip_prefix("DEVICE#"))
        .is_some_and(|thing| ThingName::parse(thing).is_ok());
    if plain.len() != 4
        || field("gsi1pk") != Some(partition)
        || !device_key
        || field("pk") != field("gsi1sk")
        || field("sk") != Some(DEVICE_SK)
    {
        return Err(PageError::InvalidToken);
    }
    Ok(plain.into_iter().map(|(k, v)| (k, s(v))).collect())
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
            };
            assert_eq!(device_from(&device_item(&device)), Ok(device));
        }
    }

    #[test]
    fn page_tokens_only_open_the_callers_own_partition() {
        let key = Item::from([
            ("pk".to_owned(), s("DEVICE#d1")),
            ("sk".to_owned(), s("#DEVICE")),
            ("gsi1pk".to_owned(), s("USER#alice")),
            ("gsi1sk".to_owned(), s("DEVICE#d1")),
        ]);
        let token = encode_page_token(&key).expect("encodes");
        assert_eq!(decode_page_token(&token, "USER#alice"), Ok(key.clone()));
        assert_eq!(decode_page_token(&token, "USER#mallory"), Err(PageError::InvalidToken));
        assert_eq!(
            decode_page_token("not base64!", "USER#alice"),
            Err(PageError::InvalidToken)
        );
        let mut outside = key.clone();
        outside.insert("gsi1sk".to_owned(), s("CLAIM#0001"));
        let forged = encode_page_token(&outside).expect("encodes");
        assert_eq!(decode_page_token(&forged, "USER#alice"), Err(PageError::InvalidToken));
    }

    #[test]
    fn a_failed_idempotency_condition_is_reported_as_such() {
        let ok = CancellationReason::builder().code("None").build();
        let failed = CancellationReason::builder().code("ConditionalCheckFailed").build();
        let conflict = CancellationReason::builder().code("TransactionConflict").build();
        let throttled = CancellationReason::builder().code("ThrottlingError").build();
        assert_eq!(
            classify_cancellation(&[ok.clone(), ok.clone(), failed.clone()], Some(2)),
            CommitError::IdempotencyKeyUsed
        );
        assert_eq!(
            classify_cancellation(&[failed, ok.clone()], Some(1)),
            CommitError::Conflict
        );
        assert_eq!(
            classify_cancellation(&[conflict, ok.clone()], None),
            CommitError::Conflict
        );
        assert!(matches!(
            classify_cancellation(&[throttled, ok.clone()], None),
            CommitError::Store(StoreError::Unavailable(_))
        ));
        let invalid = CancellationReason::builder().code("ValidationError").build();
        assert!(matches!(
            classify_cancellation(&[invalid, ok], None),
            CommitError::Store(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            classify_cancellation(&[], None),
            CommitError::Store(StoreError::Unavailable(_))
        ));
    }
}
