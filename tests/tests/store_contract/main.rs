//! The store contract: what the use cases rely on from an `OwnershipStore`, checked on the port
//! itself, and every test run on both stores (DynamoDB Local and the in-memory store), so the fast
//! store used by the use-case tests is known to behave as the real one does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod certificate_control;
mod queries;
mod timed;
mod writes;

use claim_shared::{
    domain::{
        claim::{Claim, ClaimState},
        device::{Device, Holder},
        history::{Actor, HistoryEvent, NewHistoryEntry},
        ids::{ClaimId, ThingName, UserId},
    },
    ports::{DeviceChange, OwnershipStore},
};
use claim_tests::fixture::T0;
use time::{Duration, OffsetDateTime};

fn thing(name: &str) -> ThingName {
    ThingName::parse(name).expect("valid thing name")
}

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid user id")
}

/// A free device as an import creates it.
fn free_device(name: &str) -> Device {
    Device {
        thing_name: thing(name),
        vendor: "espressif".into(),
        sku: None,
        disabled: false,
        holder: Holder::Free,
        imported_at: T0,
        version: 0,
        history_len: 0,
        last_claim: None,
        provisioning: None,
        code_hash: None,
        thing_name_claims: true,
        quarantine: None,
    }
}

/// The change that creates `device` with its import entry.
fn creation(device: Device) -> DeviceChange {
    let mut change = DeviceChange::create(device);
    change.record(NewHistoryEntry::new(T0, HistoryEvent::Imported, Actor::System, None));
    change
}

/// A claim of `device` by `who`, started at `at` with a 15-minute deadline, in `state`.
fn claim_in(device: &str, who: &str, at: OffsetDateTime, state: ClaimState) -> Claim {
    let mut claim = Claim::new(
        ClaimId::new_random(),
        thing(device),
        user(who),
        "espressif".into(),
        "oem-ats.iot.eu-west-1.amazonaws.com".into(),
        at,
        Duration::minutes(15),
    );
    claim.state = state;
    if state != ClaimState::Pending {
        claim.next_publish_at = None;
    }
    claim
}

/// Stores `claims` with a new device of their own (a claim is only ever written with its
/// device's change).
async fn store_claims<S: OwnershipStore>(store: &S, device: &str, claims: &[Claim]) {
    let mut change = creation(free_device(device));
    for claim in claims {
        change.create_claim(claim.clone());
    }
    store.commit(change).await.expect("stored");
}

fn ids(claims: &[Claim]) -> Vec<ClaimId> {
    claims.iter().map(|claim| claim.claim_id.clone()).collect()
}
