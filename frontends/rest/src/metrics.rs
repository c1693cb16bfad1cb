//! `/metrics`: Prometheus metrics in the OpenMetrics text format.
//!
//! Requests are counted and timed as they are answered, by route, database and status.
//! What the engine knows — commits, conflicts, commit groups, queue depth, the open HTTP
//! transactions — is read when the metrics are scraped, for every database open in this
//! process.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;
use strata_engine::Engine;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub database: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabels {
    database: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    engine: Shared,
}

/// The engine's figures as of the last scrape, shared with the registry's collector.
#[derive(Debug, Clone, Default)]
struct Shared(Arc<EngineStats>);

impl std::ops::Deref for Shared {
    type Target = EngineStats;
    fn deref(&self) -> &EngineStats {
        &self.0
    }
}

#[derive(Debug, Default)]
struct EngineStats {
    databases: Mutex<Vec<DatabaseFigures>>,
    open_transactions: Mutex<u64>,
}

#[derive(Debug, Clone)]
struct DatabaseFigures {
    name: String,
    commits: u64,
    conflicts: u64,
    groups: u64,
    resolve_seconds: f64,
    append_seconds: f64,
    linger_seconds: f64,
    waiting: u64,
    queue_depth: u64,
    dead_letters: u64,
    version: u64,
}

fn buckets() -> Histogram {
    // 50 µs to about 13 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 19,
    ))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strata");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, database and status",
            requests.clone(),
        );
        let latency = LatencyFamily::new_with_constructor(buckets);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route and database",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let engine = Shared::default();
        registry.register_collector(Box::new(engine.clone()));
        Metrics {
            registry,
            requests,
            latency,
            engine,
        }
    }

    /// Count and time one answered request.
    pub fn observe(&self, route: &'static str, database: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                database: database.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route,
                database: database.to_string(),
            })
            .observe(seconds);
    }

    /// Read the engine's figures, then encode everything.
    pub async fn render(&self, engine: &Engine, open_transactions: usize) -> String {
        let mut figures = Vec::new();
        for db in engine.open_databases() {
            let stats = db.pipeline_stats();
            let queue_depth = db.queue_len().await.unwrap_or(0) as u64;
            let dead_letters = db.dead_letter_count().await.unwrap_or(0) as u64;
            figures.push(DatabaseFigures {
                name: db.name().to_string(),
                commits: stats.commits,
                conflicts: stats.conflicts,
                groups: stats.groups,
                resolve_seconds: stats.resolve.as_secs_f64(),
                append_seconds: stats.append.as_secs_f64(),
                linger_seconds: stats.linger.as_secs_f64(),
                waiting: stats.waiting,
                queue_depth,
                dead_letters,
                version: db.version(),
            });
        }
        *self
            .engine
            .databases
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = figures;
        *self
            .engine
            .open_transactions
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = open_transactions as u64;
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Request latencies: histograms made with this module's buckets.
type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

impl Collector for Shared {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = self
            .databases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        type Get = fn(&DatabaseFigures) -> u64;
        let counters: [(&str, &str, Get); 3] = [
            (
                "commits",
                "Commit requests the database's pipeline has taken since it opened",
                |f| f.commits,
            ),
            (
                "conflicts",
                "Transactions refused with a retryable conflict since the database opened",
                |f| f.conflicts,
            ),
            (
                "commit_groups",
                "Backend writes (group commits) since the database opened",
                |f| f.groups,
            ),
        ];
        for (name, help, get) in counters {
            per_database(&mut encoder, &figures, name, help, |c: &Counter, f| {
                c.inc_by(get(f));
            })?;
        }
        type Seconds = fn(&DatabaseFigures) -> f64;
        let times: [(&str, &str, Seconds); 3] = [
            (
                "commit_resolve_seconds",
                "Time the pipeline spent resolving commits (conflict checks, key writes)",
                |f| f.resolve_seconds,
            ),
            (
                "commit_append_seconds",
                "Time from handing each group's batch to the log to its being durable, summed",
                |f| f.append_seconds,
            ),
            (
                "commit_linger_seconds",
                "Time commit groups were held back for the commits just answered to come back",
                |f| f.linger_seconds,
            ),
        ];
        for (name, help, get) in times {
            per_database(
                &mut encoder,
                &figures,
                name,
                help,
                |c: &Counter<f64, AtomicU64>, f| {
                    c.inc_by(get(f));
                },
            )?;
        }
        let gauges: [(&str, &str, Get); 4] = [
            (
                "commits_waiting",
                "Commits resolved into the next group, waiting for it to go to the log",
                |f| f.waiting,
            ),
            ("queue_depth", "Queue messages waiting or leased", |f| {
                f.queue_depth
            }),
            (
                "queue_dead_letters",
                "Queue messages given up on after their last delivery attempt",
                |f| f.dead_letters,
            ),
            ("version", "The database's latest commit version", |f| {
                f.version
            }),
        ];
        for (name, help, get) in gauges {
            per_database(&mut encoder, &figures, name, help, |g: &Gauge, f| {
                g.set(i64::try_from(get(f)).unwrap_or(i64::MAX));
            })?;
        }
        let open = Gauge::<i64>::default();
        open.set(
            *self
                .open_transactions
                .lock()
                .unwrap_or_else(|p| p.into_inner()) as i64,
        );
        let m = encoder.encode_descriptor(
            "http_open_transactions",
            "Transactions opened over HTTP and not yet ended",
            None,
            open.metric_type(),
        )?;
        open.encode(m)
    }
}

/// Encode one metric with a value per database, set by `set` from the database's figures.
fn per_database<M>(
    encoder: &mut DescriptorEncoder,
    figures: &[DatabaseFigures],
    name: &str,
    help: &str,
    set: impl Fn(&M, &DatabaseFigures),
) -> Result<(), std::fmt::Error>
where
    M: EncodeMetric + TypedMetric + Default,
{
    let family = Family::<DatabaseLabels, M>::default();
    for f in figures {
        set(
            &family.get_or_create(&DatabaseLabels {
                database: f.name.clone(),
            }),
            f,
        );
    }
    let m = encoder.encode_descriptor(name, help, None, family.metric_type())?;
    family.encode(m)
}
