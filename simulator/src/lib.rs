//! An ExpressLink module as the programmer's guide describes it in the staging state (protocol
//! §1.3): it connects to the staging endpoint with its birth certificate, subscribes to exactly
//! `<ThingName>/expresslink_config`, and on `{"Endpoint": "<host>"}` stores the endpoint,
//! disconnects, and connects to the new endpoint with the same certificate. Anything else on the
//! topic is ignored (no documented behaviour; the module stays where it is).

use std::{collections::HashMap, sync::Arc, time::Duration};

use rumqttc::{
    tokio_rustls::rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    },
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

const RECONNECT_PAUSE: Duration = Duration::from_millis(300);

#[derive(Clone)]
pub struct ModuleConfig {
    /// The module's ThingName (its UID); also its MQTT client id.
    pub thing_name: String,
    pub staging_host: String,
    pub staging_port: u16,
    /// Birth certificate and key (PEM).
    pub cert_pem: String,
    pub key_pem: String,
    /// Roots the module trusts (its `RootCA` configuration).
    pub ca_pem: String,
    /// Where endpoint host names really are: `host → (address, port)`. Unlisted hosts are used as
    /// given, on port 8883.
    pub resolve: HashMap<String, (String, u16)>,
}

impl std::fmt::Debug for ModuleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleConfig")
            .field("thing_name", &self.thing_name)
            .field("staging", &(&self.staging_host, self.staging_port))
            .finish_non_exhaustive()
    }
}

/// What the module did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleEvent {
    /// Connected and subscribed to its configuration topic in the staging account.
    WaitingInStaging,
    /// A message arrived on the configuration topic (every one is reported, valid or not).
    Message { topic: String, payload: Vec<u8> },
    /// The message named a new endpoint: stored, and the module disconnects from staging.
    EndpointStored(String),
    /// Connected to the stored endpoint (the OEM account).
    ConnectedTo(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("MQTT: {0}")]
    Mqtt(String),
    #[error("connection refused: {0:?}")]
    Refused(ConnectReturnCode),
}

/// Runs the module until the task is dropped. Events go to `events` (a closed channel is ignored).
pub async fn run(config: ModuleConfig, events: mpsc::UnboundedSender<ModuleEvent>) -> Result<(), ModuleError> {
    let topic = format!("{}/expresslink_config", config.thing_name);
    let (client, mut eventloop) = connect(&config, &config.staging_host, config.staging_port)?;
    let endpoint = loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    return Err(ModuleError::Refused(ack.code));
                }
                client
                    .subscribe(topic.as_str(), QoS::AtLeastOnce)
                    .await
                    .map_err(|e| ModuleError::Mqtt(e.to_string()))?;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = events.send(ModuleEvent::WaitingInStaging);
            }
            Ok(Event::Incoming(Packet::Publish(message))) => {
                let _ = events.send(ModuleEvent::Message {
                    topic: message.topic.clone(),
                    payload: message.payload.to_vec(),
                });
                if message.topic == topic {
                    if let Some(endpoint) = endpoint_of(&message.payload) {
                        break endpoint;
                    }
                }
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Err(ModuleError::Refused(code)),
            // Like a module whose host reconnects after CONLOST: wait, then the next poll reconnects
            // (and the ConnAck above subscribes again).
            Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
        }
    };
    let _ = events.send(ModuleEvent::EndpointStored(endpoint.clone()));
    let _ = client.disconnect().await;
    // Let the DISCONNECT go out before the connection is dropped.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;

    let (host, port) = config
        .resolve
        .get(&endpoint)
        .cloned()
        .unwrap_or_else(|| (endpoint.clone(), 8883));
    let (_client, mut eventloop) = connect(&config, &host, port)?;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    return Err(ModuleError::Refused(ack.code));
                }
                let _ = events.send(ModuleEvent::ConnectedTo(endpoint.clone()));
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Err(ModuleError::Refused(code)),
            Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
        }
    }
}

/// `{"Endpoint": "<host>"}` → the host; anything else → `None`.
pub fn endpoint_of(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let endpoint = value.get("Endpoint")?.as_str()?;
    (!endpoint.is_empty()).then(|| endpoint.to_owned())
}

fn connect(config: &ModuleConfig, host: &str, port: u16) -> Result<(AsyncClient, EventLoop), ModuleError> {
    let tls = |e: &dyn std::fmt::Display| ModuleError::Tls(e.to_string());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(config.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(config.key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(config.ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| tls(&e))?;
    let mut options = MqttOptions::new(&config.thing_name, host, port);
    options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls_config))));
    options.set_keep_alive(Duration::from_secs(30));
    Ok(AsyncClient::new(options, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_message_moves_the_module() {
        assert_eq!(
            endpoint_of(br#"{"Endpoint":"a-ats.iot.x.amazonaws.com"}"#).as_deref(),
            Some("a-ats.iot.x.amazonaws.com")
        );
        assert_eq!(endpoint_of(br#"{"Endpoint" : "b"}"#).as_deref(), Some("b"));
        for other in [
            &br#"{"endpoint":"a"}"#[..],
            b"{}",
            b"not json",
            br#"{"Endpoint":5}"#,
            br#"{"Endpoint":""}"#,
        ] {
            assert_eq!(endpoint_of(other), None);
        }
    }
}
