//! Every invocation's payload reaches the handler as the bytes Lambda received, whatever they are.
//!
//! `lambda_runtime` (1.x) deserializes the payload with serde_json into the handler's event type
//! before the handler runs, and fails the invocation when that fails: not JSON, empty, not UTF-8,
//! nested deeper than serde_json's recursion limit. (With `AWS_LAMBDA_LOG_LEVEL=TRACE` it even
//! stops the runtime on a payload that is not UTF-8.) No event type avoids that: its `Deserialize`
//! only ever sees serde_json's parser. The one place the runtime shows the raw bytes is a layer over
//! [`LambdaInvocation`]s ([`lambda_runtime::Runtime::layer`]), which runs before all of it:
//! [`RawPayloadLayer`] replaces the body with a JSON string holding the bytes in base64, which
//! always deserializes, into [`RawPayload`]. The handler then classifies the bytes itself
//! ([`crate::handle_raw`]).

use std::task::{Context, Poll};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use lambda_runtime::{
    tower::{Layer, Service},
    LambdaInvocation,
};
use serde::{de::Error as _, Deserialize, Deserializer};

/// The invocation payload as Lambda received it. Deserializes only from [`envelope`]'s output, so
/// a handler taking it must run under [`RawPayloadLayer`].
#[derive(Clone, PartialEq, Eq)]
pub struct RawPayload(Vec<u8>);

impl RawPayload {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Its length only: a payload is never printed.
impl std::fmt::Debug for RawPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawPayload({} bytes)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for RawPayload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let encoded = String::deserialize(deserializer)?;
        STANDARD
            .decode(encoded)
            .map(RawPayload)
            .map_err(|_| D::Error::custom("the payload is not a RawPayloadLayer envelope"))
    }
}

/// `bytes` as a JSON string (base64: no character needs escaping).
pub fn envelope(bytes: &[u8]) -> Vec<u8> {
    format!("\"{}\"", STANDARD.encode(bytes)).into_bytes()
}

/// Wraps each invocation's body in an [`envelope`] before `lambda_runtime` deserializes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawPayloadLayer;

impl<S> Layer<S> for RawPayloadLayer {
    type Service = RawPayloadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RawPayloadService { inner }
    }
}

/// See [`RawPayloadLayer`].
#[derive(Clone, Debug)]
pub struct RawPayloadService<S> {
    inner: S,
}

impl<S: Service<LambdaInvocation>> Service<LambdaInvocation> for RawPayloadService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        invocation.body = envelope(&invocation.body).into();
        self.inner.call(invocation)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// What `lambda_runtime` does with the body (`serde_json::Deserializer::from_slice`).
    fn through_the_runtime(body: &[u8]) -> Result<RawPayload, serde_json::Error> {
        serde_json::from_slice(&envelope(body))
    }

    #[test]
    fn any_bytes_come_through_unchanged() {
        let every_byte: Vec<u8> = (0..=255).collect();
        for body in [
            &b""[..],
            b"xyz",
            &[0xff, 0xfe, 0x00],
            b"{\"event_kind\": \"thing_created\"}",
            "[".repeat(100_000).as_bytes(),
            &every_byte,
        ] {
            assert_eq!(through_the_runtime(body).unwrap().as_bytes(), body);
        }
    }

    #[test]
    fn a_payload_without_the_envelope_is_refused() {
        assert!(serde_json::from_str::<RawPayload>("{}").is_err());
        assert!(serde_json::from_str::<RawPayload>("\"not base64!\"").is_err());
    }

    #[test]
    fn debug_prints_the_length_only() {
        assert_eq!(format!("{:?}", RawPayload(b"secret".to_vec())), "RawPayload(6 bytes)");
    }
}
