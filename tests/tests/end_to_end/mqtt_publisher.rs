//! `mqtt` endpoint messages as AWS IoT's quotas allow them (docs/architecture.md, "How the endpoint
//! message is delivered"): the API never connects as a claim-thing; it answers `pending` at once,
//! and `claim-publisher`, fed by the table's stream, sends the messages over one connection it keeps
//! open across invocations. Checked in the staging broker's log: the vendor's client id connects
//! once for several claims, never twice in a second, never twice at once. At the adapter: a kept
//! connection carries batch after batch, and one the broker dropped is replaced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use claim_shared::{
    adapters::mqtt::MqttPublisher,
    domain::ids::{ConfigTopic, ThingName},
    ports::EndpointPublisher,
};
use claim_tests::{
    e2e::Stack,
    mqtt::{client, connections_of},
    pki,
};

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn broker_log(stack: &Stack) -> String {
    std::fs::read_to_string(stack.local.broker_log()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_answers_mqtt_claims_at_once_and_the_publisher_sends_them_over_one_kept_connection() {
    let stack = Stack::connect().await;
    let (vendor, claim_thing) = stack.new_vendor_with_profile(stack.local.staging_port).await;
    let user = unique("alice");
    let mut claim_ids = Vec::new();
    // One after another, each delivered before the next is claimed: every message is a batch, and
    // an invocation, of its own.
    for _ in 0..3 {
        let thing = stack.new_device(&vendor).await;
        let created = stack.claim(&user, &thing).await;
        assert_eq!(created.status, 202, "{:?}", created.body);
        assert_eq!(
            created.body["state"], "pending",
            "never published by the API: {:?}",
            created.body
        );
        let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
        stack
            .claim_until(&user, &claim_id, "endpoint_published", Duration::from_secs(15))
            .await;
        claim_ids.push(claim_id);
    }
    let connections = connections_of(&broker_log(&stack), &claim_thing.client_id);
    assert_eq!(
        connections.connects.len(),
        1,
        "three claims, one connection: {connections:?}"
    );
    assert_eq!(connections.quota_violations(), Vec::<String>::new());
    // The API said why it did not publish, one line per claim.
    let api_log = std::fs::read_to_string(&stack.local.api_log).unwrap();
    for claim_id in &claim_ids {
        let deferred = api_log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["event"] == "outbox_inline_deferred" && line["claim_id"] == claim_id.as_str())
            .collect::<Vec<_>>();
        assert_eq!(deferred.len(), 1, "{claim_id}");
        assert_eq!(deferred[0]["outcome"], "deferred");
        assert_eq!(deferred[0]["transport"], "mqtt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_connection_carries_batch_after_batch_and_one_the_broker_dropped_is_replaced() {
    let stack = Stack::connect().await;
    let (_, claim_thing) = stack.new_vendor_with_profile(stack.local.staging_port).await;
    let publisher = MqttPublisher::default();
    let batch = |n: usize| -> Vec<(ConfigTopic, Vec<u8>)> {
        (0..n)
            .map(|_| {
                let thing = ThingName::parse(&unique("kept-thing")).unwrap();
                (
                    ConfigTopic::for_device(&thing),
                    b"{\"Endpoint\":\"kept.example\"}".to_vec(),
                )
            })
            .collect()
    };
    let all_confirmed = |results: Vec<Result<(), claim_shared::domain::publish::PublishError>>| {
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    };
    all_confirmed(publisher.publish_batch(&claim_thing, &batch(5)).await);
    all_confirmed(publisher.publish_batch(&claim_thing, &batch(5)).await);
    let single = batch(1).remove(0);
    publisher.publish(&claim_thing, &single.0, &single.1).await.unwrap();
    let connections = connections_of(&broker_log(&stack), &claim_thing.client_id);
    assert_eq!(connections.connects.len(), 1, "{connections:?}");

    // Another client takes the client id over (as a second publisher would): the broker drops the
    // kept connection, and the next batch goes over a new one, at least a second after the last.
    // The intruder connects as the observer, so the run's quota check (`broker-quotas`) knows this
    // takeover was made on purpose.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let identity = stack.pki.client(pki::OBSERVER).unwrap();
    let ca = stack.pki.ca_pem().unwrap();
    let (intruder, mut events) = client(
        &claim_thing.client_id,
        "localhost",
        stack.local.staging_port,
        &ca,
        &identity,
    )
    .unwrap();
    loop {
        match events.poll().await.unwrap() {
            rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) => break,
            _ => continue,
        }
    }
    intruder.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), async { while events.poll().await.is_ok() {} }).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    all_confirmed(publisher.publish_batch(&claim_thing, &batch(5)).await);
    let connections = connections_of(&broker_log(&stack), &claim_thing.client_id);
    assert_eq!(connections.connects.len(), 3, "kept, intruder, new: {connections:?}");
    assert_eq!(connections.taken_over, 1, "{connections:?}");
    assert!(connections.most_per_second() <= 1, "{connections:?}");
}
