//! # strata-backend-dynamodb
//!
//! The engine on a DynamoDB table: one table holds many databases; keys of any engine length
//! keep their byte order; a batch of any size commits atomically; several processes may
//! commit to one database at once.
//!
//! | partition `p` (S) | sort key `s` (B) | what |
//! | --- | --- | --- |
//! | `#databases` | database name | the registry (`list`, `drop`) |
//! | `d#<database>` | engine key (see [`keys`]) | data: `c` content; `t`/`n` a provisional write |
//! | `x#<database>` | transaction id (`#n`: its item lists) | batches too large for one transaction |
//!
//! Invariants: every item write is conditional (no foreign provisional write, buckets as
//! read, the version record as the engine expects), so no update is lost between processes;
//! and a reader never returns the new content of a batch that has not passed its commit
//! point (see [`store`]). Start with [`DynamoBackend::connect`].

pub mod keys;
mod metrics;

/// Fault injection for crash tests: when set, a process exits abruptly half-way through
/// staging a large commit (after its first chunk), as if it had crashed there.
#[doc(hidden)]
pub static EXIT_DURING_LARGE_COMMIT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use aws_sdk_dynamodb::Client;
use strata_engine::{Backend, BackendError, Capabilities, Store};

pub use aws_sdk_dynamodb;
pub use metrics::RequestCounts;
use store::{sdk_err, DynamoStore};

/// Where and how to reach the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamoConfig {
    pub table: String,
    /// A DynamoDB-compatible endpoint (an emulator); `None`: AWS itself.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Create the table (on-demand billing) when it does not exist.
    pub create_table: bool,
}

impl DynamoConfig {
    /// Parse the part of a store URL after `dynamodb:` — `<table>?endpoint=<url>&region=<r>`.
    pub fn parse(rest: &str) -> Result<Self, String> {
        let (table, query) = rest.split_once('?').unwrap_or((rest, ""));
        if table.is_empty() {
            return Err("a dynamodb store URL needs a table name: dynamodb:<table>?endpoint=<url>&region=<r>".into());
        }
        if !(3..=255).contains(&table.len())
            || !table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(format!("invalid DynamoDB table name {table:?}: 3-255 characters of letters, digits, '_', '-', '.'"));
        }
        let mut c = DynamoConfig {
            table: table.to_string(),
            ..Default::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "endpoint" => c.endpoint = Some(v.to_string()),
                "region" => c.region = Some(v.to_string()),
                "create_table" => c.create_table = v != "false",
                other => return Err(format!("unknown dynamodb store option {other:?} (known: endpoint, region, create_table)")),
            }
        }
        Ok(c)
    }
}

pub(crate) struct Table {
    pub client: Client,
    pub name: String,
}

/// Many databases in one DynamoDB table.
pub struct DynamoBackend {
    table: Arc<Table>,
    counts: RequestCounts,
    endpoint: Option<String>,
}

const REGISTRY: &str = "#databases";

impl DynamoBackend {
    /// Connect with the normal AWS credential chain (environment, profile, instance role),
    /// then check — or create, if asked — the table.
    pub async fn connect(config: DynamoConfig) -> Result<Self, BackendError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        if let Some(r) = &config.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &config.endpoint {
            loader = loader.endpoint_url(e);
        }
        let shared = loader.load().await;
        let counts = RequestCounts::default();
        let sdk_config = aws_sdk_dynamodb::config::Builder::from(&shared)
            .retry_config(
                aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(6),
            )
            .timeout_config(
                aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            )
            .interceptor(counts.interceptor())
            .build();
        let client = Client::from_conf(sdk_config);
        let backend = DynamoBackend {
            table: Arc::new(Table {
                client,
                name: config.table.clone(),
            }),
            counts,
            endpoint: config.endpoint.clone(),
        };
        backend.ensure_table(config.create_table).await?;
        Ok(backend)
    }

    /// The SDK client (for operations on the table that Strata does not make itself).
    pub fn client(&self) -> &Client {
        &self.table.client
    }

    /// Requests sent so far, by operation.
    pub fn request_counts(&self) -> &RequestCounts {
        &self.counts
    }

    async fn ensure_table(&self, create: bool) -> Result<(), BackendError> {
        let t = &self.table;
        match t.client.describe_table().table_name(&t.name).send().await {
            Ok(out) => {
                let desc = out
                    .table
                    .ok_or_else(|| BackendError::Other("DescribeTable returned no table".into()))?;
                let keys: Vec<(String, KeyType)> = desc
                    .key_schema()
                    .iter()
                    .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
                    .collect();
                let types: HashMap<String, ScalarAttributeType> = desc
                    .attribute_definitions()
                    .iter()
                    .map(|a| (a.attribute_name().to_string(), a.attribute_type().clone()))
                    .collect();
                let want = [
                    ("p".to_string(), KeyType::Hash),
                    ("s".to_string(), KeyType::Range),
                ];
                if keys != want
                    || types.get("p") != Some(&ScalarAttributeType::S)
                    || types.get("s") != Some(&ScalarAttributeType::B)
                {
                    return Err(BackendError::Other(format!(
                        "table {} has the wrong key schema {keys:?}: Strata needs partition key `p` (string) and sort key `s` (binary)",
                        t.name
                    )));
                }
                Ok(())
            }
            Err(e) => {
                let missing = matches!(
                    e.as_service_error(),
                    Some(aws_sdk_dynamodb::operation::describe_table::DescribeTableError::ResourceNotFoundException(_))
                );
                if !missing {
                    return Err(sdk_err(e));
                }
                if !create {
                    return Err(BackendError::Other(format!(
                        "table {} does not exist; create it with `--create-table` (or create_table=true in the store URL)",
                        t.name
                    )));
                }
                self.create_table().await
            }
        }
    }

    async fn create_table(&self) -> Result<(), BackendError> {
        let t = &self.table;
        let build = |e: aws_sdk_dynamodb::error::BuildError| BackendError::Other(e.to_string());
        let r = t
            .client
            .create_table()
            .table_name(&t.name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("p")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("s")
                    .key_type(KeyType::Range)
                    .build()
                    .map_err(build)?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("p")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("s")
                    .attribute_type(ScalarAttributeType::B)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await;
        if let Err(e) = r {
            let in_use = matches!(
                e.as_service_error(),
                Some(aws_sdk_dynamodb::operation::create_table::CreateTableError::ResourceInUseException(_))
            );
            if !in_use {
                return Err(sdk_err(e));
            }
        }
        for _ in 0..120 {
            let out = t
                .client
                .describe_table()
                .table_name(&t.name)
                .send()
                .await
                .map_err(sdk_err)?;
            if out.table.and_then(|d| d.table_status) == Some(TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(BackendError::Unavailable(format!(
            "table {} did not become active",
            t.name
        )))
    }

    fn store(&self, name: &str) -> DynamoStore {
        DynamoStore {
            table: self.table.clone(),
            pk: format!("d#{name}"),
            xk: format!("x#{name}"),
        }
    }

    /// Whether `name` is in the registry.
    async fn registered(&self, name: &str) -> Result<bool, BackendError> {
        let t = &self.table;
        let out = t
            .client
            .get_item()
            .table_name(&t.name)
            .set_key(Some(self.registry_key(name)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(out.item.is_some())
    }

    /// The keys (`p`, `s`) of every item in partition `pk`, page by page.
    async fn partition_keys(
        &self,
        pk: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, BackendError> {
        let t = &self.table;
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let page = t
                .client
                .query()
                .table_name(&t.name)
                .consistent_read(true)
                .key_condition_expression("p = :p")
                .expression_attribute_values(":p", AttributeValue::S(pk.to_string()))
                .projection_expression("p, s")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_err)?;
            keys.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(keys),
            }
        }
    }

    fn registry_key(&self, name: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("p".to_string(), AttributeValue::S(REGISTRY.into())),
            (
                "s".to_string(),
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(
                    name.as_bytes().to_vec(),
                )),
            ),
        ])
    }
}

#[async_trait::async_trait]
impl Backend for DynamoBackend {
    fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("dynamodb:{}?endpoint={e}", self.table.name),
            None => format!("dynamodb:{}", self.table.name),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            multi_process: true,
            persistent: true,
        }
    }

    async fn open(&self, name: &str, create: bool) -> Result<Arc<dyn Store>, BackendError> {
        let t = &self.table;
        if !self.registered(name).await? {
            if !create {
                return Err(BackendError::NotFound);
            }
            t.client
                .put_item()
                .table_name(&t.name)
                .set_item(Some(self.registry_key(name)))
                .send()
                .await
                .map_err(sdk_err)?;
        }
        Ok(Arc::new(self.store(name)))
    }

    async fn list(&self) -> Result<Vec<String>, BackendError> {
        let mut names: Vec<String> = self
            .partition_keys(REGISTRY)
            .await?
            .iter()
            .filter_map(|item| match item.get("s") {
                Some(AttributeValue::B(b)) => {
                    Some(String::from_utf8_lossy(b.as_ref()).into_owned())
                }
                _ => None,
            })
            .collect();
        names.sort();
        Ok(names)
    }

    async fn drop_database(&self, name: &str) -> Result<bool, BackendError> {
        let t = &self.table;
        let existed = self.registered(name).await?;
        // Unregister first: from then on the database does not exist, whatever remains.
        t.client
            .delete_item()
            .table_name(&t.name)
            .set_key(Some(self.registry_key(name)))
            .send()
            .await
            .map_err(sdk_err)?;
        for pk in [format!("d#{name}"), format!("x#{name}")] {
            for key in self.partition_keys(&pk).await? {
                t.client
                    .delete_item()
                    .table_name(&t.name)
                    .set_key(Some(key))
                    .send()
                    .await
                    .map_err(sdk_err)?;
            }
        }
        Ok(existed)
    }
}
