//! The admin routes of `spec/api.md`, for OEM operations teams: import device records, inspect a
//! device ("why can't I claim my product?"), force-release it, disable or enable it. API Gateway
//! authorizes them with IAM; the caller's IAM principal ARN is the operator recorded in the device
//! history. A request without an operator identity is refused (`403 forbidden`).

use claim_shared::{
    domain::{
        attempts::retry_after_seconds,
        claim::Claim,
        device::Holder,
        history::{Actor, HistoryEntry},
        ids::{ThingName, UserId},
        label_code::LabelCodeKey,
    },
    ports::OwnershipStore,
    service::{admin::Inspection, Clock, DeviceOpError, ImportOutcome, NewDevice},
};
use lambda_http::{
    http::{Method, StatusCode},
    Request, RequestExt,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{claim_view, parse_json_object, timestamp, Answer, Api, ApiError};

/// The admin routes, as `METHOD /path/{param}`.
pub const ADMIN_ROUTES: [&str; 5] = [
    "PUT /v1/admin/devices",
    "GET /v1/admin/devices/{thing_name}",
    "POST /v1/admin/devices/{thing_name}/release",
    "POST /v1/admin/devices/{thing_name}/disable",
    "POST /v1/admin/devices/{thing_name}/enable",
];

/// Devices per import request.
pub const MAX_IMPORT_DEVICES: usize = 100;

/// Largest admin request body: 100 device records fit easily.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AdminRoute {
    Import,
    Inspect(String),
    Release(String),
    Disable(String),
    Enable(String),
}

impl AdminRoute {
    pub(crate) fn template(&self) -> &'static str {
        match self {
            AdminRoute::Import => ADMIN_ROUTES[0],
            AdminRoute::Inspect(_) => ADMIN_ROUTES[1],
            AdminRoute::Release(_) => ADMIN_ROUTES[2],
            AdminRoute::Disable(_) => ADMIN_ROUTES[3],
            AdminRoute::Enable(_) => ADMIN_ROUTES[4],
        }
    }

    /// `rest`: the path after `/v1/admin`. `None`: not an admin path.
    pub(crate) fn parse(method: &Method, rest: &[&str]) -> Option<Result<Self, ApiError>> {
        let route = match (method, rest) {
            (&Method::PUT, ["devices"]) => AdminRoute::Import,
            (&Method::GET, ["devices", thing]) => AdminRoute::Inspect((*thing).to_owned()),
            (&Method::POST, ["devices", thing, "release"]) => AdminRoute::Release((*thing).to_owned()),
            (&Method::POST, ["devices", thing, "disable"]) => AdminRoute::Disable((*thing).to_owned()),
            (&Method::POST, ["devices", thing, "enable"]) => AdminRoute::Enable((*thing).to_owned()),
            (_, ["devices"] | ["devices", _] | ["devices", _, "release" | "disable" | "enable"]) => {
                return Some(Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "This method is not allowed on this resource.",
                )))
            }
            _ => return None,
        };
        Some(Ok(route))
    }
}

#[derive(Debug, Deserialize)]
struct ImportBody {
    devices: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

impl<S: OwnershipStore, C: Clock> Api<S, C> {
    pub(crate) async fn admin(&self, route: AdminRoute, operator: &str, request: &Request) -> Result<Answer, ApiError> {
        let started = std::time::Instant::now();
        let action = route.template();
        let (thing, result) = match route {
            AdminRoute::Import => (None, self.import_devices(operator, request).await),
            AdminRoute::Inspect(raw) => (Some(raw.clone()), self.inspect_for_user(&raw, request).await),
            AdminRoute::Release(raw) => (Some(raw.clone()), self.force_release(operator, &raw, request).await),
            AdminRoute::Disable(raw) => (
                Some(raw.clone()),
                self.set_disabled(operator, &raw, true, request).await,
            ),
            AdminRoute::Enable(raw) => (
                Some(raw.clone()),
                self.set_disabled(operator, &raw, false, request).await,
            ),
        };
        tracing::info!(
            event = "admin_action",
            action,
            operator,
            outcome = match &result {
                Ok(_) => "done",
                Err(err) => err.code,
            },
            thing_name = thing
                .as_deref()
                .and_then(|raw| ThingName::parse(raw).ok())
                .map(|t| t.redacted()),
            latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        result
    }

    async fn import_devices(&self, operator: &str, request: &Request) -> Result<Answer, ApiError> {
        let body: ImportBody = parse_json_object(
            request.body().as_ref(),
            MAX_ADMIN_BODY_BYTES,
            "an import request with \"devices\"",
        )?;
        if body.devices.len() > MAX_IMPORT_DEVICES {
            return Err(ApiError::invalid_request(format!(
                "At most {MAX_IMPORT_DEVICES} devices per request; split the import."
            )));
        }
        let mut results = Vec::with_capacity(body.devices.len());
        for item in &body.devices {
            let thing_name = item.get("thing_name").cloned().unwrap_or(Value::Null);
            let outcome = match parse_import_item(item, self.service.label_code_key()) {
                Err(reason) => Err(reason),
                Ok(device) => match self.service.import(&device, Actor::Operator(operator.to_owned())).await {
                    Ok(outcome) => Ok(outcome),
                    // Already imported items stay imported; the whole request can be sent again.
                    Err(DeviceOpError::Store(err)) => return Err(ApiError::from_store(&err)),
                    Err(DeviceOpError::Busy | DeviceOpError::DeviceNotFound) => {
                        Err("the device changed meanwhile; send it again".to_owned())
                    }
                    // Never which device: that would tell the caller another device's code.
                    Err(err @ DeviceOpError::CodeInUse) => Err(err.to_string()),
                },
            };
            results.push(match outcome {
                Ok(ImportOutcome::Created) => json!({"thing_name": thing_name, "status": "created"}),
                Ok(ImportOutcome::Updated) => json!({"thing_name": thing_name, "status": "updated"}),
                Ok(ImportOutcome::Unchanged) => json!({"thing_name": thing_name, "status": "unchanged"}),
                Err(reason) => json!({"thing_name": thing_name, "status": "rejected", "reason": reason}),
            });
        }
        Ok((StatusCode::OK, Vec::new(), Some(json!({ "results": results }))))
    }

    /// `GET …/devices/{thing_name}[?user=<sub>]`: with a user (the one in the support ticket), the
    /// answer also says whether the failed-attempt limits hold them back on this device.
    async fn inspect_for_user(&self, raw: &str, request: &Request) -> Result<Answer, ApiError> {
        let params = request.query_string_parameters_ref();
        let user = match params.and_then(|p| p.first("user")) {
            Some(raw_user) => Some(
                UserId::parse(raw_user)
                    .map_err(|_| ApiError::invalid_request("user must be 1 to 128 printable ASCII characters."))?,
            ),
            None => None,
        };
        self.inspect_device(raw, user.as_ref()).await
    }

    async fn inspect_device(&self, raw: &str, user: Option<&UserId>) -> Result<Answer, ApiError> {
        let thing = parse_thing(raw)?;
        let inspection = self
            .service
            .inspect_for(&thing, user)
            .await
            .map_err(|err| ApiError::from_store(&err))?;
        Ok((StatusCode::OK, Vec::new(), Some(inspection_view(&inspection))))
    }

    async fn force_release(&self, operator: &str, raw: &str, request: &Request) -> Result<Answer, ApiError> {
        let thing = parse_thing(raw)?;
        let body: ReasonBody = parse_json_object(
            request.body().as_ref(),
            MAX_ADMIN_BODY_BYTES,
            "a release request with a \"reason\"",
        )?;
        let reason = checked_reason(body.reason)?
            .ok_or_else(|| ApiError::invalid_request("A force release needs a \"reason\" for the history."))?;
        self.service
            .force_release(&thing, operator, &reason)
            .await
            .map_err(device_op_error)?;
        self.inspect_device(raw, None).await
    }

    async fn set_disabled(
        &self,
        operator: &str,
        raw: &str,
        disabled: bool,
        request: &Request,
    ) -> Result<Answer, ApiError> {
        let thing = parse_thing(raw)?;
        let bytes = request.body().as_ref();
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            ReasonBody::default()
        } else {
            parse_json_object(bytes, MAX_ADMIN_BODY_BYTES, "a JSON object with an optional \"reason\"")?
        };
        let reason = checked_reason(body.reason)?;
        self.service
            .set_disabled(&thing, disabled, operator, reason)
            .await
            .map_err(device_op_error)?;
        self.inspect_device(raw, None).await
    }
}

fn parse_thing(raw: &str) -> Result<ThingName, ApiError> {
    ThingName::parse(raw).map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "invalid_code", err.to_string()))
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

fn device_op_error(err: DeviceOpError) -> ApiError {
    match err {
        DeviceOpError::DeviceNotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "device_not_found",
            "No device has this ThingName.",
        ),
        DeviceOpError::Busy => ApiError::unavailable(),
        DeviceOpError::CodeInUse => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "The label code is already used by another device.",
        ),
        DeviceOpError::Store(err) => ApiError::from_store(&err),
    }
}

/// One item of an import request; the reason names the field. A `code` is hashed with the label
/// code key at once; neither it nor its hash goes anywhere else.
fn parse_import_item(item: &Value, key: Option<&LabelCodeKey>) -> Result<NewDevice, String> {
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

fn history_entry_view(entry: &HistoryEntry) -> Value {
    json!({
        "seq": entry.seq,
        "at": timestamp(entry.at),
        "event": entry.event.as_str(),
        "actor": entry.actor,
        "claim_id": entry.claim_id,
        "reason": entry.reason,
    })
}

/// A claim as operators see it: the user's view plus who claimed it and the endpoint rule that
/// chose its target.
pub fn admin_claim_view(claim: &Claim, now: time::OffsetDateTime) -> Value {
    let mut view = claim_view(claim, now);
    view["user"] = json!(claim.user);
    view["target_rule"] = json!(claim.target_rule);
    view
}

pub fn inspection_view(inspection: &Inspection) -> Value {
    let now = inspection.at;
    let device = inspection.device.as_ref();
    let holder = device.map(|device| device.effective_holder(now));
    let (owner, reserved_by) = match holder {
        Some(Holder::Owned { user, .. }) => (Some(user), None),
        Some(Holder::Reserved { user, .. }) => (None, Some(user)),
        _ => (None, None),
    };
    json!({
        "thing_name": inspection.thing_name,
        "imported": device.is_some(),
        "vendor": device.map(|d| d.vendor.clone()),
        "sku": device.and_then(|d| d.sku.clone()),
        "disabled": device.map(|d| d.disabled),
        // Whether the label carries a code of its own (the code and its hash are never shown),
        // and whether the device can also be claimed by its ThingName.
        "has_label_code": device.map(|d| d.code_hash.is_some()),
        "thing_name_claims": device.map(|d| d.claimable_by_thing_name()),
        "imported_at": device.map(|d| timestamp(d.imported_at)),
        "owner": owner,
        "reserved_by": reserved_by,
        "claim": inspection.holding_claim.as_ref().map(|claim| admin_claim_view(claim, now)),
        "provisioning": device.and_then(|d| d.provisioning.as_ref()).map(|p| json!({
            "certificate_id": p.certificate_id,
            "account_id": p.account_id,
            "region": p.region,
        })),
        "history": inspection.history.iter().map(history_entry_view).collect::<Vec<_>>(),
        "claimable": {"now": inspection.claimable_now, "reason": inspection.reason},
        "rate_limit": inspection.attempts.as_ref().map(|a| json!({
            "user": a.user,
            "failed_attempts_by_user": a.failed_by_user,
            "failed_attempts_on_device": a.failed_on_device,
            "limit_per_user": a.limits.per_user,
            "limit_per_user_device": a.limits.per_user_device,
            "window_ends_at": timestamp(a.window_ends_at),
            "retry_after_seconds": a.retry_after.map(retry_after_seconds),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_paths_parse_and_wrong_methods_are_405() {
        assert_eq!(
            AdminRoute::parse(&Method::PUT, &["devices"]),
            Some(Ok(AdminRoute::Import))
        );
        assert_eq!(
            AdminRoute::parse(&Method::POST, &["devices", "d1", "release"]),
            Some(Ok(AdminRoute::Release("d1".into())))
        );
        assert_eq!(
            AdminRoute::parse(&Method::DELETE, &["devices", "d1"]).map(|r| r.map_err(|e| e.status)),
            Some(Err(StatusCode::METHOD_NOT_ALLOWED))
        );
        assert_eq!(AdminRoute::parse(&Method::GET, &["claims"]), None);
    }

    #[test]
    fn import_items_are_checked_field_by_field() {
        let ok = json!({"thing_name": "dev-1", "vendor": "acme", "sku": "S1"});
        assert_eq!(parse_import_item(&ok, None).map(|d| d.sku), Ok(Some("S1".into())));
        let key = LabelCodeKey::new(&[9; 32]).unwrap();
        let coded = json!({"thing_name": "dev-1", "vendor": "acme", "code": "LBL 1/x", "allow_thing_name": true});
        let reason = parse_import_item(&coded, Some(&key)).unwrap_err();
        assert!(reason.starts_with("code:") && !reason.contains("LBL"), "{reason}");
        let coded = json!({"thing_name": "dev-1", "vendor": "acme", "code": "LBL-1/x", "allow_thing_name": true});
        let device = parse_import_item(&coded, Some(&key)).unwrap();
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
            let reason = parse_import_item(&item, None).unwrap_err();
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
}
