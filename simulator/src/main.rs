//! `expresslink-sim`: run a simulated ExpressLink module by hand.
//!
//! ```text
//! expresslink-sim --thing <ThingName> --staging <host:port> --ca <ca.pem> --cert <cert.pem> --key <key.pem>
//!                 [--resolve <endpoint-host>=<addr:port>]...
//! ```
//! Prints one line per step; runs until interrupted. `--help` describes every flag.

use std::collections::HashMap;

use clap::Parser;
use expresslink_sim::{run, ModuleConfig, ModuleEvent};

/// Simulate an AWS IoT ExpressLink module in its staging state: it waits for the claim message on
/// `<thing>/expresslink_config` and moves to the endpoint it names.
#[derive(Parser, Debug)]
#[command(name = "expresslink-sim", version, long_about = None)]
struct Cli {
    /// The module's ThingName (its UID; also its MQTT client id).
    #[arg(long, value_name = "THING_NAME")]
    thing: String,
    /// The vendor's staging MQTT endpoint.
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    staging: HostPort,
    /// Roots the module trusts (its RootCA configuration), PEM.
    #[arg(long, value_name = "CA.PEM", value_parser = read_pem)]
    ca: String,
    /// The module's birth certificate, PEM.
    #[arg(long, value_name = "CERT.PEM", value_parser = read_pem)]
    cert: String,
    /// The birth certificate's private key, PEM.
    #[arg(long, value_name = "KEY.PEM", value_parser = read_pem)]
    key: String,
    /// Where an endpoint host really is (repeatable); other hosts are used as given, on port 8883.
    #[arg(long, value_name = "HOST=ADDR:PORT", value_parser = resolve_entry)]
    resolve: Vec<Resolve>,
}

#[derive(Clone, Debug, PartialEq)]
struct HostPort {
    host: String,
    port: u16,
}

#[derive(Clone, Debug, PartialEq)]
struct Resolve {
    host: String,
    target: HostPort,
}

/// `host:port` (the last `:` separates the port).
fn host_port(raw: &str) -> Result<HostPort, String> {
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| format!("{raw:?} is not host:port"))?;
    if host.is_empty() {
        return Err(format!("{raw:?} has no host"));
    }
    let port = port.parse().map_err(|_| format!("{raw:?} has no valid port"))?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

/// `host=addr:port`.
fn resolve_entry(raw: &str) -> Result<Resolve, String> {
    let (host, target) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not host=addr:port"))?;
    if host.is_empty() {
        return Err(format!("{raw:?} has no host before '='"));
    }
    Ok(Resolve {
        host: host.to_owned(),
        target: host_port(target)?,
    })
}

/// A PEM file's contents (read while parsing, so an unreadable file is a usage error, exit code 2).
fn read_pem(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("{path}: {err}"))
}

impl From<Cli> for ModuleConfig {
    fn from(cli: Cli) -> Self {
        ModuleConfig {
            thing_name: cli.thing,
            staging_host: cli.staging.host,
            staging_port: cli.staging.port,
            cert_pem: cli.cert,
            key_pem: cli.key,
            ca_pem: cli.ca,
            resolve: cli
                .resolve
                .into_iter()
                .map(|entry| (entry.host, (entry.target.host, entry.target.port)))
                .collect::<HashMap<_, _>>(),
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = ModuleConfig::from(Cli::parse());
    let thing = config.thing_name.clone();
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let module = tokio::spawn(run(config, events));
    while let Some(event) = received.recv().await {
        match event {
            ModuleEvent::WaitingInStaging => {
                println!("[{thing}] staging: subscribed to {thing}/expresslink_config, waiting for a claim")
            }
            ModuleEvent::Message { topic, payload } => {
                println!("[{thing}] message on {topic}: {}", String::from_utf8_lossy(&payload))
            }
            ModuleEvent::EndpointStored(endpoint) => {
                println!("[{thing}] stored Endpoint={endpoint}; disconnecting from staging")
            }
            ModuleEvent::ConnectedTo(endpoint) => println!("[{thing}] connected to {endpoint}: onboarded"),
        }
    }
    match module.await {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("[{thing}] error: {err}");
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("[{thing}] error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn host_port_takes_the_last_colon_as_the_port() {
        assert_eq!(
            host_port("localhost:8883"),
            Ok(HostPort {
                host: "localhost".into(),
                port: 8883
            })
        );
        assert!(host_port("localhost").is_err());
        assert!(host_port(":8883").is_err());
        assert!(host_port("localhost:http").is_err());
        assert!(host_port("localhost:70000").is_err());
    }

    #[test]
    fn resolve_maps_a_host_to_an_address() {
        let entry = resolve_entry("oem-ats.iot.us-east-1.amazonaws.com=localhost:8884");
        assert_eq!(
            entry,
            Ok(Resolve {
                host: "oem-ats.iot.us-east-1.amazonaws.com".into(),
                target: HostPort {
                    host: "localhost".into(),
                    port: 8884
                }
            })
        );
        assert!(resolve_entry("localhost:8884").is_err());
        assert!(resolve_entry("=localhost:8884").is_err());
    }
}
