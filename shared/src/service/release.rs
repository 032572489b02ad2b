//! `DELETE /v1/devices/{thing_name}`: the owner gives the device up (resale, gift, factory reset);
//! it becomes claimable and the history keeps the release. Operators' forced release
//! ([`super::admin`]) shares [`ClaimService::release_into`].

use time::OffsetDateTime;

use super::{elapsed_ms, ClaimService, Clock};
use crate::{
    domain::{
        claim::{Claim, ClaimState},
        device::{Holder, ReleaseDecision},
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::{ClaimId, ThingName, UserId},
    },
    metrics,
    ports::{DeviceChange, OwnershipStore, StoreError},
};

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

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// The owner releases the device. Logs one `release_decision` event.
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
        if result.is_ok() {
            metrics::device_released("owner");
        }
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

    /// Adds "claim `claim_id` released by `actor`" to a change: the claim, the device (free) and its
    /// history. Returns the released claim.
    pub(super) async fn release_into(
        &self,
        change: &mut DeviceChange,
        claim_id: &ClaimId,
        actor: Actor,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let mut claim = self.claim_pointed_at(claim_id).await?;
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
}
