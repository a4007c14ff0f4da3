//! Hostile inputs to the loader, shape inference, the partitioner and the
//! manifest: errors that say what and why, never panics or wrapped counts.

use proptest::prelude::*;
use splitup_graph::builder::{attr_int, attr_ints, transformer, Builder, TransformerConfig};
use splitup_graph::model::value_info_proto;
use splitup_graph::onnx::{attr_type, AttributeProto, GraphProto, NodeProto};
use splitup_graph::partition::{partition, smallest_budget, Options, PartitionError};
use splitup_graph::plan;
use splitup_graph::shape::{self, Bindings, ShapeError};
use splitup_graph::{Dim, Graph, ValueType, Weight};
use splitup_tensor::{DType, Tensor};
use std::sync::Arc;

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
        load_infer_partition(&bytes, &Bindings::default())?;
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
        // Whatever loads can be partitioned or refused, never crash.
        load_infer_partition(&bytes, &bindings())?;
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

// ---------------------------------------------------------------------------
// Hostile single-op models: each is refused, at load or at shape inference,
// with an error that names the node or tensor and says why; never a panic,
// and never a wrapped byte count.

/// A budget far above any device, so that only shapes can refuse a model.
const HUGE_BUDGET: u64 = 1 << 62;

fn fixed(dims: &[usize]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

fn model(name: &str) -> Builder {
    Builder::new(name, true, 0)
}

/// A weight of the given type and shape holding `data` (little-endian).
fn constant(b: &mut Builder, name: &str, dtype: DType, shape: &[usize], data: Vec<u8>) -> String {
    b.graph.weights.insert(
        name.into(),
        Weight {
            dtype,
            shape: shape.to_vec(),
            data: Some(Arc::new(data)),
        },
    );
    name.into()
}

fn bool_scalar(b: &mut Builder, name: &str, v: bool) -> String {
    constant(b, name, DType::Bool, &[], vec![v as u8])
}

/// Declares `value` a model output, its type left to inference.
fn output(b: &mut Builder, value: &str) {
    b.graph.outputs.push((value.into(), None));
}

/// The model as the bytes of an ONNX file.
fn encode(b: &Builder) -> Vec<u8> {
    use prost::Message;
    b.graph.to_proto(true).encode_to_vec()
}

fn load(b: &Builder) -> Graph {
    Graph::load(&encode(b)).unwrap_or_else(|e| panic!("only allowed ops, so the model loads: {e}"))
}

/// Loads the model and expects shape inference to refuse it, and the
/// partitioner to refuse it for the same reason; returns that reason.
fn refusal_with(b: &Builder, bindings: &Bindings) -> ShapeError {
    let g = load(b);
    let inferred = shape::infer(&g, bindings).expect_err("shape inference refuses the model");
    match partition(&g, bindings, &Options::uniform(HUGE_BUDGET)) {
        Err(PartitionError::Shape(e)) => {
            assert_eq!(e, inferred, "the partitioner gives the same reason as inference");
            e
        }
        Err(other) => panic!("expected a shape error ({inferred}), got: {other}"),
        Ok(p) => panic!(
            "expected a shape error ({inferred}), got a plan of {} tasks",
            p.tasks.len()
        ),
    }
}

fn refusal(b: &Builder) -> ShapeError {
    refusal_with(b, &Bindings::default())
}

/// Asserts the error message contains every one of `words`.
#[track_caller]
fn says(e: &impl std::fmt::Display, words: &[&str]) {
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "{w:?} is not in the error: {msg}");
    }
}

/// x [1, 4, 2, 2] -> op(blocksize) -> y.
fn block_model(op: &str, blocksize: i64) -> Builder {
    let mut b = model("blocks");
    let x = b.input("x", DType::F32, fixed(&[1, 4, 2, 2]));
    let y = b.op(op, &[&x], vec![attr_int("blocksize", blocksize)]);
    output(&mut b, &y);
    b
}

#[test]
fn depth_to_space_with_a_huge_blocksize_is_refused() {
    for op in ["DepthToSpace", "SpaceToDepth"] {
        let node = format!("{op}_1");
        for blocksize in [1i64 << 32, 1 << 62, i64::MAX, 1 << 31, 3] {
            let e = refusal(&block_model(op, blocksize));
            says(&e, &[&node, "blocksize"]);
            assert!(matches!(e, ShapeError::Node { .. }), "{e:?}");
        }
        for blocksize in [0, -1, i64::MIN] {
            says(&refusal(&block_model(op, blocksize)), &[&node, "positive blocksize"]);
        }
    }
    says(&refusal(&block_model("DepthToSpace", 1 << 32)), &["overflows"]);
    says(&refusal(&block_model("DepthToSpace", 1 << 62)), &["overflows"]);
    says(
        &refusal(&block_model("DepthToSpace", 1 << 31)),
        &["not divisible", "4611686018427387904"],
    );
    // The same model with a sane blocksize is fine.
    let g = load(&block_model("DepthToSpace", 2));
    let s = shape::infer(&g, &Bindings::default()).unwrap();
    assert_eq!(s.get("depthtospace_1").shape, vec![1, 1, 4, 4]);
    let g = load(&block_model("SpaceToDepth", 2));
    let s = shape::infer(&g, &Bindings::default()).unwrap();
    assert_eq!(s.get("spacetodepth_1").shape, vec![1, 16, 1, 1]);
}

/// Range(start, limit, delta), each given as (shape, values) of int64.
fn range_model(start: &[i64], limit: &[i64], delta: &[i64], scalar: bool) -> Builder {
    let mut b = model("range");
    let mut arg = |name: &str, v: &[i64]| {
        let shape = if scalar { vec![] } else { vec![v.len()] };
        constant(
            &mut b,
            name,
            DType::I64,
            &shape,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    };
    let (s, l, d) = (arg("start", start), arg("limit", limit), arg("delta", delta));
    let y = b.op("Range", &[&s, &l, &d], vec![]);
    output(&mut b, &y);
    b
}

#[test]
fn range_of_empty_tensors_or_of_huge_length_is_refused() {
    // start, limit and delta of shape [0]: no value at all.
    let e = refusal(&range_model(&[], &[], &[], false));
    says(&e, &["Range_1", "range_1", "scalar", "0 values"]);
    let e = refusal(&range_model(&[0], &[], &[1], false));
    says(&e, &["Range_1", "input 1", "scalar"]);
    // 10^18 int64 elements: 8 EB.
    let e = refusal(&range_model(&[0], &[1_000_000_000_000_000_000], &[1], true));
    says(&e, &["Range_1", "range_1", "1000000000000000000 elements"]);
    let e = refusal(&range_model(&[i64::MIN], &[i64::MAX], &[1], true));
    says(&e, &["Range_1", "elements"]);
    let e = refusal(&range_model(&[i64::MAX], &[i64::MIN], &[-1], true));
    says(&e, &["Range_1", "elements"]);
    let e = refusal(&range_model(&[0], &[10], &[0], true));
    says(&e, &["Range_1", "delta"]);
    // Float bounds too: 1e18 float32 elements.
    let mut b = model("range_f");
    let s = b.const_f("start", DType::F32, vec![], &[0.0]);
    let l = b.const_f("limit", DType::F32, vec![], &[1e18]);
    let d = b.const_f("delta", DType::F32, vec![], &[1.0]);
    let y = b.op("Range", &[&s, &l, &d], vec![]);
    output(&mut b, &y);
    says(&refusal(&b), &["Range_1", "elements"]);
    let mut b = model("range_nan");
    let s = b.const_f("start", DType::F32, vec![], &[0.0]);
    let l = b.const_f("limit", DType::F32, vec![], &[f32::NAN]);
    let d = b.const_f("delta", DType::F32, vec![], &[1.0]);
    let y = b.op("Range", &[&s, &l, &d], vec![]);
    output(&mut b, &y);
    says(&refusal(&b), &["Range_1", "finite"]);
    // A sane Range has its length and values.
    let g = load(&range_model(&[2], &[11], &[3], true));
    let s = shape::infer(&g, &Bindings::default()).unwrap();
    assert_eq!(s.get("range_1").shape, vec![3]);
    assert_eq!(s.values["range_1"], vec![2, 5, 8]);
}

enum Training {
    Input,
    Const(bool),
}

/// x [2, 3] -> Dropout(ratio 0.5, training_mode) -> y.
fn dropout_model(training: Training) -> Builder {
    let mut b = model("dropout");
    let x = b.input("x", DType::F32, fixed(&[2, 3]));
    let ratio = b.const_f("ratio", DType::F32, vec![], &[0.5]);
    let t = match training {
        Training::Input => b.input("training", DType::Bool, vec![]),
        Training::Const(v) => bool_scalar(&mut b, "training", v),
    };
    let y = b.op("Dropout", &[&x, &ratio, &t], vec![]);
    output(&mut b, &y);
    b
}

#[test]
fn dropout_in_training_mode_is_refused() {
    for t in [Training::Input, Training::Const(true)] {
        let e = refusal(&dropout_model(t));
        says(
            &e,
            &[
                "Dropout_1",
                "training_mode",
                "\"training\"",
                "not a constant false",
                "random",
            ],
        );
    }
    // A constant false is inference: the identity.
    let g = load(&dropout_model(Training::Const(false)));
    let p = partition(&g, &Bindings::default(), &Options::uniform(1 << 20)).unwrap();
    assert_eq!(p.tasks.len(), 1);
    assert_eq!(p.shapes.get("dropout_1").shape, vec![2, 3]);
    // An input frozen with --value is a constant too, either way.
    let g = load(&dropout_model(Training::Input));
    let mut b = Bindings::default();
    b.values
        .insert("training".into(), Tensor::new(DType::Bool, vec![], vec![0]).unwrap());
    partition(&g, &b, &Options::uniform(1 << 20)).unwrap();
    b.values
        .insert("training".into(), Tensor::new(DType::Bool, vec![], vec![1]).unwrap());
    says(
        &refusal_with(&dropout_model(Training::Input), &b),
        &["Dropout_1", "training_mode"],
    );
}

enum Trips {
    Const(i64),
    Input,
    Missing,
}

/// x [2] -> Loop(M, true) { v = v + v } -> y.
fn loop_model(trips: Trips) -> Builder {
    let mut b = model("loop");
    let x = b.input("x", DType::F32, fixed(&[2]));
    let m = match trips {
        Trips::Const(v) => b.const_i64_scalar("max_trips", v),
        Trips::Input => b.input("max_trips", DType::I64, vec![]),
        Trips::Missing => String::new(),
    };
    let cond = bool_scalar(&mut b, "keep_going", true);
    let vi = |name: &str, dtype: DType, dims: &[usize]| {
        value_info_proto(
            name,
            Some(&ValueType {
                dtype,
                dims: Some(fixed(dims)),
            }),
        )
    };
    let node = |op: &str, inputs: &[&str], out: &str| NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        op_type: op.into(),
        ..Default::default()
    };
    let body = GraphProto {
        name: "body".into(),
        input: vec![
            vi("i", DType::I64, &[]),
            vi("cond_in", DType::Bool, &[]),
            vi("v_in", DType::F32, &[2]),
        ],
        output: vec![vi("cond_out", DType::Bool, &[]), vi("v_out", DType::F32, &[2])],
        node: vec![
            node("Identity", &["cond_in"], "cond_out"),
            node("Add", &["v_in", "v_in"], "v_out"),
        ],
        ..Default::default()
    };
    b.graph.nodes.push(NodeProto {
        name: "the_loop".into(),
        attribute: vec![AttributeProto {
            name: "body".into(),
            r#type: attr_type::GRAPH,
            g: Some(Box::new(body)),
            ..Default::default()
        }],
        ..node("Loop", &[&m, &cond, &x], "y")
    });
    output(&mut b, "y");
    b
}

#[test]
fn loops_need_a_small_constant_trip_count() {
    let e = refusal(&loop_model(Trips::Const(1 << 62)));
    says(
        &e,
        &[
            "the_loop",
            "maximum trip count is 4611686018427387904",
            "at most 1048576",
        ],
    );
    for trips in [-1, shape::LOOP_TRIPS_MAX + 1, i64::MAX, i64::MIN] {
        says(
            &refusal(&loop_model(Trips::Const(trips))),
            &["the_loop", &format!("maximum trip count is {trips}")],
        );
    }
    let e = refusal(&loop_model(Trips::Input));
    says(&e, &["the_loop", "\"max_trips\" is not a constant", "bound"]);
    let e = refusal(&loop_model(Trips::Missing));
    says(&e, &["the_loop", "without a maximum trip count"]);
    // Frozen with --value, the input is a constant and its bound is checked.
    let mut b = Bindings::default();
    b.values
        .insert("max_trips".into(), Tensor::from_i64(vec![], &[1 << 62]).unwrap());
    says(
        &refusal_with(&loop_model(Trips::Input), &b),
        &["the_loop", "trip count is"],
    );

    // A bound of 8 passes the check. This crate has no ONNX Runtime to see
    // through the body, so inference may still stop at the Loop, but not
    // because of its trip count.
    for (model, bindings) in [
        (loop_model(Trips::Const(8)), Bindings::default()),
        (loop_model(Trips::Const(shape::LOOP_TRIPS_MAX)), Bindings::default()),
        (loop_model(Trips::Input), {
            let mut b = Bindings::default();
            b.values
                .insert("max_trips".into(), Tensor::from_i64(vec![], &[8]).unwrap());
            b
        }),
    ] {
        let g = load(&model);
        match partition(&g, &bindings, &Options::uniform(1 << 20)) {
            Ok(p) => assert!(!p.tasks.is_empty()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("the_loop") && !msg.contains("trip count"), "{msg}");
            }
        }
    }
    let g = load(&loop_model(Trips::Const(8)));
    assert_eq!(shape::loop_bound(&g.nodes[0], &[Some(&vec![8])]), Ok(8));
}

/// A float scalar expanded to `dims`.
fn expand_model(dims: &[i64]) -> Builder {
    let mut b = model("expand");
    let x = b.input("x", DType::F32, vec![]);
    let s = b.const_i64("dims", dims);
    let y = b.op("Expand", &[&x, &s], vec![]);
    output(&mut b, &y);
    b
}

fn constant_of_shape_model(dims: &[i64]) -> Builder {
    let mut b = model("cos");
    let s = b.const_i64("dims", dims);
    let y = b.op("ConstantOfShape", &[&s], vec![]);
    output(&mut b, &y);
    b
}

#[test]
fn expanding_past_what_a_byte_count_can_hold_names_the_tensor() {
    // 2^62 float32 elements: 2^64 bytes, one past u64.
    match refusal(&expand_model(&[1 << 31, 1 << 31])) {
        ShapeError::TooLarge {
            value,
            node,
            op,
            shape,
            dtype,
        } => {
            assert_eq!(value, "expand_1");
            assert_eq!(node, "Expand_1");
            assert_eq!(op, "Expand");
            assert_eq!(shape, vec![1 << 31, 1 << 31]);
            assert_eq!(dtype, "float32");
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    says(
        &refusal(&expand_model(&[1 << 31, 1 << 31])),
        &["too large to represent"],
    );
    // Just over the 1 PiB limit, still representable: refused by the limit.
    says(&refusal(&expand_model(&[1 << 48, 5])), &["expand_1", "too large"]);
}

#[test]
fn four_terabytes_of_constant_are_counted_exactly() {
    // 10^12 float32 elements = 4 TB: representable, so the count must be exact.
    let g = load(&constant_of_shape_model(&[1_000_000, 1_000_000]));
    let s = shape::infer(&g, &Bindings::default()).unwrap();
    assert_eq!(s.get("constantofshape_1").bytes(), 4_000_000_000_000);
    let budget = 1u64 << 40;
    let err = partition(&g, &Bindings::default(), &Options::uniform(budget)).unwrap_err();
    match &err {
        PartitionError::Activation {
            tensor,
            shape,
            bytes,
            need,
            node,
            budget: b,
            over,
            ..
        } => {
            assert_eq!(tensor, "constantofshape_1");
            assert_eq!(node, "ConstantOfShape_1");
            assert_eq!(shape, &vec![1_000_000, 1_000_000]);
            assert_eq!(*bytes, 4_000_000_000_000);
            assert_eq!(*need, 4_400_000_000_000, "4 TB plus 10% overhead");
            assert_eq!(*b, budget);
            assert_eq!(*over, 4_400_000_000_000 - budget);
        }
        other => panic!("expected the budget error, got {other}"),
    }
    says(&err, &["4000000000000 bytes", "exceeds the budget"]);
    // With room for it, the plan's count is exact too: (4 TB + the 16-byte
    // shape weight) plus 10%, rounded up.
    let p = partition(&g, &Bindings::default(), &Options::uniform(5_000_000_000_000)).unwrap();
    assert_eq!(p.tasks.len(), 1);
    assert_eq!(p.tasks[0].weight_bytes, 16);
    assert_eq!(p.tasks[0].activation_bytes, 4_000_000_000_000);
    assert_eq!(p.tasks[0].vram_bytes, 4_400_000_000_018);
    assert_eq!(
        smallest_budget(&g, &Bindings::default(), &Options::uniform(1)).unwrap(),
        Some(4_400_000_000_018)
    );
}

#[test]
fn constant_of_shape_past_u64_is_refused_not_wrapped() {
    // 2^64 elements: cannot even be counted.
    let e = refusal(&constant_of_shape_model(&[1 << 31, 1 << 31, 4]));
    says(
        &e,
        &[
            "constantofshape_1",
            "ConstantOfShape_1",
            "more elements than can be counted",
        ],
    );
    // 2^62 elements of 4 bytes: counted, but the bytes are not.
    let e = refusal(&constant_of_shape_model(&[1 << 31, 1 << 31]));
    assert!(
        matches!(&e, ShapeError::TooLarge { value, .. } if value == "constantofshape_1"),
        "{e}"
    );
    for dims in [
        vec![i64::MAX, i64::MAX],
        vec![1 << 62, 1 << 62, 1 << 62],
        vec![1 << 32; 8],
    ] {
        let e = refusal(&constant_of_shape_model(&dims));
        says(&e, &["constantofshape_1"]);
        assert!(!e.to_string().contains("needs"), "{e}");
    }
}

/// x [shape] -> op(x, int64 constants...) with attributes -> y.
fn op_model(op: &str, shape: &[usize], consts: &[&[i64]], attrs: Vec<AttributeProto>) -> Builder {
    let mut b = model(op);
    let x = b.input("x", DType::F32, fixed(shape));
    let mut inputs = vec![x];
    for (i, c) in consts.iter().enumerate() {
        inputs.push(b.const_i64(&format!("c{i}"), c));
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let y = b.op(op, &refs, attrs);
    output(&mut b, &y);
    b
}

#[test]
fn tile_with_overflowing_repeats_is_refused() {
    let e = refusal(&op_model("Tile", &[4], &[&[i64::MAX]], vec![]));
    says(&e, &["Tile_1", "repeats overflow"]);
    let e = refusal(&op_model("Tile", &[4, 3], &[&[1 << 61, 1 << 61]], vec![]));
    says(&e, &["tile_1", "too large"]);
    let e = refusal(&op_model("Tile", &[4, 3], &[&[2]], vec![]));
    says(&e, &["Tile_1", "repeats length"]);
}

#[test]
fn pad_near_i64_max_is_refused() {
    for pads in [[0, i64::MAX, 0, 0], [0, 0, 0, i64::MAX], [i64::MIN, 0, i64::MIN, 0]] {
        says(
            &refusal(&op_model("Pad", &[1, 4], &[&pads], vec![])),
            &["Pad_1", "pads overflow"],
        );
    }
    // Fits in i64 but not in bytes.
    let e = refusal(&op_model("Pad", &[1, 4], &[&[0, i64::MAX - 4, 0, 0]], vec![]));
    assert!(
        matches!(&e, ShapeError::TooLarge { value, .. } if value == "pad_1"),
        "{e}"
    );
    let e = refusal(&op_model("Pad", &[1, 4], &[&[0, 1]], vec![]));
    says(&e, &["Pad_1", "pads length"]);
}

/// x [1, 1, 4, 4] convolved with a [1, 1, 3, 3] kernel.
fn conv_model(attrs: Vec<AttributeProto>) -> Builder {
    let mut b = model("conv");
    let x = b.input("x", DType::F32, fixed(&[1, 1, 4, 4]));
    let w = b.weight("w", DType::F32, vec![1, 1, 3, 3], 0.0, 1.0);
    let y = b.op("Conv", &[&x, &w], attrs);
    output(&mut b, &y);
    b
}

#[test]
fn conv_and_max_pool_with_hostile_pads_and_strides_are_refused() {
    let max = i64::MAX;
    for (attrs, why) in [
        (vec![attr_ints("pads", &[max; 4])], "output size overflows"),
        (vec![attr_ints("pads", &[i64::MIN; 4])], "larger than padded input"),
        (vec![attr_ints("dilations", &[max, max])], "larger than padded input"),
        (vec![attr_ints("pads", &[max; 3])], "do not match the spatial rank"),
        (vec![attr_ints("strides", &[max; 3])], "do not match the spatial rank"),
    ] {
        says(&refusal(&conv_model(attrs)), &["Conv_1", why]);
    }
    // Fits in usize, not in bytes.
    let e = refusal(&conv_model(vec![attr_ints("pads", &[max, 0, 0, 0])]));
    assert!(
        matches!(&e, ShapeError::TooLarge { value, .. } if value == "conv_1"),
        "{e}"
    );
    // A stride of i64::MAX is legal: one window per axis.
    let g = load(&conv_model(vec![attr_ints("strides", &[max, max])]));
    let s = shape::infer(&g, &Bindings::default()).unwrap();
    assert_eq!(s.get("conv_1").shape, vec![1, 1, 1, 1]);

    let pool = |attrs: Vec<AttributeProto>| op_model("MaxPool", &[1, 1, 4, 4], &[], attrs);
    let k2 = || attr_ints("kernel_shape", &[2, 2]);
    for (attrs, why) in [
        (vec![k2(), attr_ints("pads", &[max; 4])], "output size overflows"),
        (
            vec![k2(), attr_ints("pads", &[max; 4]), attr_int("ceil_mode", 1)],
            "output size overflows",
        ),
        (
            vec![k2(), attr_ints("pads", &[i64::MIN; 4])],
            "larger than padded input",
        ),
        (vec![attr_ints("kernel_shape", &[max, max])], "larger than padded input"),
        (vec![attr_ints("kernel_shape", &[-1, -1])], "larger than padded input"),
        (
            vec![k2(), attr_ints("dilations", &[max, max])],
            "larger than padded input",
        ),
        (vec![attr_ints("strides", &[max, max])], "missing kernel_shape"),
    ] {
        says(&refusal(&pool(attrs)), &["MaxPool_1", why]);
    }
    let e = refusal(&pool(vec![k2(), attr_ints("pads", &[max, 0, 0, 0])]));
    assert!(
        matches!(&e, ShapeError::TooLarge { value, .. } if value == "maxpool_1"),
        "{e}"
    );
    for ceil in [0, 1] {
        let g = load(&pool(vec![
            k2(),
            attr_ints("strides", &[max, max]),
            attr_int("ceil_mode", ceil),
        ]));
        let s = shape::infer(&g, &Bindings::default()).unwrap();
        assert_eq!(s.get("maxpool_1").shape, vec![1, 1, 1, 1]);
    }
}

#[test]
fn reshape_to_a_huge_shape_is_refused() {
    for (target, why) in [
        (vec![1 << 62, 4], "more elements than can be counted"),
        (vec![-1, 1 << 62, 4], "more elements than can be counted"),
        (vec![i64::MAX, i64::MAX], "more elements than can be counted"),
        (vec![1 << 31, 1 << 31], "cannot reshape"),
        (vec![i64::MAX], "cannot reshape"),
        (vec![i64::MIN, 4], "invalid Reshape target"),
        (vec![-1, -1], "invalid Reshape target"),
        (vec![0, 0, 0], "beyond the input rank"),
    ] {
        says(
            &refusal(&op_model("Reshape", &[2, 2], &[&target], vec![])),
            &["Reshape_1", why],
        );
    }
}

// ---------------------------------------------------------------------------
// Random small graphs of these ops (and the other axis and shape ops their
// rules share code with), with hostile attribute and constant values.

const FUZZED_OPS: &[&str] = &[
    "DepthToSpace",
    "SpaceToDepth",
    "Range",
    "Dropout",
    "Loop",
    "Expand",
    "ConstantOfShape",
    "Tile",
    "Pad",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "Reshape",
    "Slice",
    "Split",
    "Gather",
    "Concat",
    "TopK",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Resize",
    "OneHot",
    "ReduceSum",
    "Div",
];

/// Small values most of the time, else the edges of i64 and powers of two
/// whose products overflow.
fn hostile_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -3i64..9,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX - 1),
        1 => Just(1i64 << 31),
        1 => Just(1i64 << 32),
        1 => Just(1i64 << 62),
        1 => Just(-(1i64 << 62)),
        1 => Just(1_000_000i64),
        1 => any::<i64>(),
    ]
}

#[derive(Clone, Debug)]
struct OpCase {
    op: &'static str,
    /// Shape of the float input `x` (rank 0 to 4, dims 0 to 4).
    shape: Vec<usize>,
    /// Values for attributes and constant inputs, taken in turn.
    ints: Vec<i64>,
    /// Length of list attributes and constant inputs.
    len: usize,
    /// A variant of the op: optional inputs present, lists matching the rank.
    flag: bool,
}

fn op_case() -> impl Strategy<Value = OpCase> {
    (
        prop::sample::select(FUZZED_OPS),
        proptest::collection::vec(0usize..5, 0..5),
        proptest::collection::vec(hostile_i64(), 16),
        0usize..5,
        any::<bool>(),
    )
        .prop_map(|(op, mut shape, ints, len, flag)| {
            // Spatial ops mostly get the rank they need.
            let spatial = matches!(
                op,
                "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" | "DepthToSpace" | "SpaceToDepth"
            );
            if spatial && flag {
                shape.resize(4, 2);
            }
            OpCase {
                op,
                shape,
                ints,
                len,
                flag,
            }
        })
}

fn le_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Graph inputs declare a dim of 0 as symbolic: the case's shape is bound.
fn case_bindings(c: &OpCase) -> Bindings {
    let mut b = Bindings::default();
    b.shapes.insert("x".into(), c.shape.clone());
    b
}

/// The case as a model.
fn build_case(c: &OpCase) -> Builder {
    let mut ints = c.ints.iter().copied().cycle();
    let mut take = |k: usize| -> Vec<i64> { (0..k).map(|_| ints.next().unwrap()).collect() };
    let r = c.shape.len();
    let spatial = r.saturating_sub(2);
    // Length of a per-axis list: right for the rank, or arbitrary.
    let per_axis = if c.flag { spatial } else { c.len };
    let mut b = model("fuzz");
    let x = b.input("x", DType::F32, fixed(&c.shape));
    let mut outputs = 1;
    let mut attrs = Vec::new();
    let mut inputs = vec![x.clone()];
    let ints_const = |b: &mut Builder, name: &str, v: &[i64], scalar: bool| {
        let shape = if scalar { vec![] } else { vec![v.len()] };
        constant(b, name, DType::I64, &shape, le_bytes(v))
    };
    match c.op {
        "DepthToSpace" | "SpaceToDepth" => attrs.push(attr_int("blocksize", take(1)[0])),
        "Range" => {
            let k = if c.flag { 1 } else { c.len };
            inputs = ["start", "limit", "delta"]
                .iter()
                .map(|name| ints_const(&mut b, name, &take(k), c.flag))
                .collect();
        }
        "Dropout" => {
            inputs.push(b.const_f("ratio", DType::F32, vec![], &[0.5]));
            inputs.push(if c.flag {
                bool_scalar(&mut b, "training", take(1)[0] & 1 != 0)
            } else {
                b.input("training", DType::Bool, vec![])
            });
        }
        "Loop" => return loop_model(Trips::Const(take(1)[0])),
        "Expand" | "Reshape" => inputs.push(ints_const(&mut b, "target", &take(c.len), false)),
        "ConstantOfShape" => inputs = vec![ints_const(&mut b, "dims", &take(c.len), false)],
        "Tile" => inputs.push(ints_const(
            &mut b,
            "repeats",
            &take(if c.flag { r } else { c.len }),
            false,
        )),
        "Pad" => {
            if c.flag {
                inputs.push(ints_const(&mut b, "pads", &take(2 * c.len), false));
                inputs.push(String::new());
                inputs.push(ints_const(&mut b, "axes", &take(c.len), false));
            } else {
                inputs.push(ints_const(&mut b, "pads", &take(2 * r), false));
            }
        }
        "Conv" | "ConvTranspose" => {
            // A kernel of the input's rank with small dims.
            let mut w = vec![
                1 + take(1)[0].rem_euclid(3) as usize,
                c.shape.get(1).copied().unwrap_or(1),
            ];
            w.extend(take(spatial).iter().map(|k| 1 + k.rem_euclid(3) as usize));
            w.truncate(r.max(1));
            inputs.push(b.weight("w", DType::F32, w, 0.0, 1.0));
            attrs.push(attr_ints("pads", &take(2 * per_axis)));
            attrs.push(attr_ints("strides", &take(per_axis)));
            attrs.push(attr_ints("dilations", &take(per_axis)));
            if c.op == "ConvTranspose" {
                attrs.push(attr_ints("output_padding", &take(per_axis)));
            }
        }
        "MaxPool" | "AveragePool" => {
            attrs.push(attr_ints("kernel_shape", &take(per_axis)));
            attrs.push(attr_ints("pads", &take(2 * per_axis)));
            attrs.push(attr_ints("strides", &take(per_axis)));
            attrs.push(attr_int("ceil_mode", take(1)[0] & 1));
            if c.op == "MaxPool" {
                attrs.push(attr_ints("dilations", &take(per_axis)));
            }
        }
        "Slice" => {
            inputs.push(ints_const(&mut b, "starts", &take(c.len), false));
            inputs.push(ints_const(&mut b, "ends", &take(c.len), false));
            if c.flag {
                inputs.push(ints_const(&mut b, "axes", &take(c.len), false));
                let steps = take(c.len);
                // `e - s + step - 1` and `-step` overflow i64.
                inputs.push(ints_const(&mut b, "steps", &steps, false));
            } else {
                // Without axes, starts beyond the rank index past the shape.
            }
        }
        "Split" => {
            outputs = c.len.max(1);
            attrs.push(attr_int("axis", take(1)[0]));
            if c.flag {
                let split = take(outputs);
                // Negative sizes cast to usize overflow their sum.
                inputs.push(ints_const(&mut b, "split", &split, false));
            }
        }
        "Gather" => {
            inputs.push(ints_const(&mut b, "indices", &take(c.len), c.flag && c.len == 1));
            attrs.push(attr_int("axis", take(1)[0]));
        }
        "Concat" => {
            inputs.push(x.clone());
            attrs.push(attr_int("axis", take(1)[0]));
        }
        "TopK" => {
            inputs.push(ints_const(&mut b, "k", &take(1), false));
            attrs.push(attr_int("axis", take(1)[0]));
            outputs = 2;
        }
        "Transpose" => attrs.push(attr_ints("perm", &take(if c.flag { r } else { c.len }))),
        "Squeeze" | "Unsqueeze" | "ReduceSum" => {
            inputs.push(ints_const(&mut b, "axes", &take(c.len), false));
            attrs.push(attr_int("keepdims", take(1)[0] & 1));
        }
        "Flatten" => attrs.push(attr_int("axis", take(1)[0])),
        "Resize" => {
            inputs.push(String::new());
            inputs.push(String::new());
            inputs.push(ints_const(
                &mut b,
                "sizes",
                &take(if c.flag { c.len } else { r }),
                false,
            ));
            if c.flag {
                attrs.push(attr_ints("axes", &take(c.len)));
            }
        }
        "OneHot" => {
            let indices = ints_const(&mut b, "indices", &take(c.len), false);
            let depth = ints_const(&mut b, "depth", &take(1), c.flag);
            let values = b.const_f("values", DType::F32, vec![2], &[0.0, 1.0]);
            inputs = vec![indices, depth, values];
            attrs.push(attr_int("axis", take(1)[0]));
        }
        "Div" => {
            let (p, q) = (take(1), take(1));
            // i64::MIN / -1 overflows `div_euclid`.
            inputs = vec![ints_const(&mut b, "p", &p, false), ints_const(&mut b, "q", &q, false)];
        }
        other => unreachable!("{other} has no case"),
    }
    let outs: Vec<String> = (0..outputs).map(|i| format!("y{i}")).collect();
    b.graph.nodes.push(NodeProto {
        input: inputs,
        output: outs.clone(),
        name: format!("{}_1", c.op),
        op_type: c.op.into(),
        attribute: attrs,
        ..Default::default()
    });
    for o in &outs {
        output(&mut b, o);
    }
    b
}

/// Load, infer and partition at several budgets: each an error or a result
/// whose byte counts are in range and whose tasks fit the budget.
/// The same checks as the `load_and_partition` fuzz target; symbolic dims
/// that `given` leaves unbound are fixed to 2.
fn load_infer_partition(bytes: &[u8], given: &Bindings) -> Result<(), TestCaseError> {
    let Ok(g) = Graph::load(bytes) else {
        return Ok(());
    };
    let mut b = given.clone();
    for d in g.symbolic_dims() {
        b.dims.entry(d).or_insert(2);
    }
    let b = &b;
    match shape::infer(&g, b) {
        Ok(s) => {
            for (name, info) in &s.info {
                let bytes = info.checked_bytes();
                prop_assert!(
                    bytes.is_some_and(|n| n <= shape::TENSOR_BYTES_MAX),
                    "{name:?} of shape {:?} was inferred, but its bytes {bytes:?} are out of range",
                    info.shape
                );
            }
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    for budget in [1, 1 << 20, HUGE_BUDGET, u64::MAX] {
        match partition(&g, b, &Options::uniform(budget)) {
            Ok(p) => {
                for t in &p.tasks {
                    prop_assert!(
                        t.vram_bytes <= budget,
                        "a task of {} under a budget of {budget}",
                        t.vram_bytes
                    );
                    prop_assert!(t.vram_bytes >= t.weight_bytes + t.activation_bytes);
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn hostile_op_graphs_never_panic(c in op_case()) {
        load_infer_partition(&encode(&build_case(&c)), &case_bindings(&c))?;
    }
}

// ---------------------------------------------------------------------------
// Library bugs the tests above found (each panicked, or wrapped in release),
// pinned down one input each, now fixed.

/// Expects inference to refuse the model naming `node`, or to give `shape`.
#[track_caller]
fn refused_or_shaped(b: &Builder, node: &str, shape: Option<&[usize]>) {
    let g = load(b);
    match shape::infer(&g, &Bindings::default()) {
        Ok(s) => match shape {
            Some(want) => assert_eq!(s.get("y0").shape, want),
            None => panic!("{node}: expected a refusal, got {:?}", s.get("y0").shape),
        },
        Err(e) => says(&e, &[node]),
    }
    let _ = partition(&g, &Bindings::default(), &Options::uniform(HUGE_BUDGET));
}

/// x [shape] -> op(x, int64 constant inputs, "" for an absent one) -> y0.
fn raw_op(op: &str, shape: &[usize], consts: &[Option<&[i64]>], attrs: Vec<AttributeProto>) -> Builder {
    let mut b = model(op);
    let x = b.input("x", DType::F32, fixed(shape));
    let mut inputs = vec![x];
    for (i, c) in consts.iter().enumerate() {
        inputs.push(match c {
            Some(v) => b.const_i64(&format!("c{i}"), v),
            None => String::new(),
        });
    }
    b.graph.nodes.push(NodeProto {
        input: inputs,
        output: vec!["y0".into()],
        name: format!("{op}_1"),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    });
    output(&mut b, "y0");
    b
}

#[test]
fn regression_slice_with_a_step_near_the_i64_limits() {
    let (s, e, a) = (Some(&[0i64][..]), Some(&[8i64][..]), Some(&[0i64][..]));
    refused_or_shaped(
        &raw_op("Slice", &[8], &[s, e, a, Some(&[i64::MAX])], vec![]),
        "Slice_1",
        Some(&[1]),
    );
    let (s, e) = (Some(&[7i64][..]), Some(&[0i64][..]));
    refused_or_shaped(
        &raw_op("Slice", &[8], &[s, e, a, Some(&[i64::MIN])], vec![]),
        "Slice_1",
        Some(&[1]),
    );
}

#[test]
fn regression_slice_with_more_starts_than_axes() {
    let b = raw_op("Slice", &[4], &[Some(&[0, 0]), Some(&[1, 1])], vec![]);
    refused_or_shaped(&b, "Slice_1", None);
}

#[test]
fn regression_split_with_negative_sizes() {
    // Two outputs, so that the sizes are summed: (-1 as usize) + 5 overflows.
    let mut b = raw_op("Split", &[4], &[Some(&[-1, 5])], vec![]);
    b.graph.nodes[0].output.push("y1".into());
    refused_or_shaped(&b, "Split_1", None);
}

#[test]
fn regression_axis_ops_on_a_scalar() {
    let axis0 = || vec![attr_int("axis", 0)];
    let zero = Some(&[0i64][..]);
    for b in [
        raw_op("Gather", &[], &[zero], axis0()),
        raw_op("TopK", &[], &[Some(&[1])], axis0()),
        raw_op("Split", &[], &[], axis0()),
        raw_op("Slice", &[], &[zero, Some(&[1]), zero], vec![]),
        raw_op("Pad", &[], &[Some(&[1, 1]), None, zero], vec![]),
        raw_op("Resize", &[], &[None, None, Some(&[3])], vec![attr_ints("axes", &[0])]),
        {
            let mut b = raw_op("Concat", &[], &[], axis0());
            b.graph.nodes[0].input.push("x".into());
            b
        },
    ] {
        let node = b.graph.nodes[0].name.clone();
        refused_or_shaped(&b, &node, None);
    }
}

#[test]
fn regression_integer_division_overflow() {
    let mut b = model("div");
    let p = b.const_i64("p", &[i64::MIN]);
    let q = b.const_i64("q", &[-1]);
    let y = b.op("Div", &[&p, &q], vec![]);
    output(&mut b, &y);
    let g = load(&b);
    let _ = shape::infer(&g, &Bindings::default());
    let _ = partition(&g, &Bindings::default(), &Options::uniform(1 << 20));
}

#[test]
fn regression_sixteen_thousand_petabyte_tensors_wrap_the_byte_count() {
    // 2^14 + 1 inputs of 2^50 bytes each (the most one tensor may have):
    // the Sum reads 2^64 + 2^50 bytes, which wraps to 2^50 in u64.
    let mut b = model("sum");
    let names: Vec<String> = (0..(1 << 14) + 1)
        .map(|i| b.input(&format!("x{i}"), DType::F32, fixed(&[1 << 48])))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let y = b.op("Sum", &refs, vec![]);
    output(&mut b, &y);
    let g = load(&b);
    let s = shape::infer(&g, &Bindings::default()).unwrap();
    assert_eq!(s.get(&y).bytes(), 1 << 50);
    // No budget holds it; a wrapped count would call it 2.5 PB and plan it.
    let err = partition(&g, &Bindings::default(), &Options::uniform(1 << 63)).unwrap_err();
    says(&err, &["Sum_1"]);
    let _ = splitup_graph::partition::activation_floor(&g, &Bindings::default(), 10);
}

#[test]
fn regression_dropout_in_training_mode_inside_a_loop_body() {
    use splitup_graph::onnx::TensorProto;
    // The body computes v_out = Dropout(v_in, training_mode = true): random
    // on every run, once ONNX Runtime evaluates the Loop as one node.
    let mut b = loop_model(Trips::Const(2));
    let attr = &mut b.graph.nodes[0].attribute[0];
    let body = attr.g.as_mut().unwrap();
    body.initializer.push(TensorProto {
        name: "train".into(),
        data_type: DType::Bool.onnx_code(),
        raw_data: vec![1],
        ..Default::default()
    });
    body.node[1] = NodeProto {
        input: vec!["v_in".into(), String::new(), "train".into()],
        output: vec!["v_out".into()],
        op_type: "Dropout".into(),
        name: "body_dropout".into(),
        ..Default::default()
    };
    let msg = match Graph::load(&encode(&b)) {
        Err(e) => e.to_string(),
        Ok(g) => partition(&g, &Bindings::default(), &Options::uniform(1 << 20))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    };
    assert!(
        msg.contains("training"),
        "refused for another reason, or not at all: {msg:?}"
    );
}

// ---------------------------------------------------------------------------
// Task files as a node receives them: a graph whose initializers carry name,
// type and shape only, and a safetensors file, joined by
// `plan::join_weights` behind the gate (`model::check_runnable`). The same
// checks as the `task_load` fuzz target.

/// A graph's two task files, as `plan::build` writes them.
fn task_files(g: &Graph) -> (Vec<u8>, Vec<u8>) {
    use prost::Message;
    let weights = g
        .weights
        .iter()
        .map(|(n, w)| (n.clone(), w.tensor().expect("a materialised weight")))
        .collect();
    (
        g.to_proto(false).encode_to_vec(),
        splitup_tensor::st::encode(&weights).unwrap(),
    )
}

/// Valid task files: every task of a plan of the small transformer, and
/// single tasks holding a bounded Loop and an inference-mode Dropout (whose
/// bound and mode live in the weights file).
fn sample_tasks() -> &'static [(Vec<u8>, Vec<u8>)] {
    static TASKS: std::sync::OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = std::sync::OnceLock::new();
    TASKS.get_or_init(|| {
        let g = Graph::load(&small_model()).unwrap();
        let opts = Options::uniform(g.weight_bytes() / 2);
        let p = partition(&g, &bindings(), &opts).unwrap();
        let files = plan::build(&p, "m", &bindings(), &opts, true).unwrap().files;
        let file = |name: &str| files.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let mut out: Vec<_> = (1..=p.tasks.len())
            .map(|id| {
                (
                    file(&format!("task_{id:04}.onnx")),
                    file(&format!("task_{id:04}.safetensors")),
                )
            })
            .collect();
        assert!(out.len() >= 2);
        out.push(task_files(&load(&loop_model(Trips::Const(8)))));
        out.push(task_files(&load(&dropout_model(Training::Const(false)))));
        out
    })
}

/// Joins the files; whatever is joined decodes and passes the gate again.
fn join_and_regate(graph: &[u8], weights: &[u8]) -> Result<(), TestCaseError> {
    use prost::Message;
    match plan::join_weights(graph, weights) {
        Ok(joined) => {
            let m = splitup_graph::onnx::ModelProto::decode(joined.as_slice())
                .map_err(|e| TestCaseError::fail(format!("a joined task does not decode: {e}")))?;
            if let Err(e) = splitup_graph::model::check_runnable(&m) {
                return Err(TestCaseError::fail(format!("a joined task fails the gate: {e}")));
            }
        }
        Err((which, msg)) => {
            prop_assert!(which <= 1);
            prop_assert!(!msg.is_empty());
        }
    }
    Ok(())
}

#[test]
fn sample_task_files_join() {
    for (graph, weights) in sample_tasks() {
        plan::join_weights(graph, weights).unwrap();
        join_and_regate(graph, weights).unwrap();
    }
}

#[derive(Clone, Debug)]
enum Edit {
    Set(prop::sample::Index, u8),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = (bool, Edit)> {
    let e = prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Delete),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
    ];
    (any::<bool>(), e)
}

fn apply_edit(bytes: &mut Vec<u8>, e: &Edit) {
    if bytes.is_empty() {
        if let Edit::Insert(_, b) = e {
            bytes.push(*b);
        }
        return;
    }
    match e {
        Edit::Set(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Edit::Flip(i, bit) => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Edit::Delete(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Edit::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Flipped, inserted and deleted bytes in a real task's graph or
    /// weights: joining is an error or a model that passes the gate again.
    #[test]
    fn mutated_task_files_join_or_fail_cleanly(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let tasks = sample_tasks();
        let (mut graph, mut weights) = tasks[which.index(tasks.len())].clone();
        for (in_graph, e) in &edits {
            apply_edit(if *in_graph { &mut graph } else { &mut weights }, e);
        }
        join_and_regate(&graph, &weights)?;
    }
}

/// Re-encodes a task graph after `f` edits it.
fn edited(graph: &[u8], f: impl FnOnce(&mut splitup_graph::onnx::ModelProto)) -> Vec<u8> {
    use prost::Message;
    let mut m = splitup_graph::onnx::ModelProto::decode(graph).unwrap();
    f(&mut m);
    m.encode_to_vec()
}

/// A tensor stored as external data at `location`: `data_location =
/// EXTERNAL`, a `location` entry, or both (the runtime reads either).
fn point_at(t: &mut splitup_graph::onnx::TensorProto, location: &str, how: u8) {
    if how != 1 {
        t.data_location = 1;
    }
    if how != 2 {
        t.external_data.push(splitup_graph::onnx::StringStringEntryProto {
            key: "location".into(),
            value: location.into(),
        });
    }
}

/// A task file crafted to make the node's runtime read the node's own key
/// (`node.json`) into a tensor, then hand it on as an output: refused by
/// `join_weights` however the pointer is hidden, before any runtime sees it.
#[test]
fn task_files_pointing_at_the_nodes_key_are_refused() {
    let refused = |graph: &[u8], weights: &[u8], what: &str| {
        let e = plan::join_weights(graph, weights).expect_err(what);
        assert_eq!(e.0, 0, "{what}: the graph is at fault");
        assert!(e.1.contains("external data"), "{what}: {}", e.1);
    };

    // y = Identity(w), w an initializer whose bytes "live" in node.json.
    let mut b = model("steal");
    b.const_f("w", DType::F32, vec![4], &[0.0; 4]);
    let y = b.op("Identity", &["w"], vec![]);
    output(&mut b, &y);
    let (graph, weights) = task_files(&load(&b));
    plan::join_weights(&graph, &weights).expect("the honest task joins");
    for how in 0..3 {
        for location in ["node.json", "../node.json", "/var/lib/splitup/node.json"] {
            let g = edited(&graph, |m| {
                let init = &mut m.graph.as_mut().unwrap().initializer[0];
                point_at(init, location, how)
            });
            refused(&g, &weights, &format!("initializer, {location}, mode {how}"));
        }
    }

    // An attribute tensor: ConstantOfShape's value read from node.json.
    let mut b = model("steal_attr");
    let shape = b.const_i64("shape", &[4]);
    let y = b.op(
        "ConstantOfShape",
        &[&shape],
        vec![AttributeProto {
            name: "value".into(),
            r#type: attr_type::TENSOR,
            t: Some(splitup_graph::onnx::TensorProto {
                dims: vec![1],
                data_type: 1,
                raw_data: vec![0; 4],
                ..Default::default()
            }),
            ..Default::default()
        }],
    );
    output(&mut b, &y);
    let (graph, weights) = task_files(&load(&b));
    plan::join_weights(&graph, &weights).expect("the honest task joins");
    for how in 0..3 {
        let g = edited(&graph, |m| {
            let n = &mut m.graph.as_mut().unwrap().node[0];
            let t = n.attribute[0].t.as_mut().unwrap();
            t.raw_data.clear();
            point_at(t, "node.json", how)
        });
        refused(&g, &weights, &format!("attribute tensor, mode {how}"));
    }

    // The same, one level down: an initializer and an attribute tensor
    // inside a Loop body.
    let (graph, weights) = task_files(&load(&loop_model(Trips::Const(8))));
    let g = edited(&graph, |m| {
        let body = m.graph.as_mut().unwrap().node[0].attribute[0].g.as_mut().unwrap();
        let mut t = splitup_graph::onnx::TensorProto {
            name: "stolen".into(),
            dims: vec![4],
            data_type: 1,
            ..Default::default()
        };
        point_at(&mut t, "node.json", 0);
        body.initializer.push(t);
    });
    refused(&g, &weights, "initializer of a Loop body");
    let g = edited(&graph, |m| {
        let body = m.graph.as_mut().unwrap().node[0].attribute[0].g.as_mut().unwrap();
        let mut t = splitup_graph::onnx::TensorProto {
            dims: vec![1],
            data_type: 1,
            ..Default::default()
        };
        point_at(&mut t, "node.json", 0);
        body.node.push(NodeProto {
            op_type: "ConstantOfShape".into(),
            input: vec!["i".into()],
            output: vec!["unused".into()],
            attribute: vec![AttributeProto {
                name: "value".into(),
                r#type: attr_type::TENSOR,
                t: Some(t),
                ..Default::default()
            }],
            ..Default::default()
        });
    });
    refused(&g, &weights, "attribute tensor in a Loop body");
}
