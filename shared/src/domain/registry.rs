//! The device registry as the OEM writes it: device records from the factory (an import file or the
//! admin API), checked field by field, and what importing one does to the device it names. An
//! import never touches ownership, so importing a file again is always safe.

use time::OffsetDateTime;

use super::{
    device::{Device, Holder},
    ids::{is_vendor_name, ThingName},
    label_code::{CodeHash, LabelCode, LabelCodeError, LabelCodeKey},
};

/// One device record as imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    pub thing_name: ThingName,
    pub vendor: String,
    pub sku: Option<String>,
    /// The keyed hash of the label code the OEM printed instead of the ThingName. `None` keeps the
    /// device's code as it is (a file without codes can be imported again safely).
    pub code_hash: Option<CodeHash>,
    /// May the device also be claimed by its ThingName? `None`: yes without a label code; with
    /// one, no for a new code, unchanged for a device that had a code already.
    pub allow_thing_name: Option<bool>,
    /// The row's label code read as a ThingName, when it is one: such a code must not be another
    /// device's ThingName (claims by that name would reach this device instead).
    pub code_as_thing_name: Option<ThingName>,
}

/// What importing a record does to the device it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportDecision<'a> {
    /// A new device, free.
    Create(Device),
    /// `after` is `before` with its vendor, SKU, label code and ThingName-claim setting as the
    /// record says; holder, history and version as they were.
    Update { before: &'a Device, after: Device },
    /// The record says what the device already is.
    Unchanged,
}

impl NewDevice {
    /// A device record as an operator wrote it (import file or admin API). The error names the
    /// field, so the row can be fixed; an empty SKU is no SKU.
    pub fn parse(thing_name: &str, vendor: &str, sku: Option<&str>) -> Result<Self, String> {
        let thing_name = ThingName::parse(thing_name).map_err(|err| format!("thing_name: {err}"))?;
        if !is_vendor_name(vendor) {
            return Err("vendor: 1-64 characters of A-Z a-z 0-9 . _ - (the module vendor's profile name)".into());
        }
        let sku = sku.filter(|sku| !sku.is_empty());
        if let Some(sku) = sku {
            if sku.len() > 64 || sku.chars().any(char::is_control) {
                return Err("sku: at most 64 printable characters".into());
            }
        }
        Ok(Self {
            thing_name,
            vendor: vendor.to_owned(),
            sku: sku.map(str::to_owned),
            code_hash: None,
            allow_thing_name: None,
            code_as_thing_name: None,
        })
    }

    /// Adds the row's label code (hashed with `key`; an empty code is no code) and its
    /// `allow_thing_name` setting. Errors name the field and never contain the code.
    pub fn with_label_code(
        mut self,
        code: Option<&str>,
        allow_thing_name: Option<bool>,
        key: Option<&LabelCodeKey>,
    ) -> Result<Self, String> {
        let code = code.filter(|code| !code.is_empty());
        if code.is_none() && allow_thing_name == Some(false) {
            // Also what keeps a claimctl failure report (which leaves codes out) from importing a
            // coded device without its code.
            return Err("allow_thing_name: false needs the row's code".into());
        }
        if let Some(code) = code {
            let Some(key) = key else {
                return Err("code: label codes are not enabled (no label code key is configured)".into());
            };
            let code = LabelCode::parse(code).map_err(|err: LabelCodeError| format!("code: {err}"))?;
            self.code_hash = Some(key.hash(&code));
            self.code_as_thing_name = code.as_thing_name();
        }
        self.allow_thing_name = allow_thing_name;
        Ok(self)
    }

    /// What importing this record into the registry, where the device is `existing`, does at `now`.
    pub fn decide<'a>(&self, existing: Option<&'a Device>, now: OffsetDateTime) -> ImportDecision<'a> {
        let had_code = existing.is_some_and(|device| device.code_hash.is_some());
        let code_hash = self
            .code_hash
            .clone()
            .or_else(|| existing.and_then(|device| device.code_hash.clone()));
        let thing_name_claims = match (self.allow_thing_name, &code_hash) {
            (_, None) => true,
            (Some(allowed), Some(_)) => allowed,
            // A new code closes ThingName claims unless the row says otherwise; a device that had a
            // code keeps its setting.
            (None, Some(_)) => had_code && existing.is_some_and(|device| device.thing_name_claims),
        };
        match existing {
            None => ImportDecision::Create(Device {
                thing_name: self.thing_name.clone(),
                vendor: self.vendor.clone(),
                sku: self.sku.clone(),
                disabled: false,
                holder: Holder::Free,
                imported_at: now,
                version: 0,
                history_len: 0,
                last_claim: None,
                provisioning: None,
                code_hash,
                thing_name_claims,
                quarantine: None,
            }),
            Some(device)
                if device.vendor == self.vendor
                    && device.sku == self.sku
                    && device.code_hash == code_hash
                    && device.thing_name_claims == thing_name_claims =>
            {
                ImportDecision::Unchanged
            }
            Some(before) => ImportDecision::Update {
                before,
                after: Device {
                    vendor: self.vendor.clone(),
                    sku: self.sku.clone(),
                    code_hash,
                    thing_name_claims,
                    ..before.clone()
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{ClaimId, UserId};
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 10:00 UTC);

    fn record(code: Option<&str>, allow_thing_name: Option<bool>) -> NewDevice {
        let key = LabelCodeKey::new(&[7; 32]).expect("key");
        NewDevice::parse("dev-1", "acme", Some("S1"))
            .and_then(|new| new.with_label_code(code, allow_thing_name, Some(&key)))
            .expect("valid record")
    }

    fn created(decision: ImportDecision) -> Device {
        match decision {
            ImportDecision::Create(device) => device,
            other => panic!("expected a new device, got {other:?}"),
        }
    }

    #[test]
    fn fields_are_checked_and_named() {
        assert!(NewDevice::parse("a/b", "acme", None).is_err_and(|e| e.starts_with("thing_name")));
        assert!(NewDevice::parse("dev-1", "", None).is_err_and(|e| e.starts_with("vendor")));
        assert!(NewDevice::parse("dev-1", "acme", Some(&"x".repeat(65))).is_err_and(|e| e.starts_with("sku")));
        assert_eq!(NewDevice::parse("dev-1", "acme", Some("")).map(|d| d.sku), Ok(None));
        let no_key = NewDevice::parse("dev-1", "acme", None).and_then(|d| d.with_label_code(Some("L-1"), None, None));
        assert!(no_key.is_err_and(|e| e.starts_with("code:") && !e.contains("L-1")));
        let closed_without_code =
            NewDevice::parse("dev-1", "acme", None).and_then(|d| d.with_label_code(None, Some(false), None));
        assert!(closed_without_code.is_err_and(|e| e.starts_with("allow_thing_name")));
    }

    #[test]
    fn a_new_code_closes_thing_name_claims_unless_the_row_opens_them() {
        assert!(created(record(None, None).decide(None, T0)).thing_name_claims);
        assert!(!created(record(Some("L-1"), None).decide(None, T0)).thing_name_claims);
        assert!(created(record(Some("L-1"), Some(true)).decide(None, T0)).thing_name_claims);
    }

    #[test]
    fn importing_again_keeps_ownership_and_what_the_row_leaves_out() {
        let mut owned = created(record(Some("L-1"), Some(true)).decide(None, T0));
        owned.holder = Holder::Owned {
            claim_id: ClaimId::new_random(),
            user: UserId::parse("alice").expect("user"),
            since: T0,
        };
        owned.version = 4;
        owned.history_len = 3;
        // The same file again, and one without codes: nothing changes.
        assert_eq!(
            record(Some("L-1"), Some(true)).decide(Some(&owned), T0),
            ImportDecision::Unchanged
        );
        assert_eq!(record(None, None).decide(Some(&owned), T0), ImportDecision::Unchanged);
        let moved = NewDevice::parse("dev-1", "other-vendor", Some("S1")).expect("valid");
        match moved.decide(Some(&owned), T0) {
            ImportDecision::Update { after: updated, .. } => {
                assert_eq!(updated.vendor, "other-vendor");
                assert_eq!(updated.code_hash, owned.code_hash, "the code stays");
                assert!(updated.thing_name_claims, "a device that had a code keeps its setting");
                assert_eq!(
                    (&updated.holder, updated.version, updated.history_len),
                    (&owned.holder, 4, 3)
                );
            }
            other => panic!("expected an update, got {other:?}"),
        }
    }
}
