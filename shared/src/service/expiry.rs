//! Claims past their deadline. Reads are right without any of this (expiry is a fact of the
//! clock: see `domain::claim`); the scheduled sweep records each expiry so lists, counts and
//! records are right too, and every use case that supersedes an overdue claim records its expiry
//! in the same change ([`ClaimService::expire_into`]).

use time::OffsetDateTime;

use super::{ClaimService, Clock, DeviceOpError};
use crate::{
    domain::{
        claim::ClaimState,
        device::Holder,
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::{ClaimId, ThingName},
    },
    metrics,
    ports::{DeviceChange, OwnershipStore, StoreError},
};

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// The scheduled sweep: records the expiry of every claim past its deadline (oldest first, at
    /// most `limit`). Returns how many it expired.
    pub async fn sweep_overdue(&self, limit: u32) -> Result<u32, DeviceOpError> {
        let mut expired = 0;
        for claim in self.store.overdue_claims(self.clock.now(), limit).await? {
            if self.expire_if_overdue(&claim.thing_name).await?.is_some() {
                expired += 1;
            }
        }
        if expired > 0 {
            metrics::claims_expired("sweep", u64::from(expired));
            tracing::info!(event = "expiry_sweep", expired);
        }
        Ok(expired)
    }

    /// Records the expiry of a device's overdue reservation, if it has one: the sweep's unit of
    /// work.
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

    /// Adds "claim `old_id` expired" to a change (claim record and device history).
    pub(super) async fn expire_into(
        &self,
        change: &mut DeviceChange,
        old_id: &ClaimId,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut old = self.claim_pointed_at(old_id).await?;
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
}
