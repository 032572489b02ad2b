//! The one message this backend sends to a module, and what it needs to send it.

use std::fmt;

use time::Duration;

/// The payload a module in the staging state acts on (protocol §1.3): exactly
/// `{"Endpoint":"<host>"}`. Built by serde, so the endpoint is always correctly escaped.
pub fn endpoint_message(endpoint: &str) -> Vec<u8> {
    serde_json::json!({ "Endpoint": endpoint }).to_string().into_bytes()
}

/// How the endpoint message reaches a vendor's staging endpoint, chosen per module vendor in its
/// profile (the `transport` field of the claim-thing secret; `mqtt` when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PublishTransport {
    /// MQTT over mutual TLS as the claim-thing (connect, publish QoS 1, PUBACK, disconnect).
    #[default]
    Mqtt,
    /// One HTTPS `Publish` request (AWS IoT data plane) authenticated by the claim-thing's client
    /// certificate (mutual TLS, no AWS signature), normally on port 8443.
    Https,
    /// One `Publish` request signed (SigV4) with the function's own AWS credentials: staging
    /// simulated inside an OEM-owned account. Needs no certificate.
    Iam,
}

impl PublishTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::Https => "https",
            Self::Iam => "iam",
        }
    }

    /// The port used when the profile names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Mqtt => 8883,
            Self::Https => 8443,
            Self::Iam => 443,
        }
    }
}

/// A module vendor's profile: how to publish to its staging endpoint and, for `mqtt` and `https`,
/// the OEM's claim-thing in that vendor's staging account (certificate, private key, MQTT client id
/// — the UUID AWS issues — and the staging endpoint). Loaded from Secrets Manager and checked per
/// transport when parsed; fields a transport does not use are empty. `Debug` never shows the key
/// or the certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimThingCredentials {
    pub transport: PublishTransport,
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub client_id: String,
    /// Host name of the staging endpoint. Empty only for `iam`, which then uses the SDK's own
    /// endpoint (the data endpoint of the function's region, or `AWS_ENDPOINT_URL`).
    pub staging_endpoint: String,
    /// mqtt: 8883 (MQTT over TLS) or 443 (ALPN `x-amzn-mqtt-ca`); https: 8443 (or 443 with ALPN
    /// `x-amzn-http-ca`); iam: 443.
    pub port: u16,
    /// Roots to trust for the staging endpoint; the public web PKI roots when absent.
    pub ca_pem: Option<String>,
}

/// The secret's JSON as written; [`ClaimThingCredentials`] is what survives the per-transport check.
struct RawProfile {
    transport: PublishTransport,
    certificate_pem: Option<String>,
    private_key_pem: Option<String>,
    client_id: Option<String>,
    staging_endpoint: Option<String>,
    port: Option<u16>,
    ca_pem: Option<String>,
}

impl ClaimThingCredentials {
    /// A vendor profile as stored (the claim-thing secret's JSON). The error names the field or
    /// the problem, never a value: the secret holds a private key, and errors reach the logs.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value = crate::json::from_slice_strict(text.as_bytes()).map_err(|err| {
            // serde_json's syntax errors name a position, never a value.
            let detail = err.to_string();
            format!("not JSON: {}", detail.split(" at line").next().unwrap_or("invalid"))
        })?;
        let serde_json::Value::Object(fields) = value else {
            return Err("not a JSON object".to_owned());
        };
        let text = |name: &str| match fields.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(value)) => Ok(Some(value.clone())),
            Some(_) => Err(format!("{name} must be a string")),
        };
        let transport = match text("transport")?.as_deref() {
            None => PublishTransport::default(),
            Some("mqtt") => PublishTransport::Mqtt,
            Some("https") => PublishTransport::Https,
            Some("iam") => PublishTransport::Iam,
            Some(_) => return Err("transport must be mqtt, https or iam".to_owned()),
        };
        let port = match fields.get("port") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .and_then(|port| u16::try_from(port).ok())
                    .ok_or("port must be a number from 1 to 65535")?,
            ),
        };
        Self::try_from(RawProfile {
            transport,
            certificate_pem: text("certificate_pem")?,
            private_key_pem: text("private_key_pem")?,
            client_id: text("client_id")?,
            staging_endpoint: text("staging_endpoint")?,
            port,
            ca_pem: text("ca_pem")?,
        })
    }
}

impl TryFrom<RawProfile> for ClaimThingCredentials {
    type Error = String;

    /// The error names the transport and the field, never a value.
    fn try_from(raw: RawProfile) -> Result<Self, Self::Error> {
        let transport = raw.transport;
        let given = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let needed = |value: Option<String>, field: &str| {
            given(value).ok_or_else(|| format!("transport {} needs {field}", transport.as_str()))
        };
        let (certificate_pem, private_key_pem) = match transport {
            PublishTransport::Mqtt | PublishTransport::Https => (
                needed(raw.certificate_pem, "certificate_pem")?,
                needed(raw.private_key_pem, "private_key_pem")?,
            ),
            // Not used: the request is signed with the function's role.
            PublishTransport::Iam => (String::new(), String::new()),
        };
        let client_id = match transport {
            PublishTransport::Mqtt => needed(raw.client_id, "client_id")?,
            PublishTransport::Https | PublishTransport::Iam => given(raw.client_id).unwrap_or_default(),
        };
        let staging_endpoint = match transport {
            PublishTransport::Mqtt | PublishTransport::Https => needed(raw.staging_endpoint, "staging_endpoint")?,
            PublishTransport::Iam => given(raw.staging_endpoint).unwrap_or_default(),
        };
        let host_like = staging_endpoint
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !host_like {
            return Err("staging_endpoint must be a host name (no scheme, port or path)".to_owned());
        }
        let port = raw.port.unwrap_or_else(|| transport.default_port());
        if port == 0 {
            return Err("port must not be 0".to_owned());
        }
        Ok(Self {
            transport,
            certificate_pem,
            private_key_pem,
            client_id,
            staging_endpoint,
            port,
            ca_pem: given(raw.ca_pem),
        })
    }
}

impl fmt::Debug for ClaimThingCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimThingCredentials")
            .field("transport", &self.transport)
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

impl PublishError {
    /// What the claim's user sees while the publish waits for its next attempt: whether it is ours
    /// to fix or the network's. Never the technical detail, which goes to the logs.
    pub fn user_message(&self) -> &'static str {
        match self.code {
            "vendor_not_configured" | "credentials_invalid" | "tls_config" => {
                "This product cannot be onboarded yet because of a configuration problem on our side. We keep trying and have been alerted."
            }
            _ => "We could not reach the product's network service yet. We keep trying automatically until the claim expires.",
        }
    }
}

/// The pause before publishing again after a failed attempt: `base` after the first, doubling with
/// each further failure, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishBackoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for PublishBackoff {
    fn default() -> Self {
        Self {
            base: Duration::seconds(2),
            max: Duration::minutes(5),
        }
    }
}

impl PublishBackoff {
    /// 2 s, 4 s, 8 s … up to `max`, after the `attempts`-th failed attempt.
    pub fn after(&self, attempts: u32) -> Duration {
        let factor = 1i32 << attempts.saturating_sub(1).min(20);
        (self.base * factor).min(self.max)
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
    fn backoff_doubles_from_the_base_up_to_the_maximum() {
        let backoff = PublishBackoff::default();
        let waits: Vec<i64> = (1..=10).map(|n| backoff.after(n).whole_seconds()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff.after(u32::MAX), backoff.max);
    }

    #[test]
    fn users_are_told_whose_problem_a_failure_is_never_its_detail() {
        let ours = PublishError::new("credentials_invalid", "PEM line 3: bad base64 in -----BEGIN");
        assert!(ours.user_message().contains("configuration problem on our side"));
        let network = PublishError::new("staging_timeout", "no PUBACK within 5 s from 10.0.0.1");
        assert!(network.user_message().contains("could not reach"));
        for err in [ours, network] {
            assert!(!err.user_message().contains(err.message.as_str()));
        }
    }

    #[test]
    fn debug_output_hides_key_material() {
        let creds = ClaimThingCredentials {
            transport: PublishTransport::Mqtt,
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

    fn parse(json: &str) -> Result<ClaimThingCredentials, String> {
        ClaimThingCredentials::parse(json)
    }

    #[test]
    fn an_existing_secret_without_transport_is_mqtt_on_8883() {
        let creds =
            parse(r#"{"certificate_pem":"C","private_key_pem":"K","client_id":"uuid","staging_endpoint":"s.example"}"#)
                .expect("valid");
        assert_eq!(creds.transport, PublishTransport::Mqtt);
        assert_eq!(creds.port, 8883);
        assert_eq!(creds.ca_pem, None);
    }

    #[test]
    fn each_transport_has_its_default_port_and_needs_only_what_it_uses() {
        let https = parse(
            r#"{"transport":"https","certificate_pem":"C","private_key_pem":"K","staging_endpoint":"s.example"}"#,
        )
        .expect("https without client_id");
        assert_eq!((https.transport, https.port), (PublishTransport::Https, 8443));
        let iam = parse(r#"{"transport":"iam"}"#).expect("iam needs nothing");
        assert_eq!(
            (iam.transport, iam.port, iam.staging_endpoint.as_str()),
            (PublishTransport::Iam, 443, "")
        );
        let iam = parse(r#"{"transport":"iam","staging_endpoint":"abc-ats.iot.eu-west-1.amazonaws.com","port":8443}"#)
            .expect("iam with endpoint");
        assert_eq!(iam.port, 8443);
    }

    #[test]
    fn missing_fields_are_named_per_transport_without_values() {
        let err = parse(r#"{"transport":"https","certificate_pem":"SECRETCERT","staging_endpoint":"s"}"#)
            .expect_err("no key");
        assert!(err.contains("transport https needs private_key_pem"), "{err}");
        assert!(!err.contains("SECRETCERT"), "{err}");
        let err =
            parse(r#"{"certificate_pem":"C","private_key_pem":"K","staging_endpoint":"s"}"#).expect_err("no client id");
        assert!(err.contains("transport mqtt needs client_id"), "{err}");
        let err = parse(r#"{"transport":"https","certificate_pem":" ","private_key_pem":"K","staging_endpoint":"s"}"#)
            .expect_err("blank certificate");
        assert!(err.contains("needs certificate_pem"), "{err}");
        let err = parse(r#"{"transport":"carrier-pigeon"}"#).expect_err("unknown transport");
        assert!(
            err.contains("mqtt") && err.contains("https") && err.contains("iam"),
            "{err}"
        );
        let err = parse(r#"{"transport":"iam","staging_endpoint":"https://x/y"}"#).expect_err("url");
        assert!(err.contains("host name"), "{err}");
    }
}
