//! A launch-day burst, as Lambda would serve it: 400 claims of one vendor's devices over `mqtt`,
//! accepted by 8 concurrent `claim-api` instances (the built binary under Runtime API emulators,
//! fed API Gateway REST events with a Cognito authorizer context), delivered by ONE `claim-publisher`
//! process fed by the table's change stream, as deployed (reserved concurrency 1). Every claim is
//! accepted, every device gets its endpoint message exactly once and its claim records it, and the
//! broker's log shows the vendor's client id connecting at most once in any second and never
//! holding two connections (AWS IoT Core's quotas): the API never connects as the claim-thing, the
//! publisher keeps its one connection. A test binary of its own, so it runs alone; on a DynamoDB
//! Local of its own (the local stack's, after the tests before it, is slower and would be measured
//! too) and the local stack's moto and Mosquitto (`scripts/dev.sh test`). About 30 s with debug
//! builds on 2 cores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::atomic::Ordering, time::Duration};

use claim_shared::{
    domain::{claim::ClaimState, ids::ClaimId},
    ports::OwnershipStore,
};
use claim_tests::{
    lambda_bench::{built_beside, publisher::StreamFedPublisher, round, Setup, Side, Transport},
    mqtt::Observer,
};

const CLAIMS: usize = 400;
const INSTANCES: usize = 8;

/// How long after the last answer the messages may still come (debug builds, 2 loaded cores).
const DELIVER_WITHIN: Duration = Duration::from_secs(60);

/// A claim answered `503` (DynamoDB Local too slow for a request's budget on a loaded machine) is
/// sent again, as the API contract says an app may, up to this many times.
const RETRIES: u32 = 5;

/// One burst on a table of its own; the round's figures and every message the observer saw of the
/// vendor.
struct Burst {
    /// Its DynamoDB Local, stopped when the test is done.
    _setup: Setup,
    /// Kept running until the test is done: it records the last batch's results after the
    /// messages went out.
    publisher: StreamFedPublisher,
    result: round::RoundResult,
    codes: Vec<String>,
    seen: Vec<(String, Vec<u8>)>,
    side: Side,
    summary: serde_json::Value,
}

async fn burst() -> Burst {
    let setup = Setup::connect().await;
    let side = setup.side().await;
    let (vendor, client_id) = setup.new_vendor("burst").await;
    let codes = setup.import(&side.table, &vendor, CLAIMS).await;
    let observer = Observer::start(&setup.pki, setup.local.staging_port).await.unwrap();
    let (publisher, publisher_side) = setup
        .stream_fed_publisher(&built_beside("claim-publisher"), &side)
        .await;
    let plan = round::Plan {
        implementation: "claim-api",
        runtime: setup.function(&built_beside("claim-api"), &side),
        side: &side,
        vendor: &vendor,
        client_id: &client_id,
        engine_pid: Some(side.engine_pid()),
        transport: Transport::Mqtt,
        moto_url: &setup.local.moto_url,
        instances: INSTANCES,
        codes: codes.clone(),
        deliver_within: DELIVER_WITHIN,
        retries: RETRIES,
    };
    let result = round::run(
        plan,
        &observer,
        || setup.broker_log(),
        Some((&publisher, &publisher_side)),
    )
    .await;
    let summary = serde_json::json!({
        "statuses": result.statuses, "repeated_after_503": result.repeated_after_503,
        "answered_published": result.answered_published,
        "delivered": result.delivered, "duplicates": result.duplicates,
        "messages_per_second": result.messages_per_second,
        "last_message_after_last_answer_ms": result.last_message_after_last_answer_ms,
        "connects": result.connects, "most_connects_per_second": result.most_connects_per_second,
        "quota_violations": result.quota_violations, "publisher": result.publisher,
    });
    eprintln!("burst: {summary}");
    Burst {
        _setup: setup,
        publisher,
        seen: observer.seen(&format!("{vendor}-")),
        result,
        codes,
        side,
        summary,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_400_claims_from_8_instances_is_delivered_once_each_recorded_and_within_the_quotas() {
    let burst = burst().await;
    let (result, summary) = (&burst.result, &burst.summary);

    // Every claim accepted (`202`; `200` for a repeat whose first try was answered `503` although
    // its transaction landed), no claim lost: each device's message exactly once.
    let accepted = result.statuses.get(&202).copied().unwrap_or_default();
    let repeated = result.statuses.get(&200).copied().unwrap_or_default();
    assert_eq!(accepted + repeated, CLAIMS, "{summary}");
    assert!(repeated <= result.repeated_after_503 as usize, "{summary}");
    for code in &burst.codes {
        let topic = format!("{code}/expresslink_config");
        let count = burst.seen.iter().filter(|(t, _)| *t == topic).count();
        assert_eq!(count, 1, "{code}: {count} messages; {summary}");
    }
    assert_eq!(burst.seen.len(), CLAIMS, "{summary}");

    // And each claim records its delivery (within a minute in all: the publisher records a batch's
    // results after its messages went out, one write per claim, on a loaded DynamoDB Local).
    let store = burst.side.table.store();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    for invocation in &result.invocations {
        let claim_id = ClaimId::parse(&invocation.claim_id).unwrap();
        let mut state = None;
        while std::time::Instant::now() < until || state.is_none() {
            let claim = store.claim(&claim_id).await.unwrap().unwrap();
            state = Some(claim.state);
            if claim.state == ClaimState::EndpointPublished {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(state, Some(ClaimState::EndpointPublished), "{}", invocation.code);
    }

    // The operators' view is whole: every confirmed message is a value of `ClaimToPublishMs` in
    // the publisher's metric documents (an invocation publishes hundreds, more than the metrics
    // collector keeps between two documents), and the publisher wrote no ERROR line.
    let counts = &burst.publisher.counts;
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while counts.claim_to_publish_values.load(Ordering::Relaxed) < CLAIMS as u64 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        counts.claim_to_publish_values.load(Ordering::Relaxed),
        CLAIMS as u64,
        "{summary}"
    );
    let errors = counts.error_lines.lock().unwrap().clone();
    assert!(errors.is_empty(), "{errors:?}");

    // At most one CONNECT a second, never two connections at once, for the vendor's client id.
    assert_eq!(result.quota_violations, Vec::<String>::new(), "{summary}");
    assert!(
        result.connects <= 2,
        "one kept connection (a second if it was replaced): {summary}"
    );
}
