//! The port the claim logic needs from its storage, in domain terms only.
//!
//! Every ownership change is one [`DeviceChange`]: the new device record, the claims it creates or
//! updates, the history entries it appends and, for claim requests, the idempotency record. The
//! store applies it all-or-nothing and only if the device is still at the version the decision was
//! made on, so concurrent writers cannot both win and a crash never leaves half a change behind.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{
    attempts::AttemptScope,
    claim::{Claim, ClaimState},
    device::Device,
    history::{HistoryEntry, NewHistoryEntry},
    ids::{ClaimId, ConfigTopic, IdempotencyKey, ThingName, UserId},
    label_code::CodeHash,
    lifecycle::LifecycleEvent,
    publish::{ClaimThingCredentials, PublishError},
    quarantine::{CertificateFacts, Quarantine},
};

/// Where a module vendor's claim-thing credentials come from (Secrets Manager in production).
/// Callers bound each lookup with a deadline of their own (`DeliverySettings::credentials_timeout`):
/// one that does not answer in time is `credentials_unavailable`, never a staging failure.
#[async_trait]
pub trait CredentialSource: Send + Sync {
    async fn claim_thing(&self, vendor: &str) -> Result<ClaimThingCredentials, PublishError>;

    /// The dependency behind it, as errors and logs name it.
    fn source_name(&self) -> &'static str {
        "the credential source"
    }
}

/// Delivers one message to the staging endpoint as the claim-thing and returns once the endpoint
/// confirmed it (QoS 1 PUBACK), or fails. Callers guarantee that no two publishes with the same
/// credentials run at once.
#[async_trait]
pub trait EndpointPublisher: Send + Sync {
    async fn publish(
        &self,
        credentials: &ClaimThingCredentials,
        topic: &ConfigTopic,
        payload: &[u8],
    ) -> Result<(), PublishError>;

    /// Delivers several messages with the same credentials, each confirmed, and returns each
    /// one's result, in order. A transport that can carry them together does (MQTT: one
    /// connection, pipelined); by default they go one after another.
    async fn publish_batch(
        &self,
        credentials: &ClaimThingCredentials,
        messages: &[(ConfigTopic, Vec<u8>)],
    ) -> Vec<Result<(), PublishError>> {
        let mut results = Vec::with_capacity(messages.len());
        for (topic, payload) in messages {
            results.push(self.publish(credentials, topic, payload).await);
        }
        results
    }
}

/// The AWS IoT control plane, for the rogue-device gate: what a certificate is, and switching it
/// off and on. Both calls are idempotent.
#[async_trait]
pub trait CertificateControl: Send + Sync {
    /// `None` when no certificate has this id.
    async fn describe(&self, certificate_id: &str) -> Result<Option<CertificateFacts>, ControlError>;

    /// Deactivates (`active` false) or activates the certificate.
    async fn set_active(&self, certificate_id: &str, active: bool) -> Result<(), ControlError>;
}

/// The control plane did not do it (unreachable, throttled, refused, or past its deadline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("IoT control plane: {0}")]
pub struct ControlError(pub String);

/// The storage could not answer; nothing was changed. `Unavailable` is worth retrying later
/// (`503`), `Corrupt` is a bug or a hand-edited record (`500`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is not valid: {0}")]
    Corrupt(String),
}

/// Why a [`DeviceChange`] did not land. Nothing of it was written in any case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The device or a claim changed since it was read: read again and decide again.
    #[error("the device changed concurrently")]
    Conflict,
    /// The idempotency record already exists: another request with the same key won.
    #[error("the idempotency key is already used")]
    IdempotencyKeyUsed,
    /// The device's new label code already belongs to another device, or something the change
    /// required to be absent exists (which device is not said).
    #[error("the label code is already used by another device")]
    CodeTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an `Idempotency-Key` bound a caller's request to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user: UserId,
    pub key: IdempotencyKey,
    pub claim_id: ClaimId,
    /// What the request asked for; the same key with another request is refused.
    pub fingerprint: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimWrite {
    pub claim: Claim,
    /// `None`: the claim is new and must not exist; `Some(v)`: it must still be at version `v`.
    pub expected_version: Option<u64>,
}

/// One atomic change around one device. Build it with [`DeviceChange::on`] (existing device) or
/// [`DeviceChange::create`] (new device); the builder keeps the version and history numbering right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChange {
    pub device: Device,
    /// `None`: the device must not exist yet.
    pub expected_version: Option<u64>,
    /// The history length the decision was made on; entries are numbered from here.
    pub expected_history_len: u64,
    pub claims: Vec<ClaimWrite>,
    pub history: Vec<HistoryEntry>,
    pub idempotency: Option<IdempotencyRecord>,
    /// The label code hash the device had when the decision was made: when `device.code_hash`
    /// differs, the store moves the code's lookup entry in the same transaction.
    pub previous_code_hash: Option<CodeHash>,
    /// What must not exist when the change lands (checked in the same transaction); if any does,
    /// the change fails with [`CommitError::CodeTaken`].
    pub must_be_absent: Vec<Absent>,
    /// The device's quarantine when the decision was made: when `device.quarantine` differs, the
    /// store puts or removes the quarantine's list entry in the same transaction.
    pub previous_quarantine: Option<Quarantine>,
}

/// One item a use case reads, for [`OwnershipStore::read_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// [`OwnershipStore::device`].
    Device(ThingName),
    /// [`OwnershipStore::claim`].
    Claim(ClaimId),
    /// [`OwnershipStore::thing_by_code`].
    Code(CodeHash),
    /// [`OwnershipStore::failed_attempts`]: the scope and the start of its window.
    Attempts(AttemptScope, OffsetDateTime),
    /// [`OwnershipStore::idempotency_record`] at the given time.
    Idempotency(UserId, IdempotencyKey, OffsetDateTime),
}

/// What a [`Read`] found, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Device(Option<Box<Device>>),
    Claim(Option<Box<Claim>>),
    Code(Option<ThingName>),
    Attempts(u32),
    Idempotency(Option<IdempotencyRecord>),
}

/// Something a change requires not to exist: how imports keep every code that a user can type
/// naming exactly one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Absent {
    /// No device has this ThingName (a label code that equals it would shadow it).
    Device(ThingName),
    /// No device has a label code with this hash (a ThingName that equals it would be shadowed).
    Code(CodeHash),
}

impl DeviceChange {
    pub fn on(before: &Device) -> Self {
        let mut device = before.clone();
        device.version = before.version + 1;
        Self {
            device,
            expected_version: Some(before.version),
            expected_history_len: before.history_len,
            claims: Vec::new(),
            history: Vec::new(),
            idempotency: None,
            previous_code_hash: before.code_hash.clone(),
            must_be_absent: Vec::new(),
            previous_quarantine: before.quarantine.clone(),
        }
    }

    /// `before` becomes `after` (the fields an import sets), numbered and versioned from `before`.
    pub fn replacing(before: &Device, after: Device) -> Self {
        let mut change = Self::on(before);
        change.device = Device {
            version: change.device.version,
            history_len: change.device.history_len,
            ..after
        };
        change
    }

    pub fn create(mut device: Device) -> Self {
        device.version = 1;
        device.history_len = 0;
        Self {
            device,
            expected_version: None,
            expected_history_len: 0,
            claims: Vec::new(),
            history: Vec::new(),
            idempotency: None,
            previous_code_hash: None,
            must_be_absent: Vec::new(),
            previous_quarantine: None,
        }
    }

    /// History entries must continue the stored numbering without gaps: `expected_history_len + 1`
    /// up to the new `device.history_len`. Stores refuse changes that do not.
    pub fn history_is_contiguous(&self) -> bool {
        let numbered_from = self.expected_history_len + 1;
        self.history
            .iter()
            .enumerate()
            .all(|(i, entry)| entry.seq == numbered_from + i as u64)
            && self.device.history_len == self.expected_history_len + self.history.len() as u64
    }

    pub fn record(&mut self, entry: NewHistoryEntry) {
        self.device.history_len += 1;
        self.history.push(entry.numbered(self.device.history_len));
    }

    pub fn create_claim(&mut self, claim: Claim) {
        self.claims.push(ClaimWrite {
            claim,
            expected_version: None,
        });
    }

    pub fn update_claim(&mut self, before_version: u64, mut claim: Claim) {
        claim.version = before_version + 1;
        self.claims.push(ClaimWrite {
            claim,
            expected_version: Some(before_version),
        });
    }
}

/// A page of results and the opaque token of the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// Where lifecycle events go for the OEM's other systems (an EventBridge bus on AWS).
#[async_trait]
pub trait LifecycleSink: Send + Sync {
    /// Puts `events`, in order; the outcome of each, in the same order.
    async fn put(&self, events: &[LifecycleEvent]) -> Vec<Result<(), SinkError>>;
}

/// An event the sink did not take (the bus unreachable, throttled, or the event refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

#[async_trait]
pub trait OwnershipStore: Send + Sync {
    /// The device record, read strongly consistent (it is the basis of ownership decisions).
    async fn device(&self, thing: &ThingName) -> Result<Option<Device>, StoreError>;

    async fn claim(&self, claim_id: &ClaimId) -> Result<Option<Claim>, StoreError>;

    /// Several single items at once, read strongly consistent, each as its own method reads it;
    /// what they found in the same order. A store that can answer in one round trip does (the
    /// claim path's reads: one call instead of three or four).
    async fn read_many(&self, reads: &[Read]) -> Result<Vec<Found>, StoreError> {
        let mut found = Vec::with_capacity(reads.len());
        for read in reads {
            found.push(match read {
                Read::Device(thing) => Found::Device(self.device(thing).await?.map(Box::new)),
                Read::Claim(claim_id) => Found::Claim(self.claim(claim_id).await?.map(Box::new)),
                Read::Code(hash) => Found::Code(self.thing_by_code(hash).await?),
                Read::Attempts(scope, window_start) => {
                    Found::Attempts(self.failed_attempts(scope, *window_start).await?)
                }
                Read::Idempotency(user, key, now) => {
                    Found::Idempotency(self.idempotency_record(user, key, *now).await?)
                }
            });
        }
        Ok(found)
    }

    /// The device whose label code has this hash, read strongly consistent. A code belongs to at
    /// most one device: the store refuses a change that would give it to a second one.
    async fn thing_by_code(&self, hash: &CodeHash) -> Result<Option<ThingName>, StoreError>;

    /// The device's history in order, oldest first.
    async fn history(&self, thing: &ThingName) -> Result<Vec<HistoryEntry>, StoreError>;

    /// The record for `(user, key)` if one exists and has not expired at `now`.
    async fn idempotency_record(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        now: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Applies the change atomically, or nothing of it.
    async fn commit(&self, change: DeviceChange) -> Result<(), CommitError>;

    /// Writes one existing claim alone, if it is still at `expected_version` (else
    /// [`CommitError::Conflict`]): for changes that touch nothing but the claim, such as the record
    /// of a publish attempt. One single-item write instead of a transaction with the device.
    async fn update_claim(&self, claim: &Claim, expected_version: u64) -> Result<(), CommitError>;

    /// Devices recorded as held (owned or reserved) by `user`. The caller filters reservations
    /// whose deadline passed; a token that does not belong to this query is an error.
    async fn devices_held_by(
        &self,
        user: &UserId,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<Page<Device>, PageError>;

    /// Claims whose endpoint message is due for publishing at `now` (the outbox), earliest first.
    async fn due_publishes(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Claim>, StoreError>;

    /// [`Self::due_publishes`], the latest due first: the claims a running delivery has not seen
    /// yet, whatever the outbox holds behind them.
    async fn newest_due_publishes(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Claim>, StoreError>;

    /// Takes the named lease until `until` if it is free, lapsed, or already `holder`'s. A lease keeps
    /// one publisher per claim-thing at a time (AWS IoT disconnects duplicate client ids).
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Gives the lease back if `holder` still has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Claims recorded in a live state whose deadline is before `due_before`, oldest deadline
    /// first: the work list of the expiry sweep.
    async fn overdue_claims(&self, due_before: OffsetDateTime, limit: u32) -> Result<Vec<Claim>, StoreError>;

    /// Failed claim attempts counted under `scope` in the window that starts at `window_start`.
    async fn failed_attempts(&self, scope: &AttemptScope, window_start: OffsetDateTime) -> Result<u32, StoreError>;

    /// Counts one more failed attempt under `scope` in the window that starts at `window_start`
    /// (an atomic increment); the count may be forgotten after `forget_after`.
    async fn count_failed_attempt(
        &self,
        scope: &AttemptScope,
        window_start: OffsetDateTime,
        forget_after: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Claims recorded in `state` whose deadline is in `[deadline_from, deadline_to)`, earliest
    /// deadline first, at most `limit` (operators' lists and the claim funnel).
    async fn claims_in_state(
        &self,
        state: ClaimState,
        deadline_from: OffsetDateTime,
        deadline_to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Claim>, StoreError>;

    /// The quarantine list entry of `thing`, registry device or not.
    async fn quarantine(&self, thing: &ThingName) -> Result<Option<Quarantine>, StoreError>;

    /// Quarantines in ThingName order, from after `after`, at most `limit`.
    async fn quarantines(&self, after: Option<&ThingName>, limit: u32) -> Result<Vec<Quarantine>, StoreError>;

    /// Records (or replaces) the quarantine of a thing that is not in the registry. Registry
    /// devices are quarantined through their [`DeviceChange`].
    async fn put_quarantine(&self, quarantine: &Quarantine) -> Result<(), StoreError>;

    /// Removes the quarantine entry of a thing that is not in the registry (absent: nothing to do).
    async fn remove_quarantine(&self, thing: &ThingName) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("the page token is not valid")]
    InvalidToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}
