//! Prepares the local stack's data: the ownership table (from `template.yaml`), the local PKI
//! (CA, broker server certificate, claim-thing and observer identities), the claim-thing secret of
//! the demo vendor in moto, and demo devices with their birth certificates. Idempotent.
//! Used by `scripts/dev.sh`; reads `.local/endpoints.env` variables (`CLAIMS_TABLE`, `PKI_DIR`,
//! `MQTT_STAGING_PORT`, `AWS_ENDPOINT_URL*`).
//!
//! Usage: local-setup [--demo-device <thing-name>]... (`--help` for all flags)
//! With `LABEL_CODE_KEY_SECRET` set it also creates the label code key secret in moto.

use clap::Parser;

use claim_shared::{
    adapters::dynamodb::DynamoOwnershipStore,
    domain::registry::NewDevice,
    domain::{history::Actor, ids::ThingName},
    service::{ClaimService, ClaimSettings, SystemClock},
};
use claim_tests::{
    local_claim_thing_secret, local_dynamodb, local_secrets, pki, put_claim_thing_secret, schema::TableSchema,
    LocalStack,
};

/// The queue that records the demo devices' lifecycle events (`local-events` prints them).
const DEMO_EVENTS_SINK: &str = "lifecycle-events-demo";

/// The vendor of the demo devices; its secret is `<prefix>demo-vendor`.
const DEMO_VENDOR: &str = "demo-vendor";

/// Prepare the local stack's data: the ownership table, the local PKI, the demo vendor's
/// claim-thing secret in moto and demo devices (idempotent). Endpoints, table and PKI directory come
/// from the environment (source .local/endpoints.env).
#[derive(Parser, Debug)]
#[command(name = "local-setup", version, long_about = None)]
struct Cli {
    /// Import a demo device of the demo vendor and issue its birth certificate (repeatable).
    #[arg(long = "demo-device", value_name = "THING_NAME", value_parser = thing_name)]
    demo_devices: Vec<ThingName>,
    /// Prefix of the claim-thing secrets' names; the demo vendor's is <PREFIX>demo-vendor.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "CLAIM_THING_SECRET_PREFIX",
        default_value = "expresslink/claim-thing/"
    )]
    claim_thing_secret_prefix: String,
    /// Also create the label code key secret of this name in moto (kept if it exists; blank: none).
    #[arg(long, value_name = "NAME", env = "LABEL_CODE_KEY_SECRET")]
    label_code_key_secret: Option<String>,
}

fn thing_name(raw: &str) -> Result<ThingName, String> {
    ThingName::parse(raw).map_err(|err| err.to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let stack = LocalStack::from_env();
    let Cli {
        demo_devices,
        claim_thing_secret_prefix: prefix,
        label_code_key_secret,
    } = cli;

    let client = local_dynamodb().await;
    let schema = TableSchema::from_template_file().map_err(|err| err.to_string())?;
    match schema.create(&client, &stack.table).await {
        Ok(true) => println!("created table {}", stack.table),
        Ok(false) => println!("table {} already exists", stack.table),
        Err(err) => return Err(format!("cannot create table {}: {err}", stack.table)),
    }

    let pki = pki::LocalPki::ensure(&stack.pki_dir).map_err(|err| err.to_string())?;
    pki.client(pki::OBSERVER).map_err(|err| err.to_string())?;
    let secret = local_claim_thing_secret(&pki, stack.staging_port).map_err(|err| err.to_string())?;
    put_claim_thing_secret(&local_secrets().await, &format!("{prefix}{DEMO_VENDOR}"), &secret).await?;
    println!(
        "claim-thing secret {prefix}{DEMO_VENDOR} stored (staging = localhost:{})",
        stack.staging_port
    );

    if let Some(name) = label_code_key_secret {
        if !name.trim().is_empty() {
            let created = ensure_label_code_key(&local_secrets().await, &name).await?;
            println!(
                "label code key {name} {}",
                if created { "created" } else { "already exists" }
            );
        }
    }

    // The lifecycle events' bus, and a sink that records the demo devices' events for `up` to show.
    let bus = claim_tests::lifecycle::bus_name();
    let demo_things: Vec<&str> = demo_devices.iter().map(ThingName::as_str).collect();
    claim_tests::lifecycle::EventSink::create(DEMO_EVENTS_SINK, serde_json::json!({ "thing_name": demo_things }))
        .await
        .map_err(|err| format!("cannot set up the event bus {bus}: {err}"))?;
    println!("event bus {bus}: the demo devices' lifecycle events go to the queue {DEMO_EVENTS_SINK}");

    let service = ClaimService::new(
        DynamoOwnershipStore::new(client, &stack.table),
        SystemClock,
        ClaimSettings::default(),
    );
    for thing_name in demo_devices {
        pki.client(thing_name.as_str()).map_err(|err| err.to_string())?;
        let device = NewDevice {
            thing_name: thing_name.clone(),
            vendor: DEMO_VENDOR.into(),
            sku: Some("DEMO-1".into()),
            code_hash: None,
            allow_thing_name: None,
            code_as_thing_name: None,
        };
        let outcome = service
            .import(&device, Actor::Operator("scripts/dev.sh".into()))
            .await
            .map_err(|err| format!("cannot import {thing_name}: {err}"))?;
        println!(
            "demo device {thing_name}: {outcome:?}, birth certificate in {}/clients/",
            pki.dir().display()
        );
    }
    Ok(())
}

/// The label code key in moto, as the template's `GenerateSecretString` makes it on AWS: 64 random
/// letters and digits, used as raw bytes. Kept if it exists (stored codes' hashes depend on it).
async fn ensure_label_code_key(client: &aws_sdk_secretsmanager::Client, name: &str) -> Result<bool, String> {
    if client.describe_secret().secret_id(name).send().await.is_ok() {
        return Ok(false);
    }
    let key: String = std::iter::repeat_with(fastrand::alphanumeric).take(64).collect();
    client
        .create_secret()
        .name(name)
        .secret_string(key)
        .send()
        .await
        .map(|_| true)
        .map_err(|err| {
            format!(
                "label code key {name}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&err)
            )
        })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }
}
