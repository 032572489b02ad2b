//! Use cases of the claim backend on top of the [`OwnershipStore`] port: claim, read, release,
//! publish and provisioning progress, import, disable/enable and the expiry sweep.
//!
//! Each use case reads the device, lets the domain rules decide, and commits the outcome as one
//! [`DeviceChange`] guarded by the version it read. When another writer got there first the commit
//! reports a conflict and the use case decides again on fresh data, a bounded number of times.

pub mod admin;

use std::{sync::Arc, time::Duration as StdDuration};

use time::{Duration, OffsetDateTime};

use crate::{
    domain::{
        attempts::{AttemptLimits, AttemptScope},
        claim::{Claim, ClaimState, Failure},
        device::{ArrivalDecision, ClaimDecision, Device, Holder, Provisioning, ReleaseDecision},
        endpoints::EndpointPlan,
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::{is_vendor_name, ClaimId, IdempotencyKey, ThingName, UserId},
        label_code::{CodeHash, LabelCode, LabelCodeError, LabelCodeKey},
        publish::PublishError,
    },
    metrics,
    ports::{CommitError, DeviceChange, IdempotencyRecord, OwnershipStore, Page, PageError, StoreError},
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
    /// How long a claim reserves its device while waiting for it to arrive (default 15 min).
    pub deadline: Duration,
    /// How long an `Idempotency-Key` keeps answering with its first result.
    pub idempotency_window: Duration,
    /// How many times a use case decides again after losing a race before answering `busy`.
    pub max_attempts: u32,
    /// Pause before re-publishing after the first failed attempt; it doubles with each failure…
    pub publish_backoff_base: Duration,
    /// …up to this.
    pub publish_backoff_max: Duration,
    /// How long after its deadline a claim is still completed by its device arriving, if nobody
    /// else claimed the device meanwhile.
    pub arrival_grace: Duration,
    /// Failed claim attempts allowed per user, and per user and device, per window.
    pub attempt_limits: AttemptLimits,
}

impl Default for ClaimSettings {
    fn default() -> Self {
        Self {
            deadline: Duration::minutes(15),
            idempotency_window: Duration::hours(24),
            max_attempts: 12,
            publish_backoff_base: Duration::seconds(2),
            publish_backoff_max: Duration::minutes(5),
            arrival_grace: Duration::minutes(15),
            attempt_limits: AttemptLimits::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub user: UserId,
    /// What the label says: an OEM label code, or the ThingName (`ThingName::into()`). The service
    /// resolves it to the device (see [`ClaimService::claim`]).
    pub code: LabelCode,
    /// Where devices go; decided against the device's SKU and the app's region hint.
    pub endpoints: Arc<EndpointPlan>,
    pub region_hint: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl ClaimRequest {
    /// What an idempotency key is bound to: the same key must come with a request for the same
    /// device (the resolved ThingName; never the code itself, which the table must not hold).
    fn fingerprint(thing: &ThingName) -> String {
        format!("claim:{thing}")
    }
}

/// How a claim's code named its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    /// The code's keyed hash is the device's label code.
    ByLabelCode,
    /// The code is the device's ThingName.
    ByThingName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// A new claim reserved the device (`202`).
    Created(Claim),
    /// The caller already holds the device, or repeated an idempotent request (`200`).
    Existing(Claim),
}

impl ClaimOutcome {
    pub fn claim(&self) -> &Claim {
        match self {
            ClaimOutcome::Created(claim) | ClaimOutcome::Existing(claim) => claim,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Unknown, disabled, or wrong code: deliberately one answer (`404 device_not_found`).
    #[error("no claimable device for that code")]
    DeviceNotFound,
    #[error("the device is held by another user")]
    AlreadyClaimed,
    #[error("the Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// Too many failed attempts by this user (in all, or on this device) recently; nothing was
    /// written, and a user over their own limit had nothing looked up (`429` with `Retry-After`).
    #[error("too many failed claim attempts; try again in {} s", retry_after.whole_seconds())]
    RateLimited { retry_after: Duration },
    /// Lost the race too many times; nothing was written (`503`).
    #[error("too much contention on this device, try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// Not the caller's device (or no such device): one answer for both (`404`).
    #[error("no such device")]
    DeviceNotFound,
    #[error("the device is in the middle of a claim")]
    MidClaim,
    #[error("too much contention on this device, try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors of operator and system actions on a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceOpError {
    #[error("no such device")]
    DeviceNotFound,
    #[error("too much contention on this device, try again")]
    Busy,
    /// Import only: the row's label code already belongs to another device (never said which).
    #[error("code: already used by another device")]
    CodeInUse,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// Unknown id or another user's claim: one answer for both (`404`).
    #[error("no such claim")]
    ClaimNotFound,
    /// Provisioned, released or failed, or expired while the device went to someone else (`409`).
    #[error("the claim cannot be retried")]
    NotRetryable,
    #[error("too much contention on this device, try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    pub thing_name: ThingName,
    pub vendor: String,
    pub sku: Option<String>,
    /// The keyed hash of the label code the OEM printed instead of the ThingName. `None` keeps the
    /// device's code as it is (a file without codes can be imported again safely).
    pub code_hash: Option<CodeHash>,
    /// May the device also be claimed by its ThingName? `None`: yes without a label code; with
    /// one, no for a new code, unchanged for a device that had a code already.
    pub allow_thing_name: Option<bool>,
}

impl NewDevice {
    /// A device record as an operator wrote it (import file or admin API). The error names the
    /// field, so the row can be fixed; an empty SKU is no SKU.
    pub fn parse(thing_name: &str, vendor: &str, sku: Option<&str>) -> Result<Self, String> {
        let thing_name = ThingName::parse(thing_name).map_err(|err| format!("thing_name: {err}"))?;
        if !is_vendor_name(vendor) {
            return Err("vendor: 1-64 characters of A-Z a-z 0-9 . _ - (the module vendor's profile name)".into());
        }
        let sku = sku.filter(|sku| !sku.is_empty());
        if let Some(sku) = sku {
            if sku.len() > 64 || sku.chars().any(char::is_control) {
                return Err("sku: at most 64 printable characters".into());
            }
        }
        Ok(Self {
            thing_name,
            vendor: vendor.to_owned(),
            sku: sku.map(str::to_owned),
            code_hash: None,
            allow_thing_name: None,
        })
    }

    /// Adds the row's label code (hashed with `key`; an empty code is no code) and its
    /// `allow_thing_name` setting. Errors name the field and never contain the code.
    pub fn with_label_code(
        mut self,
        code: Option<&str>,
        allow_thing_name: Option<bool>,
        key: Option<&LabelCodeKey>,
    ) -> Result<Self, String> {
        let code = code.filter(|code| !code.is_empty());
        if code.is_none() && allow_thing_name == Some(false) {
            // Also what keeps a claimctl failure report (which leaves codes out) from importing a
            // coded device without its code.
            return Err("allow_thing_name: false needs the row's code".into());
        }
        if let Some(code) = code {
            let Some(key) = key else {
                return Err("code: label codes are not enabled (no label code key is configured)".into());
            };
            let code = LabelCode::parse(code).map_err(|err: LabelCodeError| format!("code: {err}"))?;
            self.code_hash = Some(key.hash(&code));
        }
        self.allow_thing_name = allow_thing_name;
        Ok(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Created,
    Unchanged,
    Updated,
}

/// What a delivery run did with one claim that owed a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishAttempt {
    /// The staging endpoint confirmed the message.
    Sent,
    /// The message could not be delivered.
    Failed(PublishError),
    /// Not sent: the claim was no longer live when read afresh.
    NotSent,
}

/// What a device's arrival in the OEM account did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrivalOutcome {
    /// A claim became `provisioned`; its user owns the device.
    Completed(Box<Claim>),
    /// Owned already; nothing changed (reconnects and duplicate events).
    AlreadyOwned,
    /// Owned already; provisioning details this event carried were missing and are now recorded.
    DetailsAdded,
    /// A registry device that no claim is waiting for.
    Unclaimed,
    /// Not in the registry.
    UnknownThing,
}

impl ArrivalOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            ArrivalOutcome::Completed(_) => "completed",
            ArrivalOutcome::AlreadyOwned => "already_owned",
            ArrivalOutcome::DetailsAdded => "details_added",
            ArrivalOutcome::Unclaimed => "unclaimed",
            ArrivalOutcome::UnknownThing => "unknown_thing",
        }
    }
}

/// What recording a publish attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Applied(Box<Claim>),
    /// The report was already applied or no longer applies (duplicate, late, superseded).
    Ignored(ClaimState),
}

pub struct ClaimService<S, C> {
    store: S,
    clock: C,
    settings: ClaimSettings,
    /// Label codes distinct from the ThingName are looked up by their HMAC with this key; without
    /// it every code is a ThingName.
    code_key: Option<LabelCodeKey>,
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    pub fn new(store: S, clock: C, settings: ClaimSettings) -> Self {
        Self {
            store,
            clock,
            settings,
            code_key: None,
        }
    }

    /// Enables label codes distinct from the ThingName (`LABEL_CODE_KEY_SECRET`).
    pub fn with_label_code_key(mut self, key: Option<LabelCodeKey>) -> Self {
        self.code_key = key;
        self
    }

    pub fn label_code_key(&self) -> Option<&LabelCodeKey> {
        self.code_key.as_ref()
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

    /// The device a claim's code names: its label code's lookup entry if label codes are enabled
    /// and it has one, else the device whose ThingName it is.
    async fn resolve(&self, code: &LabelCode) -> Result<(ThingName, Resolved), ClaimError> {
        if let Some(key) = &self.code_key {
            if let Some(thing) = self.store.thing_by_code(&key.hash(code)).await? {
                return Ok((thing, Resolved::ByLabelCode));
            }
        }
        match code.as_thing_name() {
            Some(thing) => Ok((thing, Resolved::ByThingName)),
            None => Err(ClaimError::DeviceNotFound),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// `POST /v1/claims`: reserve a device for the caller, or return the claim they already hold.
    /// Logs one `claim_decision` event (fields: see README, "Log fields").
    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimOutcome, ClaimError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let user_scope = AttemptScope::User(request.user.clone());
        let device_scope = |thing: &ThingName| AttemptScope::UserDevice(request.user.clone(), thing.clone());
        let (resolved, result) = match self.check_attempts(&user_scope, now).await {
            Ok(()) => {
                let resolved = self.resolve(&request.code).await;
                let result = match &resolved {
                    Ok((thing, how)) => match self.check_attempts(&device_scope(thing), now).await {
                        Ok(()) => self.decide_and_claim(request, thing, *how).await,
                        Err(err) => Err(err),
                    },
                    Err(err) => Err(err.clone()),
                };
                (resolved, result)
            }
            // A limited user gets no answer about their code, except the first answer again for a
            // repeat of a request that succeeded (same Idempotency-Key, same device).
            Err(limited) => match self.replay_while_limited(request).await {
                Ok(Some((thing, how, claim))) => (Ok((thing, how)), Ok(ClaimOutcome::Created(claim))),
                Ok(None) => (Err(limited.clone()), Err(limited)),
                Err(err) => (Err(err.clone()), Err(err)),
            },
        };
        // A code that found nothing counts against the user: that is what guessing looks like. A
        // device somebody else holds counts against the user on that device only: the code was
        // right, and a buyer whose seller has not released yet must keep their other claims. Only
        // a device that exists is ever a key (a mistyped label code must not be stored).
        match (&result, &resolved) {
            (Err(ClaimError::DeviceNotFound), _) => self.count_failed_attempt(&user_scope, now).await,
            (Err(ClaimError::AlreadyClaimed), Ok((thing, _))) => {
                self.count_failed_attempt(&device_scope(thing), now).await;
            }
            _ => {}
        }
        let (outcome, claim_id) = match &result {
            Ok(ClaimOutcome::Created(claim)) => ("created", Some(claim.claim_id.as_str())),
            Ok(ClaimOutcome::Existing(claim)) => ("existing", Some(claim.claim_id.as_str())),
            Err(ClaimError::DeviceNotFound) => ("device_not_found", None),
            Err(ClaimError::AlreadyClaimed) => ("already_claimed", None),
            Err(ClaimError::IdempotencyKeyReused) => ("idempotency_key_reused", None),
            Err(ClaimError::RateLimited { .. }) => ("rate_limited", None),
            Err(ClaimError::Busy) => ("busy", None),
            Err(ClaimError::Store(_)) => ("store_unavailable", None),
        };
        let error = result.as_ref().err().map(ToString::to_string);
        metrics::count("ClaimRequests", ("outcome", outcome));
        // Only a device the code resolved to is named (redacted); the code itself and its hash
        // are never logged: a code that resolved to nothing may be someone's label code.
        // With label codes on, a code shaped like a ThingName may be a mistyped label code: a
        // code that found no claimable device is not named at all.
        let (thing_name, by) = match &resolved {
            _ if matches!(result, Err(ClaimError::DeviceNotFound)) => (None, None),
            Ok((thing, Resolved::ByLabelCode)) => (Some(thing.redacted()), Some("label_code")),
            Ok((thing, Resolved::ByThingName)) => (Some(thing.redacted()), Some("thing_name")),
            Err(_) => (None, None),
        };
        tracing::info!(
            event = "claim_decision",
            outcome,
            claim_id,
            thing_name,
            by,
            latency_ms = elapsed_ms(started),
            error,
        );
        result
    }

    /// The claim an idempotent repeat of this request created, if it is one. Anything else is
    /// `None` and answered `429`, never `400` or `404`: those would answer guesses.
    async fn replay_while_limited(
        &self,
        request: &ClaimRequest,
    ) -> Result<Option<(ThingName, Resolved, Claim)>, ClaimError> {
        if request.idempotency_key.is_none() {
            return Ok(None);
        }
        let Ok((thing, how)) = self.resolve(&request.code).await else {
            return Ok(None);
        };
        match self
            .replay_idempotent(request, &ClaimRequest::fingerprint(&thing))
            .await
        {
            Ok(Some(claim)) => Ok(Some((thing, how, claim))),
            Ok(None) | Err(ClaimError::IdempotencyKeyReused) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `Err(RateLimited)` if `scope` used up its failed attempts in the current window.
    async fn check_attempts(&self, scope: &AttemptScope, now: OffsetDateTime) -> Result<(), ClaimError> {
        match self.attempts_at(scope, now).await? {
            (_, Some(retry_after)) => Err(ClaimError::RateLimited { retry_after }),
            (_, None) => Ok(()),
        }
    }

    /// `scope`'s failed attempts in the window around `now`, and how long it is refused (`Some`:
    /// it reached its limit).
    async fn attempts_at(
        &self,
        scope: &AttemptScope,
        now: OffsetDateTime,
    ) -> Result<(u32, Option<Duration>), StoreError> {
        let limits = &self.settings.attempt_limits;
        let failed = self.store.failed_attempts(scope, limits.window_at(now).start).await?;
        Ok((failed, limits.exceeded(scope, failed, now)))
    }

    /// Best effort: a count that cannot be written is logged and the answer stands (the limit is
    /// then briefly more lenient; the claim's answer is already decided).
    async fn count_failed_attempt(&self, scope: &AttemptScope, now: OffsetDateTime) {
        let limits = &self.settings.attempt_limits;
        let window = limits.window_at(now);
        if let Err(err) = self
            .store
            .count_failed_attempt(scope, window.start, window.end + limits.window)
            .await
        {
            metrics::count("AttemptCountFailures", ("outcome", "store_unavailable"));
            tracing::warn!(event = "attempt_count_failed", outcome = "store_unavailable", error = %err);
        }
    }

    async fn decide_and_claim(
        &self,
        request: &ClaimRequest,
        thing: &ThingName,
        resolved: Resolved,
    ) -> Result<ClaimOutcome, ClaimError> {
        let fingerprint = ClaimRequest::fingerprint(thing);
        for attempt in 0..self.settings.max_attempts {
            // Records are written only with a new claim, so a replay repeats that answer (`202`).
            if let Some(first) = self.replay_idempotent(request, &fingerprint).await? {
                return Ok(ClaimOutcome::Created(first));
            }
            let now = self.clock.now();
            let device = match self.store.device(thing).await? {
                Some(device) => device,
                None => return Err(ClaimError::DeviceNotFound),
            };
            let allowed = match resolved {
                // The lookup entry and the device change together; a mismatch is a stale read.
                Resolved::ByLabelCode => {
                    device.code_hash.is_some()
                        && device.code_hash.as_ref()
                            == self.code_key.as_ref().map(|key| key.hash(&request.code)).as_ref()
                }
                Resolved::ByThingName => device.claimable_by_thing_name(),
            };
            // A device whose label carries its own code is not found by its ThingName unless the
            // OEM allows it: indistinguishable from an unknown device.
            if !allowed {
                return Err(ClaimError::DeviceNotFound);
            }
            let superseded = match device.decide_claim(&request.user, now) {
                ClaimDecision::NotClaimable => return Err(ClaimError::DeviceNotFound),
                ClaimDecision::AlreadyClaimed => return Err(ClaimError::AlreadyClaimed),
                ClaimDecision::AlreadyYours(claim_id) => {
                    return match self.store.claim(&claim_id).await? {
                        Some(claim) => Ok(ClaimOutcome::Existing(claim)),
                        None => Err(StoreError::Corrupt(format!("device points at missing claim {claim_id}")).into()),
                    };
                }
                ClaimDecision::Reserve { superseded } => superseded,
            };

            let target = request
                .endpoints
                .select(device.sku.as_deref(), request.region_hint.as_deref());
            let mut claim = Claim::new(
                ClaimId::new_random(),
                thing.clone(),
                request.user.clone(),
                device.vendor.clone(),
                target.host,
                now,
                self.settings.deadline,
            );
            claim.target_rule = target.rule;
            let mut change = DeviceChange::on(&device);
            if let Some(old_id) = superseded {
                self.expire_into(&mut change, &old_id, now).await?;
            }
            change.device.holder = Holder::Reserved {
                claim_id: claim.claim_id.clone(),
                user: request.user.clone(),
                expires_at: claim.expires_at,
            };
            change.device.last_claim = Some(claim.claim_id.clone());
            change.record(NewHistoryEntry::new(
                now,
                HistoryEvent::Claimed,
                Actor::User(request.user.clone()),
                Some(claim.claim_id.clone()),
            ));
            change.idempotency = request.idempotency_key.as_ref().map(|key| IdempotencyRecord {
                user: request.user.clone(),
                key: key.clone(),
                claim_id: claim.claim_id.clone(),
                fingerprint: fingerprint.clone(),
                created_at: now,
                expires_at: now + self.settings.idempotency_window,
            });
            change.create_claim(claim.clone());

            if self.try_commit(change, attempt).await? {
                return Ok(ClaimOutcome::Created(claim));
            }
        }
        Err(ClaimError::Busy)
    }

    /// Commits a change. `Ok(false)`: another writer got there first (or won the same idempotency
    /// key); after a short pause the caller reads again and decides again.
    async fn try_commit(&self, change: DeviceChange, attempt: u32) -> Result<bool, StoreError> {
        match self.store.commit(change).await {
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

    async fn replay_idempotent(&self, request: &ClaimRequest, fingerprint: &str) -> Result<Option<Claim>, ClaimError> {
        let Some(key) = &request.idempotency_key else {
            return Ok(None);
        };
        let Some(record) = self
            .store
            .idempotency_record(&request.user, key, self.clock.now())
            .await?
        else {
            return Ok(None);
        };
        if record.fingerprint != fingerprint {
            return Err(ClaimError::IdempotencyKeyReused);
        }
        match self.store.claim(&record.claim_id).await? {
            Some(claim) => Ok(Some(claim)),
            None => Err(StoreError::Corrupt(format!(
                "idempotency record points at missing claim {}",
                record.claim_id
            ))
            .into()),
        }
    }

    /// Adds "claim `old_id` expired" to a change (claim record and device history).
    async fn expire_into(
        &self,
        change: &mut DeviceChange,
        old_id: &ClaimId,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let Some(mut old) = self.store.claim(old_id).await? else {
            return Err(StoreError::Corrupt(format!("device points at missing claim {old_id}")));
        };
        let before = old.version;
        // The device still points at this claim, so it must be live: anything else is corrupt data,
        // and skipping it would leave a claim that nothing ever expires.
        old.transition(ClaimState::Expired, now)
            .map_err(|err| StoreError::Corrupt(format!("claim {old_id}: {err}")))?;
        let expired_at = old.expires_at;
        change.update_claim(before, old);
        change.record(NewHistoryEntry::new(
            expired_at,
            HistoryEvent::Expired,
            Actor::System,
            Some(old_id.clone()),
        ));
        Ok(())
    }

    /// `GET /v1/claims/{id}`: the caller's claim, or `None` for unknown ids and other users' claims
    /// alike.
    pub async fn claim_of(&self, user: &UserId, claim_id: &ClaimId) -> Result<Option<Claim>, StoreError> {
        Ok(self.store.claim(claim_id).await?.filter(|claim| &claim.user == user))
    }

    /// `GET /v1/devices/{thing_name}`: the device and the claim through which the caller holds it
    /// now (owned or live reservation); `None` for anyone else and for unknown devices alike.
    pub async fn device_of(&self, user: &UserId, thing: &ThingName) -> Result<Option<(Device, Claim)>, StoreError> {
        let Some(device) = self.store.device(thing).await? else {
            return Ok(None);
        };
        self.with_holding_claim(user, device).await
    }

    /// `GET /v1/devices`: the caller's devices (owned, and reserved by live claims), a page at a time.
    pub async fn devices_of(
        &self,
        user: &UserId,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<Page<(Device, Claim)>, PageError> {
        let page = self.store.devices_held_by(user, page_token, limit).await?;
        let mut items = Vec::with_capacity(page.items.len());
        for device in page.items {
            if let Some(pair) = self.with_holding_claim(user, device).await? {
                items.push(pair);
            }
        }
        Ok(Page {
            items,
            next_token: page.next_token,
        })
    }

    async fn with_holding_claim(&self, user: &UserId, device: Device) -> Result<Option<(Device, Claim)>, StoreError> {
        if device.held_by(self.clock.now()) != Some(user) {
            return Ok(None);
        }
        let Some(claim_id) = device.holder.claim_id() else {
            return Ok(None);
        };
        match self.store.claim(claim_id).await? {
            Some(claim) => Ok(Some((device, claim))),
            None => Err(StoreError::Corrupt(format!(
                "device points at missing claim {claim_id}"
            ))),
        }
    }

    /// `DELETE /v1/devices/{thing_name}`: the owner gives the device up; it becomes claimable.
    pub async fn release(&self, user: &UserId, thing: &ThingName) -> Result<Claim, ReleaseError> {
        let started = std::time::Instant::now();
        let result = self.decide_and_release(user, thing).await;
        let outcome = match &result {
            Ok(_) => "released",
            Err(ReleaseError::DeviceNotFound) => "device_not_found",
            Err(ReleaseError::MidClaim) => "mid_claim",
            Err(ReleaseError::Busy) => "busy",
            Err(ReleaseError::Store(_)) => "store_unavailable",
        };
        tracing::info!(
            event = "release_decision",
            outcome,
            claim_id = result.as_ref().ok().map(|claim| claim.claim_id.as_str()),
            thing_name = %thing.redacted(),
            latency_ms = elapsed_ms(started),
        );
        result
    }

    async fn decide_and_release(&self, user: &UserId, thing: &ThingName) -> Result<Claim, ReleaseError> {
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let Some(device) = self.store.device(thing).await? else {
                return Err(ReleaseError::DeviceNotFound);
            };
            let claim_id = match device.decide_release(user, now) {
                ReleaseDecision::Release(claim_id) => claim_id,
                ReleaseDecision::MidClaim => return Err(ReleaseError::MidClaim),
                ReleaseDecision::NotYours => return Err(ReleaseError::DeviceNotFound),
            };
            let mut change = DeviceChange::on(&device);
            let released = self
                .release_into(&mut change, &claim_id, Actor::User(user.clone()), None, now)
                .await?;
            if self.try_commit(change, attempt).await? {
                return Ok(released);
            }
        }
        Err(ReleaseError::Busy)
    }

    async fn release_into(
        &self,
        change: &mut DeviceChange,
        claim_id: &ClaimId,
        actor: Actor,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let Some(mut claim) = self.store.claim(claim_id).await? else {
            return Err(StoreError::Corrupt(format!(
                "device points at missing claim {claim_id}"
            )));
        };
        let before = claim.version;
        claim
            .transition(ClaimState::Released, now)
            .map_err(|err| StoreError::Corrupt(format!("claim {claim_id}: {err}")))?;
        change.device.holder = Holder::Free;
        change.update_claim(before, claim.clone());
        let mut entry = NewHistoryEntry::new(now, HistoryEvent::Released, actor, Some(claim_id.clone()));
        entry.reason = reason;
        change.record(entry);
        Ok(claim)
    }

    /// The staging endpoint confirmed the publish of a claim's endpoint message.
    pub async fn mark_published(&self, claim_id: &ClaimId) -> Result<Progress, DeviceOpError> {
        self.record_publish(claim_id, &PublishAttempt::Sent).await
    }

    /// Records the result of one publish attempt from the outbox: confirmed (the claim becomes
    /// `endpoint_published`, or a requested re-publish is done) or failed (the claim stays
    /// `pending`, keeps the failure for the user, and is due again after a growing backoff). A claim
    /// that no longer owes a publish (expired, superseded, finished) just leaves the outbox.
    pub async fn record_publish(
        &self,
        claim_id: &ClaimId,
        attempt: &PublishAttempt,
    ) -> Result<Progress, DeviceOpError> {
        let started = std::time::Instant::now();
        let outcome = self.try_record_publish(claim_id, attempt).await;
        let recorded = match &outcome {
            Ok(Progress::Applied(claim)) => format!("recorded_{}", claim.state),
            Ok(Progress::Ignored(state)) => format!("ignored_{state}"),
            Err(err) => err.to_string(),
        };
        let (name, error) = match attempt {
            PublishAttempt::Sent => ("published", None),
            PublishAttempt::Failed(err) => ("publish_failed", Some(err)),
            PublishAttempt::NotSent => ("not_sent", None),
        };
        match attempt {
            PublishAttempt::Sent => metrics::count("EndpointPublished", ("error_code", "none")),
            PublishAttempt::Failed(err) => metrics::count("PublishFailed", ("error_code", err.code)),
            PublishAttempt::NotSent => {}
        }
        tracing::info!(
            event = "claim_publish",
            outcome = name,
            recorded,
            claim_id = claim_id.as_str(),
            error_code = error.map(|err| err.code),
            error = error.map(|err| err.message.as_str()),
            latency_ms = elapsed_ms(started),
        );
        outcome
    }

    async fn try_record_publish(
        &self,
        claim_id: &ClaimId,
        delivery: &PublishAttempt,
    ) -> Result<Progress, DeviceOpError> {
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let Some(mut claim) = self.store.claim(claim_id).await? else {
                return Err(DeviceOpError::DeviceNotFound);
            };
            let Some(device) = self.store.device(&claim.thing_name).await? else {
                return Err(DeviceOpError::DeviceNotFound);
            };
            let holds = matches!(&device.holder, Holder::Reserved { claim_id: held, .. } if held == claim_id);
            let before = claim.version;
            let mut change = DeviceChange::on(&device);
            let progress = if !holds || !claim.is_live(now) {
                if claim.next_publish_at.is_none() {
                    return Ok(Progress::Ignored(claim.effective_state(now)));
                }
                if holds && claim.is_overdue(now) {
                    self.expire_into(&mut change, claim_id, now).await?;
                    change.device.holder = Holder::Free;
                } else {
                    claim.next_publish_at = None;
                    change.update_claim(before, claim.clone());
                }
                Progress::Ignored(claim.effective_state(now))
            } else if claim.next_publish_at.is_none() || *delivery == PublishAttempt::NotSent {
                // No publish was owed (a duplicate report), or the claim became live again
                // (renewed) after the deliverer decided not to send: it stays due.
                return Ok(Progress::Ignored(claim.effective_state(now)));
            } else {
                claim.publish_attempts += 1;
                match delivery {
                    PublishAttempt::NotSent => {}
                    PublishAttempt::Sent => {
                        claim.failure = None;
                        if claim.state == ClaimState::Pending {
                            claim
                                .transition(ClaimState::EndpointPublished, now)
                                .map_err(|err| StoreError::Corrupt(err.to_string()))?;
                        } else {
                            // A re-publish the user asked for: the state stays, the outbox entry goes.
                            claim.next_publish_at = None;
                            claim.updated_at = now;
                        }
                        change.record(NewHistoryEntry::new(
                            now,
                            HistoryEvent::EndpointPublished,
                            Actor::System,
                            Some(claim_id.clone()),
                        ));
                    }
                    PublishAttempt::Failed(err) => {
                        claim.failure = Some(Failure {
                            code: err.code.to_owned(),
                            message: publish_failure_message(err.code).to_owned(),
                        });
                        claim.next_publish_at = Some(now + self.publish_backoff(claim.publish_attempts));
                    }
                }
                change.update_claim(before, claim.clone());
                Progress::Applied(Box::new(claim))
            };
            if self.try_commit(change, attempt).await? {
                return Ok(progress);
            }
        }
        Err(DeviceOpError::Busy)
    }

    /// 2 s, 4 s, 8 s … up to the configured maximum, after the n-th failed attempt.
    fn publish_backoff(&self, attempts: u32) -> Duration {
        let factor = 1i32 << attempts.saturating_sub(1).min(20);
        let backoff = self.settings.publish_backoff_base * factor;
        backoff.min(self.settings.publish_backoff_max)
    }

    /// `POST /v1/claims/{id}/retry`: publish the endpoint again for a live claim, or renew an expired
    /// claim (new deadline, publish due now) if its device is still free.
    pub async fn retry(&self, user: &UserId, claim_id: &ClaimId) -> Result<Claim, RetryError> {
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let Some(mut claim) = self.claim_of(user, claim_id).await? else {
                return Err(RetryError::ClaimNotFound);
            };
            let Some(device) = self.store.device(&claim.thing_name).await? else {
                return Err(StoreError::Corrupt(format!("claim {claim_id} names a missing device")).into());
            };
            let before = claim.version;
            let mut change = DeviceChange::on(&device);
            if claim.is_live(now) {
                claim.next_publish_at = Some(now);
            } else if claim.effective_state(now) == ClaimState::Expired {
                // Only the device's most recent claim comes back: after anyone else's claim (even
                // one released since), a new claim is the honest record.
                if device.last_claim.as_ref() != Some(claim_id) {
                    return Err(RetryError::NotRetryable);
                }
                let superseded = match device.decide_claim(user, now) {
                    ClaimDecision::Reserve { superseded } => superseded,
                    _ => return Err(RetryError::NotRetryable),
                };
                match &superseded {
                    // The device still points at this claim: its expiry is recorded by the renewal.
                    Some(id) if id == claim_id => change.record(NewHistoryEntry::new(
                        claim.expires_at,
                        HistoryEvent::Expired,
                        Actor::System,
                        Some(claim_id.clone()),
                    )),
                    Some(other) => self.expire_into(&mut change, other, now).await?,
                    None => {}
                }
                claim
                    .renew(now, self.settings.deadline)
                    .map_err(|_| RetryError::NotRetryable)?;
                change.device.holder = Holder::Reserved {
                    claim_id: claim_id.clone(),
                    user: user.clone(),
                    expires_at: claim.expires_at,
                };
                change.device.last_claim = Some(claim_id.clone());
                change.record(NewHistoryEntry::new(
                    now,
                    HistoryEvent::Claimed,
                    Actor::User(user.clone()),
                    Some(claim_id.clone()),
                ));
            } else {
                return Err(RetryError::NotRetryable);
            }
            change.update_claim(before, claim.clone());
            if self.try_commit(change, attempt).await? {
                return Ok(claim);
            }
        }
        Err(RetryError::Busy)
    }

    /// The device arrived in the OEM account: the claimant becomes its owner. (A test and support
    /// shortcut for [`ClaimService::record_arrival`] when the claim is known.)
    pub async fn mark_provisioned(&self, claim_id: &ClaimId) -> Result<ArrivalOutcome, DeviceOpError> {
        let Some(claim) = self.store.claim(claim_id).await? else {
            return Err(DeviceOpError::DeviceNotFound);
        };
        self.record_arrival(&claim.thing_name, &Provisioning::default()).await
    }

    /// A device showed up in the OEM account (thing created, or a connection). Completes the claim
    /// that sent it there: the device's reservation, even past its deadline (nobody else claimed
    /// it), or its last claim if that expired at most `arrival_grace` before. Owned devices only get
    /// missing provisioning details filled in; duplicates and reconnects change nothing.
    pub async fn record_arrival(
        &self,
        thing: &ThingName,
        details: &Provisioning,
    ) -> Result<ArrivalOutcome, DeviceOpError> {
        let started = std::time::Instant::now();
        let outcome = self.try_record_arrival(thing, details).await;
        let name = outcome.as_ref().map(ArrivalOutcome::name).unwrap_or("error");
        let claim_id = match &outcome {
            Ok(ArrivalOutcome::Completed(claim)) => Some(claim.claim_id.as_str()),
            _ => None,
        };
        metrics::count("DeviceArrivals", ("outcome", name));
        tracing::info!(
            event = "device_arrival",
            outcome = name,
            claim_id,
            thing_name = %thing.redacted(),
            certificate_id = details.certificate_id.as_deref(),
            error = outcome.as_ref().err().map(ToString::to_string),
            latency_ms = elapsed_ms(started),
        );
        outcome
    }

    async fn try_record_arrival(
        &self,
        thing: &ThingName,
        details: &Provisioning,
    ) -> Result<ArrivalOutcome, DeviceOpError> {
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let Some(device) = self.store.device(thing).await? else {
                return Ok(ArrivalOutcome::UnknownThing);
            };
            let mut change = DeviceChange::on(&device);
            let claim_id = match device.decide_arrival() {
                ArrivalDecision::Unclaimed => return Ok(ArrivalOutcome::Unclaimed),
                ArrivalDecision::AlreadyOwned(_) => {
                    let mut provisioning = device.provisioning.clone().unwrap_or_default();
                    if !provisioning.merge(details) {
                        return Ok(ArrivalOutcome::AlreadyOwned);
                    }
                    change.device.provisioning = Some(provisioning);
                    if self.try_commit(change, attempt).await? {
                        return Ok(ArrivalOutcome::DetailsAdded);
                    }
                    continue;
                }
                ArrivalDecision::CompleteReservation(claim_id) => claim_id,
                ArrivalDecision::CheckLastClaim(claim_id) => claim_id,
            };
            let Some(mut claim) = self.store.claim(&claim_id).await? else {
                return Err(StoreError::Corrupt(format!("device points at missing claim {claim_id}")).into());
            };
            let reserved = matches!(device.holder, Holder::Reserved { .. });
            let within_grace =
                claim.state == ClaimState::Expired && now - claim.expires_at <= self.settings.arrival_grace;
            if !reserved && !within_grace {
                return Ok(ArrivalOutcome::Unclaimed);
            }
            let before = claim.version;
            claim
                .complete_on_arrival(now)
                .map_err(|err| StoreError::Corrupt(format!("claim {claim_id}: {err}")))?;
            change.device.holder = Holder::Owned {
                claim_id: claim_id.clone(),
                user: claim.user.clone(),
                since: now,
            };
            let mut provisioning = Provisioning::default();
            provisioning.merge(details);
            change.device.provisioning = Some(provisioning);
            change.update_claim(before, claim.clone());
            change.record(NewHistoryEntry::new(
                now,
                HistoryEvent::Provisioned,
                Actor::System,
                Some(claim_id),
            ));
            if self.try_commit(change, attempt).await? {
                return Ok(ArrivalOutcome::Completed(Box::new(claim)));
            }
        }
        Err(DeviceOpError::Busy)
    }

    /// The scheduled sweep: records the expiry of every claim past its deadline (oldest first, at
    /// most `limit`), so lists, counts and records are right even when nobody reads. Returns how
    /// many it expired.
    pub async fn sweep_overdue(&self, limit: u32) -> Result<u32, DeviceOpError> {
        let mut expired = 0;
        for claim in self.store.overdue_claims(self.clock.now(), limit).await? {
            if self.expire_if_overdue(&claim.thing_name).await?.is_some() {
                expired += 1;
            }
        }
        if expired > 0 {
            metrics::count_n("ClaimsExpired", ("by", "sweep"), u64::from(expired));
            tracing::info!(event = "expiry_sweep", expired);
        }
        Ok(expired)
    }

    /// Records the expiry of a device's overdue reservation, if it has one: the sweep's unit of
    /// work. Reads are right without it; this makes the records and lists right too.
    pub async fn expire_if_overdue(&self, thing: &ThingName) -> Result<Option<ClaimId>, DeviceOpError> {
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let Some(device) = self.store.device(thing).await? else {
                return Err(DeviceOpError::DeviceNotFound);
            };
            let Some(old_id) = device.overdue_reservation(now).cloned() else {
                return Ok(None);
            };
            let mut change = DeviceChange::on(&device);
            self.expire_into(&mut change, &old_id, now).await?;
            change.device.holder = Holder::Free;
            if self.try_commit(change, attempt).await? {
                return Ok(Some(old_id));
            }
        }
        Err(DeviceOpError::Busy)
    }

    /// Adds a manufactured device to the registry, or updates its vendor, SKU, label code or
    /// ThingName-claim setting. Never touches ownership, so re-importing a file is always safe. A
    /// label code that belongs to another device is refused (`CodeInUse`), without saying which.
    pub async fn import(&self, new: &NewDevice, actor: Actor) -> Result<ImportOutcome, DeviceOpError> {
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let existing = self.store.device(&new.thing_name).await?;
            let had_code = existing.as_ref().is_some_and(|device| device.code_hash.is_some());
            let code_hash = new
                .code_hash
                .clone()
                .or_else(|| existing.as_ref().and_then(|device| device.code_hash.clone()));
            let thing_name_claims = match (new.allow_thing_name, &code_hash) {
                (_, None) => true,
                (Some(allowed), Some(_)) => allowed,
                // A new code closes ThingName claims unless the row says otherwise; a device that
                // had a code keeps its setting.
                (None, Some(_)) => had_code && existing.as_ref().is_some_and(|device| device.thing_name_claims),
            };
            let (change, outcome) = match existing {
                None => {
                    let mut change = DeviceChange::create(Device {
                        thing_name: new.thing_name.clone(),
                        vendor: new.vendor.clone(),
                        sku: new.sku.clone(),
                        disabled: false,
                        holder: Holder::Free,
                        imported_at: now,
                        version: 0,
                        history_len: 0,
                        last_claim: None,
                        provisioning: None,
                        code_hash,
                        thing_name_claims,
                    });
                    change.record(NewHistoryEntry::new(now, HistoryEvent::Imported, actor.clone(), None));
                    (change, ImportOutcome::Created)
                }
                Some(existing)
                    if existing.vendor == new.vendor
                        && existing.sku == new.sku
                        && existing.code_hash == code_hash
                        && existing.thing_name_claims == thing_name_claims =>
                {
                    return Ok(ImportOutcome::Unchanged);
                }
                Some(existing) => {
                    let mut change = DeviceChange::on(&existing);
                    change.device.vendor = new.vendor.clone();
                    change.device.sku = new.sku.clone();
                    change.device.code_hash = code_hash;
                    change.device.thing_name_claims = thing_name_claims;
                    change.record(NewHistoryEntry::new(now, HistoryEvent::Imported, actor.clone(), None));
                    (change, ImportOutcome::Updated)
                }
            };
            match self.store.commit(change).await {
                Ok(()) => return Ok(outcome),
                Err(CommitError::CodeTaken) => return Err(DeviceOpError::CodeInUse),
                Err(CommitError::Conflict | CommitError::IdempotencyKeyUsed) => backoff(attempt).await,
                Err(CommitError::Store(err)) => return Err(err.into()),
            }
        }
        Err(DeviceOpError::Busy)
    }

    /// Operator switch: a disabled device cannot be claimed. Ownership and live claims stay as
    /// they are; setting the current value again changes nothing.
    pub async fn set_disabled(
        &self,
        thing: &ThingName,
        disabled: bool,
        operator: &str,
        reason: Option<String>,
    ) -> Result<Device, DeviceOpError> {
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let Some(device) = self.store.device(thing).await? else {
                return Err(DeviceOpError::DeviceNotFound);
            };
            if device.disabled == disabled {
                return Ok(device);
            }
            let mut change = DeviceChange::on(&device);
            change.device.disabled = disabled;
            let event = if disabled {
                HistoryEvent::Disabled
            } else {
                HistoryEvent::Enabled
            };
            let mut entry = NewHistoryEntry::new(now, event, Actor::Operator(operator.to_owned()), None);
            entry.reason = reason.clone();
            change.record(entry);
            let updated = change.device.clone();
            if self.try_commit(change, attempt).await? {
                return Ok(updated);
            }
        }
        Err(DeviceOpError::Busy)
    }
}

fn elapsed_ms(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the user sees while a claim waits for a retry of its publish (the technical detail goes
/// to the logs only).
fn publish_failure_message(code: &str) -> &'static str {
    match code {
        "vendor_not_configured" | "credentials_invalid" | "tls_config" => {
            "This product cannot be onboarded yet because of a configuration problem on our side. We keep trying and have been alerted."
        }
        _ => "We could not reach the product's network service yet. We keep trying automatically until the claim expires.",
    }
}

/// Randomised, growing pause after a lost race, so racers do not collide again in lockstep.
async fn backoff(attempt: u32) {
    let ceiling_ms = 10u64.saturating_mul(1 << attempt.min(6));
    let pause = fastrand::u64(1..=ceiling_ms);
    tokio::time::sleep(StdDuration::from_millis(pause)).await;
}
