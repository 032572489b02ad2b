//! A manufactured device and the ownership rules that decide who may claim or release it.
//!
//! A device is held by at most one user at a time, either as a *reservation* (a live claim with a
//! deadline) or as *ownership* (the claim completed). An operator can *disable* a device: it is then
//! out of service for users, whoever holds it (see [`Device::disabled`]). The rules here only decide; the store applies
//! a decision atomically, guarded by the device's version, so two racing decisions cannot both land.

use time::OffsetDateTime;

use super::{
    ids::{ClaimId, ThingName, UserId},
    label_code::CodeHash,
    quarantine::Quarantine,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Free,
    Reserved {
        claim_id: ClaimId,
        user: UserId,
        expires_at: OffsetDateTime,
    },
    Owned {
        claim_id: ClaimId,
        user: UserId,
        since: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub thing_name: ThingName,
    /// Module vendor: selects the staging endpoint and the claim-thing credentials.
    pub vendor: String,
    pub sku: Option<String>,
    /// Out of service for users (recalled, reported stolen, under investigation): it cannot be
    /// claimed, its holder cannot see, release or retry it, a live claim's endpoint message is not
    /// sent and its arrival does not complete the claim. Ownership itself stays as it is, and
    /// everything works again once it is enabled.
    pub disabled: bool,
    pub holder: Holder,
    pub imported_at: OffsetDateTime,
    /// Optimistic-concurrency counter: every change of the device or its claims bumps it.
    pub version: u64,
    /// Number of history entries; the next entry gets `history_len + 1`.
    pub history_len: u64,
    /// The claim that reserved the device most recently (kept after it ends): an arrival shortly
    /// after that claim expired still completes it.
    pub last_claim: Option<ClaimId>,
    /// Where and as what the device arrived in the OEM account, once it did.
    pub provisioning: Option<Provisioning>,
    /// The keyed hash of the OEM's label code, when the label shows a code of its own instead of
    /// the ThingName (see `label_code`). Never shown to anybody.
    pub code_hash: Option<CodeHash>,
    /// Whether the device may also be claimed by its ThingName. Always true for a device without a
    /// label code; for one with a code, only if the OEM allowed it at import.
    pub thing_name_claims: bool,
    /// Set when the device arrived unexpectedly and its certificate was deactivated (see
    /// [`super::quarantine`]); a claim of the device or an operator lifts it.
    pub quarantine: Option<Quarantine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provisioning {
    pub certificate_id: Option<String>,
    pub account_id: Option<String>,
    pub region: Option<String>,
}

impl Provisioning {
    /// Fills what is missing from `more` (events arrive in any order, each with part of it).
    /// Returns whether anything changed.
    pub fn merge(&mut self, more: &Provisioning) -> bool {
        let mut changed = false;
        for (mine, theirs) in [
            (&mut self.certificate_id, &more.certificate_id),
            (&mut self.account_id, &more.account_id),
            (&mut self.region, &more.region),
        ] {
            if mine.is_none() && theirs.is_some() {
                mine.clone_from(theirs);
                changed = true;
            }
        }
        changed
    }
}

/// What a device arriving in the OEM account leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrivalDecision {
    /// Complete the device's reservation. Even past its deadline: the device still points at it, so
    /// nobody else claimed the device, and the arrival proves the endpoint message reached it.
    CompleteReservation(ClaimId),
    /// The device is free; its last claim may have expired just before the device arrived. The
    /// caller completes it if it did so within the grace period.
    CheckLastClaim(ClaimId),
    /// Owned already (a reconnect, a duplicate event, or a factory-reset device coming back).
    AlreadyOwned(ClaimId),
    /// Free and never claimed: nothing to complete.
    Unclaimed,
    /// Disabled (owned or not): the arrival completes and records nothing while it is out of
    /// service, and the rogue-device gate quarantines it.
    Disabled,
}

/// How a claim request named its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedBy {
    /// By the label code printed on it (found through the code's keyed hash).
    LabelCode(CodeHash),
    /// By its ThingName.
    ThingName,
}

impl NamedBy {
    /// As logs show it (`by` of `claim_decision`); never the code itself.
    pub fn as_str(&self) -> &'static str {
        match self {
            NamedBy::LabelCode(_) => "label_code",
            NamedBy::ThingName => "thing_name",
        }
    }
}

/// What a claim request for this device leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Reserve the device for the caller with a new claim. `superseded` is an earlier claim whose
    /// deadline passed: it is recorded as expired in the same change.
    Reserve { superseded: Option<ClaimId> },
    /// The caller already holds this device (live reservation or ownership): answer with that claim.
    AlreadyYours(ClaimId),
    /// Another user holds it.
    AlreadyClaimed,
    /// Disabled by an operator, or not claimable by what the request named it by: to users this is
    /// indistinguishable from an unknown device.
    NotClaimable,
}

/// What a user's release request leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseDecision {
    Release(ClaimId),
    /// The caller's claim is still waiting for the device: the endpoint may already be on its way,
    /// so releasing now would race the device's arrival (`409 conflict`).
    MidClaim,
    /// Not held by the caller: answered like an unknown device.
    NotYours,
}

/// Whether a user could claim the device right now and, if not, the one reason an operator acts on
/// (`GET /v1/admin/devices/{thing_name}`). A device that is not in the registry at all is the
/// caller's to report (`not_imported`): there is no [`Device`] to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimability {
    Claimable,
    /// An operator disabled it (users get `404 device_not_found`).
    Disabled,
    /// Someone owns it; they must release it (or an operator force-releases it).
    Owned,
    /// A live claim reserves it until its deadline.
    Reserved,
}

impl Claimability {
    pub fn now(self) -> bool {
        self == Claimability::Claimable
    }

    pub fn reason(self) -> &'static str {
        match self {
            Claimability::Claimable => "claimable",
            Claimability::Disabled => "disabled",
            Claimability::Owned => "owned",
            Claimability::Reserved => "reserved",
        }
    }
}

impl Holder {
    pub fn claim_id(&self) -> Option<&ClaimId> {
        match self {
            Holder::Free => None,
            Holder::Reserved { claim_id, .. } | Holder::Owned { claim_id, .. } => Some(claim_id),
        }
    }
}

impl Device {
    /// Whether a user may claim the device by typing its ThingName: yes unless its label carries
    /// a code of its own and the OEM did not allow ThingName claims as well.
    pub fn claimable_by_thing_name(&self) -> bool {
        self.code_hash.is_none() || self.thing_name_claims
    }

    /// The holder as it is true at `now`: a reservation past its deadline holds nothing.
    pub fn effective_holder(&self, now: OffsetDateTime) -> &Holder {
        match &self.holder {
            Holder::Reserved { expires_at, .. } if now >= *expires_at => &Holder::Free,
            holder => holder,
        }
    }

    /// The claim whose deadline passed while it still held the reservation, if any.
    pub fn overdue_reservation(&self, now: OffsetDateTime) -> Option<&ClaimId> {
        match &self.holder {
            Holder::Reserved {
                claim_id, expires_at, ..
            } if now >= *expires_at => Some(claim_id),
            _ => None,
        }
    }

    /// Whether a claim request that named the device this way reaches it. Its own label code always
    /// does (a code that resolved to the device but does not match it is a stale lookup); its
    /// ThingName only if [`Device::claimable_by_thing_name`]. A device that does not answer looks
    /// like an unknown one.
    pub fn answers_to(&self, named_by: &NamedBy) -> bool {
        match named_by {
            NamedBy::LabelCode(hash) => self.code_hash.as_ref() == Some(hash),
            NamedBy::ThingName => self.claimable_by_thing_name(),
        }
    }

    /// A user's claim request that named the device as `named_by`.
    pub fn decide_claim(&self, user: &UserId, named_by: &NamedBy, now: OffsetDateTime) -> ClaimDecision {
        if !self.answers_to(named_by) {
            return ClaimDecision::NotClaimable;
        }
        self.decide_renewal(user, now)
    }

    /// A user renewing their own expired claim (a retry): the same rules as a claim, without asking
    /// for the code again.
    pub fn decide_renewal(&self, user: &UserId, now: OffsetDateTime) -> ClaimDecision {
        if self.disabled {
            return ClaimDecision::NotClaimable;
        }
        match self.effective_holder(now) {
            Holder::Free => ClaimDecision::Reserve {
                superseded: self.overdue_reservation(now).cloned(),
            },
            Holder::Reserved {
                claim_id, user: holder, ..
            }
            | Holder::Owned {
                claim_id, user: holder, ..
            } => {
                if holder == user {
                    ClaimDecision::AlreadyYours(claim_id.clone())
                } else {
                    ClaimDecision::AlreadyClaimed
                }
            }
        }
    }

    /// Disabled comes first: it stops every user, whoever holds the device.
    pub fn claimability(&self, now: OffsetDateTime) -> Claimability {
        if self.disabled {
            return Claimability::Disabled;
        }
        match self.effective_holder(now) {
            Holder::Free => Claimability::Claimable,
            Holder::Reserved { .. } => Claimability::Reserved,
            Holder::Owned { .. } => Claimability::Owned,
        }
    }

    pub fn decide_release(&self, user: &UserId, now: OffsetDateTime) -> ReleaseDecision {
        if self.disabled {
            return ReleaseDecision::NotYours;
        }
        match self.effective_holder(now) {
            Holder::Owned {
                claim_id, user: owner, ..
            } if owner == user => ReleaseDecision::Release(claim_id.clone()),
            Holder::Reserved { user: holder, .. } if holder == user => ReleaseDecision::MidClaim,
            _ => ReleaseDecision::NotYours,
        }
    }

    pub fn decide_arrival(&self) -> ArrivalDecision {
        match &self.holder {
            _ if self.disabled => ArrivalDecision::Disabled,
            Holder::Owned { claim_id, .. } => ArrivalDecision::AlreadyOwned(claim_id.clone()),
            Holder::Reserved { claim_id, .. } => ArrivalDecision::CompleteReservation(claim_id.clone()),
            Holder::Free => match &self.last_claim {
                Some(claim_id) => ArrivalDecision::CheckLastClaim(claim_id.clone()),
                None => ArrivalDecision::Unclaimed,
            },
        }
    }

    /// The user who may see and manage the device as theirs right now (owned or live reservation):
    /// nobody while it is disabled.
    pub fn shown_to(&self, now: OffsetDateTime) -> Option<&UserId> {
        if self.disabled {
            return None;
        }
        self.held_by(now)
    }

    /// The user this device counts as "theirs" right now (owned or live reservation).
    pub fn held_by(&self, now: OffsetDateTime) -> Option<&UserId> {
        match self.effective_holder(now) {
            Holder::Free => None,
            Holder::Reserved { user, .. } | Holder::Owned { user, .. } => Some(user),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 10:00 UTC);

    fn user(id: &str) -> UserId {
        UserId::parse(id).expect("valid")
    }

    fn device(holder: Holder) -> Device {
        Device {
            thing_name: ThingName::parse("dev-1").expect("valid"),
            vendor: "espressif".into(),
            sku: None,
            disabled: false,
            holder,
            imported_at: T0,
            version: 1,
            history_len: 1,
            last_claim: None,
            provisioning: None,
            code_hash: None,
            thing_name_claims: true,
            quarantine: None,
        }
    }

    fn reserved_by(who: &str, expires_at: OffsetDateTime) -> (ClaimId, Device) {
        let claim_id = ClaimId::new_random();
        let dev = device(Holder::Reserved {
            claim_id: claim_id.clone(),
            user: user(who),
            expires_at,
        });
        (claim_id, dev)
    }

    #[test]
    fn a_free_device_is_reserved_for_the_first_caller() {
        assert_eq!(
            device(Holder::Free).decide_claim(&user("a"), &NamedBy::ThingName, T0),
            ClaimDecision::Reserve { superseded: None }
        );
    }

    #[test]
    fn a_live_reservation_is_yours_or_already_claimed() {
        let (claim_id, dev) = reserved_by("a", T0 + time::Duration::minutes(15));
        assert_eq!(
            dev.decide_claim(&user("a"), &NamedBy::ThingName, T0),
            ClaimDecision::AlreadyYours(claim_id)
        );
        assert_eq!(
            dev.decide_claim(&user("b"), &NamedBy::ThingName, T0),
            ClaimDecision::AlreadyClaimed
        );
    }

    #[test]
    fn an_expired_reservation_frees_the_device_for_anyone() {
        let deadline = T0 + time::Duration::minutes(15);
        let (claim_id, dev) = reserved_by("a", deadline);
        for who in ["a", "b"] {
            assert_eq!(
                dev.decide_claim(&user(who), &NamedBy::ThingName, deadline),
                ClaimDecision::Reserve {
                    superseded: Some(claim_id.clone())
                }
            );
        }
        assert_eq!(dev.held_by(deadline), None);
    }

    #[test]
    fn ownership_is_exclusive_and_only_the_owner_releases() {
        let claim_id = ClaimId::new_random();
        let dev = device(Holder::Owned {
            claim_id: claim_id.clone(),
            user: user("a"),
            since: T0,
        });
        let much_later = T0 + time::Duration::days(400);
        assert_eq!(
            dev.decide_claim(&user("b"), &NamedBy::ThingName, much_later),
            ClaimDecision::AlreadyClaimed
        );
        assert_eq!(
            dev.decide_claim(&user("a"), &NamedBy::ThingName, much_later),
            ClaimDecision::AlreadyYours(claim_id.clone())
        );
        assert_eq!(
            dev.decide_release(&user("a"), much_later),
            ReleaseDecision::Release(claim_id)
        );
        assert_eq!(dev.decide_release(&user("b"), much_later), ReleaseDecision::NotYours);
    }

    #[test]
    fn a_live_reservation_cannot_be_released_but_an_expired_one_is_nobodys() {
        let deadline = T0 + time::Duration::minutes(15);
        let (_, dev) = reserved_by("a", deadline);
        assert_eq!(dev.decide_release(&user("a"), T0), ReleaseDecision::MidClaim);
        assert_eq!(dev.decide_release(&user("b"), T0), ReleaseDecision::NotYours);
        assert_eq!(dev.decide_release(&user("a"), deadline), ReleaseDecision::NotYours);
    }

    #[test]
    fn a_device_with_a_label_code_is_claimed_by_thing_name_only_if_allowed() {
        let mut device = device(Holder::Free);
        let alice = user("alice");
        let reserve = ClaimDecision::Reserve { superseded: None };
        assert!(
            device.claimable_by_thing_name(),
            "no code: the label shows the ThingName"
        );
        let hash = CodeHash::parse(&"ab".repeat(32)).expect("hash");
        let other = CodeHash::parse(&"cd".repeat(32)).expect("hash");
        assert_eq!(
            device.decide_claim(&alice, &NamedBy::LabelCode(hash.clone()), T0),
            ClaimDecision::NotClaimable,
            "a code the device does not have"
        );
        device.code_hash = Some(hash.clone());
        device.thing_name_claims = false;
        assert!(!device.claimable_by_thing_name());
        assert_eq!(
            device.decide_claim(&alice, &NamedBy::ThingName, T0),
            ClaimDecision::NotClaimable
        );
        assert_eq!(
            device.decide_claim(&alice, &NamedBy::LabelCode(hash.clone()), T0),
            reserve
        );
        assert_eq!(
            device.decide_claim(&alice, &NamedBy::LabelCode(other), T0),
            ClaimDecision::NotClaimable,
            "a stale lookup of another code"
        );
        assert_eq!(
            device.decide_renewal(&alice, T0),
            reserve,
            "a renewal is not asked for the code"
        );
        device.thing_name_claims = true;
        assert!(device.claimable_by_thing_name());
        assert_eq!(device.decide_claim(&alice, &NamedBy::ThingName, T0), reserve);
    }

    #[test]
    fn disabled_devices_cannot_be_claimed_by_anyone() {
        let mut dev = device(Holder::Free);
        dev.disabled = true;
        assert_eq!(
            dev.decide_claim(&user("a"), &NamedBy::ThingName, T0),
            ClaimDecision::NotClaimable
        );
        assert_eq!(dev.decide_renewal(&user("a"), T0), ClaimDecision::NotClaimable);
    }

    #[test]
    fn a_disabled_device_is_out_of_service_for_its_holder_too() {
        let claim_id = ClaimId::new_random();
        let mut owned = device(Holder::Owned {
            claim_id: claim_id.clone(),
            user: user("a"),
            since: T0,
        });
        owned.disabled = true;
        assert_eq!(owned.decide_release(&user("a"), T0), ReleaseDecision::NotYours);
        assert_eq!(owned.shown_to(T0), None);
        assert_eq!(owned.held_by(T0), Some(&user("a")), "ownership stays");
        // Its arrival completes and records nothing (and the gate quarantines it).
        assert_eq!(owned.decide_arrival(), ArrivalDecision::Disabled);
        owned.disabled = false;
        assert_eq!(owned.decide_arrival(), ArrivalDecision::AlreadyOwned(claim_id));
        let (_, mut reserved) = reserved_by("a", T0 + time::Duration::minutes(15));
        reserved.disabled = true;
        assert_eq!(reserved.decide_arrival(), ArrivalDecision::Disabled);
        assert_eq!(reserved.decide_renewal(&user("a"), T0), ClaimDecision::NotClaimable);
    }

    #[test]
    fn claimability_names_the_reason_and_agrees_with_decide_claim() {
        let deadline = T0 + time::Duration::minutes(15);
        let (_, reserved) = reserved_by("a", deadline);
        let owned = device(Holder::Owned {
            claim_id: ClaimId::new_random(),
            user: user("a"),
            since: T0,
        });
        let mut disabled_owned = owned.clone();
        disabled_owned.disabled = true;
        let cases = [
            (device(Holder::Free), T0, Claimability::Claimable),
            (reserved.clone(), T0, Claimability::Reserved),
            (reserved, deadline, Claimability::Claimable),
            (owned, T0, Claimability::Owned),
            (disabled_owned, T0, Claimability::Disabled),
        ];
        for (dev, at, expected) in cases {
            assert_eq!(dev.claimability(at), expected);
            // A stranger can reserve exactly when the device reads claimable.
            let stranger_may = matches!(
                dev.decide_claim(&user("stranger"), &NamedBy::ThingName, at),
                ClaimDecision::Reserve { .. }
            );
            assert_eq!(stranger_may, expected.now(), "{expected:?}");
        }
    }
}
