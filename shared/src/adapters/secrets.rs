//! [`CredentialSource`] on AWS Secrets Manager, cached in the execution environment with the AWS
//! caching client (`aws_secretsmanager_caching`), so warm invocations do not call Secrets Manager.
//!
//! One secret per module vendor, named `<prefix><vendor>`, holding the JSON of
//! [`ClaimThingCredentials`]. Neither the secret nor any part of it is ever logged.

use std::{num::NonZeroUsize, time::Duration};

use async_trait::async_trait;
use aws_secretsmanager_caching::SecretsManagerCachingClient;

use crate::{
    domain::{
        ids::is_vendor_name,
        publish::{ClaimThingCredentials, PublishError},
    },
    ports::CredentialSource,
};

pub struct SecretsManagerCredentials {
    cache: SecretsManagerCachingClient,
    prefix: String,
}

impl SecretsManagerCredentials {
    /// `ttl`: how long a loaded secret is reused before it is read again (rotation takes at most
    /// this long to reach warm functions).
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        prefix: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, PublishError> {
        let size = NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN);
        let cache = SecretsManagerCachingClient::new(client, size, ttl, false)
            .map_err(|err| PublishError::new("credentials_unavailable", format!("cache: {err}")))?;
        Ok(Self {
            cache,
            prefix: prefix.into(),
        })
    }

    pub fn secret_name(&self, vendor: &str) -> String {
        format!("{}{}", self.prefix, vendor)
    }
}

#[async_trait]
impl CredentialSource for SecretsManagerCredentials {
    async fn claim_thing(&self, vendor: &str) -> Result<ClaimThingCredentials, PublishError> {
        if !is_vendor_name(vendor) {
            return Err(PublishError::new("vendor_not_configured", "vendor name is not valid"));
        }
        let name = self.secret_name(vendor);
        // The caching client's error is not Send: turn it into text before any await.
        let text = match self.cache.get_secret_value(&name, None, None, false).await {
            Ok(output) => output.secret_string,
            Err(err) => {
                let detail = err.to_string();
                let code = if detail.contains("ResourceNotFound") {
                    "vendor_not_configured"
                } else {
                    "credentials_unavailable"
                };
                return Err(PublishError::new(code, format!("secret {name}: {detail}")));
            }
        };
        let text =
            text.ok_or_else(|| PublishError::new("credentials_invalid", format!("secret {name} has no string value")))?;
        // serde's message names the missing field; it never contains the secret's values.
        serde_json::from_str::<ClaimThingCredentials>(&text).map_err(|err| {
            let detail = err.to_string();
            let detail = detail.split(" at line").next().unwrap_or("invalid JSON").to_owned();
            PublishError::new("credentials_invalid", format!("secret {name}: {detail}"))
        })
    }
}
