//! [`OwnershipStore`] in memory: the same contract as the DynamoDB store (the suite in
//! `tests/tests/store_contract/` runs against both), so use-case tests run in milliseconds without
//! DynamoDB Local. Clones share one store. Times are kept to the millisecond, as the table keeps
//! them. Not for production: nothing survives the process.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use async_trait::async_trait;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use time::OffsetDateTime;

use crate::{
    domain::{
        attempts::AttemptScope,
        claim::{Claim, ClaimState},
        device::{Device, Holder},
        history::HistoryEntry,
        ids::{ClaimId, IdempotencyKey, ThingName, UserId},
        label_code::CodeHash,
        quarantine::Quarantine,
    },
    ports::{Absent, CommitError, DeviceChange, IdempotencyRecord, OwnershipStore, Page, PageError, StoreError},
};

#[derive(Clone, Default)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
    /// While set, every call fails as a store that cannot be reached does.
    down: Arc<AtomicBool>,
}

#[derive(Default)]
struct Tables {
    /// By ThingName, in the order the `by_user` index lists devices.
    devices: BTreeMap<String, Device>,
    history: HashMap<String, Vec<HistoryEntry>>,
    claims: HashMap<String, Claim>,
    idempotency: HashMap<(String, String), IdempotencyRecord>,
    codes: HashMap<String, ThingName>,
    /// Lease name → (holder, until).
    leases: HashMap<String, (String, OffsetDateTime)>,
    /// (scope key, window start in ms) → count.
    attempts: HashMap<(String, i64), u32>,
    /// The quarantine list, by ThingName.
    quarantines: BTreeMap<String, Quarantine>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail with `StoreError::Unavailable` (`true`) or work again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every stored claim (tests look at what a use case wrote).
    pub fn all_claims(&self) -> Vec<Claim> {
        self.lock().claims.values().cloned().collect()
    }

    pub fn idempotency_record_count(&self) -> usize {
        self.lock().idempotency.len()
    }

    /// The scopes failed attempts are counted under (`AttemptScope::key`).
    pub fn attempt_scope_keys(&self) -> Vec<String> {
        self.lock().attempts.keys().map(|(scope, _)| scope.clone()).collect()
    }

    fn tables(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the in-memory store is set down".into()));
        }
        Ok(self.lock())
    }

    /// Every claim due at `now`, earliest first (ties by claim id, as the outbox index sorts).
    fn all_due(&self, now: OffsetDateTime) -> Result<Vec<Claim>, StoreError> {
        let tables = self.tables()?;
        let mut due: Vec<&Claim> = tables
            .claims
            .values()
            .filter(|claim| claim.next_publish_at.is_some_and(|at| millis(at) <= millis(now)))
            .collect();
        due.sort_by_key(|claim| (claim.next_publish_at.map(millis), claim.claim_id.as_str().to_owned()));
        Ok(due.into_iter().cloned().collect())
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while the lock was held leaves consistent data (every change is applied after
        // all its checks), so the poison is ignored.
        self.tables.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn millis(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos() / 1_000_000
}

impl Tables {
    /// Every condition of a change, as the DynamoDB transaction states them. `Err`: which one
    /// failed decides the error, in the same order of precedence as the DynamoDB store.
    fn check(&self, change: &DeviceChange) -> Result<(), CommitError> {
        let thing = change.device.thing_name.as_str();
        let device_ok = match (change.expected_version, self.devices.get(thing)) {
            (None, existing) => existing.is_none(),
            (Some(version), Some(stored)) => {
                stored.version == version && stored.history_len == change.expected_history_len
            }
            (Some(_), None) => false,
        };
        let claims_ok = change.claims.iter().all(|write| {
            match (write.expected_version, self.claims.get(write.claim.claim_id.as_str())) {
                (None, existing) => existing.is_none(),
                (Some(version), Some(stored)) => stored.version == version,
                (Some(_), None) => false,
            }
        });
        let stored_history = self.history.get(thing).map_or(0, Vec::len) as u64;
        let history_ok = change.history.iter().all(|entry| entry.seq > stored_history);
        let ours = |hash: &CodeHash| {
            self.codes
                .get(hash.as_str())
                .is_none_or(|owner| owner.as_str() == thing)
        };
        let (code_ok, old_code_ok) = if change.previous_code_hash == change.device.code_hash {
            (true, true)
        } else {
            (
                change.device.code_hash.as_ref().is_none_or(ours),
                change.previous_code_hash.as_ref().is_none_or(ours),
            )
        };
        let absent_ok = change.must_be_absent.iter().all(|absent| match absent {
            Absent::Device(thing) => !self.devices.contains_key(thing.as_str()),
            Absent::Code(hash) => !self.codes.contains_key(hash.as_str()),
        });
        let idempotency_ok = change.idempotency.as_ref().is_none_or(|record| {
            self.idempotency
                .get(&(record.user.as_str().to_owned(), record.key.as_str().to_owned()))
                .is_none_or(|stored| millis(stored.expires_at) <= millis(record.created_at))
        });
        if !code_ok || !absent_ok {
            Err(CommitError::CodeTaken)
        } else if !idempotency_ok {
            Err(CommitError::IdempotencyKeyUsed)
        } else if !(device_ok && claims_ok && history_ok && old_code_ok) {
            Err(CommitError::Conflict)
        } else {
            Ok(())
        }
    }

    /// As the table's condition states it: nobody has the lease, it lapsed, or `holder` has it.
    fn lease_free(&self, name: &str, holder: &str, now: OffsetDateTime) -> bool {
        self.leases
            .get(name)
            .is_none_or(|(current, lapses)| millis(*lapses) <= millis(now) || current == holder)
    }

    fn apply(&mut self, change: DeviceChange) {
        let thing = change.device.thing_name.clone();
        if change.previous_code_hash != change.device.code_hash {
            if let Some(old) = &change.previous_code_hash {
                self.codes.remove(old.as_str());
            }
            if let Some(new) = &change.device.code_hash {
                self.codes.insert(new.as_str().to_owned(), thing.clone());
            }
        }
        for write in change.claims {
            self.claims
                .insert(write.claim.claim_id.as_str().to_owned(), write.claim);
        }
        self.history
            .entry(thing.as_str().to_owned())
            .or_default()
            .extend(change.history);
        if let Some(record) = change.idempotency {
            let key = (record.user.as_str().to_owned(), record.key.as_str().to_owned());
            self.idempotency.insert(key, record);
        }
        if change.previous_quarantine != change.device.quarantine {
            match &change.device.quarantine {
                Some(quarantine) => self.quarantines.insert(thing.as_str().to_owned(), quarantine.clone()),
                None => self.quarantines.remove(thing.as_str()),
            };
        }
        self.devices.insert(thing.as_str().to_owned(), change.device);
    }

    /// Claims recorded in `state`, by deadline (then id), as the `by_state` index orders them.
    fn by_state(&self, state: ClaimState) -> Vec<&Claim> {
        let mut claims: Vec<&Claim> = self.claims.values().filter(|claim| claim.state == state).collect();
        claims.sort_by(|a, b| {
            (millis(a.expires_at), a.claim_id.as_str()).cmp(&(millis(b.expires_at), b.claim_id.as_str()))
        });
        claims
    }
}

fn page_size(limit: u32, max: u32) -> usize {
    usize::try_from(limit.clamp(1, max)).unwrap_or(1)
}

/// A page token names the user and the last device of the page, so a token works only for the
/// user it was given to.
fn encode_token(user: &UserId, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{user}\n{last}"))
}

fn decode_token(token: &str, user: &UserId) -> Result<String, PageError> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| PageError::InvalidToken)?;
    let text = String::from_utf8(bytes).map_err(|_| PageError::InvalidToken)?;
    match text.split_once('\n') {
        Some((owner, last)) if owner == user.as_str() && ThingName::parse(last).is_ok() => Ok(last.to_owned()),
        _ => Err(PageError::InvalidToken),
    }
}

#[async_trait]
impl OwnershipStore for MemoryStore {
    async fn device(&self, thing: &ThingName) -> Result<Option<Device>, StoreError> {
        Ok(self.tables()?.devices.get(thing.as_str()).cloned())
    }

    async fn claim(&self, claim_id: &ClaimId) -> Result<Option<Claim>, StoreError> {
        Ok(self.tables()?.claims.get(claim_id.as_str()).cloned())
    }

    async fn thing_by_code(&self, hash: &CodeHash) -> Result<Option<ThingName>, StoreError> {
        Ok(self.tables()?.codes.get(hash.as_str()).cloned())
    }

    async fn history(&self, thing: &ThingName) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self.tables()?.history.get(thing.as_str()).cloned().unwrap_or_default())
    }

    async fn idempotency_record(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        now: OffsetDateTime,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let tables = self.tables()?;
        let record = tables
            .idempotency
            .get(&(user.as_str().to_owned(), key.as_str().to_owned()));
        Ok(record.filter(|record| record.expires_at > now).cloned())
    }

    async fn commit(&self, change: DeviceChange) -> Result<(), CommitError> {
        if !change.history_is_contiguous() {
            return Err(StoreError::Corrupt("history entries do not continue the device's numbering".into()).into());
        }
        let mut tables = self.tables()?;
        tables.check(&change)?;
        tables.apply(change);
        Ok(())
    }

    async fn update_claim(&self, claim: &Claim, expected_version: u64) -> Result<(), CommitError> {
        let mut tables = self.tables()?;
        match tables.claims.get_mut(claim.claim_id.as_str()) {
            Some(stored) if stored.version == expected_version => {
                *stored = claim.clone();
                Ok(())
            }
            _ => Err(CommitError::Conflict),
        }
    }

    async fn devices_held_by(
        &self,
        user: &UserId,
        page_token: Option<&str>,
        limit: u32,
    ) -> Result<Page<Device>, PageError> {
        let after = page_token.map(|token| decode_token(token, user)).transpose()?;
        let tables = self.tables()?;
        let size = page_size(limit, 100);
        let held = tables
            .devices
            .iter()
            .filter(|(thing, _)| after.as_deref().is_none_or(|after| thing.as_str() > after))
            .filter(|(_, device)| match &device.holder {
                Holder::Free => false,
                Holder::Reserved { user: holder, .. } | Holder::Owned { user: holder, .. } => holder == user,
            });
        let items: Vec<Device> = held.take(size).map(|(_, device)| device.clone()).collect();
        // As DynamoDB does: a full page always has a next token, even if nothing follows.
        let next_token = (items.len() == size)
            .then(|| {
                items
                    .last()
                    .map(|device| encode_token(user, device.thing_name.as_str()))
            })
            .flatten();
        Ok(Page { items, next_token })
    }

    async fn due_publishes(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Claim>, StoreError> {
        let mut due = self.all_due(now)?;
        due.truncate(page_size(limit, 1000));
        Ok(due)
    }

    async fn newest_due_publishes(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Claim>, StoreError> {
        let mut due = self.all_due(now)?;
        due.reverse();
        due.truncate(page_size(limit, 1000));
        Ok(due)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tables = self.tables()?;
        let free = tables.lease_free(name, holder, now);
        if free {
            tables.leases.insert(name.to_owned(), (holder.to_owned(), until));
        }
        Ok(free)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut tables = self.tables()?;
        if tables.leases.get(name).is_some_and(|(current, _)| current == holder) {
            tables.leases.remove(name);
        }
        Ok(())
    }

    async fn overdue_claims(&self, due_before: OffsetDateTime, limit: u32) -> Result<Vec<Claim>, StoreError> {
        let tables = self.tables()?;
        let mut overdue: Vec<&Claim> = [ClaimState::Pending, ClaimState::EndpointPublished]
            .into_iter()
            .flat_map(|state| tables.by_state(state))
            .filter(|claim| millis(claim.expires_at) < millis(due_before))
            .collect();
        overdue.sort_by_key(|claim| millis(claim.expires_at));
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(overdue.into_iter().take(wanted).cloned().collect())
    }

    async fn failed_attempts(&self, scope: &AttemptScope, window_start: OffsetDateTime) -> Result<u32, StoreError> {
        let tables = self.tables()?;
        let key = (scope.key(), i64::try_from(millis(window_start)).unwrap_or(i64::MAX));
        Ok(tables.attempts.get(&key).copied().unwrap_or(0))
    }

    async fn count_failed_attempt(
        &self,
        scope: &AttemptScope,
        window_start: OffsetDateTime,
        _forget_after: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables()?;
        let key = (scope.key(), i64::try_from(millis(window_start)).unwrap_or(i64::MAX));
        let count = tables.attempts.entry(key).or_default();
        *count = count.saturating_add(1);
        Ok(())
    }

    async fn claims_in_state(
        &self,
        state: ClaimState,
        deadline_from: OffsetDateTime,
        deadline_to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Claim>, StoreError> {
        let tables = self.tables()?;
        let (from, to) = (millis(deadline_from), millis(deadline_to));
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(tables
            .by_state(state)
            .into_iter()
            .filter(|claim| (from..to).contains(&millis(claim.expires_at)))
            .take(wanted)
            .cloned()
            .collect())
    }

    async fn quarantine(&self, thing: &ThingName) -> Result<Option<Quarantine>, StoreError> {
        Ok(self.tables()?.quarantines.get(thing.as_str()).cloned())
    }

    async fn quarantines(&self, after: Option<&ThingName>, limit: u32) -> Result<Vec<Quarantine>, StoreError> {
        let tables = self.tables()?;
        Ok(tables
            .quarantines
            .iter()
            .filter(|(thing, _)| after.is_none_or(|after| thing.as_str() > after.as_str()))
            .take(page_size(limit, 1000))
            .map(|(_, quarantine)| quarantine.clone())
            .collect())
    }

    async fn put_quarantine(&self, quarantine: &Quarantine) -> Result<(), StoreError> {
        self.tables()?
            .quarantines
            .insert(quarantine.thing_name.as_str().to_owned(), quarantine.clone());
        Ok(())
    }

    async fn remove_quarantine(&self, thing: &ThingName) -> Result<(), StoreError> {
        self.tables()?.quarantines.remove(thing.as_str());
        Ok(())
    }
}
