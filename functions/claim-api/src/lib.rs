//! The routes of `docs/api.md` as one Lambda function behind API Gateway (REST or HTTP API payloads;
//! also Function URL payloads under `cargo lambda watch`).
//!
//! A request goes: [`Api::handle`] → `router` (which route) → `identity` (who calls) → the route's
//! handler in `user` or `admin`, which parses the request (`request`), runs its use case on the
//! shared [`ClaimService`] and answers with the shared views; errors map to answers in `errors`. No
//! two of these modules import each other.
//!
//! The handler never fails the invocation: every outcome, bugs included, is an HTTP response in the
//! `docs/api.md` error shape with an `x-request-id` header. Nor does it hang: every request has a
//! deadline (`REQUEST_BUDGET_MS`, capped by the invocation's own), after which it answers
//! `503 unavailable` with `Retry-After`.

pub mod admin;
pub mod config;
pub mod errors;
pub mod identity;
pub mod request;
pub mod response;
pub mod router;
pub mod user;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use claim_shared::{
    ports::OwnershipStore,
    service::{ClaimService, Clock},
};
use lambda_http::{request::RequestContext, Body, Request, RequestExt, Response};
use tokio::time::Instant;
use tracing::Instrument;

pub use crate::{
    config::{ApiConfig, ConfigError},
    errors::ApiError,
    router::{ADMIN_ROUTES, ROUTES},
};
use crate::{
    response::{allow_origin, error_response, json_response, Answer},
    router::Route,
};

pub struct Api<S, C> {
    pub service: ClaimService<S, C>,
    pub config: ApiConfig,
}

/// What a request leaves of its Lambda invocation's time, at least, to answer and write its
/// metrics: the budget is cut to the invocation's deadline minus this.
pub const INVOCATION_MARGIN: Duration = Duration::from_millis(1000);

/// How long the request may still take: its budget, or less when the invocation's deadline (the
/// function's timeout) is nearer.
pub fn request_budget(request: &Request, budget: Duration) -> Duration {
    let deadline_ms = request.lambda_context_ref().map(|context| context.deadline);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
    budget_within(budget, deadline_ms, now_ms)
}

/// `budget`, cut to what the invocation's deadline (`deadline_ms`, Unix milliseconds) leaves minus
/// [`INVOCATION_MARGIN`]. A deadline that is not a real one is ignored: none, one already past
/// when the request starts (`cargo lambda watch` sends a fixed 600000, i.e. 1970), or one beyond
/// Lambda's longest timeout (15 minutes).
pub fn budget_within(budget: Duration, deadline_ms: Option<u64>, now_ms: u64) -> Duration {
    const LONGEST_TIMEOUT_MS: u64 = 15 * 60 * 1000;
    match deadline_ms {
        Some(deadline) if deadline > now_ms && deadline - now_ms <= LONGEST_TIMEOUT_MS => {
            budget.min(Duration::from_millis(deadline - now_ms).saturating_sub(INVOCATION_MARGIN))
        }
        _ => budget,
    }
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
    pub fn new(service: ClaimService<S, C>, config: ApiConfig) -> Self {
        Self { service, config }
    }

    /// Entry point for `lambda_http::run`. Never returns `Err`.
    pub async fn handle(&self, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let request_id = request_id(&request);
        let span = tracing::info_span!("request", request_id = %request_id);
        Ok(self.respond(request, request_id).instrument(span).await)
    }

    /// Routes, runs and answers one request within its budget; logs one `http_request` event with
    /// the route's template (raw paths carry label codes) and, for an error, why (`error`). A
    /// request still running when its budget runs out is dropped where it stands (a DynamoDB
    /// transaction lands whole or not at all) and answered `503`, after a `request_budget_exhausted`
    /// event.
    async fn respond(&self, request: Request, request_id: String) -> Response<Body> {
        let started = Instant::now();
        let budget = request_budget(&request, self.config.request_budget);
        let deadline = started + budget;
        let routed = router::route(request.method(), request.uri().path());
        let template = routed.as_ref().map(Route::template).unwrap_or("unmatched");
        let result = match routed {
            Ok(route) => match tokio::time::timeout_at(deadline, self.dispatch(route, &request, deadline)).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(
                        event = "request_budget_exhausted",
                        route = template,
                        budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
                        latency_ms = elapsed_ms(started),
                    );
                    Err(ApiError::budget_exhausted(budget))
                }
            },
            Err(err) => Err(err),
        };
        let (mut response, error) = match result {
            Ok((status, headers, body)) => (json_response(status, &request_id, headers, body), None),
            Err(err) => (error_response(&err, &request_id), err.detail),
        };
        if let Some(origin) = &self.config.cors_origin {
            allow_origin(&mut response, origin);
        }
        tracing::info!(
            event = "http_request",
            route = template,
            status = response.status().as_u16(),
            latency_ms = elapsed_ms(started),
            error,
        );
        response
    }

    async fn dispatch(&self, route: Route, request: &Request, deadline: Instant) -> Result<Answer, ApiError> {
        let service = &self.service;
        let user = match route {
            Route::Admin(route) => {
                // Only an IAM principal is an operator; a signed-in app user is not.
                let Some(operator) = identity::operator(request) else {
                    return Err(ApiError::forbidden("Admin routes need IAM authorization."));
                };
                if !self.config.operators.allows(&operator) {
                    tracing::warn!(
                        event = "admin_action",
                        action = route.template(),
                        operator,
                        outcome = "forbidden"
                    );
                    return Err(ApiError::forbidden(
                        "This IAM principal is not one of this stack's operators (OPERATOR_PRINCIPALS).",
                    ));
                }
                return admin::handle(service, route, &operator, request, deadline).await;
            }
            _ => identity::caller(request).ok_or_else(ApiError::unauthorized)?,
        };
        match route {
            Route::CreateClaim => user::create_claim(service, &self.config, &user, request, deadline).await,
            Route::GetClaim(id) => user::get_claim(service, &user, &id).await,
            Route::RetryClaim(id) => user::retry_claim(service, &user, &id, deadline).await,
            Route::ListDevices => user::list_devices(service, &user, request).await,
            Route::GetDevice(thing) => user::get_device(service, &user, &thing).await,
            Route::ReleaseDevice(thing) => user::release_device(service, &user, &thing).await,
            Route::Admin(_) => Err(ApiError::internal()),
        }
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_cut_to_the_invocations_deadline_when_that_is_a_real_one() {
        let budget = Duration::from_millis(3000);
        let now = 1_800_000_000_000;
        assert_eq!(budget_within(budget, None, now), budget);
        assert_eq!(budget_within(budget, Some(now + 10_000), now), budget, "10 s left");
        assert_eq!(
            budget_within(budget, Some(now + 2_500), now),
            Duration::from_millis(1500),
            "2.5 s left, less the margin"
        );
        assert_eq!(budget_within(budget, Some(now + 500), now), Duration::ZERO);
        // Not real deadlines: past (cargo lambda watch's fixed 600000), or beyond 15 minutes.
        assert_eq!(budget_within(budget, Some(600_000), now), budget);
        assert_eq!(budget_within(budget, Some(now), now), budget);
        assert_eq!(budget_within(budget, Some(now + 16 * 60_000), now), budget);
    }
}
