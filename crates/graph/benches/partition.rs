//! Time to partition a LLaMA-70B-shaped graph (80 layers, weights by shape
//! only) at 12 GiB and 24 GiB per node, plus graph generation for scale.
//! Target: under 1 s each. Run: cargo bench -p splitup-graph --bench partition

use criterion::{criterion_group, criterion_main, Criterion};
use splitup_graph::builder::{transformer, TransformerConfig};
use splitup_graph::partition::{partition, Options};
use splitup_graph::shape::Bindings;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let cfg = TransformerConfig::llama_70b();
    let g = transformer(&cfg).unwrap();
    let mut b = Bindings::default();
    b.dims.insert("batch".into(), 1);
    b.dims.insert("seq".into(), 128);
    let mut group = c.benchmark_group("llama70b");
    group.sample_size(10);
    group.bench_function("generate graph", |bench| {
        bench.iter(|| transformer(black_box(&cfg)).unwrap())
    });
    for gib in [12u64, 24] {
        let opts = Options::uniform(gib << 30);
        let p = partition(&g, &b, &opts).unwrap();
        println!(
            "llama70b at {gib} GiB: {} tasks, largest {} bytes",
            p.tasks.len(),
            p.tasks.iter().map(|t| t.vram_bytes).max().unwrap()
        );
        group.bench_function(format!("partition {gib}GiB"), |bench| {
            bench.iter(|| partition(black_box(&g), &b, &opts).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
