//! Reading JSON from outside as one meaning only. serde_json keeps the last of duplicate keys, so
//! `{"code":"#","code":"dev-1"}` would be read as `dev-1` by us while a proxy, a WAF or a log reader
//! may see `#`: a body with a duplicate key anywhere is refused instead.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The JSON in `bytes` as a [`Value`], refusing duplicate keys at any depth. Nesting is bounded by
/// serde_json's recursion limit (128), so hostile depth is an error, not a stack overflow. Error
/// messages name the problem, never a key or a value.
pub fn from_slice_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(bytes).map(|strict| strict.0)
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate key in a JSON object"));
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_without_naming_them() {
        for body in [
            r##"{"code":"#","code":"dev-1"}"##,
            r#"{"devices":[{"thing_name":"a","thing_name":"b"}]}"#,
            r#"{"a":{"b":{"secret":1,"secret":2}}}"#,
        ] {
            let err = from_slice_strict(body.as_bytes()).expect_err(body).to_string();
            assert!(err.starts_with("duplicate key"), "{err}");
            assert!(!err.contains("code") && !err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn everything_else_reads_as_serde_json_reads_it() {
        let body = r#"{"code":"dev-1","n":-3,"big":18446744073709551615,"f":1.5,"z":null,"l":[1,{"a":true}]}"#;
        let strict = from_slice_strict(body.as_bytes()).expect("valid");
        let plain: Value = serde_json::from_str(body).expect("valid");
        assert_eq!(strict, plain);
        assert_eq!(strict["l"][1], json!({"a": true}));
    }

    #[test]
    fn hostile_depth_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(from_slice_strict(deep.as_bytes()).is_err());
        let deep_objects = "{\"a\":".repeat(100_000);
        assert!(from_slice_strict(deep_objects.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = from_slice_strict(&bytes);
        }

        #[test]
        fn documents_without_duplicates_read_the_same(keys in proptest::collection::btree_set("[a-z]{1,8}", 0..8)) {
            let object: Map<String, Value> = keys.iter().map(|k| (k.clone(), json!(k.len()))).collect();
            let text = Value::Object(object.clone()).to_string();
            prop_assert_eq!(from_slice_strict(text.as_bytes()).ok(), Some(Value::Object(object)));
        }
    }
}
