//! The rogue-device gate (see [`crate::domain::quarantine`]): after an arrival was recorded, a
//! device nothing here sent to the OEM account has its certificate deactivated and is put on the
//! quarantine list; operators list and lift quarantines, and a claim of a quarantined device lifts
//! its quarantine before the endpoint message goes out (see [`super::claim`]).
//!
//! Order of effects: the certificate is switched first and the record written after, so a failure
//! in between leaves the certificate as it should be and the event's retry writes the record
//! (both steps are idempotent). Nothing here ever deletes a thing or a certificate.

use std::sync::Arc;

use super::{elapsed_ms, ArrivalOutcome, ClaimService, Clock, DeviceOpError};
use crate::{
    domain::{
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::{ClaimId, ThingName},
        quarantine::{is_certificate_id, GateDecision, GatePolicy, Quarantine, QuarantineReason},
    },
    metrics,
    ports::{CertificateControl, ControlError, DeviceChange, OwnershipStore, StoreError},
};

/// What the gate did about one arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// The arrival was expected (a claim completed, an owned device reconnected): nothing to do.
    Expected,
    /// The certificate was deactivated and the quarantine recorded.
    Quarantined(Quarantine),
    /// Unexpected, but left alone; the reason (`gate_off`, `no_certificate_id`,
    /// `certificate_not_found`, `not_vendor_certificate`, `already_quarantined`).
    Spared(&'static str),
}

impl GateOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            GateOutcome::Expected => "expected",
            GateOutcome::Quarantined(_) => "quarantined",
            GateOutcome::Spared(why) => why,
        }
    }
}

/// An operator's or a claim's lift of a quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiftOutcome {
    /// The certificate is active again and the quarantine is gone.
    Lifted(Quarantine),
    NotQuarantined,
}

impl ArrivalOutcome {
    /// Why this arrival makes the device a rogue one, if it does.
    pub fn quarantine_reason(&self) -> Option<QuarantineReason> {
        match self {
            ArrivalOutcome::UnknownThing => Some(QuarantineReason::UnknownThing),
            ArrivalOutcome::Disabled => Some(QuarantineReason::Disabled),
            ArrivalOutcome::Unclaimed => Some(QuarantineReason::Unclaimed),
            ArrivalOutcome::Completed(_) | ArrivalOutcome::AlreadyOwned | ArrivalOutcome::DetailsAdded => None,
        }
    }
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// Lets the service switch certificates: the gate acts as `policy` says, and claims and
    /// operators can lift quarantines.
    pub fn with_certificate_control(mut self, control: Arc<dyn CertificateControl>, policy: GatePolicy) -> Self {
        self.certificates = Some(control);
        self.gate = policy;
        self
    }

    pub fn gate_policy(&self) -> &GatePolicy {
        &self.gate
    }

    /// The gate, after [`Self::record_arrival`] decided `outcome` for `thing` arriving with the
    /// certificate `certificate_id` (an event without one is left to the event that has it: every
    /// connection's presence event does). Logs one `quarantine` event when the arrival was not
    /// expected.
    pub async fn gate_arrival(
        &self,
        thing: &ThingName,
        certificate_id: Option<&str>,
        outcome: &ArrivalOutcome,
    ) -> Result<GateOutcome, DeviceOpError> {
        self.gate(thing, certificate_id, outcome, false).await
    }

    /// As [`Self::gate_arrival`], for an arrival forwarded from another account or region: its
    /// certificate is in that account's AWS IoT, which this stack cannot switch off, so the gate
    /// only reports the unexpected arrival (`spared`, `forwarded`).
    pub async fn gate_forwarded_arrival(
        &self,
        thing: &ThingName,
        certificate_id: Option<&str>,
        outcome: &ArrivalOutcome,
    ) -> Result<GateOutcome, DeviceOpError> {
        self.gate(thing, certificate_id, outcome, true).await
    }

    async fn gate(
        &self,
        thing: &ThingName,
        certificate_id: Option<&str>,
        outcome: &ArrivalOutcome,
        forwarded: bool,
    ) -> Result<GateOutcome, DeviceOpError> {
        let Some(reason) = outcome.quarantine_reason() else {
            return Ok(GateOutcome::Expected);
        };
        let started = std::time::Instant::now();
        let result = if forwarded {
            Ok(GateOutcome::Spared("forwarded"))
        } else {
            self.try_gate(thing, certificate_id, reason).await
        };
        let name = result.as_ref().map(GateOutcome::name).unwrap_or("error");
        metrics::quarantine(name);
        tracing::info!(
            event = "quarantine",
            outcome = name,
            reason = reason.as_str(),
            thing_name = %thing.redacted(),
            certificate_id = certificate_id.filter(|id| is_certificate_id(id)),
            error = result.as_ref().err().map(ToString::to_string),
            latency_ms = elapsed_ms(started),
        );
        result
    }

    async fn try_gate(
        &self,
        thing: &ThingName,
        certificate_id: Option<&str>,
        reason: QuarantineReason,
    ) -> Result<GateOutcome, DeviceOpError> {
        let Some(control) = self.certificates.as_ref().filter(|_| self.gate.armed()) else {
            return Ok(GateOutcome::Spared("gate_off"));
        };
        let Some(certificate_id) = certificate_id.filter(|id| is_certificate_id(id)) else {
            return Ok(GateOutcome::Spared("no_certificate_id"));
        };
        let facts = control.describe(certificate_id).await?;
        if let GateDecision::Spare(why) = self.gate.decide(facts.as_ref()) {
            return Ok(GateOutcome::Spared(why));
        }
        let already = self.store.quarantine(thing).await?;
        if facts.is_some_and(|facts| !facts.active)
            && already.as_ref().is_some_and(|q| q.certificate_id == certificate_id)
        {
            return Ok(GateOutcome::Spared("already_quarantined"));
        }
        control.set_active(certificate_id, false).await?;
        let quarantine = Quarantine {
            thing_name: thing.clone(),
            certificate_id: certificate_id.to_owned(),
            reason,
            since: self.clock.now(),
        };
        self.record_quarantine(&quarantine).await?;
        Ok(GateOutcome::Quarantined(quarantine))
    }

    /// On the device record (with a history entry) for registry devices, on the list only for
    /// other things.
    async fn record_quarantine(&self, quarantine: &Quarantine) -> Result<(), DeviceOpError> {
        for attempt in 0..self.settings.max_attempts {
            let Some(device) = self.store.device(&quarantine.thing_name).await? else {
                self.store.put_quarantine(quarantine).await?;
                return Ok(());
            };
            let mut change = DeviceChange::on(&device);
            change.device.quarantine = Some(quarantine.clone());
            let mut entry = NewHistoryEntry::new(quarantine.since, HistoryEvent::Quarantined, Actor::System, None);
            entry.reason = Some(quarantine.reason.as_str().to_owned());
            change.record(entry);
            if self.try_commit(change, attempt).await? {
                return Ok(());
            }
        }
        Err(DeviceOpError::Busy)
    }

    /// The quarantine of `thing`, registry device or not.
    pub async fn quarantine_of(&self, thing: &ThingName) -> Result<Option<Quarantine>, StoreError> {
        self.store.quarantine(thing).await
    }

    /// Quarantines, in ThingName order from after `after` (operators' list).
    pub async fn quarantines(&self, after: Option<&ThingName>, limit: u32) -> Result<Vec<Quarantine>, StoreError> {
        self.store.quarantines(after, limit).await
    }

    /// An operator lifts the quarantine of `thing`: its certificate is activated again and the
    /// quarantine removed. Logs one `quarantine_lifted` event.
    pub async fn lift_quarantine(&self, thing: &ThingName, operator: &str) -> Result<LiftOutcome, DeviceOpError> {
        let started = std::time::Instant::now();
        let result = self.try_lift(thing, operator).await;
        tracing::info!(
            event = "quarantine_lifted",
            outcome = match &result {
                Ok(LiftOutcome::Lifted(_)) => "lifted",
                Ok(LiftOutcome::NotQuarantined) => "not_quarantined",
                Err(_) => "error",
            },
            thing_name = %thing.redacted(),
            operator,
            error = result.as_ref().err().map(ToString::to_string),
            latency_ms = elapsed_ms(started),
        );
        result
    }

    async fn try_lift(&self, thing: &ThingName, operator: &str) -> Result<LiftOutcome, DeviceOpError> {
        let Some(quarantine) = self.store.quarantine(thing).await? else {
            return Ok(LiftOutcome::NotQuarantined);
        };
        self.reactivate(&quarantine).await?;
        for attempt in 0..self.settings.max_attempts {
            match self.store.device(thing).await? {
                Some(device) if device.quarantine.is_some() => {
                    let mut change = DeviceChange::on(&device);
                    lift_into(
                        &mut change,
                        Actor::Operator(operator.to_owned()),
                        None,
                        self.clock.now(),
                    );
                    if self.try_commit(change, attempt).await? {
                        return Ok(LiftOutcome::Lifted(quarantine));
                    }
                }
                _ => {
                    self.store.remove_quarantine(thing).await?;
                    return Ok(LiftOutcome::Lifted(quarantine));
                }
            }
        }
        Err(DeviceOpError::Busy)
    }

    /// Ends `quarantine` in `change` (a claim, a retry, enabling): the certificate is activated
    /// first, so no record ever says the quarantine ended while the certificate is still off.
    pub(super) async fn lift_in(
        &self,
        change: &mut DeviceChange,
        quarantine: &Quarantine,
        actor: Actor,
        claim_id: Option<ClaimId>,
        now: time::OffsetDateTime,
    ) -> Result<(), ControlError> {
        self.reactivate(quarantine).await?;
        lift_into(change, actor, claim_id, now);
        Ok(())
    }

    /// Activates the quarantined certificate again (before any record says the quarantine ended).
    async fn reactivate(&self, quarantine: &Quarantine) -> Result<(), ControlError> {
        let control = self
            .certificates
            .as_ref()
            .ok_or_else(|| ControlError("no certificate control configured".into()))?;
        control.set_active(&quarantine.certificate_id, true).await
    }
}

/// Ends the device's quarantine in `change` (its certificate is active again), with a history entry.
fn lift_into(change: &mut DeviceChange, actor: Actor, claim_id: Option<ClaimId>, now: time::OffsetDateTime) {
    change.device.quarantine = None;
    change.record(NewHistoryEntry::new(
        now,
        HistoryEvent::QuarantineLifted,
        actor,
        claim_id,
    ));
}
