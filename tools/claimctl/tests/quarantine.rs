//! `claimctl quarantines` and `claimctl lift` through the binary, on DynamoDB Local and moto's AWS
//! IoT (the local stack's engines): the list an operator sees, and a lift that switches the
//! certificate on again and removes the quarantine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, sync::Arc};

use claim_shared::{
    adapters::iotcontrol::IotCertificateControl,
    domain::{ids::ThingName, quarantine::GatePolicy},
    service::{ArrivalOutcome, ClaimService, ClaimSettings, GateOutcome, SystemClock},
};
use claim_tests::{
    fixture::{DynamoOwnershipStore, LocalTable},
    local_iot::{certificate_active, certificate_id_of, local_iot, provision, register_vendor_ca},
    pki::LocalPki,
};
use serde_json::Value;

#[tokio::test]
async fn operators_see_quarantines_and_lift_them() {
    let LocalTable { client, name: table } = LocalTable::fresh().await;
    let dir = std::env::temp_dir().join(format!("claimctl-quarantine-{table}"));
    let pki = LocalPki::ensure(&dir).unwrap();
    let ca_pem = pki.ca_pem().unwrap();
    let iot = local_iot().await;
    register_vendor_ca(&iot, &ca_pem).await.unwrap();
    let rogue = format!("rogue-{}", uuid::Uuid::new_v4().simple());
    let identity = pki.client(&rogue).unwrap();
    let certificate = provision(&iot, &rogue, &identity.cert_pem, &ca_pem).await.unwrap();

    // The gate as provisioning-events runs it, on the test's table.
    let service = ClaimService::new(
        DynamoOwnershipStore::new(client, table.clone()),
        SystemClock,
        ClaimSettings::default(),
    )
    .with_certificate_control(
        Arc::new(IotCertificateControl::new(iot.clone())),
        GatePolicy {
            enabled: true,
            vendor_ca_ids: vec![certificate_id_of(&ca_pem).unwrap()],
        },
    );
    let thing = ThingName::parse(&rogue).unwrap();
    let gate = service
        .gate_arrival(&thing, Some(&certificate), &ArrivalOutcome::UnknownThing)
        .await
        .unwrap();
    assert!(matches!(gate, GateOutcome::Quarantined(_)), "{gate:?}");
    assert_eq!(certificate_active(&iot, &certificate).await, Ok(Some(false)));

    let claimctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_claimctl"))
            .args(["--table", &table, "--operator", "ops@example.com"])
            .args(args)
            .output()
            .unwrap()
    };
    let listed = claimctl(&["quarantines"]);
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["thing_name"], rogue.as_str());
    assert_eq!(lines[0]["certificate_id"], certificate.as_str());
    assert_eq!(lines[0]["reason"], "unknown_thing");

    let lifted = claimctl(&["lift", &rogue]);
    assert!(lifted.status.success(), "{lifted:?}");
    assert_eq!(certificate_active(&iot, &certificate).await, Ok(Some(true)));
    let again = claimctl(&["lift", &rogue]);
    assert_eq!(again.status.code(), Some(4), "not quarantined any more: {again:?}");
    let listed = claimctl(&["quarantines"]);
    assert!(listed.status.success() && listed.stdout.is_empty(), "{listed:?}");
    let bad = claimctl(&["lift", "no spaces allowed"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    std::fs::remove_dir_all(&dir).ok();
}
