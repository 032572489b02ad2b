//! Prints the lifecycle events a local sink queue recorded (`local-setup` makes the demo devices'
//! sink), one per line as `<time> <detail-type> <detail>`, waiting up to `--within` seconds for
//! one of type `--until`.
//!
//! Usage: local-events --sink lifecycle-events-demo [--until claim.provisioned] [--within 10]

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
struct Options {
    /// The sink queue's name.
    #[arg(long)]
    sink: String,
    /// Wait for an event of this type.
    #[arg(long)]
    until: Option<String>,
    /// Seconds to wait for it.
    #[arg(long, default_value_t = 10)]
    within: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = Options::parse();
    let sink = match claim_tests::lifecycle::EventSink::open(&options.sink).await {
        Ok(sink) => sink,
        Err(err) => {
            eprintln!("error: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let until = options.until.clone();
    let events = sink
        .collect_until(Duration::from_secs(options.within), |events| {
            until
                .as_deref()
                .is_none_or(|kind| claim_tests::lifecycle::types(events).iter().any(|t| t == kind))
        })
        .await;
    for event in &events {
        println!(
            "{} {} {}",
            event["time"].as_str().unwrap_or_default(),
            event["detail-type"].as_str().unwrap_or_default(),
            event["detail"]
        );
    }
    std::process::ExitCode::SUCCESS
}
