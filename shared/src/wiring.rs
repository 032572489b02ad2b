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

use std::sync::Arc;

use aws_config::BehaviorVersion;
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

/// The claim service as deployed: DynamoDB and the system clock.
pub type Service = ClaimService<DynamoOwnershipStore, SystemClock>;

pub struct Wiring {
    aws: SdkConfig,
}

impl Wiring {
    /// The AWS SDK configuration from the environment: default credential chain and region, and
    /// `AWS_ENDPOINT_URL*` (the local stack).
    pub async fn from_env() -> Self {
        Self {
            aws: aws_config::load_defaults(BehaviorVersion::latest()).await,
        }
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
        let credentials = SecretsManagerCredentials::new(
            aws_sdk_secretsmanager::Client::new(&self.aws),
            env_or("CLAIM_THING_SECRET_PREFIX", "expresslink/claim-thing/"),
            secret_ttl()?,
        )
        .map_err(|err| ConfigError(err.to_string()))?;
        Ok(Delivery::new(
            Arc::new(credentials),
            Arc::new(TransportRouter::from_aws(&self.aws)),
            DeliverySettings::default(),
        ))
    }
}
