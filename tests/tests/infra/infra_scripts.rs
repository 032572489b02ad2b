//! `infra/register-vendor.sh` run as an operator would, with the AWS CLI pointed at moto (Secrets
//! Manager, CloudFormation outputs, AWS IoT CA registration): bad input changes nothing, and the
//! profile it writes is one the functions' own secret adapter accepts.
//! (`enable-registry-events.sh` is not covered: moto does not implement event configurations.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use claim_shared::{
    adapters::secrets::SecretsManagerCredentials,
    domain::publish::{ClaimThingCredentials, PublishTransport},
    ports::CredentialSource,
};
use claim_tests::{local_secrets, pki, LocalStack};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The AWS CLI of the SAM venv (`scripts/dev.sh test` puts its directory in `INFRA_AWS_CLI_DIR`).
fn path_with_aws_cli() -> String {
    let dir = std::env::var("INFRA_AWS_CLI_DIR").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/expresslink-claim/sam-venv/bin")
    });
    assert!(
        Path::new(&dir).join("aws").exists(),
        "no AWS CLI in {dir}: run scripts/dev.sh test, which installs it"
    );
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// The environment that points the AWS CLI at moto, as an operator's shell would point it at AWS.
fn against_moto() -> [(&'static str, String); 5] {
    [
        ("PATH", path_with_aws_cli()),
        ("AWS_ENDPOINT_URL", LocalStack::from_env().moto_url),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ]
}

fn run(script: &str, args: &[&str]) -> Output {
    Command::new(root().join("infra").join(script))
        .args(args)
        .envs(against_moto())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A stack in moto with the outputs the scripts read (a real deploy has them too).
fn stack_with_outputs(prefix: &str) -> String {
    stack_from(&format!(
        "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\nOutputs:\n  ClaimThingSecretPrefix:\n    Value: {prefix}\n  \
         ProvisioningRoleArn:\n    Value: arn:aws:iam::123456789012:role/jitp\n  DevicePolicyName:\n    Value: device-policy\n"
    ))
}

/// A stack in moto made from `template`; its name.
fn stack_from(template: &str) -> String {
    let name = format!("infra-test-{}", uuid::Uuid::new_v4().simple());
    let file = std::env::temp_dir().join(format!("{name}.yaml"));
    std::fs::write(&file, template).unwrap();
    let created = Command::new("aws")
        .args([
            "cloudformation",
            "create-stack",
            "--stack-name",
            &name,
            "--template-body",
        ])
        .arg(format!("file://{}", file.display()))
        .envs(against_moto())
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created));
    name
}

#[tokio::test]
async fn register_vendor_writes_a_profile_the_functions_accept_and_registers_the_ca() {
    let local = LocalStack::from_env();
    let pki = pki::LocalPki::ensure(&local.pki_dir).unwrap();
    pki.client(pki::CLAIM_THING).unwrap();
    let clients = local.pki_dir.join("clients");
    let (cert, key) = (clients.join("claim-thing.pem"), clients.join("claim-thing.key"));
    let prefix = format!("infra-test-{}/", uuid::Uuid::new_v4().simple());
    let stack = stack_with_outputs(&prefix);
    // A vendor CA of its own (AWS IoT refuses the same CA twice).
    let vendor_pki_dir = std::env::temp_dir().join(format!("vendor-ca-{}", uuid::Uuid::new_v4().simple()));
    let vendor_ca = pki::LocalPki::ensure(&vendor_pki_dir).unwrap().dir().join("ca.pem");

    let created = run(
        "register-vendor.sh",
        &[
            "--stack",
            &stack,
            "--vendor",
            "acme",
            "--staging-endpoint",
            "staging.example.com",
            "--client-id",
            "0b7e6f3c-1111-2222-3333-444455556666",
            "--certificate",
            cert.to_str().unwrap(),
            "--private-key",
            key.to_str().unwrap(),
            "--vendor-ca",
            vendor_ca.to_str().unwrap(),
            "--thing-name-field",
            "SerialNumber",
        ],
    );
    let out = text(&created);
    assert!(created.status.success(), "{out}");
    assert!(
        out.contains("created secret") && out.contains("vendor acme: transport mqtt"),
        "{out}"
    );
    assert!(
        out.contains("registered the vendor CA for JITP: certificate id"),
        "{out}"
    );
    assert!(
        !out.contains("PRIVATE KEY") && !out.contains("BEGIN CERTIFICATE"),
        "no key material: {out}"
    );

    let profile = profile_of(&prefix, "acme").await;
    assert_eq!(profile.transport, PublishTransport::Mqtt);
    assert_eq!(profile.client_id, "0b7e6f3c-1111-2222-3333-444455556666");
    assert_eq!(profile.staging_endpoint, "staging.example.com");
    assert_eq!(profile.certificate_pem, std::fs::read_to_string(&cert).unwrap());

    // The JITP template names the thing after the chosen subject field and attaches the policy.
    let ca_id = out
        .rsplit("certificate id ")
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let described = Command::new("aws")
        .args(["iot", "describe-ca-certificate", "--certificate-id", &ca_id])
        .envs(against_moto())
        .output()
        .unwrap();
    let described: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    let body = described["registrationConfig"]["templateBody"]
        .as_str()
        .unwrap_or_default();
    assert!(
        body.contains("AWS::IoT::Certificate::SerialNumber") && body.contains("device-policy"),
        "{described}"
    );

    // Updating the profile (another transport) writes a new version the functions read.
    let updated = run(
        "register-vendor.sh",
        &[
            "--stack",
            &stack,
            "--vendor",
            "acme",
            "--staging-endpoint",
            "staging.example.com",
            "--transport",
            "https",
            "--certificate",
            cert.to_str().unwrap(),
            "--private-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(updated.status.success(), "{}", text(&updated));
    assert!(text(&updated).contains("updated secret"), "{}", text(&updated));
    let profile = profile_of(&prefix, "acme").await;
    assert_eq!((profile.transport, profile.port), (PublishTransport::Https, 8443));
    std::fs::remove_dir_all(&vendor_pki_dir).ok();
}

/// The vendor profile as the functions read it: through their own Secrets Manager adapter.
async fn profile_of(prefix: &str, vendor: &str) -> ClaimThingCredentials {
    SecretsManagerCredentials::new(local_secrets().await, prefix, Duration::from_millis(1))
        .unwrap()
        .claim_thing(vendor)
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_changes() {
    let local = LocalStack::from_env();
    let pki = pki::LocalPki::ensure(&local.pki_dir).unwrap();
    pki.client(pki::CLAIM_THING).unwrap();
    pki.client(pki::OBSERVER).unwrap();
    let clients = local.pki_dir.join("clients");
    let cert = clients.join("claim-thing.pem");
    let other_key = clients.join("observer.key");
    let prefix = format!("infra-test-{}/", uuid::Uuid::new_v4().simple());
    let stack = stack_with_outputs(&prefix);
    let base = [
        "--stack",
        stack.as_str(),
        "--staging-endpoint",
        "staging.example.com",
        "--client-id",
        "uuid-1",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--vendor", "bad vendor"], "--vendor"),
        (vec!["--vendor", "acme", "--transport", "carrier-pigeon"], "--transport"),
        (
            vec!["--vendor", "acme", "--certificate", "/nonexistent.pem"],
            "--certificate",
        ),
        (
            vec![
                "--vendor",
                "acme",
                "--certificate",
                cert.to_str().unwrap(),
                "--private-key",
                other_key.to_str().unwrap(),
            ],
            "does not belong",
        ),
        (vec!["--vendor", "acme", "--bogus"], "unknown argument"),
    ];
    for (extra, expected) in cases {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let output = run("register-vendor.sh", &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        assert!(text(&output).contains(expected), "{args:?}: {}", text(&output));
    }
    // Nothing was written under the stack's prefix.
    let secrets = local_secrets().await;
    let listed = secrets.list_secrets().send().await.unwrap();
    assert!(listed
        .secret_list()
        .iter()
        .all(|s| !s.name().unwrap_or_default().starts_with(&prefix)));

    let help = run("register-vendor.sh", &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help).contains("usage: infra/register-vendor.sh"));
    let import = run("import-devices.sh", &[]);
    assert_eq!(import.status.code(), Some(2), "{}", text(&import));
}

/// `infra/publish-portal.sh` against moto's S3, CloudFront and CloudFormation: the production bundle
/// (no local sign-in) with a config.json from the stack's outputs, cache headers by kind of file, and
/// an invalidation of the two files without a content hash.
#[test]
fn publish_portal_uploads_the_production_bundle_with_the_stacks_settings() {
    let aws = |args: &[&str]| {
        let output = Command::new("aws").args(args).envs(against_moto()).output().unwrap();
        assert!(output.status.success(), "aws {args:?}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let bucket = format!("portal-test-{}", uuid::Uuid::new_v4().simple());
    let distribution_config = r#"{"CallerReference":"BUCKET","Comment":"","Enabled":true,
        "Origins":{"Quantity":1,"Items":[{"Id":"portal","DomainName":"portal.s3.amazonaws.com","S3OriginConfig":{"OriginAccessIdentity":""}}]},
        "DefaultCacheBehavior":{"TargetOriginId":"portal","ViewerProtocolPolicy":"redirect-to-https","MinTTL":0,
          "ForwardedValues":{"QueryString":false,"Cookies":{"Forward":"none"}},"TrustedSigners":{"Enabled":false,"Quantity":0}}}"#;
    let distribution = aws(&[
        "cloudfront",
        "create-distribution",
        "--distribution-config",
        &distribution_config.replace("BUCKET", &bucket),
        "--query",
        "Distribution.Id",
        "--output",
        "text",
    ]);
    let stack = stack_from(&format!(
        "Resources:\n  PortalBucket:\n    Type: AWS::S3::Bucket\n    Properties:\n      BucketName: {bucket}\nOutputs:\n  \
         ApiUrl:\n    Value: https://abc123.execute-api.us-east-1.amazonaws.com/api\n  PortalBucketName:\n    Value: {bucket}\n  \
         PortalDistributionId:\n    Value: {distribution}\n  UserPoolHostedUiUrl:\n    Value: https://claim-x.auth.us-east-1.amazoncognito.com\n  \
         UserPoolAppClientId:\n    Value: client123\n  PortalUrl:\n    Value: https://d111.cloudfront.net\n"
    ));

    let bad = run("publish-portal.sh", &["--stack", &stack, "--regions", "[{\"id\": 1}]"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let published = run(
        "publish-portal.sh",
        &[
            "--stack",
            &stack,
            "--oem-name",
            "Acme \"Home\"",
            "--regions",
            r#"[{"id":"eu-west-1","label":"Europe"}]"#,
        ],
    );
    let out = text(&published);
    assert!(published.status.success(), "{out}");
    assert!(out.contains("published: https://d111.cloudfront.net"), "{out}");

    let keys = aws(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        &bucket,
        "--query",
        "Contents[].Key",
        "--output",
        "text",
    ]);
    let keys: Vec<&str> = keys.split_whitespace().collect();
    let script = keys
        .iter()
        .find(|k| k.starts_with("app-") && k.ends_with(".js"))
        .expect("the script");
    assert!(
        keys.contains(&"index.html") && keys.contains(&"config.json"),
        "{keys:?}"
    );
    let head = |key: &str, field: &str| {
        aws(&[
            "s3api",
            "head-object",
            "--bucket",
            &bucket,
            "--key",
            key,
            "--query",
            field,
            "--output",
            "text",
        ])
    };
    assert_eq!(head(script, "CacheControl"), "public, max-age=31536000, immutable");
    assert_eq!(head("index.html", "CacheControl"), "no-cache");
    assert_eq!(head("config.json", "ContentType"), "application/json");
    let wasm = keys.iter().find(|k| k.ends_with(".wasm")).expect("the QR decoder");
    assert_eq!(head(wasm, "ContentType"), "application/wasm");

    let fetched = std::env::temp_dir().join(format!("{bucket}-{script}"));
    aws(&[
        "s3",
        "cp",
        &format!("s3://{bucket}/{script}"),
        fetched.to_str().unwrap(),
    ]);
    let bundle = std::fs::read_to_string(&fetched).unwrap();
    assert!(
        !bundle.contains("x-local-user"),
        "the production bundle, without the local sign-in"
    );
    let config_file = std::env::temp_dir().join(format!("{bucket}-config.json"));
    aws(&[
        "s3",
        "cp",
        &format!("s3://{bucket}/config.json"),
        config_file.to_str().unwrap(),
    ]);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_file).unwrap()).unwrap();
    assert_eq!(
        config,
        serde_json::json!({
            "apiUrl": "https://abc123.execute-api.us-east-1.amazonaws.com/api",
            "oemName": "Acme \"Home\"",
            "auth": {"kind": "cognito", "domain": "https://claim-x.auth.us-east-1.amazoncognito.com",
                     "clientId": "client123", "scopes": "openid email"},
            "regions": [{"id": "eu-west-1", "label": "Europe"}],
        })
    );
    let invalidations = aws(&[
        "cloudfront",
        "list-invalidations",
        "--distribution-id",
        &distribution,
        "--query",
        "length(InvalidationList.Items)",
    ]);
    assert_eq!(invalidations, "1");
}
