//! The local stack's stand-in for what AWS IoT does in the OEM account when a device connects:
//! it watches the OEM listener of the local broker (its connection log) and, like AWS IoT with
//! registry events enabled and the project's topic rules, sends `provisioning-events` a
//! `thing/<name>/created` event the first time a device arrives (JITP creates the thing) and a
//! `presence/connected/<clientId>` event on every connection, shaped as the rules deliver them.
//!
//! It also plays the IoT control plane's side (in moto, see `claim_tests::local_iot`): the vendor CA
//! is registered at start, and JITP registers a device's certificate and thing when it first
//! connects. A device whose certificate is inactive (the rogue-device gate deactivated it) is
//! refused as AWS IoT refuses it: no event. (The local broker still lets it in; only the events
//! stop.)
//!
//! With `--forward-from-account` and `--forward-from-region` it plays an OEM endpoint in another
//! account and region instead: the events go, as the forwarder's rules send them
//! (`infra/event-forwarder.yaml`), to the claim stack's forwarded events queue, and that account's
//! control plane (not the stack's moto) is where JITP registers the certificate.
//!
//! Usage: local-iot-events --log <mosquitto.log> --oem-port <port> --pki <dir> --things <file>
//! (--invoke <url> | --forward-from-account <id> --forward-from-region <region>)
//! (`--help` describes every flag)

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Seek, SeekFrom},
    path::PathBuf,
    time::Duration,
};

use claim_tests::{
    forwarding::{forwarded, ForwardedQueue},
    local_iot::{certificate_active, certificate_id_of, local_iot, provision, register_vendor_ca},
};
use clap::Parser;
use serde_json::json;

/// Play AWS IoT in the OEM account: follow the local broker's connection log and send
/// provisioning-events the registry and presence events of devices connecting to the OEM listener.
#[derive(Parser, Debug)]
#[command(name = "local-iot-events", version, long_about = None)]
struct Options {
    /// The broker's log file (connection_messages on), followed from its end.
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    /// The OEM listener's port: only connections to it make events.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    oem_port: u16,
    /// The local PKI directory: the vendor CA (ca.pem) and the devices' certificates (clients/<thing>.pem).
    #[arg(long, value_name = "DIR")]
    pki: PathBuf,
    /// Invoke URL of provisioning-events (the Lambda Invoke API of cargo lambda watch).
    #[arg(long, value_name = "URL", required_unless_present = "forward_from_account")]
    invoke: Option<String>,
    /// Play an endpoint of this other account: forward the events to the claim stack's queue.
    #[arg(
        long,
        value_name = "ACCOUNT",
        requires = "forward_from_region",
        conflicts_with = "invoke"
    )]
    forward_from_account: Option<String>,
    /// The region of that endpoint.
    #[arg(long, value_name = "REGION", requires = "forward_from_account")]
    forward_from_region: Option<String>,
    /// Where the things the OEM account has are kept (one name a line, kept across restarts).
    #[arg(long, value_name = "FILE")]
    things: PathBuf,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Where the events go: to provisioning-events as this account's rules invoke it, or to the claim
/// stack's queue as another account's forwarder sends them.
enum Delivery {
    Invoke(reqwest::Client, String),
    Forward {
        queue: ForwardedQueue,
        account: String,
        region: String,
    },
}

impl Delivery {
    /// The account the events are raised in (thing events name it).
    fn account(&self) -> &str {
        match self {
            Delivery::Invoke(..) => "123456789012",
            Delivery::Forward { account, .. } => account,
        }
    }

    async fn deliver(&self, event: serde_json::Value, topic: &str) {
        match self {
            Delivery::Invoke(http, url) => match http.post(url).json(&event).send().await {
                Ok(response) => {
                    let body = response.text().await.unwrap_or_default();
                    println!("{topic} -> provisioning-events: {body}");
                }
                Err(err) => println!("{topic} -> provisioning-events failed: {err}"),
            },
            Delivery::Forward { queue, account, region } => {
                match queue.send(&forwarded(event, account, region)).await {
                    Ok(()) => println!("{topic} -> the claim stack's forwarded events queue"),
                    Err(err) => println!("{topic} -> the forwarded events queue failed: {err}"),
                }
            }
        }
    }
}

async fn run() -> Result<(), String> {
    let options = Options::parse();
    let delivery = match (
        &options.invoke,
        &options.forward_from_account,
        &options.forward_from_region,
    ) {
        (_, Some(account), Some(region)) => Delivery::Forward {
            queue: ForwardedQueue::ensure().await?,
            account: account.clone(),
            region: region.clone(),
        },
        (Some(url), _, _) => Delivery::Invoke(reqwest::Client::new(), url.clone()),
        _ => return Err("--invoke or --forward-from-account with --forward-from-region is needed".into()),
    };
    // Only this account's AWS IoT is moto's: another account's control plane is not the stack's.
    let iot = match delivery {
        Delivery::Invoke(..) => Some(local_iot().await),
        Delivery::Forward { .. } => None,
    };
    let ca_pem = std::fs::read_to_string(options.pki.join("ca.pem"))
        .map_err(|err| format!("{}: {err}", options.pki.join("ca.pem").display()))?;
    if let Some(iot) = &iot {
        register_vendor_ca(iot, &ca_pem).await?;
    }
    // Things the OEM account "has" (JITP made them): kept across restarts, like the registry.
    let mut things: HashSet<String> = std::fs::read_to_string(&options.things)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let file = std::fs::File::open(&options.log).map_err(|e| format!("{}: {e}", options.log.display()))?;
    let mut reader = BufReader::new(file);
    // Only connections from now on (the bridge starts with the broker, before any device).
    let mut position = reader.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    let mut ports: HashMap<String, u16> = HashMap::new();
    println!(
        "watching {} for connections on port {}",
        options.log.display(),
        options.oem_port
    );
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if read == 0 || !line.ends_with('\n') {
            // Wait for more (and start over if the log was truncated by a broker restart).
            tokio::time::sleep(Duration::from_millis(100)).await;
            let length = std::fs::metadata(&options.log).map(|m| m.len()).unwrap_or(0);
            position = if length < position { 0 } else { position };
            reader.seek(SeekFrom::Start(position)).map_err(|e| e.to_string())?;
            continue;
        }
        position += read as u64;
        // "<ts>: New connection from 127.0.0.1:48446 on port 8884."
        if let Some((address, port)) =
            between(&line, "New connection from ", " on port ").zip(between(&line, " on port ", "."))
        {
            if let Ok(port) = port.parse() {
                ports.insert(address.to_owned(), port);
            }
            continue;
        }
        // "<ts>: New client connected from 127.0.0.1:48446 as <client id> (p2, c1, k30, u'<CN>')."
        let (Some(address), Some(client_id), Some(thing)) = (
            between(&line, "New client connected from ", " as "),
            between(&line, " as ", " ("),
            between(&line, "u'", "'"),
        ) else {
            continue;
        };
        if ports.get(address) != Some(&options.oem_port) {
            continue;
        }
        // JITP, and AWS IoT refusing a deactivated certificate.
        let cert_pem = std::fs::read_to_string(options.pki.join("clients").join(format!("{thing}.pem")));
        let certificate_id = match (cert_pem, &iot) {
            (Ok(pem), Some(iot)) => match provision(iot, thing, &pem, &ca_pem).await {
                Ok(id) => Some(id),
                Err(err) => {
                    println!("{thing}: JITP failed: {err}");
                    None
                }
            },
            (Ok(pem), None) => certificate_id_of(&pem),
            (Err(_), _) => None,
        };
        if let (Some(id), Some(iot)) = (&certificate_id, &iot) {
            if certificate_active(iot, id).await == Ok(Some(false)) {
                println!("{thing}: refused, certificate {id} is inactive (quarantined)");
                continue;
            }
        }
        let now = time::OffsetDateTime::now_utc();
        let millis = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        if things.insert(thing.to_owned()) {
            let _ = std::fs::write(
                &options.things,
                things.iter().map(|t| format!("{t}\n")).collect::<String>(),
            );
            let created = json!({
                "eventType": "THING_EVENT", "eventId": uuid::Uuid::new_v4().to_string(), "timestamp": millis,
                "operation": "CREATED", "accountId": delivery.account(), "thingId": uuid::Uuid::new_v4().to_string(),
                "thingName": thing, "versionNumber": 1, "thingTypeName": null, "attributes": {},
                "thing_name_from_topic": thing, "event_kind": "thing_created",
            });
            delivery
                .deliver(created, &format!("$aws/events/thing/{thing}/created"))
                .await;
        }
        let connected = json!({
            "clientId": client_id, "timestamp": millis, "eventType": "connected",
            "sessionIdentifier": uuid::Uuid::new_v4().to_string(),
            "principalIdentifier": certificate_id, "ipAddress": "127.0.0.1",
            "versionNumber": 0, "client_id_from_topic": client_id, "event_kind": "presence_connected",
        });
        delivery
            .deliver(connected, &format!("$aws/events/presence/connected/{client_id}"))
            .await;
    }
}

fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = line.find(start)? + start.len();
    let to = line[from..].find(end)? + from;
    Some(&line[from..to])
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Options::command().debug_assert();
    }
}
