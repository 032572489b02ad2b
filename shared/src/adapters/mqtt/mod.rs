//! [`EndpointPublisher`] over MQTT 3.1.1 with mutual TLS (rustls): publish QoS 1 as the
//! claim-thing and wait for the PUBACK, over a connection kept open between batches
//! ([`session`]), pipelined within AWS IoT Core's limits per connection (100 publishes per second,
//! 100 unacknowledged); a process never connects twice within a second with one client id. Port
//! 443 uses ALPN `x-amzn-mqtt-ca` as AWS IoT requires there. Callers make sure no two processes
//! publish with the same client id (one `claim-publisher` instance, and the publisher lease). The
//! TLS configuration is built once per claim-thing profile ([`Built`]).

mod pace;
pub mod session;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use rumqttc::tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
};
use session::Session;

use crate::{
    domain::{
        ids::ConfigTopic,
        publish::{ClaimThingCredentials, PublishError},
    },
    ports::EndpointPublisher,
};

pub const ALPN_MQTT_CA: &[u8] = b"x-amzn-mqtt-ca";

/// How long one publish may take, whatever the transport (the delivery budget may cut it shorter).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct MqttPublisher {
    /// Upper bound for connect + publish + PUBACK (a batch gets [`PUBLISH_INTERVAL`] more per
    /// message).
    pub timeout: Duration,
    tls: Built<Arc<rustls::ClientConfig>>,
    /// When this process last connected (or will connect) with each client id.
    connects: Arc<Mutex<std::collections::HashMap<String, tokio::time::Instant>>>,
    /// The connection kept for each client id.
    sessions: Arc<Mutex<std::collections::HashMap<String, Slot>>>,
}

/// Where the connection kept for one client id waits between batches.
type Slot = Arc<tokio::sync::Mutex<Option<Session>>>;

impl Default for MqttPublisher {
    fn default() -> Self {
        Self {
            timeout: PUBLISH_TIMEOUT,
            tls: Built::default(),
            connects: Arc::default(),
            sessions: Arc::default(),
        }
    }
}

/// What a transport builds from a claim-thing profile (a TLS configuration, an HTTP client), kept
/// per profile content, that is per secret version: a warm function parses the PEM and builds it
/// once, not for every publish, and a rotated secret gets its own. Keyed by a SHA-256 digest of
/// the profile, so no further copy of the key material is kept; at most [`Built::KEPT`] entries.
#[derive(Debug)]
pub struct Built<T> {
    entries: Arc<Mutex<Entries<T>>>,
}

/// What was built, by profile digest, oldest first.
type Entries<T> = Vec<([u8; 32], T)>;

impl<T> Clone for Built<T> {
    fn clone(&self) -> Self {
        Self {
            entries: Arc::clone(&self.entries),
        }
    }
}

impl<T> Default for Built<T> {
    fn default() -> Self {
        Self {
            entries: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Clone> Built<T> {
    /// Profiles kept; the oldest is dropped beyond (a deployment has a few vendors).
    pub const KEPT: usize = 16;

    /// What was built from this profile, or what `build` makes of it now.
    pub fn get_or_build(
        &self,
        credentials: &ClaimThingCredentials,
        build: impl FnOnce() -> Result<T, PublishError>,
    ) -> Result<T, PublishError> {
        let key = profile_digest(credentials);
        if let Some((_, built)) = self.lock().iter().find(|(digest, _)| *digest == key) {
            return Ok(built.clone());
        }
        let built = build()?;
        let mut entries = self.lock();
        if entries.len() >= Self::KEPT {
            entries.remove(0);
        }
        entries.push((key, built.clone()));
        Ok(built)
    }

    /// How many profiles have something built (tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<T>> {
        // Entries are only pushed and removed whole: a poisoned lock holds consistent data.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// SHA-256 over everything of a profile that goes into a connection.
fn profile_digest(credentials: &ClaimThingCredentials) -> [u8; 32] {
    use aws_lc_rs::digest;
    let mut context = digest::Context::new(&digest::SHA256);
    for part in [
        credentials.transport.as_str(),
        &credentials.certificate_pem,
        &credentials.private_key_pem,
        &credentials.client_id,
        &credentials.staging_endpoint,
        credentials.ca_pem.as_deref().unwrap_or(""),
    ] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    context.update(&credentials.port.to_be_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// The rustls client configuration for a claim-thing: its certificate and key as client identity,
/// the secret's CA bundle (or the public web roots) as trust anchors, ALPN on port 443.
pub fn tls_config(credentials: &ClaimThingCredentials) -> Result<rustls::ClientConfig, PublishError> {
    let mut config = client_tls(
        &credentials.certificate_pem,
        &credentials.private_key_pem,
        credentials.ca_pem.as_deref(),
    )?;
    if credentials.port == 443 {
        config.alpn_protocols = vec![ALPN_MQTT_CA.to_vec()];
    }
    Ok(config)
}

/// A mutual-TLS client configuration from PEM: certificate chain and key as the client identity,
/// `roots_pem` (or the public web roots when `None`) as trust anchors. Errors never contain the
/// key material.
pub fn client_tls(
    certificate_pem: &str,
    private_key_pem: &str,
    roots_pem: Option<&str>,
) -> Result<rustls::ClientConfig, PublishError> {
    let invalid = |what: &str| PublishError::new("credentials_invalid", format!("claim-thing {what} is not valid PEM"));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| invalid("certificate"))?;
    if certs.is_empty() {
        return Err(invalid("certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes()).map_err(|_| invalid("private key"))?;
    let mut roots = rustls::RootCertStore::empty();
    match roots_pem {
        Some(bundle) => {
            for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
                let cert = cert.map_err(|_| invalid("CA bundle"))?;
                roots.add(cert).map_err(|_| invalid("CA bundle"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // An explicit provider: the process may link more than one, and the default would then be
    // ambiguous.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| PublishError::new("tls_config", err.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|_| PublishError::new("credentials_invalid", "claim-thing certificate and key do not match"))
}

/// The least time between two CONNECTs with one client id: AWS IoT Core allows one per second per
/// client id, not adjustable (`docs/architecture.md`, "AWS IoT Core quotas").
pub const CONNECT_SPACING: Duration = Duration::from_secs(1);

/// Publishes one connection may carry per second (AWS IoT Core: 100, not adjustable): a batch is
/// paced at one publish per this interval.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(10);

/// Unacknowledged QoS 1 publishes in flight on one connection (AWS IoT Core: 100, not adjustable).
pub const MAX_IN_FLIGHT: u16 = 100;

impl MqttPublisher {
    /// When a new CONNECT with `client_id` may go out: at once, or [`CONNECT_SPACING`] after the
    /// previous one from this process. The time is reserved, so concurrent callers line up.
    fn connect_slot(&self, client_id: &str) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut last = self.connects.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let at = last
            .get(client_id)
            .map_or(now, |previous| (*previous + CONNECT_SPACING).max(now));
        last.insert(client_id.to_owned(), at);
        at
    }

    /// The slot holding the session kept for `client_id` (one at a time uses it).
    fn slot(&self, client_id: &str) -> Slot {
        let mut sessions = self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(sessions.entry(client_id.to_owned()).or_default())
    }

    /// Sends `messages` as the claim-thing over its kept connection, or a new one: paced at
    /// [`PUBLISH_INTERVAL`], up to [`MAX_IN_FLIGHT`] unacknowledged, each confirmed by its PUBACK.
    /// The connection stays open for the next batch if every publish settled; a kept connection
    /// that turns out to be gone before it confirmed anything is replaced once, within the call.
    /// What was not confirmed failed (it may still have arrived: delivery is at least once).
    async fn exchange(
        &self,
        credentials: &ClaimThingCredentials,
        messages: &[(ConfigTopic, Vec<u8>)],
    ) -> Vec<Result<(), PublishError>> {
        let tls = match self
            .tls
            .get_or_build(credentials, || tls_config(credentials).map(Arc::new))
        {
            Ok(tls) => tls,
            Err(err) => return vec![Err(err); messages.len()],
        };
        let profile = profile_digest(credentials);
        let slot = self.slot(&credentials.client_id);
        let mut kept = slot.lock().await;
        // Taken out while in use: a call cancelled midway drops it (and its connection) rather
        // than leave a session with publishes of unknown fate for the next batch.
        let mut session = match kept.take() {
            Some(fresh)
                if fresh.is_alive()
                    && fresh.profile == profile
                    && fresh.last_used.elapsed() < session::REUSE_WITHIN =>
            {
                Some(fresh)
            }
            Some(stale) => {
                // Too old to trust, or of another secret version: a polite DISCONNECT first.
                stale.close().await;
                None
            }
            None => None,
        };
        let mut may_replace = session.is_some();
        loop {
            let mut current = match session.take() {
                Some(reused) => reused,
                None => {
                    tokio::time::sleep_until(self.connect_slot(&credentials.client_id)).await;
                    Session::open(credentials, Arc::clone(&tls), profile)
                }
            };
            let by = tokio::time::Instant::now()
                + self.timeout
                + PUBLISH_INTERVAL * u32::try_from(messages.len()).unwrap_or(u32::MAX);
            let (results, settled) = current.send(messages, by).await;
            let alive = current.is_alive();
            if settled && alive {
                *kept = Some(current);
                return results;
            }
            drop(current);
            if std::mem::take(&mut may_replace) && !alive && results.iter().all(Result::is_err) {
                continue;
            }
            return results;
        }
    }
}

#[async_trait]
impl EndpointPublisher for MqttPublisher {
    async fn publish(
        &self,
        credentials: &ClaimThingCredentials,
        topic: &ConfigTopic,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let messages = [(topic.clone(), payload.to_vec())];
        self.exchange(credentials, &messages)
            .await
            .pop()
            .unwrap_or_else(|| Err(PublishError::new("publish_failed", "nothing was sent")))
    }

    /// One connection for the whole batch (one CONNECT), pipelined: see [`MqttPublisher::exchange`].
    async fn publish_batch(
        &self,
        credentials: &ClaimThingCredentials,
        messages: &[(ConfigTopic, Vec<u8>)],
    ) -> Vec<Result<(), PublishError>> {
        if messages.is_empty() {
            return Vec::new();
        }
        self.exchange(credentials, messages).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(port: u16) -> ClaimThingCredentials {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["claim-thing".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        ClaimThingCredentials {
            transport: crate::domain::publish::PublishTransport::Mqtt,
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            client_id: "uuid".into(),
            staging_endpoint: "staging.example".into(),
            port,
            ca_pem: Some(cert.pem()),
        }
    }

    #[test]
    fn port_443_speaks_the_alpn_aws_iot_requires_and_8883_none() {
        assert_eq!(
            tls_config(&credentials(443)).expect("config").alpn_protocols,
            [ALPN_MQTT_CA.to_vec()]
        );
        assert!(tls_config(&credentials(8883))
            .expect("config")
            .alpn_protocols
            .is_empty());
    }

    #[test]
    fn a_profile_is_built_once_and_again_only_when_the_secret_changes() {
        let built: Built<Arc<rustls::ClientConfig>> = Built::default();
        let profile = credentials(8883);
        let builds = std::cell::Cell::new(0);
        let build = |credentials: &ClaimThingCredentials| {
            built.get_or_build(credentials, || {
                builds.set(builds.get() + 1);
                tls_config(credentials).map(Arc::new)
            })
        };
        let first = build(&profile).expect("built");
        let again = build(&profile).expect("kept");
        assert!(Arc::ptr_eq(&first, &again), "the same configuration is reused");
        assert_eq!(builds.get(), 1);
        let rotated = credentials(8883);
        build(&rotated).expect("built for the new version");
        assert_eq!((builds.get(), built.len()), (2, 2));
        assert!(build(&ClaimThingCredentials {
            private_key_pem: "not a key".into(),
            ..profile.clone()
        })
        .is_err());
        assert_eq!(built.len(), 2, "a failed build is not kept");
        for port in 0..Built::<()>::KEPT as u16 * 2 {
            build(&ClaimThingCredentials {
                port: 10_000 + port,
                ..profile.clone()
            })
            .expect("built");
        }
        assert_eq!(built.len(), Built::<()>::KEPT, "bounded");
    }

    #[test]
    fn broken_key_material_is_a_credentials_error_without_the_material() {
        let mut creds = credentials(8883);
        creds.private_key_pem = "-----BEGIN PRIVATE KEY-----\nnot-a-key-SECRET\n-----END PRIVATE KEY-----\n".into();
        let err = tls_config(&creds).expect_err("refused");
        assert_eq!(err.code, "credentials_invalid");
        assert!(!err.message.contains("SECRET"));
        let mut mismatched = credentials(8883);
        mismatched.private_key_pem = credentials(8883).private_key_pem;
        assert_eq!(
            tls_config(&mismatched).expect_err("refused").code,
            "credentials_invalid"
        );
    }
}
