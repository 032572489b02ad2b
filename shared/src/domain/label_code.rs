//! Label codes distinct from the ThingName: some OEMs print their own code on the label (or in the
//! QR code) instead of the module's UID. Such a code is a secret of the product's owner: it is
//! stored only as a keyed hash (HMAC-SHA256 with a key from Secrets Manager), looked up by that
//! hash, and never logged or returned. Neither the code nor the hash implements `Display`, and
//! their `Debug` output is redacted, so neither can slip into a log line by accident.

use std::fmt;

use aws_lc_rs::hmac;

use super::ids::ThingName;

/// Longest label code accepted (a QR code's content, e.g. a short URL, included).
pub const LABEL_CODE_MAX_LEN: usize = 128;

/// Shortest key accepted: 256 bits, the HMAC-SHA256 block strength.
pub const LABEL_CODE_KEY_MIN_BYTES: usize = 32;

/// Why a label code was refused (`400 invalid_code`). The message never contains the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelCodeError {
    #[error("the code is empty")]
    Empty,
    #[error("the code is longer than {max} characters")]
    TooLong { max: usize },
    #[error("the code may only contain printable ASCII characters without spaces")]
    InvalidCharacter,
}

/// What a user typed or scanned: 1–128 printable ASCII characters without spaces. It may be the
/// device's ThingName (labels that show the UID) or an OEM code.
#[derive(Clone, PartialEq, Eq)]
pub struct LabelCode(String);

impl LabelCode {
    pub fn parse(raw: &str) -> Result<Self, LabelCodeError> {
        if raw.is_empty() {
            return Err(LabelCodeError::Empty);
        }
        if raw.chars().count() > LABEL_CODE_MAX_LEN {
            return Err(LabelCodeError::TooLong {
                max: LABEL_CODE_MAX_LEN,
            });
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(LabelCodeError::InvalidCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The code read as a ThingName, if it is one (labels that show the module's UID).
    pub fn as_thing_name(&self) -> Option<ThingName> {
        ThingName::parse(&self.0).ok()
    }

    /// The code itself, for hashing. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<ThingName> for LabelCode {
    /// A ThingName is always a valid label code (its alphabet is a subset).
    fn from(thing: ThingName) -> Self {
        Self(thing.as_str().to_owned())
    }
}

impl fmt::Debug for LabelCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LabelCode(<redacted, {} chars>)", self.0.chars().count())
    }
}

/// The keyed hash of a label code: 64 lowercase hex characters (HMAC-SHA256). It is what the
/// table stores; it is not shown to anybody either (it would let anyone holding the table confirm
/// guesses only with the key, but it is still the code's stand-in).
#[derive(Clone, PartialEq, Eq)]
pub struct CodeHash(String);

impl CodeHash {
    /// A stored hash read back: exactly 64 lowercase hex characters.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 64 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeHash(<redacted>)")
    }
}

/// The HMAC key label codes are hashed with (the secret named by `LABEL_CODE_KEY_SECRET`).
#[derive(Clone)]
pub struct LabelCodeKey(hmac::Key);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the label code key must be at least {LABEL_CODE_KEY_MIN_BYTES} bytes, it has {0}")]
pub struct KeyTooShort(pub usize);

impl LabelCodeKey {
    pub fn new(secret: &[u8]) -> Result<Self, KeyTooShort> {
        if secret.len() < LABEL_CODE_KEY_MIN_BYTES {
            return Err(KeyTooShort(secret.len()));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    pub fn hash(&self, code: &LabelCode) -> CodeHash {
        let tag = hmac::sign(&self.0, code.expose().as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in tag.as_ref() {
            hex.push_str(&format!("{byte:02x}"));
        }
        CodeHash(hex)
    }
}

impl fmt::Debug for LabelCodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LabelCodeKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> LabelCodeKey {
        LabelCodeKey::new(&[byte; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn code(raw: &str) -> LabelCode {
        LabelCode::parse(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_hash_is_stable_keyed_hex_sha256() {
        let first = key(7).hash(&code("ACME-4711-XY"));
        assert_eq!(
            first,
            key(7).hash(&code("ACME-4711-XY")),
            "same key, same code: same hash"
        );
        assert_eq!(first.as_str().len(), 64);
        assert_eq!(CodeHash::parse(first.as_str()), Some(first.clone()));
        assert_ne!(first, key(8).hash(&code("ACME-4711-XY")), "another key");
        assert_ne!(first, key(7).hash(&code("ACME-4711-XZ")), "another code");
        // A fixed vector (Python: hmac.new(key, b"hello", hashlib.sha256).hexdigest()) keeps the
        // algorithm from drifting: stored hashes must stay valid across releases.
        let vector = LabelCodeKey::new(b"0123456789abcdef0123456789abcdef")
            .unwrap_or_else(|e| panic!("{e}"))
            .hash(&code("hello"));
        assert_eq!(
            vector.as_str(),
            "db68b47b63c2397eac785025b1c9c2103ae06c28998234a783b3eb6453d1ad70"
        );
    }

    #[test]
    fn keys_and_codes_are_redacted_in_debug() {
        let secret = [b'k'; 40];
        let key = LabelCodeKey::new(&secret).unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{key:?}");
        assert_eq!(shown, "LabelCodeKey(<redacted>)");
        let label = code("SECRET-CODE-1");
        let shown = format!("{label:?} {:?}", key.hash(&label));
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains(key.hash(&label).as_str()), "{shown}");
        assert_eq!(LabelCodeKey::new(&[1; 31]).err(), Some(KeyTooShort(31)));
    }

    #[test]
    fn codes_are_printable_ascii_without_spaces() {
        for ok in [
            "x",
            "ACME-4711",
            "https://oem.example/p?c=AB12",
            "a/b#c+$",
            &"z".repeat(128),
        ] {
            assert!(LabelCode::parse(ok).is_ok(), "{ok:?}");
        }
        assert_eq!(LabelCode::parse(""), Err(LabelCodeError::Empty));
        assert_eq!(
            LabelCode::parse(&"z".repeat(129)),
            Err(LabelCodeError::TooLong { max: 128 })
        );
        for bad in ["a b", " a", "a\n", "a\0", "é", "a\u{200b}", "\t"] {
            assert_eq!(LabelCode::parse(bad), Err(LabelCodeError::InvalidCharacter), "{bad:?}");
        }
        let err = LabelCode::parse("SECRET CODE").unwrap_err().to_string();
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn a_code_may_be_a_thing_name() {
        assert_eq!(code("dev-1").as_thing_name(), ThingName::parse("dev-1").ok());
        assert_eq!(code("a/b").as_thing_name(), None);
        let thing = ThingName::parse("dev-2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(LabelCode::from(thing.clone()).as_thing_name(), Some(thing));
    }
}
