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
        label_code::LabelCodeKey,
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
        // The caching client's error is not Send: turn it into text before any await. Its client
        // carries the SDK deadlines of the wiring: a hung Secrets Manager is a timeout error here.
        let text = match self.cache.get_secret_value(&name, None, None, false).await {
            Ok(output) => output.secret_string,
            Err(err) => {
                let detail = error_chain(err.as_ref());
                let code = if detail.contains("ResourceNotFound") {
                    "vendor_not_configured"
                } else {
                    "credentials_unavailable"
                };
                return Err(PublishError::new(
                    code,
                    format!("Secrets Manager, secret {name}: {detail}"),
                ));
            }
        };
        let text =
            text.ok_or_else(|| PublishError::new("credentials_invalid", format!("secret {name} has no string value")))?;
        // The message names the field or the problem, never a value of the secret.
        ClaimThingCredentials::parse(&text)
            .map_err(|detail| PublishError::new("credentials_invalid", format!("secret {name}: {detail}")))
    }

    fn source_name(&self) -> &'static str {
        "Secrets Manager"
    }
}

/// An error and its causes, one after another (the SDK's top-level message alone says only
/// "dispatch failure" or "timeout").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Loads the label code key (`LABEL_CODE_KEY_SECRET`) once, at cold start: the secret's string
/// value taken as raw bytes (or its binary value), at least 32 bytes — e.g. the 64 characters
/// CloudFormation's `GenerateSecretString` makes. The error names the secret, never its value.
pub async fn load_label_code_key(
    client: &aws_sdk_secretsmanager::Client,
    secret: &str,
) -> Result<LabelCodeKey, String> {
    let out = client
        .get_secret_value()
        .secret_id(secret)
        .send()
        .await
        .map_err(|err| {
            format!(
                "label code key: cannot read secret {secret}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&err)
            )
        })?;
    let bytes: Vec<u8> = match (out.secret_string(), out.secret_binary()) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(blob)) => blob.as_ref().to_vec(),
        (None, None) => return Err(format!("label code key: secret {secret} has no value")),
    };
    LabelCodeKey::new(&bytes).map_err(|err| format!("label code key: secret {secret}: {err}"))
}
