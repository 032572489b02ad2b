//! One MQTT connection as the claim-thing, kept open across batches (and, in a warm Lambda
//! execution environment, across invocations): the publisher sends a vendor's messages over it
//! without a new CONNECT each time. A task of its own drives the connection and hands each PUBACK
//! to the publish waiting for it; when the connection ends, every publish still waiting fails with
//! the reason, and the session is dead (the publisher connects anew).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use rumqttc::{
    tokio_rustls::rustls, AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};

use crate::domain::{
    ids::ConfigTopic,
    publish::{ClaimThingCredentials, PublishError},
};

use super::{pace::Pace, MAX_IN_FLIGHT};

/// A session unused for longer is closed and replaced rather than reused: AWS IoT drops a
/// connection silent for 1.5× its keep-alive (30 s here), and a frozen Lambda environment sends no
/// PINGREQ, so an older one may be gone without the process knowing.
pub const REUSE_WITHIN: Duration = Duration::from_secs(20);

const KEEP_ALIVE: Duration = Duration::from_secs(30);

type Waiter = oneshot::Sender<Result<(), PublishError>>;

/// Publishes waiting for their PUBACK: sent ones in order until the connection reports their packet
/// id, then by packet id. `ended`: why the connection ended (no more waiters are taken).
#[derive(Default)]
struct Acks {
    unassigned: VecDeque<Waiter>,
    by_packet: HashMap<u16, Waiter>,
    ended: Option<PublishError>,
}

impl Acks {
    fn end(&mut self, reason: PublishError) {
        for waiter in self.unassigned.drain(..).chain(self.by_packet.drain().map(|(_, w)| w)) {
            let _ = waiter.send(Err(reason.clone()));
        }
        self.ended = Some(reason);
    }
}

pub struct Session {
    client: AsyncClient,
    acks: Arc<Mutex<Acks>>,
    driver: JoinHandle<()>,
    /// The profile (secret version) it was opened with: a rotated secret gets a new session.
    pub profile: [u8; 32],
    /// When it last finished a batch.
    pub last_used: Instant,
    /// When the next publish may go out (AWS IoT: 100 publishes per second per connection).
    pace: Pace,
}

impl Session {
    /// Opens the connection (the CONNECT goes out at once: the caller keeps the client id's
    /// connect rate).
    pub fn open(credentials: &ClaimThingCredentials, tls: Arc<rustls::ClientConfig>, profile: [u8; 32]) -> Self {
        let mut options = MqttOptions::new(&credentials.client_id, &credentials.staging_endpoint, credentials.port);
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)));
        options.set_clean_session(true);
        options.set_keep_alive(KEEP_ALIVE);
        options.set_inflight(MAX_IN_FLIGHT);
        let (client, mut events) = AsyncClient::new(options, usize::from(MAX_IN_FLIGHT));
        let acks = Arc::new(Mutex::new(Acks::default()));
        let driven = Arc::clone(&acks);
        let driver = tokio::spawn(async move {
            let reason = loop {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(packet))) => {
                        let mut acks = lock(&driven);
                        if let Some(waiter) = acks.unassigned.pop_front() {
                            acks.by_packet.insert(packet, waiter);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(waiter) = lock(&driven).by_packet.remove(&ack.pkid) {
                            let _ = waiter.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code != ConnectReturnCode::Success => {
                        break PublishError::new("staging_refused", format!("connection refused: {:?}", ack.code));
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                        break PublishError::new("staging_unreachable", "the connection was closed");
                    }
                    Ok(_) => {}
                    Err(err) => break connection_error(&err),
                }
            };
            lock(&driven).end(reason);
        });
        let now = Instant::now();
        Self {
            client,
            acks,
            driver,
            profile,
            last_used: now,
            pace: Pace::new(now),
        }
    }

    /// Whether the connection is still up, as far as this process knows.
    pub fn is_alive(&self) -> bool {
        lock(&self.acks).ended.is_none() && !self.driver.is_finished()
    }

    /// Sends `messages` QoS 1, paced at AWS IoT's 100 a second (`pace.rs`; up to [`MAX_IN_FLIGHT`]
    /// unacknowledged), and waits for each PUBACK until `by`: each one's result, in order, and
    /// whether all were settled (confirmed, or failed because the connection ended). With
    /// publishes left unsettled at `by`, the session must not be reused: their PUBACKs could
    /// still come.
    pub async fn send(
        &mut self,
        messages: &[(ConfigTopic, Vec<u8>)],
        by: Instant,
    ) -> (Vec<Result<(), PublishError>>, bool) {
        let mut waiting: Vec<Option<oneshot::Receiver<Result<(), PublishError>>>> = Vec::with_capacity(messages.len());
        let mut results: Vec<Option<Result<(), PublishError>>> = vec![None; messages.len()];
        let feed = async {
            for (i, (topic, payload)) in messages.iter().enumerate() {
                tokio::time::sleep_until(self.pace.next()).await;
                self.pace.sent(Instant::now());
                let (waiter, receiver) = oneshot::channel();
                {
                    let mut acks = lock(&self.acks);
                    if let Some(reason) = &acks.ended {
                        results[i] = Some(Err(reason.clone()));
                        break;
                    }
                    acks.unassigned.push_back(waiter);
                }
                if self
                    .client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .is_err()
                {
                    // The connection's task is gone: nothing more goes out.
                    lock(&self.acks).unassigned.pop_back();
                    results[i] = Some(Err(PublishError::new("staging_unreachable", "the connection ended")));
                    break;
                }
                waiting.push(Some(receiver));
            }
        };
        let all_fed = tokio::time::timeout_at(by, feed).await.is_ok();
        for (i, receiver) in waiting.iter_mut().enumerate() {
            let Some(pending) = receiver.take() else { continue };
            results[i] = match tokio::time::timeout_at(by, pending).await {
                Ok(Ok(result)) => Some(result),
                Ok(Err(_)) => Some(Err(PublishError::new("staging_unreachable", "the connection ended"))),
                Err(_) => None,
            };
        }
        self.last_used = Instant::now();
        let settled = all_fed && results.iter().all(Option::is_some);
        let results = results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(PublishError::new(
                        "staging_timeout",
                        "no PUBACK from the staging endpoint within the delivery budget",
                    ))
                })
            })
            .collect();
        (results, settled)
    }

    /// A polite DISCONNECT, then the connection is dropped.
    pub async fn close(self) {
        if self.is_alive() && self.client.disconnect().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while !self.driver.is_finished() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("alive", &self.is_alive())
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Drops the event loop, and with it the TCP connection.
        self.driver.abort();
    }
}

fn lock(acks: &Mutex<Acks>) -> std::sync::MutexGuard<'_, Acks> {
    // Only whole entries are moved under the lock: a poisoned one holds consistent data.
    acks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn connection_error(err: &ConnectionError) -> PublishError {
    match err {
        ConnectionError::ConnectionRefused(code) => {
            PublishError::new("staging_refused", format!("connection refused: {code:?}"))
        }
        ConnectionError::Io(io) => PublishError::new("staging_unreachable", io.to_string()),
        ConnectionError::Tls(tls) => PublishError::new("staging_tls", tls.to_string()),
        other => PublishError::new("staging_unreachable", other.to_string()),
    }
}
