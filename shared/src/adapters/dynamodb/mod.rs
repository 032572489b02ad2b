//! [`OwnershipStore`](crate::ports::OwnershipStore) on one DynamoDB table (single-table design):
//! `store` runs the queries and the transaction, `items` maps items to domain records and back,
//! `keys` builds the keys. The data model is documented in `docs/data-model.md`.
//!
//! | item        | pk                    | sk                  | gsi1 (`by_user`)                       | gsi2 (`by_state`)                  |
//! |-------------|-----------------------|---------------------|----------------------------------------|------------------------------------|
//! | device      | `DEVICE#<thing>`      | `#DEVICE`           | `USER#<holder>` / `DEVICE#<thing>`     | –                                  |
//! | history     | `DEVICE#<thing>`      | `HISTORY#<seq:010>` | –                                      | –                                  |
//! | claim       | `CLAIM#<claim_id>`    | `#CLAIM`            | `USER#<user>` / `CLAIM#<created>#<id>` | `STATE#<state>` / `<deadline>#<id>`|
//! | idempotency | `IDEMPOTENCY#<user>`  | `KEY#<key>`         | –                                      | –                                  |
//! | lease       | `LEASE#<name>`        | `#LEASE`            | –                                      | –                                  |
//! | label code  | `CODE#<hmac>`         | `#CODE`             | –                                      | –                                  |
//! | attempts    | `ATTEMPTS#<scope>`    | `WINDOW#<start>`    | –                                      | –                                  |
//! | quarantine  | `QUARANTINE`          | `THING#<thing>`     | –                                      | –                                  |
//!
//! Claims that owe a publish are also in the sparse `outbox` index: `gsi3pk = OUTBOX`,
//! `gsi3sk = <next_publish_at>#<id>`.
//!
//! Every write goes through `OwnershipStore::commit`, one `TransactWriteItems` whose conditions
//! are: the device is still at the version the decision was made on, each updated claim is still
//! at its version, each new claim and history entry does not exist yet, and the idempotency key is
//! free, and a device's quarantine list entry follows its quarantine; a change may also take or give
//! back a publisher lease. History items are only ever `Put` with `attribute_not_exists`: nothing
//! updates or deletes them. `reads` reads several single items in one `BatchGetItem`.

mod items;
mod keys;
mod quarantine;
mod reads;
mod store;
pub mod stream;

pub use keys::{BY_STATE_INDEX, BY_USER_INDEX, OUTBOX_INDEX};
pub use store::DynamoOwnershipStore;
