//! Reading what a request carries: JSON bodies, the `Idempotency-Key` header, path parameters and
//! query parameters. Errors name the problem (serde names the field and the expected type) but never
//! echo the input: a claim's body carries a label code.

use claim_shared::domain::{
    ids::{IdempotencyKey, ThingName, UserId},
    label_code::LabelCodeKey,
    registry::NewDevice,
};
use lambda_http::{http::header, Request, RequestExt};
use serde::Deserialize;
use serde_json::Value;

use crate::errors::ApiError;

/// Largest request body accepted on user routes. A claim request is a label code and a region
/// hint; anything near this size is not one.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// Largest admin request body: 100 device records fit easily.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

/// Devices per import request.
pub const MAX_IMPORT_DEVICES: usize = 100;

#[derive(Debug, Deserialize)]
pub struct ClaimBody {
    pub code: String,
    /// Region hint for endpoint selection (rules with a `region`).
    #[serde(default)]
    pub region: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ImportBody {
    pub devices: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ReasonBody {
    #[serde(default)]
    pub reason: Option<String>,
}

/// A JSON object body of at most `max_bytes`, as `T`.
pub fn parse_json_object<T: serde::de::DeserializeOwned>(
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
    // A duplicate key anywhere is refused: read one way here, another way by whoever else reads it.
    let value = claim_shared::json::from_slice_strict(text.as_bytes()).map_err(explain)?;
    // Derived structs also accept a JSON array in field order; only an object is a request.
    if !value.is_object() {
        return Err(ApiError::invalid_request("The request body must be a JSON object."));
    }
    serde_json::from_value(value).map_err(explain)
}

/// The request's body, which must be JSON: a body sent as anything but `application/json`
/// (parameters such as `charset` allowed) is `415`; one sent without a content type is read as JSON.
fn json_body(request: &Request) -> Result<&[u8], ApiError> {
    let bytes = request.body().as_ref();
    let Some(content_type) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(bytes);
    };
    let essence = content_type
        .to_str()
        .ok()
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase());
    if bytes.is_empty() || essence.as_deref() == Some("application/json") {
        Ok(bytes)
    } else {
        Err(ApiError::unsupported_media_type())
    }
}

/// `POST /v1/claims`: `{"code", "region"?}`; the region hint must look like an AWS region.
pub fn claim_body(request: &Request) -> Result<ClaimBody, ApiError> {
    parse_claim_body(json_body(request)?)
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

/// The optional `Idempotency-Key` header.
pub fn idempotency_key(request: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    match request.headers().get("idempotency-key") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|raw| IdempotencyKey::parse(raw).ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid_request("Idempotency-Key must be 1 to 255 printable ASCII characters.")),
    }
}

/// A query string parameter, if present and not empty.
pub fn query<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .query_string_parameters_ref()
        .and_then(|params| params.first(name))
        .filter(|value| !value.is_empty())
}

/// `?user=` of an admin inspection: the user in the support ticket.
pub fn inspected_user(request: &Request) -> Result<Option<UserId>, ApiError> {
    match request.query_string_parameters_ref().and_then(|p| p.first("user")) {
        None => Ok(None),
        Some(raw) => UserId::parse(raw)
            .map(Some)
            .map_err(|_| ApiError::invalid_request("user must be 1 to 128 printable ASCII characters.")),
    }
}

/// A ThingName in an admin path: a bad one is the operator's typo, so it is named (`400`).
pub fn admin_thing(raw: &str) -> Result<ThingName, ApiError> {
    ThingName::parse(raw).map_err(|err| ApiError::invalid_code(err.to_string()))
}

/// The body of a force release: a reason is required.
pub fn release_reason(request: &Request) -> Result<String, ApiError> {
    let body: ReasonBody = parse_json_object(
        json_body(request)?,
        MAX_ADMIN_BODY_BYTES,
        "a release request with a \"reason\"",
    )?;
    checked_reason(body.reason)?
        .ok_or_else(|| ApiError::invalid_request("A force release needs a \"reason\" for the history."))
}

/// The body of disable or enable: empty, or an object with an optional reason.
pub fn optional_reason(request: &Request) -> Result<Option<String>, ApiError> {
    let bytes = request.body().as_ref();
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        ReasonBody::default()
    } else {
        parse_json_object(
            json_body(request)?,
            MAX_ADMIN_BODY_BYTES,
            "a JSON object with an optional \"reason\"",
        )?
    };
    checked_reason(body.reason)
}

/// An operator's free-text reason: 1–500 characters, no control characters.
fn checked_reason(reason: Option<String>) -> Result<Option<String>, ApiError> {
    match reason {
        None => Ok(None),
        Some(reason) if (1..=500).contains(&reason.chars().count()) && !reason.chars().any(char::is_control) => {
            Ok(Some(reason))
        }
        Some(_) => Err(ApiError::invalid_request(
            "reason must be 1 to 500 characters without control characters.",
        )),
    }
}

/// The body of an import: at most [`MAX_IMPORT_DEVICES`] items, each checked on its own.
pub fn import_body(request: &Request) -> Result<ImportBody, ApiError> {
    let body: ImportBody = parse_json_object(
        json_body(request)?,
        MAX_ADMIN_BODY_BYTES,
        "an import request with \"devices\"",
    )?;
    if body.devices.len() > MAX_IMPORT_DEVICES {
        return Err(ApiError::invalid_request(format!(
            "At most {MAX_IMPORT_DEVICES} devices per request; split the import."
        )));
    }
    Ok(body)
}

/// One item of an import request; the reason names the field. A `code` is hashed with the label
/// code key at once; neither it nor its hash goes anywhere else.
pub fn import_item(item: &Value, key: Option<&LabelCodeKey>) -> Result<NewDevice, String> {
    let text = |field: &str| -> Result<Option<&str>, String> {
        match item.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(format!("{field}: must be a string")),
        }
    };
    if !item.is_object() {
        return Err("each device must be a JSON object".into());
    }
    let allow_thing_name = match item.get("allow_thing_name") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(allowed)) => Some(*allowed),
        Some(_) => return Err("allow_thing_name: must be true or false".into()),
    };
    NewDevice::parse(
        text("thing_name")?.unwrap_or_default(),
        text("vendor")?.unwrap_or_default(),
        text("sku")?,
    )?
    .with_label_code(text("code")?, allow_thing_name, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn import_items_are_checked_field_by_field() {
        let ok = json!({"thing_name": "dev-1", "vendor": "acme", "sku": "S1"});
        assert_eq!(import_item(&ok, None).map(|d| d.sku), Ok(Some("S1".into())));
        let key = LabelCodeKey::new(&[9; 32]).unwrap();
        let coded = json!({"thing_name": "dev-1", "vendor": "acme", "code": "LBL 1/x", "allow_thing_name": true});
        let reason = import_item(&coded, Some(&key)).unwrap_err();
        assert!(reason.starts_with("code:") && !reason.contains("LBL"), "{reason}");
        let coded = json!({"thing_name": "dev-1", "vendor": "acme", "code": "LBL-1/x", "allow_thing_name": true});
        let device = import_item(&coded, Some(&key)).unwrap();
        assert!(device.code_hash.is_some());
        assert_eq!(device.allow_thing_name, Some(true));
        for (item, field) in [
            (json!({"thing_name": 5, "vendor": "acme"}), "thing_name"),
            (json!({"thing_name": "a/b", "vendor": "acme"}), "thing_name"),
            (json!({"thing_name": "dev-1"}), "vendor"),
            (
                json!({"thing_name": "dev-1", "vendor": "acme", "code": "LBL-1"}),
                "code",
            ),
            (
                json!({"thing_name": "dev-1", "vendor": "acme", "allow_thing_name": "yes"}),
                "allow_thing_name",
            ),
            (json!("dev-1"), "each device"),
        ] {
            let reason = import_item(&item, None).unwrap_err();
            assert!(reason.starts_with(field), "{item}: {reason}");
        }
    }

    #[test]
    fn reasons_are_bounded_text() {
        assert_eq!(checked_reason(None), Ok(None));
        assert_eq!(checked_reason(Some("resale".into())), Ok(Some("resale".into())));
        assert!(checked_reason(Some(String::new())).is_err());
        assert!(checked_reason(Some("x".repeat(501))).is_err());
        assert!(checked_reason(Some("a\nb".into())).is_err());
    }

    proptest::proptest! {
        /// Any body: a claim request, or a 400 in the error shape that quotes nothing of it.
        #[test]
        fn any_claim_body_is_read_or_refused_with_400(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Err(err) = parse_claim_body(&bytes) {
                proptest::prop_assert_eq!(err.status, lambda_http::http::StatusCode::BAD_REQUEST);
            }
        }

        #[test]
        fn claim_bodies_never_quote_their_values(marker in "[A-Z]{12}", shape in 0usize..6) {
            let body = match shape {
                0 => json!({"code": [marker.clone()]}),
                1 => json!({"code": {"x": marker.clone()}}),
                2 => json!({"code": "ok", "region": marker.clone()}),
                3 => json!({"kode": marker.clone()}),
                4 => json!([marker.clone()]),
                _ => json!({"code": marker.clone(), "code": marker.clone()}),
            };
            let text = format!("{body}").replace('}', &format!(", \"{marker}\": 1}}"));
            if let Err(err) = parse_claim_body(text.as_bytes()) {
                proptest::prop_assert!(!err.message.contains(&marker), "{}", err.message);
            }
        }

        /// Any import item: a device record, or a reason naming a field, never the code.
        #[test]
        fn any_import_item_is_read_or_refused_by_field(
            thing in proptest::option::of("\\PC{0,70}"),
            code in proptest::option::of("\\PC{6,40}"),
            number in proptest::prelude::any::<i64>(),
        ) {
            let key = LabelCodeKey::new(&[9; 32]).unwrap();
            let item = json!({"thing_name": thing, "vendor": "acme", "code": code.clone(), "sku": number});
            if let Err(reason) = import_item(&item, Some(&key)) {
                proptest::prop_assert!(reason.split(':').next().is_some_and(|f| !f.is_empty()));
                if let Some(code) = code {
                    proptest::prop_assert!(!reason.contains(&code), "{}", reason);
                }
            }
        }
    }
}
