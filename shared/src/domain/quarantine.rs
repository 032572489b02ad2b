//! The rogue-device gate. With the vendor CA registered `SNI_ONLY` and auto-registration on, any
//! module of that vendor pointed at the OEM endpoint is provisioned by JITP, claimed or not. A
//! device that arrives although nothing here sent it (not in the registry, disabled, or neither
//! owned nor awaited by a live claim) is *quarantined*: its certificate is deactivated, so it can
//! no longer connect, and a record says why.
//!
//! A quarantine never stands in the way of a legitimate claim: a claim of the device lifts it (the
//! certificate is activated again before the endpoint message goes out), and so does an operator.
//! The arrivals that are expected are never quarantined: a claimed device arriving (also late,
//! within the arrival grace) and an owned device reconnecting (also after a factory reset).

use time::OffsetDateTime;

use super::ids::ThingName;

/// Why an arriving device was quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineReason {
    /// No device of the registry has this ThingName.
    UnknownThing,
    /// An operator disabled the device (recalled, reported stolen, under investigation).
    Disabled,
    /// A registry device nobody owns and no live claim is waiting for.
    Unclaimed,
}

impl QuarantineReason {
    const ALL: [QuarantineReason; 3] = [
        QuarantineReason::UnknownThing,
        QuarantineReason::Disabled,
        QuarantineReason::Unclaimed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::UnknownThing => "unknown_thing",
            QuarantineReason::Disabled => "disabled",
            QuarantineReason::Unclaimed => "unclaimed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == raw)
    }
}

/// A quarantined device: its certificate was deactivated at `since` for `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub thing_name: ThingName,
    /// The AWS IoT certificate id (64 hex digits) that was deactivated.
    pub certificate_id: String,
    pub reason: QuarantineReason,
    pub since: OffsetDateTime,
}

/// Where a certificate comes from, as the IoT control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The id of the registered CA that issued it; `None` for certificates registered without one.
    pub ca_certificate_id: Option<String>,
    pub active: bool,
}

/// Which certificates the gate may deactivate: only those the module vendor's CA issued, so that
/// the OEM's other devices in the same account (other CAs, other client ids) are never touched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatePolicy {
    /// Off: arrivals are only logged, as before the gate existed.
    pub enabled: bool,
    /// The vendor CA ids whose certificates may be quarantined. Empty: nothing is.
    pub vendor_ca_ids: Vec<String>,
}

/// What the gate does about one certificate of an unexpected arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    Quarantine,
    /// Left alone, and why (the `quarantine` log line's `outcome`).
    Spare(&'static str),
}

impl GatePolicy {
    /// Whether the gate may act at all (it is on and knows the vendor's CA).
    pub fn armed(&self) -> bool {
        self.off_because().is_none()
    }

    /// Why the gate cannot act, naming the setting to change.
    pub fn off_because(&self) -> Option<&'static str> {
        if !self.enabled {
            Some("QUARANTINE_ROGUE_DEVICES=false")
        } else if self.vendor_ca_ids.is_empty() {
            Some("no VENDOR_CA_CERTIFICATE_IDS")
        } else {
            None
        }
    }

    pub fn decide(&self, facts: Option<&CertificateFacts>) -> GateDecision {
        if !self.armed() {
            return GateDecision::Spare("gate_off");
        }
        let Some(facts) = facts else {
            return GateDecision::Spare("certificate_not_found");
        };
        match &facts.ca_certificate_id {
            Some(ca) if self.vendor_ca_ids.iter().any(|vendor| vendor == ca) => GateDecision::Quarantine,
            _ => GateDecision::Spare("not_vendor_certificate"),
        }
    }
}

/// A certificate id as AWS IoT makes them: 64 lowercase hex digits. Anything else in an event is
/// not passed to the control plane.
pub fn is_certificate_id(raw: &str) -> bool {
    raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> GatePolicy {
        GatePolicy {
            enabled: true,
            vendor_ca_ids: vec!["vendor".into()],
        }
    }

    fn issued_by(ca: Option<&str>) -> CertificateFacts {
        CertificateFacts {
            ca_certificate_id: ca.map(str::to_owned),
            active: true,
        }
    }

    #[test]
    fn only_the_vendors_certificates_are_quarantined() {
        let policy = policy();
        assert_eq!(
            policy.decide(Some(&issued_by(Some("vendor")))),
            GateDecision::Quarantine
        );
        assert_eq!(
            policy.decide(Some(&issued_by(Some("other-ca")))),
            GateDecision::Spare("not_vendor_certificate")
        );
        assert_eq!(
            policy.decide(Some(&issued_by(None))),
            GateDecision::Spare("not_vendor_certificate")
        );
        assert_eq!(policy.decide(None), GateDecision::Spare("certificate_not_found"));
    }

    #[test]
    fn a_gate_that_is_off_or_does_not_know_the_vendor_spares_everything() {
        let off = GatePolicy {
            enabled: false,
            ..policy()
        };
        let blind = GatePolicy {
            enabled: true,
            vendor_ca_ids: Vec::new(),
        };
        assert_eq!(off.off_because(), Some("QUARANTINE_ROGUE_DEVICES=false"));
        assert_eq!(blind.off_because(), Some("no VENDOR_CA_CERTIFICATE_IDS"));
        assert_eq!(policy().off_because(), None);
        for gate in [off, blind] {
            assert!(!gate.armed());
            assert_eq!(
                gate.decide(Some(&issued_by(Some("vendor")))),
                GateDecision::Spare("gate_off")
            );
        }
    }

    #[test]
    fn reasons_round_trip_and_certificate_ids_are_strict() {
        for reason in QuarantineReason::ALL {
            assert_eq!(QuarantineReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(QuarantineReason::parse("owned"), None);
        assert!(is_certificate_id(&"a1".repeat(32)));
        assert!(!is_certificate_id(&"A1".repeat(32)));
        assert!(!is_certificate_id(&"a1".repeat(31)));
        assert!(!is_certificate_id("../../things"));
    }
}
