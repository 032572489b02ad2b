//! AWS IoT's control plane in the OEM account, locally (moto, run by `scripts/moto_server.py`): what
//! the vendor CA's registration and JITP leave there, so the rogue-device gate finds what it finds
//! on AWS. Used by `local-iot-events` and by the tests that check what the gate did.

use aws_sdk_iot::{error::ProvideErrorMetadata, types::CertificateStatus, Client};

/// The IoT control plane of the local stack (moto at `AWS_ENDPOINT_URL`).
pub async fn local_iot() -> Client {
    Client::new(&crate::moto_sdk_config().await)
}

/// The vendor CA registered with auto-registration, as the template's `VendorCaCertificate`.
/// Registering it again changes nothing.
pub async fn register_vendor_ca(iot: &Client, ca_pem: &str) -> Result<(), String> {
    iot.register_ca_certificate()
        .ca_certificate(ca_pem)
        .set_as_active(true)
        .allow_auto_registration(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|err| format!("RegisterCACertificate: {}", err.message().unwrap_or("failed")))
}

/// What JITP does on a module's first connection: its certificate registered (issued by the vendor
/// CA) and active, a thing of its name with the certificate attached. Returns the certificate id;
/// a certificate registered before keeps its status (a deactivated one stays deactivated).
pub async fn provision(iot: &Client, thing: &str, cert_pem: &str, ca_pem: &str) -> Result<String, String> {
    let registered = iot
        .register_certificate()
        .certificate_pem(cert_pem)
        .ca_certificate_pem(ca_pem)
        .status(CertificateStatus::Active)
        .send()
        .await;
    let registered = match registered {
        Ok(out) => out,
        Err(err) if err.code() == Some("ResourceAlreadyExistsException") => {
            return certificate_id_of(cert_pem).ok_or_else(|| "not a certificate".to_owned());
        }
        Err(err) => return Err(format!("RegisterCertificate: {}", err.message().unwrap_or("failed"))),
    };
    let (Some(certificate_id), Some(arn)) = (registered.certificate_id(), registered.certificate_arn()) else {
        return Err("RegisterCertificate: no certificate id or ARN in the answer".to_owned());
    };
    let _ = iot.create_thing().thing_name(thing).send().await;
    iot.attach_thing_principal()
        .thing_name(thing)
        .principal(arn)
        .send()
        .await
        .map_err(|err| format!("AttachThingPrincipal: {}", err.message().unwrap_or("failed")))?;
    Ok(certificate_id.to_owned())
}

/// Whether the certificate is active (`None`: not registered).
pub async fn certificate_active(iot: &Client, certificate_id: &str) -> Result<Option<bool>, String> {
    match iot.describe_certificate().certificate_id(certificate_id).send().await {
        Ok(out) => Ok(out
            .certificate_description()
            .map(|description| description.status() == Some(&CertificateStatus::Active))),
        Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(None),
        Err(err) => Err(format!("DescribeCertificate: {}", err.message().unwrap_or("failed"))),
    }
}

/// AWS IoT's certificate id: the SHA-256 of the certificate's DER encoding, in hex.
pub fn certificate_id_of(cert_pem: &str) -> Option<String> {
    use rumqttc::tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).ok()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    Some(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}
