//! The admin routes, for OEM operations teams: import device records, inspect a device ("why can't
//! I claim my product?"), force-release it, disable or enable it. API Gateway authorizes them with
//! IAM; the caller's IAM principal ARN is the operator recorded in the device history.

use claim_shared::{
    domain::{history::Actor, ids::ThingName},
    ports::OwnershipStore,
    service::{ClaimService, Clock, DeviceOpError, ImportOutcome},
    views::inspection_view,
};
use lambda_http::Request;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::{
    errors::ApiError,
    request::{admin_thing, import_body, import_item, inspected_user, optional_reason, release_reason},
    response::{ok, Answer},
    router::AdminRoute,
};

/// Time an import keeps for one more row: rows not started with less than this left of the
/// request's budget are answered `rejected` ("send it again") instead of running the request out.
pub const IMPORT_ROW_RESERVE: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs an admin route for `operator` and logs one `admin_action` event.
pub async fn handle<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    route: AdminRoute,
    operator: &str,
    request: &Request,
    deadline: Instant,
) -> Result<Answer, ApiError> {
    let started = std::time::Instant::now();
    let action = route.template();
    let (thing, result) = match route {
        AdminRoute::Import => (None, import_devices(service, operator, request, deadline).await),
        AdminRoute::Inspect(raw) => (Some(raw.clone()), inspect(service, &raw, request).await),
        AdminRoute::Release(raw) => (Some(raw.clone()), force_release(service, operator, &raw, request).await),
        AdminRoute::Disable(raw) => (
            Some(raw.clone()),
            set_disabled(service, operator, &raw, true, request).await,
        ),
        AdminRoute::Enable(raw) => (
            Some(raw.clone()),
            set_disabled(service, operator, &raw, false, request).await,
        ),
    };
    tracing::info!(
        event = "admin_action",
        action,
        operator,
        outcome = match &result {
            Ok(_) => "done",
            Err(err) => err.code,
        },
        thing_name = thing
            .as_deref()
            .and_then(|raw| ThingName::parse(raw).ok())
            .map(|t| t.redacted()),
        latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    );
    result
}

/// `PUT /v1/admin/devices`: one result per item; already imported items stay imported, so the
/// whole request can be sent again. Rows the request's budget leaves no time for are `rejected`
/// ("send it again"), so a long import on a slow table still answers.
async fn import_devices<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    operator: &str,
    request: &Request,
    deadline: Instant,
) -> Result<Answer, ApiError> {
    let body = import_body(request)?;
    let mut results = Vec::with_capacity(body.devices.len());
    for item in &body.devices {
        let thing_name = item.get("thing_name").cloned().unwrap_or(Value::Null);
        let out_of_time = deadline.saturating_duration_since(Instant::now()) < IMPORT_ROW_RESERVE;
        let outcome = match import_item(item, service.label_code_key()) {
            Err(reason) => Err(reason),
            Ok(_) if out_of_time => Err("not imported: the request ran out of time; send it again".to_owned()),
            Ok(device) => match service.import(&device, Actor::Operator(operator.to_owned())).await {
                Ok(outcome) => Ok(outcome),
                Err(DeviceOpError::Store(err)) => return Err(err.into()),
                Err(DeviceOpError::Busy | DeviceOpError::DeviceNotFound | DeviceOpError::Control(_)) => {
                    Err("the device changed meanwhile; send it again".to_owned())
                }
                // Never which device: that would tell the caller another device's code.
                Err(err @ DeviceOpError::CodeInUse) => Err(err.to_string()),
            },
        };
        results.push(match outcome {
            Ok(ImportOutcome::Created) => json!({"thing_name": thing_name, "status": "created"}),
            Ok(ImportOutcome::Updated) => json!({"thing_name": thing_name, "status": "updated"}),
            Ok(ImportOutcome::Unchanged) => json!({"thing_name": thing_name, "status": "unchanged"}),
            Err(reason) => json!({"thing_name": thing_name, "status": "rejected", "reason": reason}),
        });
    }
    Ok(ok(json!({ "results": results })))
}

/// `GET /v1/admin/devices/{thing_name}[?user=<sub>]`: with a user (the one in the support ticket),
/// the answer also says whether the failed-attempt limits hold them back on this device.
async fn inspect<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    raw: &str,
    request: &Request,
) -> Result<Answer, ApiError> {
    let user = inspected_user(request)?;
    let thing = admin_thing(raw)?;
    let inspection = service.inspect_for(&thing, user.as_ref()).await?;
    Ok(ok(inspection_view(&inspection)))
}

/// The device as it is after an operator's change.
async fn inspected<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    thing: &ThingName,
) -> Result<Answer, ApiError> {
    Ok(ok(inspection_view(&service.inspect(thing).await?)))
}

async fn force_release<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    operator: &str,
    raw: &str,
    request: &Request,
) -> Result<Answer, ApiError> {
    let thing = admin_thing(raw)?;
    let reason = release_reason(request)?;
    service.force_release(&thing, operator, &reason).await?;
    inspected(service, &thing).await
}

async fn set_disabled<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    operator: &str,
    raw: &str,
    disabled: bool,
    request: &Request,
) -> Result<Answer, ApiError> {
    let thing = admin_thing(raw)?;
    let reason = optional_reason(request)?;
    service.set_disabled(&thing, disabled, operator, reason).await?;
    inspected(service, &thing).await
}
