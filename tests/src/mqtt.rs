//! MQTT helpers for end-to-end tests: an observer that sees every message on a broker (`#`), and a
//! private Mosquitto broker a test can stop and start without disturbing others.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::pki::{Identity, LocalPki, OBSERVER};

pub type Messages = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Subscribed to `#` on a listener with the observer identity; records every message it sees.
pub struct Observer {
    pub messages: Messages,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Returns once the subscription is confirmed, so nothing published afterwards is missed.
    pub async fn start(pki: &LocalPki, port: u16) -> Result<Self, String> {
        let identity = pki.client(OBSERVER).map_err(|e| e.to_string())?;
        let ca = pki.ca_pem().map_err(|e| e.to_string())?;
        let client_id = format!("observer-{}", uuid::Uuid::new_v4().simple());
        let (client, mut events) = client(&client_id, "localhost", port, &ca, &identity)?;
        let messages: Messages = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let recorded = Arc::clone(&messages);
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe("#", QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(mut all) = recorded.lock() {
                            all.push((p.topic.clone(), p.payload.to_vec()));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .map_err(|_| "observer did not subscribe within 10 s".to_owned())?
            .map_err(|_| "observer stopped".to_owned())?;
        Ok(Self { messages, task })
    }

    /// Messages seen on topics that start with `prefix`.
    pub fn seen(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.messages
            .lock()
            .map(|all| all.iter().filter(|(t, _)| t.starts_with(prefix)).cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An MQTT client with a client certificate, like every party of the local stack uses.
pub fn client(
    client_id: &str,
    host: &str,
    port: u16,
    ca_pem: &str,
    identity: &Identity,
) -> Result<(AsyncClient, rumqttc::EventLoop), String> {
    let config = claim_shared::adapters::mqtt::client_tls(&identity.cert_pem, &identity.key_pem, Some(ca_pem))
        .map_err(|err| err.to_string())?;
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
    options.set_keep_alive(Duration::from_secs(30));
    Ok(AsyncClient::new(options, 16))
}

/// A Mosquitto of a test's own, with the local stack's PKI and staging ACL, on a free port.
pub struct PrivateBroker {
    pub port: u16,
    config: PathBuf,
    process: Option<Child>,
}

impl PrivateBroker {
    pub fn start(pki: &LocalPki, acl: &Path) -> Result<Self, String> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("broker-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config = dir.join("mosquitto.conf");
        let pki_dir = pki.dir().display().to_string();
        let text = format!(
            "per_listener_settings true\npersistence false\nuser root\nlog_dest stderr\n\
             listener {port} 127.0.0.1\nallow_anonymous false\ncafile {pki_dir}/ca.pem\n\
             certfile {pki_dir}/server.pem\nkeyfile {pki_dir}/server.key\nrequire_certificate true\n\
             use_identity_as_username true\nacl_file {}\nset_tcp_nodelay true\n",
            acl.display()
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let mut broker = Self {
            port,
            config,
            process: None,
        };
        broker.resume()?;
        Ok(broker)
    }

    /// Stops the broker: connections drop and new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port; returns once it accepts connections.
    pub fn resume(&mut self) -> Result<(), String> {
        let binary = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mosquitto: {e}"))?;
        self.process = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("mosquitto did not listen on {} within 5 s", self.port))
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}
