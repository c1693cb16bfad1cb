//! Counting DynamoDB requests by operation, with an SDK interceptor: every HTTP request the
//! client sends (retries included) is counted just before it goes out. Cost is part of
//! performance: `docs/benchmarks.md` reports requests per engine operation from these counts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

#[derive(Debug, Clone, Default)]
pub struct RequestCounts {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounts {
    pub(crate) fn interceptor(&self) -> CountRequests {
        CountRequests {
            counts: self.counts.clone(),
        }
    }

    /// Requests per operation name (`GetItem`, `TransactWriteItems`, ...).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

#[derive(Debug)]
pub(crate) struct CountRequests {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "strata-request-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_else(|| "unknown".into());
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default() += 1;
        Ok(())
    }
}
