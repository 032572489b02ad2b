//! Identifiers that arrive from outside (labels, tokens, headers) and the one MQTT topic we build from
//! them. Every constructor validates, so a value of these types is always safe to use.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest ThingName an ExpressLink module can carry (its `ThingName` configuration buffer is 64
/// characters; protocol §1.1).
pub const THING_NAME_MAX_LEN: usize = 64;

/// Why a label code was refused. Maps to `400 invalid_code`; the message is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("the code is empty")]
    Empty,
    #[error("the code is longer than {max} characters")]
    TooLong { max: usize },
    #[error("the code may only contain letters, digits, '-', '_' and ':'")]
    InvalidCharacter,
}

/// The module's ThingName (its UID), as printed on the label or held in the QR code.
///
/// Accepted characters are those AWS IoT allows in a thing name (`[A-Za-z0-9:_-]`), which are also
/// exactly the characters that can never act as an MQTT level separator (`/`), wildcard (`+`, `#`),
/// system prefix (`$`) or terminator (NUL). Case is kept: AWS thing names are case sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ThingName(String);

impl ThingName {
    pub fn parse(raw: &str) -> Result<Self, CodeError> {
        if raw.is_empty() {
            return Err(CodeError::Empty);
        }
        // Count characters, not bytes, so the message is right for multi-byte input too.
        if raw.chars().count() > THING_NAME_MAX_LEN {
            return Err(CodeError::TooLong {
                max: THING_NAME_MAX_LEN,
            });
        }
        if !raw.chars().all(is_thing_name_char) {
            return Err(CodeError::InvalidCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A shortened form for logs: label codes are the only secret-like input of a claim, so logs
    /// never carry them whole (see docs/operations.md, "Log fields").
    pub fn redacted(&self) -> String {
        let visible: String = self.0.chars().take(4).collect();
        format!("{visible}…({} chars)", self.0.chars().count())
    }
}

impl<'de> Deserialize<'de> for ThingName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        ThingName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ThingName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_thing_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':')
}

/// A module vendor's name, as device records and secret names use it: 1–64 characters of
/// `A–Z a–z 0–9 . _ -` (it becomes part of a Secrets Manager name).
pub fn is_vendor_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The staging-account topic a module in the staging state subscribes to (protocol §1.3):
/// `<ThingName>/expresslink_config`. Built only from a validated [`ThingName`], so it always has
/// exactly two levels, no wildcard and no `$` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTopic(String);

impl ConfigTopic {
    pub const SUFFIX: &'static str = "expresslink_config";

    pub fn for_device(thing: &ThingName) -> Self {
        Self(format!("{}/{}", thing.as_str(), Self::SUFFIX))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The authenticated caller: the Cognito `sub` taken from the authorizer, never from the body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

/// Why a caller identity was refused (it comes from the authorizer, so this means a misconfigured
/// authorizer or a forged local header, never a user typo).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the caller identity must be 1 to 128 printable ASCII characters")]
pub struct InvalidUserId;

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, InvalidUserId> {
        if (1..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidUserId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A claim's id: a random UUID, so ids reveal nothing and cannot be enumerated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClaimId(String);

impl ClaimId {
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// Accepts only the canonical lowercase hyphenated UUID form we issue; anything else cannot
    /// name a claim, so callers answer it like an unknown id.
    pub fn parse(raw: &str) -> Option<Self> {
        let parsed = uuid::Uuid::try_parse(raw).ok()?;
        let canonical = parsed.hyphenated().to_string();
        (canonical == raw).then_some(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClaimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client's `Idempotency-Key` header value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 printable ASCII characters without spaces")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, InvalidIdempotencyKey> {
        if (1..=255).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_typical_module_uids() {
        for uid in [
            "a1b2c3d4-e5f6-7890-abcd-ef0123456789",
            "ESP32C3_0123456789AB",
            "x",
            "thing:with:colons",
        ] {
            assert_eq!(ThingName::parse(uid).map(|t| t.to_string()), Ok(uid.to_owned()));
        }
        let longest = "a".repeat(THING_NAME_MAX_LEN);
        assert!(ThingName::parse(&longest).is_ok());
    }

    #[test]
    fn refuses_each_kind_of_bad_code_with_its_reason() {
        assert_eq!(ThingName::parse(""), Err(CodeError::Empty));
        assert_eq!(
            ThingName::parse(&"a".repeat(THING_NAME_MAX_LEN + 1)),
            Err(CodeError::TooLong {
                max: THING_NAME_MAX_LEN
            })
        );
        for bad in [
            "a/b",
            "a+",
            "#",
            "a b",
            " a",
            "a\0",
            "$aws",
            "é",
            "a.b",
            "a\n",
            "a\u{200b}",
        ] {
            assert_eq!(ThingName::parse(bad), Err(CodeError::InvalidCharacter), "{bad:?}");
        }
    }

    #[test]
    fn topic_is_the_thing_name_and_the_config_suffix() {
        let thing = ThingName::parse("dev-1").expect("valid");
        assert_eq!(ConfigTopic::for_device(&thing).as_str(), "dev-1/expresslink_config");
    }

    #[test]
    fn redaction_keeps_only_a_prefix() {
        let thing = ThingName::parse("a1b2c3d4-e5f6-7890-abcd-ef0123456789").expect("valid");
        let shown = thing.redacted();
        assert_eq!(shown, "a1b2…(36 chars)");
        assert!(!shown.contains("ef0123456789"));
    }

    #[test]
    fn claim_ids_round_trip_only_in_canonical_form() {
        let id = ClaimId::new_random();
        assert_eq!(ClaimId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(ClaimId::parse(&id.as_str().to_uppercase()), None);
        assert_eq!(ClaimId::parse(&id.as_str().replace('-', "")), None);
        assert_eq!(ClaimId::parse("../etc"), None);
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<ThingName>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<ThingName>("\"a/#\"").is_err());
    }

    proptest! {
        /// Whatever string comes in, an accepted code yields `<code>/expresslink_config`: exactly
        /// two levels, the first being the code, no wildcard, no `$` system prefix, no NUL.
        #[test]
        fn no_accepted_code_escapes_its_topic(raw in any::<String>()) {
            check_topic(&raw)?;
        }

        /// The same over strings made mostly of the characters that matter for MQTT.
        #[test]
        fn no_accepted_code_escapes_its_topic_mqtt_alphabet(raw in "[a-z0-9/+#$ \\x00:_-]{0,70}") {
            check_topic(&raw)?;
        }
    }

    fn check_topic(raw: &str) -> Result<(), TestCaseError> {
        if let Ok(thing) = ThingName::parse(raw) {
            let topic = ConfigTopic::for_device(&thing);
            let levels: Vec<&str> = topic.as_str().split('/').collect();
            prop_assert_eq!(levels.len(), 2);
            prop_assert_eq!(levels[0], raw);
            prop_assert_eq!(levels[1], "expresslink_config");
            prop_assert!(!levels[0].is_empty());
            prop_assert!(!topic.as_str().contains(['+', '#', '\0']));
            prop_assert!(!topic.as_str().starts_with('$'));
            prop_assert!(raw.chars().count() <= THING_NAME_MAX_LEN);
        }
        Ok(())
    }
}
