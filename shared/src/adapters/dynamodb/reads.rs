//! Several single items in one round trip (`BatchGetItem`, strongly consistent): the claim path
//! reads the user's failed attempts with the label code's lookup entry, and the device with the
//! user's attempts on it and the idempotency record, in one call each.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::KeysAndAttributes;

use super::{
    items::{claim_from, claim_id_attr, device_from, s, str_attr, thing_attr, time_attr, u64_attr, Item},
    keys::{
        attempts_pk, attempts_sk, claim_pk, code_pk, device_pk, idempotency_pk, idempotency_sk, CLAIM_SK, CODE_SK,
        DEVICE_SK,
    },
    store::{unavailable, DynamoOwnershipStore},
};
use crate::{
    domain::ids::{IdempotencyKey, UserId},
    ports::{Found, IdempotencyRecord, Read, StoreError},
};

/// How many times keys DynamoDB left unprocessed (throttling, size) are asked for again; every call
/// has the SDK's deadlines.
const MAX_ROUNDS: usize = 4;

/// Keys one `BatchGetItem` may ask for (DynamoDB's limit).
const MAX_KEYS: usize = 100;

/// The item key a read names.
pub(super) fn key_of(read: &Read) -> (String, String) {
    match read {
        Read::Device(thing) => (device_pk(thing), DEVICE_SK.to_owned()),
        Read::Claim(claim_id) => (claim_pk(claim_id), CLAIM_SK.to_owned()),
        Read::Code(hash) => (code_pk(hash), CODE_SK.to_owned()),
        Read::Attempts(scope, window_start) => (attempts_pk(scope), attempts_sk(*window_start)),
        Read::Idempotency(user, key, _) => (idempotency_pk(user), idempotency_sk(key)),
    }
}

/// What a read found in `item` (`None`: no such item).
pub(super) fn found_in(read: &Read, item: Option<&Item>) -> Result<Found, StoreError> {
    Ok(match read {
        Read::Device(_) => Found::Device(item.map(device_from).transpose()?.map(Box::new)),
        Read::Claim(_) => Found::Claim(item.map(claim_from).transpose()?.map(Box::new)),
        Read::Code(_) => Found::Code(item.map(|item| thing_attr(item, "thing_name")).transpose()?),
        Read::Attempts(..) => Found::Attempts(match item {
            None => 0,
            Some(item) => u32::try_from(u64_attr(item, "attempts")?).unwrap_or(u32::MAX),
        }),
        Read::Idempotency(user, key, now) => Found::Idempotency(match item {
            None => None,
            Some(item) => Some(idempotency_from(user, key, item)?).filter(|record| record.expires_at > *now),
        }),
    })
}

/// An idempotency record as stored. TTL deletion is lazy (up to days late): the caller treats an
/// expired record as absent.
fn idempotency_from(user: &UserId, key: &IdempotencyKey, item: &Item) -> Result<IdempotencyRecord, StoreError> {
    Ok(IdempotencyRecord {
        user: user.clone(),
        key: key.clone(),
        claim_id: claim_id_attr(item, "claim_id")?,
        fingerprint: str_attr(item, "fingerprint")?.to_owned(),
        created_at: time_attr(item, "created_at")?,
        expires_at: time_attr(item, "expires_at")?,
    })
}

impl DynamoOwnershipStore {
    /// One item, as [`Self::read_items`] would read it.
    pub(super) async fn read_one(&self, read: Read) -> Result<Found, StoreError> {
        let (pk, sk) = key_of(&read);
        let item = self.get(pk, &sk).await?;
        found_in(&read, item.as_ref())
    }

    /// One read: `GetItem`; more: one `BatchGetItem` (and again for keys it left unprocessed).
    pub(super) async fn read_items(&self, reads: &[Read]) -> Result<Vec<Found>, StoreError> {
        if let [read] = reads {
            return Ok(vec![self.read_one(read.clone()).await?]);
        }
        let keys: Vec<(String, String)> = reads.iter().map(key_of).collect();
        let mut items: HashMap<(String, String), Item> = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_KEYS) {
            self.batch_get(chunk, &mut items).await?;
        }
        reads
            .iter()
            .zip(&keys)
            .map(|(read, key)| found_in(read, items.get(key)))
            .collect()
    }

    /// One `BatchGetItem` of at most [`MAX_KEYS`] keys (and again for what it left unprocessed),
    /// into `items`.
    async fn batch_get(
        &self,
        keys: &[(String, String)],
        items: &mut HashMap<(String, String), Item>,
    ) -> Result<(), StoreError> {
        let mut pending: Vec<Item> = keys
            .iter()
            .map(|(pk, sk)| Item::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))]))
            .collect();
        for _ in 0..MAX_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|err| StoreError::Corrupt(err.to_string()))?;
            let out = self
                .client()
                .batch_get_item()
                .request_items(self.table(), request)
                .send()
                .await
                .map_err(unavailable)?;
            for item in out
                .responses
                .and_then(|mut tables| tables.remove(self.table()))
                .unwrap_or_default()
            {
                let key = (str_attr(&item, "pk")?.to_owned(), str_attr(&item, "sk")?.to_owned());
                items.insert(key, item);
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut tables| tables.remove(self.table()))
                .map(|left| left.keys)
                .unwrap_or_default();
        }
        if !pending.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "DynamoDB left {} keys unprocessed after {MAX_ROUNDS} rounds",
                pending.len()
            )));
        }
        Ok(())
    }
}
