//! `claimctl import` against DynamoDB Local: idempotent re-import, resume after an interruption,
//! and a failure report that can be fixed and imported again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use claim_shared::{
    adapters::dynamodb::DynamoOwnershipStore,
    domain::ids::ThingName,
    ports::OwnershipStore,
    service::{ClaimService, ClaimSettings, SystemClock},
};
use claim_tests::{fresh_table, local_dynamodb};
use claimctl::import::{read_rows, Format, Importer, Report, Summary};

fn csv_of(rows: std::ops::Range<u32>) -> String {
    let mut text = String::from("thing_name,vendor,sku\n");
    for i in rows {
        text.push_str(&format!("imp-{i:05},acme,SKU-{}\n", i % 3));
    }
    text
}

async fn import_text(service: &ClaimService<DynamoOwnershipStore, SystemClock>, text: &str) -> (Summary, String) {
    let mut out = Vec::new();
    let summary = {
        let mut report = Report::new(&mut out).unwrap();
        let importer = Importer {
            service,
            operator: "test-operator".into(),
            concurrency: 16,
            chunk: 200,
        };
        let rows = read_rows(Box::new(std::io::Cursor::new(text.to_owned())), Format::Csv);
        importer.run(rows, &mut report, |_| {}).await.unwrap()
    };
    (summary, String::from_utf8(out).unwrap())
}

async fn service() -> (ClaimService<DynamoOwnershipStore, SystemClock>, String) {
    let client = local_dynamodb().await;
    let table = fresh_table(&client).await;
    let store = DynamoOwnershipStore::new(client, table.clone());
    (ClaimService::new(store, SystemClock, ClaimSettings::default()), table)
}

/// Every device exists once with exactly one history entry (its import).
async fn assert_imported_once(service: &ClaimService<DynamoOwnershipStore, SystemClock>, rows: std::ops::Range<u32>) {
    for i in rows {
        let thing = ThingName::parse(&format!("imp-{i:05}")).unwrap();
        let device = service.store().device(&thing).await.unwrap().expect("imported");
        assert_eq!(device.vendor, "acme");
        assert_eq!(device.sku.as_deref(), Some(format!("SKU-{}", i % 3).as_str()));
        assert_eq!(service.store().history(&thing).await.unwrap().len(), 1, "{thing}");
    }
}

#[tokio::test]
async fn importing_the_same_file_again_changes_nothing() {
    let (service, _) = service().await;
    let text = csv_of(0..600);
    let (first, report) = import_text(&service, &text).await;
    assert_eq!((first.rows, first.created, first.failed), (600, 600, 0), "{report}");
    let (second, _) = import_text(&service, &text).await;
    assert_eq!(
        (second.rows, second.created, second.updated, second.unchanged),
        (600, 0, 0, 600)
    );
    assert_imported_once(&service, 0..600).await;
}

#[tokio::test]
async fn an_interrupted_import_resumes_by_running_it_again() {
    let (service, _) = service().await;
    // The first run stopped after 250 of 600 rows (as if killed); the second run gets the whole file.
    let (partial, _) = import_text(&service, &csv_of(0..250)).await;
    assert_eq!(partial.created, 250);
    let (resumed, _) = import_text(&service, &csv_of(0..600)).await;
    assert_eq!((resumed.created, resumed.unchanged, resumed.failed), (350, 250, 0));
    assert_imported_once(&service, 0..600).await;
}

#[tokio::test]
async fn the_cli_imports_good_rows_and_reports_bad_ones_which_import_once_fixed() {
    let (service, table) = service().await;
    let dir = std::env::temp_dir().join(format!("claimctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join(format!("{table}.csv"));
    let report = dir.join(format!("{table}-failures.csv"));
    std::fs::write(
        &input,
        "thing_name,vendor,sku\nimp-00001,acme,SKU-1\nbad/name,acme,X\nimp-00002,,SKU-2\nimp-00003,acme,SKU-0\n",
    )
    .unwrap();
    let run = |file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_claimctl"))
            .args(["--table", &table, "import"])
            .arg(file)
            .arg("--report")
            .arg(&report)
            .output()
            .unwrap()
    };
    let output = run(&input);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("4 rows: 2 created"), "{stdout}");
    let failures = std::fs::read_to_string(&report).unwrap();
    assert!(
        failures.starts_with("thing_name,vendor,sku,line,reason\n"),
        "{failures}"
    );
    assert!(failures.contains("bad/name,acme,X,3,\"thing_name:"), "{failures}");
    assert!(failures.contains("imp-00002,,SKU-2,4,vendor:"), "{failures}");
    assert_imported_once(&service, 1..2).await;
    assert_imported_once(&service, 3..4).await;

    // Fix the report in place (as an operator would) and import it as it is.
    let fixed = failures
        .replace("bad/name,acme,X", "imp-00004,acme,SKU-1")
        .replace("imp-00002,,", "imp-00002,acme,");
    let fixed_path = dir.join(format!("{table}-fixed.csv"));
    std::fs::write(&fixed_path, fixed).unwrap();
    let output = run(&fixed_path);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!report.exists(), "a clean run leaves no failure report");
    assert_imported_once(&service, 1..5).await;

    // Bad arguments are usage errors, not partial imports.
    let missing = Command::new(env!("CARGO_BIN_EXE_claimctl"))
        .args(["--table", &table, "import", "/nonexistent/devices.csv"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}
