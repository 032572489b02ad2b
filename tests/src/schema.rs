//! The ownership table as `template.yaml` defines it, turned into `CreateTable` calls for the local
//! stack and the tests. The template is the one definition: nothing here repeats its keys.

use aws_sdk_dynamodb::{
    types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
        ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
    },
    Client,
};
use serde_yaml::Value;

/// Logical id of the table resource in `template.yaml`.
pub const CLAIMS_TABLE_RESOURCE: &str = "ClaimsTable";

pub fn template_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("template.yaml is not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("template.yaml: {0}")]
    Shape(String),
    #[error("DynamoDB: {0}")]
    Dynamo(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub attributes: Vec<AttributeDefinition>,
    pub key_schema: Vec<KeySchemaElement>,
    pub indexes: Vec<GlobalSecondaryIndex>,
    pub ttl_attribute: Option<String>,
    /// The change stream's view (`StreamSpecification.StreamViewType`), if the table has one.
    pub stream_view: Option<String>,
}

impl TableSchema {
    pub fn from_template_file() -> Result<Self, SchemaError> {
        let path = template_path();
        let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_template(&text, CLAIMS_TABLE_RESOURCE)
    }

    pub fn from_template(text: &str, resource: &str) -> Result<Self, SchemaError> {
        let template: Value = serde_yaml::from_str(text)?;
        let table = &template["Resources"][resource];
        if table["Type"].as_str() != Some("AWS::DynamoDB::Table") {
            return Err(SchemaError::Shape(format!("{resource} is not an AWS::DynamoDB::Table")));
        }
        let props = &table["Properties"];
        let attributes = seq(&props["AttributeDefinitions"], "AttributeDefinitions")?
            .iter()
            .map(|attr| {
                let kind = match text_of(&attr["AttributeType"], "AttributeType")? {
                    "S" => ScalarAttributeType::S,
                    "N" => ScalarAttributeType::N,
                    "B" => ScalarAttributeType::B,
                    other => return Err(SchemaError::Shape(format!("attribute type {other}"))),
                };
                AttributeDefinition::builder()
                    .attribute_name(text_of(&attr["AttributeName"], "AttributeName")?)
                    .attribute_type(kind)
                    .build()
                    .map_err(|err| SchemaError::Shape(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key_schema = parse_key_schema(&props["KeySchema"])?;
        let indexes = match &props["GlobalSecondaryIndexes"] {
            Value::Null => Vec::new(),
            value => seq(value, "GlobalSecondaryIndexes")?
                .iter()
                .map(|index| {
                    let projection = match text_of(&index["Projection"]["ProjectionType"], "ProjectionType")? {
                        "ALL" => ProjectionType::All,
                        "KEYS_ONLY" => ProjectionType::KeysOnly,
                        other => return Err(SchemaError::Shape(format!("projection {other} is not supported here"))),
                    };
                    GlobalSecondaryIndex::builder()
                        .index_name(text_of(&index["IndexName"], "IndexName")?)
                        .set_key_schema(Some(parse_key_schema(&index["KeySchema"])?))
                        .projection(Projection::builder().projection_type(projection).build())
                        .build()
                        .map_err(|err| SchemaError::Shape(err.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let ttl = &props["TimeToLiveSpecification"];
        let ttl_attribute = (ttl["Enabled"].as_bool() == Some(true))
            .then(|| text_of(&ttl["AttributeName"], "TimeToLiveSpecification.AttributeName").map(str::to_owned))
            .transpose()?;
        let stream_view = props["StreamSpecification"]["StreamViewType"]
            .as_str()
            .map(str::to_owned);
        Ok(Self {
            attributes,
            key_schema,
            indexes,
            ttl_attribute,
            stream_view,
        })
    }

    fn stream_specification(&self) -> Result<Option<StreamSpecification>, SchemaError> {
        self.stream_view
            .as_deref()
            .map(|view| {
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view))
                    .build()
                    .map_err(|err| SchemaError::Shape(err.to_string()))
            })
            .transpose()
    }

    /// Creates the table under `name` unless it exists. Returns whether it created it.
    pub async fn create(&self, client: &Client, name: &str) -> Result<bool, SchemaError> {
        let created = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(self.attributes.clone()))
            .set_key_schema(Some(self.key_schema.clone()))
            .set_global_secondary_indexes(Some(self.indexes.clone()).filter(|i| !i.is_empty()))
            .set_stream_specification(self.stream_specification()?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|service| service.is_resource_in_use_exception()) =>
            {
                return Ok(false)
            }
            Err(err) => {
                return Err(SchemaError::Dynamo(
                    aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string(),
                ))
            }
        }
        if let Some(attribute) = &self.ttl_attribute {
            let spec = TimeToLiveSpecification::builder()
                .attribute_name(attribute)
                .enabled(true)
                .build()
                .map_err(|err| SchemaError::Shape(err.to_string()))?;
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(spec)
                .send()
                .await
                .map_err(|err| SchemaError::Dynamo(aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string()))?;
        }
        Ok(true)
    }
}

fn seq<'a>(value: &'a Value, what: &str) -> Result<&'a Vec<Value>, SchemaError> {
    value
        .as_sequence()
        .ok_or_else(|| SchemaError::Shape(format!("{what} must be a list")))
}

fn text_of<'a>(value: &'a Value, what: &str) -> Result<&'a str, SchemaError> {
    value
        .as_str()
        .ok_or_else(|| SchemaError::Shape(format!("{what} must be a plain string")))
}

fn parse_key_schema(value: &Value) -> Result<Vec<KeySchemaElement>, SchemaError> {
    seq(value, "KeySchema")?
        .iter()
        .map(|key| {
            let kind = match text_of(&key["KeyType"], "KeyType")? {
                "HASH" => KeyType::Hash,
                "RANGE" => KeyType::Range,
                other => return Err(SchemaError::Shape(format!("key type {other}"))),
            };
            KeySchemaElement::builder()
                .attribute_name(text_of(&key["AttributeName"], "AttributeName")?)
                .key_type(kind)
                .build()
                .map_err(|err| SchemaError::Shape(err.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_defines_the_keys_and_indexes_the_adapter_uses() {
        let schema = TableSchema::from_template_file().expect("template parses");
        let names: Vec<_> = schema.indexes.iter().map(|i| i.index_name()).collect();
        assert_eq!(
            names,
            [
                claim_shared::adapters::dynamodb::BY_USER_INDEX,
                claim_shared::adapters::dynamodb::BY_STATE_INDEX,
                claim_shared::adapters::dynamodb::OUTBOX_INDEX,
            ]
        );
        let keys: Vec<_> = schema.key_schema.iter().map(|k| k.attribute_name()).collect();
        assert_eq!(keys, ["pk", "sk"]);
        assert_eq!(schema.ttl_attribute.as_deref(), Some("ttl"));
    }

    #[test]
    fn a_resource_of_another_type_is_refused() {
        let text = "Resources:\n  ClaimsTable:\n    Type: AWS::S3::Bucket\n";
        assert!(matches!(
            TableSchema::from_template(text, "ClaimsTable"),
            Err(SchemaError::Shape(_))
        ));
    }
}
