//! Hostile inputs to the loader and the manifest: errors, never panics.

use proptest::prelude::*;
use splitup_graph::builder::{transformer, TransformerConfig};
use splitup_graph::partition::{partition, Options};
use splitup_graph::plan;
use splitup_graph::shape::Bindings;
use splitup_graph::Graph;

fn small_model() -> Vec<u8> {
    use prost::Message;
    let c = TransformerConfig {
        layers: 1,
        hidden: 8,
        heads: 2,
        kv_heads: 1,
        ffn: 16,
        vocab: 32,
        max_seq: 8,
        ..TransformerConfig::tiny()
    };
    transformer(&c).unwrap().to_proto(true).encode_to_vec()
}

fn bindings() -> Bindings {
    let mut b = Bindings::default();
    b.dims.insert("batch".into(), 1);
    b.dims.insert("seq".into(), 4);
    b
}

#[test]
fn the_small_model_loads_and_partitions() {
    let g = Graph::load(&small_model()).unwrap();
    partition(&g, &bindings(), &Options::uniform(1 << 20)).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = Graph::load(&bytes);
    }

    #[test]
    fn mutated_models_load_or_fail_cleanly(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut bytes = small_model();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let keep = bytes.len() - cut.index(bytes.len() / 4 + 1);
        bytes.truncate(keep);
        if let Ok(g) = Graph::load(&bytes) {
            // Whatever loads can be partitioned or refused, never crash.
            let _ = partition(&g, &bindings(), &Options::uniform(1 << 20));
        }
    }
}

#[test]
fn manifests_with_escaping_file_names_or_broken_dags_are_refused() {
    let g = Graph::load(&small_model()).unwrap();
    let opts = Options::uniform(g.weight_bytes() / 2);
    let p = partition(&g, &bindings(), &opts).unwrap();
    let good = plan::build(&p, "m", &bindings(), &opts, true).unwrap().manifest;
    good.validate().unwrap();
    assert!(good.tasks.len() >= 2);

    let mut m = good.clone();
    m.tasks[0].weights.file = "../../etc/passwd".into();
    assert!(m.validate().unwrap_err().contains("plain name"));

    let mut m = good.clone();
    let fed = m.connections.iter().position(|c| c.destination_task_id != 0).unwrap();
    m.connections.remove(fed);
    assert!(m.validate().unwrap_err().contains("never fed"));

    let mut m = good.clone();
    let dup = m.connections[fed].clone();
    m.connections.push(dup);
    assert!(m.validate().unwrap_err().contains("fed 2 times"));

    let mut m = good.clone();
    m.tasks[1].id = m.tasks[0].id;
    assert!(m.validate().unwrap_err().contains("unique"));

    let mut m = good;
    m.format = "splitup-plan/99".into();
    assert!(m.validate().unwrap_err().contains("unknown plan format"));
}

#[test]
fn constant_nodes_count_as_weights() {
    use splitup_graph::builder::{attr_int, Builder};
    use splitup_graph::onnx::{attr_type, AttributeProto, NodeProto, TensorProto};
    use splitup_graph::Dim;
    use splitup_tensor::DType;
    // y = x @ W, with W a Constant node (as paddle2onnx exports) instead of an initializer.
    let mut b = Builder::new("const", true, 0);
    b.input("x", DType::F32, vec![Dim::Fixed(2), Dim::Fixed(3)]);
    b.graph.nodes.push(NodeProto {
        output: vec!["W".into()],
        op_type: "Constant".into(),
        attribute: vec![AttributeProto {
            name: "value".into(),
            r#type: attr_type::TENSOR,
            t: Some(TensorProto {
                dims: vec![3, 4],
                data_type: 1,
                float_data: (0..12).map(|v| v as f32).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    let y = b.op("MatMul", &["x", "W"], vec![]);
    let _ = attr_int;
    b.output(&y, DType::F32, vec![Dim::Fixed(2), Dim::Fixed(4)]);
    let mut proto = b.graph.to_proto(true);
    proto.graph.as_mut().unwrap().initializer.clear();
    use prost::Message;
    let g = Graph::load(&proto.encode_to_vec()).unwrap();
    assert_eq!(g.weights["W"].shape, vec![3, 4]);
    assert_eq!(g.nodes.len(), 1, "the Constant node became a weight");
    let p = partition(&g, &Bindings::default(), &Options::uniform(1 << 20)).unwrap();
    assert_eq!(p.tasks[0].weight_bytes, 48);
    assert_eq!(p.tasks[0].weights, vec!["W".to_string()]);
}
