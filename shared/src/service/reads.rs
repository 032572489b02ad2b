//! The user's reads: `GET /v1/claims/{claim_id}`, `GET /v1/devices/{thing_name}` and
//! `GET /v1/devices`. Another user's claim or device answers exactly like a missing one, and so
//! does a disabled device, even for its holder.

use super::{ClaimService, Clock};
use crate::{
    domain::{
        claim::Claim,
        device::Device,
        ids::{ClaimId, ThingName, UserId},
    },
    ports::{OwnershipStore, Page, PageError, StoreError},
};

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// The caller's claim, or `None` for unknown ids and other users' claims alike.
    pub async fn claim_of(&self, user: &UserId, claim_id: &ClaimId) -> Result<Option<Claim>, StoreError> {
        Ok(self.store.claim(claim_id).await?.filter(|claim| &claim.user == user))
    }

    /// The device and the claim through which the caller holds it now (owned or live
    /// reservation); `None` for anyone else and for unknown devices alike.
    pub async fn device_of(&self, user: &UserId, thing: &ThingName) -> Result<Option<(Device, Claim)>, StoreError> {
        let Some(device) = self.store.device(thing).await? else {
            return Ok(None);
        };
        self.with_holding_claim(user, device).await
    }

    /// The caller's devices (owned, and reserved by live claims), a page at a time.
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
        if device.shown_to(self.clock.now()) != Some(user) {
            return Ok(None);
        }
        let Some(claim_id) = device.holder.claim_id() else {
            return Ok(None);
        };
        let claim = self.claim_pointed_at(claim_id).await?;
        Ok(Some((device, claim)))
    }
}
