//! Hostile input over HTTP on the running local stack: a table of requests an attacker or a broken
//! client sends to every route, as a user and as an operator. NUL bytes, MQTT wildcards and topic
//! levels, `$aws`, lookalike Unicode, a 1 MB body, 100k-deep nesting, wrong types, mass-assignment
//! fields, huge and non-UTF-8 headers, bad `Idempotency-Key`s, path traversal, forged page tokens,
//! wrong identities and wrong methods.
//!
//! Every answer must be below 500, carry `x-request-id`, and (non-2xx) have the error shape
//! `{"error":{"code","message","request_id"}}` with that request id and a message that does not
//! echo the input. Afterwards: no message on the staging broker for any device involved (but the one
//! legitimate claim), nothing written for devices named only in hostile requests, and the fields a
//! request tried to assign were ignored.
//!
//! Requests go over a plain TCP socket (HTTP/1.1), so the test controls every byte: raw `..` path
//! segments (an HTTP client library would normalise them), bytes that are not UTF-8 in headers and
//! bodies, duplicate headers. They reach the function through the local API Gateway
//! (`local-api-gateway`), as deployed: bytes that are not UTF-8 arrive decoded lossily (U+FFFD), and
//! every case gets the function's own answer, no known defect tolerated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use claim_tests::{
    e2e::{Stack, DEMO_VENDOR},
    mqtt::Observer,
};
use serde_json::{json, Value};

const OPERATOR: &str = "arn:aws:iam::111122223333:user/ops";

/// What an answer must be.
#[derive(Debug, Clone)]
enum Want {
    /// An error with this status and code.
    Error(u16, &'static str),
    /// `405 method_not_allowed` with an `Allow` header naming these methods.
    NotAllowed(&'static [&'static str]),
    /// `415` in the error shape, whatever its code.
    Unsupported,
    /// One of these (the answer depends on the stack's configuration, or both are right).
    OneOf(Vec<Want>),
    /// A success with this status.
    Success(u16),
}

fn error(status: u16, code: &'static str) -> Want {
    Want::Error(status, code)
}

#[derive(Debug, Clone)]
enum Who {
    /// A user of this case alone (so failed claims never add up to a rate limit).
    User,
    /// A named user.
    Named(String),
    Operator,
    Nobody,
    /// A raw identity header (name, value bytes).
    Header(&'static str, Vec<u8>),
}

#[derive(Debug, Clone)]
struct Hostile {
    name: String,
    method: &'static str,
    path: String,
    who: Who,
    headers: Vec<(String, Vec<u8>)>,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    want: Want,
}

fn case(name: impl Into<String>, method: &'static str, path: impl Into<String>, who: Who, want: Want) -> Hostile {
    Hostile {
        name: name.into(),
        method,
        path: path.into(),
        who,
        headers: Vec::new(),
        content_type: None,
        body: None,
        want,
    }
}

impl Hostile {
    fn json(self, body: &Value) -> Self {
        self.raw(body.to_string())
    }

    /// A body sent as `application/json`, whatever it is.
    fn raw(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = Some("application/json");
        self.body = Some(body.into());
        self
    }

    fn typed(mut self, content_type: Option<&'static str>) -> Self {
        self.content_type = content_type;
        self
    }

    fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// An HTTP answer as it came over the socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn brief(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(300).collect();
        format!("{} {body}", self.status)
    }
}

/// Where the API listens: `host:port` and the base path (the stage, `/api`).
fn api_address(api_url: &str) -> (String, String) {
    let rest = api_url.strip_prefix("http://").expect("CLAIM_API_URL is http://");
    let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
    (authority.to_owned(), format!("/{}", base.trim_end_matches('/')))
}

/// One request over a fresh connection, byte for byte as given.
fn send(authority: &str, base: &str, case: &Hostile, user: &str) -> Result<Reply, String> {
    let mut request = Vec::new();
    let path = format!("{base}{}", case.path);
    write!(
        request,
        "{} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n",
        case.method
    )
    .map_err(|e| e.to_string())?;
    let identity: Option<(&str, Vec<u8>)> = match &case.who {
        Who::User => Some(("x-local-user", user.as_bytes().to_vec())),
        Who::Named(name) => Some(("x-local-user", name.as_bytes().to_vec())),
        Who::Operator => Some(("x-local-operator", OPERATOR.as_bytes().to_vec())),
        Who::Nobody => None,
        Who::Header(name, value) => Some((name, value.clone())),
    };
    let mut header = |name: &str, value: &[u8]| {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    };
    if let Some((name, value)) = identity {
        header(name, &value);
    }
    if let Some(content_type) = case.content_type {
        header("content-type", content_type.as_bytes());
    }
    for (name, value) in &case.headers {
        header(name, value);
    }
    let body = case.body.clone().unwrap_or_default();
    if case.body.is_some() || matches!(case.method, "POST" | "PUT" | "PATCH") {
        header("content-length", body.len().to_string().as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&body);

    let mut stream = TcpStream::connect(authority).map_err(|e| format!("connect {authority}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    stream.write_all(&request).map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    // A server may close while the body is still being written (it answered early): keep what came.
    if let Err(err) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(format!("read: {err}"));
        }
    }
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, Vec<u8>)> = raw[..end]
        .split(|b| *b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|b| *b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase();
            let value = line[colon + 1..].trim_ascii().to_vec();
            Some((name, value))
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Reply { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or("chunk size line")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("chunk end")?;
    }
}

/// Whether `reply` is `want`; the reason if not.
fn answer_is(want: &Want, reply: &Reply) -> Result<(), String> {
    let body = reply.json();
    let code = body["error"]["code"].as_str().unwrap_or("");
    let allow = reply.header("allow").unwrap_or_default().to_ascii_uppercase();
    let ok = match want {
        Want::Error(status, expected) => reply.status == *status && code == *expected,
        Want::NotAllowed(methods) => {
            reply.status == 405
                && code == "method_not_allowed"
                && methods.iter().all(|m| allow.split(',').any(|a| a.trim() == *m))
        }
        Want::Unsupported => reply.status == 415 && body["error"]["code"].is_string(),
        Want::OneOf(wants) => wants.iter().any(|w| answer_is(w, reply).is_ok()),
        Want::Success(status) => reply.status == *status,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("wanted {want:?}, got {} (allow: {allow:?})", reply.brief()))
    }
}

/// What every answer of ours must be: below 500, `x-request-id`, and for an error the shape with
/// that id and a message that does not echo `marker`.
fn well_formed(reply: &Reply, marker: &str) -> Result<(), String> {
    if reply.status >= 500 {
        return Err(format!("a server error: {}", reply.brief()));
    }
    let request_id = reply
        .header("x-request-id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| format!("no x-request-id: {}", reply.brief()))?;
    if reply.status < 300 {
        return Ok(());
    }
    let body = reply.json();
    let error = &body["error"];
    let shaped = body.as_object().is_some_and(|o| o.len() == 1)
        && error.as_object().is_some_and(|o| o.len() == 3)
        && error["code"].as_str().is_some_and(|c| !c.is_empty())
        && error["message"].as_str().is_some_and(|m| !m.is_empty())
        && error["request_id"].as_str() == Some(request_id.as_str());
    if !shaped {
        return Err(format!(
            "not the error shape (x-request-id {request_id}): {}",
            reply.brief()
        ));
    }
    if reply.header("content-type").as_deref() != Some("application/json") {
        return Err(format!("content-type {:?}", reply.header("content-type")));
    }
    if error["message"].as_str().is_some_and(|m| m.contains(marker)) {
        return Err(format!("the message echoes the input: {}", reply.brief()));
    }
    if reply.status == 429
        && reply
            .header("retry-after")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            < 1
    {
        return Err(format!("429 without a Retry-After of at least 1: {}", reply.brief()));
    }
    Ok(())
}

/// Runs `case`: its answer must be the one wanted, and well formed.
async fn run(authority: &str, base: &str, case: &Hostile, user: &str, marker: &str) -> Result<(), String> {
    let (authority, base, sent, user) = (authority.to_owned(), base.to_owned(), case.clone(), user.to_owned());
    let reply = tokio::task::spawn_blocking(move || send(&authority, &base, &sent, &user))
        .await
        .map_err(|e| e.to_string())??;
    answer_is(&case.want, &reply)?;
    well_formed(&reply, marker)
}

/// The answers to a code with characters that are fine in a label code but not in a ThingName:
/// with label codes on (the local stack sets LABEL_CODE_KEY_SECRET) an unknown device, else a bad
/// code. Either way never a topic: topics are built only from a registry device's ThingName.
fn ascii_code_answer() -> Want {
    if std::env::var("LABEL_CODE_KEY_SECRET").is_ok_and(|name| !name.is_empty()) {
        error(404, "device_not_found")
    } else {
        error(400, "invalid_code")
    }
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_clean_4xx_answers_and_change_nothing() {
    let stack = Stack::connect().await;
    let (authority, base) = api_address(&stack.local.api_url);
    let observer = Observer::start(&stack.pki, stack.local.staging_port).await.unwrap();
    let token = uuid::Uuid::new_v4().simple().to_string();
    // A real device no hostile request may touch, and one a user claims with mass-assignment fields.
    let victim = stack.new_device(DEMO_VENDOR).await;
    let claimed = stack.new_device(DEMO_VENDOR).await;
    // Devices named only in hostile requests (never imported): nothing may be written for them.
    let ghost = format!("ghost-{token}");
    let admin_ghost = format!("ghost-admin-{token}");
    let someone_else = format!("someone-else-{token}");
    let cyrillic = format!("ghost-\u{0430}-{token}"); // 'а' U+0430, looks like 'a'
    let mass_user = format!("mass-{token}");
    let mass_import = format!("mass-import-{token}");
    // A real device whose ThingName has a ':' (allowed), for percent-encoded paths.
    let colon = format!("colon:{token}");
    let colon_import = stack
        .admin(
            "PUT",
            "/v1/admin/devices",
            OPERATOR,
            Some(json!({"devices": [{"thing_name": colon, "vendor": DEMO_VENDOR}]})),
        )
        .await;
    assert_eq!(
        colon_import.body["results"][0]["status"], "created",
        "{:?}",
        colon_import.body
    );

    let ascii = ascii_code_answer;
    let bad_request = || error(400, "invalid_request");
    let bad_code = || error(400, "invalid_code");
    let no_device = || error(404, "device_not_found");
    let claim = |name: &str, body: &Value, want: Want| case(name, "POST", "/v1/claims", Who::User, want).json(body);
    let admin =
        |name: &str, method: &'static str, path: String, want: Want| case(name, method, path, Who::Operator, want);
    let victim_path = format!("/v1/admin/devices/{victim}");
    let ghost_admin_path = format!("/v1/admin/devices/{admin_ghost}");

    let mut cases: Vec<Hostile> = vec![
        // ---- POST /v1/claims: codes that try to become topics or look like something else ----
        claim("NUL in the code", &json!({"code": format!("{ghost}\u{0}")}), bad_code()),
        claim("only NUL", &json!({"code": "\u{0}"}), bad_code()),
        claim("# wildcard", &json!({"code": format!("{ghost}#")}), ascii()),
        claim("+ wildcard", &json!({"code": format!("{ghost}/+/x")}), ascii()),
        claim("second topic level", &json!({"code": format!("{victim}/{ghost}")}), ascii()),
        claim("$aws system topic", &json!({"code": format!("$aws/things/{ghost}/shadow/update")}), ascii()),
        claim("Cyrillic lookalike", &json!({"code": cyrillic}), bad_code()),
        claim("zero-width space", &json!({"code": format!("{ghost}\u{200b}")}), bad_code()),
        claim("right-to-left override", &json!({"code": format!("\u{202e}{ghost}")}), bad_code()),
        claim("full-width letters", &json!({"code": format!("{ghost}\u{ff21}")}), bad_code()),
        claim("surrounding spaces", &json!({"code": format!(" {ghost} ")}), bad_code()),
        claim("newline", &json!({"code": format!("{ghost}\n")}), bad_code()),
        claim("empty code", &json!({"code": ""}), bad_code()),
        claim("129 characters", &json!({"code": format!("{ghost}{}", "x".repeat(129))}), bad_code()),
        // ---- bodies of the wrong size, depth or type ----
        claim("1 MB code", &json!({"code": "a".repeat(1024 * 1024)}), bad_request()),
        case("100k-deep nesting", "POST", "/v1/claims", Who::User, bad_request())
            .raw(format!("{{\"code\":{}}}", nested(100_000))),
        case("4000-deep nesting within 8 KiB", "POST", "/v1/claims", Who::User, bad_request())
            .raw(format!("{{\"code\":{}}}", nested(4000))),
        claim("code is a number", &json!({"code": 42}), bad_request()),
        claim("code is null", &json!({"code": null}), bad_request()),
        claim("code is a list", &json!({"code": [ghost]}), bad_request()),
        claim("code is an object", &json!({"code": {"code": ghost}}), bad_request()),
        claim("no code", &json!({"kode": ghost}), bad_request()),
        claim("a JSON list", &json!([ghost]), bad_request()),
        claim("a JSON string", &json!(ghost), bad_request()),
        case("not JSON", "POST", "/v1/claims", Who::User, bad_request()).raw(format!("code={ghost}")),
        case("truncated JSON", "POST", "/v1/claims", Who::User, bad_request()).raw(format!("{{\"code\":\"{ghost}")),
        case("empty body", "POST", "/v1/claims", Who::User, bad_request()).raw(""),
        case("no body at all", "POST", "/v1/claims", Who::User, Want::OneOf(vec![bad_request(), Want::Unsupported])),
        claim("region with capitals", &json!({"code": ghost, "region": "EU-WEST-1"}), bad_request()),
        claim("region traversal", &json!({"code": ghost, "region": "../../eu-west-1"}), bad_request()),
        claim("region with #", &json!({"code": ghost, "region": "eu-#"}), bad_request()),
        claim("region 33 long", &json!({"code": ghost, "region": "a".repeat(33)}), bad_request()),
        claim("region is a number", &json!({"code": ghost, "region": 1}), bad_request()),
        // ---- fields a client may not set: ignored; an unknown device stays unknown ----
        claim(
            "mass assignment on an unknown device",
            &json!({"code": ghost, "user": someone_else, "state": "provisioned", "thing_name": victim,
                    "claim_id": uuid::Uuid::new_v4().to_string(), "owner": someone_else}),
            no_device(),
        ),
        // formerly a defect: duplicate keys are accepted, the last one wins (here the unknown device).
        case("duplicate code keys", "POST", "/v1/claims", Who::User, bad_request())
            .raw(format!("{{\"code\":\"{victim}\",\"code\":\"{ghost}\"}}")),
        // ---- bytes and media types ----
        // Bytes that are not UTF-8 reach the function as U+FFFD (API Gateway handles the body as
        // text): a code that is no code, or JSON that is not JSON. Never a 5xx.
        case("body not UTF-8", "POST", "/v1/claims", Who::User, bad_code())
            .raw(b"{\"code\":\"\xff\xfe\"}".to_vec()),
        case("body not UTF-8 outside strings", "POST", "/v1/claims", Who::User, bad_request())
            .raw(b"{\"code\":\"x\"\xff}".to_vec()),
        case("untyped body not UTF-8", "POST", "/v1/claims", Who::User, bad_code())
            .raw(b"{\"code\":\"\xe9\"}".to_vec())
            .typed(None),
        case("octet-stream not UTF-8", "POST", "/v1/claims", Who::User, Want::OneOf(vec![bad_request(), Want::Unsupported]))
            .raw(b"{\xff}".to_vec())
            .typed(Some("application/octet-stream")),
        // formerly a defect: text/plain is parsed as JSON.
        case("text/plain body", "POST", "/v1/claims", Who::User, Want::Unsupported)
            .raw(json!({"code": ghost}).to_string())
            .typed(Some("text/plain")),
        case("form body", "POST", "/v1/claims", Who::User, Want::OneOf(vec![bad_request(), Want::Unsupported]))
            .raw(format!("code={ghost}"))
            .typed(Some("application/x-www-form-urlencoded")),
        // ---- Idempotency-Key ----
        claim("empty Idempotency-Key", &json!({"code": ghost}), bad_request()).header("Idempotency-Key", ""),
        claim("Idempotency-Key with a space", &json!({"code": ghost}), bad_request()).header("Idempotency-Key", "a b"),
        claim("Idempotency-Key with a tab", &json!({"code": ghost}), bad_request()).header("Idempotency-Key", "a\tb"),
        claim("256-character Idempotency-Key", &json!({"code": ghost}), bad_request())
            .header("Idempotency-Key", "k".repeat(256)),
        claim("8 KiB Idempotency-Key", &json!({"code": ghost}), bad_request()).header("Idempotency-Key", "k".repeat(8192)),
        claim("Idempotency-Key not UTF-8", &json!({"code": ghost}), bad_request())
            .header("Idempotency-Key", b"key-\xe9".to_vec()),
        claim("Idempotency-Key in UTF-8, not ASCII", &json!({"code": ghost}), bad_request())
            .header("Idempotency-Key", "key-\u{e9}".as_bytes().to_vec()),
        claim("255-character Idempotency-Key is fine", &json!({"code": ghost}), no_device())
            .header("Idempotency-Key", "k".repeat(255)),
        // ---- huge and many headers ----
        claim("8 KiB unknown header", &json!({"code": ghost}), no_device()).header("x-hostile", "h".repeat(8192)),
        (0..60).fold(claim("60 extra headers", &json!({"code": ghost}), no_device()), |case, i| {
            case.header(format!("x-hostile-{i}"), "h")
        }),
        claim("method override header is ignored", &json!({"code": ghost}), no_device())
            .header("x-http-method-override", "DELETE"),
        // ---- identities ----
        case("no user", "POST", "/v1/claims", Who::Nobody, error(401, "unauthorized")).json(&json!({"code": ghost})),
        case("empty user", "GET", "/v1/devices", Who::Header("x-local-user", Vec::new()), error(401, "unauthorized")),
        case("user with a space", "GET", "/v1/devices", Who::Header("x-local-user", b"a b".to_vec()), error(401, "unauthorized")),
        case("129-character user", "GET", "/v1/devices", Who::Header("x-local-user", vec![b'u'; 129]), error(401, "unauthorized")),
        case("user not UTF-8", "GET", "/v1/devices", Who::Header("x-local-user", b"caf\xe9".to_vec()), error(401, "unauthorized")),
        case("user in UTF-8, not ASCII", "GET", "/v1/devices", Who::Header("x-local-user", "caf\u{e9}".as_bytes().to_vec()), error(401, "unauthorized")),
        case("operator not UTF-8", "GET", victim_path.clone(), Who::Header("x-local-operator", b"arn:aws:iam::1:user/\xe9".to_vec()), error(403, "forbidden")),
        case("an operator is no user", "GET", "/v1/devices", Who::Operator, error(401, "unauthorized")),
        case("a user is no operator", "GET", victim_path.clone(), Who::User, error(403, "forbidden")),
        case("operator header with a tab", "GET", victim_path.clone(), Who::Header("x-local-operator", b"arn:aws:iam::1:user/a\tb".to_vec()), error(403, "forbidden")),
        case("513-character operator", "GET", victim_path.clone(), Who::Header("x-local-operator", vec![b'o'; 513]), error(403, "forbidden")),
        case("empty operator", "GET", victim_path.clone(), Who::Header("x-local-operator", Vec::new()), error(403, "forbidden")),
        // ---- paths: traversal, ids that are not ids ----
        // `..` segments are resolved before routing (lambda_http parses the event's path as a URL,
        // RFC 3986): this is the admin route, which refuses a user.
        case("raw .. to an admin route", "POST", format!("/v1/devices/../admin/devices/{victim}/disable"), Who::User, error(403, "forbidden")),
        case("raw .. above v1", "GET", format!("/v1/../../v1/devices/{victim}"), Who::User, no_device()),
        case("second v1 segment", "GET", format!("/v1/claims/v1/admin/devices/{victim}"), Who::User, error(404, "not_found")),
        case("prefix before v1 is ignored, not trusted", "GET", format!("/x/v1/admin/devices/{victim}"), Who::User, error(403, "forbidden")),
        case("encoded traversal in a claim id", "GET", "/v1/claims/..%2F..%2Fadmin%2Fdevices", Who::User, error(404, "claim_not_found")),
        case("uppercase claim id", "GET", format!("/v1/claims/{}", uuid::Uuid::new_v4().to_string().to_uppercase()), Who::User, error(404, "claim_not_found")),
        case("NUL in a claim id", "GET", "/v1/claims/%00", Who::User, error(404, "claim_not_found")),
        case("retry of a traversal", "POST", "/v1/claims/..%2F..%2F/retry", Who::User, error(404, "claim_not_found")),
        case("encoded traversal in a device", "GET", format!("/v1/devices/..%2F{victim}"), Who::User, no_device()),
        case("another user's device", "GET", format!("/v1/devices/{victim}"), Who::User, no_device()),
        case("releasing another user's device", "DELETE", format!("/v1/devices/{victim}"), Who::User, no_device()),
        case("releasing a # device", "DELETE", "/v1/devices/%23", Who::User, no_device()),
        case("releasing a Cyrillic lookalike", "DELETE", format!("/v1/devices/ghost-%D0%B0-{token}"), Who::User, no_device()),
        // ---- GET /v1/devices tokens ----
        case("traversal next_token", "GET", "/v1/devices?next_token=..%2F..%2Fx", Who::User, bad_request()),
        case("NUL next_token", "GET", "/v1/devices?next_token=%00", Who::User, bad_request()),
        case(
            "next_token of another user's partition",
            "GET",
            format!(
                "/v1/devices?next_token={}",
                URL_SAFE_NO_PAD.encode(
                    json!({"gsi1pk": format!("USER#{someone_else}"), "gsi1sk": format!("DEVICE#{victim}"),
                           "pk": format!("DEVICE#{victim}"), "sk": "#DEVICE"})
                    .to_string()
                )
            ),
            Who::User,
            bad_request(),
        ),
        // ---- wrong methods ----
        // formerly a defect (all four): 405 without an Allow header.
        case("PATCH /v1/claims", "PATCH", "/v1/claims", Who::User, Want::NotAllowed(&["POST"])),
        case("PUT a device", "PUT", format!("/v1/devices/{victim}"), Who::User, Want::NotAllowed(&["GET", "DELETE"])),
        admin("DELETE an admin device", "DELETE", victim_path.clone(), Want::NotAllowed(&["GET"])),
        admin("GET the import", "GET", "/v1/admin/devices".into(), Want::NotAllowed(&["PUT"])),
        // ---- admin: paths ----
        admin("admin # device", "GET", "/v1/admin/devices/%23".into(), bad_code()),
        admin("admin + device", "GET", "/v1/admin/devices/%2B".into(), bad_code()),
        admin("admin $aws device", "GET", "/v1/admin/devices/$aws".into(), bad_code()),
        admin("admin NUL device", "GET", format!("/v1/admin/devices/{victim}%00"), bad_code()),
        admin("admin encoded / in a device", "GET", format!("/v1/admin/devices/{victim}%2Frelease"), bad_code()),
        admin("admin encoded traversal", "POST", format!("/v1/admin/devices/..%2F{victim}/disable"), bad_code()),
        admin("admin Cyrillic lookalike", "GET", format!("/v1/admin/devices/ghost-%D0%B0-{token}"), bad_code()),
        admin("admin 65-character device", "GET", format!("/v1/admin/devices/{}", "d".repeat(65)), bad_code()),
        // Path segments are percent-decoded: what a generated client sends for ':'.
        admin("admin %3A for : in a ThingName", "GET", format!("/v1/admin/devices/colon%3A{token}"), Want::Success(200)),
        admin("admin ?user= empty", "GET", format!("{victim_path}?user="), bad_request()),
        admin("admin ?user= NUL", "GET", format!("{victim_path}?user=a%00b"), bad_request()),
        admin("admin ?user= with a space", "GET", format!("{victim_path}?user=a%20b"), bad_request()),
        admin("admin ?user= 129 long", "GET", format!("{victim_path}?user={}", "u".repeat(129)), bad_request()),
        // ---- admin: release and disable bodies (on the victim: nothing may change) ----
        admin("release without a reason", "POST", format!("{victim_path}/release"), bad_request()).json(&json!({})),
        admin("release with an empty body", "POST", format!("{victim_path}/release"), bad_request()).raw(""),
        admin("release reason with NUL", "POST", format!("{victim_path}/release"), bad_request())
            .json(&json!({"reason": "resale\u{0}"})),
        admin("release reason with a newline", "POST", format!("{victim_path}/release"), bad_request())
            .json(&json!({"reason": "forged\nhistory line"})),
        admin("release reason with C1 control", "POST", format!("{victim_path}/release"), bad_request())
            .json(&json!({"reason": "x\u{85}y"})),
        admin("release reason 501 long", "POST", format!("{victim_path}/release"), bad_request())
            .json(&json!({"reason": "r".repeat(501)})),
        admin("release reason is a list", "POST", format!("{victim_path}/release"), bad_request())
            .json(&json!({"reason": ["resale"]})),
        admin("release body is a list", "POST", format!("{victim_path}/release"), bad_request()).json(&json!(["resale"])),
        admin("disable reason with NUL", "POST", format!("{victim_path}/disable"), bad_request())
            .json(&json!({"reason": "\u{0}"})),
        admin("disable body is a string", "POST", format!("{victim_path}/disable"), bad_request()).json(&json!("stop")),
        admin("enable body is not JSON", "POST", format!("{victim_path}/enable"), bad_request()).raw("reason=x"),
        admin("disable 1 MB body", "POST", format!("{victim_path}/disable"), bad_request())
            .json(&json!({"reason": "r".repeat(1024 * 1024)})),
        admin("disable 30000-deep nesting", "POST", format!("{victim_path}/disable"), bad_request())
            .raw(format!("{{\"reason\":{}}}", nested(30_000))),
        // formerly a defect: duplicate keys are accepted, the last one wins.
        admin("release with duplicate reasons", "POST", format!("{ghost_admin_path}/release"), bad_request())
            .raw("{\"reason\":\"a\",\"reason\":\"b\"}"),
        // formerly a defect: text/plain is parsed as JSON.
        admin("release as text/plain", "POST", format!("{ghost_admin_path}/release"), Want::Unsupported)
            .raw(json!({"reason": "x"}).to_string())
            .typed(Some("text/plain")),
        // A reason of U+FFFD is a reason: the unknown device's answer, nothing written.
        admin("release body not UTF-8", "POST", format!("{ghost_admin_path}/release"), no_device())
            .raw(b"{\"reason\":\"\xff\"}".to_vec()),
        admin("disable body not UTF-8 outside strings", "POST", format!("{victim_path}/disable"), bad_request())
            .raw(b"{\"reason\":\"x\"\xff}".to_vec()),
        // ---- admin: imports that are not imports ----
        admin("import a list", "PUT", "/v1/admin/devices".into(), bad_request()).json(&json!([{"thing_name": ghost}])),
        admin("import devices is a string", "PUT", "/v1/admin/devices".into(), bad_request()).json(&json!({"devices": "all"})),
        admin("import without devices", "PUT", "/v1/admin/devices".into(), bad_request()).json(&json!({"device": []})),
        admin("import 101 devices", "PUT", "/v1/admin/devices".into(), bad_request()).json(&json!({
            "devices": (0..101).map(|i| json!({"thing_name": format!("{ghost}-{i}"), "vendor": DEMO_VENDOR})).collect::<Vec<_>>()
        })),
        admin("import 1 MB", "PUT", "/v1/admin/devices".into(), bad_request())
            .json(&json!({"devices": [{"thing_name": ghost, "vendor": DEMO_VENDOR, "sku": "s".repeat(1024 * 1024)}]})),
        admin("import 30000-deep nesting", "PUT", "/v1/admin/devices".into(), bad_request())
            .raw(format!("{{\"devices\":[{}]}}", nested(30_000))),
        // formerly a defect: duplicate keys are accepted, the last one wins (an empty import).
        admin("import with duplicate devices keys", "PUT", "/v1/admin/devices".into(), bad_request())
            .raw(format!("{{\"devices\":[{{\"thing_name\":\"{ghost}\",\"vendor\":\"{DEMO_VENDOR}\"}}],\"devices\":[]}}")),
        // formerly a defect: text/plain is parsed as JSON (the row is rejected either way).
        admin("import as text/plain", "PUT", "/v1/admin/devices".into(), Want::Unsupported)
            .raw(json!({"devices": [{"thing_name": format!("{ghost}/x"), "vendor": DEMO_VENDOR}]}).to_string())
            .typed(Some("text/plain")),
    ];
    // Every route as the wrong kind of caller.
    for (method, path) in [
        ("POST", "/v1/claims".to_owned()),
        ("GET", format!("/v1/claims/{}", uuid::Uuid::new_v4())),
        ("POST", format!("/v1/claims/{}/retry", uuid::Uuid::new_v4())),
        ("GET", "/v1/devices".to_owned()),
        ("GET", format!("/v1/devices/{victim}")),
        ("DELETE", format!("/v1/devices/{victim}")),
    ] {
        cases.push(
            case(
                format!("{method} {path} as an operator"),
                method,
                path,
                Who::Operator,
                error(401, "unauthorized"),
            )
            .json(&json!({"code": ghost})),
        );
    }
    for (method, path) in [
        ("PUT", "/v1/admin/devices".to_owned()),
        ("GET", victim_path.clone()),
        ("POST", format!("{victim_path}/release")),
        ("POST", format!("{victim_path}/disable")),
        ("POST", format!("{victim_path}/enable")),
    ] {
        cases.push(
            case(
                format!("{method} {path} as a user"),
                method,
                path.clone(),
                Who::User,
                error(403, "forbidden"),
            )
            .json(&json!({"devices": [{"thing_name": ghost, "vendor": DEMO_VENDOR}], "reason": "hostile"})),
        );
        cases.push(case(
            format!("{method} {path} as nobody"),
            method,
            path,
            Who::Nobody,
            error(403, "forbidden"),
        ));
    }

    let mut failures = Vec::new();
    for (i, hostile) in cases.iter().enumerate() {
        let user = format!("hostile-{token}-{i}");
        if let Err(why) = run(&authority, &base, hostile, &user, &token).await {
            failures.push(format!("{}: {why}", hostile.name));
        }
    }

    // A rate-limited user must get 429 for everything but a repeat of a success, so a malformed code
    // cannot tell a guess apart either.
    let limited = format!("limited-{token}");
    let mut limited_now = false;
    for i in 0..60 {
        let guess = case("guess", "POST", "/v1/claims", Who::Named(limited.clone()), no_device())
            .json(&json!({"code": format!("{ghost}-guess-{i}")}));
        let reply = tokio::task::spawn_blocking({
            let (authority, base) = (authority.clone(), base.clone());
            move || send(&authority, &base, &guess, "")
        })
        .await
        .unwrap()
        .unwrap();
        if reply.status == 429 {
            limited_now = true;
            break;
        }
        assert_eq!(reply.status, 404, "guess {i}: {}", reply.brief());
    }
    assert!(limited_now, "60 failed claims did not rate-limit {limited}");
    let after_limit = [
        // formerly a defect: a rate-limited user gets 400 for a malformed code.
        case(
            "rate-limited, malformed code",
            "POST",
            "/v1/claims",
            Who::Named(limited.clone()),
            error(429, "rate_limited"),
        )
        .json(&json!({"code": format!("{ghost} x")})),
        case(
            "rate-limited, unknown code",
            "POST",
            "/v1/claims",
            Who::Named(limited.clone()),
            error(429, "rate_limited"),
        )
        .json(&json!({"code": format!("{ghost}-after")})),
    ];
    for hostile in &after_limit {
        if let Err(why) = run(&authority, &base, hostile, &limited, &token).await {
            failures.push(format!("{}: {why}", hostile.name));
        }
    }

    // Mass assignment on a real claim: the caller gets their own claim with the stack's endpoint;
    // nothing the body says about users, states, ids, deadlines or endpoints is taken.
    let mass = case(
        "mass assignment on a real device",
        "POST",
        "/v1/claims",
        Who::Named(mass_user.clone()),
        Want::Success(202),
    )
    .json(
        &json!({"code": claimed, "user": someone_else, "owner": someone_else, "state": "provisioned",
                      "thing_name": victim, "claim_id": "00000000-0000-0000-0000-000000000000",
                      "target_endpoint": "evil.example.com", "expires_at": "2099-01-01T00:00:00Z",
                      "history": [{"state": "provisioned", "at": "2020-01-01T00:00:00Z"}]}),
    );
    let reply = tokio::task::spawn_blocking({
        let (authority, base) = (authority.clone(), base.clone());
        move || send(&authority, &base, &mass, "")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply.status, 202, "{}", reply.brief());
    let created = reply.json();
    assert_eq!(created["thing_name"], claimed.as_str());
    assert_ne!(created["claim_id"], "00000000-0000-0000-0000-000000000000");
    assert!(
        matches!(created["state"].as_str(), Some("pending" | "endpoint_published")),
        "{created}"
    );
    assert_eq!(created["target_endpoint"], stack.local.oem_endpoint.as_str());
    assert_ne!(created["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(
        reply.header("location"),
        created["claim_id"].as_str().map(|id| format!("/v1/claims/{id}"))
    );
    // An import row with fields an import may not set: created free, enabled, without a code.
    let imported = stack
        .admin(
            "PUT",
            "/v1/admin/devices",
            OPERATOR,
            Some(json!({"devices": [{"thing_name": mass_import, "vendor": DEMO_VENDOR, "owner": someone_else,
                                      "reserved_by": someone_else, "disabled": true, "holder": {"Owned": {"user": someone_else}},
                                      "code_hash": "0".repeat(64), "history": [], "version": 99}]})),
        )
        .await;
    assert_eq!(imported.body["results"][0]["status"], "created", "{:?}", imported.body);
    let inspected = stack
        .admin("GET", &format!("/v1/admin/devices/{mass_import}"), OPERATOR, None)
        .await
        .body;
    assert_eq!(
        (
            &inspected["owner"],
            &inspected["reserved_by"],
            &inspected["disabled"],
            &inspected["has_label_code"]
        ),
        (&Value::Null, &Value::Null, &json!(false), &json!(false)),
        "{inspected}"
    );
    assert_eq!(inspected["history"].as_array().map(Vec::len), Some(1), "{inspected}");

    // Nothing written: the victim is as imported, the devices named only in hostile requests do not
    // exist, and the user named in bodies holds nothing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let victim_now = stack.admin("GET", &victim_path, OPERATOR, None).await.body;
    assert_eq!(
        (
            &victim_now["owner"],
            &victim_now["reserved_by"],
            &victim_now["claim"],
            &victim_now["disabled"]
        ),
        (&Value::Null, &Value::Null, &Value::Null, &json!(false)),
        "{victim_now}"
    );
    let events: Vec<&str> = victim_now["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(events, ["imported"], "the victim's history");
    for never in [&ghost, &admin_ghost, &format!("{ghost}-0"), &format!("{ghost}-guess-0")] {
        let seen = stack
            .admin("GET", &format!("/v1/admin/devices/{never}"), OPERATOR, None)
            .await
            .body;
        assert_eq!(
            (&seen["imported"], &seen["history"], &seen["claim"]),
            (&json!(false), &json!([]), &Value::Null),
            "{never}: {seen}"
        );
    }
    let theirs = stack.call("GET", "/v1/devices", &someone_else, None).await;
    assert_eq!(
        theirs.body["devices"],
        json!([]),
        "the user named in hostile bodies holds nothing"
    );
    let claimed_now = stack
        .admin("GET", &format!("/v1/admin/devices/{claimed}"), OPERATOR, None)
        .await
        .body;
    assert_eq!(claimed_now["reserved_by"], mass_user.as_str(), "{claimed_now}");
    assert_eq!(claimed_now["claim"]["user"], mass_user.as_str(), "{claimed_now}");

    // The staging broker: nothing for any device involved, except the one real claim's message,
    // which carries the stack's endpoint.
    let messages = observer.messages.lock().unwrap().clone();
    let stray: Vec<_> = messages
        .iter()
        .filter(|(topic, _)| topic.contains(&token) || topic.contains(&victim) || topic.starts_with('$'))
        .collect();
    assert!(stray.is_empty(), "published for hostile requests: {stray:?}");
    let real: Vec<_> = messages
        .iter()
        .filter(|(topic, _)| topic.starts_with(&claimed))
        .collect();
    assert_eq!(
        real,
        [&(
            format!("{claimed}/expresslink_config"),
            format!("{{\"Endpoint\":\"{}\"}}", stack.local.oem_endpoint).into_bytes()
        )],
        "the legitimate claim's one message"
    );

    assert!(
        failures.is_empty(),
        "{} of {} hostile requests were answered wrongly:\n  {}",
        failures.len(),
        cases.len() + after_limit.len(),
        failures.join("\n  ")
    );
}
