//! [`CertificateControl`] over the AWS IoT control plane (`aws-sdk-iot`): `DescribeCertificate`
//! and `UpdateCertificate`, with the function's own role. Every call has a deadline; the SDK's
//! standard retries stay on (both calls are idempotent), inside that deadline.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_iot::{error::DisplayErrorContext, types::CertificateStatus, Client};

use crate::{
    domain::quarantine::CertificateFacts,
    ports::{CertificateControl, ControlError},
};

/// Upper bound for one control-plane call, retries included, whatever client it is given. The
/// functions' clients carry the SDK's own, shorter deadlines (`wiring::sdk_timeouts`: 2 s a call),
/// which then end the call first.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct IotCertificateControl {
    client: Client,
    timeout: Duration,
}

impl IotCertificateControl {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            timeout: CONTROL_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn within<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ControlError(format!("no answer within {} ms", self.timeout.as_millis())))?
    }
}

#[async_trait]
impl CertificateControl for IotCertificateControl {
    async fn describe(&self, certificate_id: &str) -> Result<Option<CertificateFacts>, ControlError> {
        self.within(async {
            match self
                .client
                .describe_certificate()
                .certificate_id(certificate_id)
                .send()
                .await
            {
                Ok(out) => Ok(out.certificate_description().map(|description| CertificateFacts {
                    ca_certificate_id: description.ca_certificate_id().map(str::to_owned),
                    active: description.status() == Some(&CertificateStatus::Active),
                })),
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|service| service.is_resource_not_found_exception()) =>
                {
                    Ok(None)
                }
                Err(err) => Err(ControlError(DisplayErrorContext(&err).to_string())),
            }
        })
        .await
    }

    async fn set_active(&self, certificate_id: &str, active: bool) -> Result<(), ControlError> {
        let status = if active {
            CertificateStatus::Active
        } else {
            CertificateStatus::Inactive
        };
        self.within(async {
            self.client
                .update_certificate()
                .certificate_id(certificate_id)
                .new_status(status)
                .send()
                .await
                .map(|_| ())
                .map_err(|err| ControlError(DisplayErrorContext(&err).to_string()))
        })
        .await
    }
}
