//! Partitioner properties on generated transformers (no runtime needed).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use splitup_graph::builder::{transformer, Positions, TransformerConfig};
use splitup_graph::partition::{activation_floor, partition, smallest_budget, Options, Partition, PartitionError};
use splitup_graph::plan;
use splitup_graph::shape::Bindings;

const GIB: u64 = 1 << 30;

fn bindings(batch: usize, seq: usize) -> Bindings {
    let mut b = Bindings::default();
    b.dims.insert("batch".into(), batch);
    b.dims.insert("seq".into(), seq);
    b
}

#[test]
fn llama_70b_partitions_under_12_and_24_gib() {
    let g = transformer(&TransformerConfig::llama_70b()).unwrap();
    let total = g.weight_bytes();
    assert!(
        total > 130 * GIB && total < 150 * GIB,
        "70B in bf16 is ~141 GB, got {total}"
    );
    for (vram, min_tasks) in [(12 * GIB, 12), (24 * GIB, 6)] {
        let p = partition(&g, &bindings(1, 128), &Options::uniform(vram)).unwrap();
        assert!(p.tasks.len() >= min_tasks, "{} tasks at {vram}", p.tasks.len());
        // Fewest tasks: no plan can use fewer than total weights / budget.
        assert!(
            p.tasks.len() as u64 <= total.div_ceil(vram) + 2,
            "{} tasks is far from the bound",
            p.tasks.len()
        );
        for t in &p.tasks {
            assert!(t.vram_bytes <= vram, "task needs {} > {vram}", t.vram_bytes);
            assert!(t.vram_bytes >= t.weight_bytes + t.activation_bytes);
        }
        let covered: usize = p.tasks.iter().map(|t| t.end - t.start).sum();
        assert_eq!(covered, p.graph.nodes.len());
        let files = plan::build(&p, "llama70b", &bindings(1, 128), &Options::uniform(vram), false).unwrap();
        files.manifest.validate().unwrap();
        assert_eq!(files.manifest.tasks.len(), p.tasks.len());
    }
}

#[test]
fn lm_head_above_budget_is_split_vertically() {
    let c = TransformerConfig::tiny();
    let g = transformer(&c).unwrap();
    let head = g.weights["lm_head"].byte_len();
    let p = partition(&g, &bindings(1, 16), &Options::uniform(head * 3 / 4)).unwrap();
    assert!(
        p.splits.iter().any(|(n, parts)| n.contains("MatMul") && *parts >= 2),
        "splits: {:?}",
        p.splits
    );
    assert!(!p.graph.weights.contains_key("lm_head"));
    for t in &p.tasks {
        assert!(t.vram_bytes <= head * 3 / 4);
    }
}

#[test]
fn impossible_budget_names_the_tensor() {
    let c = TransformerConfig::tiny();
    let g = transformer(&c).unwrap();
    // seq 64: logits are 64x2048 f32 = 512 KiB; every weight can be split
    // below 300 KB, but the logits tensor cannot.
    let err = partition(&g, &bindings(1, 64), &Options::uniform(300_000)).unwrap_err();
    match &err {
        PartitionError::Activation {
            tensor, bytes, over, ..
        } => {
            assert_eq!(tensor, "logits");
            assert_eq!(*bytes, 64 * 2048 * 4);
            assert!(*over > 0);
        }
        other => panic!("expected an activation error, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("exceeds the budget") && msg.contains("by"), "{msg}");
}

#[test]
fn missing_dims_are_named() {
    let g = transformer(&TransformerConfig::tiny()).unwrap();
    let err = partition(&g, &Bindings::default(), &Options::uniform(GIB)).unwrap_err();
    assert!(err.to_string().contains("--dim batch=N"), "{err}");
}

fn assert_each_task_fits_its_node(p: &splitup_graph::partition::Partition, caps: &[u64]) {
    for t in &p.tasks {
        assert!(
            t.vram_bytes <= caps[t.placement],
            "task of {} on node of {}",
            t.vram_bytes,
            caps[t.placement]
        );
    }
}

#[test]
fn heterogeneous_capacities_are_honoured() {
    let g = transformer(&TransformerConfig::tiny()).unwrap();
    let total = g.weight_bytes();
    let caps = vec![total / 2, total / 4, total / 3, total / 2];
    let opts = Options {
        capacities: caps.clone(),
        overhead_pct: 10,
        vertical_split: true,
    };
    let p = partition(&g, &bindings(1, 8), &opts).unwrap();
    assert_each_task_fits_its_node(&p, &caps);
    let mut used: Vec<usize> = p.tasks.iter().map(|t| t.placement).collect();
    used.dedup();
    assert_eq!(used.len(), p.tasks.len(), "one task per node when the nodes suffice");
}

#[test]
fn fewer_nodes_than_tasks_share_nodes_and_every_task_fits_its_node() {
    let g = transformer(&TransformerConfig::tiny()).unwrap();
    let w = g.weight_bytes();
    // Two nodes cannot hold the model one task each: tasks share them.
    let caps = vec![w / 3, w / 4];
    let opts = Options {
        capacities: caps.clone(),
        overhead_pct: 10,
        vertical_split: true,
    };
    let p = partition(&g, &bindings(1, 8), &opts).unwrap();
    assert!(p.tasks.len() > caps.len(), "{} tasks", p.tasks.len());
    assert_each_task_fits_its_node(&p, &caps);
    let covered: usize = p.tasks.iter().map(|t| t.end - t.start).sum();
    assert_eq!(covered, p.graph.nodes.len());
}

/// A tiny transformer of the given depth and position scheme.
fn tiny(layers: usize, positions: Positions) -> TransformerConfig {
    TransformerConfig {
        layers,
        positions,
        ..TransformerConfig::tiny()
    }
}

fn with_budget(opts: &Options, budget: u64) -> Options {
    Options {
        capacities: vec![budget],
        ..opts.clone()
    }
}

/// Checks the invariants of a plan: every task fits the node it is placed
/// on, and the tasks cover the graph exactly once, in order.
fn check_plan(p: &Partition, caps: &[u64]) -> Result<(), TestCaseError> {
    let mut next = 0;
    for t in &p.tasks {
        prop_assert!(
            t.placement < caps.len(),
            "placement {} of {} nodes",
            t.placement,
            caps.len()
        );
        prop_assert!(
            t.vram_bytes <= caps[t.placement],
            "task {}..{} needs {} on a node of {}",
            t.start,
            t.end,
            t.vram_bytes,
            caps[t.placement]
        );
        prop_assert!(t.vram_bytes >= t.weight_bytes + t.activation_bytes);
        prop_assert_eq!(t.start, next);
        prop_assert!(t.end > t.start);
        next = t.end;
    }
    prop_assert_eq!(next, p.graph.nodes.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// `smallest_budget` names a budget that works, and nothing less works:
    /// the plan at exactly that budget fits it, one byte less fails, and
    /// (the bisection relies on it) every larger budget nearby works too.
    #[test]
    fn the_smallest_budget_named_is_sufficient(
        layers in 1usize..=3,
        seq in prop::sample::select(vec![1usize, 4, 16, 64]),
        learned in any::<bool>(),
        overhead_pct in prop::sample::select(vec![0u64, 10, 25]),
        above in proptest::collection::vec(1u64..5_000_000, 4),
    ) {
        let positions = if learned { Positions::Learned } else { Positions::Rotary };
        let g = transformer(&tiny(layers, positions)).unwrap();
        let b = bindings(1, seq);
        let opts = Options { overhead_pct, ..Options::uniform(1) };
        let budget = smallest_budget(&g, &b, &opts)
            .unwrap()
            .expect("the tiny transformer partitions at some budget");
        let floor = activation_floor(&g, &b, overhead_pct).unwrap();
        prop_assert!(budget >= floor, "{budget} is below the activation floor {floor}");
        let p = partition(&g, &b, &with_budget(&opts, budget))
            .unwrap_or_else(|e| panic!("the smallest budget {budget} does not partition: {e}"));
        check_plan(&p, &[budget])?;
        // Without vertical splits (whose slicing depends on the budget), a
        // plan in which every task needs less than the budget would also be
        // a plan one byte lower.
        prop_assert!(
            !p.splits.is_empty() || p.tasks.iter().any(|t| t.vram_bytes == budget),
            "no task needs the whole budget {budget} and nothing was split: a smaller budget would do"
        );
        let below = partition(&g, &b, &with_budget(&opts, budget - 1));
        prop_assert!(below.is_err(), "{} bytes, one less than the smallest budget, partitions too", budget - 1);
        for extra in above {
            let more = budget + extra;
            let p = partition(&g, &b, &with_budget(&opts, more))
                .unwrap_or_else(|e| panic!("{more} bytes, above the smallest budget {budget}, fails: {e}"));
            check_plan(&p, &[more])?;
        }
    }

    /// Three nodes of different sizes: every task lands on a node that holds
    /// it, and the graph partitions exactly when it does for the largest node
    /// alone (smaller nodes only add places to put tasks).
    #[test]
    fn unequal_nodes_each_hold_the_tasks_placed_on_them(
        layers in 1usize..=3,
        seq in prop::sample::select(vec![4usize, 16]),
        fractions in proptest::collection::vec(20u64..=300, 3),
    ) {
        let g = transformer(&tiny(layers, Positions::Rotary)).unwrap();
        let b = bindings(1, seq);
        let smallest = smallest_budget(&g, &b, &Options::uniform(1)).unwrap().unwrap();
        // Each node between a fifth of the smallest budget and three times it.
        let caps: Vec<u64> = fractions.iter().map(|f| smallest * f / 100).collect();
        let opts = Options { capacities: caps.clone(), overhead_pct: 10, vertical_split: true };
        let largest = *caps.iter().max().unwrap();
        let alone = partition(&g, &b, &Options::uniform(largest));
        match partition(&g, &b, &opts) {
            Ok(p) => {
                prop_assert!(alone.is_ok(), "{caps:?} partitions but the largest node alone does not");
                check_plan(&p, &caps)?;
            }
            Err(e) => {
                prop_assert!(alone.is_err(), "{caps:?} fails ({e}) but the largest node alone partitions");
                prop_assert!(largest < smallest, "{caps:?} fails although {largest} >= the smallest budget {smallest}: {e}");
            }
        }
    }
}

#[test]
fn three_unequal_nodes_hold_their_tasks() {
    let g = transformer(&TransformerConfig::tiny()).unwrap();
    let b = bindings(1, 8);
    let smallest = smallest_budget(&g, &b, &Options::uniform(1)).unwrap().unwrap();
    let w = g.weight_bytes();
    for caps in [
        vec![w / 2, w / 5, w / 3],
        vec![smallest, 3 * smallest, 2 * smallest],
        vec![4 * w, smallest, smallest + 1],
        vec![smallest, smallest / 2, smallest / 3],
    ] {
        let opts = Options {
            capacities: caps.clone(),
            overhead_pct: 10,
            vertical_split: true,
        };
        let p = partition(&g, &b, &opts).unwrap_or_else(|e| panic!("{caps:?}: {e}"));
        check_plan(&p, &caps).unwrap();
        assert_each_task_fits_its_node(&p, &caps);
    }
    // Below the smallest budget on every node: refused, whatever the mix.
    let caps = vec![smallest - 1, smallest / 2, smallest / 3];
    let opts = Options {
        capacities: caps,
        overhead_pct: 10,
        vertical_split: true,
    };
    assert!(partition(&g, &b, &opts).is_err());
}
