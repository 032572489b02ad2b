//! The JSON views of claims, devices, histories, inspections and the funnel: what `claim-api`
//! answers (`docs/api.md`) and what `claimctl` prints, from one place. Times are RFC 3339 UTC; a
//! claim is shown as it is at `now` (an overdue claim reads `expired`). Never a label code or its
//! hash.

use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    domain::{
        attempts::retry_after_seconds, claim::Claim, device::Device, device::Holder, funnel::Funnel,
        history::HistoryEntry, quarantine::Quarantine,
    },
    service::Inspection,
};

pub fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// A claim's state changes as its user sees them.
pub fn history_view(claim: &Claim, now: OffsetDateTime) -> Value {
    claim
        .effective_history(now)
        .iter()
        .map(|change| json!({"state": change.state, "at": timestamp(change.at)}))
        .collect()
}

/// A claim as its user sees it (`GET /v1/claims/{claim_id}`, and every claim answer).
pub fn claim_view(claim: &Claim, now: OffsetDateTime) -> Value {
    json!({
        "claim_id": claim.claim_id,
        "thing_name": claim.thing_name,
        "state": claim.effective_state(now),
        "target_endpoint": claim.target_endpoint,
        "created_at": timestamp(claim.created_at),
        "updated_at": timestamp(claim.updated_at),
        "expires_at": timestamp(claim.expires_at),
        "history": history_view(claim, now),
        "failure": claim.failure.as_ref().map(|f| json!({"code": f.code, "message": f.message})),
    })
}

/// One of the user's devices and the claim through which they hold it (`GET /v1/devices`).
pub fn device_view(device: &Device, claim: &Claim, now: OffsetDateTime) -> Value {
    json!({
        "thing_name": device.thing_name,
        "state": claim.effective_state(now),
        "claim_id": claim.claim_id,
        "claimed_at": timestamp(claim.created_at),
        "target_endpoint": claim.target_endpoint,
        "sku": device.sku,
    })
}

/// [`device_view`] with the history of the user's own claim (`GET /v1/devices/{thing_name}`):
/// earlier owners' history is not theirs to see.
pub fn device_detail_view(device: &Device, claim: &Claim, now: OffsetDateTime) -> Value {
    let mut view = device_view(device, claim, now);
    view["history"] = history_view(claim, now);
    view
}

/// One entry of a device's history as operators see it.
pub fn history_entry_view(entry: &HistoryEntry) -> Value {
    json!({
        "seq": entry.seq,
        "at": timestamp(entry.at),
        "event": entry.event.as_str(),
        "actor": entry.actor,
        "claim_id": entry.claim_id,
        "reason": entry.reason,
    })
}

/// A claim as operators see it: the user's view plus who claimed it and the endpoint rule that
/// chose its target.
pub fn admin_claim_view(claim: &Claim, now: OffsetDateTime) -> Value {
    let mut view = claim_view(claim, now);
    view["user"] = json!(claim.user);
    view["target_rule"] = json!(claim.target_rule);
    view
}

/// Everything an operator needs to answer "why can't I claim my product?"
/// (`GET /v1/admin/devices/{thing_name}`, `claimctl inspect`).
pub fn inspection_view(inspection: &Inspection) -> Value {
    let now = inspection.at;
    let device = inspection.device.as_ref();
    let holder = device.map(|device| device.effective_holder(now));
    let (owner, reserved_by) = match holder {
        Some(Holder::Owned { user, .. }) => (Some(user), None),
        Some(Holder::Reserved { user, .. }) => (None, Some(user)),
        _ => (None, None),
    };
    json!({
        "thing_name": inspection.thing_name,
        "imported": device.is_some(),
        "vendor": device.map(|d| d.vendor.clone()),
        "sku": device.and_then(|d| d.sku.clone()),
        "disabled": device.map(|d| d.disabled),
        // Whether the label carries a code of its own (the code and its hash are never shown),
        // and whether the device can also be claimed by its ThingName.
        "has_label_code": device.map(|d| d.code_hash.is_some()),
        "thing_name_claims": device.map(|d| d.claimable_by_thing_name()),
        "imported_at": device.map(|d| timestamp(d.imported_at)),
        "owner": owner,
        "reserved_by": reserved_by,
        "claim": inspection.holding_claim.as_ref().map(|claim| admin_claim_view(claim, now)),
        "provisioning": device.and_then(|d| d.provisioning.as_ref()).map(|p| json!({
            "certificate_id": p.certificate_id,
            "account_id": p.account_id,
            "region": p.region,
        })),
        "quarantine": device.and_then(|d| d.quarantine.as_ref()).map(quarantine_view),
        "history": inspection.history.iter().map(history_entry_view).collect::<Vec<_>>(),
        "claimable": {"now": inspection.claimable_now, "reason": inspection.reason},
        "rate_limit": inspection.attempts.as_ref().map(|a| json!({
            "user": a.user,
            "failed_attempts_by_user": a.failed_by_user,
            "failed_attempts_on_device": a.failed_on_device,
            "limit_per_user": a.limits.per_user,
            "limit_per_user_device": a.limits.per_user_device,
            "window_ends_at": timestamp(a.window_ends_at),
            "retry_after_seconds": a.retry_after.map(retry_after_seconds),
        })),
    })
}

/// The funnel of the claims started in `[from, to)` (`claimctl funnel --json`).
pub fn funnel_view(funnel: &Funnel, from: OffsetDateTime, to: OffsetDateTime) -> Value {
    json!({
        "from": timestamp(from), "to": timestamp(to), "started": funnel.started, "published": funnel.published,
        "provisioned": funnel.provisioned, "expired": funnel.expired, "released": funnel.released,
        "failed": funnel.failed, "open": funnel.open,
    })
}

/// A quarantine as operators see it (`claimctl quarantines`, the inspection).
pub fn quarantine_view(quarantine: &Quarantine) -> Value {
    json!({
        "thing_name": quarantine.thing_name.as_str(),
        "certificate_id": quarantine.certificate_id,
        "reason": quarantine.reason.as_str(),
        "since": timestamp(quarantine.since),
    })
}
