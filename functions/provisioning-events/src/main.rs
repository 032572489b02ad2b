//! Wiring only: the claim service is built once per execution environment; each topic-rule
//! invocation goes to `provisioning_events::handle`.

use claim_shared::wiring::Wiring;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let wiring = Wiring::from_env().await;
    let region = wiring.aws().region().map(ToString::to_string);
    let claims = wiring.service()?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (claims, region) = (&claims, region.as_deref());
        async move {
            // arn:aws:lambda:<region>:<account>:function:<name>: the OEM account the events come from.
            let account = event.context.invoked_function_arn.split(':').nth(4).map(str::to_owned);
            provisioning_events::handle(claims, &event.payload, region, account.as_deref())
                .await
                .map_err(Error::from)
        }
    }))
    .await
}
