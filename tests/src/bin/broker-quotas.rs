//! Fails when a claim-thing client id broke AWS IoT's per-client-id quotas in the staging broker's
//! log: more than one CONNECT in a second, or two connections at once (a takeover). `scripts/dev.sh
//! test` runs it over everything the test run logged, so every test that publishes as a claim-thing
//! is held to the quotas, not only the ones that check their own client id.
//!
//! Usage: broker-quotas --log <mosquitto log> --since <epoch seconds>

use clap::Parser;

#[derive(Parser)]
struct Options {
    /// The staging broker's log (`log_type notice`, `connection_messages true`).
    #[arg(long)]
    log: std::path::PathBuf,
    /// Only lines logged at or after this time (epoch seconds) are read.
    #[arg(long, default_value_t = 0)]
    since: u64,
}

fn main() -> std::process::ExitCode {
    let options = Options::parse();
    let log = match std::fs::read_to_string(&options.log) {
        Ok(log) => log,
        Err(err) => {
            eprintln!("broker-quotas: {}: {err}", options.log.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    let violations = claim_tests::mqtt::claim_thing_quota_violations(&log, options.since);
    if violations.is_empty() {
        println!("claim-thing client ids within AWS IoT's quotas (≤ 1 CONNECT per second, one connection at a time)");
        return std::process::ExitCode::SUCCESS;
    }
    for violation in &violations {
        eprintln!("quota broken by {violation}");
    }
    std::process::ExitCode::FAILURE
}
