//! Creates the ownership table in the local DynamoDB engine from `template.yaml`, if it is not there
//! yet. Used by `scripts/dev.sh up`; the table name comes from `CLAIMS_TABLE`.

use claim_tests::{local_dynamodb, schema::TableSchema};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let table = std::env::var("CLAIMS_TABLE").unwrap_or_else(|_| "expresslink-claims".to_owned());
    let client = local_dynamodb().await;
    let result = match TableSchema::from_template_file() {
        Ok(schema) => schema.create(&client, &table).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(true) => println!("created table {table}"),
        Ok(false) => println!("table {table} already exists"),
        Err(err) => {
            eprintln!("error: cannot create table {table}: {err}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
