//! The three publishing transports on the running local stack (`scripts/dev.sh`):
//!
//! - `https`: the functions publish through `aws-sdk-iotdataplane` to nginx on `HTTPS_STAGING_PORT`,
//!   which requires a client certificate of the local CA (real mutual TLS) and passes the request to
//!   moto's IoT data plane; the message is read back from moto's request recording.
//! - `iam`: the functions publish to moto with requests signed by their own credentials.
//! - `mqtt`: as in `claim_end_to_end.rs`.
//!
//! Certificates the endpoint must refuse (another CA, expired, none) are tried by driving the outbox
//! library directly, on a table of the test's own, with a secret cache of 1 ms: so the corrected
//! secret is read at the next attempt, without waiting for the functions' 5-minute cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use claim_shared::{
    adapters::{iotdata::HttpsPublisher, mqtt::MqttPublisher},
    domain::registry::NewDevice,
    domain::{
        claim::ClaimState,
        history::Actor,
        ids::{ConfigTopic, ThingName, UserId},
        publish::ClaimThingCredentials,
    },
    ports::EndpointPublisher,
    service::ClaimRequest,
};
use claim_tests::{
    e2e::{delivered_history, Answer, OwnOutbox, Stack},
    iotdata::{https_profile, iam_profile, moto_publishes, wait_for_moto_publishes},
    local_claim_thing_secret, pki,
};
use expresslink_sim::ModuleEvent;
use rumqttc::tokio_rustls::rustls;

fn endpoint_message(endpoint: &str) -> Vec<u8> {
    format!("{{\"Endpoint\":\"{endpoint}\"}}").into_bytes()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_with_the_https_transport_is_published_over_mutual_tls() {
    let stack = Stack::connect().await;
    let vendor = unique("https");
    let identity = stack.pki.client(pki::CLAIM_THING).unwrap();
    let profile = https_profile(&stack.pki, &identity, stack.local.https_staging_port).unwrap();
    stack.put_secret(&vendor, &profile).await;
    let thing = stack.new_device(&vendor).await;
    let user = unique("alice");

    let created = stack.claim(&user, &thing).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
    stack
        .claim_until(&user, &claim_id, "endpoint_published", Duration::from_secs(20))
        .await;

    let topic = format!("{thing}/expresslink_config");
    let received = moto_publishes(&stack.local.moto_url, &topic).await.unwrap();
    assert_eq!(received.len(), 1, "one publish on exactly this topic: {received:?}");
    let message = &received[0];
    assert_eq!(message.payload, endpoint_message(&stack.local.oem_endpoint));
    assert_eq!(message.qos.as_deref(), Some("1"));
    // It came through the mutual-TLS endpoint, authenticated by the claim-thing's certificate.
    assert_eq!(message.header("x-client-verify"), Some("SUCCESS"));
    assert!(
        message
            .header("x-client-subject")
            .is_some_and(|dn| dn.contains("CN=claim-thing")),
        "{:?}",
        message.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_with_the_iam_transport_is_published_with_signed_requests() {
    let stack = Stack::connect().await;
    let vendor = unique("iam");
    stack.put_secret(&vendor, &iam_profile()).await;
    let thing = stack.new_device(&vendor).await;
    let user = unique("alice");

    let created = stack.claim(&user, &thing).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
    stack
        .claim_until(&user, &claim_id, "endpoint_published", Duration::from_secs(20))
        .await;

    let received = moto_publishes(&stack.local.moto_url, &format!("{thing}/expresslink_config"))
        .await
        .unwrap();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].payload, endpoint_message(&stack.local.oem_endpoint));
    assert_eq!(received[0].qos.as_deref(), Some("1"));
    // Signed by the function (SigV4 for the IoT data plane), not passed through the TLS front end.
    let authorization = received[0].header("authorization").unwrap_or_default();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=test/")
            && authorization.contains("/iotdata/aws4_request")
            && !authorization.ends_with("Signature=0"),
        "{authorization}"
    );
    assert!(received[0].header("x-amz-date").is_some());
    assert_eq!(received[0].header("x-client-verify"), None);
}

/// A claim answer with what differs between two claims (ids, names, times) replaced.
fn normalized(answer: &Answer, claim_id: &str, thing: &str, user: &str) -> (u16, serde_json::Value) {
    fn walk(value: &serde_json::Value, replace: &dyn Fn(&str) -> Option<String>) -> serde_json::Value {
        match value {
            serde_json::Value::String(s) => serde_json::Value::String(replace(s).unwrap_or_else(|| s.clone())),
            serde_json::Value::Array(items) => items.iter().map(|v| walk(v, replace)).collect(),
            serde_json::Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), walk(v, replace))).collect(),
            other => other.clone(),
        }
    }
    let replace = |s: &str| {
        if s == claim_id {
            Some("<claim>".to_owned())
        } else if s == thing {
            Some("<thing>".to_owned())
        } else if s == user {
            Some("<user>".to_owned())
        } else if time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok() {
            Some("<time>".to_owned())
        } else if s.contains(claim_id) {
            Some(s.replace(claim_id, "<claim>"))
        } else {
            None
        }
    };
    (answer.status, walk(&answer.body, &replace))
}

/// What one transport's claim looked like from the app: the POST answer, the claim once
/// provisioned (with its history), and the device list.
async fn claim_end_to_end(stack: &Stack, transport: &str) -> Vec<(u16, serde_json::Value)> {
    let vendor = unique(transport);
    let profile = match transport {
        "mqtt" => local_claim_thing_secret(&stack.pki, stack.local.staging_port).unwrap(),
        "https" => https_profile(
            &stack.pki,
            &stack.pki.client(pki::CLAIM_THING).unwrap(),
            stack.local.https_staging_port,
        )
        .unwrap(),
        _ => iam_profile(),
    };
    stack.put_secret(&vendor, &profile).await;
    let thing = stack.new_device(&vendor).await;
    let user = unique("alice");
    let mut module = stack.module(&thing, stack.local.staging_port).await;

    let created = stack.claim(&user, &thing).await;
    assert_eq!(created.status, 202, "{transport}: {:?}", created.body);
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
    let published = stack
        .wait_for_claim(&user, &claim_id, Duration::from_secs(20), |a| {
            a.body["state"] != "pending"
        })
        .await;
    // With mqtt the module may already have moved and the claim be provisioned.
    assert!(
        published.body["state"] == "endpoint_published" || published.body["state"] == "provisioned",
        "{transport}: {:?}",
        published.body
    );
    delivered_history(&published.body).unwrap_or_else(|states| panic!("{transport}: {states:?}"));

    let topic = format!("{thing}/expresslink_config");
    let message = endpoint_message(&stack.local.oem_endpoint);
    if transport != "mqtt" {
        // AWS IoT hands an HTTPS publish to the topic's MQTT subscribers; locally moto keeps it, so
        // the test forwards what moto received to the staging broker, as the claim-thing.
        let received = wait_for_moto_publishes(&stack.local.moto_url, &topic, 1, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(received.len(), 1, "{transport}: {received:?}");
        assert_eq!(received[0].payload, message, "{transport}");
        let claim_thing = ClaimThingCredentials::parse(
            &local_claim_thing_secret(&stack.pki, stack.local.staging_port)
                .unwrap()
                .to_string(),
        )
        .unwrap();
        let topic = ConfigTopic::for_device(&ThingName::parse(&thing).unwrap());
        MqttPublisher::default()
            .publish(&claim_thing, &topic, &received[0].payload)
            .await
            .unwrap();
    } else {
        assert!(
            moto_publishes(&stack.local.moto_url, &topic).await.unwrap().is_empty(),
            "mqtt does not use the data plane"
        );
    }
    module
        .wait_for(Duration::from_secs(15), |e| {
            *e == ModuleEvent::ConnectedTo(stack.local.oem_endpoint.clone())
        })
        .await;
    assert_eq!(module.messages(), [(topic.clone(), message)], "{transport}");
    let provisioned = stack
        .claim_until(&user, &claim_id, "provisioned", Duration::from_secs(20))
        .await;
    assert_eq!(
        provisioned.body["state"], "provisioned",
        "{transport}: {:?}",
        provisioned.body
    );
    let devices = stack.call("GET", "/v1/devices", &user, None).await;

    [created, provisioned, devices]
        .iter()
        .map(|answer| normalized(answer, &claim_id, &thing, &user))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_claim_with_each_transport_gives_the_same_answers_and_history() {
    let stack = Stack::connect().await;
    let mqtt = claim_end_to_end(&stack, "mqtt").await;
    let https = claim_end_to_end(&stack, "https").await;
    let iam = claim_end_to_end(&stack, "iam").await;

    // The API publishes a new https/iam claim in the request (the 202 says `endpoint_published`,
    // or `pending` if that publish failed or was cut short); an mqtt claim is answered `pending`
    // and the stream-fed publisher sends it. On a fast machine the
    // module may even have arrived before the API answers (`provisioned`). And the arrival can be
    // recorded before the publisher's report, which is then dropped: `endpoint_published` comes
    // before `provisioned`, or not at all. Either way it is the same claim; apart from that
    // history, everything after the publish must match exactly.
    for (name, run) in [("mqtt", &mqtt), ("https", &https), ("iam", &iam)] {
        let state = &run[0].1["state"];
        assert!(
            state == "endpoint_published" || state == "pending" || state == "provisioned",
            "{name}: {:?}",
            run[0]
        );
        assert_eq!(run[0].0, 202, "{name}");
        delivered_history(&run[1].1).unwrap_or_else(|states| panic!("{name}: {states:?}"));
        assert_eq!(run[1].1["state"], "provisioned", "{name}");
    }
    let without_history = |answers: &[(u16, serde_json::Value)]| -> Vec<(u16, serde_json::Value)> {
        answers
            .iter()
            .map(|(status, body)| {
                let mut body = body.clone();
                if let Some(fields) = body.as_object_mut() {
                    fields.remove("history");
                }
                (*status, body)
            })
            .collect()
    };
    assert_eq!(
        without_history(&mqtt[1..]),
        without_history(&https[1..]),
        "mqtt and https differ"
    );
    assert_eq!(
        without_history(&mqtt[1..]),
        without_history(&iam[1..]),
        "mqtt and iam differ"
    );
    let same_shape = |run: &[(u16, serde_json::Value)]| {
        let mut first = run[0].1.clone();
        first["state"] = "<state>".into();
        first["history"] = serde_json::Value::Null;
        first
    };
    assert_eq!(same_shape(&mqtt), same_shape(&https));
    assert_eq!(same_shape(&mqtt), same_shape(&iam));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_certificate_keeps_the_claim_pending_until_the_right_secret_is_back() {
    let stack = Stack::connect().await;
    let own = OwnOutbox::new().await;
    let port = stack.local.https_staging_port;
    let vendor = unique("https-refused");
    let thing = ThingName::parse(&unique("e2e")).unwrap();
    own.claims
        .import(
            &NewDevice {
                thing_name: thing.clone(),
                vendor: vendor.clone(),
                sku: None,
                code_hash: None,
                allow_thing_name: None,
                code_as_thing_name: None,
            },
            Actor::Operator("test".into()),
        )
        .await
        .unwrap();
    let claim = own
        .claims
        .claim(&ClaimRequest {
            user: UserId::parse("alice").unwrap(),
            code: thing.clone().into(),
            endpoints: std::sync::Arc::new(claim_shared::domain::endpoints::EndpointPlan::single(
                stack.local.oem_endpoint.clone(),
            )),
            region_hint: None,
            idempotency_key: None,
        })
        .await
        .unwrap()
        .claim()
        .clone();
    let topic = format!("{thing}/expresslink_config");

    let right = https_profile(&stack.pki, &stack.pki.client(pki::CLAIM_THING).unwrap(), port).unwrap();
    let foreign_ca = https_profile(
        &stack.pki,
        &pki::LocalPki::rogue_client(pki::CLAIM_THING).unwrap(),
        port,
    )
    .unwrap();
    let expired = https_profile(&stack.pki, &stack.pki.expired_client(pki::CLAIM_THING).unwrap(), port).unwrap();
    let mut no_certificate = right.clone();
    no_certificate.as_object_mut().unwrap().remove("certificate_pem");
    no_certificate.as_object_mut().unwrap().remove("private_key_pem");

    let cases = [
        ("a certificate of another CA", foreign_ca, "staging_refused"),
        ("an expired certificate", expired, "staging_refused"),
        ("no certificate", no_certificate, "credentials_invalid"),
    ];
    for (attempt, (case, profile, code)) in cases.into_iter().enumerate() {
        own.put_profile(&vendor, &profile).await;
        let done = own.claims.publish_now(&claim).await.unwrap();
        let report = done.report;
        assert_eq!((report.published, report.failed), (0, 1), "{case}: {report:?}");
        let after = done.claim.expect("the claim as the attempt left it");
        assert_eq!(after.state, ClaimState::Pending, "{case}");
        assert_eq!(after.failure.as_ref().map(|f| f.code.as_str()), Some(code), "{case}");
        assert_eq!(after.publish_attempts, u32::try_from(attempt + 1).unwrap(), "{case}");
        assert!(after.next_publish_at.is_some(), "{case}: still owes the publish");
        assert!(
            moto_publishes(&stack.local.moto_url, &topic).await.unwrap().is_empty(),
            "{case}: nothing reached the data plane"
        );
    }

    own.put_profile(&vendor, &right).await;
    let done = own.claims.publish_now(&claim).await.unwrap();
    let report = done.report;
    assert_eq!((report.published, report.failed), (1, 0), "{report:?}");
    let delivered = done.claim.expect("the claim as the delivery left it");
    assert_eq!(delivered.state, ClaimState::EndpointPublished);
    assert_eq!(delivered.failure, None);
    assert_eq!(delivered.next_publish_at, None);
    let states: Vec<ClaimState> = delivered.history.iter().map(|h| h.state).collect();
    assert_eq!(states, [ClaimState::Pending, ClaimState::EndpointPublished]);
    let received = moto_publishes(&stack.local.moto_url, &topic).await.unwrap();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].payload, endpoint_message(&stack.local.oem_endpoint));
}

fn tls_without_client_certificate(ca_pem: &str) -> rustls::ClientConfig {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_staging_endpoint_answers_a_refused_certificate_with_a_failed_publish_not_a_crash() {
    let stack = Stack::connect().await;
    let thing = ThingName::parse(&unique("e2e")).unwrap();
    let topic = ConfigTopic::for_device(&thing);
    let https = HttpsPublisher::default();

    // A TLS client presenting no certificate at all: the endpoint answers HTTP 400 (an HTML page).
    let err = https
        .publish_with(
            tls_without_client_certificate(&stack.pki.ca_pem().unwrap()),
            "localhost",
            stack.local.https_staging_port,
            &topic,
            b"{}",
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code, "staging_refused", "{err}");
    assert!(
        err.message.contains("HTTP 400")
            && err
                .message
                .contains("AWS error code none: 400 No required SSL certificate was sent"),
        "{err}"
    );

    // Another CA's certificate: the same, through the profile path.
    let rogue = https_profile(
        &stack.pki,
        &pki::LocalPki::rogue_client(pki::CLAIM_THING).unwrap(),
        stack.local.https_staging_port,
    )
    .unwrap();
    let rogue = ClaimThingCredentials::parse(&rogue.to_string()).unwrap();
    let err = https.publish(&rogue, &topic, b"{}").await.expect_err("refused");
    assert_eq!(err.code, "staging_refused", "{err}");
    assert!(err.message.contains("HTTP 400"), "{err}");

    // A server the local CA did not sign (the endpoint's certificate is not trusted): a TLS failure.
    let mut untrusted = https_profile(
        &stack.pki,
        &stack.pki.client(pki::CLAIM_THING).unwrap(),
        stack.local.https_staging_port,
    )
    .unwrap();
    untrusted["ca_pem"] = pki::LocalPki::rogue_client("some-other-root").unwrap().cert_pem.into();
    let untrusted = ClaimThingCredentials::parse(&untrusted.to_string()).unwrap();
    let err = https.publish(&untrusted, &topic, b"{}").await.expect_err("refused");
    assert_eq!(err.code, "staging_tls", "{err}");

    assert!(moto_publishes(&stack.local.moto_url, topic.as_str())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_api_a_refused_certificate_shows_the_failure_and_the_log_keeps_the_http_status() {
    let stack = Stack::connect().await;
    let vendor = unique("https-rogue");
    // A certificate of another CA, with a marker in its key so the log can be searched for it.
    let rogue = pki::LocalPki::rogue_client(pki::CLAIM_THING).unwrap();
    stack
        .put_secret(
            &vendor,
            &https_profile(&stack.pki, &rogue, stack.local.https_staging_port).unwrap(),
        )
        .await;
    let thing = stack.new_device(&vendor).await;
    let user = unique("alice");

    let created = stack.claim(&user, &thing).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    let claim_id = created.body["claim_id"].as_str().unwrap().to_owned();
    let failed = stack
        .wait_for_claim(&user, &claim_id, Duration::from_secs(15), |a| {
            a.body["failure"]["code"].is_string()
        })
        .await;
    assert_eq!(failed.body["state"], "pending", "{:?}", failed.body);
    assert_eq!(failed.body["failure"]["code"], "staging_refused", "{:?}", failed.body);
    assert!(
        moto_publishes(&stack.local.moto_url, &format!("{thing}/expresslink_config"))
            .await
            .unwrap()
            .is_empty()
    );

    // The function's publish event keeps the HTTP status and the (absent) AWS error code.
    let log = std::fs::read_to_string(&stack.local.api_log).unwrap();
    let event = log
        .lines()
        .find(|line| line.contains(&format!("\"claim_id\":\"{claim_id}\"")) && line.contains("\"publish_failed\""))
        .unwrap_or_else(|| panic!("no publish_failed event for {claim_id}"));
    assert!(
        event.contains("staging_refused")
            && event.contains("HTTP 400 from the staging endpoint, AWS error code none: 400 The SSL certificate error"),
        "{event}"
    );
    for pem in [&rogue.key_pem, &rogue.cert_pem] {
        for line in pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 20) {
            assert!(!log.contains(line), "key or certificate material reached the log");
        }
    }
}
