//! The table's keys: partition and sort keys of every item, the index names, and the page tokens
//! of `by_user` queries (see the item table in the parent module).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use time::OffsetDateTime;

use super::items::{millis, s, Item};
use crate::{
    domain::{
        attempts::AttemptScope,
        claim::ClaimState,
        ids::{ClaimId, IdempotencyKey, ThingName, UserId},
        label_code::CodeHash,
    },
    ports::{PageError, StoreError},
};

pub const BY_USER_INDEX: &str = "by_user";
pub const BY_STATE_INDEX: &str = "by_state";
pub const OUTBOX_INDEX: &str = "outbox";
pub(super) const OUTBOX_PK: &str = "OUTBOX";
pub(super) const LEASE_SK: &str = "#LEASE";

pub(super) const DEVICE_SK: &str = "#DEVICE";
pub(super) const CLAIM_SK: &str = "#CLAIM";
pub(super) const CODE_SK: &str = "#CODE";
/// The quarantine list: one partition (quarantines are rare), sorted by ThingName.
pub(super) const QUARANTINE_PK: &str = "QUARANTINE";

/// The sort key prefix of quarantine entries; it sorts before every entry's key.
pub(super) const QUARANTINE_SK_PREFIX: &str = "THING#";

pub(super) fn quarantine_sk(thing: &ThingName) -> String {
    format!("{QUARANTINE_SK_PREFIX}{thing}")
}

pub(super) fn code_pk(hash: &CodeHash) -> String {
    format!("CODE#{}", hash.as_str())
}

pub(super) fn device_pk(thing: &ThingName) -> String {
    format!("DEVICE#{thing}")
}

pub(super) fn user_pk(user: &UserId) -> String {
    format!("USER#{user}")
}

pub(super) fn state_pk(state: ClaimState) -> String {
    format!("STATE#{}", state.as_str())
}

pub(super) fn idempotency_pk(user: &UserId) -> String {
    format!("IDEMPOTENCY#{user}")
}

pub(super) fn idempotency_sk(key: &IdempotencyKey) -> String {
    format!("KEY#{}", key.as_str())
}

pub(super) fn attempts_pk(scope: &AttemptScope) -> String {
    format!("ATTEMPTS#{}", scope.key())
}

pub(super) fn attempts_sk(window_start: OffsetDateTime) -> String {
    format!("WINDOW#{}", padded_millis(window_start))
}

/// Milliseconds since the epoch, zero-padded so that string order is time order (until year 2286).
pub(super) fn padded_millis(at: OffsetDateTime) -> String {
    format!("{:013}", millis(at))
}

pub(super) fn claim_pk(claim_id: &ClaimId) -> String {
    format!("CLAIM#{claim_id}")
}

pub(super) fn lease_pk(name: &str) -> String {
    format!("LEASE#{name}")
}

/// The last key of a `by_user` page, as base64url JSON. Decoding checks the token is for the
/// caller's own partition, so a forged token cannot read another user's items.
pub(super) fn encode_page_token(key: &Item) -> Result<String, PageError> {
    let mut plain = BTreeMap::new();
    for (name, value) in key {
        match value {
            AttributeValue::S(text) => {
                plain.insert(name.clone(), text.clone());
            }
            _ => return Err(StoreError::Corrupt(format!("page key {name} is not a string")).into()),
        }
    }
    let json = serde_json::to_vec(&plain).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

pub(super) fn decode_page_token(token: &str, partition: &str) -> Result<Item, PageError> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| PageError::InvalidToken)?;
    let plain: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| PageError::InvalidToken)?;
    let field = |name: &str| plain.get(name).map(String::as_str);
    // Exactly the last key of a device page in the caller's own partition, and nothing else.
    let device_key = field("gsi1sk")
        .and_then(|sk| sk.strip_prefix("DEVICE#"))
        .is_some_and(|thing| ThingName::parse(thing).is_ok());
    if plain.len() != 4
        || field("gsi1pk") != Some(partition)
        || !device_key
        || field("pk") != field("gsi1sk")
        || field("sk") != Some(DEVICE_SK)
    {
        return Err(PageError::InvalidToken);
    }
    Ok(plain.into_iter().map(|(k, v)| (k, s(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_only_open_the_callers_own_partition() {
        let key = Item::from([
            ("pk".to_owned(), s("DEVICE#d1")),
            ("sk".to_owned(), s("#DEVICE")),
            ("gsi1pk".to_owned(), s("USER#alice")),
            ("gsi1sk".to_owned(), s("DEVICE#d1")),
        ]);
        let token = encode_page_token(&key).expect("encodes");
        assert_eq!(decode_page_token(&token, "USER#alice"), Ok(key.clone()));
        assert_eq!(decode_page_token(&token, "USER#mallory"), Err(PageError::InvalidToken));
        assert_eq!(
            decode_page_token("not base64!", "USER#alice"),
            Err(PageError::InvalidToken)
        );
        let mut outside = key.clone();
        outside.insert("gsi1sk".to_owned(), s("CLAIM#0001"));
        let forged = encode_page_token(&outside).expect("encodes");
        assert_eq!(decode_page_token(&forged, "USER#alice"), Err(PageError::InvalidToken));
    }

    proptest::proptest! {
        /// Any token a caller sends: refused, or the key of a device page in the caller's own
        /// partition, never anything else.
        #[test]
        fn any_token_opens_only_the_callers_own_device_pages(token in "[A-Za-z0-9_-]{0,200}|\\PC{0,80}") {
            if let Ok(key) = decode_page_token(&token, "USER#alice") {
                proptest::prop_assert_eq!(key.get("gsi1pk"), Some(&s("USER#alice")));
                let sk = key.get("gsi1sk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                proptest::prop_assert!(sk.starts_with("DEVICE#"));
            }
        }
    }
}
