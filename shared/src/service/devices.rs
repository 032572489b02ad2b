//! The device registry: importing device records (admin API, `claimctl import`) and the operator
//! switch that disables or enables claiming a device. Neither touches ownership.

use super::{ClaimService, Clock, DeviceOpError};
use crate::{
    domain::{
        device::{Device, Holder},
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::ThingName,
        label_code::LabelCode,
        quarantine::QuarantineReason,
        registry::{ImportDecision, NewDevice},
    },
    ports::{Absent, CommitError, DeviceChange, OwnershipStore},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    Created,
    Unchanged,
    Updated,
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// Adds a manufactured device to the registry, or updates its vendor, SKU, label code or
    /// ThingName-claim setting (see [`NewDevice::decide`]). A label code that belongs to another
    /// device, as its code or its ThingName, is refused (`CodeInUse`), without saying which; so is
    /// a new device whose ThingName is another device's code.
    pub async fn import(&self, new: &NewDevice, actor: Actor) -> Result<ImportOutcome, DeviceOpError> {
        for attempt in 0..self.settings.max_attempts {
            let now = self.clock.now();
            let existing = self.store.device(&new.thing_name).await?;
            let (mut change, outcome) = match new.decide(existing.as_ref(), now) {
                ImportDecision::Unchanged => return Ok(ImportOutcome::Unchanged),
                ImportDecision::Create(mut device) => {
                    // A thing quarantined while it was unknown stays quarantined as a registry
                    // device, so that a claim of it lifts the quarantine (its entry exists already).
                    device.quarantine = self.store.quarantine(&new.thing_name).await?;
                    let mut change = DeviceChange::create(device);
                    change.previous_quarantine = change.device.quarantine.clone();
                    (change, ImportOutcome::Created)
                }
                ImportDecision::Update { before, after } => {
                    (DeviceChange::replacing(before, after), ImportOutcome::Updated)
                }
            };
            change.must_be_absent = self.unshadowed(new, &change);
            change.record(NewHistoryEntry::new(now, HistoryEvent::Imported, actor.clone(), None));
            match self.store.commit(change).await {
                Ok(()) => return Ok(outcome),
                Err(CommitError::CodeTaken) => return Err(DeviceOpError::CodeInUse),
                Err(CommitError::Conflict | CommitError::IdempotencyKeyUsed) => super::backoff(attempt).await,
                Err(CommitError::Store(err)) => return Err(err.into()),
            }
        }
        Err(DeviceOpError::Busy)
    }

    /// What an import must not find, so that whatever a user types names one device: a new label
    /// code that reads as a ThingName must not be another device's ThingName, and a new device's
    /// ThingName must not be another device's label code (claims look codes up first). Checked in
    /// the import's own transaction, so two imports cannot race past it.
    fn unshadowed(&self, new: &NewDevice, change: &DeviceChange) -> Vec<Absent> {
        let thing = &change.device.thing_name;
        let mut absent = Vec::new();
        let new_code = change.device.code_hash.is_some() && change.device.code_hash != change.previous_code_hash;
        if let Some(code_thing) = new
            .code_as_thing_name
            .as_ref()
            .filter(|code_thing| *code_thing != thing)
        {
            if new_code {
                absent.push(Absent::Device(code_thing.clone()));
            }
        }
        if let (None, Some(key)) = (change.expected_version, &self.code_key) {
            let as_code = key.hash(&LabelCode::from(thing.clone()));
            if change.device.code_hash.as_ref() != Some(&as_code) {
                absent.push(Absent::Code(as_code));
            }
        }
        absent
    }

    /// Operator switch: a disabled device is out of service for users (see `Device::disabled`); a
    /// live claim's pending message leaves the outbox. Ownership and claims stay as they are;
    /// setting the current value again changes nothing.
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
            // A live claim's endpoint message is not sent while the device is out of service: it
            // leaves the outbox (its user can retry once the device is enabled again).
            if let (true, Holder::Reserved { claim_id, .. }) = (disabled, device.effective_holder(now)) {
                let mut claim = self.claim_pointed_at(claim_id).await?;
                if claim.next_publish_at.take().is_some() {
                    change.update_claim(claim.version, claim);
                }
            }
            let event = if disabled {
                HistoryEvent::Disabled
            } else {
                HistoryEvent::Enabled
            };
            let mut entry = NewHistoryEntry::new(now, event, Actor::Operator(operator.to_owned()), None);
            entry.reason = reason.clone();
            change.record(entry);
            // Back in service: a certificate the gate switched off because the device was disabled
            // works again (other quarantines are lifted by a claim or an operator).
            let disabled_quarantine = device
                .quarantine
                .as_ref()
                .filter(|quarantine| !disabled && quarantine.reason == QuarantineReason::Disabled);
            if let Some(quarantine) = disabled_quarantine {
                let actor = Actor::Operator(operator.to_owned());
                self.lift_in(&mut change, quarantine, actor, None, now).await?;
            }
            let updated = change.device.clone();
            if self.try_commit(change, attempt).await? {
                return Ok(updated);
            }
        }
        Err(DeviceOpError::Busy)
    }
}
