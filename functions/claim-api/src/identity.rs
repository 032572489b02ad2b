//! Who is calling. Only the API Gateway authorizer can say: the Cognito `sub` claim, from a REST API
//! (`requestContext.authorizer.claims.sub`) or an HTTP API JWT authorizer
//! (`requestContext.authorizer.jwt.claims.sub`). Nothing in the body or headers counts, except the
//! `x-local-user` header in binaries built with the `local-auth` feature (the local stack only).

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

#[cfg(feature = "local-auth")]
fn local_user(request: &Request) -> Option<String> {
    request
        .headers()
        .get(LOCAL_USER_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[cfg(not(feature = "local-auth"))]
fn local_user(_request: &Request) -> Option<String> {
    None
}

/// The header that names the caller in local runs (feature `local-auth`).
pub const LOCAL_USER_HEADER: &str = "x-local-user";
