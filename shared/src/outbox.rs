//! Delivers the endpoint messages that claims owe, one claim-thing connection at a time.
//!
//! A claim owes a publish while `next_publish_at` is set (see [`Claim`]); such claims form the
//! outbox (a sparse index of the table). Each vendor's claim-thing has one MQTT client id, and AWS
//! IoT disconnects a client when another connects with the same id, so a vendor's publishes must
//! never overlap: every delivery runs under a per-vendor lease in the table, with a holder token of
//! its own (so even two drains in one process exclude each other). The `https` and `iam` transports
//! (one HTTP request, no client id) would not need the lease, but keep it, so retries, backoff and
//! ordering are the same whichever transport a vendor uses. Who delivers:
//!
//! - the API, right after accepting (or retrying) a claim: [`Outbox::publish_now`] delivers that
//!   claim if its vendor's lease is free, within the request's budget;
//! - the scheduled `claim-publisher`: [`Outbox::drain`] delivers every due claim, vendor by vendor,
//!   skipping vendors whose lease another delivery holds.
//!
//! Every decision uses a fresh, strongly consistent read of the claim (the index may lag), and a
//! failed publish is recorded on the claim and retried with backoff until it succeeds or the claim
//! expires, without anyone asking again.

use std::{collections::HashSet, sync::Arc, time::Duration as StdDuration};

use time::Duration;
use tokio::time::Instant;

use crate::{
    domain::{
        ids::{ClaimId, ConfigTopic},
        publish::{endpoint_message, ClaimThingCredentials, PublishError},
    },
    ports::{CredentialSource, EndpointPublisher, OwnershipStore, StoreError},
    service::{ClaimService, Clock, PublishAttempt},
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
            batch: 1000,
        }
    }
}

/// What one delivery run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub published: u32,
    pub failed: u32,
    /// Vendors whose lease another delivery held.
    pub busy_vendors: u32,
    /// Stopped because the time budget ran out with claims still due.
    pub out_of_time: bool,
}

pub struct Outbox {
    credentials: Arc<dyn CredentialSource>,
    transport: Arc<dyn EndpointPublisher>,
    settings: OutboxSettings,
}

/// A vendor's lease as one delivery run holds it.
struct Lease {
    name: String,
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
        }
    }

    /// Delivers one claim now if it still owes a publish and its vendor's lease is free (otherwise
    /// the lease holder or the schedule delivers it). Never takes much longer than `budget`.
    pub async fn publish_now<S: OwnershipStore, C: Clock>(
        &self,
        claims: &ClaimService<S, C>,
        claim_id: &ClaimId,
        budget: StdDuration,
    ) -> Result<DrainReport, StoreError> {
        let deadline = Instant::now() + budget;
        let mut report = DrainReport::default();
        let Some(claim) = claims.store().claim(claim_id).await? else {
            return Ok(report);
        };
        let Some(lease) = self.take_lease(claims, &claim.vendor, None).await? else {
            report.busy_vendors = 1;
            return Ok(report);
        };
        let credentials = self.credentials.claim_thing(&claim.vendor).await;
        let result = self
            .deliver(claims, claim_id, &credentials, deadline, &mut report)
            .await;
        claims.store().release_lease(&lease.name, &lease.holder).await?;
        result.map(|()| report)
    }

    /// Delivers every due claim until none is due, every remaining vendor is busy elsewhere, or
    /// `budget` is spent. Failures of single publishes are recorded on their claims, not returned.
    pub async fn drain<S: OwnershipStore, C: Clock>(
        &self,
        claims: &ClaimService<S, C>,
        budget: StdDuration,
    ) -> Result<DrainReport, StoreError> {
        let started = Instant::now();
        let deadline = started + budget;
        let mut report = DrainReport::default();
        let mut busy: HashSet<String> = HashSet::new();
        // Each claim is tried at most once per drain: if recording a result fails, the claim stays
        // due, and without this a drain would publish it again and again until its budget ran out.
        let mut tried: HashSet<ClaimId> = HashSet::new();
        loop {
            let mut due = claims.store().due_publishes(claims.now(), self.settings.batch).await?;
            due.retain(|claim| !tried.contains(&claim.claim_id) && !busy.contains(&claim.vendor));
            let Some(vendor) = due.first().map(|claim| claim.vendor.clone()) else {
                break;
            };
            let Some(lease) = self.take_lease(claims, &vendor, None).await? else {
                busy.insert(vendor);
                report.busy_vendors += 1;
                continue;
            };
            let credentials = self.credentials.claim_thing(&vendor).await;
            let mut outcome = Ok(());
            for claim in due.iter().filter(|claim| claim.vendor == vendor) {
                tried.insert(claim.claim_id.clone());
                if Instant::now() >= deadline {
                    report.out_of_time = true;
                    break;
                }
                // Renew before each publish, so a long batch never outlives its lease.
                if self.take_lease(claims, &vendor, Some(&lease)).await?.is_none() {
                    break;
                }
                outcome = self
                    .deliver(claims, &claim.claim_id, &credentials, deadline, &mut report)
                    .await;
                if outcome.is_err() {
                    break;
                }
            }
            claims.store().release_lease(&lease.name, &lease.holder).await?;
            outcome?;
            if report.out_of_time {
                break;
            }
        }
        if report != DrainReport::default() {
            tracing::info!(
                event = "outbox_drain",
                published = report.published,
                failed = report.failed,
                busy_vendors = report.busy_vendors,
                out_of_time = report.out_of_time,
                latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            );
        }
        Ok(report)
    }

    /// Publishes one claim's message if, read afresh, it still owes one and is live; records the
    /// result. A claim that owes a publish but is no longer live leaves the outbox unsent.
    async fn deliver<S: OwnershipStore, C: Clock>(
        &self,
        claims: &ClaimService<S, C>,
        claim_id: &ClaimId,
        credentials: &Result<ClaimThingCredentials, PublishError>,
        deadline: Instant,
        report: &mut DrainReport,
    ) -> Result<(), StoreError> {
        let Some(claim) = claims.store().claim(claim_id).await? else {
            return Ok(());
        };
        if claim.next_publish_at.is_none() {
            return Ok(()); // delivered meanwhile by someone else
        }
        let attempt = if !claim.is_live(claims.now()) {
            PublishAttempt::NotSent
        } else {
            let sent = match credentials {
                Ok(credentials) => {
                    let topic = ConfigTopic::for_device(&claim.thing_name);
                    let payload = endpoint_message(&claim.target_endpoint);
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(remaining, self.transport.publish(credentials, &topic, &payload)).await {
                        Ok(result) => result,
                        Err(_) => Err(PublishError::new(
                            "staging_timeout",
                            "no PUBACK within the delivery budget",
                        )),
                    }
                }
                Err(err) => Err(err.clone()),
            };
            match sent {
                Ok(()) => {
                    report.published += 1;
                    PublishAttempt::Sent
                }
                Err(err) => {
                    report.failed += 1;
                    PublishAttempt::Failed(err)
                }
            }
        };
        if let Err(err) = claims.record_publish(claim_id, &attempt).await {
            // The message may have gone out but its record did not land: the claim stays due and
            // is published again later, which the module treats the same (it only moves once).
            tracing::warn!(event = "outbox_record_failed", claim_id = claim_id.as_str(), error = %err);
        }
        Ok(())
    }

    /// Takes (or, with `held`, renews) the vendor's lease. `None`: another delivery holds it.
    async fn take_lease<S: OwnershipStore, C: Clock>(
        &self,
        claims: &ClaimService<S, C>,
        vendor: &str,
        held: Option<&Lease>,
    ) -> Result<Option<Lease>, StoreError> {
        let lease = Lease {
            name: format!("publisher#{vendor}"),
            holder: held.map_or_else(|| uuid::Uuid::new_v4().to_string(), |l| l.holder.clone()),
        };
        let now = claims.now();
        let taken = claims
            .store()
            .acquire_lease(&lease.name, &lease.holder, now, now + self.settings.lease_for)
            .await?;
        Ok(taken.then_some(lease))
    }
}

/// The production outbox: vendor profiles (claim-thing secrets) from Secrets Manager (secret name
/// prefix from `CLAIM_THING_SECRET_PREFIX`, cached `CLAIM_THING_SECRET_TTL_SECONDS`, default 5
/// minutes) and each vendor's transport: MQTT, HTTPS with the claim-thing certificate, or a
/// request signed with the function's role (see [`crate::adapters::iotdata`]).
pub fn from_aws(aws: &aws_types::SdkConfig) -> Result<Outbox, crate::config::ConfigError> {
    let credentials = crate::adapters::secrets::SecretsManagerCredentials::new(
        aws_sdk_secretsmanager::Client::new(aws),
        crate::config::env_or("CLAIM_THING_SECRET_PREFIX", "expresslink/claim-thing/"),
        crate::config::secret_ttl()?,
    )
    .map_err(|err| crate::config::ConfigError(err.to_string()))?;
    Ok(Outbox::new(
        Arc::new(credentials),
        Arc::new(crate::adapters::iotdata::TransportRouter::from_aws(aws)),
        OutboxSettings::default(),
    ))
}
