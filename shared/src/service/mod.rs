//! The use cases of the claim backend, one per file, on top of the ports: claiming ([`claim`]),
//! retrying ([`retry`]), releasing ([`release`]), the user's reads ([`reads`]), recording publish
//! results ([`publish`]) and delivering the messages claims owe ([`outbox`]), devices arriving
//! ([`arrival`]) and the gate for those nothing sent ([`quarantine`]), the expiry sweep ([`expiry`]), the registry ([`devices`]) and operator actions
//! ([`admin`]).
//!
//! Each use case reads the device, lets the domain rules decide, and commits the outcome as one
//! [`DeviceChange`] guarded by the version it read. When another writer got there first the commit
//! reports a conflict and the use case decides again on fresh data, a bounded number of times
//! (`try_commit` below).

mod admin;
mod arrival;
mod claim;
mod devices;
mod expiry;
mod lease;
mod outbox;
mod pipeline;
mod publish;
mod quarantine;
mod reads;
mod release;
mod retry;

use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};

pub use self::{
    admin::{AttemptStatus, ForcedRelease, Inspection},
    arrival::ArrivalOutcome,
    claim::{ClaimError, ClaimOutcome, ClaimRequest},
    devices::ImportOutcome,
    outbox::{
        Delivery, DeliverySettings, DrainReport, InlinePublish, INLINE_GRACE, INLINE_STOP_MARGIN, MIN_INLINE_PUBLISH,
    },
    publish::{Progress, PublishAttempt},
    quarantine::{GateOutcome, LiftOutcome},
    release::ReleaseError,
    retry::RetryError,
};
use crate::{
    domain::{
        attempts::AttemptLimits,
        claim::{Claim, DEFAULT_ARRIVAL_GRACE, DEFAULT_DEADLINE},
        ids::{ClaimId, ThingName},
        label_code::{LabelCode, LabelCodeKey},
        publish::PublishBackoff,
        quarantine::GatePolicy,
    },
    ports::{CertificateControl, CommitError, DeviceChange, OwnershipStore, StoreError},
};

/// Where "now" comes from; tests move it, production reads the system clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// Whole milliseconds: the precision the store keeps, so a claim reads back exactly as it was
    /// answered.
    fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        now.replace_millisecond(now.millisecond()).unwrap_or(now)
    }
}

#[derive(Debug, Clone)]
pub struct ClaimSettings {
    /// How long a claim reserves its device while waiting for it to arrive.
    pub deadline: Duration,
    /// How long an `Idempotency-Key` keeps answering with its first result.
    pub idempotency_window: Duration,
    /// How many times a use case decides again after losing a race before answering `busy`.
    pub max_attempts: u32,
    /// The pause before publishing again after failed attempts.
    pub publish_backoff: PublishBackoff,
    /// How long after its deadline a claim is still completed by its device arriving.
    pub arrival_grace: Duration,
    /// Failed claim attempts allowed per user, and per user and device, per window.
    pub attempt_limits: AttemptLimits,
}

impl Default for ClaimSettings {
    fn default() -> Self {
        Self {
            deadline: DEFAULT_DEADLINE,
            idempotency_window: Duration::hours(24),
            max_attempts: 12,
            publish_backoff: PublishBackoff::default(),
            arrival_grace: DEFAULT_ARRIVAL_GRACE,
            attempt_limits: AttemptLimits::default(),
        }
    }
}

/// Errors of operator and system actions on a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceOpError {
    #[error("no such device")]
    DeviceNotFound,
    #[error("too much contention on this device, try again")]
    Busy,
    /// Import only: the row's label code is another device's code or ThingName, or its ThingName
    /// is another device's code (never said which device).
    #[error("code: already used by another device")]
    CodeInUse,
    /// A certificate could not be switched (quarantine, lift); nothing was recorded.
    #[error(transparent)]
    Control(#[from] crate::ports::ControlError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct ClaimService<S, C> {
    store: S,
    clock: C,
    settings: ClaimSettings,
    /// Label codes distinct from the ThingName are looked up by their HMAC with this key; without
    /// it every code is a ThingName.
    code_key: Option<LabelCodeKey>,
    /// How endpoint messages go out; without it this service accepts claims but publishes nothing
    /// (the events function).
    delivery: Option<Delivery>,
    /// The IoT control plane, to switch certificates: without it the gate is off and a claim of a
    /// quarantined device is refused as unavailable.
    certificates: Option<std::sync::Arc<dyn CertificateControl>>,
    gate: GatePolicy,
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    pub fn new(store: S, clock: C, settings: ClaimSettings) -> Self {
        Self {
            store,
            clock,
            settings,
            code_key: None,
            delivery: None,
            certificates: None,
            gate: GatePolicy::default(),
        }
    }

    /// Enables label codes distinct from the ThingName (`LABEL_CODE_KEY_SECRET`).
    pub fn with_label_code_key(mut self, key: Option<LabelCodeKey>) -> Self {
        self.code_key = key;
        self
    }

    /// Lets the service publish endpoint messages: inline after accepting a claim, and in the
    /// scheduled drain.
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = Some(delivery);
        self
    }

    pub fn label_code_key(&self) -> Option<&LabelCodeKey> {
        self.code_key.as_ref()
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// A claim's code as the user sent it: any label code when label codes are enabled, otherwise
    /// only a ThingName (`400 invalid_code` for anything else, as before label codes existed).
    pub fn parse_code(&self, raw: &str) -> Result<LabelCode, String> {
        if self.code_key.is_some() {
            LabelCode::parse(raw).map_err(|err| err.to_string())
        } else {
            ThingName::parse(raw)
                .map(LabelCode::from)
                .map_err(|err| err.to_string())
        }
    }

    /// Commits a change. `Ok(false)`: another writer got there first (or won the same idempotency
    /// key); after a short pause the caller reads again and decides again.
    async fn try_commit(&self, change: DeviceChange, attempt: u32) -> Result<bool, StoreError> {
        let result = self.store.commit(change).await;
        settle(result, attempt).await
    }

    /// [`Self::try_commit`] for a change of one claim alone ([`OwnershipStore::update_claim`]).
    async fn try_update_claim(&self, claim: &Claim, expected_version: u64, attempt: u32) -> Result<bool, StoreError> {
        let result = self.store.update_claim(claim, expected_version).await;
        settle(result, attempt).await
    }

    /// The claim a device record points at; a missing one is corrupt data.
    async fn claim_pointed_at(&self, claim_id: &ClaimId) -> Result<Claim, StoreError> {
        self.store
            .claim(claim_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("device points at missing claim {claim_id}")))
    }
}

/// What a commit's result means for a use case that decides again after a lost race: see
/// [`ClaimService::try_commit`].
async fn settle(result: Result<(), CommitError>, attempt: u32) -> Result<bool, StoreError> {
    match result {
        Ok(()) => Ok(true),
        Err(CommitError::Conflict | CommitError::IdempotencyKeyUsed) => {
            backoff(attempt).await;
            Ok(false)
        }
        // Only an import changes a label code, and it commits by itself.
        Err(CommitError::CodeTaken) => Err(StoreError::Corrupt("unexpected label code change".into())),
        Err(CommitError::Store(err)) => Err(err),
    }
}

fn elapsed_ms(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Randomised, growing pause after a lost race, so racers do not collide again in lockstep.
async fn backoff(attempt: u32) {
    let ceiling_ms = 10u64.saturating_mul(1 << attempt.min(6));
    let pause = fastrand::u64(1..=ceiling_ms);
    tokio::time::sleep(StdDuration::from_millis(pause)).await;
}
