//! One vendor's delivery under its lease: claims read afresh, published and recorded side by side;
//! for a stream delivery, followed by the claims the outbox gains while it runs.
//!
//! Why follow the outbox: the stream-fed publisher gets a batch per invocation, and the messages go
//! out at AWS IoT Core's 100 publishes per second per connection. In a burst that is accepted at
//! close to that rate, a delivery of one batch lasts almost as long as it took the next batch to
//! pile up, so a claim waited for the batch before it, the stream's poll and an invocation of its
//! own. Following the outbox instead, the one delivery that holds the lease keeps its connection
//! busy while the burst lasts: claims accepted meanwhile go out within about [`FOLLOW_EVERY`] plus
//! one read. Their stream records still come later; read afresh, they owe nothing and are skipped.

use std::{collections::HashSet, time::Duration as StdDuration};

use tokio::time::Instant;

use super::{
    lease::Lease,
    outbox::{Delivery, DrainReport, INLINE_GRACE},
    ClaimService, Clock, PublishAttempt,
};
use crate::{
    domain::{
        claim::Claim,
        device::Holder,
        ids::ClaimId,
        publish::{ClaimThingCredentials, PublishError},
    },
    ports::{Found, OwnershipStore, Read, StoreError},
};

/// Claims of one vendor a drain sends together, over one connection for `mqtt` (pipelined at AWS
/// IoT Core's 100 publishes per second: 10 s, a third of the lease, which is renewed per chunk).
pub const DRAIN_CHUNK: usize = 1000;

/// Store calls a drain makes at once (reading claims afresh, recording results).
const STORE_PARALLEL: usize = 16;

/// Publishes sent together, whose results then go to the recorder while the next piece goes out:
/// over `mqtt` about a third of a second at AWS IoT Core's 100 publishes per second per
/// connection; over `https` two full rounds of its parallel requests.
const PUBLISH_PIECE: usize = 2 * STORE_PARALLEL;

/// Pieces read ahead and sent together when they are ready: a send waits for its last PUBACK before
/// the next begins, and every slot of the connection's pace that passes meanwhile is lost (under
/// load a PUBACK takes tens of milliseconds: a burst went out at 91 a second in pieces of 32).
/// Three pieces are at most 96 messages, within AWS IoT's 100 in flight.
const PIECES_PER_SEND: usize = 3;

/// Records of one delivery start at most this often: a piece's results come all at once, and
/// sixteen writes landing together on the table hold up the API's claims behind them; spread at
/// twice the connection's 100 publishes per second they keep up with it (an `https` drain, which
/// is not paced, is held to 200 records a second by it too).
const RECORD_SPACING: StdDuration = StdDuration::from_millis(5);

/// A following delivery looks at the outbox at most this often: about as often as the stream's
/// event source mapping polls, so a slow burst still goes out in pieces worth a read.
pub const FOLLOW_EVERY: StdDuration = StdDuration::from_millis(250);

/// Claims a look at the outbox reads at most, the latest due first: a second at the connection's
/// pace, and a bounded read however far behind the records are (a claim behind them is still
/// delivered: its stream record comes, and the schedule is there).
pub const FOLLOW_LOOK: u32 = 100;

/// A following delivery stops looking for more this long before its deadline, leaving the time to
/// send and record what it found; the next invocation carries on.
pub const FOLLOW_STOP: StdDuration = StdDuration::from_secs(15);

/// Whether a delivery, once its claims are read, goes on with what the outbox gained meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Follow {
    No,
    Outbox,
}

/// One vendor's delivery as a drain or a stream delivery sets it up.
#[derive(Clone, Copy)]
pub(super) struct VendorRun<'a> {
    pub delivery: &'a Delivery,
    pub vendor: &'a str,
    pub lease: &'a Lease,
    pub credentials: &'a Result<ClaimThingCredentials, PublishError>,
    pub deadline: Instant,
    pub follow: Follow,
}

/// A piece of owed claims as read afresh: those still live and owing their message, and those
/// owed but no longer live (they leave the outbox unsent); and how many were left to the API
/// request publishing them.
#[derive(Debug, Default)]
struct OwedPiece {
    live: Vec<Claim>,
    unsent: Vec<ClaimId>,
    left_to_requests: u32,
}

impl<S: OwnershipStore, C: Clock> ClaimService<S, C> {
    /// Delivers `owed` claims of `run`'s vendor under its lease, [`DRAIN_CHUNK`] at a time,
    /// renewing the lease before each chunk (the last one followed by the outbox's new claims if
    /// `run.follow` says so), and lets it go whatever happened (a lease left behind would hold up
    /// other deliveries of the vendor until it lapses), unless the process keeps its leases.
    /// `Ok(false)`: another delivery holds the lease, nothing was sent.
    pub(super) async fn deliver_vendor(
        &self,
        run: &VendorRun<'_>,
        owed: &[&Claim],
        report: &mut DrainReport,
    ) -> Result<bool, StoreError> {
        let VendorRun {
            delivery,
            lease,
            deadline,
            ..
        } = *run;
        if !self.take_lease(delivery, lease).await? {
            return Ok(false);
        }
        let mut outcome = Ok(true);
        let chunks = owed.chunks(DRAIN_CHUNK).count();
        for (i, chunk) in owed.chunks(DRAIN_CHUNK).enumerate() {
            if Instant::now() >= deadline {
                report.out_of_time = true;
                break;
            }
            // Renew before each further chunk, so a long delivery never outlives its lease.
            if i > 0 {
                match self.take_lease(delivery, lease).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(err) => {
                        outcome = Err(err);
                        break;
                    }
                }
            }
            let follow = if i + 1 == chunks { run.follow } else { Follow::No };
            if let Err(err) = self.deliver_all(&VendorRun { follow, ..*run }, chunk, report).await {
                outcome = Err(err);
                break;
            }
        }
        self.let_lease_go(delivery, lease).await;
        outcome
    }

    /// [`Self::deliver`] for claims of one vendor at once: each read afresh with its device (a
    /// `BatchGetItem` per piece), the live ones that still owe a publish sent together
    /// ([`EndpointPublisher::publish_batch`](crate::ports::EndpointPublisher::publish_batch): one
    /// connection for `mqtt`) in pieces of [`PUBLISH_PIECE`] (each piece read while the one before
    /// goes out; up to [`PIECES_PER_SEND`] pieces already read go out in one send), each result
    /// recorded in one write of the claim as read ([`Self::record_on`]) while the next pieces go
    /// out. With [`Follow::Outbox`], the vendor's claims that became due in the outbox meanwhile
    /// follow, until a look finds none. A failed read stops the delivery there: what was sent is
    /// recorded, the rest stays owed.
    async fn deliver_all(
        &self,
        run: &VendorRun<'_>,
        claims: &[&Claim],
        report: &mut DrainReport,
    ) -> Result<(), StoreError> {
        use futures::{SinkExt as _, StreamExt as _};
        let VendorRun {
            delivery,
            credentials,
            deadline,
            follow,
            ..
        } = *run;
        // The API publishes these itself, without a lease: a claim its request is still on is
        // left to it.
        let leave_to_requests = delivery.publishes_inline_with(credentials);
        // Three things run side by side: reading each piece afresh (the next piece is read while
        // one goes out, so only the first read delays the messages), publishing, and recording
        // each piece's results as soon as it is confirmed (so the messages leave at the
        // connection's pace however slowly the table takes the records).
        let (mut to_publish, read_pieces) =
            futures::channel::mpsc::channel::<Result<OwedPiece, StoreError>>(PIECES_PER_SEND - 1);
        let (results, to_record) = futures::channel::mpsc::unbounded::<(Claim, PublishAttempt)>();
        let mut followed = 0;
        let reading = async {
            // Reads `claims` piece by piece and passes each on as read; `false`: stop (a failed
            // read, or the publishing stopped).
            let mut read_and_pass = async |claims: &[&Claim]| {
                for piece in claims.chunks(PUBLISH_PIECE) {
                    let read = self.read_owed(piece, leave_to_requests).await;
                    let failed = read.is_err();
                    if to_publish.send(read).await.is_err() || failed {
                        return false;
                    }
                }
                true
            };
            let mut going = read_and_pass(claims).await;
            if follow == Follow::Outbox && going {
                // Every claim this delivery took on, so a claim whose record has not landed yet
                // (it still looks due) is never sent twice.
                let mut taken: HashSet<ClaimId> = claims.iter().map(|claim| claim.claim_id.clone()).collect();
                let mut looked = Instant::now();
                while going {
                    tokio::time::sleep_until(looked + FOLLOW_EVERY).await;
                    looked = Instant::now();
                    let more = self.newly_due(run, &taken).await;
                    if more.is_empty() {
                        break;
                    }
                    taken.extend(more.iter().map(|claim| claim.claim_id.clone()));
                    followed += more.len();
                    let more: Vec<&Claim> = more.iter().collect();
                    going = read_and_pass(&more).await;
                }
            }
            to_publish.close_channel();
        };
        let mut unsent = Vec::new();
        let mut outcome = Ok(());
        let publishing = async {
            let (mut read_pieces, results) = (read_pieces.ready_chunks(PIECES_PER_SEND), results);
            while let Some(reads) = read_pieces.next().await {
                // The pieces read before a failed read still go out; nothing after it.
                let mut live = Vec::new();
                for read in reads {
                    match read {
                        Ok(piece) => {
                            unsent.extend(piece.unsent);
                            report.left_to_requests += piece.left_to_requests;
                            live.extend(piece.live);
                        }
                        Err(err) => {
                            outcome = Err(err);
                            break;
                        }
                    }
                }
                let sent = self
                    .attempt_publish_all(delivery, &live, credentials, deadline, report)
                    .await;
                for result in live.into_iter().zip(sent) {
                    // The recorder lives until every sender is gone: a send cannot fail here.
                    let _ = results.unbounded_send(result);
                }
                if outcome.is_err() {
                    break;
                }
            }
        };
        tokio::join!(reading, publishing, self.record_all(to_record));
        report.followed += u32::try_from(followed).unwrap_or(u32::MAX);
        // Owed but no longer live (expired, superseded): leaves the outbox unsent.
        for claim_id in unsent {
            if let Err(err) = self.record_publish_result(&claim_id, &PublishAttempt::NotSent).await {
                tracing::warn!(event = "outbox_record_failed", claim_id = claim_id.as_str(), error = %err);
            }
        }
        outcome
    }

    /// `run`'s vendor's claims due in the outbox now that this delivery has not `taken` on yet; none (stop
    /// following) when too little of the delivery's time is left, the lease cannot be renewed, or
    /// the outbox cannot be read (what it holds stays owed for the next delivery).
    async fn newly_due(&self, run: &VendorRun<'_>, taken: &HashSet<ClaimId>) -> Vec<Claim> {
        let VendorRun {
            delivery,
            vendor,
            lease,
            deadline,
            ..
        } = *run;
        if deadline.saturating_duration_since(Instant::now()) < FOLLOW_STOP {
            return Vec::new();
        }
        // Renewed (a kept lease: when it is due), so following never outlives the lease.
        match self.take_lease(delivery, lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    event = "outbox_follow_failed",
                    vendor,
                    error = "the vendor's lease is held by another delivery"
                );
                return Vec::new();
            }
            Err(err) => {
                tracing::warn!(event = "outbox_follow_failed", vendor, error = %err);
                return Vec::new();
            }
        }
        match self.store.newest_due_publishes(self.clock.now(), FOLLOW_LOOK).await {
            Ok(due) => due
                .into_iter()
                .filter(|claim| claim.vendor == vendor && !taken.contains(&claim.claim_id))
                .collect(),
            Err(err) => {
                tracing::warn!(event = "outbox_follow_failed", vendor, error = %err);
                Vec::new()
            }
        }
    }

    /// Owed claims read afresh with their devices (one `BatchGetItem` for a piece). With
    /// `leave_to_requests` (the vendor's transport is one the API publishes inline), a claim whose
    /// request may still be publishing it ([`INLINE_GRACE`]) is left alone.
    async fn read_owed(&self, claims: &[&Claim], leave_to_requests: bool) -> Result<OwedPiece, StoreError> {
        let reads: Vec<Read> = claims
            .iter()
            .flat_map(|claim| {
                [
                    Read::Claim(claim.claim_id.clone()),
                    Read::Device(claim.thing_name.clone()),
                ]
            })
            .collect();
        let found = self.store.read_many(&reads).await?;
        let now = self.clock.now();
        let mut piece = OwedPiece::default();
        for pair in found.chunks(2) {
            let [Found::Claim(Some(claim)), Found::Device(device)] = pair else {
                continue; // gone
            };
            // A claim delivered meanwhile by someone else owes nothing any more.
            if claim.next_publish_at.is_none() {
                continue;
            }
            let holds = device.as_ref().is_some_and(
                |device| matches!(&device.holder, Holder::Reserved { claim_id, .. } if *claim_id == claim.claim_id),
            );
            if leave_to_requests && claim.awaits_requests_publish(now, INLINE_GRACE) {
                piece.left_to_requests += 1;
            } else if holds && claim.is_live(now) {
                piece.live.push((**claim).clone());
            } else {
                piece.unsent.push(claim.claim_id.clone());
            }
        }
        Ok(piece)
    }

    /// Records each publish attempt on its claim as it comes, [`STORE_PARALLEL`] at once and one
    /// started per [`RECORD_SPACING`] at most, until the sender is done.
    async fn record_all(&self, results: impl futures::Stream<Item = (Claim, PublishAttempt)>) {
        use futures::StreamExt as _;
        let mut next_start = Instant::now();
        results
            .then(|result| {
                let start = next_start.max(Instant::now());
                next_start = start + RECORD_SPACING;
                async move {
                    tokio::time::sleep_until(start).await;
                    result
                }
            })
            .map(|(claim, attempt)| async move { self.record_on(claim, &attempt).await })
            .buffer_unordered(STORE_PARALLEL)
            .for_each(|_| std::future::ready(()))
            .await;
    }
}
