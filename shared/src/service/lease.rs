//! The per-vendor publisher lease: one delivery at a time sends a vendor's messages, so one
//! claim-thing client id never has two MQTT connections (AWS IoT disconnects the older one) and no
//! two deliverers publish the same claim at once. It is an item in the table (`LEASE#publisher#…`)
//! taken with a holder token until a deadline, renewed by the same holder, given back by deleting it.
//!
//! A process that delivers one invocation after another (`claim-publisher`: one instance at a time,
//! its MQTT connection kept across invocations) may keep its leases between deliveries
//! ([`DeliverySettings::keep_leases`](super::DeliverySettings)): a delivery shortly after the last
//! take uses the lease without a call, and nothing is given back, so the lease lapses
//! [`lease_for`](super::DeliverySettings::lease_for) after the last take if the process goes away.
//! That saves two sequential writes per delivery (take and give back), which on a busy table are
//! most of a small delivery's time. Every delivery still starts with at least `lease_for` minus
//! [`KEEP_UNRENEWED`] left on its lease, and reads its claims afresh after that, as before.

use std::{collections::HashMap, sync::Mutex};

use time::{Duration, OffsetDateTime};

use super::{outbox::Delivery, ClaimService, Clock};
use crate::ports::{OwnershipStore, StoreError};

/// How long after its last take a kept lease is used without renewing it: short next to the lease's
/// 30 s, so every delivery (and every chunk of one) starts with at least 25 s of lease left.
pub const KEEP_UNRENEWED: Duration = Duration::seconds(5);

/// A vendor's lease as one delivery holds it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Lease {
    pub name: String,
    pub holder: String,
}

/// The leases a process keeps between its deliveries: its one holder token, and when it last took
/// each lease.
#[derive(Debug)]
pub(super) struct KeptLeases {
    holder: String,
    taken_at: Mutex<HashMap<String, OffsetDateTime>>,
}

impl KeptLeases {
    pub fn new() -> Self {
        Self {
            holder: uuid::Uuid::new_v4().to_string(),
            taken_at: Mutex::new(HashMap::new()),
        }
    }

    fn taken(&self) -> std::sync::MutexGuard<'_, HashMap<String, OffsetDateTime>> {
        // A panic while the map was held cannot leave it inconsistent (single inserts and removes).
        self.taken_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `name` was taken so recently that it needs no renewal at `now`: less than
    /// [`KEEP_UNRENEWED`] ago, and less than a sixth of a lease lasting `lease_for` (a clock that
    /// stepped back, or a short lease, asks the table again).
    fn fresh(&self, name: &str, now: OffsetDateTime, lease_for: Duration) -> bool {
        let unrenewed = KEEP_UNRENEWED.min(lease_for / 6);
        self.taken()
            .get(name)
            .is_some_and(|&taken| (Duration::ZERO..unrenewed).contains(&(now - taken)))
    }
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// The lease of `vendor` as this delivery would hold it: with the process's own holder token
    /// when it keeps its leases, with a new one otherwise.
    pub(super) fn lease_of(&self, delivery: &Delivery, vendor: &str) -> Lease {
        Lease {
            name: format!("publisher#{vendor}"),
            holder: delivery
                .kept_leases()
                .map_or_else(|| uuid::Uuid::new_v4().to_string(), |kept| kept.holder.clone()),
        }
    }

    /// Takes `lease` (or renews it: the holder is the same) until `lease_for` from now; a kept
    /// lease taken less than [`KEEP_UNRENEWED`] ago is used as it is. `false`: another holder has it.
    pub(super) async fn take_lease(&self, delivery: &Delivery, lease: &Lease) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let kept = delivery.kept_leases();
        if kept.is_some_and(|kept| kept.fresh(&lease.name, now, delivery.settings.lease_for)) {
            return Ok(true);
        }
        let acquired = self
            .store
            .acquire_lease(&lease.name, &lease.holder, now, now + delivery.settings.lease_for)
            .await;
        if let Some(kept) = kept {
            match acquired {
                Ok(true) => kept.taken().insert(lease.name.clone(), now),
                // Lost, or unknown after an error: the next delivery asks the table again.
                Ok(false) | Err(_) => kept.taken().remove(&lease.name),
            };
        }
        acquired
    }

    /// Gives the lease back, unless the process keeps it; one that cannot be given back lapses by
    /// itself (the same holder may take it again meanwhile), so what was delivered under it still
    /// stands.
    pub(super) async fn let_lease_go(&self, delivery: &Delivery, lease: &Lease) {
        if delivery.kept_leases().is_some() {
            return;
        }
        if let Err(err) = self.store.release_lease(&lease.name, &lease.holder).await {
            tracing::warn!(event = "outbox_lease_release_failed", lease = lease.name.as_str(), error = %err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_lease_is_fresh_only_shortly_after_its_take_and_never_before_it() {
        let kept = KeptLeases::new();
        let taken = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let lease_for = Duration::seconds(30);
        assert!(!kept.fresh("publisher#v", taken, lease_for), "never taken");
        kept.taken().insert("publisher#v".into(), taken);
        assert!(kept.fresh("publisher#v", taken, lease_for));
        assert!(kept.fresh("publisher#v", taken + Duration::seconds_f64(4.9), lease_for));
        assert!(!kept.fresh("publisher#v", taken + KEEP_UNRENEWED, lease_for));
        assert!(
            !kept.fresh("publisher#v", taken - Duration::seconds(1), lease_for),
            "a clock stepped back"
        );
        assert!(
            !kept.fresh("publisher#v", taken + Duration::seconds(1), Duration::seconds(6)),
            "a short lease is used without renewal for a sixth of it only"
        );
        assert!(!kept.fresh("publisher#other", taken, lease_for));
    }
}
