//! A generated 8-layer transformer runs split exactly as it runs whole.

mod common;
use common::*;
use splitup_graph::builder::{transformer, Positions, TransformerConfig};
use splitup_graph::partition::Options;
use splitup_graph::shape::Bindings;

fn bindings(seq: usize) -> Bindings {
    let mut b = Bindings::default();
    b.dims.insert("batch".into(), 2);
    b.dims.insert("seq".into(), seq);
    b
}

#[test]
fn transformer_split_in_at_least_four_tasks_equals_unsplit() {
    let c = TransformerConfig::tiny();
    assert!(c.layers >= 8);
    let g = transformer(&c).unwrap();
    let b = bindings(16);
    let inputs = random_inputs(&g, &b, 7, c.vocab as i64);
    let budget = g.weight_bytes() / 4;
    let r = split_and_compare(&g, &b, &Options::uniform(budget), &inputs);
    assert!(r.manifest.tasks.len() >= 4, "{} tasks", r.manifest.tasks.len());
}

#[test]
fn transformer_with_lm_head_above_budget_splits_vertically_and_equals_unsplit() {
    let c = TransformerConfig {
        positions: Positions::Learned,
        seed: 3,
        ..TransformerConfig::tiny()
    };
    let g = transformer(&c).unwrap();
    let head = g.weights["lm_head"].byte_len();
    let b = bindings(8);
    let inputs = random_inputs(&g, &b, 11, c.vocab as i64);
    let r = split_and_compare(&g, &b, &Options::uniform(head * 2 / 3), &inputs);
    assert!(
        r.manifest.splits.iter().any(|(_, parts)| *parts >= 2),
        "no vertical split: {:?}",
        r.manifest.splits
    );
    // The slices of the head are independent tasks: they ran concurrently.
    assert!(
        r.report.max_concurrency >= 2,
        "max concurrency {}",
        r.report.max_concurrency
    );
}

#[test]
fn heterogeneous_nodes_plan_runs_and_equals_unsplit() {
    let c = TransformerConfig::tiny();
    let g = transformer(&c).unwrap();
    let w = g.weight_bytes();
    let b = bindings(8);
    let inputs = random_inputs(&g, &b, 5, c.vocab as i64);
    let opts = Options {
        capacities: vec![w / 3, w / 2, w / 4, w / 3],
        overhead_pct: 10,
        vertical_split: true,
    };
    let r = split_and_compare(&g, &b, &opts, &inputs);
    assert!(r.manifest.tasks.iter().all(|t| t.node.is_some()));
}
