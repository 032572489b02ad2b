//! `POST /v1/claims/{claim_id}/retry`: the owner of a claim asks for its endpoint message again. A
//! live claim is due for publishing now (joining a publish already due); an expired one is renewed
//! (new deadline, publish due now) if its device is still free and it was the device's most recent
//! claim. Retries of one claim are at least `RETRY_MIN_GAP` apart, so nobody can keep the vendor's
//! claim-thing busy.

use time::Duration;

use super::{ClaimService, Clock};
use crate::{
    domain::{
        claim::{Claim, ClaimState},
        device::{ClaimDecision, Holder},
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::{ClaimId, UserId},
    },
    ports::{ControlError, DeviceChange, OwnershipStore, StoreError},
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// Unknown id or another user's claim: one answer for both (`404`).
    #[error("no such claim")]
    ClaimNotFound,
    /// Provisioned, released or failed, or expired while the device went to someone else (`409`).
    #[error("the claim cannot be retried")]
    NotRetryable,
    /// Retried less than `RETRY_MIN_GAP` ago; nothing was written (`429` with `Retry-After`).
    #[error("retried a moment ago; try again in {} s", retry_after.whole_seconds())]
    TooSoon { retry_after: Duration },
    #[error("too much contention on this device, try again")]
    Busy,
    /// The device is quarantined and its certificate could not be activated again; nothing was
    /// written (`503`).
    #[error(transparent)]
    CertificateControl(#[from] ControlError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// The retry as the API runs it: [`Self::retry`], then the publish it made due at once, as far
    /// as the inline budget and the request's `deadline` allow (see [`Self::claim_and_publish`]).
    pub async fn retry_and_publish(
        &self,
        user: &UserId,
        claim_id: &ClaimId,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Claim, RetryError> {
        let claim = self.retry(user, claim_id).await?;
        Ok(self.publish_accepted(claim, None, deadline).await)
    }

    /// Makes the claim's endpoint message due now: for a live claim, or by renewing an expired one.
    pub async fn retry(&self, user: &UserId, claim_id: &ClaimId) -> Result<Claim, RetryError> {
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let Some(mut claim) = self.claim_of(user, claim_id).await? else {
                return Err(RetryError::ClaimNotFound);
            };
            let Some(device) = self.store.device(&claim.thing_name).await? else {
                return Err(StoreError::Corrupt(format!("claim {claim_id} names a missing device")).into());
            };
            // Out of service: nothing is sent for it until an operator enables it again.
            if device.disabled {
                return Err(RetryError::NotRetryable);
            }
            let before = claim.version;
            let mut change = DeviceChange::on(&device);
            let retryable = claim.is_live(now) || claim.effective_state(now) == ClaimState::Expired;
            if let Some(retry_after) = claim.retry_wait(now).filter(|_| retryable) {
                return Err(RetryError::TooSoon { retry_after });
            }
            if claim.is_live(now) {
                claim.republish_on_retry(now);
            } else if claim.effective_state(now) == ClaimState::Expired {
                // Only the device's most recent claim comes back: after anyone else's claim (even
                // one released since), a new claim is the honest record.
                if device.last_claim.as_ref() != Some(claim_id) {
                    return Err(RetryError::NotRetryable);
                }
                let superseded = match device.decide_renewal(user, now) {
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
            // A device that arrived after its claim's grace was quarantined; its owner's retry (a
            // claim again) brings it back, as a new claim would.
            if let Some(quarantine) = &device.quarantine {
                let owner = Actor::User(user.clone());
                self.lift_in(&mut change, quarantine, owner, Some(claim_id.clone()), now)
                    .await?;
            }
            change.update_claim(before, claim.clone());
            if self.try_commit(change, attempt).await? {
                return Ok(claim);
            }
        }
        Err(RetryError::Busy)
    }
}
