//! [`EndpointPublisher`] over the AWS IoT data plane (`aws-sdk-iotdataplane` `Publish`), in two
//! flavours, and the router that picks a vendor's transport (`mqtt`, `https` or `iam`).
//!
//! - **`https`**: one HTTPS request to the vendor's staging endpoint (port 8443) authenticated by the
//!   claim-thing's client certificate (mutual TLS), unsigned: there are no AWS credentials for the
//!   staging account. The SDK cannot present a client certificate itself, so [`MtlsHttpClient`] plugs
//!   a `reqwest` client with the claim-thing's rustls configuration into it.
//! - **`iam`**: the same request signed (SigV4) with the function's own credentials, for staging
//!   simulated inside an OEM-owned account.
//!
//! Both are QoS 1: a 2xx answer means AWS IoT accepted the message. Anything else is a failed
//! publish whose message keeps the HTTP status and the AWS error code; the outbox retries it. The
//! SDK's own retries are off, so the outbox's backoff is the only one. Both clients carry the SDK's
//! own deadlines ([`publish_timeouts`]) besides the publish timeout around each call.

use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use aws_sdk_iotdataplane::{
    config::{BehaviorVersion, Region},
    error::{ProvideErrorMetadata, SdkError},
    primitives::Blob,
};
use aws_smithy_runtime_api::client::{
    http::{HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector},
    orchestrator::HttpRequest,
    result::ConnectorError,
    runtime_components::RuntimeComponents,
};
use aws_smithy_types::{body::SdkBody, retry::RetryConfig, timeout::TimeoutConfig};
use rumqttc::tokio_rustls::rustls;

use crate::{
    adapters::mqtt::{client_tls, Built, MqttPublisher, PUBLISH_TIMEOUT},
    domain::{
        ids::ConfigTopic,
        publish::{ClaimThingCredentials, PublishError, PublishTransport},
    },
    ports::EndpointPublisher,
};

/// ALPN AWS IoT requires for HTTPS with a client certificate on port 443 (8443 needs none).
pub const ALPN_HTTP_CA: &[u8] = b"x-amzn-http-ca";

/// Connecting to a staging endpoint (TCP and TLS): a vendor's endpoint may be in another region,
/// where a handshake takes a few hundred milliseconds, so more than the 1 s of the functions' own
/// AWS clients; still well inside one publish's [`PUBLISH_TIMEOUT`].
pub const PUBLISH_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The SDK deadlines of one data-plane publish: connect within [`PUBLISH_CONNECT_TIMEOUT`], the
/// whole call (one attempt: SDK retries are off) within [`PUBLISH_TIMEOUT`], like an MQTT publish.
/// These replace the functions' shorter defaults (`wiring::sdk_timeouts`) for publishes only.
pub fn publish_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(PUBLISH_CONNECT_TIMEOUT)
        .operation_attempt_timeout(PUBLISH_TIMEOUT)
        .operation_timeout(PUBLISH_TIMEOUT)
        .build()
}

/// Publishes over HTTPS with the claim-thing's certificate (mutual TLS), unsigned.
/// One client per claim-thing profile ([`Built`]), kept across warm invocations: its connections
/// are pooled, so a warm publish makes no TLS handshake.
#[derive(Debug, Clone)]
pub struct HttpsPublisher {
    /// Upper bound for connect + TLS handshake + request + answer.
    pub timeout: Duration,
    clients: Built<aws_sdk_iotdataplane::Client>,
}

impl Default for HttpsPublisher {
    fn default() -> Self {
        Self {
            timeout: PUBLISH_TIMEOUT,
            clients: Built::default(),
        }
    }
}

impl HttpsPublisher {
    /// Publishes with the given TLS client configuration to `https://<host>:<port>`. The
    /// configuration decides which client certificate, if any, is presented.
    pub async fn publish_with(
        &self,
        tls: rustls::ClientConfig,
        host: &str,
        port: u16,
        topic: &ConfigTopic,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let client = self.client(tls, host, port)?;
        send(&client, topic, payload, self.timeout).await
    }

    /// A client that sends to `https://<host>:<port>` with the given TLS client configuration.
    fn client(
        &self,
        tls: rustls::ClientConfig,
        host: &str,
        port: u16,
    ) -> Result<aws_sdk_iotdataplane::Client, PublishError> {
        let http = MtlsHttpClient::new(tls, self.timeout)?;
        let config = aws_sdk_iotdataplane::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            // Not used for signing (nothing is signed); the endpoint is given explicitly.
            .region(Region::from_static("us-east-1"))
            .endpoint_url(format!("https://{host}:{port}"))
            .http_client(http)
            .allow_no_auth()
            .retry_config(RetryConfig::disabled())
            .timeout_config(publish_timeouts())
            .build();
        Ok(aws_sdk_iotdataplane::Client::from_conf(config))
    }
}

#[async_trait]
impl EndpointPublisher for HttpsPublisher {
    async fn publish(
        &self,
        credentials: &ClaimThingCredentials,
        topic: &ConfigTopic,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let client = self.clients.get_or_build(credentials, || {
            let mut tls = client_tls(
                &credentials.certificate_pem,
                &credentials.private_key_pem,
                credentials.ca_pem.as_deref(),
            )?;
            tls.alpn_protocols = if credentials.port == 443 {
                vec![ALPN_HTTP_CA.to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            };
            self.client(tls, &credentials.staging_endpoint, credentials.port)
        })?;
        send(&client, topic, payload, self.timeout).await
    }

    /// In parallel over the profile's pooled connections ([`HTTPS_PARALLEL`] at a time).
    async fn publish_batch(
        &self,
        credentials: &ClaimThingCredentials,
        messages: &[(ConfigTopic, Vec<u8>)],
    ) -> Vec<Result<(), PublishError>> {
        use futures::StreamExt as _;
        // Always HTTPS_PARALLEL under way (a slow one does not hold up the next ones), results in
        // the messages' order.
        let publishes: Vec<_> = messages
            .iter()
            .map(|(topic, payload)| self.publish(credentials, topic, payload))
            .collect();
        futures::stream::iter(publishes)
            .buffered(HTTPS_PARALLEL)
            .collect()
            .await
    }
}

/// Publishes of one batch over `https` under way at once.
pub const HTTPS_PARALLEL: usize = 16;

/// Publishes with a client signed by the function's own AWS credentials.
#[derive(Debug, Clone)]
pub struct IamPublisher {
    client: aws_sdk_iotdataplane::Client,
    pub timeout: Duration,
}

impl IamPublisher {
    /// A client from the function's SDK configuration (its role, its region, and endpoint
    /// overrides such as `AWS_ENDPOINT_URL`), without SDK retries, with [`publish_timeouts`].
    pub fn new(aws: &aws_types::SdkConfig) -> Self {
        let config = aws_sdk_iotdataplane::config::Builder::from(aws)
            .retry_config(RetryConfig::disabled())
            .timeout_config(publish_timeouts())
            .build();
        Self {
            client: aws_sdk_iotdataplane::Client::from_conf(config),
            timeout: PUBLISH_TIMEOUT,
        }
    }
}

#[async_trait]
impl EndpointPublisher for IamPublisher {
    async fn publish(
        &self,
        credentials: &ClaimThingCredentials,
        topic: &ConfigTopic,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        if credentials.staging_endpoint.is_empty() {
            return send(&self.client, topic, payload, self.timeout).await;
        }
        // The profile names the account's data endpoint: same credentials, that endpoint.
        let config = self
            .client
            .config()
            .to_builder()
            .endpoint_url(format!("https://{}:{}", credentials.staging_endpoint, credentials.port))
            .build();
        let client = aws_sdk_iotdataplane::Client::from_conf(config);
        send(&client, topic, payload, self.timeout).await
    }
}

/// Sends each publish with the transport its vendor profile names.
pub struct TransportRouter {
    pub mqtt: Arc<dyn EndpointPublisher>,
    pub https: Arc<dyn EndpointPublisher>,
    pub iam: Arc<dyn EndpointPublisher>,
}

impl TransportRouter {
    /// The production transports; `iam` signs with the credentials of `aws`.
    pub fn from_aws(aws: &aws_types::SdkConfig) -> Self {
        Self {
            mqtt: Arc::new(MqttPublisher::default()),
            https: Arc::new(HttpsPublisher::default()),
            iam: Arc::new(IamPublisher::new(aws)),
        }
    }
}

#[async_trait]
impl EndpointPublisher for TransportRouter {
    async fn publish(
        &self,
        credentials: &ClaimThingCredentials,
        topic: &ConfigTopic,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        self.transport(credentials).publish(credentials, topic, payload).await
    }

    async fn publish_batch(
        &self,
        credentials: &ClaimThingCredentials,
        messages: &[(ConfigTopic, Vec<u8>)],
    ) -> Vec<Result<(), PublishError>> {
        self.transport(credentials).publish_batch(credentials, messages).await
    }
}

impl TransportRouter {
    fn transport(&self, credentials: &ClaimThingCredentials) -> &Arc<dyn EndpointPublisher> {
        match credentials.transport {
            PublishTransport::Mqtt => &self.mqtt,
            PublishTransport::Https => &self.https,
            PublishTransport::Iam => &self.iam,
        }
    }
}

async fn send(
    client: &aws_sdk_iotdataplane::Client,
    topic: &ConfigTopic,
    payload: &[u8],
    timeout: Duration,
) -> Result<(), PublishError> {
    let request = client
        .publish()
        .topic(topic.as_str())
        .qos(1)
        .payload(Blob::new(payload.to_vec()))
        .send();
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(publish_error(&err)),
        Err(_) => Err(PublishError::new(
            "staging_timeout",
            format!("no answer from the staging endpoint within {timeout:?}"),
        )),
    }
}

/// Maps an SDK failure to a publish error: HTTP status and AWS error code kept in the message.
/// A 4xx answer is `staging_refused` (certificate not accepted, policy, bad request; an HTML page
/// from a TLS front end included), 429 and 5xx are `staging_unreachable` (the service could not
/// take it now); connection failures are `staging_unreachable`, TLS failures `staging_tls`.
fn publish_error<E: ProvideErrorMetadata + StdError + 'static>(
    err: &SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> PublishError {
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let title = html_title(service.raw().body().bytes());
            let message = service.err().message().or(title.as_deref());
            http_failure(status, service.err().code(), message)
        }
        SdkError::ResponseError(response) => {
            let title = html_title(response.raw().body().bytes());
            http_failure(response.raw().status().as_u16(), None, title.as_deref())
        }
        SdkError::TimeoutError(_) => {
            PublishError::new("staging_timeout", "the staging endpoint did not answer in time")
        }
        SdkError::DispatchFailure(dispatch) => {
            let detail = error_chain(err);
            if dispatch.is_timeout() {
                PublishError::new("staging_timeout", detail)
            } else if find_tls_failure(err) {
                PublishError::new("staging_tls", detail)
            } else {
                PublishError::new("staging_unreachable", detail)
            }
        }
        _ => PublishError::new("publish_failed", error_chain(err)),
    }
}

fn http_failure(status: u16, aws_code: Option<&str>, aws_message: Option<&str>) -> PublishError {
    let code = if status == 429 || status >= 500 {
        "staging_unreachable"
    } else {
        "staging_refused"
    };
    let mut message = format!(
        "HTTP {status} from the staging endpoint, AWS error code {}",
        aws_code.unwrap_or("none")
    );
    if let Some(detail) = aws_message {
        message.push_str(": ");
        message.extend(detail.chars().take(200));
    }
    PublishError::new(code, message)
}

/// The `<title>` of an HTML answer (what a TLS front end says about a refused certificate, e.g.
/// "400 The SSL certificate error"), for the log.
fn html_title(body: Option<&[u8]>) -> Option<String> {
    let text = std::str::from_utf8(body?).ok()?;
    let start = text.find("<title>")? + "<title>".len();
    let end = start + text[start..].find("</title>")?;
    Some(text[start..end].chars().take(100).collect())
}

fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn find_tls_failure(err: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(cause) = current {
        if cause.is::<TlsFailure>() || cause.is::<rustls::Error>() {
            return true;
        }
        current = cause.source();
    }
    false
}

/// A connection that failed in the TLS handshake (marker for the error mapping).
#[derive(Debug)]
struct TlsFailure(String);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl StdError for TlsFailure {}

/// The SDK's HTTP client replaced by a `reqwest` client that presents a client certificate: the
/// only way to give `aws-sdk-iotdataplane` mutual TLS.
#[derive(Clone)]
pub struct MtlsHttpClient {
    http: reqwest::Client,
}

impl fmt::Debug for MtlsHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MtlsHttpClient")
    }
}

impl MtlsHttpClient {
    pub fn new(tls: rustls::ClientConfig, timeout: Duration) -> Result<Self, PublishError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .tcp_nodelay(true)
            .connect_timeout(timeout.min(PUBLISH_CONNECT_TIMEOUT))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|err| PublishError::new("tls_config", err.to_string()))?;
        Ok(Self { http })
    }
}

impl HttpClient for MtlsHttpClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for MtlsHttpClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = self.http.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|err| ConnectorError::other(err.into(), None))?;
            let (parts, body) = request.into_parts();
            // Publish bodies are small and always in memory.
            let bytes = body.bytes().map(<[u8]>::to_vec).unwrap_or_default();
            let request = http::Request::from_parts(parts, bytes);
            let request = reqwest::Request::try_from(request).map_err(|err| ConnectorError::other(err.into(), None))?;
            let response = http.execute(request).await.map_err(connector_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(connector_error)?;
            let mut answer = http::Response::new(SdkBody::from(body));
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            aws_smithy_runtime_api::http::Response::try_from(answer)
                .map_err(|err| ConnectorError::other(err.into(), None))
        })
    }
}

fn connector_error(err: reqwest::Error) -> ConnectorError {
    if err.is_timeout() {
        return ConnectorError::timeout(err.into());
    }
    match rustls_cause(&err) {
        Some(tls) => ConnectorError::io(Box::new(TlsFailure(tls.to_string()))),
        None => ConnectorError::io(err.into()),
    }
}

/// The rustls error behind a failed connection, if any. tokio-rustls wraps it in `io::Error`s
/// (nested ones, too), whose `source()` skips the wrapped error, so those are opened by hand.
fn rustls_cause<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(cause) = current {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            if let Some(tls) = rustls_cause(inner) {
                return Some(tls);
            }
        }
        current = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Named(Mutex<Vec<&'static str>>, &'static str);

    #[async_trait]
    impl EndpointPublisher for Named {
        async fn publish(&self, _: &ClaimThingCredentials, _: &ConfigTopic, _: &[u8]) -> Result<(), PublishError> {
            self.0
                .lock()
                .map_err(|_| PublishError::new("publish_failed", "poisoned"))?
                .push(self.1);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_router_uses_the_transport_the_profile_names() {
        let mqtt = Arc::new(Named(Mutex::default(), "mqtt"));
        let https = Arc::new(Named(Mutex::default(), "https"));
        let iam = Arc::new(Named(Mutex::default(), "iam"));
        let router = TransportRouter {
            mqtt: mqtt.clone(),
            https: https.clone(),
            iam: iam.clone(),
        };
        let topic = ConfigTopic::for_device(&crate::domain::ids::ThingName::parse("thing-1").expect("name"));
        for json in [
            r#"{"transport":"iam"}"#,
            r#"{"transport":"https","certificate_pem":"C","private_key_pem":"K","staging_endpoint":"h"}"#,
            r#"{"certificate_pem":"C","private_key_pem":"K","client_id":"c","staging_endpoint":"h"}"#,
        ] {
            let creds = ClaimThingCredentials::parse(json).expect("profile");
            router.publish(&creds, &topic, b"{}").await.expect("published");
        }
        let used = |p: &Named| p.0.lock().expect("lock").clone();
        assert_eq!(
            (used(&mqtt), used(&https), used(&iam)),
            (vec!["mqtt"], vec!["https"], vec!["iam"])
        );
    }

    /// Answers every request with `status` and remembers what was asked, instead of a network.
    #[derive(Debug, Clone, Default)]
    struct Captured(Arc<Mutex<Vec<Seen>>>, u16);

    /// A request's URI and `Authorization` header.
    type Seen = (String, Option<String>);

    impl HttpClient for Captured {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    impl HttpConnector for Captured {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let seen = (
                request.uri().to_owned(),
                request.headers().get("authorization").map(str::to_owned),
            );
            if let Ok(mut all) = self.0.lock() {
                all.push(seen);
            }
            let mut answer = http::Response::new(SdkBody::from(r#"{"message":"nope"}"#));
            *answer.status_mut() = http::StatusCode::from_u16(self.1).unwrap_or(http::StatusCode::OK);
            answer.headers_mut().insert(
                "x-amzn-errortype",
                http::HeaderValue::from_static("UnauthorizedException"),
            );
            let answer = aws_smithy_runtime_api::http::Response::try_from(answer);
            HttpConnectorFuture::new(async move { answer.map_err(|err| ConnectorError::other(err.into(), None)) })
        }
    }

    fn iam_publisher(status: u16) -> (IamPublisher, Captured) {
        let captured = Captured(Arc::default(), status);
        let aws = aws_types::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::from_static("eu-west-1"))
            .credentials_provider(aws_sdk_iotdataplane::config::SharedCredentialsProvider::new(
                aws_sdk_iotdataplane::config::Credentials::new("AKIDTEST", "secret", None, None, "test"),
            ))
            .http_client(captured.clone())
            .build();
        (IamPublisher::new(&aws), captured)
    }

    #[test]
    fn publishes_have_the_sdk_deadlines_of_a_publish() {
        let (iam, _) = iam_publisher(200);
        assert_eq!(iam.client.config().timeout_config(), Some(&publish_timeouts()));
        assert_eq!(publish_timeouts().operation_timeout(), Some(PUBLISH_TIMEOUT));
    }

    #[tokio::test]
    async fn iam_signs_and_goes_to_the_regional_data_endpoint_or_the_profiles() {
        let topic = ConfigTopic::for_device(&crate::domain::ids::ThingName::parse("thing-1").expect("name"));
        let (iam, captured) = iam_publisher(200);
        let regional = ClaimThingCredentials::parse(r#"{"transport":"iam"}"#).expect("profile");
        iam.publish(&regional, &topic, b"{}").await.expect("published");
        let own: ClaimThingCredentials = ClaimThingCredentials::parse(
            r#"{"transport":"iam","staging_endpoint":"abc-ats.iot.eu-west-1.amazonaws.com"}"#,
        )
        .expect("profile");
        iam.publish(&own, &topic, b"{}").await.expect("published");
        let seen = captured.0.lock().expect("lock").clone();
        assert_eq!(seen.len(), 2, "one request each, no SDK retries: {seen:?}");
        assert_eq!(
            seen[0].0,
            "https://data-ats.iot.eu-west-1.amazonaws.com/topics/thing-1%2Fexpresslink_config?qos=1"
        );
        assert_eq!(
            seen[1].0,
            "https://abc-ats.iot.eu-west-1.amazonaws.com:443/topics/thing-1%2Fexpresslink_config?qos=1"
        );
        for (_, authorization) in &seen {
            let authorization = authorization.as_deref().unwrap_or_default();
            assert!(
                authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
                    && authorization.contains("/eu-west-1/iotdata/aws4_request"),
                "{authorization}"
            );
        }
    }

    #[tokio::test]
    async fn an_iam_refusal_keeps_status_and_aws_error_code_and_is_tried_once() {
        let topic = ConfigTopic::for_device(&crate::domain::ids::ThingName::parse("thing-1").expect("name"));
        let (iam, captured) = iam_publisher(403);
        let profile = ClaimThingCredentials::parse(r#"{"transport":"iam"}"#).expect("profile");
        let err = iam.publish(&profile, &topic, b"{}").await.expect_err("refused");
        assert_eq!(err.code, "staging_refused");
        assert_eq!(
            err.message,
            "HTTP 403 from the staging endpoint, AWS error code UnauthorizedException: nope"
        );
        assert_eq!(captured.0.lock().expect("lock").len(), 1);
        // A 503 would be retried by the SDK's standard retries; here the outbox retries instead.
        let (iam, captured) = iam_publisher(503);
        let err = iam.publish(&profile, &topic, b"{}").await.expect_err("unavailable");
        assert_eq!(err.code, "staging_unreachable", "{err}");
        assert!(err.message.starts_with("HTTP 503"), "{err}");
        assert_eq!(captured.0.lock().expect("lock").len(), 1, "tried once");
    }

    #[test]
    fn http_answers_keep_status_and_aws_code() {
        let err = http_failure(403, Some("ForbiddenException"), Some("not authorized"));
        assert_eq!(err.code, "staging_refused");
        assert!(
            err.message.contains("HTTP 403") && err.message.contains("ForbiddenException"),
            "{}",
            err.message
        );
        let html = http_failure(400, None, None);
        assert_eq!(html.code, "staging_refused");
        assert!(html.message.contains("HTTP 400") && html.message.contains("AWS error code none"));
        assert_eq!(http_failure(503, None, None).code, "staging_unreachable");
        assert_eq!(
            html_title(Some(
                b"<html><head><title>400 No required SSL certificate was sent</title></head>"
            )),
            Some("400 No required SSL certificate was sent".to_owned())
        );
        assert_eq!(html_title(Some(b"{}")), None);
        assert_eq!(
            http_failure(429, Some("ThrottlingException"), None).code,
            "staging_unreachable"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_and_is_not_a_crash() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["claim-thing".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let creds = ClaimThingCredentials {
            transport: PublishTransport::Https,
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            client_id: String::new(),
            staging_endpoint: "127.0.0.1".into(),
            // Port 9 (discard) on loopback: nothing listens there on a normal machine.
            port: 9,
            ca_pem: Some(cert.pem()),
        };
        let topic = ConfigTopic::for_device(&crate::domain::ids::ThingName::parse("thing-1").expect("name"));
        let err = HttpsPublisher::default()
            .publish(&creds, &topic, b"{}")
            .await
            .expect_err("nothing listens");
        assert_eq!(err.code, "staging_unreachable", "{err}");
    }
}
