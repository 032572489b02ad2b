//! What the handler tests set up through the claim service: an imported device and a user's claim
//! on it, sent to one OEM endpoint.

use claim_shared::{
    domain::{
        endpoints::EndpointPlan,
        history::Actor,
        ids::{ThingName, UserId},
        registry::NewDevice,
    },
    ports::OwnershipStore,
    service::{ClaimError, ClaimOutcome, ClaimRequest, ClaimService, Clock},
};

/// Imports `thing` (vendor `espressif`, no label code).
pub async fn import<S: OwnershipStore, C: Clock>(claims: &ClaimService<S, C>, thing: &str) {
    let device = NewDevice {
        thing_name: ThingName::parse(thing).unwrap(),
        vendor: "espressif".into(),
        sku: None,
        code_hash: None,
        allow_thing_name: None,
        code_as_thing_name: None,
    };
    claims.import(&device, Actor::Operator("test".into())).await.unwrap();
}

/// `user` claims `thing` by its ThingName.
pub async fn claim<S: OwnershipStore, C: Clock>(
    claims: &ClaimService<S, C>,
    user: &str,
    thing: &str,
) -> Result<ClaimOutcome, ClaimError> {
    claims
        .claim(&ClaimRequest {
            user: UserId::parse(user).unwrap(),
            code: ThingName::parse(thing).unwrap().into(),
            endpoints: std::sync::Arc::new(EndpointPlan::single("oem-ats.iot.eu-west-1.amazonaws.com")),
            region_hint: None,
            idempotency_key: None,
        })
        .await
}
