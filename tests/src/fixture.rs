//! The fixture of every use-case and store-contract test: a fresh, empty store and a clock that
//! stands still until the test moves it. Each store kind implements [`TestStore`], so one test body
//! runs on DynamoDB Local and in memory ([`on_both_stores!`](crate::on_both_stores)).

use std::sync::Arc;

use aws_sdk_dynamodb::{types::AttributeValue, Client};
pub use claim_shared::adapters::{dynamodb::DynamoOwnershipStore, memory::MemoryStore};
use claim_shared::{
    ports::OwnershipStore,
    service::{ClaimService, ClaimSettings},
};
use time::{macros::datetime, OffsetDateTime};

use crate::{dynamodb_at, fresh_table, local_dynamodb, ManualClock};

/// Where every fixture's clock starts.
pub const T0: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

/// A store kind the tests run on.
#[allow(async_fn_in_trait)]
pub trait TestStore: OwnershipStore + Clone + Sized + 'static {
    /// A new, empty store of this kind, and the way to look into it.
    async fn fresh() -> (Self, Probe);
    /// A store of this kind that cannot be reached: every call fails.
    async fn unreachable() -> Self;
}

impl TestStore for MemoryStore {
    async fn fresh() -> (Self, Probe) {
        let store = MemoryStore::new();
        (store.clone(), Probe::Memory(store))
    }

    async fn unreachable() -> Self {
        let store = MemoryStore::new();
        store.set_down(true);
        store
    }
}

impl TestStore for DynamoOwnershipStore {
    async fn fresh() -> (Self, Probe) {
        LocalTable::fresh().await.into_store()
    }

    async fn unreachable() -> Self {
        // Nothing listens on port 9 (discard) here: every call fails to connect.
        DynamoOwnershipStore::new(dynamodb_at("http://127.0.0.1:9").await, "unreachable")
    }
}

/// A table of a test's own on DynamoDB Local, created from `template.yaml`.
#[derive(Clone, Debug)]
pub struct LocalTable {
    pub client: Client,
    pub name: String,
}

impl LocalTable {
    /// On the local stack's DynamoDB Local.
    pub async fn fresh() -> Self {
        Self::fresh_on(local_dynamodb().await).await
    }

    /// On the engine (and with the settings) of `client`.
    pub async fn fresh_on(client: Client) -> Self {
        let name = fresh_table(&client).await;
        Self { client, name }
    }

    /// [`Self::fresh_on`], with the template's change stream.
    pub async fn fresh_with_stream_on(client: Client) -> Self {
        let name = crate::fresh_table_with_stream(&client).await;
        Self { client, name }
    }

    pub fn store(&self) -> DynamoOwnershipStore {
        DynamoOwnershipStore::new(self.client.clone(), &self.name)
    }

    /// Its store, and the table kept as the fixture's probe.
    pub fn into_store(self) -> (DynamoOwnershipStore, Probe) {
        (self.store(), Probe::Table(self))
    }

    /// Every stored item of one entity kind (a scan: test-only, the product never scans).
    pub async fn items(&self, entity: &str) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        let scanned = self
            .client
            .scan()
            .table_name(&self.name)
            .filter_expression("entity = :e")
            .expression_attribute_values(":e", AttributeValue::S(entity.into()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await;
        scanned.unwrap_or_else(|err| panic!("scan {}: {err}", self.name))
    }
}

/// What a test reads straight from a store to check what a use case wrote; the product never
/// reads this way.
#[derive(Clone)]
pub enum Probe {
    Memory(MemoryStore),
    Table(LocalTable),
}

impl Probe {
    /// How many claims name the device.
    pub async fn claims_of_device(&self, thing: &str) -> usize {
        match self {
            Probe::Memory(store) => store
                .all_claims()
                .iter()
                .filter(|claim| claim.thing_name.as_str() == thing)
                .count(),
            Probe::Table(table) => table
                .items("claim")
                .await
                .iter()
                .filter(|item| item.get("thing_name") == Some(&AttributeValue::S(thing.into())))
                .count(),
        }
    }

    pub async fn idempotency_records(&self) -> usize {
        match self {
            Probe::Memory(store) => store.idempotency_record_count(),
            Probe::Table(table) => table.items("idempotency").await.len(),
        }
    }

    /// The scopes failed attempts were counted under (`AttemptScope::key`), sorted.
    pub async fn attempt_scopes(&self) -> Vec<String> {
        let mut scopes = match self {
            Probe::Memory(store) => store.attempt_scope_keys(),
            Probe::Table(table) => table
                .items("attempts")
                .await
                .iter()
                .filter_map(|item| item.get("pk").and_then(|pk| pk.as_s().ok()))
                .map(|pk| pk.trim_start_matches("ATTEMPTS#").to_owned())
                .collect(),
        };
        scopes.sort();
        scopes.dedup();
        scopes
    }
}

/// A fresh store, a manual clock at [`T0`], and the use cases on them.
pub struct Fixture<S> {
    pub store: S,
    pub clock: ManualClock,
    pub service: Arc<ClaimService<S, ManualClock>>,
    pub probe: Probe,
}

impl<S: TestStore> Fixture<S> {
    pub async fn new() -> Self {
        Self::with_settings(ClaimSettings::default()).await
    }

    pub async fn with_settings(settings: ClaimSettings) -> Self {
        let (store, probe) = S::fresh().await;
        Self::on(store, probe, settings)
    }

    /// On `store` (e.g. a table on an engine of the test's own: [`LocalTable::into_store`]).
    pub fn on(store: S, probe: Probe, settings: ClaimSettings) -> Self {
        let clock = ManualClock::at(T0);
        let service = Arc::new(ClaimService::new(store.clone(), clock.clone(), settings));
        Self {
            store,
            clock,
            service,
            probe,
        }
    }

    /// Another service on the same store and clock, e.g. with label codes or a delivery.
    pub fn service_with(&self, settings: ClaimSettings) -> ClaimService<S, ManualClock> {
        ClaimService::new(self.store.clone(), self.clock.clone(), settings)
    }
}

impl Fixture<DynamoOwnershipStore> {
    /// The fixture's table (for tests that hand it to a binary or scan it).
    pub fn table(&self) -> &LocalTable {
        match &self.probe {
            Probe::Table(table) => table,
            Probe::Memory(_) => unreachable!("a DynamoDB fixture has a table"),
        }
    }
}

/// Runs each listed test body (`async fn name(fx: Fixture<S>)`, generic over [`TestStore`]) on
/// both stores: as `memory::name` (no engine needed, milliseconds) and `dynamodb::name` (DynamoDB
/// Local, the real thing).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::fixture::Fixture::<$crate::fixture::MemoryStore>::new().await)
                        .await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(
                        $crate::fixture::Fixture::<$crate::fixture::DynamoOwnershipStore>::new().await,
                    )
                    .await;
                }
            )*
        }
    };
}
