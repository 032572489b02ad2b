//! The IoT control plane adapter (`IotCertificateControl`) against moto's AWS IoT as the local
//! stack runs it (`scripts/moto_server.py`): what a certificate is, switching it off and on, and a
//! clear error within the deadline when the control plane is unreachable or hangs.

use std::time::{Duration, Instant};

use claim_shared::{adapters::iotcontrol::IotCertificateControl, ports::CertificateControl};
use claim_tests::{
    local_iot::{certificate_id_of, local_iot, provision, register_vendor_ca},
    pki::LocalPki,
};

#[tokio::test]
async fn describes_and_switches_certificates_of_the_vendor_ca() {
    let dir = std::env::temp_dir().join(format!("control-{}", uuid::Uuid::new_v4()));
    let pki = LocalPki::ensure(&dir).unwrap();
    let ca_pem = pki.ca_pem().unwrap();
    let thing = format!("ctl-{}", uuid::Uuid::new_v4().simple());
    let device = pki.client(&thing).unwrap();
    let iot = local_iot().await;
    register_vendor_ca(&iot, &ca_pem).await.unwrap();
    let id = provision(&iot, &thing, &device.cert_pem, &ca_pem).await.unwrap();
    assert_eq!(
        Some(id.clone()),
        certificate_id_of(&device.cert_pem),
        "AWS's certificate id"
    );

    let control = IotCertificateControl::new(iot);
    let facts = control.describe(&id).await.unwrap().expect("registered");
    assert_eq!(
        facts.ca_certificate_id,
        certificate_id_of(&ca_pem),
        "issued by the vendor CA"
    );
    assert!(facts.active);
    control.set_active(&id, false).await.unwrap();
    assert!(!control.describe(&id).await.unwrap().unwrap().active);
    control.set_active(&id, true).await.unwrap();
    assert!(control.describe(&id).await.unwrap().unwrap().active);
    assert_eq!(control.describe(&"0".repeat(64)).await, Ok(None));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_unreachable_or_hanging_control_plane_is_an_error_within_the_deadline() {
    // Accepts connections and never answers.
    let frozen = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let frozen_url = format!("http://{}", frozen.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = frozen.accept().await {
            open.push(socket);
        }
    });
    for endpoint in ["http://127.0.0.1:9", frozen_url.as_str()] {
        let config = claim_tests::local_sdk_config_at(endpoint).await;
        let control =
            IotCertificateControl::new(aws_sdk_iot::Client::new(&config)).with_timeout(Duration::from_millis(800));
        let started = Instant::now();
        let error = control.set_active(&"a".repeat(64), false).await.expect_err(endpoint);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{endpoint}: {:?}",
            started.elapsed()
        );
        assert!(!error.0.is_empty());
        assert!(control.describe(&"a".repeat(64)).await.is_err(), "{endpoint}");
    }
    held.abort();
}
