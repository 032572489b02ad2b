//! `claimctl` against DynamoDB Local, through the binary as operators run it: a 5,000-row import
//! interrupted half-way and resumed, imported again without changes, a failure report that can be
//! fixed and imported again, the device operations, the funnel's window and the settings claimctl
//! reads from the environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use aws_sdk_dynamodb::types::{AttributeValue, Select};
use claim_shared::{
    domain::{
        funnel::Funnel,
        ids::{ThingName, UserId},
        registry::NewDevice,
    },
    ports::OwnershipStore,
    service::{ClaimOutcome, ClaimRequest, ClaimService, ClaimSettings, Clock, SystemClock},
};
use claim_tests::{
    fixture::{DynamoOwnershipStore, LocalTable},
    ManualClock,
};
use serde_json::Value;

/// A table of the test's own, the use cases on it with the real clock (claimctl runs with it), and
/// a working directory for import files and reports.
struct Fixture {
    table: String,
    client: aws_sdk_dynamodb::Client,
    store: DynamoOwnershipStore,
    service: ClaimService<DynamoOwnershipStore, SystemClock>,
    dir: PathBuf,
}

async fn fixture() -> Fixture {
    let LocalTable { client, name: table } = LocalTable::fresh().await;
    let store = DynamoOwnershipStore::new(client.clone(), table.clone());
    let service = ClaimService::new(store.clone(), SystemClock, ClaimSettings::default());
    let dir = std::env::temp_dir().join(format!("claimctl-{table}"));
    std::fs::create_dir_all(&dir).unwrap();
    Fixture {
        table,
        client,
        store,
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
        failures.starts_with("thing_name,vendor,sku,code,allow_thing_name,line,reason\n"),
        "{failures}"
    );
    assert!(failures.contains("bad/name,acme,X,,,3,\"thing_name:"), "{failures}");
    assert!(failures.contains("imp-00002,,SKU-2,,,4,vendor:"), "{failures}");
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
        code: thing.clone().into(),
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

    // A second user fails on the reserved device; inspecting for them shows their count.
    let bob = ClaimRequest {
        user: UserId::parse("bob").unwrap(),
        ..request.clone()
    };
    assert!(fx.service.claim(&bob).await.is_err());
    let for_bob = fx.run(&["inspect", "ops-1", "--user", "bob"]);
    assert_eq!(for_bob.status.code(), Some(0));
    let for_bob: Value = serde_json::from_slice(&for_bob.stdout).unwrap();
    assert_eq!(for_bob["rate_limit"]["user"], "bob");
    assert_eq!(for_bob["rate_limit"]["failed_attempts_on_device"], 1);
    assert_eq!(for_bob["rate_limit"]["retry_after_seconds"], Value::Null);
    assert!(inspect(&fx)["rate_limit"].is_null());
    assert_eq!(fx.run(&["inspect", "ops-1", "--user", "b o b"]).status.code(), Some(2));

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
        fx.store.claim(&claim.claim_id).await.unwrap().unwrap().state.as_str(),
        "released"
    );

    assert_eq!(
        fx.run(&["release", "unknown-1", "--reason", "x"]).status.code(),
        Some(4)
    );
    std::fs::remove_dir_all(&fx.dir).ok();
}

#[tokio::test]
async fn the_funnel_finds_claims_of_a_past_window_renewed_days_later() {
    let started = time::OffsetDateTime::now_utc();
    let clock = ManualClock::at(started);
    let service = ClaimService::new(
        LocalTable::fresh().await.store(),
        clock.clone(),
        ClaimSettings::default(),
    );
    let device = NewDevice::parse("late-1", "acme", None).unwrap();
    service
        .import(
            &device,
            claim_shared::domain::history::Actor::Operator("factory".into()),
        )
        .await
        .unwrap();
    let alice = UserId::parse("alice").unwrap();
    let request = ClaimRequest {
        user: alice.clone(),
        code: device.thing_name.clone().into(),
        endpoints: std::sync::Arc::new(claim_shared::domain::endpoints::EndpointPlan::single(
            "oem-ats.iot.eu-west-1.amazonaws.com",
        )),
        region_hint: None,
        idempotency_key: None,
    };
    let ClaimOutcome::Created(claim) = service.claim(&request).await.unwrap() else {
        panic!("claim not created")
    };
    // Five days later the user retries the expired claim: its deadline moves 5 days on.
    clock.advance(time::Duration::days(5));
    service.retry(&alice, &claim.claim_id).await.unwrap();

    let hour = time::Duration::hours(1);
    let found = service
        .claims_started_between(started - hour, started + hour)
        .await
        .unwrap();
    let ids: Vec<_> = found.iter().map(|claim| claim.claim_id.clone()).collect();
    assert_eq!(ids, std::slice::from_ref(&claim.claim_id));
    let funnel = Funnel::of(&found, clock.now());
    assert_eq!((funnel.started, funnel.open), (1, 1));
}

#[test]
fn settings_from_the_environment_are_read_and_a_bad_one_stops_with_exit_code_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_claimctl"))
        .args(["--table", "any", "claims", "--state", "pending"])
        .env("CLAIM_DEADLINE_SECONDS", "soon")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CLAIM_DEADLINE_SECONDS must be 10..=86400, got \"soon\""),
        "{stderr}"
    );
}

/// A fixture whose claimctl reads the label code key from moto (`AWS_ENDPOINT_URL`), as operators
/// run it with `--code-key-secret`.
async fn coded_fixture() -> (Fixture, String, claim_shared::domain::label_code::LabelCodeKey) {
    let fx = fixture().await;
    let name = format!("test/label-code-key-{}", fx.table);
    // At least 32 bytes; the table name is unique per test run.
    let secret = format!("key-for-{}", fx.table);
    claim_tests::local_secrets()
        .await
        .create_secret()
        .name(&name)
        .secret_string(&secret)
        .send()
        .await
        .unwrap();
    let key = claim_shared::domain::label_code::LabelCodeKey::new(secret.as_bytes()).unwrap();
    (fx, name, key)
}

#[tokio::test]
async fn label_codes_are_imported_as_keyed_hashes_and_never_written_back() {
    let (fx, secret, key) = coded_fixture().await;
    let code = |n: u32| format!("OEM-CODE/{}-{n}", fx.table);
    std::fs::write(
        fx.dir.join("coded.csv"),
        format!(
            "thing_name,vendor,sku,code,allow_thing_name\n\
             lc-00001,acme,S1,{},\n\
             lc-00002,acme,S1,{},true\n\
             lc-00003,,S1,{},\n\
             lc-00005,acme,S1,,\n",
            code(1),
            code(2),
            code(3),
        ),
    )
    .unwrap();
    // Rows are imported concurrently: the second device with the same code comes in a file of its own.
    std::fs::write(
        fx.dir.join("dup.csv"),
        format!(
            "thing_name,vendor,sku,code,allow_thing_name\nlc-00004,acme,S1,{},\n",
            code(1)
        ),
    )
    .unwrap();
    let import = |file: &str, report: &str| fx.run(&["import", file, "--report", report, "--code-key-secret", &secret]);
    let output = import("coded.csv", "failures.csv");
    let dup = import("dup.csv", "dup-failures.csv");
    let (out, err) = (
        stdout(&output) + &stdout(&dup),
        String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&dup.stderr),
    );
    assert_eq!(output.status.code(), Some(1), "{out}{err}");
    assert_eq!(dup.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("4 rows: 3 created"), "{out}");

    let store = &fx.store;
    let hash = |n: u32| key.hash(&claim_shared::domain::label_code::LabelCode::parse(&code(n)).unwrap());
    let device = |name: &str| {
        let thing = ThingName::parse(name).unwrap();
        async move { store.device(&thing).await.unwrap() }
    };
    assert_eq!(
        store.thing_by_code(&hash(1)).await.unwrap(),
        Some(ThingName::parse("lc-00001").unwrap())
    );
    let one = device("lc-00001").await.unwrap();
    assert_eq!((one.code_hash, one.thing_name_claims), (Some(hash(1)), false));
    let two = device("lc-00002").await.unwrap();
    assert_eq!((two.code_hash, two.thing_name_claims), (Some(hash(2)), true));
    let five = device("lc-00005").await.unwrap();
    assert_eq!((five.code_hash, five.thing_name_claims), (None, true));
    assert_eq!(device("lc-00004").await, None);
    assert_eq!(device("lc-00003").await, None);

    // The reports: lc-00003 (vendor) and lc-00004 (code of another device), codes left out.
    let failures = std::fs::read_to_string(fx.dir.join("failures.csv")).unwrap()
        + &std::fs::read_to_string(fx.dir.join("dup-failures.csv")).unwrap();
    for n in 1..=3 {
        assert!(!failures.contains(&code(n)), "{failures}");
        assert!(!failures.contains(hash(n).as_str()), "{failures}");
        assert!(!out.contains(&code(n)) && !err.contains(&code(n)), "{out}{err}");
    }
    assert!(failures.contains("lc-00003,,S1,,false,4,\"vendor:"), "{failures}");
    assert!(
        failures.contains("lc-00004,acme,S1,,false,2,\"code: already used by another device; code: left out"),
        "{failures}"
    );
    // A code that is another device's ThingName would make claims for that name reach this
    // device: refused the same way, naming neither device.
    std::fs::write(
        fx.dir.join("shadow.csv"),
        "thing_name,vendor,sku,code,allow_thing_name\nlc-00006,acme,S1,lc-00005,\n",
    )
    .unwrap();
    let shadow = import("shadow.csv", "shadow-failures.csv");
    assert_eq!(shadow.status.code(), Some(1), "{}", stdout(&shadow));
    let shadow_report = std::fs::read_to_string(fx.dir.join("shadow-failures.csv")).unwrap();
    assert!(
        shadow_report.contains("lc-00006,acme,S1,,false,2,\"code: already used by another device; code: left out"),
        "{shadow_report}"
    );
    assert_eq!(device("lc-00006").await, None);

    // Imported as it is, without the code put back: refused, so no device loses its code.
    let again = import("dup-failures.csv", "failures-2.csv");
    assert_eq!(again.status.code(), Some(1));
    let second = std::fs::read_to_string(fx.dir.join("failures-2.csv")).unwrap();
    assert!(
        second.contains("lc-00004,acme,S1,,false,2,allow_thing_name: false needs the row's code"),
        "{second}"
    );

    // Importing the same file again changes nothing.
    let again = import("coded.csv", "failures-3.csv");
    assert!(
        stdout(&again).contains("4 rows: 0 created, 0 updated, 3 unchanged"),
        "{}",
        stdout(&again)
    );

    // Inspect shows whether there is a code, never the code or its hash.
    let inspect = fx.run(&["inspect", "lc-00001"]);
    let view: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        (view["has_label_code"].as_bool(), view["thing_name_claims"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(!stdout(&inspect).contains(hash(1).as_str()));

    // Codes without a key: refused row by row, not stored.
    let plain = fx.run(&[
        "import",
        "coded.csv",
        "--report",
        "failures-4.csv",
        "--code-key-secret",
        "",
    ]);
    assert_eq!(plain.status.code(), Some(1));
    let refused = std::fs::read_to_string(fx.dir.join("failures-4.csv")).unwrap();
    assert!(refused.contains("code: label codes are not enabled"), "{refused}");
    std::fs::remove_dir_all(&fx.dir).ok();
}
