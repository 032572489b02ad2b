//! Lifecycle events for the OEM's other systems (push notifications, CRM, warranty, analytics):
//! one event per ownership change that committed, derived from what the change wrote (a device
//! history entry, or a claim's failed publish attempt), never from what a request meant to do.
//!
//! Delivery is at least once (the change stream is read again after a failure), so every event
//! carries an id that is the same on every delivery: consumers deduplicate on it.

use serde::Serialize;
use time::OffsetDateTime;

use super::{
    claim::Claim,
    history::{Actor, HistoryEntry, HistoryEvent},
    ids::{ClaimId, ThingName, UserId},
};

/// What happened, as the `detail-type` of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LifecycleKind {
    #[serde(rename = "claim.accepted")]
    ClaimAccepted,
    #[serde(rename = "claim.endpoint_published")]
    ClaimEndpointPublished,
    #[serde(rename = "claim.publish_failed")]
    ClaimPublishFailed,
    #[serde(rename = "claim.provisioned")]
    ClaimProvisioned,
    #[serde(rename = "claim.expired")]
    ClaimExpired,
    #[serde(rename = "claim.failed")]
    ClaimFailed,
    #[serde(rename = "device.released")]
    DeviceReleased,
    #[serde(rename = "device.disabled")]
    DeviceDisabled,
    #[serde(rename = "device.enabled")]
    DeviceEnabled,
    #[serde(rename = "device.quarantined")]
    DeviceQuarantined,
    #[serde(rename = "device.quarantine_lifted")]
    DeviceQuarantineLifted,
}

impl LifecycleKind {
    pub const ALL: [LifecycleKind; 11] = [
        LifecycleKind::ClaimAccepted,
        LifecycleKind::ClaimEndpointPublished,
        LifecycleKind::ClaimPublishFailed,
        LifecycleKind::ClaimProvisioned,
        LifecycleKind::ClaimExpired,
        LifecycleKind::ClaimFailed,
        LifecycleKind::DeviceReleased,
        LifecycleKind::DeviceDisabled,
        LifecycleKind::DeviceEnabled,
        LifecycleKind::DeviceQuarantined,
        LifecycleKind::DeviceQuarantineLifted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleKind::ClaimAccepted => "claim.accepted",
            LifecycleKind::ClaimEndpointPublished => "claim.endpoint_published",
            LifecycleKind::ClaimPublishFailed => "claim.publish_failed",
            LifecycleKind::ClaimProvisioned => "claim.provisioned",
            LifecycleKind::ClaimExpired => "claim.expired",
            LifecycleKind::ClaimFailed => "claim.failed",
            LifecycleKind::DeviceReleased => "device.released",
            LifecycleKind::DeviceDisabled => "device.disabled",
            LifecycleKind::DeviceEnabled => "device.enabled",
            LifecycleKind::DeviceQuarantined => "device.quarantined",
            LifecycleKind::DeviceQuarantineLifted => "device.quarantine_lifted",
        }
    }

    /// The event a history entry is, if any. Imports are not events: a bulk import of a
    /// production run would flood the OEM's bus with changes nobody waits for.
    pub fn of_history(event: HistoryEvent) -> Option<Self> {
        Some(match event {
            HistoryEvent::Imported => return None,
            HistoryEvent::Claimed => LifecycleKind::ClaimAccepted,
            HistoryEvent::EndpointPublished => LifecycleKind::ClaimEndpointPublished,
            HistoryEvent::Provisioned => LifecycleKind::ClaimProvisioned,
            HistoryEvent::Expired => LifecycleKind::ClaimExpired,
            HistoryEvent::Failed => LifecycleKind::ClaimFailed,
            HistoryEvent::Released => LifecycleKind::DeviceReleased,
            HistoryEvent::Disabled => LifecycleKind::DeviceDisabled,
            HistoryEvent::Enabled => LifecycleKind::DeviceEnabled,
            HistoryEvent::Quarantined => LifecycleKind::DeviceQuarantined,
            HistoryEvent::QuarantineLifted => LifecycleKind::DeviceQuarantineLifted,
        })
    }
}

/// What the store writes next to a history entry so its event can name the device's vendor and
/// the claim's user and endpoint without reading anything back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryContext {
    pub vendor: Option<String>,
    pub claim_user: Option<UserId>,
    pub target_endpoint: Option<String>,
}

/// One event: the `detail` of an EventBridge event (`docs/events.md` has its JSON Schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleEvent {
    /// The same on every delivery of this change: consumers deduplicate on it.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: LifecycleKind,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub thing_name: ThingName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<ClaimId>,
    /// The claim's user (their authorizer `sub`): who claimed, owns or owned the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    /// Who caused the change: the user, an operator (IAM principal) or the system.
    pub actor: Actor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_endpoint: Option<String>,
    /// An operator's reason (release, disable) or the quarantine's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A failed publish's error code (`docs/operations.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// A failed publish's attempt number within the claim's current wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl LifecycleEvent {
    /// The event of a history entry that committed (`None`: not an event, see
    /// [`LifecycleKind::of_history`]). Its id is the entry's place in the device's history.
    pub fn of_history(thing: &ThingName, entry: &HistoryEntry, context: HistoryContext) -> Option<Self> {
        let kind = LifecycleKind::of_history(entry.event)?;
        let user = context.claim_user.or_else(|| match &entry.actor {
            Actor::User(user) => Some(user.clone()),
            _ => None,
        });
        Some(Self {
            event_id: format!("{thing}/history/{}", entry.seq),
            kind,
            at: entry.at,
            thing_name: thing.clone(),
            vendor: context.vendor,
            claim_id: entry.claim_id.clone(),
            user,
            actor: entry.actor.clone(),
            target_endpoint: context.target_endpoint,
            reason: entry.reason.clone(),
            error_code: None,
            attempt: None,
        })
    }

    /// The event of a claim write, if it recorded a publish attempt (one more attempt): confirmed
    /// (`claim.endpoint_published`, the first publish and any requested again) or failed
    /// (`claim.publish_failed`, with the failure shown). Its id is the claim's version after the
    /// write, so each attempt has its own.
    pub fn of_claim_write(before: &Claim, after: &Claim, at: OffsetDateTime) -> Option<Self> {
        if after.publish_attempts <= before.publish_attempts || after.claim_id != before.claim_id {
            return None;
        }
        let failure = after.failure.as_ref();
        Some(Self {
            event_id: format!("{}/claim/{}", after.claim_id.as_str(), after.version),
            kind: match failure {
                Some(_) => LifecycleKind::ClaimPublishFailed,
                None => LifecycleKind::ClaimEndpointPublished,
            },
            at,
            thing_name: after.thing_name.clone(),
            vendor: Some(after.vendor.clone()),
            claim_id: Some(after.claim_id.clone()),
            user: Some(after.user.clone()),
            actor: Actor::System,
            target_endpoint: Some(after.target_endpoint.clone()),
            reason: None,
            error_code: failure.map(|failure| failure.code.clone()),
            attempt: failure.map(|_| after.publish_attempts),
        })
    }

    /// The event's `detail` as JSON.
    pub fn detail(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_as_their_names() {
        for kind in LifecycleKind::ALL {
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::json!(kind.as_str())));
        }
    }

    #[test]
    fn a_claim_write_is_an_event_when_it_records_a_publish_attempt() {
        use crate::domain::{
            ids::{ClaimId, UserId},
            publish::{PublishBackoff, PublishError},
        };
        let t0 = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let thing = ThingName::parse("event-thing").unwrap_or_else(|err| panic!("{err}"));
        let user = UserId::parse("alice").unwrap_or_else(|err| panic!("{err}"));
        let pending = Claim::new(
            ClaimId::new_random(),
            thing,
            user,
            "acme".into(),
            "oem".into(),
            t0,
            time::Duration::minutes(15),
        );
        let versioned = |mut claim: Claim, version| {
            claim.version = version;
            claim
        };

        let mut failed = versioned(pending.clone(), 2);
        failed.record_publish_failure(
            &PublishError::new("staging_timeout", "slow"),
            t0,
            &PublishBackoff::default(),
        );
        let event = LifecycleEvent::of_claim_write(&pending, &failed, t0);
        let event = event.unwrap_or_else(|| panic!("a failed attempt is an event"));
        assert_eq!(event.kind, LifecycleKind::ClaimPublishFailed);
        assert_eq!(event.error_code.as_deref(), Some("staging_timeout"));
        assert_eq!(event.attempt, Some(1));
        assert_eq!(event.event_id, format!("{}/claim/2", pending.claim_id.as_str()));

        let mut published = versioned(failed.clone(), 3);
        published.record_published(t0).unwrap_or_else(|err| panic!("{err}"));
        let event = LifecycleEvent::of_claim_write(&failed, &published, t0);
        let event = event.unwrap_or_else(|| panic!("a confirmed publish is an event"));
        assert_eq!(event.kind, LifecycleKind::ClaimEndpointPublished);
        assert_eq!((event.error_code, event.attempt), (None, None));
        assert_eq!(event.target_endpoint.as_deref(), Some("oem"));
        assert_eq!(event.event_id, format!("{}/claim/3", pending.claim_id.as_str()));

        // A write that records no attempt (a retry request, an expiry) is not this kind of event.
        let mut renewed = versioned(published.clone(), 4);
        renewed.retried_at = Some(t0);
        assert_eq!(LifecycleEvent::of_claim_write(&published, &renewed, t0), None);
    }

    #[test]
    fn every_history_event_but_import_is_an_event() {
        for event in HistoryEvent::ALL {
            assert_eq!(
                LifecycleKind::of_history(event).is_none(),
                event == HistoryEvent::Imported,
                "{event:?}"
            );
        }
    }
}
