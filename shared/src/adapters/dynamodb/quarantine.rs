//! The quarantine list on the table: one entry per quarantined thing in the `QUARANTINE`
//! partition. A registry device's entry is written in the transaction of the change that
//! quarantines or frees it (see [`DynamoOwnershipStore::quarantine_write`]); a thing that is not in
//! the registry has only the entry, written by itself.

use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};

use super::{
    items::{quarantine_from, quarantine_item, s},
    keys::{quarantine_sk, QUARANTINE_PK, QUARANTINE_SK_PREFIX},
    store::{unavailable, DynamoOwnershipStore},
};
use crate::{
    domain::{ids::ThingName, quarantine::Quarantine},
    ports::{DeviceChange, StoreError},
};

impl DynamoOwnershipStore {
    pub(super) async fn quarantine_entry(&self, thing: &ThingName) -> Result<Option<Quarantine>, StoreError> {
        self.get(QUARANTINE_PK.to_owned(), &quarantine_sk(thing))
            .await?
            .map(|item| quarantine_from(&item))
            .transpose()
    }

    pub(super) async fn quarantine_entries(
        &self,
        after: Option<&ThingName>,
        limit: u32,
    ) -> Result<Vec<Quarantine>, StoreError> {
        let after = after.map_or_else(|| QUARANTINE_SK_PREFIX.to_owned(), quarantine_sk);
        let out = self
            .client()
            .query()
            .table_name(self.table())
            .key_condition_expression("pk = :pk AND sk > :after")
            .expression_attribute_values(":pk", s(QUARANTINE_PK))
            .expression_attribute_values(":after", s(after))
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(unavailable)?;
        out.items().iter().map(quarantine_from).collect()
    }

    pub(super) async fn put_quarantine_entry(&self, quarantine: &Quarantine) -> Result<(), StoreError> {
        self.client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(quarantine_item(quarantine)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn remove_quarantine_entry(&self, thing: &ThingName) -> Result<(), StoreError> {
        self.client()
            .delete_item()
            .table_name(self.table())
            .key("pk", s(QUARANTINE_PK))
            .key("sk", s(quarantine_sk(thing)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The list entry's write when the change quarantines the device or frees it.
    pub(super) fn quarantine_write(&self, change: &DeviceChange) -> Result<Option<TransactWriteItem>, StoreError> {
        if change.previous_quarantine == change.device.quarantine {
            return Ok(None);
        }
        let write = match &change.device.quarantine {
            Some(quarantine) => {
                let put = Put::builder()
                    .table_name(self.table())
                    .set_item(Some(quarantine_item(quarantine)))
                    .build()
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?;
                TransactWriteItem::builder().put(put).build()
            }
            None => {
                let delete = Delete::builder()
                    .table_name(self.table())
                    .key("pk", s(QUARANTINE_PK))
                    .key("sk", s(quarantine_sk(&change.device.thing_name)))
                    .build()
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?;
                TransactWriteItem::builder().delete(delete).build()
            }
        };
        Ok(Some(write))
    }
}
