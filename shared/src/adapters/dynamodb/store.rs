//! [`OwnershipStore`] on one DynamoDB table: every query and write of the table, and the mapping
//! of DynamoDB's errors to the port's.

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{CancellationReason, ConditionCheck, Delete, Put, TransactWriteItem},
    Client,
};
use time::OffsetDateTime;

use super::{
    items::{
        claim_from, claim_item, code_item, device_from, device_item, history_from, history_item, idempotency_item,
        millis, n, s, thing_attr, Item,
    },
    keys::{
        attempts_pk, attempts_sk, claim_pk, code_pk, decode_page_token, device_pk, encode_page_token, lease_pk,
        padded_millis, state_pk, user_pk, BY_STATE_INDEX, BY_USER_INDEX, CLAIM_SK, CODE_SK, DEVICE_SK, LEASE_SK,
        OUTBOX_INDEX, OUTBOX_PK,
    },
};
use crate::{
    domain::{
        attempts::AttemptScope,
        claim::{Claim, ClaimState},
        device::Device,
        history::HistoryEntry,
        ids::{ClaimId, IdempotencyKey, ThingName, UserId},
        label_code::CodeHash,
        quarantine::Quarantine,
    },
    ports::{
        Absent, CommitError, DeviceChange, Found, IdempotencyRecord, OwnershipStore, Page, PageError, Read, StoreError,
    },
};

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

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
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

    /// The writes of a change, each with the part of the change it is, so that a cancelled
    /// transaction can say which condition failed.
    fn transaction(&self, change: &DeviceChange) -> Result<Vec<(Part, TransactWriteItem)>, StoreError> {
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
        writes.push((Part::Device, device_write));
        for write in &change.claims {
            let put = self.versioned_put(claim_item(&write.claim), write.expected_version)?;
            writes.push((Part::Claim, put));
        }
        for entry in &change.history {
            let claim = change
                .claims
                .iter()
                .map(|write| &write.claim)
                .find(|claim| Some(&claim.claim_id) == entry.claim_id.as_ref());
            let item = history_item(&change.device, entry, claim);
            writes.push((Part::History, self.put(item, "attribute_not_exists(pk)", Item::new())?));
        }
        writes.extend(self.code_writes(change)?);
        if let Some(write) = self.quarantine_write(change)? {
            writes.push((Part::Quarantine, write));
        }
        for absent in &change.must_be_absent {
            writes.push((Part::Absent, self.absent(absent)?));
        }
        if let Some(record) = &change.idempotency {
            // An expired record may be taken over; a live one belongs to the first request.
            let put = self.put(
                idempotency_item(record),
                "attribute_not_exists(pk) OR #expires_at <= :now",
                Item::from([(":now".to_owned(), n(millis(record.created_at)))]),
            )?;
            writes.push((Part::Idempotency, put));
        }
        Ok(writes)
    }

    /// A condition that the item does not exist.
    fn absent(&self, absent: &Absent) -> Result<TransactWriteItem, StoreError> {
        let (pk, sk) = match absent {
            Absent::Device(thing) => (device_pk(thing), DEVICE_SK),
            Absent::Code(hash) => (code_pk(hash), CODE_SK),
        };
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|err| StoreError::Corrupt(err.to_string()))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// When a change gives the device another label code: the new code's lookup entry, which must
    /// be free or already this device's (one code, one device), and the removal of the old one.
    /// The new entry, if any, comes first (see [`OwnershipStore::commit`]).
    fn code_writes(&self, change: &DeviceChange) -> Result<Vec<(Part, TransactWriteItem)>, StoreError> {
        let (old, new) = (&change.previous_code_hash, &change.device.code_hash);
        if old == new {
            return Ok(Vec::new());
        }
        let thing = &change.device.thing_name;
        let ours = Item::from([(":thing".to_owned(), s(thing.as_str()))]);
        let mut writes = Vec::new();
        if let Some(new) = new {
            let put = self.put(
                code_item(new, thing),
                "attribute_not_exists(pk) OR thing_name = :thing",
                ours.clone(),
            )?;
            writes.push((Part::NewCode, put));
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
            writes.push((Part::OldCode, TransactWriteItem::builder().delete(delete).build()));
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

    /// Claims due at `now` in the outbox index, up to `limit`, earliest first if `oldest_first`.
    async fn outbox(&self, now: OffsetDateTime, limit: u32, oldest_first: bool) -> Result<Vec<Claim>, StoreError> {
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
            .scan_index_forward(oldest_first)
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
}

#[async_trait]
impl OwnershipStore for DynamoOwnershipStore {
    async fn quarantine(&self, thing: &ThingName) -> Result<Option<Quarantine>, StoreError> {
        self.quarantine_entry(thing).await
    }

    async fn quarantines(&self, after: Option<&ThingName>, limit: u32) -> Result<Vec<Quarantine>, StoreError> {
        self.quarantine_entries(after, limit).await
    }

    async fn put_quarantine(&self, quarantine: &Quarantine) -> Result<(), StoreError> {
        self.put_quarantine_entry(quarantine).await
    }

    async fn remove_quarantine(&self, thing: &ThingName) -> Result<(), StoreError> {
        self.remove_quarantine_entry(thing).await
    }

    async fn device(&self, thing: &ThingName) -> Result<Option<Device>, StoreError> {
        self.get(device_pk(thing), DEVICE_SK)
            .await?
            .map(|item| device_from(&item))
            .transpose()
    }

    async fn claim(&self, claim_id: &ClaimId) -> Result<Option<Claim>, StoreError> {
        self.get(claim_pk(claim_id), CLAIM_SK)
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
        match self.read_one(Read::Idempotency(user.clone(), key.clone(), now)).await? {
            Found::Idempotency(record) => Ok(record),
            _ => Err(StoreError::Corrupt("an idempotency read found something else".into())),
        }
    }

    async fn read_many(&self, reads: &[Read]) -> Result<Vec<Found>, StoreError> {
        self.read_items(reads).await
    }

    async fn thing_by_code(&self, hash: &CodeHash) -> Result<Option<ThingName>, StoreError> {
        self.get(code_pk(hash), CODE_SK)
            .await?
            .map(|item| thing_attr(&item, "thing_name"))
            .transpose()
    }

    async fn commit(&self, change: DeviceChange) -> Result<(), CommitError> {
        let (parts, writes): (Vec<Part>, Vec<TransactWriteItem>) = self.transaction(&change)?.into_iter().unzip();
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
                match reasons {
                    Some(reasons) => Err(classify_cancellation(&reasons, &parts)),
                    None => Err(CommitError::Store(unavailable(err))),
                }
            }
        }
    }

    async fn update_claim(&self, claim: &Claim, expected_version: u64) -> Result<(), CommitError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(claim_item(claim)))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(expected_version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => Err(CommitError::Conflict),
            Err(err) => Err(CommitError::Store(unavailable(err))),
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
        self.outbox(now, limit, true).await
    }

    async fn newest_due_publishes(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Claim>, StoreError> {
        self.outbox(now, limit, false).await
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
            .set_item(Some(lease_item(name, holder, until)))
            .condition_expression(LEASE_FREE)
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":now", n(millis(now)))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if condition_failed(&err) => Ok(false),
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(lease_pk(name)))
            .key("sk", s(LEASE_SK))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            // Someone took it over after it lapsed: theirs now, nothing to release.
            Err(err) if condition_failed(&err) => Ok(()),
            Err(err) => Err(unavailable(err)),
            Ok(_) => Ok(()),
        }
    }

    async fn failed_attempts(&self, scope: &AttemptScope, window_start: OffsetDateTime) -> Result<u32, StoreError> {
        match self.read_one(Read::Attempts(scope.clone(), window_start)).await? {
            Found::Attempts(count) => Ok(count),
            _ => Err(StoreError::Corrupt("an attempts read found something else".into())),
        }
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

/// A lease may be taken when nobody has it, it lapsed, or the taker already holds it.
const LEASE_FREE: &str = "attribute_not_exists(pk) OR #until <= :now OR holder = :holder";

fn lease_item(name: &str, holder: &str, until: OffsetDateTime) -> Item {
    Item::from([
        ("pk".to_owned(), s(lease_pk(name))),
        ("sk".to_owned(), s(LEASE_SK)),
        ("entity".to_owned(), s("lease")),
        ("holder".to_owned(), s(holder)),
        ("until".to_owned(), n(millis(until))),
        ("ttl".to_owned(), n(until.unix_timestamp() + 3600)),
    ])
}

/// What a write of a change's transaction is: a failed condition means something different for
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Device,
    Claim,
    History,
    /// The lookup entry of the device's new label code.
    NewCode,
    /// The removal of its old one.
    OldCode,
    /// Something that must not exist ([`Absent`]).
    Absent,
    Idempotency,
    /// The device's quarantine list entry (unconditional).
    Quarantine,
}

/// Which condition failed decides what the caller does next.
fn classify_cancellation(reasons: &[CancellationReason], parts: &[Part]) -> CommitError {
    let failed = |part: Part| {
        reasons
            .iter()
            .zip(parts)
            .any(|(reason, p)| *p == part && reason.code() == Some("ConditionalCheckFailed"))
    };
    if failed(Part::NewCode) || failed(Part::Absent) {
        return CommitError::CodeTaken;
    }
    if failed(Part::Idempotency) {
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

/// Whether a single-item write was refused by its condition (not a failure of the store).
fn condition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .is_some_and(|service| service.code() == Some("ConditionalCheckFailedException"))
}

/// A call that failed: DynamoDB named, and whether it ran out of time (the SDK's deadlines, see
/// `wiring::sdk_timeouts`), so the log says which dependency a `503` came from.
pub(super) fn unavailable<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let timed_out = matches!(&err, SdkError::TimeoutError(_))
        || matches!(&err, SdkError::DispatchFailure(failure) if failure.is_timeout());
    let what = if timed_out {
        "DynamoDB did not answer in time"
    } else {
        "DynamoDB"
    };
    StoreError::Unavailable(format!("{what}: {}", DisplayErrorContext(&err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_idempotency_condition_is_reported_as_such() {
        let ok = CancellationReason::builder().code("None").build();
        let failed = CancellationReason::builder().code("ConditionalCheckFailed").build();
        let conflict = CancellationReason::builder().code("TransactionConflict").build();
        let throttled = CancellationReason::builder().code("ThrottlingError").build();
        use Part::*;
        assert_eq!(
            classify_cancellation(&[ok.clone(), ok.clone(), failed.clone()], &[Device, Claim, Idempotency]),
            CommitError::IdempotencyKeyUsed
        );
        assert_eq!(
            classify_cancellation(&[failed.clone(), ok.clone()], &[Device, Idempotency]),
            CommitError::Conflict
        );
        assert_eq!(
            classify_cancellation(&[failed.clone(), failed.clone()], &[Device, NewCode]),
            CommitError::CodeTaken,
            "a taken code is said even when the device also changed"
        );
        assert_eq!(
            classify_cancellation(&[ok.clone(), failed.clone()], &[Device, Absent]),
            CommitError::CodeTaken
        );
        assert_eq!(
            classify_cancellation(&[conflict, ok.clone()], &[Device, Claim]),
            CommitError::Conflict
        );
        assert!(matches!(
            classify_cancellation(&[throttled, ok.clone()], &[Device, Claim]),
            CommitError::Store(StoreError::Unavailable(_))
        ));
        let invalid = CancellationReason::builder().code("ValidationError").build();
        assert!(matches!(
            classify_cancellation(&[invalid, ok], &[Device, Claim]),
            CommitError::Store(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            classify_cancellation(&[], &[]),
            CommitError::Store(StoreError::Unavailable(_))
        ));
    }
}
