//! Error answers in the `docs/api.md` shape, and how each use case's errors map to them. Messages
//! are safe to show and never echo the caller's input.

use claim_shared::{
    domain::attempts::retry_after_seconds,
    ports::{PageError, StoreError},
    service::{ClaimError, DeviceOpError, ReleaseError, RetryError},
};
use lambda_http::http::StatusCode;

/// `Retry-After` of every `503 unavailable`, in seconds: a dependency that did not answer in time,
/// or contention on one device, is worth trying again soon (the request itself already waited up
/// to its budget, so clients do not retry faster than once per few seconds).
pub const UNAVAILABLE_RETRY_AFTER_SECONDS: u64 = 1;

/// An error answer: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (`429`, `503`).
    pub retry_after: Option<u64>,
    /// The methods of an `Allow` header (`405`).
    pub allow: Option<&'static str>,
    /// Why, for the log only (`http_request`'s `error`): the dependency that failed and how. Never
    /// part of the answer.
    pub detail: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
            detail: None,
        }
    }

    /// The same answer, with why it was given (logged, never sent).
    pub(crate) fn because(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// `429 rate_limited` with `Retry-After` in whole seconds, rounded up (at least 1).
    pub(crate) fn rate_limited(retry_after: time::Duration) -> Self {
        Self {
            retry_after: Some(retry_after_seconds(retry_after)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many failed claim attempts. Please try again later.",
            )
        }
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn invalid_code(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_code", message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Sign in to claim devices.")
    }

    pub(crate) fn forbidden(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "No such route.")
    }

    /// `405` with the methods the resource has (`allow`, e.g. `"GET, DELETE"`).
    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This method is not allowed on this resource.",
            )
        }
    }

    pub(crate) fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the request body as application/json.",
        )
    }

    pub(crate) fn device_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "device_not_found",
            "No device of yours matches this code.",
        )
    }

    pub(crate) fn claim_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "claim_not_found",
            "No claim of yours has this id.",
        )
    }

    pub(crate) fn conflict(message: &str) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// `503 unavailable` with `Retry-After`.
    pub(crate) fn unavailable() -> Self {
        Self {
            retry_after: Some(UNAVAILABLE_RETRY_AFTER_SECONDS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is temporarily unavailable; nothing was changed. Please try again.",
            )
        }
    }

    /// `503 unavailable`: the request's budget ran out before its answer was ready. Whatever it
    /// committed is whole (a claim accepted by then is owed in the outbox and answered `200` to a
    /// repeat), so a retry is safe.
    pub(crate) fn budget_exhausted(budget: std::time::Duration) -> Self {
        Self {
            message: "The service did not answer in time. Please try again.".to_owned(),
            ..Self::unavailable()
        }
        .because(format!(
            "the request budget of {} ms ran out (a dependency answered too slowly)",
            budget.as_millis()
        ))
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side; nothing was changed.",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let detail = err.to_string();
        match err {
            StoreError::Unavailable(_) => Self::unavailable().because(detail),
            StoreError::Corrupt(_) => Self::internal().because(detail),
        }
    }
}

impl From<ClaimError> for ApiError {
    fn from(err: ClaimError) -> Self {
        match err {
            ClaimError::DeviceNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "device_not_found",
                "No claimable device matches this code. Check the code on the label.",
            ),
            ClaimError::AlreadyClaimed => Self::new(
                StatusCode::CONFLICT,
                "already_claimed",
                "This device belongs to someone else. Ask them to release it first.",
            ),
            ClaimError::IdempotencyKeyReused => {
                Self::invalid_request("This Idempotency-Key was already used for a different request.")
            }
            ClaimError::RateLimited { retry_after } => Self::rate_limited(retry_after),
            ClaimError::Busy => Self::unavailable().because("contention: lost the race on the device too often"),
            ClaimError::CertificateControl(err) => Self::unavailable().because(err.to_string()),
            ClaimError::Store(err) => err.into(),
        }
    }
}

impl From<RetryError> for ApiError {
    fn from(err: RetryError) -> Self {
        match err {
            RetryError::ClaimNotFound => Self::claim_not_found(),
            RetryError::NotRetryable => Self::conflict(
                "This claim cannot be retried: it is complete, or its device was claimed by someone else.",
            ),
            RetryError::TooSoon { retry_after } => Self {
                retry_after: Some(retry_after_seconds(retry_after)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "This claim was retried a moment ago. Please wait a few seconds.",
                )
            },
            RetryError::Busy => Self::unavailable().because("contention: lost the race on the device too often"),
            RetryError::CertificateControl(err) => Self::unavailable().because(err.to_string()),
            RetryError::Store(err) => err.into(),
        }
    }
}

impl From<ReleaseError> for ApiError {
    fn from(err: ReleaseError) -> Self {
        match err {
            ReleaseError::DeviceNotFound => Self::device_not_found(),
            ReleaseError::MidClaim => {
                Self::conflict("This device is still being claimed; wait until the claim completes or expires.")
            }
            ReleaseError::Busy => Self::unavailable().because("contention: lost the race on the device too often"),
            ReleaseError::Store(err) => err.into(),
        }
    }
}

impl From<PageError> for ApiError {
    fn from(err: PageError) -> Self {
        match err {
            PageError::InvalidToken => Self::invalid_request("next_token is not valid."),
            PageError::Store(err) => err.into(),
        }
    }
}

/// Operator actions on a device (admin routes).
impl From<DeviceOpError> for ApiError {
    fn from(err: DeviceOpError) -> Self {
        match err {
            DeviceOpError::DeviceNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "device_not_found",
                "No device has this ThingName.",
            ),
            DeviceOpError::Busy => Self::unavailable().because("contention: lost the race on the device too often"),
            DeviceOpError::Control(err) => Self::unavailable().because(err.to_string()),
            DeviceOpError::CodeInUse => Self::conflict("The label code is already used by another device."),
            DeviceOpError::Store(err) => err.into(),
        }
    }
}
