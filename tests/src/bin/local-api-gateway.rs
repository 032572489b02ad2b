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
//! - CORS: with `--cors-origin`, a browser's preflight (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`) under the stage is answered by the gateway, as the template's
//!   `Cors` setting makes API Gateway answer it (a mock integration, never the function); any other
//!   `OPTIONS` reaches the function. The function adds `Access-Control-Allow-Origin` to its own answers.
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
use hyper::{body::Bytes, header, header::HeaderValue, server::conn::http1, HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lambda_http::aws_lambda_events::{
    apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse},
    encodings::Body as ProxyBody,
    query_map::QueryMap,
};
use serde_json::{json, Value};

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
    /// The one origin whose browser preflights are answered (template.yaml: the API's Cors).
    #[arg(long, value_name = "ORIGIN")]
    cors_origin: Option<String>,
}

/// API Gateway's payload quota (10 MB): a larger body is `413`.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
const LOCAL_USER: &str = "x-local-user";
const LOCAL_OPERATOR: &str = "x-local-operator";
/// The code and message of the template's gateway responses (`ClaimApi` `GatewayResponses`).
const MISSING_AUTHENTICATION_TOKEN: (&str, &str) = ("forbidden", "unknown route, or an admin call that is not signed");
const DEFAULT_4XX: (&str, &str) = ("invalid_request", "the request was refused");
const DEFAULT_5XX: (&str, &str) = ("unavailable", "try again");

type Answer = Response<Full<Bytes>>;

/// The API (its stage and host name, as the events name them) and the function it integrates with.
struct Gateway {
    stage: String,
    host: String,
    invoke: String,
    http: reqwest::Client,
    cors_origin: Option<String>,
}

/// What a preflight allows (template.yaml, `ClaimApi` `Cors`): the user routes' methods and the
/// headers the portal sends.
const CORS_ALLOW_METHODS: &str = "GET,POST,DELETE,OPTIONS";
const CORS_ALLOW_HEADERS: &str = "authorization,content-type,idempotency-key,x-local-user";
const CORS_MAX_AGE: &str = "600";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = Options::parse();
    let Ok(listener) = tokio::net::TcpListener::bind(options.listen).await else {
        eprintln!("error: cannot listen on {}", options.listen);
        return std::process::ExitCode::FAILURE;
    };
    let lambda = options.lambda.trim_end_matches('/');
    let invoke = format!("{lambda}/2015-03-31/functions/{}/invocations", options.function);
    let timeout = Duration::from_millis(options.timeout_ms);
    let http = reqwest::Client::builder().timeout(timeout).build().unwrap_or_default();
    println!("listening on http://{}/{} -> {invoke}", options.listen, options.stage);
    let gateway = Arc::new(Gateway {
        stage: options.stage,
        host: options.listen.to_string(),
        invoke,
        http,
        cors_origin: options.cors_origin,
    });
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let gateway = gateway.clone();
            async move {
                let request_id = uuid::Uuid::new_v4().to_string();
                let started = std::time::Instant::now();
                let (method, path) = (request.method().clone(), request.uri().path().to_owned());
                let answer = gateway.answer(request, peer, &request_id).await;
                let (status, ms) = (answer.status().as_u16(), started.elapsed().as_millis());
                println!("{method} {path} {status} {ms} ms {request_id}");
                Ok::<_, Infallible>(answer)
            }
        });
        tokio::spawn(async move {
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
    async fn answer(&self, request: Request<hyper::body::Incoming>, peer: SocketAddr, id: &str) -> Answer {
        let Some(path) = stage_path(request.uri().path(), &self.stage).map(str::to_owned) else {
            return gateway_error(StatusCode::FORBIDDEN, MISSING_AUTHENTICATION_TOKEN, id);
        };
        if let Some(answer) = self.preflight(&request, id) {
            return answer;
        }
        let (parts, body) = request.into_parts();
        let Ok(body) = Limited::new(body, MAX_BODY_BYTES).collect().await else {
            return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, DEFAULT_4XX, id);
        };
        let request = Request::from_parts(parts, body.to_bytes());
        let event = wire_event(self.event(&request, &path, peer, id));
        // The function's answer through the Invoke API; `504` on the timeout, `502` for any failure.
        let invoked = async {
            let reply = self.http.post(&self.invoke).json(&event).send().await?;
            let failed = !reply.status().is_success() || reply.headers().contains_key("x-amz-function-error");
            Ok::<_, reqwest::Error>((reply.status(), failed, reply.bytes().await?))
        };
        let (status, function_error, bytes) = match invoked.await {
            Ok(invoked) => invoked,
            Err(err) if err.is_timeout() => return gateway_error(StatusCode::GATEWAY_TIMEOUT, DEFAULT_5XX, id),
            Err(err) => return bad_gateway(id, &format!("invoke: {err}")),
        };
        if function_error {
            return bad_gateway(id, &format!("the invocation failed ({status})"));
        }
        serde_json::from_slice::<ApiGatewayProxyResponse>(&bytes)
            .map_err(|err| err.to_string())
            .and_then(|response| http_answer(response, id))
            .unwrap_or_else(|why| bad_gateway(id, &format!("malformed proxy response: {why}")))
    }

    /// A browser's CORS preflight, answered as API Gateway's mock integration for `Cors` does: the
    /// configured origin whatever the request's, so a browser of another origin refuses the call.
    fn preflight<B>(&self, request: &Request<B>, id: &str) -> Option<Answer> {
        let origin = self.cors_origin.as_deref()?;
        let headers = request.headers();
        let preflight = request.method() == hyper::Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            return None;
        }
        let mut out = HeaderMap::new();
        for (name, value) in [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
            (header::ACCESS_CONTROL_ALLOW_METHODS, CORS_ALLOW_METHODS),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_ALLOW_HEADERS),
            (header::ACCESS_CONTROL_MAX_AGE, CORS_MAX_AGE),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                out.insert(name, value);
            }
        }
        Some(answer(StatusCode::OK, out, Vec::new(), id))
    }

    /// The REST API proxy event (payload format 1.0) of `request`, whose path after the stage is `path`.
    fn event(&self, request: &Request<Bytes>, path: &str, peer: SocketAddr, id: &str) -> ApiGatewayProxyRequest {
        let mut event = ApiGatewayProxyRequest::default();
        let context = &mut event.request_context;
        for (name, value) in request.headers() {
            let lossy = String::from_utf8_lossy(value.as_bytes());
            match name.as_str() {
                LOCAL_USER => context.authorizer.fields = HashMap::from([("claims".into(), json!({ "sub": lossy }))]),
                LOCAL_OPERATOR => context.identity.user_arn = Some(lossy.into_owned()),
                _ if name == header::HOST => {}
                // A header value decoded lossily is still one (U+FFFD is no control character).
                _ => {
                    if let Ok(value) = HeaderValue::from_str(&lossy) {
                        event.headers.insert(name.clone(), value.clone());
                        event.multi_value_headers.append(name.clone(), value);
                    }
                }
            }
        }
        if let Ok(host) = HeaderValue::from_str(&self.host) {
            event.headers.insert(header::HOST, host.clone());
            event.multi_value_headers.insert(header::HOST, host);
        }
        (event.query_string_parameters, event.multi_value_query_string_parameters) =
            query_parameters(request.uri().query().unwrap_or_default());
        (event.resource, event.path) = (Some(path.to_owned()), Some(path.to_owned()));
        event.http_method = request.method().clone();
        let body = request.body();
        event.body = (!body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned());
        let context = &mut event.request_context;
        (context.account_id, context.apiid) = (Some("123456789012".into()), Some("local".into()));
        (context.stage, context.request_id) = (Some(self.stage.clone()), Some(id.to_owned()));
        (context.domain_name, context.protocol) = (Some(self.host.clone()), Some("HTTP/1.1".into()));
        context.resource_path = Some(path.to_owned());
        context.path = Some(format!("/{}{path}", self.stage));
        context.http_method = request.method().clone();
        context.identity.source_ip = Some(peer.ip().to_string());
        context.request_time_epoch = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        event
    }
}

/// The path after `/<stage>`, or `None` outside the stage.
fn stage_path<'a>(path: &'a str, stage: &str) -> Option<&'a str> {
    match path.strip_prefix('/')?.strip_prefix(stage)? {
        "" => Some("/"),
        rest => rest.starts_with('/').then_some(rest),
    }
}

/// The event as sent: the maps API Gateway sends as `null` when empty (the typed struct holds maps).
fn wire_event(event: ApiGatewayProxyRequest) -> Value {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    for field in [
        "pathParameters",
        "stageVariables",
        "queryStringParameters",
        "multiValueQueryStringParameters",
    ] {
        if value[field].as_object().is_some_and(serde_json::Map::is_empty) {
            value[field] = Value::Null;
        }
    }
    value
}

/// `queryStringParameters` (the last value of each name) and `multiValueQueryStringParameters`.
fn query_parameters(query: &str) -> (QueryMap, QueryMap) {
    let decode = |raw: &str| {
        percent_encoding::percent_decode_str(&raw.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut multi: HashMap<String, Vec<String>> = HashMap::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        multi.entry(decode(name)).or_default().push(decode(value));
    }
    let last = |(name, values): (&String, &Vec<String>)| Some((name.clone(), values.last()?.clone()));
    let single: HashMap<String, String> = multi.iter().filter_map(last).collect();
    (QueryMap::from(single), QueryMap::from(multi))
}

/// The HTTP answer of a proxy response; `Err` (why) when it cannot be one.
fn http_answer(response: ApiGatewayProxyResponse, id: &str) -> Result<Answer, String> {
    let status = u16::try_from(response.status_code)
        .ok()
        .and_then(|status| StatusCode::from_u16(status).ok());
    let status = status.ok_or_else(|| format!("statusCode {}", response.status_code))?;
    let body = match response.body {
        None | Some(ProxyBody::Empty) => Vec::new(),
        Some(ProxyBody::Text(text)) if response.is_base64_encoded => {
            BASE64.decode(text).map_err(|_| "body is not base64")?
        }
        Some(ProxyBody::Text(text)) => text.into_bytes(),
        Some(ProxyBody::Binary(bytes)) => bytes,
        Some(_) => return Err("an unknown body kind".into()),
    };
    let mut headers = response.multi_value_headers;
    for (name, value) in &response.headers {
        if !headers.get_all(name).iter().any(|have| have == value) {
            headers.append(name.clone(), value.clone());
        }
    }
    // The gateway's framing replaces the function's.
    for hop in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION] {
        headers.remove(hop);
    }
    Ok(answer(status, headers, body, id))
}

fn bad_gateway(id: &str, why: &str) -> Answer {
    eprintln!("{id}: 502: {why}");
    gateway_error(StatusCode::BAD_GATEWAY, DEFAULT_5XX, id)
}

/// An answer of API Gateway itself, as the template's gateway responses shape it.
fn gateway_error(status: StatusCode, (code, message): (&str, &str), id: &str) -> Answer {
    let body = json!({ "error": { "code": code, "message": message, "request_id": id } });
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(id) = HeaderValue::from_str(id) {
        headers.insert("x-request-id", id);
    }
    answer(status, headers, body.to_string().into_bytes(), id)
}

/// An answer with API Gateway's request id header.
fn answer(status: StatusCode, mut headers: HeaderMap, body: Vec<u8>, id: &str) -> Answer {
    if let Ok(id) = HeaderValue::from_str(id) {
        headers.insert("x-amzn-requestid", id);
    }
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    (*answer.status_mut(), *answer.headers_mut()) = (status, headers);
    answer
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The event of `method` `target` (path?query, after the stage) with these headers and body.
    fn event_of(method: &str, target: &str, headers: &[(&str, &[u8])], body: &'static [u8]) -> Value {
        let mut request = Request::builder().method(method).uri(target);
        for (name, value) in headers {
            request = request.header(*name, HeaderValue::from_bytes(value).unwrap());
        }
        let request = request.body(Bytes::from_static(body)).unwrap();
        let peer = "127.0.0.1:4242".parse().unwrap();
        wire_event(gateway(None).event(&request, request.uri().path(), peer, "req-1"))
    }

    fn gateway(cors_origin: Option<&str>) -> Gateway {
        Gateway {
            stage: "api".into(),
            host: "127.0.0.1:9000".into(),
            invoke: String::new(),
            http: reqwest::Client::new(),
            cors_origin: cors_origin.map(str::to_owned),
        }
    }

    #[test]
    fn only_a_browser_preflight_is_answered_and_only_with_the_configured_origin() {
        let preflight = |headers: &[(&str, &str)]| {
            let mut request = Request::builder().method("OPTIONS").uri("/api/v1/claims");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.body(()).unwrap()
        };
        let browser = preflight(&[
            ("origin", "http://elsewhere.example"),
            ("access-control-request-method", "POST"),
        ]);
        let answer = gateway(Some("http://127.0.0.1:8080"))
            .preflight(&browser, "req-1")
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let allowed = |name| answer.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(allowed(header::ACCESS_CONTROL_ALLOW_ORIGIN), "http://127.0.0.1:8080");
        assert!(allowed(header::ACCESS_CONTROL_ALLOW_HEADERS).contains("authorization"));
        assert!(allowed(header::ACCESS_CONTROL_ALLOW_METHODS).contains("DELETE"));
        // Without the option, or for an OPTIONS that is no preflight, the function answers.
        assert!(gateway(None).preflight(&browser, "req-1").is_none());
        let plain = preflight(&[("origin", "http://127.0.0.1:8080")]);
        assert!(gateway(Some("http://127.0.0.1:8080"))
            .preflight(&plain, "req-1")
            .is_none());
    }

    /// Each key of `expected` is a JSON pointer into `event`, and its value the one there.
    fn assert_at(event: &Value, expected: Value) {
        let pointers = expected.as_object().unwrap().keys();
        let found = pointers.map(|at| (at.clone(), event.pointer(at).cloned().unwrap_or_default()));
        assert_eq!(Value::Object(found.collect()), expected);
    }

    #[test]
    fn a_request_becomes_a_rest_api_proxy_event() {
        let event = event_of("POST", "/v1/claims", &[("content-type", b"application/json")], b"{}");
        let expected = json!({
            "/httpMethod": "POST", "/path": "/v1/claims", "/resource": "/v1/claims",
            "/headers": {"content-type": "application/json", "host": "127.0.0.1:9000"},
            "/multiValueHeaders": {"content-type": ["application/json"], "host": ["127.0.0.1:9000"]},
            "/pathParameters": null, "/stageVariables": null, "/queryStringParameters": null,
            "/multiValueQueryStringParameters": null, "/body": "{}", "/isBase64Encoded": false,
            "/requestContext/requestId": "req-1", "/requestContext/stage": "api",
            "/requestContext/path": "/api/v1/claims", "/requestContext/resourcePath": "/v1/claims",
            "/requestContext/httpMethod": "POST", "/requestContext/identity/sourceIp": "127.0.0.1",
        });
        assert_at(&event, expected);
        // And lambda_http reads it as an API Gateway REST request.
        let request = lambda_http::request::from_str(&event.to_string()).unwrap();
        assert_eq!(request.uri().path(), "/api/v1/claims");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_decoded_lossily() {
        let headers: [(&str, &[u8]); 3] = [("idempotency-key", b"key-\xe9"), ("x-other", b"a"), ("x-other", b"b")];
        let expected = json!({
            "/body": "{\"code\":\"\u{fffd}\u{fffd}\"}", "/headers/idempotency-key": "key-\u{fffd}",
            "/headers/x-other": "b", "/multiValueHeaders/x-other": ["a", "b"],
        });
        assert_at(
            &event_of("POST", "/v1/claims", &headers, b"{\"code\":\"\xff\xfe\"}"),
            expected,
        );
        assert_eq!(event_of("GET", "/v1/devices", &[], b"")["body"], Value::Null);
    }

    #[test]
    fn the_local_identity_headers_become_the_authorizers_output() {
        let headers: [(&str, &[u8]); 2] = [(LOCAL_USER, b"caf\xe9"), (LOCAL_OPERATOR, b"arn:aws:iam::1:user/ops")];
        let expected = json!({
            "/requestContext/authorizer": {"claims": {"sub": "caf\u{fffd}"}},
            "/requestContext/identity/userArn": "arn:aws:iam::1:user/ops",
            "/headers": {"host": "127.0.0.1:9000"}, "/multiValueHeaders": {"host": ["127.0.0.1:9000"]},
        });
        assert_at(&event_of("GET", "/v1/devices", &headers, b""), expected);
        let expected = json!({
            "/requestContext/identity/userArn": null, "/requestContext/authorizer": null,
        });
        assert_at(&event_of("GET", "/v1/devices", &[], b""), expected);
    }

    #[test]
    fn query_parameters_are_form_decoded() {
        let expected = json!({
            "/queryStringParameters": {"next_token": "a/b c", "x": "2", "e": "", "bad": "\u{fffd}%zz"},
            "/multiValueQueryStringParameters/x": ["1", "2"],
        });
        assert_at(
            &event_of("GET", "/v1/devices?next_token=a%2Fb+c&x=1&x=2&e&bad=%ff%zz", &[], b""),
            expected,
        );
    }

    #[test]
    fn only_paths_in_the_stage_are_served_and_the_gateways_answers_have_the_templates_shape() {
        assert_eq!(stage_path("/api/v1/claims", "api"), Some("/v1/claims"));
        assert_eq!(stage_path("/api", "api"), Some("/"));
        assert_eq!(stage_path("/apix/v1", "api"), None);
        assert_eq!(stage_path("/v1/claims", "api"), None);
        let answer = gateway_error(StatusCode::GATEWAY_TIMEOUT, DEFAULT_5XX, "req-1");
        assert_eq!(answer.status(), 504);
        assert_eq!(answer.headers()["x-request-id"], "req-1");
        assert_eq!(answer.headers()["content-type"], "application/json");
    }

    #[test]
    fn proxy_responses_become_answers_or_502() {
        let response = |value: Value| serde_json::from_value::<ApiGatewayProxyResponse>(value).unwrap();
        let proxy = response(json!({
            "statusCode": 202, "headers": {"content-type": "application/json", "content-length": "2"},
            "multiValueHeaders": {"x-a": ["1", "2"]}, "body": "{}", "isBase64Encoded": false
        }));
        let answer = http_answer(proxy, "req-1").unwrap();
        assert_eq!(answer.status(), 202);
        assert_eq!(answer.headers().get_all("x-a").iter().count(), 2);
        assert!(answer.headers().get("content-length").is_none());
        assert_eq!(answer.headers()["x-amzn-requestid"], "req-1");
        let encoded = response(json!({"statusCode": 200, "body": "aGk=", "isBase64Encoded": true}));
        assert_eq!(http_answer(encoded, "r").unwrap().status(), 200);
        assert!(http_answer(response(json!({"statusCode": 1000})), "r").is_err());
        assert!(serde_json::from_value::<ApiGatewayProxyResponse>(json!({"status": "x"})).is_err());
    }
}
