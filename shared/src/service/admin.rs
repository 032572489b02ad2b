//! Operator use cases (the admin API and `claimctl`): inspect a device ("why can't I claim my
//! product?"), force-release it, list claims by state, and the claims behind the funnel. Import and
//! disable/enable are in [`super::devices`]. Every change lands in the device history with the
//! operator's identity (an IAM principal ARN through the API).

use time::{Duration, OffsetDateTime};

use super::{elapsed_ms, ClaimService, Clock, DeviceOpError};
use crate::{
    domain::{
        attempts::{AttemptLimits, AttemptScope},
        claim::{Claim, ClaimState},
        device::{Device, Holder},
        history::{Actor, HistoryEntry},
        ids::{ThingName, UserId},
    },
    metrics,
    ports::{DeviceChange, OwnershipStore, StoreError},
};

/// Everything an operator needs to answer "why can't I claim my product?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub thing_name: ThingName,
    /// `None`: not in the registry (never imported).
    pub device: Option<Device>,
    /// The claim that holds the device right now (live reservation or ownership).
    pub holding_claim: Option<Claim>,
    /// The device's complete history, oldest first.
    pub history: Vec<HistoryEntry>,
    pub claimable_now: bool,
    /// `claimable`, `not_imported`, `disabled`, `owned`, `reserved`, or `rate_limited` (only when
    /// inspected for a user: the device is free but that user used up their failed attempts).
    pub reason: &'static str,
    /// The failed-attempt counts of the user the device was inspected for.
    pub attempts: Option<AttemptStatus>,
    pub at: OffsetDateTime,
}

/// Where one user stands against the failed-attempt limits, for one device, this window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptStatus {
    pub user: UserId,
    pub failed_by_user: u32,
    pub failed_on_device: u32,
    pub limits: AttemptLimits,
    pub window_ends_at: OffsetDateTime,
    /// `Some(wait)`: the user's claims of this device are answered `429` for this long.
    pub retry_after: Option<Duration>,
}

/// Claims are found through their deadline (the `by_state` index); a deadline is at most this long
/// after the claim started or was last renewed.
const LONGEST_DEADLINE: Duration = Duration::days(2);

/// The outcome of a forced release: the device as it is now, and the claim that was released
/// (`None`: nobody held the device, nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedRelease {
    pub device: Device,
    pub released: Option<Claim>,
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    pub async fn inspect(&self, thing: &ThingName) -> Result<Inspection, StoreError> {
        self.inspect_for(thing, None).await
    }

    /// [`Self::inspect`], and whether `user` (the one in the support ticket) is held back by the
    /// failed-attempt limits on this device.
    pub async fn inspect_for(&self, thing: &ThingName, user: Option<&UserId>) -> Result<Inspection, StoreError> {
        let now = self.clock.now();
        let attempts = match user {
            Some(user) => Some(self.attempt_status(user, thing, now).await?),
            None => None,
        };
        let Some(device) = self.store.device(thing).await? else {
            return Ok(Inspection {
                thing_name: thing.clone(),
                device: None,
                holding_claim: None,
                history: Vec::new(),
                claimable_now: false,
                reason: "not_imported",
                attempts,
                at: now,
            });
        };
        let holding_claim = match device.effective_holder(now).claim_id() {
            Some(claim_id) => self.store.claim(claim_id).await?,
            None => None,
        };
        let history = self.store.history(thing).await?;
        let claimability = device.claimability(now);
        // What the device says comes first; the limit is the reason only for a device that is free.
        let rate_limited = claimability.now() && attempts.as_ref().is_some_and(|a| a.retry_after.is_some());
        Ok(Inspection {
            thing_name: thing.clone(),
            device: Some(device),
            holding_claim,
            history,
            claimable_now: claimability.now() && !rate_limited,
            reason: if rate_limited {
                "rate_limited"
            } else {
                claimability.reason()
            },
            attempts,
            at: now,
        })
    }

    async fn attempt_status(
        &self,
        user: &UserId,
        thing: &ThingName,
        now: OffsetDateTime,
    ) -> Result<AttemptStatus, StoreError> {
        let limits = self.settings.attempt_limits;
        let (failed_by_user, user_wait) = self.attempts_at(&AttemptScope::User(user.clone()), now).await?;
        let (failed_on_device, device_wait) = self
            .attempts_at(&AttemptScope::UserDevice(user.clone(), thing.clone()), now)
            .await?;
        Ok(AttemptStatus {
            user: user.clone(),
            failed_by_user,
            failed_on_device,
            limits,
            window_ends_at: limits.window_at(now).end,
            retry_after: user_wait.or(device_wait),
        })
    }

    /// Claims recorded in `state` that started at least `older_than` ago, oldest first, at most
    /// `limit` (e.g. claims stuck in `pending` for ten minutes).
    pub async fn claims_in_state(
        &self,
        state: ClaimState,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<Claim>, StoreError> {
        let now = self.clock.now();
        let started_before = now - older_than;
        let mut claims = self
            .store
            // Deadline order is start order, apart from renewals: the oldest come first.
            .claims_in_state(
                state,
                OffsetDateTime::UNIX_EPOCH,
                started_before + LONGEST_DEADLINE,
                limit,
            )
            .await?;
        claims.retain(|claim| claim.created_at <= started_before);
        claims.sort_by_key(|claim| claim.created_at);
        claims.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(claims)
    }

    /// Every claim started in `[from, to)`, whatever its state, renewed since or not.
    pub async fn claims_started_between(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<Claim>, StoreError> {
        // A deadline is the last start or renewal plus at most LONGEST_DEADLINE, and renewals
        // happen before now: a claim renewed after `to` has a deadline up to now + that.
        let deadlines_until = to.max(self.clock.now()) + LONGEST_DEADLINE;
        let mut claims = Vec::new();
        for state in ClaimState::ALL {
            let found = self
                .store
                .claims_in_state(state, from, deadlines_until, u32::MAX)
                .await?;
            claims.extend(
                found
                    .into_iter()
                    .filter(|claim| claim.created_at >= from && claim.created_at < to),
            );
        }
        Ok(claims)
    }

    /// Frees a device whoever holds it (resale without the seller, support cases): an owned device
    /// or a live reservation is released with the operator and reason in the history; an overdue
    /// reservation is recorded as expired first. A free device stays as it is.
    pub async fn force_release(
        &self,
        thing: &ThingName,
        operator: &str,
        reason: &str,
    ) -> Result<ForcedRelease, DeviceOpError> {
        let started = std::time::Instant::now();
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let Some(device) = self.store.device(thing).await? else {
                return Err(DeviceOpError::DeviceNotFound);
            };
            let overdue = device.overdue_reservation(now).cloned();
            let holding = device.effective_holder(now).claim_id().cloned();
            if overdue.is_none() && holding.is_none() {
                return Ok(ForcedRelease { device, released: None });
            }
            let mut change = DeviceChange::on(&device);
            if let Some(overdue) = &overdue {
                self.expire_into(&mut change, overdue, now).await?;
                change.device.holder = Holder::Free;
            }
            let released = match &holding {
                Some(claim_id) => Some(
                    self.release_into(
                        &mut change,
                        claim_id,
                        Actor::Operator(operator.to_owned()),
                        Some(reason.to_owned()),
                        now,
                    )
                    .await?,
                ),
                None => None,
            };
            let updated = change.device.clone();
            if self.try_commit(change, attempt).await? {
                if released.is_some() {
                    metrics::device_released("operator");
                }
                tracing::info!(
                    event = "release_decision",
                    outcome = if released.is_some() { "force_released" } else { "expired" },
                    operator,
                    claim_id = released.as_ref().map(|claim| claim.claim_id.as_str()),
                    thing_name = %thing.redacted(),
                    latency_ms = elapsed_ms(started),
                );
                return Ok(ForcedRelease {
                    device: updated,
                    released,
                });
            }
        }
        Err(DeviceOpError::Busy)
    }
}
