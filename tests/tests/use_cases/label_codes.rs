//! Label codes distinct from the ThingName: one code, one device; claims by code and by ThingName
//! as the device allows; neither the code nor its hash in any log.

use claim_shared::{
    domain::{
        device::Holder,
        history::Actor,
        label_code::{LabelCode, LabelCodeKey},
        registry::NewDevice,
    },
    service::{ClaimError, ClaimOutcome, ClaimRequest, ClaimService, ClaimSettings, DeviceOpError, ImportOutcome},
};
use claim_tests::{
    fixture::{Fixture, TestStore},
    on_both_stores, ManualClock,
};

use super::{request, thing, CapturedLogs, Steps};

on_both_stores!(
    a_label_code_belongs_to_one_device_and_moves_with_it,
    claims_by_code_and_by_thing_name_follow_the_devices_setting,
    claim_decisions_by_label_code_never_log_the_code_or_its_hash,
    a_code_never_shadows_a_thing_name_nor_a_thing_name_a_code,
);

fn code_key() -> LabelCodeKey {
    LabelCodeKey::new(b"test-label-code-key-0123456789abcdef").unwrap()
}

fn label(raw: &str) -> LabelCode {
    LabelCode::parse(raw).unwrap()
}

/// The fixture's store and clock, with label codes enabled.
fn coded_service<S: TestStore>(fx: &Fixture<S>) -> ClaimService<S, ManualClock> {
    fx.service_with(ClaimSettings::default())
        .with_label_code_key(Some(code_key()))
}

fn coded(name: &str, code: Option<&str>, allow_thing_name: Option<bool>) -> NewDevice {
    NewDevice::parse(name, "espressif", Some("KETTLE-2"))
        .unwrap()
        .with_label_code(code, allow_thing_name, Some(&code_key()))
        .unwrap()
}

fn by_code(who: &str, code: &str, key: Option<&str>) -> ClaimRequest {
    let mut request = request(who, "placeholder", key);
    request.code = label(code);
    request
}

async fn a_label_code_belongs_to_one_device_and_moves_with_it<S: TestStore>(fx: Fixture<S>) {
    let service = coded_service(&fx);
    let store = &fx.store;
    let ops = Actor::Operator("factory-import".into());
    let hash = |code: &str| code_key().hash(&label(code));

    assert_eq!(
        service
            .import(&coded("dev-code-a", Some("LBL-1/a"), None), ops.clone())
            .await,
        Ok(ImportOutcome::Created)
    );
    assert_eq!(
        store.thing_by_code(&hash("LBL-1/a")).await,
        Ok(Some(thing("dev-code-a")))
    );
    let device = store.device(&thing("dev-code-a")).await.unwrap().unwrap();
    assert_eq!(device.code_hash, Some(hash("LBL-1/a")));
    assert!(
        !device.thing_name_claims,
        "a new code closes ThingName claims by default"
    );

    // The same code for a second device: refused, nothing of it written.
    assert_eq!(
        service
            .import(&coded("dev-code-b", Some("LBL-1/a"), None), ops.clone())
            .await,
        Err(DeviceOpError::CodeInUse)
    );
    assert_eq!(store.device(&thing("dev-code-b")).await, Ok(None));
    assert_eq!(
        store.thing_by_code(&hash("LBL-1/a")).await,
        Ok(Some(thing("dev-code-a")))
    );

    // Imported again unchanged (with or without its code): nothing changes.
    for again in [
        coded("dev-code-a", Some("LBL-1/a"), None),
        coded("dev-code-a", None, None),
    ] {
        assert_eq!(service.import(&again, ops.clone()).await, Ok(ImportOutcome::Unchanged));
    }
    assert_eq!(fx.history("dev-code-a").await.len(), 1);

    // Claimed and owned by its code; then the OEM changes the code: the old lookup is gone, the
    // new one is there, ownership is untouched, and the old code is free for another device.
    let owner = match service.claim(&by_code("alice", "LBL-1/a", None)).await.unwrap() {
        ClaimOutcome::Created(claim) => claim,
        other => panic!("{other:?}"),
    };
    assert_eq!(owner.thing_name, thing("dev-code-a"));
    service.mark_provisioned(&owner.claim_id).await.unwrap();
    assert_eq!(
        service
            .import(&coded("dev-code-a", Some("LBL-2"), None), ops.clone())
            .await,
        Ok(ImportOutcome::Updated)
    );
    assert_eq!(store.thing_by_code(&hash("LBL-1/a")).await, Ok(None));
    assert_eq!(store.thing_by_code(&hash("LBL-2")).await, Ok(Some(thing("dev-code-a"))));
    let device = store.device(&thing("dev-code-a")).await.unwrap().unwrap();
    assert!(matches!(&device.holder, Holder::Owned { claim_id, .. } if *claim_id == owner.claim_id));
    assert_eq!(
        service.claim(&by_code("bob", "LBL-1/a", None)).await,
        Err(ClaimError::DeviceNotFound),
        "the old code names nothing any more"
    );
    assert_eq!(
        service
            .claim(&by_code("alice", "LBL-2", None))
            .await
            .map(|o| o.claim().claim_id.clone()),
        Ok(owner.claim_id.clone()),
        "the new code names the owner's device"
    );
    assert_eq!(
        service
            .import(&coded("dev-code-b", Some("LBL-1/a"), None), ops.clone())
            .await,
        Ok(ImportOutcome::Created)
    );
    assert_eq!(
        store.thing_by_code(&hash("LBL-1/a")).await,
        Ok(Some(thing("dev-code-b")))
    );

    // Only the setting changes: updated, the lookup stays.
    assert_eq!(
        service
            .import(&coded("dev-code-a", None, Some(true)), ops.clone())
            .await,
        Ok(ImportOutcome::Updated)
    );
    let device = store.device(&thing("dev-code-a")).await.unwrap().unwrap();
    assert!(device.thing_name_claims);
    assert_eq!(device.code_hash, Some(hash("LBL-2")));
    assert_eq!(store.thing_by_code(&hash("LBL-2")).await, Ok(Some(thing("dev-code-a"))));
}

async fn claims_by_code_and_by_thing_name_follow_the_devices_setting<S: TestStore>(fx: Fixture<S>) {
    let service = coded_service(&fx);
    let ops = Actor::Operator("factory-import".into());
    service
        .import(&coded("dev-closed", Some("CODE-closed"), None), ops.clone())
        .await
        .unwrap();
    service
        .import(&coded("dev-open", Some("CODE-open"), Some(true)), ops.clone())
        .await
        .unwrap();
    service
        .import(&coded("dev-plain", None, None), ops.clone())
        .await
        .unwrap();

    // A separate code, ThingName claims not allowed: the code works, the ThingName reads unknown.
    assert_eq!(
        service.claim(&request("alice", "dev-closed", None)).await,
        Err(ClaimError::DeviceNotFound)
    );
    let claim = service.claim(&by_code("alice", "CODE-closed", None)).await.unwrap();
    assert!(matches!(&claim, ClaimOutcome::Created(c) if c.thing_name == thing("dev-closed")));

    // Allowed: both work, and an Idempotency-Key binds to the device, whichever way it was named.
    let first = service.claim(&by_code("bob", "CODE-open", Some("k-1"))).await.unwrap();
    let again = service.claim(&request("bob", "dev-open", Some("k-1"))).await.unwrap();
    assert_eq!(first.claim().claim_id, again.claim().claim_id);
    assert_eq!(
        service.claim(&request("carol", "dev-open", None)).await,
        Err(ClaimError::AlreadyClaimed),
        "named by its ThingName, the device is found"
    );

    // No code: the ThingName, as before label codes.
    assert!(matches!(
        service.claim(&request("dana", "dev-plain", None)).await,
        Ok(ClaimOutcome::Created(_))
    ));
    // Unknown codes and codes of another key are unknown devices.
    assert_eq!(
        service.claim(&by_code("erin", "CODE-nobody", None)).await,
        Err(ClaimError::DeviceNotFound)
    );
    assert_eq!(
        fx.service.claim(&by_code("erin", "CODE-open", None)).await,
        Err(ClaimError::DeviceNotFound),
        "without the key a code is only a ThingName"
    );
    // Without the key only ThingNames are codes; with it, any printable code is.
    assert!(fx.service.parse_code("a/b").is_err());
    assert!(service.parse_code("a/b").is_ok());
    assert!(service.parse_code("a b").is_err());
}

async fn claim_decisions_by_label_code_never_log_the_code_or_its_hash<S: TestStore>(fx: Fixture<S>) {
    let service = coded_service(&fx);
    let code = "OEM-SECRET-CODE-4711";
    service
        .import(&coded("dev-logged", Some(code), None), Actor::Operator("t".into()))
        .await
        .unwrap();
    let logs = CapturedLogs::new();
    logs.during(async {
        service.claim(&by_code("alice", code, None)).await.unwrap();
        // A near miss of the code (shaped like a ThingName): not found, and not named.
        service
            .claim(&by_code("bob", "OEM-SECRET-CODE-4712", None))
            .await
            .unwrap_err();
        service.claim(&request("bob", "dev-logged", None)).await.unwrap_err();
    })
    .await;
    let (text, decisions) = (logs.text(), logs.claim_decisions());
    assert_eq!(decisions.len(), 3, "{text}");
    assert_eq!(
        (
            &decisions[0]["outcome"],
            &decisions[0]["by"],
            &decisions[0]["thing_name"]
        ),
        (
            &serde_json::json!("created"),
            &serde_json::json!("label_code"),
            &serde_json::json!("dev-…(10 chars)")
        )
    );
    for refused in &decisions[1..] {
        assert_eq!(refused["outcome"], "device_not_found");
        assert!(
            refused.get("thing_name").is_none() && refused.get("by").is_none(),
            "{refused}"
        );
    }
    let hash = code_key().hash(&label(code));
    assert!(!text.contains("OEM-") && !text.contains(hash.as_str()), "{text}");
}

async fn a_code_never_shadows_a_thing_name_nor_a_thing_name_a_code<S: TestStore>(fx: Fixture<S>) {
    let service = coded_service(&fx);
    let ops = Actor::Operator("factory-import".into());
    service.import(&coded("dev-y", None, None), ops.clone()).await.unwrap();

    // A label code that is another device's ThingName: claims for "dev-y" would reach dev-x.
    assert_eq!(
        service.import(&coded("dev-x", Some("dev-y"), None), ops.clone()).await,
        Err(DeviceOpError::CodeInUse)
    );
    assert_eq!(
        fx.store.device(&thing("dev-x")).await,
        Ok(None),
        "nothing of it was written"
    );
    service
        .import(&coded("dev-x", Some("LBL-x"), None), ops.clone())
        .await
        .unwrap();
    assert_eq!(
        service.import(&coded("dev-x", Some("dev-y"), None), ops.clone()).await,
        Err(DeviceOpError::CodeInUse),
        "nor as a new code of an existing device"
    );
    // A device's own ThingName as its code is harmless.
    service
        .import(&coded("dev-z", Some("dev-z"), None), ops.clone())
        .await
        .unwrap();

    // A new device named like another device's code: its name would reach the coded device.
    assert_eq!(
        service.import(&coded("LBL-x", None, None), ops.clone()).await,
        Err(DeviceOpError::CodeInUse)
    );
    assert_eq!(fx.store.device(&thing("LBL-x")).await, Ok(None));

    // Every name still reaches its own device.
    let y = service.claim(&request("alice", "dev-y", None)).await.unwrap();
    assert_eq!(y.claim().thing_name, thing("dev-y"));
    let x = service.claim(&by_code("bob", "LBL-x", None)).await.unwrap();
    assert_eq!(x.claim().thing_name, thing("dev-x"));
}
