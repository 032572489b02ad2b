//! Error answers in the `docs/api.md` shape, and how each use case's errors map to them. Messages
//! are safe to show and never echo the caller's input.

use claim_shared::{
    domain::attempts::retry_after_seconds,
    ports::{PageError, StoreError},
    service::{ClaimError, DeviceOpError, ReleaseError, RetryError},
};
use lambda_http::http::StatusCode;

/// An error answer: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (`429`).
    pub retry_after: Option<u64>,
    /// The methods of an `Allow` header (`405`).
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
        }
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

    pub(crate) fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The service is temporarily unavailable; nothing was changed. Please try again.",
        )
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
        match err {
            StoreError::Unavailable(_) => Self::unavailable(),
            StoreError::Corrupt(_) => Self::internal(),
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
            ClaimError::Busy | ClaimError::CertificateControl(_) => Self::unavailable(),
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
            RetryError::Busy | RetryError::CertificateControl(_) => Self::unavailable(),
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
            ReleaseError::Busy => Self::unavailable(),
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
            DeviceOpError::Busy | DeviceOpError::Control(_) => Self::unavailable(),
            DeviceOpError::CodeInUse => Self::conflict("The label code is already used by another device."),
            DeviceOpError::Store(err) => err.into(),
        }
    }
}
