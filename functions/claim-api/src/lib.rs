//! The routes of `docs/api.md` as one Lambda function behind API Gateway (REST or HTTP API payloads;
//! also Function URL payloads under `cargo lambda watch`).
//!
//! A request goes: [`Api::handle`] → `router` (which route) → `identity` (who calls) → the route's
//! handler in `user` or `admin`, which parses the request (`request`), runs its use case on the
//! shared [`ClaimService`] and answers with the shared views; errors map to answers in `errors`. No
//! two of these modules import each other.
//!
//! The handler never fails the invocation: every outcome, bugs included, is an HTTP response in the
//! `docs/api.md` error shape with an `x-request-id` header.

pub mod admin;
pub mod config;
pub mod errors;
pub mod identity;
pub mod request;
pub mod response;
pub mod router;
pub mod user;

use claim_shared::{
    ports::OwnershipStore,
    service::{ClaimService, Clock},
};
use lambda_http::{request::RequestContext, Body, Request, RequestExt, Response};
use tracing::Instrument;

pub use crate::{
    config::{ApiConfig, ConfigError},
    errors::ApiError,
    router::{ADMIN_ROUTES, ROUTES},
};
use crate::{
    response::{error_response, json_response, Answer},
    router::Route,
};

pub struct Api<S, C> {
    pub service: ClaimService<S, C>,
    pub config: ApiConfig,
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

    /// Routes, runs and answers one request; logs one `http_request` event with the route's
    /// template (raw paths carry label codes).
    async fn respond(&self, request: Request, request_id: String) -> Response<Body> {
        let started = std::time::Instant::now();
        let routed = router::route(request.method(), request.uri().path());
        let template = routed.as_ref().map(Route::template).unwrap_or("unmatched");
        let result = match routed {
            Ok(route) => self.dispatch(route, &request).await,
            Err(err) => Err(err),
        };
        let response = match result {
            Ok((status, headers, body)) => json_response(status, &request_id, headers, body),
            Err(err) => error_response(&err, &request_id),
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
                return admin::handle(service, route, &operator, request).await;
            }
            _ => identity::caller(request).ok_or_else(ApiError::unauthorized)?,
        };
        match route {
            Route::CreateClaim => user::create_claim(service, &self.config, &user, request).await,
            Route::GetClaim(id) => user::get_claim(service, &user, &id).await,
            Route::RetryClaim(id) => user::retry_claim(service, &user, &id).await,
            Route::ListDevices => user::list_devices(service, &user, request).await,
            Route::GetDevice(thing) => user::get_device(service, &user, &thing).await,
            Route::ReleaseDevice(thing) => user::release_device(service, &user, &thing).await,
            Route::Admin(_) => Err(ApiError::internal()),
        }
    }
}
