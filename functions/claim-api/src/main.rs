//! Wiring only: configuration and clients are built once per execution environment, then every
//! request goes to `Api::handle`.

use claim_api::{Api, ApiConfig};
use claim_shared::wiring::Wiring;
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    claim_shared::logging::init();
    let config = ApiConfig::from_env()?;
    let wiring = Wiring::from_env().await;
    let service = wiring
        .service()?
        .with_label_code_key(wiring.label_code_key().await?)
        .with_delivery(wiring.delivery()?);
    // Claims and enabling lift quarantines (the certificate is activated again).
    let service = wiring.with_certificates(service)?;
    let api = Api::new(service, config);
    lambda_http::run(service_fn(|request| api.handle(request))).await
}
