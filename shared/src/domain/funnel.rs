//! The claim funnel: how the claims started in a time window ended up, as they read now
//! (`claimctl funnel`).

use time::OffsetDateTime;

use super::claim::{Claim, ClaimState};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Funnel {
    pub started: u64,
    /// Reached `endpoint_published` at some point (the staging endpoint took the message), or
    /// provisioned: an arrival recorded before the publisher's report leaves no `endpoint_published`
    /// step, and a funnel must not narrow less at a later stage.
    pub published: u64,
    pub provisioned: u64,
    pub expired: u64,
    pub released: u64,
    pub failed: u64,
    /// Still waiting for their device.
    pub open: u64,
}

impl Funnel {
    pub fn of<'a>(claims: impl IntoIterator<Item = &'a Claim>, now: OffsetDateTime) -> Self {
        let mut funnel = Funnel::default();
        for claim in claims {
            funnel.started += 1;
            if claim
                .history
                .iter()
                .any(|change| matches!(change.state, ClaimState::EndpointPublished | ClaimState::Provisioned))
            {
                funnel.published += 1;
            }
            match claim.effective_state(now) {
                ClaimState::Provisioned => funnel.provisioned += 1,
                ClaimState::Expired => funnel.expired += 1,
                ClaimState::Released => funnel.released += 1,
                ClaimState::Failed => funnel.failed += 1,
                ClaimState::Pending | ClaimState::EndpointPublished => funnel.open += 1,
            }
        }
        funnel
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{ClaimId, ThingName, UserId};
    use time::{macros::datetime, Duration};

    #[test]
    fn the_funnel_counts_how_claims_ended_as_they_read_now() {
        let t0 = datetime!(2026-01-01 10:00 UTC);
        let claim = |at_minutes: i64| {
            Claim::new(
                ClaimId::new_random(),
                ThingName::parse("dev-1").unwrap_or_else(|e| panic!("{e}")),
                UserId::parse("u").unwrap_or_else(|e| panic!("{e}")),
                "vendor".into(),
                "oem".into(),
                t0 + Duration::minutes(at_minutes),
                Duration::minutes(15),
            )
        };
        let now = t0 + Duration::minutes(20);
        let mut provisioned = claim(0);
        provisioned
            .transition(ClaimState::EndpointPublished, t0)
            .unwrap_or_else(|e| panic!("{e}"));
        provisioned
            .transition(ClaimState::Provisioned, t0)
            .unwrap_or_else(|e| panic!("{e}"));
        // Its device arrived before the publisher recorded the publish: published all the same.
        let mut arrived_first = claim(0);
        arrived_first
            .transition(ClaimState::Provisioned, t0)
            .unwrap_or_else(|e| panic!("{e}"));
        let overdue = claim(0); // recorded pending, deadline passed: reads expired
        let open = claim(10);
        let mut released = claim(0);
        released
            .transition(ClaimState::Released, t0)
            .unwrap_or_else(|e| panic!("{e}"));
        let funnel = Funnel::of([&provisioned, &arrived_first, &overdue, &open, &released], now);
        assert_eq!(
            funnel,
            Funnel {
                started: 5,
                published: 2,
                provisioned: 2,
                expired: 1,
                released: 1,
                failed: 0,
                open: 1
            }
        );
    }
}
