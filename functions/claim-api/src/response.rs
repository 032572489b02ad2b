//! What a route handler answers, and how it becomes the HTTP response: JSON with
//! `content-type: application/json` (none for `204`), always with `x-request-id`.

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Body, Response,
};
use serde_json::{json, Value};

use crate::errors::ApiError;

/// A handler's successful answer: status, extra headers, JSON body.
pub type Answer = (StatusCode, Vec<(header::HeaderName, String)>, Option<Value>);

pub fn ok(body: Value) -> Answer {
    (StatusCode::OK, Vec::new(), Some(body))
}

pub fn json_response(
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

/// Lets a browser on `origin` (the portal, `CORS_ALLOW_ORIGIN`) read the answer, including the headers
/// it acts on (`Retry-After`: how long to wait; `Location`; `x-request-id` to quote to support). The
/// preflight is API Gateway's (template.yaml, `Cors`); a Lambda proxy answer must carry this itself.
pub fn allow_origin(response: &mut Response<Body>, origin: &str) {
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        out.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after, location, x-request-id"),
        );
        out.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

pub fn error_response(err: &ApiError, request_id: &str) -> Response<Body> {
    let retry_after = err
        .retry_after
        .map(|seconds| (header::RETRY_AFTER, seconds.to_string()));
    let allow = err.allow.map(|methods| (header::ALLOW, methods.to_owned()));
    json_response(
        err.status,
        request_id,
        retry_after.into_iter().chain(allow).collect(),
        Some(json!({"error": {"code": err.code, "message": err.message, "request_id": request_id}})),
    )
}
