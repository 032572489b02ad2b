//! `claimctl`: operator command line of the ExpressLink claim backend. Works on the ownership table
//! directly, against AWS (default credential chain and region; the table is the stack output
//! `ClaimsTableName`) or the local stack (`source .local/endpoints.env`).
//!
//! Exit codes: see [`EXIT_CODES`] (also in `--help`).

use std::{
    fs::File,
    io::{BufReader, IsTerminal},
    path::PathBuf,
    process::ExitCode,
};

use claim_shared::{
    domain::{
        claim::ClaimState,
        funnel::Funnel,
        ids::{ThingName, UserId},
    },
    ports::StoreError,
    service::{DeviceOpError, LiftOutcome},
    views::{admin_claim_view, funnel_view, inspection_view, quarantine_view, timestamp},
    wiring::{operator_timeouts, Service, Wiring},
};
use claimctl::{
    import::{count_rows, read_rows, Format, ImportError, Importer, Report},
    parse_age,
    progress::Progress,
};
use clap::{Parser, Subcommand};
use time::OffsetDateTime;

const EXIT_CODES: &str = "Exit codes: 0 done; 1 an import finished, but some rows failed (see the report); \
2 bad arguments, input or configuration (environment, secret); 3 the table is unavailable, or (release, \
disable, enable, lift) the device kept changing or the IoT control plane did not answer (nothing half-done: \
run it again; an import resumes; for an import such a device is a failed row); 4 no such device (lift: not \
quarantined).";

#[derive(Parser)]
#[command(
    name = "claimctl",
    version,
    about = "Operate the ExpressLink claim backend",
    long_about = None,
    after_help = EXIT_CODES
)]
struct Cli {
    /// The ownership table (stack output ClaimsTableName).
    #[arg(long, env = "CLAIMS_TABLE", global = true)]
    table: Option<String>,
    /// Who you are, recorded in device histories (e.g. your IAM principal ARN or e-mail).
    #[arg(long, env = "CLAIMCTL_OPERATOR", default_value = "claimctl", global = true)]
    operator: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import device records (what the factory made): adds devices, updates vendor and SKU, never
    /// touches ownership. Safe to run again; an interrupted import resumes by running it again.
    #[command(after_help = EXIT_CODES)]
    Import {
        /// CSV with a header naming thing_name, vendor, sku (other columns ignored), or JSON Lines
        /// (.jsonl / .ndjson) with those fields.
        file: PathBuf,
        /// Where rows that could not be imported go (CSV; fix it and import it as it is).
        #[arg(long, default_value = "import-failures.csv")]
        report: PathBuf,
        /// Devices imported at the same time.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
        /// The Secrets Manager secret holding the label code key (stack output / template
        /// resource LabelCodeKeySecret). Needed only for rows with a `code`.
        #[arg(long, env = "LABEL_CODE_KEY_SECRET")]
        code_key_secret: Option<String>,
    },
    /// Show a device: record, owner, the claim holding it, full history, and whether it can be
    /// claimed now (and if not, why).
    #[command(after_help = EXIT_CODES)]
    Inspect {
        thing_name: String,
        /// The user in the support ticket (their `sub`): also show their failed claim attempts and
        /// whether the rate limit holds them back (`reason` `rate_limited`).
        #[arg(long)]
        user: Option<String>,
    },
    /// Free a device whoever holds it (resale without the seller, support cases).
    #[command(after_help = EXIT_CODES)]
    Release {
        thing_name: String,
        /// Why, for the device history.
        #[arg(long)]
        reason: String,
    },
    /// Stop a device from being claimed (users get "not found").
    #[command(after_help = EXIT_CODES)]
    Disable {
        thing_name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let a disabled device be claimed again.
    #[command(after_help = EXIT_CODES)]
    Enable {
        thing_name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// List quarantined devices (arrived in the OEM account although nothing sent them there;
    /// their certificate is deactivated): one JSON object per line, by ThingName.
    #[command(after_help = EXIT_CODES)]
    Quarantines {
        /// Start after this ThingName (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Lift a quarantine: activate the device's certificate again and remove the quarantine. A claim
    /// of the device, or enabling a device quarantined while disabled, does this by itself.
    #[command(after_help = EXIT_CODES)]
    Lift { thing_name: String },
    /// List claims recorded in a state, oldest first: one JSON object per line.
    #[command(after_help = EXIT_CODES)]
    Claims {
        /// pending, endpoint_published, provisioned, expired, released or failed.
        #[arg(long, value_parser = parse_state)]
        state: ClaimState,
        /// Only claims started at least this long ago (e.g. 90s, 10m, 2h, 7d). Claims are found by
        /// their current deadline, looked up to 2 days after that point: above 2d minus the claim
        /// deadline, a claim renewed (retried after expiring) in the last (this + deadline - 2d)
        /// is missing.
        #[arg(long, default_value = "0s", value_parser = parse_age)]
        older_than: time::Duration,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// How the claims started in a time window ended up: started, published, provisioned, expired.
    /// Every claim started in the window counts once, renewed or not, in the state it reads now.
    #[command(after_help = EXIT_CODES)]
    Funnel {
        /// The window: the last 90s, 10m, 2h, 7d ...
        #[arg(long, default_value = "24h", value_parser = parse_age)]
        since: time::Duration,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(raw: &str) -> Result<ClaimState, String> {
    ClaimState::parse(raw).ok_or_else(|| {
        let all: Vec<&str> = ClaimState::ALL.iter().map(|state| state.as_str()).collect();
        format!("one of {}", all.join(", "))
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(table) = cli.table.filter(|table| !table.is_empty()) else {
        eprintln!("error: no table: pass --table or set CLAIMS_TABLE (stack output ClaimsTableName)");
        return ExitCode::from(2);
    };
    // The functions' settings (CLAIM_DEADLINE_SECONDS, FAILED_CLAIMS_*), so claimctl judges claims
    // and attempts as the stack does; deadlines fit for an operator's network (no call hangs).
    let wiring = Wiring::from_env_with(operator_timeouts()).await;
    let service = match wiring.service_on(&table) {
        Ok(service) => service,
        Err(err) => {
            eprintln!("error: {err} (claimctl reads the functions' settings from the environment)");
            return ExitCode::from(2);
        }
    };
    let operator = cli.operator;
    // Enabling and lifting switch certificates on the IoT control plane.
    let service = match wiring.with_certificates(service) {
        Ok(service) => service,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Import {
            file,
            report,
            concurrency,
            code_key_secret,
        } => {
            let key = match wiring.label_code_key_named(code_key_secret.as_deref()).await {
                Ok(key) => key,
                Err(err) => {
                    eprintln!("error: {}", err.0);
                    return ExitCode::from(2);
                }
            };
            let service = service.with_label_code_key(key);
            import(&service, &table, file, report, operator, concurrency).await
        }
        Command::Inspect { thing_name, user } => {
            let thing = match thing(&thing_name) {
                Ok(thing) => thing,
                Err(code) => return code,
            };
            let user = match user.as_deref().map(UserId::parse).transpose() {
                Ok(user) => user,
                Err(err) => {
                    eprintln!("error: --user: {err}");
                    return ExitCode::from(2);
                }
            };
            inspect_for(&service, &thing, user.as_ref()).await
        }
        Command::Release { thing_name, reason } => {
            let thing = match thing(&thing_name) {
                Ok(thing) => thing,
                Err(code) => return code,
            };
            if reason.trim().is_empty() {
                eprintln!("error: --reason must say why (it goes into the device history)");
                return ExitCode::from(2);
            }
            match service.force_release(&thing, &operator, &reason).await {
                Ok(_) => inspect(&service, &thing).await,
                Err(err) => device_op_failed(&err),
            }
        }
        Command::Disable { thing_name, reason } => switch(&service, &thing_name, true, &operator, reason).await,
        Command::Enable { thing_name, reason } => switch(&service, &thing_name, false, &operator, reason).await,
        Command::Quarantines { after, limit } => {
            let after = match after.as_deref().map(thing).transpose() {
                Ok(after) => after,
                Err(code) => return code,
            };
            match service.quarantines(after.as_ref(), limit).await {
                Ok(quarantines) => {
                    for quarantine in &quarantines {
                        println!("{}", quarantine_view(quarantine));
                    }
                    eprintln!("{} quarantines", quarantines.len());
                    ExitCode::SUCCESS
                }
                Err(err) => store_failed(&err),
            }
        }
        Command::Lift { thing_name } => {
            let thing = match thing(&thing_name) {
                Ok(thing) => thing,
                Err(code) => return code,
            };
            match service.lift_quarantine(&thing, &operator).await {
                Ok(LiftOutcome::Lifted(quarantine)) => {
                    println!("{}", quarantine_view(&quarantine));
                    eprintln!("lifted: the certificate is active again");
                    ExitCode::SUCCESS
                }
                Ok(LiftOutcome::NotQuarantined) => {
                    eprintln!("error: {thing_name} is not quarantined");
                    ExitCode::from(4)
                }
                Err(err) => device_op_failed(&err),
            }
        }
        Command::Claims {
            state,
            older_than,
            limit,
        } => match service.claims_in_state(state, older_than, limit).await {
            Ok(claims) => {
                let now = service.now();
                for claim in &claims {
                    println!("{}", admin_claim_view(claim, now));
                }
                eprintln!("{} claims", claims.len());
                ExitCode::SUCCESS
            }
            Err(err) => store_failed(&err),
        },
        Command::Funnel { since, json } => {
            let to = service.now();
            let from = to - since;
            match service.claims_started_between(from, to).await {
                Ok(claims) => {
                    print_funnel(&Funnel::of(&claims, to), from, to, json);
                    ExitCode::SUCCESS
                }
                Err(err) => store_failed(&err),
            }
        }
    }
}

async fn switch(service: &Service, raw: &str, disabled: bool, operator: &str, reason: Option<String>) -> ExitCode {
    let thing = match thing(raw) {
        Ok(thing) => thing,
        Err(code) => return code,
    };
    match service.set_disabled(&thing, disabled, operator, reason).await {
        Ok(_) => inspect(service, &thing).await,
        Err(err) => device_op_failed(&err),
    }
}

fn thing(raw: &str) -> Result<ThingName, ExitCode> {
    ThingName::parse(raw).map_err(|err| {
        eprintln!("error: {raw:?} is not a ThingName: {err}");
        ExitCode::from(2)
    })
}

async fn inspect(service: &Service, thing: &ThingName) -> ExitCode {
    inspect_for(service, thing, None).await
}

async fn inspect_for(service: &Service, thing: &ThingName, user: Option<&UserId>) -> ExitCode {
    match service.inspect_for(thing, user).await {
        Ok(inspection) => {
            let view = inspection_view(&inspection);
            println!(
                "{}",
                serde_json::to_string_pretty(&view).unwrap_or_else(|_| view.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(err) => store_failed(&err),
    }
}

fn device_op_failed(err: &DeviceOpError) -> ExitCode {
    match err {
        DeviceOpError::DeviceNotFound => {
            eprintln!("error: no such device");
            ExitCode::from(4)
        }
        DeviceOpError::Busy => {
            eprintln!("error: the device kept changing underneath; nothing was changed, try again");
            ExitCode::from(3)
        }
        DeviceOpError::CodeInUse => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
        DeviceOpError::Control(err) => {
            eprintln!("error: {err}; nothing was recorded, try again");
            ExitCode::from(3)
        }
        DeviceOpError::Store(err) => store_failed(err),
    }
}

fn store_failed(err: &StoreError) -> ExitCode {
    eprintln!("error: the ownership table: {err}; nothing was changed half-way, try again");
    ExitCode::from(3)
}

fn print_funnel(funnel: &Funnel, from: OffsetDateTime, to: OffsetDateTime, json: bool) {
    if json {
        println!("{}", funnel_view(funnel, from, to));
        return;
    }
    let percent = |n: u64| {
        if funnel.started == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}%", n as f64 * 100.0 / funnel.started as f64)
        }
    };
    println!("claims started {} .. {}", timestamp(from), timestamp(to));
    for (label, n) in [
        ("started", funnel.started),
        ("published", funnel.published),
        ("provisioned", funnel.provisioned),
        ("expired", funnel.expired),
        ("released", funnel.released),
        ("failed", funnel.failed),
        ("still open", funnel.open),
    ] {
        println!("  {label:<12} {n:>8}  {:>6}", percent(n));
    }
}

async fn import(
    service: &Service,
    table: &str,
    file: PathBuf,
    report_path: PathBuf,
    operator: String,
    concurrency: u16,
) -> ExitCode {
    let input = match File::open(&file) {
        Ok(input) => BufReader::new(input),
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", file.display());
            return ExitCode::from(2);
        }
    };
    let mut report = match File::create(&report_path)
        .map_err(|err| ImportError::Report(err.to_string()))
        .and_then(Report::new)
    {
        Ok(report) => report,
        Err(err) => {
            eprintln!("error: {}: {err}", report_path.display());
            return ExitCode::from(2);
        }
    };
    eprintln!("importing {} into {table}", file.display());
    // A bar only for a person watching; logs and CI get a line per chunk.
    let progress = if std::io::stderr().is_terminal() {
        // A regular file is read a second time for its total (a pipe could not be read again);
        // without one the bar shows rows and rate.
        let total = std::fs::metadata(&file)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|_| File::open(&file).ok())
            .and_then(|counted| count_rows(BufReader::new(counted), Format::of(&file)).ok());
        Progress::bar(total)
    } else {
        Progress::lines()
    };
    let importer = Importer {
        service,
        operator,
        concurrency: usize::from(concurrency),
        chunk: 500,
    };
    let rows = read_rows(Box::new(input), Format::of(&file));
    progress.start();
    let result = importer.run(rows, &mut report, |s| progress.update(s)).await;
    progress.finish();
    drop(report);
    match result {
        Ok(summary) if summary.failed == 0 => {
            let _ = std::fs::remove_file(&report_path);
            println!(
                "imported {} rows: {} created, {} updated, {} unchanged",
                summary.rows, summary.created, summary.updated, summary.unchanged
            );
            ExitCode::SUCCESS
        }
        Ok(summary) => {
            println!(
                "imported {} rows: {} created, {} updated, {} unchanged; {} failed, listed in {}",
                summary.rows,
                summary.created,
                summary.updated,
                summary.unchanged,
                summary.failed,
                report_path.display()
            );
            ExitCode::from(1)
        }
        Err(err @ ImportError::Store(_)) => {
            eprintln!("error: {err}; the rows before were imported, run the same command again to resume");
            ExitCode::from(3)
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
