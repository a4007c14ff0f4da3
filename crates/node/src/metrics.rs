//! A node's `/metrics` in Prometheus text format (0.0.4), served on
//! `node start --metrics-listen ADDR`: work done by kind and outcome, task
//! run time, bytes moved, tasks loaded and the node's stake.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub type Labels = Vec<(&'static str, String)>;

/// Upper bounds (seconds) of the task run-time histogram.
const RUN_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

pub struct NodeMetrics {
    registry: Registry,
    /// Work items finished, by kind (compute, validate, judge) and outcome.
    pub work: Family<Labels, Counter>,
    /// Seconds a task ran in its worker, by kind.
    pub run_seconds: Family<Labels, Histogram>,
    /// Bytes of task inputs read and outputs written.
    pub bytes: Family<Labels, Counter>,
    pub loaded_tasks: Gauge,
    pub loaded_bytes: Gauge,
    pub stake_usdc: Gauge<f64, AtomicU64>,
    pub supported_tasks: Gauge,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("splitup_node");
        let work = Family::<Labels, Counter>::default();
        let run_seconds = Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(RUN_BUCKETS));
        let bytes = Family::<Labels, Counter>::default();
        let loaded_tasks = Gauge::default();
        let loaded_bytes = Gauge::default();
        let stake_usdc = Gauge::<f64, AtomicU64>::default();
        let supported_tasks = Gauge::default();
        registry.register("work", "Work items finished, by kind and outcome", work.clone());
        registry.register("run_seconds", "Seconds a task ran in its worker", run_seconds.clone());
        registry.register(
            "bytes",
            "Bytes of task inputs read (in) and outputs written (out)",
            bytes.clone(),
        );
        registry.register("loaded_tasks", "Tasks warm in workers", loaded_tasks.clone());
        registry.register(
            "loaded_bytes",
            "Declared memory of the warm tasks",
            loaded_bytes.clone(),
        );
        registry.register("stake_usdc", "This node's stake on the ledger", stake_usdc.clone());
        registry.register(
            "supported_tasks",
            "Tasks this node told the ledger it supports",
            supported_tasks.clone(),
        );
        NodeMetrics {
            registry,
            work,
            run_seconds,
            bytes,
            loaded_tasks,
            loaded_bytes,
            stake_usdc,
            supported_tasks,
        }
    }
}

impl NodeMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String does not fail");
        out
    }

    pub fn count(&self, kind: impl ToString, outcome: &str) {
        self.work
            .get_or_create(&vec![("kind", kind.to_string()), ("outcome", outcome.to_string())])
            .inc();
    }

    pub fn moved(&self, direction: &'static str, n: u64) {
        self.bytes
            .get_or_create(&vec![("direction", direction.to_string())])
            .inc_by(n);
    }
}

/// Serves `GET /metrics` on `addr` from a thread of its own; returns the
/// address bound (port 0 picks one).
pub fn serve(addr: SocketAddr, metrics: Arc<NodeMetrics>) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} for metrics"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let m = metrics.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            m.render(),
                        )
                    }
                }),
            );
            let _ = axum::serve(listener, app).await;
        })
    })?;
    Ok(local)
}
