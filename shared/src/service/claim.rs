//! `POST /v1/claims`: a user claims a device by the code on its label. The code is resolved to a
//! device, the failed-attempt limits are checked, the ownership rules decide, and a new claim
//! reserves the device; [`ClaimService::claim_and_publish`] then sends the device its endpoint
//! message within the request (see [`super::outbox`]).

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::{elapsed_ms, ClaimService, Clock};
use crate::{
    domain::{
        attempts::{AttemptLimits, AttemptScope},
        claim::Claim,
        device::{ClaimDecision, Holder, NamedBy},
        endpoints::EndpointPlan,
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::{ClaimId, IdempotencyKey, ThingName, UserId},
        label_code::LabelCode,
    },
    metrics,
    ports::{ControlError, DeviceChange, Found, IdempotencyRecord, OwnershipStore, Read, StoreError},
};

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
    /// written, and nothing the request's code named is answered (`429` with `Retry-After`).
    #[error("too many failed claim attempts; try again in {} s", retry_after.whole_seconds())]
    RateLimited { retry_after: Duration },
    /// Lost the race too many times; nothing was written (`503`).
    #[error("too much contention on this device, try again")]
    Busy,
    /// The device is quarantined and its certificate could not be activated again, so its
    /// endpoint message would be useless; nothing was written (`503`).
    #[error(transparent)]
    CertificateControl(#[from] ControlError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ClaimError {
    /// As logs and metrics name it.
    fn outcome(&self) -> &'static str {
        match self {
            ClaimError::DeviceNotFound => "device_not_found",
            ClaimError::AlreadyClaimed => "already_claimed",
            ClaimError::IdempotencyKeyReused => "idempotency_key_reused",
            ClaimError::RateLimited { .. } => "rate_limited",
            ClaimError::Busy => "busy",
            ClaimError::CertificateControl(_) => "certificate_control_unavailable",
            ClaimError::Store(_) => "store_unavailable",
        }
    }
}

/// The claim is new, as this request committed it: published at once and recorded on without
/// reading it back.
#[derive(Debug)]
pub(super) struct Committed;

/// What a claim request resolved its code to, and what came of it.
type Decided = (
    Result<(ThingName, NamedBy), ClaimError>,
    Result<(ClaimOutcome, Option<Committed>), ClaimError>,
);

/// The store answered other reads than were asked (a bug in a store).
fn unexpected_reads() -> StoreError {
    StoreError::Corrupt("the store answered other reads than were asked".into())
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// `POST /v1/claims` as the API runs it: [`Self::claim`], then a new claim's endpoint message is
    /// published at once when its vendor's transport is one the API publishes inline (`https`,
    /// `iam`; within the inline budget, and with the request's `deadline`, returning before it).
    /// An `mqtt` vendor's claim is answered at once, owed: the stream-fed publisher delivers it
    /// (see `super::outbox`). The answer is the claim as far as it got. The publish is recorded
    /// on the claim and device as committed, so an accepted claim costs at most four store calls
    /// (see `docs/architecture.md`).
    pub async fn claim_and_publish(
        &self,
        request: &ClaimRequest,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<ClaimOutcome, ClaimError> {
        Ok(match self.claim_committing(request).await? {
            (ClaimOutcome::Created(claim), committed) => {
                ClaimOutcome::Created(self.publish_accepted(claim, committed, deadline).await)
            }
            (existing @ ClaimOutcome::Existing(_), _) => existing,
        })
    }

    /// Reserves a device for the caller, or returns the claim they already hold. Logs one
    /// `claim_decision` event (fields: see docs/operations.md, "Log fields").
    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimOutcome, ClaimError> {
        self.claim_committing(request).await.map(|(outcome, _)| outcome)
    }

    /// [`Self::claim`]; a claim this request committed comes with the device as written.
    async fn claim_committing(&self, request: &ClaimRequest) -> Result<(ClaimOutcome, Option<Committed>), ClaimError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let user_scope = AttemptScope::User(request.user.clone());
        let device_scope = |thing: &ThingName| AttemptScope::UserDevice(request.user.clone(), thing.clone());
        let (resolved, result) = self.decide(request, now).await;
        // A code that found nothing counts against the user: that is what guessing looks like. A
        // device somebody else holds counts against the user too (probing which devices are held
        // is bounded like guessing), and against the user on that device, whose smaller limit
        // stops an app retrying one held device before it uses up the user's budget: a buyer whose
        // seller has not released yet keeps their other claims. Only a device that exists is ever
        // a key (a mistyped label code must not be stored).
        match (&result, &resolved) {
            (Err(ClaimError::DeviceNotFound), _) => self.count_failed_attempt(&user_scope, now).await,
            (Err(ClaimError::AlreadyClaimed), Ok((thing, _))) => {
                self.count_failed_attempt(&device_scope(thing), now).await;
                self.count_failed_attempt(&user_scope, now).await;
            }
            _ => {}
        }
        let (outcome, claim_id) = match &result {
            Ok((ClaimOutcome::Created(claim), _)) => ("created", Some(claim.claim_id.as_str())),
            Ok((ClaimOutcome::Existing(claim), _)) => ("existing", Some(claim.claim_id.as_str())),
            Err(err) => (err.outcome(), None),
        };
        let error = result.as_ref().err().map(ToString::to_string);
        metrics::claim_request(outcome);
        if let Ok((ClaimOutcome::Created(claim), _)) = &result {
            metrics::claim_accepted(&claim.vendor);
        }
        // Only a device the code resolved to is named (redacted); the code itself and its hash
        // are never logged: a code that resolved to nothing may be someone's label code.
        // With label codes on, a code shaped like a ThingName may be a mistyped label code: a
        // code that found no claimable device is not named at all.
        let (thing_name, by) = match &resolved {
            _ if matches!(result, Err(ClaimError::DeviceNotFound)) => (None, None),
            Ok((thing, named_by)) => (Some(thing.redacted()), Some(named_by.as_str())),
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

    /// The decision, in as few round trips as the code allows: the user's failed attempts are read
    /// with the label code's lookup entry, or, when the code is the ThingName, with everything
    /// [`Self::decide_and_claim`] reads. A user over their limit gets `429` whatever the code
    /// named (what was read with the count is not used), except the first answer again for a
    /// repeat of a request that succeeded (same Idempotency-Key, same device).
    async fn decide(&self, request: &ClaimRequest, now: OffsetDateTime) -> Decided {
        let limits = &self.settings.attempt_limits;
        let user_scope = AttemptScope::User(request.user.clone());
        let hash = self.code_key.as_ref().map(|key| key.hash(&request.code));
        let mut reads = vec![Read::Attempts(user_scope.clone(), limits.window_at(now).start)];
        let direct = match &hash {
            Some(hash) => {
                reads.push(Read::Code(hash.clone()));
                None
            }
            None => request.code.as_thing_name(),
        };
        if let Some(thing) = &direct {
            reads.extend(device_reads(request, thing, limits, now));
        }
        let mut found = match self.store.read_many(&reads).await {
            Ok(found) => found.into_iter(),
            Err(err) => return (Err(err.clone().into()), Err(err.into())),
        };
        let Some(Found::Attempts(user_failed)) = found.next() else {
            return (Err(unexpected_reads().into()), Err(unexpected_reads().into()));
        };
        if let Some(retry_after) = limits.exceeded(&user_scope, user_failed, now) {
            let limited = ClaimError::RateLimited { retry_after };
            return match self.replay_while_limited(request).await {
                Ok(Some((thing, named_by, claim))) => (Ok((thing, named_by)), Ok((ClaimOutcome::Created(claim), None))),
                Ok(None) => (Err(limited.clone()), Err(limited)),
                Err(err) => (Err(err.clone()), Err(err)),
            };
        }
        let resolved = match (&hash, direct) {
            (Some(hash), _) => match found.next() {
                Some(Found::Code(Some(thing))) => Ok((thing, NamedBy::LabelCode(hash.clone()))),
                Some(Found::Code(None)) => request
                    .code
                    .as_thing_name()
                    .map(|thing| (thing, NamedBy::ThingName))
                    .ok_or(ClaimError::DeviceNotFound),
                _ => Err(unexpected_reads().into()),
            },
            (None, Some(thing)) => Ok((thing, NamedBy::ThingName)),
            (None, None) => Err(ClaimError::DeviceNotFound),
        };
        let result = match &resolved {
            Ok((thing, named_by)) => {
                let prefetched = hash.is_none().then(|| found.collect());
                self.decide_and_claim(request, thing, named_by, prefetched).await
            }
            Err(err) => Err(err.clone()),
        };
        (resolved, result)
    }

    /// The device a claim's code names: its label code's lookup entry if label codes are enabled
    /// and it has one, else the device whose ThingName it is.
    async fn resolve(&self, code: &LabelCode) -> Result<(ThingName, NamedBy), ClaimError> {
        if let Some(key) = &self.code_key {
            let hash = key.hash(code);
            if let Some(thing) = self.store.thing_by_code(&hash).await? {
                return Ok((thing, NamedBy::LabelCode(hash)));
            }
        }
        match code.as_thing_name() {
            Some(thing) => Ok((thing, NamedBy::ThingName)),
            None => Err(ClaimError::DeviceNotFound),
        }
    }

    /// The claim an idempotent repeat of this request created, if it is one. Anything else is
    /// `None` and answered `429`, never `400` or `404`: those would answer guesses.
    async fn replay_while_limited(
        &self,
        request: &ClaimRequest,
    ) -> Result<Option<(ThingName, NamedBy, Claim)>, ClaimError> {
        if request.idempotency_key.is_none() {
            return Ok(None);
        }
        let Ok((thing, named_by)) = self.resolve(&request.code).await else {
            return Ok(None);
        };
        match self
            .replay_idempotent(request, &ClaimRequest::fingerprint(&thing))
            .await
        {
            Ok(Some(claim)) => Ok(Some((thing, named_by, claim))),
            Ok(None) | Err(ClaimError::IdempotencyKeyReused) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `Err(RateLimited)` if the user used up their failed attempts in the current window. A request
    /// the API cannot even read asks this before it answers `400`: a limited user gets `429`
    /// whatever they send, so a `400` never answers a guess.
    pub async fn refuse_if_limited(&self, user: &UserId) -> Result<(), ClaimError> {
        self.check_attempts(&AttemptScope::User(user.clone()), self.clock.now())
            .await
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
    pub(super) async fn attempts_at(
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
            metrics::attempt_count_failure("store_unavailable");
            tracing::warn!(event = "attempt_count_failed", outcome = "store_unavailable", error = %err);
        }
    }

    /// Reads the device with the user's failed attempts on it and the idempotency record (one round
    /// trip, or none when [`Self::decide`] read them: `prefetched`), lets the rules decide, and
    /// commits a new claim, deciding again on fresh data after a lost race.
    async fn decide_and_claim(
        &self,
        request: &ClaimRequest,
        thing: &ThingName,
        named_by: &NamedBy,
        mut prefetched: Option<Vec<Found>>,
    ) -> Result<(ClaimOutcome, Option<Committed>), ClaimError> {
        let fingerprint = ClaimRequest::fingerprint(thing);
        let limits = &self.settings.attempt_limits;
        let device_scope = AttemptScope::UserDevice(request.user.clone(), thing.clone());
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let found = match prefetched.take() {
                Some(found) => found,
                None => self.store.read_many(&device_reads(request, thing, limits, now)).await?,
            };
            let (device, failed_here, record) = match found.as_slice() {
                [Found::Device(device), Found::Attempts(failed), rest @ ..] => {
                    let record = match rest {
                        [] => None,
                        [Found::Idempotency(record)] => record.clone(),
                        _ => return Err(unexpected_reads().into()),
                    };
                    (device.as_deref().cloned(), *failed, record)
                }
                _ => return Err(unexpected_reads().into()),
            };
            if let Some(retry_after) = limits.exceeded(&device_scope, failed_here, now) {
                return Err(ClaimError::RateLimited { retry_after });
            }
            // Records are written only with a new claim, so a replay repeats that answer (`202`).
            if let Some(record) = record {
                return Ok((ClaimOutcome::Created(self.replayed(&record, &fingerprint).await?), None));
            }
            let Some(device) = device else {
                return Err(ClaimError::DeviceNotFound);
            };
            let superseded = match device.decide_claim(&request.user, named_by, now) {
                ClaimDecision::NotClaimable => return Err(ClaimError::DeviceNotFound),
                ClaimDecision::AlreadyClaimed => return Err(ClaimError::AlreadyClaimed),
                ClaimDecision::AlreadyYours(claim_id) => {
                    return Ok((ClaimOutcome::Existing(self.claim_pointed_at(&claim_id).await?), None));
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
            // A claim is the legitimate way back for a quarantined device: its certificate works
            // again before the claim exists, so the endpoint message can bring it in.
            if let Some(quarantine) = &device.quarantine {
                let user = Actor::User(request.user.clone());
                self.lift_in(&mut change, quarantine, user, Some(claim.claim_id.clone()), now)
                    .await?;
            }
            if self.try_commit(change, attempt).await? {
                return Ok((ClaimOutcome::Created(claim), Some(Committed)));
            }
        }
        Err(ClaimError::Busy)
    }

    /// The claim an idempotency record of this user points at, if the record was made for the same
    /// device (`fingerprint`).
    async fn replayed(&self, record: &IdempotencyRecord, fingerprint: &str) -> Result<Claim, ClaimError> {
        if record.fingerprint != fingerprint {
            return Err(ClaimError::IdempotencyKeyReused);
        }
        match self.store.claim(&record.claim_id).await? {
            Some(claim) => Ok(claim),
            None => Err(StoreError::Corrupt(format!(
                "idempotency record points at missing claim {}",
                record.claim_id
            ))
            .into()),
        }
    }

    async fn replay_idempotent(&self, request: &ClaimRequest, fingerprint: &str) -> Result<Option<Claim>, ClaimError> {
        let Some(key) = &request.idempotency_key else {
            return Ok(None);
        };
        match self
            .store
            .idempotency_record(&request.user, key, self.clock.now())
            .await?
        {
            Some(record) => self.replayed(&record, fingerprint).await.map(Some),
            None => Ok(None),
        }
    }
}

/// What deciding a claim of `thing` reads: the device, the user's failed attempts on it, and the
/// idempotency record of the request's key (if it has one).
fn device_reads(request: &ClaimRequest, thing: &ThingName, limits: &AttemptLimits, now: OffsetDateTime) -> Vec<Read> {
    let scope = AttemptScope::UserDevice(request.user.clone(), thing.clone());
    let mut reads = vec![
        Read::Device(thing.clone()),
        Read::Attempts(scope, limits.window_at(now).start),
    ];
    if let Some(key) = &request.idempotency_key {
        reads.push(Read::Idempotency(request.user.clone(), key.clone(), now));
    }
    reads
}
