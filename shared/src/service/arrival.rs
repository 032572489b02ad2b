//! A device showed up in the OEM account (thing created by JITP, or a connection): the claim that
//! sent it there completes and its user owns the device. Events are at-least-once and unordered,
//! so duplicates and reconnects change nothing.

use super::{elapsed_ms, ClaimService, Clock, DeviceOpError};
use crate::{
    domain::{
        claim::Claim,
        device::{ArrivalDecision, Holder, Provisioning},
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::{ClaimId, ThingName},
    },
    metrics,
    ports::{DeviceChange, OwnershipStore, StoreError},
};

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
    /// Disabled by an operator: its arrival completes nothing while it is out of service.
    Disabled,
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
            ArrivalOutcome::Disabled => "disabled",
            ArrivalOutcome::UnknownThing => "unknown_thing",
        }
    }
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// The device of this claim arrived (a test and support shortcut for [`Self::record_arrival`]
    /// when the claim is known).
    pub async fn mark_provisioned(&self, claim_id: &ClaimId) -> Result<ArrivalOutcome, DeviceOpError> {
        let Some(claim) = self.store.claim(claim_id).await? else {
            return Err(DeviceOpError::DeviceNotFound);
        };
        self.record_arrival(&claim.thing_name, &Provisioning::default()).await
    }

    /// Completes the claim that sent the device here: the device's reservation, even past its
    /// deadline (nobody else claimed it), or its last claim if that expired at most the arrival
    /// grace before. Owned devices only get missing provisioning details filled in. Logs one
    /// `device_arrival` event.
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
        metrics::device_arrival(name);
        if let Ok(ArrivalOutcome::Completed(claim)) = &outcome {
            let since_claim = (self.clock.now() - claim.created_at).unsigned_abs();
            metrics::claim_provisioned(&claim.vendor, &claim.target_endpoint, since_claim);
        }
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
            let (claim_id, reserved) = match device.decide_arrival() {
                ArrivalDecision::Unclaimed => return Ok(ArrivalOutcome::Unclaimed),
                ArrivalDecision::Disabled => return Ok(ArrivalOutcome::Disabled),
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
                ArrivalDecision::CompleteReservation(claim_id) => (claim_id, true),
                ArrivalDecision::CheckLastClaim(claim_id) => (claim_id, false),
            };
            let mut claim = self.claim_pointed_at(&claim_id).await?;
            if !reserved && !claim.completed_by_late_arrival(now, self.settings.arrival_grace) {
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
}
