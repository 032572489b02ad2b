//! `claimctl`: operator command line of the ExpressLink claim backend. Works against AWS (default
//! credential chain and region) and against the local stack (`source .local/endpoints.env`).
//!
//! Exit codes: 0 done; 1 done, but some rows failed (see the report); 2 bad arguments or input file;
//! 3 the ownership table is unavailable (rows done so far stay done; run again to resume).

use std::{fs::File, io::BufReader, path::PathBuf, process::ExitCode};

use claim_shared::{
    adapters::dynamodb::DynamoOwnershipStore,
    service::{ClaimService, ClaimSettings, SystemClock},
};
use claimctl::import::{read_rows, Format, ImportError, Importer, Report};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "claimctl", version, about = "Operate the ExpressLink claim backend")]
struct Cli {
    /// The ownership table (stack output ClaimsTableName).
    #[arg(long, env = "CLAIMS_TABLE", global = true)]
    table: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import device records (what the factory made): adds devices, updates vendor and SKU, never
    /// touches ownership. Safe to run again; an interrupted import resumes by running it again.
    Import {
        /// CSV with a header naming thing_name, vendor, sku (other columns ignored), or JSON Lines
        /// (.jsonl / .ndjson) with those fields.
        file: PathBuf,
        /// Where rows that could not be imported go (CSV; fix it and import it as it is).
        #[arg(long, default_value = "import-failures.csv")]
        report: PathBuf,
        /// Who is importing, recorded in each device's history.
        #[arg(long, env = "CLAIMCTL_OPERATOR", default_value = "claimctl")]
        operator: String,
        /// Devices imported at the same time.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(table) = cli.table.filter(|table| !table.is_empty()) else {
        eprintln!("error: no table: pass --table or set CLAIMS_TABLE (stack output ClaimsTableName)");
        return ExitCode::from(2);
    };
    let aws = aws_config::load_from_env().await;
    let service = ClaimService::new(
        DynamoOwnershipStore::new(aws_sdk_dynamodb::Client::new(&aws), table.clone()),
        SystemClock,
        ClaimSettings::default(),
    );
    match cli.command {
        Command::Import {
            file,
            report,
            operator,
            concurrency,
        } => import(&service, &table, file, report, operator, concurrency).await,
    }
}

async fn import(
    service: &ClaimService<DynamoOwnershipStore, SystemClock>,
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
    let importer = Importer {
        service,
        operator,
        concurrency: usize::from(concurrency),
        chunk: 500,
    };
    let rows = read_rows(Box::new(input), Format::of(&file));
    let result = importer
        .run(rows, &mut report, |s| {
            eprintln!(
                "  {} rows: {} created, {} updated, {} unchanged, {} failed",
                s.rows, s.created, s.updated, s.unchanged, s.failed
            );
        })
        .await;
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
