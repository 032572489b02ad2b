//! The user routes: each parses what its request carries, runs its use case and answers with the
//! claim or device views. The caller is the authorizer's user (see `identity`); another user's
//! claim or device answers exactly like a missing one.

use claim_shared::{
    domain::ids::{ClaimId, ThingName, UserId},
    ports::OwnershipStore,
    service::{ClaimError, ClaimOutcome, ClaimRequest, ClaimService, Clock},
    views::{claim_view, device_detail_view, device_view},
};
use lambda_http::{
    http::{header, StatusCode},
    Request,
};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::{
    config::ApiConfig,
    errors::ApiError,
    request::{claim_body, idempotency_key, query},
    response::{ok, Answer},
};

/// Devices per page of `GET /v1/devices`.
pub const DEVICES_PAGE_SIZE: u32 = 25;

/// `POST /v1/claims`: `202` with a new claim (published inline when possible, before `deadline`),
/// `200` with the one the caller already holds.
pub async fn create_claim<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    config: &ApiConfig,
    user: &UserId,
    request: &Request,
    deadline: Instant,
) -> Result<Answer, ApiError> {
    let claim_request = match claim_request(service, config, user, request) {
        Ok(claim_request) => claim_request,
        Err(invalid) => {
            // A user over their limit gets 429 whatever they send. (Only this error path pays
            // for the look-up; a readable request is checked by the use case.)
            if let Err(limited @ ClaimError::RateLimited { .. }) = service.refuse_if_limited(user).await {
                return Err(limited.into());
            }
            return Err(invalid);
        }
    };
    let outcome = service.claim_and_publish(&claim_request, Some(deadline)).await?;
    let now = service.now();
    Ok(match outcome {
        ClaimOutcome::Created(claim) => (
            StatusCode::ACCEPTED,
            vec![(header::LOCATION, format!("/v1/claims/{}", claim.claim_id))],
            Some(claim_view(&claim, now)),
        ),
        ClaimOutcome::Existing(claim) => ok(claim_view(&claim, now)),
    })
}

/// What a `POST /v1/claims` asks for, or why it cannot be read. Messages never echo the code.
fn claim_request<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    config: &ApiConfig,
    user: &UserId,
    request: &Request,
) -> Result<ClaimRequest, ApiError> {
    let body = claim_body(request)?;
    // A label code or a ThingName; the service resolves it.
    let code = service.parse_code(&body.code).map_err(ApiError::invalid_code)?;
    Ok(ClaimRequest {
        user: user.clone(),
        code,
        endpoints: config.endpoints.clone(),
        region_hint: body.region,
        idempotency_key: idempotency_key(request)?,
    })
}

/// `POST /v1/claims/{claim_id}/retry`: `202` with the claim, published again or renewed (inline,
/// before `deadline`, when possible).
pub async fn retry_claim<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    user: &UserId,
    raw_id: &str,
    deadline: Instant,
) -> Result<Answer, ApiError> {
    let claim_id = ClaimId::parse(raw_id).ok_or_else(ApiError::claim_not_found)?;
    let claim = service.retry_and_publish(user, &claim_id, Some(deadline)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Vec::new(),
        Some(claim_view(&claim, service.now())),
    ))
}

/// `GET /v1/claims/{claim_id}`.
pub async fn get_claim<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    user: &UserId,
    raw_id: &str,
) -> Result<Answer, ApiError> {
    let claim_id = ClaimId::parse(raw_id).ok_or_else(ApiError::claim_not_found)?;
    let claim = service
        .claim_of(user, &claim_id)
        .await?
        .ok_or_else(ApiError::claim_not_found)?;
    Ok(ok(claim_view(&claim, service.now())))
}

/// `GET /v1/devices[?next_token=]`.
pub async fn list_devices<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    user: &UserId,
    request: &Request,
) -> Result<Answer, ApiError> {
    let page = service
        .devices_of(user, query(request, "next_token"), DEVICES_PAGE_SIZE)
        .await?;
    let now = service.now();
    let devices: Vec<Value> = page
        .items
        .iter()
        .map(|(device, claim)| device_view(device, claim, now))
        .collect();
    Ok(ok(json!({"devices": devices, "next_token": page.next_token})))
}

/// `GET /v1/devices/{thing_name}`.
pub async fn get_device<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    user: &UserId,
    raw_thing: &str,
) -> Result<Answer, ApiError> {
    let thing = ThingName::parse(raw_thing).map_err(|_| ApiError::device_not_found())?;
    let (device, claim) = service
        .device_of(user, &thing)
        .await?
        .ok_or_else(ApiError::device_not_found)?;
    Ok(ok(device_detail_view(&device, &claim, service.now())))
}

/// `DELETE /v1/devices/{thing_name}`: `204`.
pub async fn release_device<S: OwnershipStore, C: Clock>(
    service: &ClaimService<S, C>,
    user: &UserId,
    raw_thing: &str,
) -> Result<Answer, ApiError> {
    let thing = ThingName::parse(raw_thing).map_err(|_| ApiError::device_not_found())?;
    service.release(user, &thing).await?;
    Ok((StatusCode::NO_CONTENT, Vec::new(), None))
}
