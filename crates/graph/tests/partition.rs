//! Partitioner properties on generated transformers (no runtime needed).

use splitup_graph::builder::{transformer, TransformerConfig};
use splitup_graph::partition::{partition, Options, PartitionError};
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
