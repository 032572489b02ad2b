//! The claim path as AWS Lambda runs it, against the plain Python handler it must beat
//! (`scripts/dev.sh bench --lambda`; docs/benchmark.md says what is measured and how to read it).
//!
//! Release bootstraps of `claim-api` under Runtime API emulators of their own, K at a time, fed API
//! Gateway REST events with a Cognito authorizer context; `claim-publisher` as one process fed by the
//! table's change stream; the Python baseline (`tools/bench-baseline/`) under the same emulator, in
//! interleaved rounds; all on the local stack's DynamoDB Local, moto and Mosquitto. Prints a table
//! per K with the ratios to the baseline and the machine's load, and writes it (markdown and JSON,
//! every round's figures) to `--out`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use claim_tests::{
    engines::Jit,
    lambda_bench::{
        built_beside,
        publisher::StreamFedPublisher,
        report::{markdown, summarise, BASELINE},
        round::{self, Plan, RoundResult},
        Setup, Side, Transport,
    },
    mqtt::Observer,
};
use clap::Parser;

const OURS: &str = "claim-api";

/// Lambda-mode benchmark of the claim path: release claim-api bootstraps under a Runtime API
/// emulator, K instances, against the Python baseline in the same run.
#[derive(Parser, Debug)]
#[command(name = "claim-bench-lambda", version, long_about = None)]
struct Cli {
    /// Instances per implementation in a round; several (1,8,16) run one after another.
    #[arg(long, value_name = "K", value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..=64))]
    instances: Vec<u32>,
    /// Claims per implementation and round (fresh devices of a vendor of the round's own).
    #[arg(long, value_name = "N", default_value_t = 300, value_parser = clap::value_parser!(u32).range(2..=5000))]
    claims: u32,
    /// Rounds per K, the implementations taking turns first.
    #[arg(long, value_name = "R", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// claim-api's bootstrap (default: beside this binary's target directory, release).
    #[arg(long, value_name = "PATH")]
    claim_api: Option<PathBuf>,
    /// claim-publisher's bootstrap (default: as --claim-api).
    #[arg(long, value_name = "PATH")]
    claim_publisher: Option<PathBuf>,
    /// The Python with boto3, paho-mqtt and awslambdaric (the stack's venv); none: no baseline.
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Seconds after the last answer that endpoint messages may still come.
    #[arg(long, value_name = "S", default_value_t = 30)]
    deliver_within: u64,
    /// How the rounds' vendors publish: `mqtt` (the stream-fed publisher, against the baseline) or
    /// `https` (published in the request; ours only: the baseline speaks MQTT).
    #[arg(long, value_enum, default_value_t = Transport::Mqtt)]
    transport: Transport,
    /// The compilers of the implementations' DynamoDB Local JVMs: `full` (the JVM's default; the
    /// warm-up lasts until the optimising compiler is done) or `c1-only` (what the tests use).
    #[arg(long, value_enum, default_value_t = Jit::Full)]
    engine_jit: Jit,
    /// Where the table goes (markdown and JSON).
    #[arg(long, value_name = "DIR", default_value = ".local/artefacts/bench")]
    out: PathBuf,
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn release_binary(name: &str) -> PathBuf {
    let beside = built_beside(name);
    beside
        .parent()
        .and_then(|dir| dir.parent())
        .map(|target| target.join("release").join(name))
        .unwrap_or(beside)
}

/// Claims per implementation in a warm-up round (fewer if `--claims` is smaller), and the warm-up
/// rounds of each.
const WARM_UP_CLAIMS: u32 = 400;
const WARM_UP_ROUNDS: u32 = 5;

/// How long the run waits at most for an engine's compilers to finish after the warm-up.
const ENGINE_SETTLE_LIMIT: Duration = Duration::from_secs(180);

/// What every round of the run shares.
struct Rounds<'a> {
    setup: &'a Setup,
    cli: &'a Cli,
    claim_api: &'a Path,
    observer: &'a Observer,
    publisher: (&'a StreamFedPublisher, &'a Side),
    /// Ours, the baseline's.
    sides: (&'a Side, &'a Side),
}

impl Rounds<'_> {
    /// The implementations in the order of turn `turn`: they take turns going first.
    fn order(&self, turn: u32) -> Vec<&'static str> {
        let mut order = vec![OURS];
        if self.cli.python.is_some() && self.cli.transport == Transport::Mqtt {
            order.insert(usize::from(turn % 2 == 1), BASELINE);
        }
        order
    }

    /// One round of `implementation`: `claims` fresh devices of a new vendor, `k` instances.
    async fn play(&self, implementation: &'static str, k: u32, claims: u32) -> RoundResult {
        let (setup, cli) = (self.setup, self.cli);
        let side = if implementation == OURS {
            self.sides.0
        } else {
            self.sides.1
        };
        let (vendor, client_id) = setup
            .new_vendor_over(&format!("bench-{implementation}"), cli.transport)
            .await;
        let codes = setup.import(&side.table, &vendor, claims as usize).await;
        let runtime = match (implementation, &cli.python) {
            (BASELINE, Some(python_bin)) => setup.python_baseline(python_bin, side, &vendor),
            _ => setup.function(self.claim_api, side),
        };
        let plan = Plan {
            implementation,
            runtime,
            side,
            vendor: &vendor,
            client_id: &client_id,
            engine_pid: Some(side.engine_pid()),
            transport: cli.transport,
            moto_url: &setup.local.moto_url,
            instances: k as usize,
            codes,
            retries: 0,
            deliver_within: Duration::from_secs(cli.deliver_within),
        };
        let with_publisher = (implementation == OURS).then_some(self.publisher);
        round::run(plan, self.observer, || setup.broker_log(), with_publisher).await
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let claim_api = cli.claim_api.clone().unwrap_or_else(|| release_binary("claim-api"));
    let claim_publisher = cli
        .claim_publisher
        .clone()
        .unwrap_or_else(|| release_binary("claim-publisher"));
    let load_before = load();
    let setup = Setup::connect().await;
    let (ours, python) = (
        setup.side_with(cli.engine_jit).await,
        setup.side_with(cli.engine_jit).await,
    );
    let observer = Observer::start(&setup.pki, setup.local.staging_port)
        .await
        .unwrap_or_else(|err| panic!("observer: {err}"));
    let (publisher, publisher_side) = setup.stream_fed_publisher(&claim_publisher, &ours).await;
    // For `https`, what the local endpoint takes at most, measured in the same run before the rounds.
    let endpoint_rate = match cli.transport {
        Transport::Mqtt => None,
        Transport::Https => Some(setup.https_endpoint_rate(cli.claims as usize).await),
    };
    if let Some(rate) = endpoint_rate {
        println!("the HTTPS staging endpoint alone: {rate:.0} messages/s (our HTTPS adapter, 16 at a time)");
    }

    let run = Rounds {
        setup: &setup,
        cli: &cli,
        claim_api: &claim_api,
        observer: &observer,
        publisher: (&publisher, &publisher_side),
        sides: (&ours, &python),
    };
    // Unmeasured rounds of each implementation first: DynamoDB Local is a JVM that compiles its hot
    // paths over its first few thousand requests (measured: 30, 17–23, 12–18, 9–14 ms of engine CPU
    // a claim in the first four rounds of 400), and a round measured then measures that. Then the
    // engines are left until their compilers are done.
    let warm_up_k = cli.instances.iter().copied().max().unwrap_or(1);
    for implementation in run.order(0) {
        for warm_up in 1..=WARM_UP_ROUNDS {
            let result = run
                .play(implementation, warm_up_k, cli.claims.min(WARM_UP_CLAIMS))
                .await;
            println!(
                "warm-up {warm_up} (not measured): {implementation}: {} claims, {} delivered, engine CPU {:.1} ms a claim; load {}",
                result.claims,
                result.delivered,
                result.engine_cpu_ms / result.claims.max(1) as f64,
                load()
            );
        }
    }
    for (name, side) in [(OURS, &ours), (BASELINE, &python)] {
        let took = side.engine_settled(ENGINE_SETTLE_LIMIT).await;
        println!(
            "{name}'s engine idle after {:.0} s; load {}",
            took.as_secs_f64(),
            load()
        );
    }
    let mut rounds: Vec<RoundResult> = Vec::new();
    for &k in &cli.instances {
        for turn in 0..cli.rounds {
            for implementation in run.order(turn) {
                let result = run.play(implementation, k, cli.claims).await;
                println!(
                    "K={k} round {}: {implementation}: {} of {} accepted, {} delivered, warm mean {:.1} ms; load {}",
                    turn + 1,
                    result.statuses.get(&202).copied().unwrap_or_default(),
                    result.claims,
                    result.delivered,
                    result.warm_ms.iter().copied().sum::<f64>() / result.warm_ms.len().max(1) as f64,
                    load()
                );
                rounds.push(result);
            }
        }
    }
    drop(publisher);

    let summaries = summarise(&rounds);
    let load_after = load();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let when = time::OffsetDateTime::now_utc();
    let header = format!(
        "Lambda-mode benchmark, {when}: {cores} cores, load average before {load_before}, after {load_after}.\n\
         Transport: {}. {OURS}: {}; claim-publisher: {} (one process, fed by the table's stream); baseline: {}.\n\
         Engines: a DynamoDB Local of each implementation's own (JIT: {}, warmed by five unmeasured rounds, then idle); moto and Mosquitto (mutual TLS) of the local stack; times from outside the process.{}",
        match cli.transport {
            Transport::Mqtt => "mqtt (claim-publisher sends; an MQTT observer times each message)",
            Transport::Https => "https (claim-api publishes in the request; moto's recording says what arrived)",
        },
        claim_api.display(),
        claim_publisher.display(),
        cli.python.as_ref().filter(|_| cli.transport == Transport::Mqtt).map_or("none".to_owned(), |p| format!(
            "tools/bench-baseline/handler.py under awslambdaric ({})",
            p.display()
        )),
        match cli.engine_jit {
            Jit::Full => "C1 and C2",
            Jit::C1Only => "C1 only",
        },
        endpoint_rate.map_or(String::new(), |rate| format!(
            "\nThe HTTPS staging endpoint alone (nginx → moto; {} messages by our HTTPS adapter, 16 at a time, no claim or table): {rate:.0} messages/s, the ceiling of these rounds.",
            cli.claims
        )),
    );
    let table = markdown(&summaries, OURS);
    println!("\n{header}\n{table}");
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        when.year(),
        u8::from(when.month()),
        when.day(),
        when.hour(),
        when.minute(),
        when.second()
    );
    let json = serde_json::json!({
        "header": header, "cores": cores, "load_before": load_before, "load_after": load_after,
        "transport": cli.transport, "https_endpoint_messages_per_second": endpoint_rate,
        "summaries": summaries, "rounds": rounds,
    });
    let written = std::fs::create_dir_all(&cli.out)
        .and_then(|()| std::fs::write(cli.out.join(format!("lambda-{stamp}.md")), format!("{header}\n{table}")))
        .and_then(|()| std::fs::write(cli.out.join(format!("lambda-{stamp}.json")), json.to_string()));
    match written {
        Ok(()) => println!("written to {}/lambda-{stamp}.{{md,json}}", cli.out.display()),
        Err(err) => eprintln!("cannot write to {}: {err}", cli.out.display()),
    }
    for side in [&ours, &python] {
        let _ = side
            .table
            .client
            .delete_table()
            .table_name(&side.table.name)
            .send()
            .await;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["claim-bench-lambda", "--instances", "1,8,16"]).unwrap();
        assert_eq!(cli.instances, [1, 8, 16]);
        assert!(Cli::try_parse_from(["claim-bench-lambda", "--instances", "0"]).is_err());
        let https = Cli::try_parse_from(["claim-bench-lambda", "--transport", "https"]).unwrap();
        assert_eq!(https.transport, Transport::Https);
        assert!(Cli::try_parse_from(["claim-bench-lambda", "--transport", "iot"]).is_err());
    }
}
