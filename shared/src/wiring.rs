//! The one wiring root: every function's `main.rs` and `claimctl` build their clients, settings,
//! store, label-code key and publishers here, from the environment, once per execution
//! environment. A bad setting stops the cold start with an error that names it.
//!
//! | setting | used for |
//! |---|---|
//! | `CLAIMS_TABLE` | the ownership table ([`Wiring::service`]) |
//! | `CLAIM_DEADLINE_SECONDS`, `FAILED_CLAIMS_*` | the use cases' settings (`config::claim_settings`) |
//! | `LABEL_CODE_KEY_SECRET` | the label-code HMAC key ([`Wiring::label_code_key`]) |
//! | `CLAIM_THING_SECRET_PREFIX`, `CLAIM_THING_SECRET_TTL_SECONDS` | vendor profiles ([`Wiring::delivery`]) |
//! | `QUARANTINE_ROGUE_DEVICES`, `VENDOR_CA_CERTIFICATE_IDS` | the rogue-device gate ([`Wiring::with_certificates`]) |
//! | `AWS_REGION`, `AWS_ENDPOINT_URL*`, credentials | the AWS SDK's own configuration |
//!
//! Every AWS client built here (DynamoDB, Secrets Manager and its cache, the IoT control plane, the
//! IoT data plane of the `iam` transport) comes from one [`SdkConfig`] that carries the SDK's own
//! deadlines ([`sdk_timeouts`]; `claimctl`'s, run by a person over any network, are looser:
//! [`operator_timeouts`]): no call to a dependency can hang a function or the operator's tool.

use std::{sync::Arc, time::Duration};

use aws_config::{timeout::TimeoutConfig, BehaviorVersion};
use aws_types::SdkConfig;

use crate::{
    adapters::{
        dynamodb::DynamoOwnershipStore,
        iotcontrol::IotCertificateControl,
        iotdata::TransportRouter,
        secrets::{load_label_code_key, SecretsManagerCredentials},
    },
    config::{claim_settings, env_or, gate_policy, required, secret_ttl, ConfigError},
    domain::label_code::LabelCodeKey,
    service::{ClaimService, Delivery, DeliverySettings, SystemClock},
};

/// Connecting to an AWS endpoint (TCP and TLS). In-region connects take milliseconds; one that takes
/// a second is going nowhere (a blackholed address, a dead host), and the SDK's default (3.1 s)
/// would spend most of a request's budget on it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One attempt of one call, from sending the request to the last byte of the answer. DynamoDB
/// documents single-digit-millisecond reads and writes (transactions: a few times that), Secrets
/// Manager and the IoT control plane answer in tens to hundreds of milliseconds: an attempt still
/// open after a second is stuck (a frozen node, a half-open connection), and cutting it lets the
/// SDK's standard retry try again on a fresh connection, within [`OPERATION_TIMEOUT`].
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// One call, all its attempts and the backoff between them included: at most two attempts. Below
/// the API's request budget (3 s by default, `REQUEST_BUDGET_MS`), so a dependency that does not
/// answer fails the call with an error that names it (`503 unavailable`) while the request still
/// has time to answer; the budget cuts requests whose many calls are each slow but not stuck.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// The SDK deadlines every client of [`Wiring`] gets (see the constants). A call past one fails
/// with the SDK's timeout error, which each adapter maps to its port's error naming the dependency
/// (`StoreError::Unavailable` "DynamoDB: …", `credentials_unavailable` "Secrets Manager: …",
/// `ControlError` "IoT control plane: …").
pub fn sdk_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The deadlines of `claim-publisher`, which no request waits on: its store calls are batches (a
/// `BatchGetItem` of 100 keys, a transaction per claim, 16 at once) with a 45 s budget per
/// invocation. A write cut off at 1 s may still land, and the delivery then reads and writes it
/// again; on a slow or throttled table the 1 s/2 s deadlines made whole stream batches wait for
/// the schedule (measured on a loaded DynamoDB Local: docs/benchmark.md). Connecting stays as
/// quick to give up as everywhere.
pub fn background_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(8))
        .build()
}

/// The deadlines of `claimctl`: an operator's tool, run over any network (a slow or distant link
/// included), that reads pages of up to 1 MB; at 1 s an attempt would fail on a link slower than
/// about 8 Mbit/s. Still deadlines, so it never hangs either, but ones a person's network meets.
pub fn operator_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

/// The claim service as deployed: DynamoDB and the system clock.
pub type Service = ClaimService<DynamoOwnershipStore, SystemClock>;

pub struct Wiring {
    aws: SdkConfig,
}

impl Wiring {
    /// The AWS SDK configuration from the environment: default credential chain and region, and
    /// `AWS_ENDPOINT_URL*` (the local stack); with the deadlines of [`sdk_timeouts`].
    pub async fn from_env() -> Self {
        Self::from_env_with(sdk_timeouts()).await
    }

    /// [`Self::from_env`] with other deadlines (`claim-publisher`: [`background_timeouts`],
    /// `claimctl`: [`operator_timeouts`]).
    pub async fn from_env_with(timeouts: TimeoutConfig) -> Self {
        Self {
            aws: aws_config::defaults(BehaviorVersion::latest())
                .timeout_config(timeouts)
                .load()
                .await,
        }
    }

    /// The wiring on a given SDK configuration (tests: a local engine's). Its timeouts are
    /// replaced by [`sdk_timeouts`], so every client built here has the deployed deadlines.
    pub fn from_config(aws: SdkConfig) -> Self {
        let aws = aws.into_builder().timeout_config(sdk_timeouts()).build();
        Self { aws }
    }

    pub fn aws(&self) -> &SdkConfig {
        &self.aws
    }

    /// The use cases on the table `CLAIMS_TABLE`, with the settings from the environment.
    pub fn service(&self) -> Result<Service, ConfigError> {
        self.service_on(&required("CLAIMS_TABLE")?)
    }

    /// The use cases on `table`, with the settings from the environment.
    pub fn service_on(&self, table: &str) -> Result<Service, ConfigError> {
        let store = DynamoOwnershipStore::new(aws_sdk_dynamodb::Client::new(&self.aws), table);
        Ok(ClaimService::new(store, SystemClock, claim_settings()?))
    }

    /// `service` with the AWS IoT control plane: the rogue-device gate as the environment sets it,
    /// and quarantines lifted by claims, enabling and operators.
    pub fn with_certificates(&self, service: Service) -> Result<Service, ConfigError> {
        let control = IotCertificateControl::new(aws_sdk_iot::Client::new(&self.aws));
        Ok(service.with_certificate_control(Arc::new(control), gate_policy()?))
    }

    /// The label-code key named by `LABEL_CODE_KEY_SECRET`; `None` when it is unset or empty
    /// (label codes off: every code is a ThingName).
    pub async fn label_code_key(&self) -> Result<Option<LabelCodeKey>, ConfigError> {
        self.label_code_key_named(std::env::var("LABEL_CODE_KEY_SECRET").ok().as_deref())
            .await
    }

    /// The label-code key in the secret `name`, read once. A secret that is named but unreadable
    /// or too short is an error (never a silent fallback to ThingNames); the error names the
    /// secret, never its value.
    pub async fn label_code_key_named(&self, name: Option<&str>) -> Result<Option<LabelCodeKey>, ConfigError> {
        match name.map(str::trim).filter(|name| !name.is_empty()) {
            None => Ok(None),
            Some(name) => load_label_code_key(&aws_sdk_secretsmanager::Client::new(&self.aws), name)
                .await
                .map(Some)
                .map_err(ConfigError),
        }
    }

    /// How endpoint messages go out: vendor profiles (claim-thing secrets) from Secrets Manager
    /// (name prefix `CLAIM_THING_SECRET_PREFIX`, cached `CLAIM_THING_SECRET_TTL_SECONDS`, default 5
    /// minutes) and each vendor's transport: MQTT, HTTPS with the claim-thing certificate, or a
    /// request signed with the function's role (see [`crate::adapters::iotdata`]).
    pub fn delivery(&self) -> Result<Delivery, ConfigError> {
        self.delivery_with(DeliverySettings::default())
    }

    /// [`Self::delivery`] with `settings` (the publisher keeps its vendor leases).
    pub fn delivery_with(&self, settings: DeliverySettings) -> Result<Delivery, ConfigError> {
        let credentials = SecretsManagerCredentials::new(
            aws_sdk_secretsmanager::Client::new(&self.aws),
            env_or("CLAIM_THING_SECRET_PREFIX", "expresslink/claim-thing/"),
            secret_ttl()?,
        )
        .map_err(|err| ConfigError(err.to_string()))?;
        Ok(Delivery::new(
            Arc::new(credentials),
            Arc::new(TransportRouter::from_aws(&self.aws)),
            settings,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_of_the_wiring_has_the_sdk_deadlines() {
        let bare = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .timeout_config(TimeoutConfig::disabled())
            .build();
        let wiring = Wiring::from_config(bare);
        let expected = sdk_timeouts();
        assert_eq!(wiring.aws().timeout_config(), Some(&expected));
        assert_eq!(expected.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(expected.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(expected.operation_timeout(), Some(OPERATION_TIMEOUT));
        let dynamodb = aws_sdk_dynamodb::Client::new(wiring.aws());
        let secrets = aws_sdk_secretsmanager::Client::new(wiring.aws());
        let iot = aws_sdk_iot::Client::new(wiring.aws());
        assert_eq!(dynamodb.config().timeout_config(), Some(&expected));
        assert_eq!(secrets.config().timeout_config(), Some(&expected));
        assert_eq!(iot.config().timeout_config(), Some(&expected));
        assert!(
            OPERATION_TIMEOUT < std::time::Duration::from_millis(3000),
            "below the default request budget"
        );
    }

    #[test]
    fn the_operators_deadlines_are_looser_but_there() {
        let operator = operator_timeouts();
        let functions = sdk_timeouts();
        for (looser, tighter) in [
            (operator.connect_timeout(), functions.connect_timeout()),
            (
                operator.operation_attempt_timeout(),
                functions.operation_attempt_timeout(),
            ),
            (operator.operation_timeout(), functions.operation_timeout()),
        ] {
            assert!(looser.is_some() && looser > tighter, "{looser:?} {tighter:?}");
        }
    }

    #[test]
    fn the_publishers_deadlines_are_patient_with_calls_but_not_with_connecting() {
        let background = background_timeouts();
        let functions = sdk_timeouts();
        assert_eq!(background.connect_timeout(), functions.connect_timeout());
        assert!(background.operation_attempt_timeout() > functions.operation_attempt_timeout());
        assert!(background.operation_timeout() > functions.operation_timeout());
        // Two attempts and their backoff fit, and many calls fit in an invocation's budget.
        let (attempt, operation) = (
            background.operation_attempt_timeout().unwrap_or_default(),
            background.operation_timeout().unwrap_or_default(),
        );
        assert!(operation >= attempt * 2 && operation <= Duration::from_secs(10));
    }
}
