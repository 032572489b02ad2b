//! The claim state machine of `docs/api.md`.
//!
//! ```text
//! pending ──▶ endpoint_published ──▶ provisioned ──▶ released
//!    │  ╲            │  ╲
//!    │   ╲           │   ╲──▶ failed
//!    │    ╲──────────┴──▶ expired
//!    └──▶ provisioned (events may overtake the publish confirmation)
//! ```
//!
//! Two moves leave `expired` and have methods of their own, because they carry more than a state:
//! [`Claim::renew`] (a retry while the device is free: new deadline, publish due) and
//! [`Claim::complete_on_arrival`] (the device arrived within the grace period).
//!
//! A live claim (`pending`, `endpoint_published`) has a deadline. Expiry is a fact of the clock, not
//! of a background job: [`Claim::effective_state`] reports `expired` the moment the deadline passes,
//! whether or not any sweep has written it down yet.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::{
    ids::{ClaimId, ThingName, UserId},
    publish::{PublishBackoff, PublishError},
};

/// How long a claim reserves its device while waiting for it to arrive, unless configured otherwise
/// (`CLAIM_DEADLINE_SECONDS`).
pub const DEFAULT_DEADLINE: Duration = Duration::minutes(15);

/// How long after its deadline a claim is still completed by its device arriving, if nobody else
/// claimed the device meanwhile.
pub const DEFAULT_ARRIVAL_GRACE: Duration = Duration::minutes(15);

/// The least time between two retries of one claim: each retry publishes as the vendor's one
/// claim-thing, which a user must not be able to keep busy.
pub const RETRY_MIN_GAP: Duration = Duration::seconds(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    Pending,
    EndpointPublished,
    Provisioned,
    Expired,
    Released,
    Failed,
}

impl ClaimState {
    pub const ALL: [ClaimState; 6] = [
        ClaimState::Pending,
        ClaimState::EndpointPublished,
        ClaimState::Provisioned,
        ClaimState::Expired,
        ClaimState::Released,
        ClaimState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::Pending => "pending",
            ClaimState::EndpointPublished => "endpoint_published",
            ClaimState::Provisioned => "provisioned",
            ClaimState::Expired => "expired",
            ClaimState::Released => "released",
            ClaimState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Waiting for the device: holds a reservation and has a deadline.
    pub fn is_live(self) -> bool {
        matches!(self, ClaimState::Pending | ClaimState::EndpointPublished)
    }

    /// The transitions the state machine allows. Everything else is refused.
    pub fn can_become(self, next: ClaimState) -> bool {
        use ClaimState::*;
        matches!(
            (self, next),
            (Pending, EndpointPublished)
                | (Pending | EndpointPublished, Provisioned | Expired | Failed | Released)
                | (Provisioned, Released)
        )
    }
}

impl std::fmt::Display for ClaimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub state: ClaimState,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Why a claim is `failed`, or why its last publish attempt failed (kept while it retries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} claim cannot become {to}")]
pub struct TransitionError {
    pub from: ClaimState,
    pub to: ClaimState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub claim_id: ClaimId,
    pub thing_name: ThingName,
    pub user: UserId,
    /// The device's module vendor: whose staging endpoint and claim-thing deliver the message.
    pub vendor: String,
    /// The state as last written. Use [`Claim::effective_state`] to answer "what is it now".
    pub state: ClaimState,
    /// The OEM endpoint the device is sent to, and the selection rule that chose it.
    pub target_endpoint: String,
    pub target_rule: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub history: Vec<StateChange>,
    pub failure: Option<Failure>,
    /// Publishes of the endpoint message tried so far (failed ones included).
    pub publish_attempts: u32,
    /// When the endpoint message is due to be published: set while a publish is owed (a new claim,
    /// a failed attempt waiting for its backoff, a retry request), cleared once one is confirmed.
    /// This is the claim's place in the outbox.
    pub next_publish_at: Option<OffsetDateTime>,
    /// When its user last asked for the endpoint message again (`POST /v1/claims/{id}/retry`).
    pub retried_at: Option<OffsetDateTime>,
    /// Optimistic-concurrency counter of the stored record.
    pub version: u64,
}

impl Claim {
    pub fn new(
        claim_id: ClaimId,
        thing_name: ThingName,
        user: UserId,
        vendor: String,
        target_endpoint: String,
        now: OffsetDateTime,
        deadline: Duration,
    ) -> Self {
        Self {
            claim_id,
            thing_name,
            user,
            vendor,
            state: ClaimState::Pending,
            target_endpoint,
            target_rule: "default".to_owned(),
            created_at: now,
            updated_at: now,
            expires_at: now + deadline,
            history: vec![StateChange {
                state: ClaimState::Pending,
                at: now,
            }],
            failure: None,
            publish_attempts: 0,
            next_publish_at: Some(now),
            retried_at: None,
            version: 1,
        }
    }

    /// Has the deadline passed while the claim was still waiting for its device?
    pub fn is_overdue(&self, now: OffsetDateTime) -> bool {
        self.state.is_live() && now >= self.expires_at
    }

    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.state.is_live() && !self.is_overdue(now)
    }

    pub fn effective_state(&self, now: OffsetDateTime) -> ClaimState {
        if self.is_overdue(now) {
            ClaimState::Expired
        } else {
            self.state
        }
    }

    /// The history as it is true now: an overdue claim shows its expiry at the deadline, even
    /// before a writer has recorded it.
    pub fn effective_history(&self, now: OffsetDateTime) -> Vec<StateChange> {
        let mut history = self.history.clone();
        if self.is_overdue(now) {
            history.push(StateChange {
                state: ClaimState::Expired,
                at: self.expires_at,
            });
        }
        history
    }

    /// Applies a transition, recording it in the claim's own history. An overdue live claim can
    /// only expire here; an arrival that proves it worked goes through
    /// [`Claim::complete_on_arrival`].
    pub fn transition(&mut self, next: ClaimState, at: OffsetDateTime) -> Result<(), TransitionError> {
        let from = self.state;
        let overdue = self.is_overdue(at);
        let allowed = from.can_become(next) && (!overdue || next == ClaimState::Expired);
        if !allowed {
            return Err(TransitionError { from, to: next });
        }
        // An overdue claim records its expiry at the deadline, when it became true.
        let recorded_at = if next == ClaimState::Expired && overdue {
            self.expires_at
        } else {
            at
        };
        self.state = next;
        self.updated_at = at;
        self.history.push(StateChange {
            state: next,
            at: recorded_at,
        });
        // Only a pending claim owes a publish: confirmed, finished or dead claims leave the outbox.
        if next != ClaimState::Pending {
            self.next_publish_at = None;
        }
        Ok(())
    }

    /// The device arrived in the OEM account: a live claim (even past its deadline) or an expired one
    /// becomes `provisioned`. Only the arrival of the device itself may complete an expired claim.
    pub fn complete_on_arrival(&mut self, at: OffsetDateTime) -> Result<(), TransitionError> {
        if !(self.state.is_live() || self.state == ClaimState::Expired) {
            return Err(TransitionError {
                from: self.state,
                to: ClaimState::Provisioned,
            });
        }
        self.state = ClaimState::Provisioned;
        self.updated_at = at;
        self.next_publish_at = None;
        self.failure = None;
        self.history.push(StateChange {
            state: ClaimState::Provisioned,
            at,
        });
        Ok(())
    }

    /// Does its device arriving at `now` still complete this claim, which no longer holds the
    /// device's reservation? Only if it expired at most `grace` before (the endpoint message was
    /// slow to act on); a released or completed claim never.
    pub fn completed_by_late_arrival(&self, now: OffsetDateTime, grace: Duration) -> bool {
        self.state == ClaimState::Expired && now - self.expires_at <= grace
    }

    /// `Some(wait)`: its user retried it less than [`RETRY_MIN_GAP`] ago, and may again after
    /// `wait`.
    pub fn retry_wait(&self, now: OffsetDateTime) -> Option<Duration> {
        let next = self.retried_at? + RETRY_MIN_GAP;
        (next > now).then(|| next - now)
    }

    /// Is the publish this claim owes still the request's own to try? A request made it due (the
    /// claim's creation, or its user's retry) less than `grace` ago, and no attempt has been
    /// recorded since (a recorded failure moves the due time past the request). An API that
    /// publishes inline sends it within that request; until `grace` has passed, a drain that sent
    /// it too would make two publishes of one claim.
    pub fn awaits_requests_publish(&self, now: OffsetDateTime, grace: Duration) -> bool {
        let requested = self
            .retried_at
            .map_or(self.created_at, |retried| retried.max(self.created_at));
        now < requested + grace && self.next_publish_at.is_some_and(|due| due <= requested)
    }

    /// Its user asked for the endpoint message again while the claim is live: the message is due
    /// now, or stays due as it was if that is earlier (a retry joins a publish already owed instead
    /// of adding one).
    pub fn republish_on_retry(&mut self, now: OffsetDateTime) {
        self.next_publish_at = Some(self.next_publish_at.map_or(now, |due| due.min(now)));
        self.retried_at = Some(now);
    }

    /// The staging endpoint confirmed a publish of the endpoint message: a pending claim becomes
    /// `endpoint_published`; a re-publish the user asked for keeps its state and leaves the outbox.
    pub fn record_published(&mut self, now: OffsetDateTime) -> Result<(), TransitionError> {
        self.publish_attempts += 1;
        self.failure = None;
        if self.state == ClaimState::Pending {
            self.transition(ClaimState::EndpointPublished, now)
        } else {
            self.next_publish_at = None;
            self.updated_at = now;
            Ok(())
        }
    }

    /// A publish attempt failed: the claim keeps waiting, shows the failure in words its user
    /// understands (the technical detail goes to the logs only), and is due again after `backoff`.
    pub fn record_publish_failure(&mut self, error: &PublishError, now: OffsetDateTime, backoff: &PublishBackoff) {
        self.publish_attempts += 1;
        self.failure = Some(Failure {
            code: error.code.to_owned(),
            message: error.user_message().to_owned(),
        });
        self.next_publish_at = Some(now + backoff.after(self.publish_attempts));
    }

    /// A retry of an expired claim while its device is free: the same claim waits again, with a new
    /// deadline and a publish due now. Only an (effectively) expired claim can be renewed.
    pub fn renew(&mut self, now: OffsetDateTime, deadline: Duration) -> Result<(), TransitionError> {
        if self.effective_state(now) != ClaimState::Expired {
            return Err(TransitionError {
                from: self.effective_state(now),
                to: ClaimState::Pending,
            });
        }
        if self.state != ClaimState::Expired {
            self.transition(ClaimState::Expired, now)?;
        }
        self.state = ClaimState::Pending;
        self.updated_at = now;
        self.expires_at = now + deadline;
        self.failure = None;
        self.next_publish_at = Some(now);
        // A fresh window gets a fresh backoff.
        self.publish_attempts = 0;
        self.retried_at = Some(now);
        self.history.push(StateChange {
            state: ClaimState::Pending,
            at: now,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn claim_at(now: OffsetDateTime) -> Claim {
        Claim::new(
            ClaimId::new_random(),
            ThingName::parse("dev-1").expect("valid"),
            UserId::parse("user-a").expect("valid"),
            "espressif".into(),
            "oem-ats.iot.eu-west-1.amazonaws.com".into(),
            now,
            time::Duration::minutes(15),
        )
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in ClaimState::ALL {
            assert_eq!(ClaimState::parse(state.as_str()), Some(state));
            let json = serde_json::to_string(&state).expect("serializes");
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(ClaimState::parse("PENDING"), None);
    }

    #[test]
    fn a_requests_own_publish_is_left_to_it_for_the_grace_and_no_longer_once_an_attempt_is_recorded() {
        let t0 = datetime!(2026-01-01 10:00 UTC);
        let grace = Duration::seconds(12);
        let backoff = PublishBackoff::default();
        let mut claim = claim_at(t0);
        assert!(claim.awaits_requests_publish(t0, grace));
        assert!(claim.awaits_requests_publish(t0 + Duration::seconds(11), grace));
        assert!(
            !claim.awaits_requests_publish(t0 + grace, grace),
            "the request is over by then"
        );

        // The request recorded a failure: the attempt is made, the backoff is everyone's to wait.
        let failed = PublishError::new("staging_timeout", "no PUBACK");
        claim.record_publish_failure(&failed, t0 + Duration::seconds(1), &backoff);
        assert!(!claim.awaits_requests_publish(t0 + Duration::seconds(4), grace));

        // Its user retries: due now again, and the retry's request publishes it.
        let retried = t0 + Duration::seconds(20);
        claim.republish_on_retry(retried);
        assert!(claim.awaits_requests_publish(retried + Duration::seconds(1), grace));
        assert!(!claim.awaits_requests_publish(retried + grace, grace));

        // Confirmed: nothing is owed at all.
        claim.record_published(retried + Duration::seconds(1)).expect("pending");
        assert!(!claim.awaits_requests_publish(retried + Duration::seconds(2), grace));
    }

    #[test]
    fn a_live_claim_reads_as_expired_from_its_deadline_on() {
        let t0 = datetime!(2026-01-01 10:00 UTC);
        let claim = claim_at(t0);
        assert_eq!(
            claim.effective_state(t0 + time::Duration::minutes(14)),
            ClaimState::Pending
        );
        let at_deadline = t0 + time::Duration::minutes(15);
        assert_eq!(claim.effective_state(at_deadline), ClaimState::Expired);
        let history = claim.effective_history(at_deadline);
        assert_eq!(
            history.last().map(|h| (h.state, h.at)),
            Some((ClaimState::Expired, at_deadline))
        );
    }

    #[test]
    fn happy_path_then_release() {
        let t0 = datetime!(2026-01-01 10:00 UTC);
        let mut claim = claim_at(t0);
        claim.transition(ClaimState::EndpointPublished, t0).expect("publish");
        claim
            .transition(ClaimState::Provisioned, t0 + time::Duration::minutes(1))
            .expect("arrive");
        // A provisioned claim has no deadline any more.
        assert_eq!(
            claim.effective_state(t0 + time::Duration::days(30)),
            ClaimState::Provisioned
        );
        claim
            .transition(ClaimState::Released, t0 + time::Duration::days(30))
            .expect("release");
        let states: Vec<_> = claim.history.iter().map(|h| h.state).collect();
        assert_eq!(
            states,
            [
                ClaimState::Pending,
                ClaimState::EndpointPublished,
                ClaimState::Provisioned,
                ClaimState::Released
            ]
        );
    }

    #[test]
    fn overdue_claims_can_only_expire_or_be_proven_arrived() {
        let t0 = datetime!(2026-01-01 10:00 UTC);
        let late = t0 + time::Duration::minutes(20);
        let mut claim = claim_at(t0);
        assert!(claim.clone().transition(ClaimState::EndpointPublished, late).is_err());
        assert!(claim.clone().transition(ClaimState::Provisioned, late).is_err());
        assert!(
            claim.clone().complete_on_arrival(late).is_ok(),
            "an arrival proves it worked"
        );
        claim.transition(ClaimState::Expired, late).expect("expire");
        assert_eq!(claim.history.last().map(|h| h.at), Some(claim.expires_at));
    }

    #[test]
    fn only_an_expired_claim_is_renewed_with_a_new_deadline() {
        let t0 = datetime!(2026-01-01 10:00 UTC);
        let mut claim = claim_at(t0);
        assert!(
            claim.clone().renew(t0, time::Duration::minutes(15)).is_err(),
            "still live"
        );
        let later = t0 + time::Duration::minutes(30);
        claim.renew(later, time::Duration::minutes(15)).expect("renew");
        assert_eq!(claim.effective_state(later), ClaimState::Pending);
        assert_eq!(claim.expires_at, later + time::Duration::minutes(15));
        assert_eq!(claim.next_publish_at, Some(later));
        let states: Vec<_> = claim.history.iter().map(|h| h.state).collect();
        assert_eq!(states, [ClaimState::Pending, ClaimState::Expired, ClaimState::Pending]);
        claim.transition(ClaimState::EndpointPublished, later).expect("publish");
        assert_eq!(claim.next_publish_at, None, "a confirmed publish leaves the outbox");
    }

    #[test]
    fn a_late_arrival_completes_only_a_claim_that_expired_within_the_grace() {
        let t0 = datetime!(2026-01-01 10:00 UTC);
        let grace = DEFAULT_ARRIVAL_GRACE;
        let mut claim = claim_at(t0);
        let deadline = claim.expires_at;
        assert!(!claim.completed_by_late_arrival(deadline, grace), "not expired yet");
        claim.transition(ClaimState::Expired, deadline).expect("expire");
        assert!(claim.completed_by_late_arrival(deadline + grace, grace));
        assert!(!claim.completed_by_late_arrival(deadline + grace + Duration::milliseconds(1), grace));
        let mut released = claim_at(t0);
        released.transition(ClaimState::Released, t0).expect("release");
        assert!(!released.completed_by_late_arrival(t0, grace));
    }

    #[test]
    fn publish_results_are_recorded_with_backoff_and_user_wording() {
        let t0 = datetime!(2026-01-01 10:00 UTC);
        let backoff = PublishBackoff::default();
        let mut claim = claim_at(t0);
        let refused = PublishError::new("staging_refused", "TLS alert: certificate unknown (detail)");
        claim.record_publish_failure(&refused, t0, &backoff);
        claim.record_publish_failure(&refused, t0, &backoff);
        assert_eq!(claim.state, ClaimState::Pending);
        assert_eq!(claim.publish_attempts, 2);
        assert_eq!(claim.next_publish_at, Some(t0 + backoff.after(2)));
        let failure = claim.failure.clone().expect("failure shown");
        assert_eq!(failure.code, "staging_refused");
        assert!(!failure.message.contains("TLS"), "technical detail stays in the logs");
        claim.record_published(t0).expect("published");
        assert_eq!(
            (claim.state, claim.failure.clone(), claim.next_publish_at),
            (ClaimState::EndpointPublished, None, None)
        );
        // A re-publish the user asked for keeps the state and leaves the outbox.
        claim.next_publish_at = Some(t0);
        claim.record_published(t0 + Duration::seconds(5)).expect("re-published");
        assert_eq!(
            (claim.state, claim.next_publish_at),
            (ClaimState::EndpointPublished, None)
        );
        assert_eq!(claim.publish_attempts, 4);
    }

    #[test]
    fn retries_are_spaced_and_join_a_publish_already_due() {
        let t0 = datetime!(2026-01-01 10:00 UTC);
        let mut claim = claim_at(t0);
        assert_eq!(claim.retry_wait(t0), None, "never retried");
        claim.republish_on_retry(t0 + Duration::seconds(1));
        assert_eq!(claim.next_publish_at, Some(t0), "already due at t0: joined, not moved");
        assert_eq!(claim.retry_wait(t0 + Duration::seconds(4)), Some(Duration::seconds(7)));
        assert_eq!(claim.retry_wait(t0 + Duration::seconds(11)), None);
        claim.next_publish_at = None;
        claim.republish_on_retry(t0 + Duration::seconds(11));
        assert_eq!(claim.next_publish_at, Some(t0 + Duration::seconds(11)));
    }

    #[test]
    fn terminal_states_stay_terminal() {
        for from in [ClaimState::Released, ClaimState::Failed] {
            for to in ClaimState::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
        assert!(!ClaimState::Expired.can_become(ClaimState::Provisioned));
        assert!(!ClaimState::Expired.can_become(ClaimState::Pending));
        assert!(!ClaimState::Provisioned.can_become(ClaimState::Pending));
    }
}
