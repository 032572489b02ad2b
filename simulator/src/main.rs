//! `expresslink-sim`: run a simulated ExpressLink module by hand.
//!
//! ```text
//! expresslink-sim --thing <ThingName> --staging <host:port> --ca <ca.pem> --cert <cert.pem> --key <key.pem>
//!                 [--resolve <endpoint-host>=<addr:port>]...
//! ```
//! Prints one line per step; runs until interrupted.

use std::collections::HashMap;

use expresslink_sim::{run, ModuleConfig, ModuleEvent};

fn usage() -> String {
    "usage: expresslink-sim --thing <ThingName> --staging <host:port> --ca <ca.pem> --cert <cert.pem> --key <key.pem> [--resolve <endpoint-host>=<addr:port>]...".to_owned()
}

fn host_port(raw: &str) -> Result<(String, u16), String> {
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| format!("{raw:?} is not host:port"))?;
    let port = port.parse().map_err(|_| format!("{raw:?} has no valid port"))?;
    Ok((host.to_owned(), port))
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("{path}: {err}"))
}

fn parse(args: &[String]) -> Result<ModuleConfig, String> {
    let mut values: HashMap<&str, &str> = HashMap::new();
    let mut resolve = HashMap::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(usage)?;
        match flag.as_str() {
            "--resolve" => {
                let (host, target) = value.split_once('=').ok_or_else(usage)?;
                resolve.insert(host.to_owned(), host_port(target)?);
            }
            "--thing" | "--staging" | "--ca" | "--cert" | "--key" => {
                values.insert(flag.as_str(), value.as_str());
            }
            _ => return Err(usage()),
        }
    }
    let get = |name: &str| values.get(name).copied().ok_or_else(usage);
    let (staging_host, staging_port) = host_port(get("--staging")?)?;
    Ok(ModuleConfig {
        thing_name: get("--thing")?.to_owned(),
        staging_host,
        staging_port,
        cert_pem: read(get("--cert")?)?,
        key_pem: read(get("--key")?)?,
        ca_pem: read(get("--ca")?)?,
        resolve,
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
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
