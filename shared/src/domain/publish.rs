//! The one message this backend sends to a module, and what it needs to send it.

use std::fmt;

use serde::Deserialize;

/// The payload a module in the staging state acts on (protocol §1.3): exactly
/// `{"Endpoint":"<host>"}`. Built by serde, so the endpoint is always correctly escaped.
pub fn endpoint_message(endpoint: &str) -> Vec<u8> {
    serde_json::json!({ "Endpoint": endpoint }).to_string().into_bytes()
}

/// The OEM's claim-thing in one module vendor's staging account: certificate, private key, MQTT
/// client id (the UUID AWS issues) and the staging endpoint. Loaded from Secrets Manager; `Debug`
/// never shows the key or the certificate.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct ClaimThingCredentials {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub client_id: String,
    pub staging_endpoint: String,
    /// 8883 (MQTT over TLS) or 443 (MQTT with ALPN `x-amzn-mqtt-ca`).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Roots to trust for the staging endpoint; the public web PKI roots when absent.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

fn default_port() -> u16 {
    8883
}

impl fmt::Debug for ClaimThingCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimThingCredentials")
            .field("client_id", &self.client_id)
            .field("staging_endpoint", &self.staging_endpoint)
            .field("port", &self.port)
            .field("certificate_pem", &"<redacted>")
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// Why a publish did not happen. `code` is stable (kept on the claim as `failure.code` and in
/// logs); `message` is for people and never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PublishError {
    pub code: &'static str,
    pub message: String,
}

impl PublishError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_exactly_the_documented_json() {
        assert_eq!(
            endpoint_message("abc-ats.iot.eu-west-1.amazonaws.com"),
            br#"{"Endpoint":"abc-ats.iot.eu-west-1.amazonaws.com"}"#.to_vec()
        );
    }

    #[test]
    fn debug_output_hides_key_material() {
        let creds = ClaimThingCredentials {
            certificate_pem: "-----BEGIN CERTIFICATE-----secretcert".into(),
            private_key_pem: "-----BEGIN PRIVATE KEY-----secretkey".into(),
            client_id: "uuid".into(),
            staging_endpoint: "staging".into(),
            port: 8883,
            ca_pem: None,
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("secretkey") && !shown.contains("secretcert"), "{shown}");
    }
}
