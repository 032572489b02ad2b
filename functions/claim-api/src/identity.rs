//! Who is calling. Only the API Gateway authorizer can say: the Cognito `sub` claim, from a REST API
//! (`requestContext.authorizer.claims.sub`) or an HTTP API JWT authorizer
//! (`requestContext.authorizer.jwt.claims.sub`). Nothing in the body or headers counts, except the
//! `x-local-user` header in binaries built with the `local-auth` feature (the local stack only).
//!
//! Operators (admin routes) are IAM principals: API Gateway's IAM authorization puts the signer's ARN
//! in the request context (`requestContext.identity.userArn` for a REST API,
//! `requestContext.authorizer.iam.userArn` for an HTTP API). Locally, `x-local-operator` with
//! `local-auth`.

use claim_shared::domain::ids::UserId;
use lambda_http::{request::RequestContext, Request, RequestExt};

pub fn caller(request: &Request) -> Option<UserId> {
    let from_authorizer = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context
            .authorizer
            .fields
            .get("claims")
            .and_then(|claims| claims.get("sub"))
            .and_then(|sub| sub.as_str())
            .map(str::to_owned),
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get("sub"))
            .cloned(),
        _ => None,
    };
    from_authorizer
        .or_else(|| local_user(request))
        .and_then(|raw| UserId::parse(&raw).ok())
}

/// The IAM principal of an admin call, as recorded in device histories.
pub fn operator(request: &Request) -> Option<String> {
    let from_iam = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.identity.user_arn.clone(),
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone()),
        _ => None,
    };
    from_iam
        .filter(|arn| arn.starts_with("arn:"))
        .or_else(|| local_header(request, LOCAL_OPERATOR_HEADER))
        .filter(|operator| (1..=512).contains(&operator.len()) && !operator.chars().any(char::is_control))
}

fn local_user(request: &Request) -> Option<String> {
    local_header(request, LOCAL_USER_HEADER)
}

#[cfg(feature = "local-auth")]
fn local_header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[cfg(not(feature = "local-auth"))]
fn local_header(_request: &Request, _name: &str) -> Option<String> {
    None
}

/// The header that names the caller in local runs (feature `local-auth`).
pub const LOCAL_USER_HEADER: &str = "x-local-user";

/// The header that names the operator in local runs (feature `local-auth`).
pub const LOCAL_OPERATOR_HEADER: &str = "x-local-operator";
