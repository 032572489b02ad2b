//! The local stack's API Gateway: plays the REST API of `template.yaml` (stage `api`, Lambda proxy
//! integration, payload format 1.0) in front of `cargo lambda watch`, so `claim-api` gets the events it
//! gets when deployed instead of the Function URL events of cargo lambda's own HTTP front end.
//!
//! For each request under `/<stage>/` it builds an `ApiGatewayProxyRequest` (the typed event of
//! `aws_lambda_events`, so the shape is the library's), invokes the function through the Lambda Invoke
//! API of `cargo lambda watch` and turns its `ApiGatewayProxyResponse` into the HTTP answer.
//!
//! What it plays, and the assumptions:
//! - Bodies: the API declares no binary media types, so API Gateway handles payloads as UTF-8 text
//!   (<https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-payload-encodings.html>).
//!   Assumed: bytes that are not UTF-8 reach the function decoded lossily (U+FFFD),
//!   `isBase64Encoded: false`. Header values that are not UTF-8 are decoded the same way (assumed too).
//! - `path` is the path after the stage as sent (percent-encoded), `resource` the same path (the
//!   function routes on the path); `pathParameters` null; query parameters form-decoded (`+`, `%XX`),
//!   `queryStringParameters` holding the last value of each name. `Host` is the gateway's own address
//!   (API Gateway is reached only under its domain name).
//! - Identity: `x-local-user: <sub>` plays a valid Cognito token (`requestContext.authorizer.claims.sub`),
//!   `x-local-operator: <arn>` a valid SigV4 signature (`requestContext.identity.userArn`); both headers
//!   are removed from the event.
//! - Integration: `504` after the timeout (API Gateway's 29 s), `502` when the invocation fails or the
//!   function's answer is not a proxy response, `413` over 10 MB, `403` outside the stage; these in the
//!   shape of the template's `GatewayResponses` (DEFAULT_5XX, DEFAULT_4XX, MISSING_AUTHENTICATION_TOKEN).
//!
//! Not played: the template's authorizers (a request without identity reaches the function, whose
//! `401`/`403` answer), unknown routes and methods (AWS answers `403` itself; here the function's
//! `404`/`405`), throttling, API Gateway's header size limits, binary media types.
//!
//! Usage: local-api-gateway --listen 127.0.0.1:9000 --lambda http://127.0.0.1:9001 (`--help`)

use std::{collections::HashMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderMap, HeaderName, HeaderValue, HOST},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use lambda_http::{
    aws_lambda_events::{
        apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse},
        query_map::QueryMap,
    },
    Body as ProxyBody,
};
use serde_json::json;

/// Play API Gateway (REST API, Lambda proxy integration, payload 1.0) in front of cargo lambda watch.
#[derive(Parser, Debug)]
#[command(name = "local-api-gateway", version, long_about = None)]
struct Options {
    /// Where to listen; the API is under /<stage> there, as on AWS.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Base URL of the Lambda Invoke API (cargo lambda watch).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9001")]
    lambda: String,
    /// The function the API's routes integrate with.
    #[arg(long, value_name = "NAME", default_value = "claim-api")]
    function: String,
    /// The stage (template.yaml: StageName).
    #[arg(long, value_name = "NAME", default_value = "api")]
    stage: String,
    /// Integration timeout in milliseconds (API Gateway REST APIs: 29 000); 504 after it.
    #[arg(long, value_name = "MS", default_value_t = 29_000)]
    timeout_ms: u64,
}

/// API Gateway's payload quota (10 MB): a larger body is `413`.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
const LOCAL_USER: &str = "x-local-user";
const LOCAL_OPERATOR: &str = "x-local-operator";

struct Gateway {
    options: Options,
    invoke_url: String,
    http: reqwest::Client,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = Options::parse();
    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", options.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let invoke_url = format!(
        "{}/2015-03-31/functions/{}/invocations",
        options.lambda.trim_end_matches('/'),
        options.function
    );
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_millis(options.timeout_ms))
        .build()
    {
        Ok(http) => http,
        Err(err) => {
            eprintln!("error: HTTP client: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "listening on http://{}/{} -> {invoke_url}",
        options.listen, options.stage
    );
    let gateway = Arc::new(Gateway {
        options,
        invoke_url,
        http,
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("accept: {err}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.answer(request, peer).await) }
            });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection from {peer}: {err}");
            }
        });
    }
}

impl Gateway {
    async fn answer(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (parts, body) = request.into_parts();
        let Some(path) = stage_path(parts.uri.path(), &self.options.stage) else {
            return gateway_error(StatusCode::FORBIDDEN, MISSING_AUTHENTICATION_TOKEN, &request_id);
        };
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, DEFAULT_4XX, &request_id),
        };
        let incoming = Received {
            method: parts.method,
            path,
            query: parts.uri.query().unwrap_or_default(),
            headers: &parts.headers,
            body: &body,
            host: &self.options.listen.to_string(),
            peer,
        };
        let event = wire_event(proxy_event(&incoming, &self.options.stage, &request_id));
        let started = std::time::Instant::now();
        let answer = self.invoke(&event, &request_id).await;
        println!(
            "{} {path} {} {} ms {request_id}",
            event["httpMethod"].as_str().unwrap_or_default(),
            answer.status().as_u16(),
            started.elapsed().as_millis()
        );
        answer
    }

    async fn invoke(&self, event: &serde_json::Value, request_id: &str) -> Response<Full<Bytes>> {
        let sent = self.http.post(&self.invoke_url).json(event).send().await;
        let reply = match sent {
            Ok(reply) => reply,
            Err(err) if err.is_timeout() => return gateway_error(StatusCode::GATEWAY_TIMEOUT, DEFAULT_5XX, request_id),
            Err(err) => return bad_gateway(request_id, &format!("invoke: {err}")),
        };
        let function_error = reply.headers().contains_key("x-amz-function-error");
        let status = reply.status();
        let bytes = match reply.bytes().await {
            Ok(bytes) => bytes,
            Err(err) if err.is_timeout() => return gateway_error(StatusCode::GATEWAY_TIMEOUT, DEFAULT_5XX, request_id),
            Err(err) => return bad_gateway(request_id, &format!("invoke: {err}")),
        };
        if !status.is_success() || function_error {
            return bad_gateway(request_id, &format!("the invocation failed ({status})"));
        }
        match serde_json::from_slice::<ApiGatewayProxyResponse>(&bytes) {
            Ok(response) => http_answer(response, request_id)
                .unwrap_or_else(|why| bad_gateway(request_id, &format!("malformed proxy response: {why}"))),
            Err(err) => bad_gateway(request_id, &format!("malformed proxy response: {err}")),
        }
    }
}

/// The path after `/<stage>`, or `None` outside the stage.
fn stage_path<'a>(path: &'a str, stage: &str) -> Option<&'a str> {
    match path.strip_prefix('/')?.strip_prefix(stage)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// What the event is built from: one HTTP request as it came in.
struct Received<'a> {
    method: Method,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
    host: &'a str,
    peer: SocketAddr,
}

/// The REST API proxy event (payload format 1.0) of `request`.
fn proxy_event(request: &Received<'_>, stage: &str, request_id: &str) -> ApiGatewayProxyRequest {
    let mut headers = HeaderMap::new();
    let mut multi_value_headers = HeaderMap::new();
    let mut event = ApiGatewayProxyRequest::default();
    for (name, value) in request.headers {
        let lossy = String::from_utf8_lossy(value.as_bytes());
        match name.as_str() {
            LOCAL_USER => {
                event.request_context.authorizer.fields =
                    HashMap::from([("claims".to_owned(), json!({ "sub": lossy }))]);
            }
            LOCAL_OPERATOR => event.request_context.identity.user_arn = Some(lossy.into_owned()),
            _ if *name == HOST => {}
            _ => {
                // A value that was a header value stays one decoded lossily (U+FFFD is not a control).
                if let Ok(value) = HeaderValue::from_str(&lossy) {
                    headers.insert(name.clone(), value.clone());
                    multi_value_headers.append(name.clone(), value);
                }
            }
        }
    }
    if let Ok(host) = HeaderValue::from_str(request.host) {
        headers.insert(HOST, host.clone());
        multi_value_headers.insert(HOST, host);
    }
    let (single, multi) = query_parameters(request.query);
    event.resource = Some(request.path.to_owned());
    event.path = Some(request.path.to_owned());
    event.http_method = request.method.clone();
    event.headers = headers;
    event.multi_value_headers = multi_value_headers;
    event.query_string_parameters = single;
    event.multi_value_query_string_parameters = multi;
    event.body = (!request.body.is_empty()).then(|| String::from_utf8_lossy(request.body).into_owned());
    event.is_base64_encoded = false;
    let context = &mut event.request_context;
    context.account_id = Some("123456789012".to_owned());
    context.apiid = Some("local".to_owned());
    context.stage = Some(stage.to_owned());
    context.request_id = Some(request_id.to_owned());
    context.domain_name = Some(request.host.to_owned());
    context.protocol = Some("HTTP/1.1".to_owned());
    context.resource_path = Some(request.path.to_owned());
    context.path = Some(format!("/{stage}{}", request.path));
    context.http_method = request.method.clone();
    context.identity.source_ip = Some(request.peer.ip().to_string());
    context.request_time_epoch = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    event
}

/// The event as sent: the maps API Gateway sends as `null` when empty (the typed struct holds maps).
fn wire_event(event: ApiGatewayProxyRequest) -> serde_json::Value {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    for field in [
        "pathParameters",
        "stageVariables",
        "queryStringParameters",
        "multiValueQueryStringParameters",
    ] {
        if value[field].as_object().is_some_and(serde_json::Map::is_empty) {
            value[field] = serde_json::Value::Null;
        }
    }
    value
}

/// `queryStringParameters` (the last value of each name) and `multiValueQueryStringParameters`.
fn query_parameters(query: &str) -> (QueryMap, QueryMap) {
    let decode = |raw: &str| {
        let spaced = raw.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut multi: HashMap<String, Vec<String>> = HashMap::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        multi.entry(decode(name)).or_default().push(decode(value));
    }
    let single: HashMap<String, String> = multi
        .iter()
        .filter_map(|(name, values)| Some((name.clone(), values.last()?.clone())))
        .collect();
    (QueryMap::from(single), QueryMap::from(multi))
}

/// The HTTP answer of a proxy response; `Err` (why) when it cannot be one.
fn http_answer(response: ApiGatewayProxyResponse, request_id: &str) -> Result<Response<Full<Bytes>>, String> {
    let status = u16::try_from(response.status_code)
        .ok()
        .and_then(|status| StatusCode::from_u16(status).ok())
        .ok_or_else(|| format!("statusCode {}", response.status_code))?;
    let body = match response.body {
        None | Some(ProxyBody::Empty) => Vec::new(),
        Some(ProxyBody::Text(text)) if response.is_base64_encoded => {
            BASE64.decode(text).map_err(|_| "body is not base64")?
        }
        Some(ProxyBody::Text(text)) => text.into_bytes(),
        Some(ProxyBody::Binary(bytes)) => bytes,
        Some(_) => return Err("an unknown body kind".into()),
    };
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.extend(response.multi_value_headers);
    for (name, value) in &response.headers {
        if !headers.get_all(name).iter().any(|have| have == value) {
            headers.append(name.clone(), value.clone());
        }
    }
    // The gateway's framing replaces the function's.
    for hop in ["content-length", "transfer-encoding", "connection"] {
        headers.remove(hop);
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), id);
    }
    Ok(answer)
}

fn bad_gateway(request_id: &str, why: &str) -> Response<Full<Bytes>> {
    eprintln!("{request_id}: 502: {why}");
    gateway_error(StatusCode::BAD_GATEWAY, DEFAULT_5XX, request_id)
}

/// The code and message of the template's gateway responses (`ClaimApi` `GatewayResponses`).
const MISSING_AUTHENTICATION_TOKEN: (&str, &str) = ("forbidden", "unknown route, or an admin call that is not signed");
const DEFAULT_4XX: (&str, &str) = ("invalid_request", "the request was refused");
const DEFAULT_5XX: (&str, &str) = ("unavailable", "try again");

/// An answer of API Gateway itself, as the template's gateway responses shape it.
fn gateway_error(status: StatusCode, (code, message): (&str, &str), request_id: &str) -> Response<Full<Bytes>> {
    let body = json!({ "error": { "code": code, "message": message, "request_id": request_id } });
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), id.clone());
        headers.insert(HeaderName::from_static("x-amzn-requestid"), id);
    }
    answer
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::Value;

    fn event_of(method: Method, path: &str, query: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Value {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let incoming = Received {
            method,
            path,
            query,
            headers: &map,
            body,
            host: "127.0.0.1:9000",
            peer: "127.0.0.1:4242".parse().unwrap(),
        };
        wire_event(proxy_event(&incoming, "api", "req-1"))
    }

    #[test]
    fn a_request_becomes_a_rest_api_proxy_event() {
        let event = event_of(
            Method::POST,
            "/v1/claims",
            "",
            &[("content-type", b"application/json")],
            b"{}",
        );
        assert_eq!(event["httpMethod"], "POST");
        assert_eq!(
            (&event["path"], &event["resource"]),
            (&json!("/v1/claims"), &json!("/v1/claims"))
        );
        assert_eq!(event["headers"]["content-type"], "application/json");
        assert_eq!(event["multiValueHeaders"]["content-type"], json!(["application/json"]));
        assert_eq!(event["headers"]["host"], "127.0.0.1:9000");
        for null in [
            "pathParameters",
            "stageVariables",
            "queryStringParameters",
            "multiValueQueryStringParameters",
        ] {
            assert_eq!(event[null], Value::Null, "{null}");
        }
        assert_eq!(
            (&event["body"], &event["isBase64Encoded"]),
            (&json!("{}"), &json!(false))
        );
        let context = &event["requestContext"];
        assert_eq!(
            (&context["requestId"], &context["stage"]),
            (&json!("req-1"), &json!("api"))
        );
        assert_eq!(context["path"], "/api/v1/claims");
        assert_eq!(context["identity"]["sourceIp"], "127.0.0.1");
        // And lambda_http reads it as an API Gateway REST request.
        let request = lambda_http::request::from_str(&event.to_string()).unwrap();
        assert_eq!(request.uri().path(), "/api/v1/claims");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_decoded_lossily() {
        let event = event_of(
            Method::POST,
            "/v1/claims",
            "",
            &[("idempotency-key", b"key-\xe9"), ("x-other", b"a"), ("x-other", b"b")],
            b"{\"code\":\"\xff\xfe\"}",
        );
        assert_eq!(event["body"], "{\"code\":\"\u{fffd}\u{fffd}\"}");
        assert_eq!(event["headers"]["idempotency-key"], "key-\u{fffd}");
        assert_eq!(event["headers"]["x-other"], "b");
        assert_eq!(event["multiValueHeaders"]["x-other"], json!(["a", "b"]));
        assert_eq!(event_of(Method::GET, "/v1/devices", "", &[], b"")["body"], Value::Null);
    }

    #[test]
    fn the_local_identity_headers_become_the_authorizers_output() {
        let event = event_of(
            Method::GET,
            "/v1/devices",
            "",
            &[(LOCAL_USER, b"caf\xe9"), (LOCAL_OPERATOR, b"arn:aws:iam::1:user/ops")],
            b"",
        );
        let context = &event["requestContext"];
        assert_eq!(context["authorizer"]["claims"]["sub"], "caf\u{fffd}");
        assert_eq!(context["identity"]["userArn"], "arn:aws:iam::1:user/ops");
        assert!(event["headers"].get(LOCAL_USER).is_none() && event["headers"].get(LOCAL_OPERATOR).is_none());
        assert!(event["multiValueHeaders"].get(LOCAL_USER).is_none());
        let nobody = event_of(Method::GET, "/v1/devices", "", &[], b"");
        assert_eq!(nobody["requestContext"]["identity"]["userArn"], Value::Null);
        assert!(nobody["requestContext"].get("authorizer").is_none());
    }

    #[test]
    fn query_parameters_are_form_decoded() {
        let event = event_of(
            Method::GET,
            "/v1/devices",
            "next_token=a%2Fb+c&x=1&x=2&e&bad=%ff%zz",
            &[],
            b"",
        );
        assert_eq!(event["queryStringParameters"]["next_token"], "a/b c");
        assert_eq!(event["queryStringParameters"]["x"], "2");
        assert_eq!(event["multiValueQueryStringParameters"]["x"], json!(["1", "2"]));
        assert_eq!(event["queryStringParameters"]["e"], "");
        assert_eq!(event["queryStringParameters"]["bad"], "\u{fffd}%zz");
    }

    #[test]
    fn the_gateways_own_answers_have_the_templates_shape() {
        let answer = gateway_error(StatusCode::GATEWAY_TIMEOUT, DEFAULT_5XX, "req-1");
        assert_eq!(answer.status(), 504);
        assert_eq!(answer.headers()["x-request-id"], "req-1");
        assert_eq!(answer.headers()["content-type"], "application/json");
    }

    #[test]
    fn only_paths_in_the_stage_are_served() {
        assert_eq!(stage_path("/api/v1/claims", "api"), Some("/v1/claims"));
        assert_eq!(stage_path("/api", "api"), Some("/"));
        assert_eq!(stage_path("/apix/v1", "api"), None);
        assert_eq!(stage_path("/v1/claims", "api"), None);
    }

    #[test]
    fn proxy_responses_become_answers_or_502() {
        let response: ApiGatewayProxyResponse = serde_json::from_value(json!({
            "statusCode": 202, "headers": {"content-type": "application/json", "content-length": "2"},
            "multiValueHeaders": {"x-a": ["1", "2"]}, "body": "{}", "isBase64Encoded": false
        }))
        .unwrap();
        let answer = http_answer(response, "req-1").unwrap();
        assert_eq!(answer.status(), 202);
        assert_eq!(answer.headers().get_all("x-a").iter().count(), 2);
        assert!(answer.headers().get("content-length").is_none());
        assert_eq!(answer.headers()["x-amzn-requestid"], "req-1");
        let encoded: ApiGatewayProxyResponse =
            serde_json::from_value(json!({"statusCode": 200, "body": "aGk=", "isBase64Encoded": true})).unwrap();
        assert_eq!(http_answer(encoded, "r").unwrap().status(), 200);
        let bad: ApiGatewayProxyResponse = serde_json::from_value(json!({"statusCode": 1000})).unwrap();
        assert!(http_answer(bad, "r").is_err());
        assert!(serde_json::from_value::<ApiGatewayProxyResponse>(json!({"status": "x"})).is_err());
    }
}
