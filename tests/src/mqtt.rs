//! MQTT helpers for end-to-end tests: an observer that sees every message on a broker (`#`), and a
//! private Mosquitto broker a test can stop and start without disturbing others.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::pki::{Identity, LocalPki, OBSERVER};

pub type Messages = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// When each message arrived (topic, time), in the order they came.
pub type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

/// Subscribed to `#` on a listener with the observer identity; records every message it sees.
pub struct Observer {
    pub messages: Messages,
    pub arrivals: Arrivals,
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
        let arrivals: Arrivals = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (recorded, timed) = (Arc::clone(&messages), Arc::clone(&arrivals));
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
                        if let Ok(mut all) = timed.lock() {
                            all.push((p.topic.clone(), Instant::now()));
                        }
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
        Ok(Self {
            messages,
            arrivals,
            task,
        })
    }

    /// When each message on a topic that starts with `prefix` arrived.
    pub fn arrivals(&self, prefix: &str) -> Vec<(String, Instant)> {
        self.arrivals
            .lock()
            .map(|all| all.iter().filter(|(t, _)| t.starts_with(prefix)).cloned().collect())
            .unwrap_or_default()
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

/// What a Mosquitto log (`connection_messages true`) says about the connections of one client id:
/// when each CONNECT came (the log's whole seconds), how many connections were open at most, and
/// how many times a new connection took over one still open (AWS IoT disconnects the older one too).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Connections {
    pub connects: Vec<u64>,
    pub most_open: usize,
    pub taken_over: usize,
}

impl Connections {
    /// The most CONNECTs within one second.
    pub fn most_per_second(&self) -> usize {
        let mut most = 0;
        let mut run = 0;
        let mut last = None;
        for second in &self.connects {
            run = if last == Some(*second) { run + 1 } else { 1 };
            last = Some(*second);
            most = most.max(run);
        }
        most
    }

    /// Where these connections broke AWS IoT Core's quotas for one client id: more than one
    /// CONNECT in a second (not adjustable) or two connections at once.
    pub fn quota_violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        if self.most_per_second() > 1 {
            violations.push(format!("{} CONNECTs within one second", self.most_per_second()));
        }
        if self.most_open > 1 || self.taken_over > 0 {
            violations.push(format!(
                "two connections at once (at most {} open, {} taken over)",
                self.most_open, self.taken_over
            ));
        }
        violations
    }
}

/// The connections of `client_id` in the text of a Mosquitto log.
pub fn connections_of(log: &str, client_id: &str) -> Connections {
    let connected = format!(" as {client_id} (");
    let client = format!("Client {client_id} ");
    let mut seen = Connections::default();
    let mut open = 0usize;
    for line in log.lines() {
        let Some((second, message)) = line.split_once(": ") else {
            continue;
        };
        if message.starts_with("New client connected") && message.contains(&connected) {
            seen.connects.push(second.trim().parse().unwrap_or_default());
            open += 1;
            seen.most_open = seen.most_open.max(open);
        } else if message.starts_with(&client) {
            if message.contains("already connected, closing old connection") {
                seen.taken_over += 1;
            }
            if message.contains("closed its connection")
                || message.contains("disconnect")
                || message.contains("already connected")
            {
                open = open.saturating_sub(1);
            }
        } else if message.starts_with("Socket error on client ") && message.contains(&format!(" {client_id},")) {
            open = open.saturating_sub(1);
        }
    }
    seen
}

/// AWS IoT's per-client-id quotas over every claim-thing connection in a Mosquitto log from
/// `since` (epoch seconds) on: one line per client id that connected more than once in a second,
/// held two connections at once, or was taken over. A client id that also connected under another
/// identity than `claim-thing` is left out: a test took it over on purpose.
pub fn claim_thing_quota_violations(log: &str, since: u64) -> Vec<String> {
    let recent: String = log
        .lines()
        .filter(|line| {
            line.split_once(": ")
                .and_then(|(second, _)| second.trim().parse::<u64>().ok())
                .is_some_and(|second| second >= since)
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    let mut identities: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> = Default::default();
    for line in recent.lines() {
        let Some(rest) = line.split_once(": New client connected from ").map(|(_, rest)| rest) else {
            continue;
        };
        let Some((client_id, user)) = rest
            .split_once(" as ")
            .and_then(|(_, rest)| rest.split_once(" ("))
            .and_then(|(id, rest)| rest.split_once("u'").map(|(_, user)| (id, user)))
        else {
            continue;
        };
        let user = user.split('\'').next().unwrap_or_default();
        identities.entry(client_id).or_default().insert(user);
    }
    identities
        .iter()
        .filter(|(_, users)| users.len() == 1 && users.contains(crate::pki::CLAIM_THING))
        .flat_map(|(client_id, _)| {
            connections_of(&recent, client_id)
                .quota_violations()
                .into_iter()
                .map(move |violation| format!("{client_id}: {violation}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_claim_thing_client_id_is_held_to_the_quotas_except_one_a_test_took_over() {
        let log = "\
90: New client connected from 127.0.0.1:1 as old (p2, c1, k30, u'claim-thing').
90: New client connected from 127.0.0.1:1 as old (p2, c1, k30, u'claim-thing').
100: New client connected from 127.0.0.1:1 as kept (p2, c1, k30, u'claim-thing').
100: New client connected from 127.0.0.1:2 as fast (p2, c1, k30, u'claim-thing').
100: Client fast closed its connection.
100: New client connected from 127.0.0.1:3 as fast (p2, c1, k30, u'claim-thing').
101: New client connected from 127.0.0.1:4 as taken (p2, c1, k30, u'claim-thing').
103: Client taken already connected, closing old connection.
103: New client connected from 127.0.0.1:5 as taken (p2, c1, k30, u'claim-thing').
104: New client connected from 127.0.0.1:6 as intruded (p2, c1, k30, u'claim-thing').
106: Client intruded already connected, closing old connection.
106: New client connected from 127.0.0.1:7 as intruded (p2, c1, k30, u'observer').
107: New client connected from 127.0.0.1:8 as device-1 (p2, c1, k30, u'device-1').
107: New client connected from 127.0.0.1:9 as device-1 (p2, c1, k30, u'device-1').
";
        let violations = claim_thing_quota_violations(log, 100);
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(
            violations[0].starts_with("fast: 2 CONNECTs within one second"),
            "{violations:?}"
        );
        assert!(
            violations[1].starts_with("taken: two connections at once"),
            "{violations:?}"
        );
        assert_eq!(
            claim_thing_quota_violations(log, 91),
            violations,
            "lines before `since` are not read"
        );
        assert_eq!(
            claim_thing_quota_violations(log, 0).len(),
            4,
            "and `old` connected twice in a second, two at once"
        );
    }

    #[test]
    fn a_broker_log_tells_connects_per_second_and_takeovers() {
        let log = "\
100: New client connected from 127.0.0.1:1 as thing-1 (p2, c1, k30, u'claim-thing').
100: Client thing-1 closed its connection.
101: New client connected from 127.0.0.1:2 as thing-1 (p2, c1, k30, u'claim-thing').
101: New client connected from 127.0.0.1:3 as other (p2, c1, k30, u'claim-thing').
101: Client thing-1 disconnected.
102: Client thing-1 already connected, closing old connection.
102: New client connected from 127.0.0.1:4 as thing-1 (p2, c1, k30, u'claim-thing').
102: New client connected from 127.0.0.1:5 as thing-1 (p2, c1, k30, u'claim-thing').
";
        let seen = connections_of(log, "thing-1");
        assert_eq!(seen.connects, [100, 101, 102, 102]);
        assert_eq!(seen.most_per_second(), 2);
        assert_eq!(seen.taken_over, 1);
        assert_eq!(seen.most_open, 2);
        assert_eq!(seen.quota_violations().len(), 2);
        let other = connections_of(log, "other");
        assert_eq!(
            (other.connects.len(), other.quota_violations()),
            (1, Vec::<String>::new())
        );
    }
}
