//! Delivers the endpoint messages that claims owe, one claim-thing connection at a time.
//!
//! A claim owes a publish while `next_publish_at` is set (see [`Claim`]); such claims form the
//! outbox (a sparse index of the table). [`Outbox::drain`] publishes every due claim, grouped by
//! module vendor. Each vendor's claim-thing has one MQTT client id, and AWS IoT disconnects a client
//! when another connects with the same id, so a vendor's publishes must never overlap: the drain
//! takes a per-vendor lease in the table first and skips vendors whose lease another drain holds
//! (that drain publishes their claims). Drains run right after a claim is accepted (the API) and
//! on a schedule (the `claim-publisher` function), so a failed publish is retried with backoff
//! until it succeeds or the claim expires, without anyone asking again.

use std::{collections::HashSet, sync::Arc, time::Duration as StdDuration};

use time::Duration;

use crate::{
    domain::{
        claim::Claim,
        ids::ConfigTopic,
        publish::{endpoint_message, ClaimThingCredentials, PublishError},
    },
    ports::{CredentialSource, EndpointPublisher, OwnershipStore, StoreError},
    service::{ClaimService, Clock},
};

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// How long a vendor lease lasts without renewal; renewed before every publish.
    pub lease_for: Duration,
    /// Claims read from the outbox per round.
    pub batch: u32,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            lease_for: Duration::seconds(30),
            batch: 100,
        }
    }
}

/// What one drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub published: u32,
    pub failed: u32,
    /// Vendors whose lease another drain held.
    pub busy_vendors: u32,
    /// Stopped because the time budget ran out with claims still due.
    pub out_of_time: bool,
}

pub struct Outbox {
    credentials: Arc<dyn CredentialSource>,
    transport: Arc<dyn EndpointPublisher>,
    settings: OutboxSettings,
    /// Identifies this drainer in leases: unique per execution environment.
    holder: String,
}

impl Outbox {
    pub fn new(
        credentials: Arc<dyn CredentialSource>,
        transport: Arc<dyn EndpointPublisher>,
        settings: OutboxSettings,
    ) -> Self {
        Self {
            credentials,
            transport,
            settings,
            holder: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Publishes due claims until none is due, every remaining vendor is busy elsewhere, or `budget`
    /// is spent. Failures of single publishes are recorded on their claims, not returned.
    pub async fn drain<S: OwnershipStore, C: Clock>(
        &self,
        claims: &ClaimService<S, C>,
        budget: StdDuration,
    ) -> Result<DrainReport, StoreError> {
        self.drain_where(claims, budget, None).await
    }

    /// [`Outbox::drain`] limited to one vendor: what a request that just accepted a claim does, so
    /// another vendor's backlog never slows its answer.
    pub async fn drain_vendor<S: OwnershipStore, C: Clock>(
        &self,
        claims: &ClaimService<S, C>,
        vendor: &str,
        budget: StdDuration,
    ) -> Result<DrainReport, StoreError> {
        self.drain_where(claims, budget, Some(vendor)).await
    }

    async fn drain_where<S: OwnershipStore, C: Clock>(
        &self,
        claims: &ClaimService<S, C>,
        budget: StdDuration,
        only_vendor: Option<&str>,
    ) -> Result<DrainReport, StoreError> {
        let started = std::time::Instant::now();
        let mut report = DrainReport::default();
        let mut busy: HashSet<String> = HashSet::new();
        // Each claim is tried at most once per drain: if recording a result fails, the claim stays
        // due, and without this a drain would publish it again and again until its budget ran out.
        let mut tried: HashSet<String> = HashSet::new();
        loop {
            let mut due = claims.store().due_publishes(claims.now(), self.settings.batch).await?;
            due.retain(|claim| {
                !tried.contains(claim.claim_id.as_str()) && only_vendor.is_none_or(|v| v == claim.vendor)
            });
            let mut vendors: Vec<&str> = Vec::new();
            for claim in &due {
                if !busy.contains(&claim.vendor) && !vendors.contains(&claim.vendor.as_str()) {
                    vendors.push(&claim.vendor);
                }
            }
            if vendors.is_empty() {
                break;
            }
            for vendor in vendors {
                let lease = lease_name(vendor);
                if !self.take_lease(claims, &lease).await? {
                    busy.insert(vendor.to_owned());
                    report.busy_vendors += 1;
                    continue;
                }
                let credentials = self.credentials.claim_thing(vendor).await;
                let of_vendor: Vec<&Claim> = due.iter().filter(|claim| claim.vendor == vendor).collect();
                tried.extend(of_vendor.iter().map(|claim| claim.claim_id.as_str().to_owned()));
                let finished = self
                    .publish_all(
                        claims,
                        of_vendor.into_iter(),
                        &credentials,
                        &lease,
                        started,
                        budget,
                        &mut report,
                    )
                    .await;
                claims.store().release_lease(&lease, &self.holder).await?;
                if !finished? {
                    report.out_of_time = true;
                    return Ok(report);
                }
            }
        }
        if report == DrainReport::default() {
            return Ok(report); // nothing was due: no log line every scheduled minute
        }
        tracing::info!(
            event = "outbox_drain",
            published = report.published,
            failed = report.failed,
            busy_vendors = report.busy_vendors,
            latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        Ok(report)
    }

    /// Publishes one vendor's due claims in order. `Ok(false)`: the budget ran out first.
    #[allow(clippy::too_many_arguments)]
    async fn publish_all<'a, S: OwnershipStore, C: Clock>(
        &self,
        claims: &ClaimService<S, C>,
        due: impl Iterator<Item = &'a Claim>,
        credentials: &Result<ClaimThingCredentials, PublishError>,
        lease: &str,
        started: std::time::Instant,
        budget: StdDuration,
        report: &mut DrainReport,
    ) -> Result<bool, StoreError> {
        for claim in due {
            if started.elapsed() >= budget {
                return Ok(false);
            }
            // Renew before each publish, so a long batch never outlives its lease.
            if !self.take_lease(claims, lease).await? {
                return Ok(true);
            }
            let result = if !claim.is_live(claims.now()) {
                // Nothing is sent; recording it takes the claim out of the outbox.
                Ok(())
            } else {
                let result = match credentials {
                    Ok(credentials) => {
                        let topic = ConfigTopic::for_device(&claim.thing_name);
                        let payload = endpoint_message(&claim.target_endpoint);
                        self.transport.publish(credentials, &topic, &payload).await
                    }
                    Err(err) => Err(err.clone()),
                };
                match &result {
                    Ok(()) => report.published += 1,
                    Err(_) => report.failed += 1,
                }
                result
            };
            if let Err(err) = claims.record_publish(&claim.claim_id, &result).await {
                // The message may have gone out but its record did not land: the claim stays due and
                // is published again later, which the module treats the same (it only moves once).
                tracing::warn!(event = "outbox_record_failed", claim_id = claim.claim_id.as_str(), error = %err);
            }
        }
        Ok(true)
    }

    async fn take_lease<S: OwnershipStore, C: Clock>(
        &self,
        claims: &ClaimService<S, C>,
        lease: &str,
    ) -> Result<bool, StoreError> {
        let now = claims.now();
        claims
            .store()
            .acquire_lease(lease, &self.holder, now, now + self.settings.lease_for)
            .await
    }
}

/// The production outbox: claim-thing credentials from Secrets Manager (secret name prefix from
/// `CLAIM_THING_SECRET_PREFIX`, cached 5 minutes) and the MQTT transport.
pub fn from_aws(aws: &aws_types::SdkConfig) -> Result<Outbox, crate::config::ConfigError> {
    let credentials = crate::adapters::secrets::SecretsManagerCredentials::new(
        aws_sdk_secretsmanager::Client::new(aws),
        crate::config::env_or("CLAIM_THING_SECRET_PREFIX", "expresslink/claim-thing/"),
        StdDuration::from_secs(300),
    )
    .map_err(|err| crate::config::ConfigError(err.to_string()))?;
    Ok(Outbox::new(
        Arc::new(credentials),
        Arc::new(crate::adapters::mqtt::MqttPublisher::default()),
        OutboxSettings::default(),
    ))
}

fn lease_name(vendor: &str) -> String {
    format!("publisher#{vendor}")
}
