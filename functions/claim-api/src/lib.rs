//! The user routes of `spec/api.md` as one Lambda function behind API Gateway (REST or HTTP API
//! payloads; also Function URL payloads under `cargo lambda watch`).
//!
//! The handler never fails the invocation: every outcome, bugs included, is an HTTP response in the
//! `api.md` error shape with an `x-request-id` header.

pub mod admin;
pub mod identity;

use std::sync::Arc;

use claim_shared::{
    config::{env_or, required},
    domain::{
        claim::Claim,
        device::Device,
        endpoints::{is_host_name, EndpointPlan, StackLocation},
        ids::{ClaimId, IdempotencyKey, ThingName, UserId},
    },
    outbox::Outbox,
    ports::{OwnershipStore, PageError, StoreError},
    service::{ClaimError, ClaimOutcome, ClaimRequest, ClaimService, Clock, ReleaseError, RetryError},
};
use lambda_http::{
    http::{header, HeaderValue, Method, StatusCode},
    request::RequestContext,
    Body, Request, RequestExt, Response,
};
use serde::Deserialize;
use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::Instrument;

/// Largest request body accepted. A claim request is a label code and a region hint; anything near
/// this size is not one.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// Devices per page of `GET /v1/devices`.
pub const DEVICES_PAGE_SIZE: u32 = 25;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The OEM AWS IoT endpoints devices are sent to, and the rules that choose one.
    pub endpoints: Arc<EndpointPlan>,
    /// How long a request may spend publishing due endpoint messages before it answers; what is
    /// left is published by the scheduled `claim-publisher`.
    pub publish_budget: std::time::Duration,
    /// Who may use the admin routes, beyond what IAM authorization already checked.
    pub operators: identity::OperatorAllowlist,
}

pub use claim_shared::config::ConfigError;

impl ApiConfig {
    /// One endpoint for every device (`OEM_ENDPOINT`). Checked at cold start, so a bad deployment
    /// fails loudly instead of publishing garbage.
    pub fn new(target_endpoint: &str) -> Result<Self, ConfigError> {
        if !is_host_name(target_endpoint) {
            return Err(ConfigError(format!(
                "OEM_ENDPOINT must be a host name such as xxxx-ats.iot.eu-west-1.amazonaws.com, got {target_endpoint:?}"
            )));
        }
        Ok(Self::with_plan(EndpointPlan::single(target_endpoint)))
    }

    /// Several endpoints with selection rules (`OEM_ENDPOINTS`, JSON; see `domain::endpoints`).
    pub fn from_rules(json: &str) -> Result<Self, ConfigError> {
        EndpointPlan::from_json(json)
            .map(Self::with_plan)
            .map_err(|err| ConfigError(format!("OEM_ENDPOINTS: {err}")))
    }

    /// `OEM_ENDPOINTS` when it is set and not empty, otherwise `OEM_ENDPOINT`; either way checked
    /// against where the stack runs (`AWS_REGION`, always set in Lambda; `STACK_ACCOUNT_ID`, from
    /// template.yaml): a device sent to an endpoint whose IoT events never reach this stack's topic
    /// rules would never complete its claim.
    pub fn from_env() -> Result<Self, ConfigError> {
        let (config, setting) = match std::env::var("OEM_ENDPOINTS")
            .ok()
            .filter(|rules| !rules.trim().is_empty())
        {
            Some(rules) => (Self::from_rules(&rules)?, "OEM_ENDPOINTS"),
            None => (Self::new(&required("OEM_ENDPOINT")?)?, "OEM_ENDPOINT"),
        };
        let (region, account) = (env_or("AWS_REGION", ""), env_or("STACK_ACCOUNT_ID", ""));
        let stack = StackLocation {
            account: Some(account.as_str()).filter(|a| !a.is_empty()),
            region: Some(region.as_str()).filter(|r| !r.is_empty()),
        };
        config
            .endpoints
            .check_events_reach(stack)
            .map_err(|err| ConfigError(format!("{setting}: {err}")))?;
        Ok(config)
    }

    fn with_plan(plan: EndpointPlan) -> Self {
        Self {
            endpoints: Arc::new(plan),
            publish_budget: std::time::Duration::from_secs(3),
            operators: identity::OperatorAllowlist::default(),
        }
    }

    /// Narrows the operators to `OPERATOR_PRINCIPALS` (comma-separated ARNs; empty: no narrowing).
    pub fn with_operators(mut self, raw: &str) -> Result<Self, ConfigError> {
        self.operators = identity::OperatorAllowlist::parse(raw).map_err(ConfigError)?;
        Ok(self)
    }
}

pub struct Api<S, C> {
    pub service: ClaimService<S, C>,
    pub outbox: Outbox,
    pub config: ApiConfig,
}

/// An error answer in the `api.md` shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (`429`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `429 rate_limited` with `Retry-After` in whole seconds, rounded up (at least 1).
    fn rate_limited(retry_after: time::Duration) -> Self {
        Self {
            retry_after: Some(claim_shared::domain::attempts::retry_after_seconds(retry_after)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many failed claim attempts. Please try again later.",
            )
        }
    }

    fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn device_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "device_not_found",
            "No device of yours matches this code.",
        )
    }

    fn claim_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "claim_not_found",
            "No claim of yours has this id.",
        )
    }

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The service is temporarily unavailable; nothing was changed. Please try again.",
        )
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side; nothing was changed.",
        )
    }

    fn from_store(err: &StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => Self::unavailable(),
            StoreError::Corrupt(_) => Self::internal(),
        }
    }
}

/// Every route this function serves, as `METHOD /path/{param}` (the OpenAPI document lists exactly
/// these; a test checks both ways).
pub const ROUTES: [&str; 6] = [
    "POST /v1/claims",
    "GET /v1/claims/{claim_id}",
    "POST /v1/claims/{claim_id}/retry",
    "GET /v1/devices",
    "GET /v1/devices/{thing_name}",
    "DELETE /v1/devices/{thing_name}",
];

/// The routes, by template (what logs show; raw paths carry label codes).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    CreateClaim,
    GetClaim(String),
    RetryClaim(String),
    ListDevices,
    GetDevice(String),
    ReleaseDevice(String),
    Admin(admin::AdminRoute),
}

impl Route {
    fn template(&self) -> &'static str {
        match self {
            Route::Admin(route) => route.template(),
            Route::CreateClaim => "POST /v1/claims",
            Route::GetClaim(_) => "GET /v1/claims/{claim_id}",
            Route::RetryClaim(_) => "POST /v1/claims/{claim_id}/retry",
            Route::ListDevices => "GET /v1/devices",
            Route::GetDevice(_) => "GET /v1/devices/{thing_name}",
            Route::ReleaseDevice(_) => "DELETE /v1/devices/{thing_name}",
        }
    }
}

/// Matches the path from its `v1` segment on, so a REST API stage prefix (`/prod/v1/...`) does not
/// matter.
fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let start = segments.iter().position(|s| *s == "v1");
    let rest = start.map(|i| &segments[i + 1..]).unwrap_or(&[]);
    if let ["admin", admin_path @ ..] = rest {
        return match admin::AdminRoute::parse(method, admin_path) {
            Some(route) => route.map(Route::Admin),
            None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such route.")),
        };
    }
    let route = match (method, rest) {
        (&Method::POST, ["claims"]) => Route::CreateClaim,
        (&Method::GET, ["claims", id]) => Route::GetClaim((*id).to_owned()),
        (&Method::POST, ["claims", id, "retry"]) => Route::RetryClaim((*id).to_owned()),
        (&Method::GET, ["devices"]) => Route::ListDevices,
        (&Method::GET, ["devices", thing]) => Route::GetDevice((*thing).to_owned()),
        (&Method::DELETE, ["devices", thing]) => Route::ReleaseDevice((*thing).to_owned()),
        (_, ["claims"] | ["claims", _] | ["claims", _, "retry"] | ["devices"] | ["devices", _]) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This method is not allowed on this resource.",
            ))
        }
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "No such route.")),
    };
    Ok(route)
}

/// The id API Gateway gave the request (the one in its access logs), else the Lambda request id.
pub fn request_id(request: &Request) -> String {
    let from_gateway = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.request_id.clone(),
        Some(RequestContext::ApiGatewayV2(context)) => context.request_id.clone(),
        _ => None,
    };
    from_gateway
        .or_else(|| request.lambda_context_ref().map(|context| context.request_id.clone()))
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

impl<S: OwnershipStore, C: Clock> Api<S, C> {
    pub fn new(service: ClaimService<S, C>, outbox: Outbox, config: ApiConfig) -> Self {
        Self {
            service,
            outbox,
            config,
        }
    }

    /// Publishes this claim's message now (if its vendor's lease is free) within the request's
    /// budget, then reads the claim again so the answer shows how far it got. A failure here is not
    /// the caller's: the claim is accepted and the lease holder or the schedule delivers it.
    async fn publish_then_read(&self, user: &UserId, claim: Claim) -> Claim {
        let drained = self
            .outbox
            .publish_now(&self.service, &claim.claim_id, self.config.publish_budget)
            .await;
        if let Err(err) = drained {
            tracing::warn!(event = "outbox_drain_failed", error = %err);
        }
        match self.service.claim_of(user, &claim.claim_id).await {
            Ok(Some(fresh)) => fresh,
            _ => claim,
        }
    }

    /// Entry point for `lambda_http::run`. Never returns `Err`.
    pub async fn handle(&self, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let request_id = request_id(&request);
        let span = tracing::info_span!("request", request_id = %request_id);
        Ok(self.respond(request, request_id).instrument(span).await)
    }

    async fn respond(&self, request: Request, request_id: String) -> Response<Body> {
        let started = std::time::Instant::now();
        let routed = route(request.method(), request.uri().path());
        let template = routed.as_ref().map(Route::template).unwrap_or("unmatched");
        let result = match routed {
            Ok(route) => self.dispatch(route, &request).await,
            Err(err) => Err(err),
        };
        let response = match result {
            Ok((status, headers, body)) => json_response(status, &request_id, headers, body),
            Err(err) => json_response(
                err.status,
                &request_id,
                err.retry_after
                    .map(|seconds| (header::RETRY_AFTER, seconds.to_string()))
                    .into_iter()
                    .collect(),
                Some(json!({"error": {"code": err.code, "message": err.message, "request_id": request_id}})),
            ),
        };
        tracing::info!(
            event = "http_request",
            route = template,
            status = response.status().as_u16(),
            latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        response
    }

    async fn dispatch(&self, route: Route, request: &Request) -> Result<Answer, ApiError> {
        if let Route::Admin(route) = route {
            // Only an IAM principal is an operator; a signed-in app user is not.
            let Some(operator) = identity::operator(request) else {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Admin routes need IAM authorization.",
                ));
            };
            if !self.config.operators.allows(&operator) {
                tracing::warn!(
                    event = "admin_action",
                    action = route.template(),
                    operator,
                    outcome = "forbidden"
                );
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "This IAM principal is not one of this stack's operators (OPERATOR_PRINCIPALS).",
                ));
            }
            return self.admin(route, &operator, request).await;
        }
        let Some(user) = identity::caller(request) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Sign in to claim devices.",
            ));
        };
        match route {
            Route::CreateClaim => self.create_claim(&user, request).await,
            Route::GetClaim(id) => self.get_claim(&user, &id).await,
            Route::RetryClaim(id) => self.retry_claim(&user, &id).await,
            Route::ListDevices => self.list_devices(&user, request).await,
            Route::GetDevice(thing) => self.get_device(&user, &thing).await,
            Route::ReleaseDevice(thing) => self.release_device(&user, &thing).await,
            Route::Admin(_) => Err(ApiError::internal()),
        }
    }

    async fn create_claim(&self, user: &UserId, request: &Request) -> Result<Answer, ApiError> {
        let body = parse_claim_body(request.body().as_ref())?;
        // A label code or a ThingName; the service resolves it. The message never echoes the code.
        let code = self
            .service
            .parse_code(&body.code)
            .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "invalid_code", message))?;
        let idempotency_key = match request.headers().get("idempotency-key") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|raw| IdempotencyKey::parse(raw).ok())
                    .ok_or_else(|| {
                        ApiError::invalid_request("Idempotency-Key must be 1 to 255 printable ASCII characters.")
                    })?,
            ),
        };
        let claim_request = ClaimRequest {
            user: user.clone(),
            code,
            endpoints: Arc::clone(&self.config.endpoints),
            region_hint: body.region.clone(),
            idempotency_key,
        };
        let outcome = self.service.claim(&claim_request).await.map_err(|err| match err {
            ClaimError::DeviceNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "device_not_found",
                "No claimable device matches this code. Check the code on the label.",
            ),
            ClaimError::AlreadyClaimed => ApiError::new(
                StatusCode::CONFLICT,
                "already_claimed",
                "This device belongs to someone else. Ask them to release it first.",
            ),
            ClaimError::IdempotencyKeyReused => {
                ApiError::invalid_request("This Idempotency-Key was already used for a different request.")
            }
            ClaimError::RateLimited { retry_after } => ApiError::rate_limited(retry_after),
            ClaimError::Busy => ApiError::unavailable(),
            ClaimError::Store(err) => ApiError::from_store(&err),
        })?;
        let now = self.service.now();
        Ok(match outcome {
            ClaimOutcome::Created(claim) => {
                let claim = self.publish_then_read(user, claim).await;
                let location = format!("/v1/claims/{}", claim.claim_id);
                let now = self.service.now();
                (
                    StatusCode::ACCEPTED,
                    vec![(header::LOCATION, location)],
                    Some(claim_view(&claim, now)),
                )
            }
            ClaimOutcome::Existing(claim) => (StatusCode::OK, Vec::new(), Some(claim_view(&claim, now))),
        })
    }

    async fn retry_claim(&self, user: &UserId, raw_id: &str) -> Result<Answer, ApiError> {
        let Some(claim_id) = ClaimId::parse(raw_id) else {
            return Err(ApiError::claim_not_found());
        };
        let claim = self.service.retry(user, &claim_id).await.map_err(|err| match err {
            RetryError::ClaimNotFound => ApiError::claim_not_found(),
            RetryError::NotRetryable => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "This claim cannot be retried: it is complete, or its device was claimed by someone else.",
            ),
            RetryError::Busy => ApiError::unavailable(),
            RetryError::Store(err) => ApiError::from_store(&err),
        })?;
        let claim = self.publish_then_read(user, claim).await;
        Ok((
            StatusCode::ACCEPTED,
            Vec::new(),
            Some(claim_view(&claim, self.service.now())),
        ))
    }

    async fn get_claim(&self, user: &UserId, raw_id: &str) -> Result<Answer, ApiError> {
        let Some(claim_id) = ClaimId::parse(raw_id) else {
            return Err(ApiError::claim_not_found());
        };
        let claim = self
            .service
            .claim_of(user, &claim_id)
            .await
            .map_err(|err| ApiError::from_store(&err))?
            .ok_or_else(ApiError::claim_not_found)?;
        Ok((StatusCode::OK, Vec::new(), Some(claim_view(&claim, self.service.now()))))
    }

    async fn list_devices(&self, user: &UserId, request: &Request) -> Result<Answer, ApiError> {
        let params = request.query_string_parameters_ref();
        let token = params.and_then(|p| p.first("next_token")).filter(|t| !t.is_empty());
        let page = self
            .service
            .devices_of(user, token, DEVICES_PAGE_SIZE)
            .await
            .map_err(|err| match err {
                PageError::InvalidToken => ApiError::invalid_request("next_token is not valid."),
                PageError::Store(err) => ApiError::from_store(&err),
            })?;
        let now = self.service.now();
        let devices: Vec<Value> = page
            .items
            .iter()
            .map(|(device, claim)| device_view(device, claim, now))
            .collect();
        Ok((
            StatusCode::OK,
            Vec::new(),
            Some(json!({"devices": devices, "next_token": page.next_token})),
        ))
    }

    async fn get_device(&self, user: &UserId, raw_thing: &str) -> Result<Answer, ApiError> {
        let thing = ThingName::parse(raw_thing).map_err(|_| ApiError::device_not_found())?;
        let (device, claim) = self
            .service
            .device_of(user, &thing)
            .await
            .map_err(|err| ApiError::from_store(&err))?
            .ok_or_else(ApiError::device_not_found)?;
        let now = self.service.now();
        let mut view = device_view(&device, &claim, now);
        // Only the caller's own claim: earlier owners' history is not theirs to see.
        view["history"] = history_view(&claim, now);
        Ok((StatusCode::OK, Vec::new(), Some(view)))
    }

    async fn release_device(&self, user: &UserId, raw_thing: &str) -> Result<Answer, ApiError> {
        let thing = ThingName::parse(raw_thing).map_err(|_| ApiError::device_not_found())?;
        self.service.release(user, &thing).await.map_err(|err| match err {
            ReleaseError::DeviceNotFound => ApiError::device_not_found(),
            ReleaseError::MidClaim => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "This device is still being claimed; wait until the claim completes or expires.",
            ),
            ReleaseError::Busy => ApiError::unavailable(),
            ReleaseError::Store(err) => ApiError::from_store(&err),
        })?;
        Ok((StatusCode::NO_CONTENT, Vec::new(), None))
    }
}

type Answer = (StatusCode, Vec<(header::HeaderName, String)>, Option<Value>);

#[derive(Debug, Deserialize)]
struct ClaimBody {
    code: String,
    /// Region hint for endpoint selection (rules with a `region`).
    #[serde(default)]
    region: Option<String>,
}

/// A JSON object body of at most `max_bytes`, as `T`. Errors name the problem (serde names the field
/// and the expected type) but never echo the input.
fn parse_json_object<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    max_bytes: usize,
    what: &str,
) -> Result<T, ApiError> {
    if bytes.len() > max_bytes {
        return Err(ApiError::invalid_request(format!(
            "The request body is larger than {max_bytes} bytes."
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::invalid_request("The request body is not UTF-8."))?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid_request(format!("The request body must be {what}.")));
    }
    // The position suffix of serde's messages is noise.
    let explain = |err: serde_json::Error| {
        let detail = err.to_string();
        let detail = detail.split(" at line").next().unwrap_or("invalid JSON").to_owned();
        ApiError::invalid_request(format!("The request body is not {what}: {detail}."))
    };
    let value: Value = serde_json::from_str(text).map_err(explain)?;
    // Derived structs also accept a JSON array in field order; only an object is a request.
    if !value.is_object() {
        return Err(ApiError::invalid_request("The request body must be a JSON object."));
    }
    serde_json::from_value(value).map_err(explain)
}

fn parse_claim_body(bytes: &[u8]) -> Result<ClaimBody, ApiError> {
    let body: ClaimBody = parse_json_object(bytes, MAX_BODY_BYTES, "a claim request with a \"code\"")?;
    if let Some(region) = &body.region {
        let valid = (1..=32).contains(&region.len())
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(ApiError::invalid_request("region must look like eu-west-1."));
        }
    }
    Ok(body)
}

fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn history_view(claim: &Claim, now: OffsetDateTime) -> Value {
    claim
        .effective_history(now)
        .iter()
        .map(|change| json!({"state": change.state, "at": timestamp(change.at)}))
        .collect()
}

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

fn device_view(device: &Device, claim: &Claim, now: OffsetDateTime) -> Value {
    json!({
        "thing_name": device.thing_name,
        "state": claim.effective_state(now),
        "claim_id": claim.claim_id,
        "claimed_at": timestamp(claim.created_at),
        "target_endpoint": claim.target_endpoint,
        "sku": device.sku,
    })
}

fn json_response(
    status: StatusCode,
    request_id: &str,
    headers: Vec<(header::HeaderName, String)>,
    body: Option<Value>,
) -> Response<Body> {
    let mut response = Response::new(match body {
        Some(value) => Body::Text(value.to_string()),
        None => Body::Empty,
    });
    *response.status_mut() = status;
    let out = response.headers_mut();
    if status != StatusCode::NO_CONTENT {
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        out.insert("x-request-id", value);
    }
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_template_is_listed() {
        for route in [
            Route::CreateClaim,
            Route::GetClaim("x".into()),
            Route::RetryClaim("x".into()),
            Route::ListDevices,
            Route::GetDevice("x".into()),
            Route::ReleaseDevice("x".into()),
        ] {
            assert!(ROUTES.contains(&route.template()), "{route:?}");
        }
    }

    #[test]
    fn routes_match_from_the_v1_segment_on() {
        assert_eq!(route(&Method::POST, "/v1/claims"), Ok(Route::CreateClaim));
        assert_eq!(route(&Method::POST, "/prod/v1/claims/"), Ok(Route::CreateClaim));
        assert_eq!(route(&Method::GET, "/v1/devices/d1"), Ok(Route::GetDevice("d1".into())));
        assert_eq!(
            route(&Method::PUT, "/v1/claims").map_err(|e| e.status),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            route(&Method::GET, "/v2/claims").map_err(|e| e.status),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            route(&Method::GET, "/v1/claims/a/b").map_err(|e| e.status),
            Err(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn the_endpoint_must_be_a_host_name() {
        assert!(ApiConfig::new("abc123-ats.iot.eu-west-1.amazonaws.com").is_ok());
        for bad in ["", "https://x.com", "a..b", "host/path", "a b", "x.com:8883"] {
            assert!(ApiConfig::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn body_errors_name_the_problem_without_echoing_input() {
        let err = parse_claim_body(br#"{"code": 5}"#).unwrap_err();
        assert_eq!(err.code, "invalid_request");
        assert!(err.message.contains("invalid type"), "{}", err.message);
        let err = parse_claim_body(br#"{"kode": "x"}"#).unwrap_err();
        assert!(err.message.contains("missing field `code`"), "{}", err.message);
        let secret = "\"supersecretcode\"";
        let err = parse_claim_body(format!("{{\"code\": {secret}").as_bytes()).unwrap_err();
        assert!(!err.message.contains("supersecret"));
    }
}
