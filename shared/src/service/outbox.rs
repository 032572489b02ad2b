//! Delivers the endpoint messages that claims owe.
//!
//! A claim owes a publish while `next_publish_at` is set (see `domain::claim::Claim`); such claims
//! form the outbox (a sparse index of the table). Who delivers depends on the vendor's transport:
//!
//! - `https` and `iam` (one HTTP request each, no client id): the API, right after accepting (or
//!   retrying) a claim ([`ClaimService::claim_and_publish`], [`ClaimService::retry_and_publish`]),
//!   within the inline budget and what the request's own deadline leaves (see
//!   [`DeliverySettings`]). Any number of API instances publish in parallel: no lease.
//! - `mqtt`: never the API. Each vendor's claim-thing has one MQTT client id; AWS IoT allows one
//!   connection per client id and one CONNECT per second per client id, so every MQTT message
//!   goes through `claim-publisher`, which runs one instance at a time (reserved concurrency 1),
//!   is fed the claims the table's stream reports owed ([`ClaimService::deliver_streamed`]), and
//!   keeps its connection open across invocations (`adapters::mqtt`).
//! - whatever is left (a failed publish whose backoff passed, an instance that died): the
//!   scheduled `claim-publisher` ([`ClaimService::drain`]), vendor by vendor.
//!
//! The publisher's deliveries run under a per-vendor lease in the table ([`super::lease`]), so a
//! drain and a stream delivery (or two drains) never send with one client id at once; the publisher
//! process keeps its leases between invocations, as it keeps its connections.
//! Every decision uses a fresh, strongly consistent read of the claim (the index may lag), and a
//! failed publish is recorded on the claim ([`super::publish`]) and retried with backoff until it
//! succeeds or the claim expires, without anyone asking again.
//!
//! Deadlines: reading a vendor's profile has its own ([`DeliverySettings::credentials_timeout`]), so
//! a hung credential store fails as `credentials_unavailable`, not as a staging timeout; the publish
//! gets what is left of the delivery's time. The store's calls are bounded by the SDK's deadlines.

use std::{collections::HashSet, sync::Arc, time::Duration as StdDuration};

use time::Duration;
use tokio::time::Instant;

use super::{
    claim::Committed,
    lease::KeptLeases,
    pipeline::{Follow, VendorRun},
    ClaimService, Clock, PublishAttempt,
};
use crate::{
    domain::{
        claim::Claim,
        ids::{ClaimId, ConfigTopic},
        publish::{endpoint_message, ClaimThingCredentials, PublishError, PublishTransport},
    },
    metrics,
    ports::{CredentialSource, EndpointPublisher, OwnershipStore, StoreError},
};

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// How long a vendor lease lasts without renewal; renewed before every chunk of a delivery.
    pub lease_for: Duration,
    /// Claims read from the outbox per round.
    pub batch: u32,
    /// How long a request may spend publishing the claim it accepted before it answers; what is
    /// left is published by the schedule. A request with a deadline of its own (the API's request
    /// budget) gets less when less is left: see `record_reserve`.
    pub inline_budget: StdDuration,
    /// Of a request's own time, what an inline publish leaves for recording its result and
    /// answering: the message must be confirmed, or given up, this long before the request's
    /// deadline (a few DynamoDB calls, milliseconds each), so a slow staging endpoint never makes
    /// an accepted claim miss its answer.
    pub record_reserve: StdDuration,
    /// How long reading a vendor's claim-thing profile may take (a warm cache answers at once,
    /// Secrets Manager in tens of milliseconds): past it the attempt fails as
    /// `credentials_unavailable`, and the publish is not tried.
    pub credentials_timeout: StdDuration,
    /// Transports whose messages the API publishes right after it accepts a claim. Never `mqtt`
    /// in a deployment: AWS IoT's one connection and one CONNECT per second per client id leave
    /// those to the one stream-fed publisher (tests of the inline path with fake transports may
    /// add it).
    pub inline_transports: Vec<PublishTransport>,
    /// Keep vendor leases between deliveries instead of giving each back (see `service::lease`):
    /// for the one publisher process that delivers invocation after invocation, not for the API.
    pub keep_leases: bool,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            lease_for: Duration::seconds(30),
            batch: 1000,
            inline_budget: StdDuration::from_secs(3),
            record_reserve: StdDuration::from_millis(500),
            credentials_timeout: StdDuration::from_secs(1),
            inline_transports: vec![PublishTransport::Https, PublishTransport::Iam],
            keep_leases: false,
        }
    }
}

/// A claim the API made due "now" by its clock is due for the publisher too, whose host's clock
/// may be slightly behind; far below the first publish backoff (2 s), so a failed publish still
/// waits for its backoff.
const STREAM_CLOCK_SLACK: Duration = Duration::milliseconds(500);

/// How long a drain leaves a claim of an inline transport (`https`, `iam`) to the API request that
/// made it due ([`Claim::awaits_requests_publish`]): that request's whole invocation, whose
/// function timeout is 10 s (`template.yaml`; `claim-api` checks it against this at compile time),
/// plus 2 s for two hosts' clocks. The API takes no lease for an inline publish, so without this a
/// drain that ran between the request's commit and its record would send the message too.
/// A request that recorded its attempt (sent or failed) is done with it at once.
pub const INLINE_GRACE: Duration = Duration::seconds(12);

/// How long a stream delivery waits for a vendor's lease another delivery holds, trying every
/// [`LEASE_RETRY`], before it leaves the claims to the schedule.
const LEASE_WAIT: StdDuration = StdDuration::from_secs(3);
const LEASE_RETRY: StdDuration = StdDuration::from_millis(200);

/// The first pause before a stream delivery tries a vendor's claims again after a storage error;
/// it doubles up to [`STORE_RETRY_MAX`] until the invocation's budget runs out.
const STORE_RETRY_FIRST: StdDuration = StdDuration::from_millis(250);
const STORE_RETRY_MAX: StdDuration = StdDuration::from_secs(4);

/// Below this much time an inline publish is not tried at all: the claim stays owed and the
/// schedule delivers it (a publish cut off at once would only record a false `staging_timeout`).
pub const MIN_INLINE_PUBLISH: StdDuration = StdDuration::from_millis(250);

/// An inline publish as a whole (lease, profile, publish, record) ends this long before the
/// request's deadline, whatever it waits for, so the request can still answer with the claim.
pub const INLINE_STOP_MARGIN: StdDuration = StdDuration::from_millis(100);

/// How endpoint messages go out: where vendor profiles come from, the transport, and the
/// outbox's settings.
pub struct Delivery {
    credentials: Arc<dyn CredentialSource>,
    transport: Arc<dyn EndpointPublisher>,
    pub(super) settings: DeliverySettings,
    kept_leases: Option<KeptLeases>,
}

impl Delivery {
    /// Whether the API publishes `transport`'s messages itself, right after it accepts a claim
    /// (otherwise the stream-fed publisher does).
    fn publishes_inline(&self, transport: PublishTransport) -> bool {
        self.settings.inline_transports.contains(&transport)
    }

    /// Whether the API publishes the messages of the vendor whose profile `credentials` is (no
    /// profile: unknown, so not).
    pub(super) fn publishes_inline_with(&self, credentials: &Result<ClaimThingCredentials, PublishError>) -> bool {
        credentials
            .as_ref()
            .is_ok_and(|profile| self.publishes_inline(profile.transport))
    }

    pub fn new(
        credentials: Arc<dyn CredentialSource>,
        transport: Arc<dyn EndpointPublisher>,
        settings: DeliverySettings,
    ) -> Self {
        Self {
            credentials,
            transport,
            kept_leases: settings.keep_leases.then(KeptLeases::new),
            settings,
        }
    }

    /// The leases this process keeps between deliveries, if it does.
    pub(super) fn kept_leases(&self) -> Option<&KeptLeases> {
        self.kept_leases.as_ref()
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
    /// Storage errors a stream delivery waited out and tried again after.
    pub store_retries: u32,
    /// Claims a stream delivery found due in the outbox while it ran, beyond those it was given
    /// (see `service::pipeline`).
    pub followed: u32,
    /// Claims a drain left to the API request that is publishing them (see [`INLINE_GRACE`]).
    pub left_to_requests: u32,
}

/// What publishing one claim now did, and the claim as it stands after (`None`: not read, because
/// the vendor's lease was busy or the claim is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinePublish {
    pub report: DrainReport,
    pub claim: Option<Claim>,
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// When an inline publish must be confirmed by, for a request with `deadline`, and how much time
    /// that leaves (`None`: no delivery is configured). Below [`MIN_INLINE_PUBLISH`] nothing is tried.
    fn inline_window(&self, deadline: Option<Instant>) -> Option<(Instant, StdDuration)> {
        let delivery = self.delivery.as_ref()?;
        let now = Instant::now();
        let mut publish_by = now + delivery.settings.inline_budget;
        if let Some(deadline) = deadline {
            publish_by = publish_by.min(deadline.checked_sub(delivery.settings.record_reserve).unwrap_or(now));
        }
        Some((publish_by, publish_by.saturating_duration_since(now)))
    }

    /// A claim this request just accepted or made due, published now if its vendor's transport is
    /// one the API publishes inline: the claim as far as it got. A failure here is not the
    /// caller's: the claim is accepted (committed, and owed in the outbox), and the publisher
    /// delivers it. With the request's `deadline`, this returns before it: the message must be
    /// confirmed `record_reserve` before it (a slow staging endpoint is cut off and recorded as a
    /// failed attempt), and whatever else is slow (the store) is abandoned `INLINE_STOP_MARGIN`
    /// before it, leaving the claim owed.
    ///
    /// `committed`: the claim as this request committed it, recorded on without reading it back
    /// (`None`: a retry or an idempotent repeat, read afresh). An `mqtt` vendor's claim is left
    /// owed at once (see the module's doc); so is any claim when no delivery is configured.
    pub(super) async fn publish_accepted(
        &self,
        claim: Claim,
        committed: Option<Committed>,
        deadline: Option<Instant>,
    ) -> Claim {
        let now = Instant::now();
        let (Some(delivery), Some((publish_by, left))) = (&self.delivery, self.inline_window(deadline)) else {
            return claim;
        };
        if left < MIN_INLINE_PUBLISH {
            tracing::info!(
                event = "outbox_inline_skipped",
                claim_id = claim.claim_id.as_str(),
                left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            );
            return claim;
        }
        let publish = async {
            let credentials = self.credentials_for(delivery, &claim.vendor, publish_by).await;
            if let Ok(profile) = &credentials {
                if !delivery.publishes_inline(profile.transport) {
                    tracing::info!(
                        event = "outbox_inline_deferred",
                        outcome = "deferred",
                        claim_id = claim.claim_id.as_str(),
                        transport = profile.transport.as_str(),
                    );
                    return Ok(None);
                }
            }
            let mut report = DrainReport::default();
            match committed {
                Some(Committed) => {
                    let attempt = self
                        .attempt_publish(delivery, &claim, &credentials, publish_by, &mut report)
                        .await;
                    Ok(Some(self.record_on(claim.clone(), &attempt).await))
                }
                None => {
                    self.deliver(delivery, &claim.claim_id, &credentials, publish_by, &mut report)
                        .await
                }
            }
        };
        let outcome = match deadline {
            None => publish.await,
            Some(deadline) => {
                let stop = deadline.checked_sub(INLINE_STOP_MARGIN).unwrap_or(now);
                match tokio::time::timeout_at(stop, publish).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        // The store did not answer in time (the claim's read or the record): the
                        // claim is owed.
                        tracing::warn!(
                            event = "outbox_inline_cut",
                            claim_id = claim.claim_id.as_str(),
                            latency_ms = u64::try_from(now.elapsed().as_millis()).unwrap_or(u64::MAX),
                        );
                        return claim;
                    }
                }
            }
        };
        match outcome {
            Ok(Some(latest)) => latest,
            Ok(None) => claim,
            Err(err) => {
                tracing::warn!(event = "outbox_drain_failed", error = %err);
                claim
            }
        }
    }

    /// Delivers one claim now if it still owes a publish and its vendor's lease is free (otherwise
    /// the lease holder or the schedule delivers it), within the inline budget. Without a delivery
    /// configured it does nothing.
    pub async fn publish_now(&self, claim: &Claim) -> Result<InlinePublish, StoreError> {
        let budget = self
            .delivery
            .as_ref()
            .map_or(StdDuration::ZERO, |delivery| delivery.settings.inline_budget);
        self.publish_until(claim, Instant::now() + budget).await
    }

    /// [`Self::publish_now`] with the message confirmed (or given up) by `publish_by`. The store's
    /// own calls are bounded by its deadlines, not by `publish_by`.
    pub async fn publish_until(&self, claim: &Claim, publish_by: Instant) -> Result<InlinePublish, StoreError> {
        let mut done = InlinePublish {
            report: DrainReport::default(),
            claim: None,
        };
        let Some(delivery) = &self.delivery else {
            return Ok(done);
        };
        let deadline = publish_by;
        let lease = self.lease_of(delivery, &claim.vendor);
        if !self.take_lease(delivery, &lease).await? {
            done.report.busy_vendors = 1;
            return Ok(done);
        }
        let credentials = self.credentials_for(delivery, &claim.vendor, deadline).await;
        let delivered = self
            .deliver(delivery, &claim.claim_id, &credentials, deadline, &mut done.report)
            .await;
        self.let_lease_go(delivery, &lease).await;
        done.claim = delivered?;
        Ok(done)
    }

    /// Delivers every due claim until none is due, every remaining vendor is busy elsewhere, or
    /// `budget` is spent. Failures of single publishes are recorded on their claims, not returned.
    /// Without a delivery configured it does nothing.
    pub async fn drain(&self, budget: StdDuration) -> Result<DrainReport, StoreError> {
        let started = Instant::now();
        let deadline = started + budget;
        let mut report = DrainReport::default();
        let Some(delivery) = &self.delivery else {
            return Ok(report);
        };
        let mut busy: HashSet<String> = HashSet::new();
        // Each claim is tried at most once per drain: if recording a result fails, the claim stays
        // due, and without this a drain would publish it again and again until its budget ran out.
        let mut tried: HashSet<ClaimId> = HashSet::new();
        let mut first_round = true;
        loop {
            let now = self.clock.now();
            let mut due = self.store.due_publishes(now, delivery.settings.batch).await?;
            if std::mem::take(&mut first_round) {
                let oldest = due.iter().map(|claim| now - claim.created_at).max();
                metrics::outbox_age(oldest.map_or(StdDuration::ZERO, |age| age.unsigned_abs()));
            }
            due.retain(|claim| !tried.contains(&claim.claim_id) && !busy.contains(&claim.vendor));
            let Some(vendor) = due.first().map(|claim| claim.vendor.clone()) else {
                break;
            };
            let owed: Vec<&Claim> = due.iter().filter(|claim| claim.vendor == vendor).collect();
            tried.extend(owed.iter().map(|claim| claim.claim_id.clone()));
            let credentials = self.credentials_for(delivery, &vendor, deadline).await;
            let lease = self.lease_of(delivery, &vendor);
            let run = VendorRun {
                delivery,
                vendor: &vendor,
                lease: &lease,
                credentials: &credentials,
                deadline,
                follow: Follow::No,
            };
            if !self.deliver_vendor(&run, &owed, &mut report).await? {
                report.busy_vendors += 1;
                busy.insert(vendor);
            }
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
                left_to_requests = report.left_to_requests,
                out_of_time = report.out_of_time,
                latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            );
        }
        Ok(report)
    }

    /// Delivers the claims the table's stream reported owing a publish (`claim-publisher`'s
    /// stream invocations), vendor by vendor, within `budget`: only those of vendors whose
    /// transport the API does not publish inline (`mqtt`; the API delivers the others itself),
    /// and only those due now (a failed publish waits for its backoff, then the schedule).
    /// Claims of a vendor whose lease another delivery holds are left to it or the schedule.
    /// Once a vendor's claims are read, the delivery follows the outbox for that vendor's claims
    /// that become due meanwhile (`service::pipeline`), so in a burst one call may run until
    /// `FOLLOW_STOP` before the end of `budget`.
    pub async fn deliver_streamed(&self, owed: &[Claim], budget: StdDuration) -> Result<DrainReport, StoreError> {
        let started = Instant::now();
        let deadline = started + budget;
        let mut report = DrainReport::default();
        let Some(delivery) = &self.delivery else {
            return Ok(report);
        };
        if owed.is_empty() {
            // A batch with nothing owed (a stream without the template's filter, locally).
            return Ok(report);
        }
        let due_by = self.clock.now() + STREAM_CLOCK_SLACK;
        let mut due: Vec<&Claim> = owed
            .iter()
            .filter(|claim| claim.next_publish_at.is_some_and(|at| at <= due_by))
            .collect();
        let mut skipped_inline = 0;
        while let Some(vendor) = due.first().map(|claim| claim.vendor.clone()) {
            let (mine, rest): (Vec<&Claim>, Vec<&Claim>) = due.into_iter().partition(|claim| claim.vendor == vendor);
            due = rest;
            let credentials = self.credentials_for(delivery, &vendor, deadline).await;
            if delivery.publishes_inline_with(&credentials) {
                skipped_inline += mine.len();
                continue;
            }
            // The lease is normally free (one publisher instance); a drain of this process or a
            // lapsing holder may still have it for a moment. A storage error (a throttled or slow
            // table) is tried again after a pause until the budget runs out: nothing was sent
            // unrecorded, as claims are read afresh first, and the schedule would be far later.
            let lease = self.lease_of(delivery, &vendor);
            let wait_until = Instant::now() + LEASE_WAIT;
            let mut store_pause = STORE_RETRY_FIRST;
            let run = VendorRun {
                delivery,
                vendor: &vendor,
                lease: &lease,
                credentials: &credentials,
                deadline,
                follow: Follow::Outbox,
            };
            loop {
                let pause = match self.deliver_vendor(&run, &mine, &mut report).await {
                    Ok(true) => break,
                    Ok(false) if Instant::now() >= wait_until.min(deadline) => {
                        report.busy_vendors += 1;
                        break;
                    }
                    Ok(false) => LEASE_RETRY,
                    Err(err) if Instant::now() + store_pause >= deadline => return Err(err),
                    Err(err) => {
                        tracing::warn!(event = "outbox_stream_store_retry", vendor = vendor.as_str(), error = %err);
                        report.store_retries += 1;
                        let pause = store_pause;
                        store_pause = (store_pause * 2).min(STORE_RETRY_MAX);
                        pause
                    }
                };
                tokio::time::sleep(pause).await;
            }
            if report.out_of_time {
                break;
            }
        }
        tracing::info!(
            event = "outbox_stream",
            owed = owed.len(),
            published = report.published,
            failed = report.failed,
            busy_vendors = report.busy_vendors,
            store_retries = report.store_retries,
            followed = report.followed,
            inline_transport = skipped_inline,
            out_of_time = report.out_of_time,
            latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        Ok(report)
    }

    /// Publishes one claim's message if, read afresh, it still owes one and is live; records the
    /// result. A claim that owes a publish but is no longer live leaves the outbox unsent. Returns
    /// the claim as it stands after (`None`: no such claim).
    async fn deliver(
        &self,
        delivery: &Delivery,
        claim_id: &ClaimId,
        credentials: &Result<ClaimThingCredentials, PublishError>,
        deadline: Instant,
        report: &mut DrainReport,
    ) -> Result<Option<Claim>, StoreError> {
        let Some(claim) = self.store.claim(claim_id).await? else {
            return Ok(None);
        };
        if claim.next_publish_at.is_none() {
            return Ok(Some(claim)); // delivered meanwhile by someone else
        }
        let attempt = if claim.is_live(self.clock.now()) {
            self.attempt_publish(delivery, &claim, credentials, deadline, report)
                .await
        } else {
            PublishAttempt::NotSent
        };
        match self.record_publish_result(claim_id, &attempt).await {
            Ok((_, recorded)) => Ok(Some(recorded)),
            Err(err) => {
                // The message may have gone out but its record did not land: the claim stays due
                // and is published again later, which the module treats the same (it only moves
                // once).
                tracing::warn!(event = "outbox_record_failed", claim_id = claim_id.as_str(), error = %err);
                Ok(Some(claim))
            }
        }
    }

    /// Sends a live claim's endpoint message with the vendor's profile, confirmed by `deadline`, and
    /// counts the attempt.
    async fn attempt_publish(
        &self,
        delivery: &Delivery,
        claim: &Claim,
        credentials: &Result<ClaimThingCredentials, PublishError>,
        deadline: Instant,
        report: &mut DrainReport,
    ) -> PublishAttempt {
        self.attempt_publish_all(delivery, std::slice::from_ref(claim), credentials, deadline, report)
            .await
            .pop()
            .unwrap_or(PublishAttempt::NotSent)
    }

    /// Sends live claims' endpoint messages of one vendor together, confirmed by `deadline`, and
    /// counts each attempt: what each did, in order.
    pub(super) async fn attempt_publish_all(
        &self,
        delivery: &Delivery,
        claims: &[Claim],
        credentials: &Result<ClaimThingCredentials, PublishError>,
        deadline: Instant,
        report: &mut DrainReport,
    ) -> Vec<PublishAttempt> {
        if claims.is_empty() {
            return Vec::new();
        }
        let timed_out = || PublishError::new("staging_timeout", "no PUBACK within the delivery budget");
        let mut results = match credentials {
            Ok(credentials) => {
                let messages: Vec<(ConfigTopic, Vec<u8>)> = claims
                    .iter()
                    .map(|claim| {
                        (
                            ConfigTopic::for_device(&claim.thing_name),
                            endpoint_message(&claim.target_endpoint),
                        )
                    })
                    .collect();
                let remaining = deadline.saturating_duration_since(Instant::now());
                let publish = delivery.transport.publish_batch(credentials, &messages);
                // Cut off by the deadline: nothing is known to be confirmed.
                tokio::time::timeout(remaining, publish).await.unwrap_or_default()
            }
            Err(err) => vec![Err(err.clone()); claims.len()],
        };
        // A batch cut off by the deadline (or a transport that answered for fewer) did not confirm
        // the rest.
        results.resize_with(claims.len(), || Err(timed_out()));
        let transport = credentials.as_ref().map_or("unknown", |c| c.transport.as_str());
        claims
            .iter()
            .zip(results)
            .map(|(claim, sent)| match sent {
                Ok(()) => {
                    report.published += 1;
                    let since_claim = (self.clock.now() - claim.created_at).unsigned_abs();
                    metrics::endpoint_published(&claim.vendor, transport, since_claim, claim.publish_attempts + 1);
                    PublishAttempt::Sent
                }
                Err(err) => {
                    report.failed += 1;
                    metrics::publish_failed(&claim.vendor, transport, err.code);
                    PublishAttempt::Failed(err)
                }
            })
            .collect()
    }

    /// The vendor's claim-thing profile, read within `credentials_timeout` (and by `deadline`): a
    /// source that does not answer in time is `credentials_unavailable` naming it, so the claim's
    /// failure says which dependency hung.
    async fn credentials_for(
        &self,
        delivery: &Delivery,
        vendor: &str,
        deadline: Instant,
    ) -> Result<ClaimThingCredentials, PublishError> {
        let limit = delivery
            .settings
            .credentials_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(limit, delivery.credentials.claim_thing(vendor)).await {
            Ok(found) => found,
            Err(_) => Err(PublishError::new(
                "credentials_unavailable",
                format!(
                    "{} did not answer within {} ms",
                    delivery.credentials.source_name(),
                    limit.as_millis()
                ),
            )),
        }
    }
}
