//! The rogue-device gate: unexpected arrivals are quarantined (certificate deactivated, listed),
//! expected ones never are, only the vendor's certificates are touched, and a claim, enabling or
//! an operator lifts a quarantine — with nothing recorded when the control plane fails.

use std::sync::Arc;

use claim_shared::{
    domain::{
        device::{Holder, Provisioning},
        history::HistoryEvent,
        quarantine::{GatePolicy, QuarantineReason},
    },
    service::{
        ArrivalOutcome, ClaimError, ClaimOutcome, ClaimService, ClaimSettings, GateOutcome, LiftOutcome, RetryError,
    },
};
use claim_tests::{
    certificates::RecordingControl,
    fixture::{Fixture, TestStore},
    on_both_stores, ManualClock,
};

use super::{assert_contiguous, request, thing, user, Steps};

on_both_stores!(
    devices_nothing_sent_are_quarantined_once_and_listed,
    expected_arrivals_are_never_quarantined,
    only_the_vendors_certificates_are_ever_touched,
    a_claim_lifts_the_quarantine_and_a_failed_lift_changes_nothing,
    a_retry_of_the_expired_claim_lifts_the_quarantine_of_a_late_device,
    a_thing_quarantined_before_its_import_is_brought_back_by_a_claim,
    a_disabled_device_is_quarantined_and_enabling_it_lifts_that,
    operators_list_and_lift_quarantines,
);

const VENDOR_CA: &str = "ca-of-the-module-vendor";

fn certificate(n: u8) -> String {
    format!("{n:064x}")
}

/// The fixture's store and clock with the gate armed for [`VENDOR_CA`].
fn gated<S: TestStore>(fx: &Fixture<S>, control: &RecordingControl) -> ClaimService<S, ManualClock> {
    fx.service_with(ClaimSettings::default()).with_certificate_control(
        Arc::new(control.clone()),
        GatePolicy {
            enabled: true,
            vendor_ca_ids: vec![VENDOR_CA.into()],
        },
    )
}

/// A device connecting with `cert`, as provisioning-events runs it: the arrival, then the gate.
async fn arrive<S: TestStore>(
    service: &ClaimService<S, ManualClock>,
    device: &str,
    cert: &str,
) -> (ArrivalOutcome, GateOutcome) {
    let details = Provisioning {
        certificate_id: Some(cert.to_owned()),
        ..Provisioning::default()
    };
    let arrival = service.record_arrival(&thing(device), &details).await.unwrap();
    let gate = service
        .gate_arrival(&thing(device), Some(cert), &arrival)
        .await
        .unwrap();
    (arrival, gate)
}

async fn devices_nothing_sent_are_quarantined_once_and_listed<S: TestStore>(fx: Fixture<S>) {
    let control = RecordingControl::default();
    let service = gated(&fx, &control);
    fx.import("dev-free").await;
    control.issue(&certificate(1), VENDOR_CA);
    control.issue(&certificate(2), VENDOR_CA);

    let (arrival, gate) = arrive(&service, "ghost", &certificate(1)).await;
    assert_eq!(arrival, ArrivalOutcome::UnknownThing);
    assert!(matches!(gate, GateOutcome::Quarantined(ref q) if q.reason == QuarantineReason::UnknownThing));
    let (arrival, gate) = arrive(&service, "dev-free", &certificate(2)).await;
    assert_eq!(arrival, ArrivalOutcome::Unclaimed);
    assert!(matches!(gate, GateOutcome::Quarantined(ref q) if q.reason == QuarantineReason::Unclaimed));
    assert_eq!(control.is_active(&certificate(1)), Some(false));
    assert_eq!(control.is_active(&certificate(2)), Some(false));

    // On the registry device itself, with a history entry saying why; both on the list.
    let device = fx.store.device(&thing("dev-free")).await.unwrap().unwrap();
    assert_eq!(
        device.quarantine.as_ref().map(|q| q.certificate_id.clone()),
        Some(certificate(2))
    );
    let history = fx.history("dev-free").await;
    assert_contiguous(&history);
    let last = history.last().unwrap();
    assert_eq!(
        (last.event, last.reason.as_deref()),
        (HistoryEvent::Quarantined, Some("unclaimed"))
    );
    let listed: Vec<String> = service
        .quarantines(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|q| format!("{}:{}", q.thing_name, q.reason.as_str()))
        .collect();
    assert_eq!(listed, ["dev-free:unclaimed", "ghost:unknown_thing"]);
    let after_first = service.quarantines(Some(&thing("dev-free")), 10).await.unwrap();
    assert_eq!(after_first.len(), 1, "pages continue after the given ThingName");

    // The same event again (at-least-once delivery): nothing more happens.
    let (_, gate) = arrive(&service, "dev-free", &certificate(2)).await;
    assert_eq!(gate, GateOutcome::Spared("already_quarantined"));
    assert_eq!(control.switches().len(), 2, "{:?}", control.switches());
    assert_eq!(fx.history("dev-free").await.len(), history.len());
}

async fn expected_arrivals_are_never_quarantined<S: TestStore>(fx: Fixture<S>) {
    let control = RecordingControl::default();
    let service = gated(&fx, &control);
    for (n, device) in ["dev-claimed", "dev-owned", "dev-late"].into_iter().enumerate() {
        fx.import(device).await;
        control.issue(&certificate(n as u8), VENDOR_CA);
    }
    // A claimed device arriving.
    service.claim(&request("alice", "dev-claimed", None)).await.unwrap();
    let (arrival, gate) = arrive(&service, "dev-claimed", &certificate(0)).await;
    assert!(matches!(arrival, ArrivalOutcome::Completed(_)), "{arrival:?}");
    assert_eq!(gate, GateOutcome::Expected);
    // An owned device reconnecting, also after a factory reset (same certificate, same thing).
    fx.claim_and_own("bob", "dev-owned").await;
    for _ in 0..2 {
        let (arrival, gate) = arrive(&service, "dev-owned", &certificate(1)).await;
        assert!(matches!(
            arrival,
            ArrivalOutcome::AlreadyOwned | ArrivalOutcome::DetailsAdded
        ));
        assert_eq!(gate, GateOutcome::Expected);
    }
    // A claimed device arriving after its deadline, within the arrival grace, once the expiry sweep
    // already freed it.
    service.claim(&request("carol", "dev-late", None)).await.unwrap();
    fx.clock
        .advance(ClaimSettings::default().deadline + time::Duration::seconds(30));
    service.sweep_overdue(100).await.unwrap();
    let (arrival, gate) = arrive(&service, "dev-late", &certificate(2)).await;
    assert!(matches!(arrival, ArrivalOutcome::Completed(_)), "{arrival:?}");
    assert_eq!(gate, GateOutcome::Expected);

    assert!(control.switches().is_empty(), "{:?}", control.switches());
    assert!(service.quarantines(None, 10).await.unwrap().is_empty());
}

async fn only_the_vendors_certificates_are_ever_touched<S: TestStore>(fx: Fixture<S>) {
    let control = RecordingControl::default();
    control.issue(&certificate(7), "another-ca-of-the-oem");
    control.issue(&certificate(8), VENDOR_CA);
    let service = gated(&fx, &control);
    let unknown = ArrivalOutcome::UnknownThing;
    let sensor = thing("sensor-9");
    let gate = |cert: Option<String>| {
        let (service, unknown, sensor) = (&service, &unknown, &sensor);
        async move { service.gate_arrival(sensor, cert.as_deref(), unknown).await }
    };
    assert_eq!(
        gate(Some(certificate(7))).await,
        Ok(GateOutcome::Spared("not_vendor_certificate"))
    );
    assert_eq!(
        gate(Some(certificate(9))).await,
        Ok(GateOutcome::Spared("certificate_not_found"))
    );
    assert_eq!(gate(None).await, Ok(GateOutcome::Spared("no_certificate_id")));
    assert_eq!(
        gate(Some("../../x".into())).await,
        Ok(GateOutcome::Spared("no_certificate_id"))
    );
    // Off, or without the vendor's CA: the vendor's own certificate is spared too.
    for policy in [
        GatePolicy {
            enabled: false,
            vendor_ca_ids: vec![VENDOR_CA.into()],
        },
        GatePolicy {
            enabled: true,
            vendor_ca_ids: Vec::new(),
        },
    ] {
        let off = fx
            .service_with(ClaimSettings::default())
            .with_certificate_control(Arc::new(control.clone()), policy);
        let outcome = off.gate_arrival(&sensor, Some(&certificate(8)), &unknown).await;
        assert_eq!(outcome, Ok(GateOutcome::Spared("gate_off")));
    }
    // A control plane that does not answer fails the event (retried), and records nothing.
    control.set_down(true);
    assert!(gate(Some(certificate(8))).await.is_err());
    assert!(control.switches().is_empty(), "{:?}", control.switches());
    assert!(service.quarantines(None, 10).await.unwrap().is_empty());
}

async fn a_claim_lifts_the_quarantine_and_a_failed_lift_changes_nothing<S: TestStore>(fx: Fixture<S>) {
    let control = RecordingControl::default();
    let service = gated(&fx, &control);
    fx.import("dev-resold").await;
    control.issue(&certificate(3), VENDOR_CA);
    arrive(&service, "dev-resold", &certificate(3)).await;
    let before = fx.store.device(&thing("dev-resold")).await.unwrap().unwrap();
    assert!(before.quarantine.is_some());

    control.set_down(true);
    let refused = service.claim(&request("dave", "dev-resold", None)).await;
    assert!(matches!(refused, Err(ClaimError::CertificateControl(_))), "{refused:?}");
    assert_eq!(
        fx.store.device(&thing("dev-resold")).await.unwrap(),
        Some(before),
        "nothing written"
    );
    assert_eq!(service.quarantines(None, 10).await.unwrap().len(), 1);

    control.set_down(false);
    let Ok(ClaimOutcome::Created(claim)) = service.claim(&request("dave", "dev-resold", None)).await else {
        panic!("the claim goes through once the certificate can be activated");
    };
    assert_eq!(control.is_active(&certificate(3)), Some(true));
    let device = fx.store.device(&thing("dev-resold")).await.unwrap().unwrap();
    assert_eq!(device.quarantine, None);
    assert!(matches!(device.holder, Holder::Reserved { .. }));
    assert!(service.quarantines(None, 10).await.unwrap().is_empty());
    let events = fx.events("dev-resold").await;
    assert_eq!(
        &events[events.len() - 2..],
        [
            (HistoryEvent::Claimed, Some(claim.claim_id.clone())),
            (HistoryEvent::QuarantineLifted, Some(claim.claim_id.clone())),
        ]
    );
    // Now the device arrives as the claim expects.
    let (arrival, gate) = arrive(&service, "dev-resold", &certificate(3)).await;
    assert!(matches!(arrival, ArrivalOutcome::Completed(_)));
    assert_eq!(gate, GateOutcome::Expected);
}

async fn a_disabled_device_is_quarantined_and_enabling_it_lifts_that<S: TestStore>(fx: Fixture<S>) {
    let control = RecordingControl::default();
    let service = gated(&fx, &control);
    fx.import("dev-stolen").await;
    control.issue(&certificate(4), VENDOR_CA);
    let owned = fx.claim_and_own("erin", "dev-stolen").await;
    service
        .set_disabled(&thing("dev-stolen"), true, "ops", Some("reported stolen".into()))
        .await
        .unwrap();
    let (arrival, gate) = arrive(&service, "dev-stolen", &certificate(4)).await;
    assert_eq!(arrival, ArrivalOutcome::Disabled);
    assert!(matches!(gate, GateOutcome::Quarantined(ref q) if q.reason == QuarantineReason::Disabled));
    assert_eq!(control.is_active(&certificate(4)), Some(false));

    let enabled = service
        .set_disabled(&thing("dev-stolen"), false, "ops", None)
        .await
        .unwrap();
    assert_eq!(enabled.quarantine, None);
    assert_eq!(control.is_active(&certificate(4)), Some(true));
    assert!(
        matches!(enabled.holder, Holder::Owned { ref claim_id, .. } if *claim_id == owned),
        "still owned"
    );
    assert!(service.quarantines(None, 10).await.unwrap().is_empty());
    assert_contiguous(&fx.history("dev-stolen").await);
}

async fn operators_list_and_lift_quarantines<S: TestStore>(fx: Fixture<S>) {
    let control = RecordingControl::default();
    let service = gated(&fx, &control);
    fx.import("dev-spare").await;
    control.issue(&certificate(5), VENDOR_CA);
    control.issue(&certificate(6), VENDOR_CA);
    arrive(&service, "ghost-2", &certificate(5)).await;
    arrive(&service, "dev-spare", &certificate(6)).await;

    control.set_down(true);
    assert!(service.lift_quarantine(&thing("ghost-2"), "ops").await.is_err());
    assert_eq!(service.quarantines(None, 10).await.unwrap().len(), 2, "nothing lifted");
    control.set_down(false);

    for (device, cert) in [("ghost-2", certificate(5)), ("dev-spare", certificate(6))] {
        let lifted = service.lift_quarantine(&thing(device), "ops").await.unwrap();
        assert!(matches!(lifted, LiftOutcome::Lifted(ref q) if q.certificate_id == cert));
        assert_eq!(control.is_active(&cert), Some(true));
        assert_eq!(
            service.lift_quarantine(&thing(device), "ops").await.unwrap(),
            LiftOutcome::NotQuarantined
        );
    }
    assert!(service.quarantines(None, 10).await.unwrap().is_empty());
    let device = fx.store.device(&thing("dev-spare")).await.unwrap().unwrap();
    assert_eq!(device.quarantine, None);
    let last = fx.history("dev-spare").await.pop().unwrap();
    assert_eq!(last.event, HistoryEvent::QuarantineLifted);
}

async fn a_retry_of_the_expired_claim_lifts_the_quarantine_of_a_late_device<S: TestStore>(fx: Fixture<S>) {
    let control = RecordingControl::default();
    let service = gated(&fx, &control);
    fx.import("dev-slow").await;
    control.issue(&certificate(9), VENDOR_CA);
    let claim = service.claim(&request("gina", "dev-slow", None)).await.unwrap();
    let claim_id = claim.claim().claim_id.clone();
    // The module arrives long after the deadline and the grace: unexpected by then.
    let settings = ClaimSettings::default();
    fx.clock
        .advance(settings.deadline + settings.arrival_grace + time::Duration::minutes(1));
    service.sweep_overdue(100).await.unwrap();
    let (arrival, gate) = arrive(&service, "dev-slow", &certificate(9)).await;
    assert_eq!(arrival, ArrivalOutcome::Unclaimed);
    assert!(matches!(gate, GateOutcome::Quarantined(_)), "{gate:?}");

    // Its owner retries the expired claim: renewed, and the certificate works again.
    control.set_down(true);
    let refused = service.retry(&user("gina"), &claim_id).await;
    assert!(matches!(refused, Err(RetryError::CertificateControl(_))), "{refused:?}");
    assert!(fx
        .store
        .device(&thing("dev-slow"))
        .await
        .unwrap()
        .unwrap()
        .quarantine
        .is_some());
    control.set_down(false);
    let renewed = service.retry(&user("gina"), &claim_id).await.unwrap();
    assert!(renewed.is_live(service.now()));
    assert_eq!(control.is_active(&certificate(9)), Some(true));
    let device = fx.store.device(&thing("dev-slow")).await.unwrap().unwrap();
    assert_eq!(device.quarantine, None);
    assert!(service.quarantines(None, 10).await.unwrap().is_empty());
    assert_contiguous(&fx.history("dev-slow").await);
}

async fn a_thing_quarantined_before_its_import_is_brought_back_by_a_claim<S: TestStore>(fx: Fixture<S>) {
    let control = RecordingControl::default();
    let service = gated(&fx, &control);
    control.issue(&certificate(10), VENDOR_CA);
    let (arrival, _) = arrive(&service, "dev-early", &certificate(10)).await;
    assert_eq!(arrival, ArrivalOutcome::UnknownThing);
    fx.import("dev-early").await;
    let device = fx.store.device(&thing("dev-early")).await.unwrap().unwrap();
    assert_eq!(
        device.quarantine.as_ref().map(|q| q.reason),
        Some(QuarantineReason::UnknownThing)
    );

    let Ok(ClaimOutcome::Created(_)) = service.claim(&request("hank", "dev-early", None)).await else {
        panic!("claimable once imported");
    };
    assert_eq!(control.is_active(&certificate(10)), Some(true));
    assert!(service.quarantines(None, 10).await.unwrap().is_empty());
}
