//! Recording what a publish of a claim's endpoint message did: confirmed by the staging endpoint
//! (the claim becomes `endpoint_published`, or a requested re-publish is done), failed (the claim
//! keeps waiting, shows the failure, and is due again after a growing backoff), or not sent (the
//! claim was no longer live). The outbox ([`super::outbox`]) reports here after every attempt.

use time::OffsetDateTime;

use super::{elapsed_ms, ClaimService, ClaimSettings, Clock, DeviceOpError};
use crate::{
    domain::{
        claim::{Claim, ClaimState},
        device::Holder,
        ids::ClaimId,
        publish::PublishError,
    },
    ports::{DeviceChange, OwnershipStore, StoreError},
};

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

/// What recording a publish attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Applied(Box<Claim>),
    /// The report was already applied or no longer applies (duplicate, late, superseded).
    Ignored(ClaimState),
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// The staging endpoint confirmed the publish of a claim's endpoint message.
    pub async fn mark_published(&self, claim_id: &ClaimId) -> Result<Progress, DeviceOpError> {
        self.record_publish(claim_id, &PublishAttempt::Sent).await
    }

    /// Records the result of one publish attempt. A claim that no longer owes a publish (expired,
    /// superseded, finished) just leaves the outbox. Logs one `claim_publish` event.
    pub async fn record_publish(
        &self,
        claim_id: &ClaimId,
        attempt: &PublishAttempt,
    ) -> Result<Progress, DeviceOpError> {
        self.record_publish_result(claim_id, attempt)
            .await
            .map(|(progress, _)| progress)
    }

    /// [`Self::record_publish`], and the claim as the record left it.
    pub(super) async fn record_publish_result(
        &self,
        claim_id: &ClaimId,
        attempt: &PublishAttempt,
    ) -> Result<(Progress, Claim), DeviceOpError> {
        let started = std::time::Instant::now();
        let outcome = self.try_record_publish(claim_id, attempt).await;
        log_publish(claim_id, attempt, &outcome, started);
        outcome
    }

    /// Records a publish attempt on a live claim that owes it, from the claim as it was just
    /// committed or read (nothing is read), in one single-item write of the claim. If the claim
    /// changed since, the result is recorded as [`Self::record_publish_result`] does. A record that
    /// cannot be written is logged; the claim then stays due and is published again later. The
    /// claim as it stands after.
    pub(super) async fn record_on(&self, claim: Claim, attempt: &PublishAttempt) -> Claim {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let mut recorded = claim.clone();
        let before = recorded.version;
        let applied = apply_attempt(&mut recorded, attempt, now, &self.settings);
        recorded.version = before + 1;
        if applied.is_ok() && self.store.update_claim(&recorded, before).await.is_ok() {
            let outcome = Ok((Progress::Applied(Box::new(recorded.clone())), recorded.clone()));
            log_publish(&claim.claim_id, attempt, &outcome, started);
            return recorded;
        }
        match self.record_publish_result(&claim.claim_id, attempt).await {
            Ok((_, recorded)) => recorded,
            Err(err) => {
                tracing::warn!(event = "outbox_record_failed", claim_id = claim.claim_id.as_str(), error = %err);
                claim
            }
        }
    }

    async fn try_record_publish(
        &self,
        claim_id: &ClaimId,
        delivery: &PublishAttempt,
    ) -> Result<(Progress, Claim), DeviceOpError> {
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
            let applied = if !holds || !claim.is_live(now) {
                if claim.next_publish_at.is_none() {
                    return Ok((Progress::Ignored(claim.effective_state(now)), claim));
                }
                if holds && claim.is_overdue(now) {
                    // The overdue reservation ends here: a change of the device, not only the claim.
                    let mut change = DeviceChange::on(&device);
                    self.expire_into(&mut change, claim_id, now).await?;
                    change.device.holder = Holder::Free;
                    if self.try_commit(change, attempt).await? {
                        return Ok((Progress::Ignored(claim.effective_state(now)), claim));
                    }
                    continue;
                }
                claim.next_publish_at = None;
                false
            } else if claim.next_publish_at.is_none() || *delivery == PublishAttempt::NotSent {
                // No publish was owed (a duplicate report), or the claim became live again
                // (renewed) after the deliverer decided not to send: it stays due.
                return Ok((Progress::Ignored(claim.effective_state(now)), claim));
            } else {
                apply_attempt(&mut claim, delivery, now, &self.settings)?;
                true
            };
            claim.version = before + 1;
            if self.try_update_claim(&claim, before, attempt).await? {
                let progress = if applied {
                    Progress::Applied(Box::new(claim.clone()))
                } else {
                    Progress::Ignored(claim.effective_state(now))
                };
                return Ok((progress, claim));
            }
        }
        Err(DeviceOpError::Busy)
    }
}

/// What an attempt changes on a live claim that owes a publish: published (the claim's own history
/// says when, and its stream record becomes the `claim.endpoint_published` event), or failed (due
/// again after the backoff). Only the claim changes, so the record is one write of the claim.
fn apply_attempt(
    claim: &mut Claim,
    attempt: &PublishAttempt,
    now: OffsetDateTime,
    settings: &ClaimSettings,
) -> Result<(), StoreError> {
    match attempt {
        PublishAttempt::NotSent => {}
        PublishAttempt::Sent => claim
            .record_published(now)
            .map_err(|err| StoreError::Corrupt(err.to_string()))?,
        PublishAttempt::Failed(err) => claim.record_publish_failure(err, now, &settings.publish_backoff),
    }
    Ok(())
}

/// One `claim_publish` event: what the attempt did and how its record went.
fn log_publish(
    claim_id: &ClaimId,
    attempt: &PublishAttempt,
    outcome: &Result<(Progress, Claim), DeviceOpError>,
    started: std::time::Instant,
) {
    let recorded = match outcome {
        Ok((Progress::Applied(claim), _)) => format!("recorded_{}", claim.state),
        Ok((Progress::Ignored(state), _)) => format!("ignored_{state}"),
        Err(err) => err.to_string(),
    };
    let (name, error) = match attempt {
        PublishAttempt::Sent => ("published", None),
        PublishAttempt::Failed(err) => ("publish_failed", Some(err)),
        PublishAttempt::NotSent => ("not_sent", None),
    };
    tracing::info!(
        event = "claim_publish",
        outcome = name,
        recorded,
        claim_id = claim_id.as_str(),
        error_code = error.map(|err| err.code),
        error = error.map(|err| err.message.as_str()),
        latency_ms = elapsed_ms(started),
    );
}
