//! `GET /metrics`: the ledger's state in Prometheus text format (0.0.4),
//! computed from the state at each scrape, so it survives restarts and
//! never drifts from what `/v1/*` reports.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use splitup_protocol::state::Ledger;
use splitup_protocol::{ExecStatus, NodeStatus, TaskStatus};
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;

/// Upper bounds (seconds) of the execution latency histogram.
const LATENCY_BUCKETS: [f64; 12] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

fn usdc(micro: u64) -> f64 {
    micro as f64 / 1e6
}

/// The exposition of `l` at the ledger clock `now_ms`.
pub fn render(l: &Ledger, now_ms: u64) -> String {
    let mut r = Registry::with_prefix("splitup");

    let executions = Family::<Labels, Gauge>::default();
    let tasks = Family::<Labels, Gauge>::default();
    let latency = Histogram::new(LATENCY_BUCKETS);
    let (mut challenged, mut disputes_open, mut disputes_decided) = (0u64, 0i64, 0u64);
    for e in l.executions.values() {
        let state = match &e.status {
            ExecStatus::InProgress => "in_progress",
            ExecStatus::Completed => "completed",
            ExecStatus::Failed(_) => "failed",
        };
        executions.get_or_create(&vec![("state", state.to_string())]).inc();
        if let (ExecStatus::Completed, Some(f)) = (&e.status, e.finished_at) {
            latency.observe(f.saturating_sub(e.submitted_at) as f64 / 1000.0);
        }
        for t in &e.tasks {
            challenged += t.challenged as u64;
            disputes_decided += (!t.committee.is_empty() && t.status != TaskStatus::Disputed) as u64;
            if e.status == ExecStatus::InProgress {
                let s = format!("{:?}", t.status).to_lowercase();
                tasks.get_or_create(&vec![("state", s)]).inc();
                disputes_open += (t.status == TaskStatus::Disputed) as i64;
            }
        }
    }
    r.register("executions", "Executions by state", executions);
    r.register(
        "execution_seconds",
        "Time from submission to completion of completed executions",
        latency,
    );
    r.register("tasks", "Tasks of in-progress executions by state", tasks);
    r.register(
        "challenges",
        "Results drawn for validation (Proof of Sampling), over all executions",
        ConstCounter::new(challenged),
    );
    let open: Gauge = Gauge::default();
    open.set(disputes_open);
    r.register("disputes_open", "Disputes awaiting their committee", open);
    r.register(
        "disputes_decided",
        "Disputes a committee decided or that ended at their deadline",
        ConstCounter::new(disputes_decided),
    );

    let nodes = Family::<Labels, Gauge>::default();
    let (mut stake, mut slashed, mut earned) = (0u64, 0u64, 0u64);
    for n in l.nodes.values() {
        let s = match n.status {
            NodeStatus::Active => "active",
            NodeStatus::Unresponsive => "unresponsive",
            NodeStatus::Offline => "offline",
        };
        nodes.get_or_create(&vec![("status", s.to_string())]).inc();
        stake = stake.saturating_add(n.stake);
        slashed = slashed.saturating_add(n.slashed_total);
        earned = earned.saturating_add(n.earned_total);
    }
    r.register("nodes", "Registered nodes by status", nodes);
    let g = |v: f64| {
        let g = FGauge::default();
        g.set(v);
        g
    };
    r.register("stake_usdc", "USDC staked by all nodes", g(usdc(stake)));
    r.register(
        "slashed_usdc",
        "USDC slashed from nodes, all time",
        ConstCounter::new(usdc(slashed)),
    );
    r.register(
        "earned_usdc",
        "USDC paid to nodes, all time",
        ConstCounter::new(usdc(earned)),
    );
    r.register("treasury_usdc", "USDC in the treasury", g(usdc(l.treasury)));
    r.register("supply_usdc", "USDC in existence", g(usdc(l.supply)));
    let models = Family::<Labels, Gauge>::default();
    for m in l.models.values() {
        models.get_or_create(&vec![("active", m.active.to_string())]).inc();
    }
    r.register("models", "Registered models", models);
    r.register(
        "instructions",
        "Instructions accepted",
        ConstCounter::new(l.instructions),
    );
    r.register("clock_seconds", "The ledger's clock", g(now_ms as f64 / 1000.0));

    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String does not fail");
    out
}
