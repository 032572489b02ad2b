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

/// The IAM principal of an admin call, as recorded in device histories: an ARN is printable ASCII
/// without spaces, so anything else (a header decoded lossily, U+FFFD) is no operator.
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
        .filter(|operator| (1..=512).contains(&operator.len()) && operator.bytes().all(|b| b.is_ascii_graphic()))
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

/// Which operators may use the admin routes (`OPERATOR_PRINCIPALS`): IAM principal ARNs, each exact
/// or ending in `*` (any ARN with that prefix, e.g. every session of an assumed role). Empty: every
/// principal that IAM lets sign the call. A list means a broad IAM policy (say, an administrator's
/// `execute-api:*`) is not enough to change ownership records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorAllowlist(Vec<String>);

impl OperatorAllowlist {
    /// Comma-separated ARNs; the error names the entry that is not one.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let wildcard_inside = entry.trim_end_matches('*').contains('*');
            let shaped = entry.starts_with("arn:") && entry.len() <= 512 && !entry.chars().any(char::is_whitespace);
            if !shaped || wildcard_inside || entry.ends_with("**") {
                return Err(format!(
                    "OPERATOR_PRINCIPALS: {entry:?} is not an IAM principal ARN (optionally ending in one *)"
                ));
            }
            entries.push(entry.to_owned());
        }
        Ok(Self(entries))
    }

    pub fn allows(&self, operator: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => operator.starts_with(prefix),
                None => operator == entry,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowlist_names_exact_principals_or_prefixes() {
        let list = OperatorAllowlist::parse(
            " arn:aws:iam::111122223333:user/alice , arn:aws:sts::111122223333:assumed-role/Support/*",
        )
        .unwrap_or_default();
        assert!(list.allows("arn:aws:iam::111122223333:user/alice"));
        assert!(list.allows("arn:aws:sts::111122223333:assumed-role/Support/bob"));
        assert!(!list.allows("arn:aws:iam::111122223333:user/alicia"));
        assert!(!list.allows("arn:aws:sts::111122223333:assumed-role/Admin/bob"));
        assert!(OperatorAllowlist::parse("").unwrap_or_default().allows("anyone"));
    }

    /// A REST API event (payload 1.0) with this IAM caller and Cognito `sub`, as the local API
    /// Gateway builds it from the local headers (values decoded lossily).
    fn rest_event(user_arn: &str, sub: &str) -> Request {
        let event = serde_json::json!({
            "resource": "/v1/devices", "path": "/v1/devices", "httpMethod": "GET",
            "headers": {}, "multiValueHeaders": {}, "queryStringParameters": null,
            "multiValueQueryStringParameters": null, "pathParameters": null, "stageVariables": null,
            "requestContext": {
                "stage": "api", "requestId": "r", "httpMethod": "GET", "resourcePath": "/v1/devices",
                "identity": {"userArn": user_arn}, "authorizer": {"claims": {"sub": sub}}
            },
            "body": null, "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).unwrap_or_default()
    }

    #[test]
    fn identities_that_are_not_printable_ascii_are_nobody() {
        let request = rest_event("arn:aws:iam::111122223333:user/ops", "user-1");
        assert_eq!(
            operator(&request).as_deref(),
            Some("arn:aws:iam::111122223333:user/ops")
        );
        assert_eq!(
            caller(&request).map(|user| user.as_str().to_owned()).as_deref(),
            Some("user-1")
        );
        for (arn, sub) in [
            ("arn:aws:iam::1:user/\u{fffd}", "caf\u{fffd}"),
            ("arn:aws:iam::1:user/caf\u{e9}", "caf\u{e9}"),
            ("arn:aws:iam::1:user/a b", "a b"),
        ] {
            let request = rest_event(arn, sub);
            assert_eq!(operator(&request), None, "{arn}");
            assert!(caller(&request).is_none(), "{sub}");
        }
    }

    #[test]
    fn an_allowlist_entry_that_is_not_an_arn_is_refused_by_name() {
        for bad in [
            "alice",
            "arn:aws:iam::1:user/*x",
            "arn:aws:iam::1:user/a b",
            "arn:aws:iam::1:**",
        ] {
            let err = OperatorAllowlist::parse(&format!("arn:aws:iam::1:user/ok,{bad}")).expect_err(bad);
            assert!(err.contains("OPERATOR_PRINCIPALS") && err.contains(bad), "{err}");
        }
    }
}
