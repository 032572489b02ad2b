//! `claimctl` against DynamoDB Local, through the binary as operators run it: a 5,000-row import
//! interrupted half-way and resumed, imported again without changes, a failure report that can be
//! fixed and imported again, and the device operations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use aws_sdk_dynamodb::types::{AttributeValue, Select};
use claim_shared::{
    adapters::dynamodb::DynamoOwnershipStore,
    domain::ids::{ThingName, UserId},
    ports::OwnershipStore,
    service::{ClaimOutcome, ClaimRequest, ClaimService, ClaimSettings, NewDevice, SystemClock},
};
use claim_tests::{fresh_table, local_dynamodb};
use serde_json::Value;

struct Fixture {
    table: String,
    client: aws_sdk_dynamodb::Client,
    service: ClaimService<DynamoOwnershipStore, SystemClock>,
    dir: PathBuf,
}

async fn fixture() -> Fixture {
    let client = local_dynamodb().await;
    let table = fresh_table(&client).await;
    let service = ClaimService::new(
        DynamoOwnershipStore::new(client.clone(), table.clone()),
        SystemClock,
        ClaimSettings::default(),
    );
    let dir = std::env::temp_dir().join(format!("claimctl-{table}"));
    std::fs::create_dir_all(&dir).unwrap();
    Fixture {
        table,
        client,
        service,
        dir,
    }
}

impl Fixture {
    fn claimctl(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_claimctl"));
        command
            .args(["--table", &self.table, "--operator", "ops@example.com"])
            .current_dir(&self.dir);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.claimctl().args(args).output().unwrap()
    }

    /// Items of one kind in the table (`#DEVICE` records, or `HISTORY#` entries).
    async fn count(&self, sort_key_prefix: &str) -> i32 {
        let mut total = 0;
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", AttributeValue::S(sort_key_prefix.into()))
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            total += page.count();
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return total;
            }
        }
    }
}

fn write_csv(path: &Path, rows: std::ops::Range<u32>) {
    let mut text = String::from("thing_name,vendor,sku\n");
    for i in rows {
        text.push_str(&format!("imp-{i:05},acme,SKU-{}\n", i % 3));
    }
    std::fs::write(path, text).unwrap();
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn five_thousand_rows_interrupted_half_way_resume_without_duplicates_or_gaps() {
    let fx = fixture().await;
    let file = fx.dir.join("devices.csv");
    write_csv(&file, 0..5000);

    // Interrupt the first run once it has reported progress (at least one chunk of 500 is in).
    let mut first = fx
        .claimctl()
        .args(["import", "devices.csv", "--concurrency", "8"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut progress = BufReader::new(first.stderr.take().unwrap()).lines();
    let reported = progress
        .find(|line| line.as_ref().is_ok_and(|l| l.contains(" rows: ")))
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    let imported_before = fx.count("#DEVICE").await;
    assert!(
        (500..5000).contains(&imported_before),
        "interrupted half-way: {imported_before} ({reported:?})"
    );

    let resumed = fx.run(&["import", "devices.csv"]);
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let out = stdout(&resumed);
    assert!(out.starts_with("imported 5000 rows:"), "{out}");
    assert_eq!(fx.count("#DEVICE").await, 5000, "no gaps");
    assert_eq!(
        fx.count("HISTORY#").await,
        5000,
        "no duplicates: one import entry per device"
    );

    let again = fx.run(&["import", "devices.csv"]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        stdout(&again).trim(),
        "imported 5000 rows: 0 created, 0 updated, 5000 unchanged"
    );
    assert_eq!(fx.count("HISTORY#").await, 5000, "importing again changes nothing");
    std::fs::remove_dir_all(&fx.dir).ok();
}

#[tokio::test]
async fn bad_rows_go_to_a_report_that_imports_once_fixed() {
    let fx = fixture().await;
    std::fs::write(
        fx.dir.join("devices.csv"),
        "thing_name,vendor,sku\nimp-00001,acme,SKU-1\nbad/name,acme,X\nimp-00002,,SKU-2\nimp-00003,acme,SKU-0\n",
    )
    .unwrap();
    let output = fx.run(&["import", "devices.csv", "--report", "failures.csv"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains("4 rows: 2 created"), "{}", stdout(&output));
    let failures = std::fs::read_to_string(fx.dir.join("failures.csv")).unwrap();
    assert!(
        failures.starts_with("thing_name,vendor,sku,line,reason\n"),
        "{failures}"
    );
    assert!(failures.contains("bad/name,acme,X,3,\"thing_name:"), "{failures}");
    assert!(failures.contains("imp-00002,,SKU-2,4,vendor:"), "{failures}");
    assert_eq!(fx.count("#DEVICE").await, 2);

    // The operator fixes the report in place and imports it as it is.
    let fixed = failures
        .replace("bad/name,acme,X", "imp-00004,acme,SKU-1")
        .replace("imp-00002,,", "imp-00002,acme,");
    std::fs::write(fx.dir.join("failures.csv"), fixed).unwrap();
    let output = fx.run(&["import", "failures.csv", "--report", "failures-2.csv"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!fx.dir.join("failures-2.csv").exists(), "a clean run leaves no report");
    assert_eq!(fx.count("#DEVICE").await, 4);

    assert_eq!(fx.run(&["import", "missing.csv"]).status.code(), Some(2));
    assert_eq!(fx.run(&["inspect", "no/such"]).status.code(), Some(2));
    std::fs::remove_dir_all(&fx.dir).ok();
}

#[tokio::test]
async fn operators_inspect_disable_release_and_list_claims() {
    let fx = fixture().await;
    let thing = ThingName::parse("ops-1").unwrap();
    let device = NewDevice::parse("ops-1", "acme", None).unwrap();
    fx.service
        .import(
            &device,
            claim_shared::domain::history::Actor::Operator("factory".into()),
        )
        .await
        .unwrap();
    let inspect = |fx: &Fixture| -> Value {
        let output = fx.run(&["inspect", "ops-1"]);
        assert_eq!(output.status.code(), Some(0));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    assert_eq!(inspect(&fx)["claimable"]["reason"], "claimable");
    assert_eq!(
        fx.run(&["disable", "ops-1", "--reason", "recall"]).status.code(),
        Some(0)
    );
    assert_eq!(inspect(&fx)["claimable"]["reason"], "disabled");
    assert_eq!(fx.run(&["enable", "ops-1"]).status.code(), Some(0));

    let request = ClaimRequest {
        user: UserId::parse("alice").unwrap(),
        thing_name: thing.clone(),
        endpoints: std::sync::Arc::new(claim_shared::domain::endpoints::EndpointPlan::single(
            "oem-ats.iot.eu-west-1.amazonaws.com",
        )),
        region_hint: None,
        idempotency_key: None,
    };
    let ClaimOutcome::Created(claim) = fx.service.claim(&request).await.unwrap() else {
        panic!("claim not created")
    };
    assert_eq!(inspect(&fx)["claimable"]["reason"], "reserved");

    let listed = fx.run(&["claims", "--state", "pending"]);
    let lines: Vec<Value> = stdout(&listed)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["claim_id"], claim.claim_id.as_str());
    assert_eq!(lines[0]["user"], "alice");
    assert!(stdout(&fx.run(&["claims", "--state", "pending", "--older-than", "1h"])).is_empty());
    assert_eq!(fx.run(&["claims", "--state", "nonsense"]).status.code(), Some(2));

    let funnel: Value = serde_json::from_slice(&fx.run(&["funnel", "--since", "1h", "--json"]).stdout).unwrap();
    assert_eq!(
        (funnel["started"].as_u64(), funnel["open"].as_u64()),
        (Some(1), Some(1))
    );

    assert_eq!(fx.run(&["release", "ops-1", "--reason", " "]).status.code(), Some(2));
    let released = fx.run(&["release", "ops-1", "--reason", "support ticket 12"]);
    assert_eq!(released.status.code(), Some(0));
    let record: Value = serde_json::from_slice(&released.stdout).unwrap();
    assert_eq!(record["claimable"]["reason"], "claimable");
    let last = record["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "released");
    assert_eq!(last["actor"]["id"], "ops@example.com");
    assert_eq!(last["reason"], "support ticket 12");
    let funnel: Value = serde_json::from_slice(&fx.run(&["funnel", "--since", "1h", "--json"]).stdout).unwrap();
    assert_eq!(funnel["released"].as_u64(), Some(1));
    assert_eq!(
        fx.service
            .store()
            .claim(&claim.claim_id)
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "released"
    );

    assert_eq!(
        fx.run(&["release", "unknown-1", "--reason", "x"]).status.code(),
        Some(4)
    );
    std::fs::remove_dir_all(&fx.dir).ok();
}
