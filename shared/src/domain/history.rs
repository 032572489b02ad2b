//! The append-only history of a device: every ownership decision, who made it and when.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ids::{ClaimId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryEvent {
    Imported,
    Claimed,
    /// Only in histories written before a publish was recorded on the claim alone: the claim's
    /// own history and its `claim.endpoint_published` event say when it was published.
    EndpointPublished,
    Provisioned,
    Expired,
    Released,
    Failed,
    Disabled,
    Enabled,
    /// The device arrived unexpectedly and its certificate was deactivated.
    Quarantined,
    /// Its certificate was activated again (by a claim or an operator).
    QuarantineLifted,
}

impl HistoryEvent {
    pub const ALL: [HistoryEvent; 11] = [
        HistoryEvent::Imported,
        HistoryEvent::Claimed,
        HistoryEvent::EndpointPublished,
        HistoryEvent::Provisioned,
        HistoryEvent::Expired,
        HistoryEvent::Released,
        HistoryEvent::Failed,
        HistoryEvent::Disabled,
        HistoryEvent::Enabled,
        HistoryEvent::Quarantined,
        HistoryEvent::QuarantineLifted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HistoryEvent::Imported => "imported",
            HistoryEvent::Claimed => "claimed",
            HistoryEvent::EndpointPublished => "endpoint_published",
            HistoryEvent::Provisioned => "provisioned",
            HistoryEvent::Expired => "expired",
            HistoryEvent::Released => "released",
            HistoryEvent::Failed => "failed",
            HistoryEvent::Disabled => "disabled",
            HistoryEvent::Enabled => "enabled",
            HistoryEvent::Quarantined => "quarantined",
            HistoryEvent::QuarantineLifted => "quarantine_lifted",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == raw)
    }
}

/// Who caused an entry: an end user (authorizer `sub`), an operator (IAM principal) or the system
/// itself (deadline, publisher, provisioning events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    User(UserId),
    Operator(String),
    System,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// 1, 2, 3, … per device, without gaps: a gap would mean a lost entry.
    pub seq: u64,
    pub at: OffsetDateTime,
    pub event: HistoryEvent,
    pub actor: Actor,
    pub claim_id: Option<ClaimId>,
    /// Free text from an operator (e.g. the reason of a force release). Never a secret.
    pub reason: Option<String>,
}

/// A history entry before the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHistoryEntry {
    pub at: OffsetDateTime,
    pub event: HistoryEvent,
    pub actor: Actor,
    pub claim_id: Option<ClaimId>,
    pub reason: Option<String>,
}

impl NewHistoryEntry {
    pub fn new(at: OffsetDateTime, event: HistoryEvent, actor: Actor, claim_id: Option<ClaimId>) -> Self {
        Self {
            at,
            event,
            actor,
            claim_id,
            reason: None,
        }
    }

    pub fn numbered(self, seq: u64) -> HistoryEntry {
        HistoryEntry {
            seq,
            at: self.at,
            event: self.event,
            actor: self.actor,
            claim_id: self.claim_id,
            reason: self.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_names() {
        for event in HistoryEvent::ALL {
            assert_eq!(HistoryEvent::parse(event.as_str()), Some(event));
        }
    }
}
