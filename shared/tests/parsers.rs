//! Every parser of outside input in the shared crate, on arbitrary input: it never panics, it
//! either accepts or refuses with a classified error, what it accepts reads back the same, and a
//! refusal never quotes a value (errors reach logs and answers; a label code may be a secret).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use claim_shared::{
    domain::{
        endpoints::EndpointPlan,
        ids::{ClaimId, IdempotencyKey, ThingName, UserId},
        label_code::{CodeHash, LabelCode, LabelCodeKey},
        publish::ClaimThingCredentials,
        registry::NewDevice,
    },
    json::from_slice_strict,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Values that reach the parsers: anything, and JSON-ish text built from the characters that
/// matter to them.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[ -~]{0,80}", "[a-zA-Z0-9:_/#+$ .\\-\\x00]{0,140}"]
}

/// Arbitrary JSON values, a few levels deep, with `marker` in every string.
fn json_with(marker: &'static str) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,6}".prop_map(move |s| Value::String(format!("{marker}{s}"))),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn identifiers_accept_or_refuse_and_read_back(raw in text()) {
        if let Ok(thing) = ThingName::parse(&raw) {
            prop_assert_eq!(thing.as_str(), raw.as_str());
        }
        if let Ok(user) = UserId::parse(&raw) {
            prop_assert_eq!(user.as_str(), raw.as_str());
        }
        if let Some(claim) = ClaimId::parse(&raw) {
            prop_assert_eq!(claim.as_str(), raw.as_str());
        }
        if let Ok(key) = IdempotencyKey::parse(&raw) {
            prop_assert_eq!(key.as_str(), raw.as_str());
        }
        if let Some(hash) = CodeHash::parse(&raw) {
            prop_assert_eq!(hash.as_str(), raw.as_str());
        }
    }

    #[test]
    fn label_codes_accept_or_refuse_without_quoting(raw in text()) {
        match LabelCode::parse(&raw) {
            Ok(code) => {
                let key = LabelCodeKey::new(&[3; 32]).unwrap();
                prop_assert_eq!(key.hash(&code), key.hash(&LabelCode::parse(&raw).unwrap()));
                prop_assert!(!format!("{code:?}").contains(&raw) || raw.len() < 4, "Debug shows the code");
            }
            Err(err) => prop_assert!(raw.len() < 6 || !err.to_string().contains(&raw)),
        }
    }

    #[test]
    fn vendor_profiles_from_any_bytes_parse_or_name_the_field(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = ClaimThingCredentials::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn vendor_profiles_never_quote_key_material(profile in json_with("KEYMATERIAL")) {
        if let Err(err) = ClaimThingCredentials::parse(&profile.to_string()) {
            prop_assert!(!err.contains("KEYMATERIAL"), "{}", err);
        }
    }

    #[test]
    fn endpoint_plans_from_any_text_parse_or_refuse(raw in text()) {
        let _ = EndpointPlan::from_json(&raw);
    }

    #[test]
    fn an_accepted_endpoint_plan_always_selects_one_of_its_hosts(
        plan in json_with("h").prop_map(|v| v.to_string()),
        sku in proptest::option::of("[A-Z*-]{0,8}"),
        region in proptest::option::of("[a-z*-]{0,12}"),
    ) {
        let document = json!({
            "endpoints": {"a": {"host": "a-ats.iot.us-east-1.amazonaws.com"}, "b": {"host": "b-ats.iot.us-east-1.amazonaws.com"}},
            "rules": [{"sku": sku.clone().unwrap_or_default(), "endpoint": "b"}],
            "default": "a",
            "extra": plan,
        });
        for text in [document.to_string(), plan] {
            if let Ok(plan) = EndpointPlan::from_json(&text) {
                let selected = plan.select(sku.as_deref(), region.as_deref());
                prop_assert!(plan.hosts().any(|host| host == selected.host));
            }
        }
    }

    #[test]
    fn import_records_accept_or_name_the_field_never_the_code(
        thing in text(), vendor in text(), sku in proptest::option::of(text()), code in proptest::option::of(text()),
    ) {
        let key = LabelCodeKey::new(&[5; 32]).unwrap();
        let parsed = NewDevice::parse(&thing, &vendor, sku.as_deref())
            .and_then(|new| new.with_label_code(code.as_deref(), None, Some(&key)));
        if let Err(reason) = parsed {
            let field = reason.split(':').next().unwrap_or_default();
            prop_assert!(["thing_name", "vendor", "sku", "code", "allow_thing_name"].contains(&field), "{}", reason);
            if let Some(code) = code.filter(|c| c.len() >= 6) {
                prop_assert!(!reason.contains(&code), "{}", reason);
            }
        }
    }

    #[test]
    fn strict_json_agrees_with_serde_json_on_every_document_without_duplicates(value in json_with("v")) {
        let text = value.to_string();
        prop_assert_eq!(from_slice_strict(text.as_bytes()).ok(), Some(value));
    }
}
