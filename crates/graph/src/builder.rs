//! An ONNX graph builder and a decoder-only transformer generator
//! (LLaMA-style: RMSNorm, rotary or learned positions, grouped-query causal
//! attention, SwiGLU MLP, LM head) with seeded deterministic weights.
//!
//! Any size from tiny to 70B-shaped: with `materialise: false` weights are
//! described by shape only, so a 140 GB model is a few kilobytes of graph.
//! Weights are drawn from ChaCha8 seeded by (seed, BLAKE3(weight name)):
//! version 1 of this derivation; changing it changes every generated model.

use crate::model::{Dim, Graph, ValueType, Weight};
use crate::onnx::{attr_type, AttributeProto, NodeProto, OperatorSetIdProto};
use rand::{Rng, SeedableRng};
use splitup_tensor::DType;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub const OPSET: i64 = 17;

/// A small helper to emit nodes with unique value names.
pub struct Builder {
    pub graph: Graph,
    counter: usize,
    materialise: bool,
    seed: u64,
}

pub fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INT,
        i,
        ..Default::default()
    }
}
pub fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}
pub fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::FLOAT,
        f,
        ..Default::default()
    }
}

impl Builder {
    pub fn new(name: &str, materialise: bool, seed: u64) -> Builder {
        Builder {
            graph: Graph {
                name: name.into(),
                ir_version: 8,
                opset: vec![OperatorSetIdProto {
                    domain: String::new(),
                    version: OPSET,
                }],
                nodes: vec![],
                inputs: vec![],
                outputs: vec![],
                weights: BTreeMap::new(),
                value_info: HashMap::new(),
            },
            counter: 0,
            materialise,
            seed,
        }
    }

    pub fn input(&mut self, name: &str, dtype: DType, dims: Vec<Dim>) -> String {
        self.graph.inputs.push((
            name.into(),
            ValueType {
                dtype,
                dims: Some(dims),
            },
        ));
        name.into()
    }

    pub fn output(&mut self, value: &str, dtype: DType, dims: Vec<Dim>) {
        self.graph.outputs.push((
            value.into(),
            Some(ValueType {
                dtype,
                dims: Some(dims),
            }),
        ));
    }

    /// Adds `op(inputs) -> one output` and returns the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.counter += 1;
        let out = format!("{}_{}", op.to_lowercase(), self.counter);
        self.graph.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: format!("{op}_{}", self.counter),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// A small constant (shapes, axes, scalars): always materialised.
    pub fn const_i64(&mut self, name: &str, values: &[i64]) -> String {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.weights.insert(
            name.into(),
            Weight {
                dtype: DType::I64,
                shape: vec![values.len()],
                data: Some(Arc::new(data)),
            },
        );
        name.into()
    }

    pub fn const_i64_scalar(&mut self, name: &str, value: i64) -> String {
        let data = value.to_le_bytes().to_vec();
        self.graph.weights.insert(
            name.into(),
            Weight {
                dtype: DType::I64,
                shape: vec![],
                data: Some(Arc::new(data)),
            },
        );
        name.into()
    }

    pub fn const_f(&mut self, name: &str, dtype: DType, shape: Vec<usize>, values: &[f32]) -> String {
        let data = encode_floats(dtype, values.iter().copied());
        self.graph.weights.insert(
            name.into(),
            Weight {
                dtype,
                shape,
                data: Some(Arc::new(data)),
            },
        );
        name.into()
    }

    /// A seeded random weight, uniform in [-scale, scale] around `center`.
    pub fn weight(&mut self, name: &str, dtype: DType, shape: Vec<usize>, center: f32, scale: f32) -> String {
        let data = self.materialise.then(|| {
            let n: usize = shape.iter().product();
            let mut rng = rng_for(self.seed, name);
            Arc::new(encode_floats(
                dtype,
                (0..n).map(|_| center + scale * (rng.random::<f32>() * 2.0 - 1.0)),
            ))
        });
        self.graph.weights.insert(name.into(), Weight { dtype, shape, data });
        name.into()
    }
}

/// The seeded generator of one named tensor.
pub fn rng_for(seed: u64, name: &str) -> rand_chacha::ChaCha8Rng {
    let mut key = [0u8; 32];
    let h = blake3::hash(name.as_bytes());
    key.copy_from_slice(h.as_bytes());
    for (k, s) in key.iter_mut().zip(seed.to_le_bytes()) {
        *k ^= s;
    }
    rand_chacha::ChaCha8Rng::from_seed(key)
}

pub fn encode_floats(dtype: DType, values: impl Iterator<Item = f32>) -> Vec<u8> {
    match dtype {
        DType::F32 => values.flat_map(|v| v.to_le_bytes()).collect(),
        DType::F64 => values.flat_map(|v| (v as f64).to_le_bytes()).collect(),
        DType::F16 => values.flat_map(|v| half::f16::from_f32(v).to_le_bytes()).collect(),
        DType::Bf16 => values.flat_map(|v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        other => panic!("encode_floats: {other} is not a float type"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positions {
    Rotary,
    Learned,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TransformerConfig {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_seq: usize,
    pub positions: Positions,
    pub dtype: DType,
    pub materialise: bool,
    pub seed: u64,
}

impl TransformerConfig {
    /// A small model that runs in milliseconds: 8 layers, a vocabulary whose
    /// LM head is the largest weight (so budgets below it force a vertical split).
    pub fn tiny() -> TransformerConfig {
        TransformerConfig {
            layers: 8,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            ffn: 172,
            vocab: 2048,
            max_seq: 64,
            positions: Positions::Rotary,
            dtype: DType::F32,
            materialise: true,
            seed: 0,
        }
    }

    /// The model the split-latency and network benchmarks measure: 8 layers,
    /// hidden 256, 8 query / 4 KV heads, FFN 688, vocabulary 8192, up to 128
    /// positions (about 25 MB of f32 weights; one run takes milliseconds).
    pub fn bench() -> TransformerConfig {
        TransformerConfig {
            hidden: 256,
            heads: 8,
            kv_heads: 4,
            ffn: 688,
            vocab: 8192,
            max_seq: 128,
            ..TransformerConfig::tiny()
        }
    }

    /// LLaMA-3-70B shapes: 80 layers, hidden 8192, 64 query / 8 KV heads,
    /// FFN 28672, vocabulary 128256, bf16, weights by shape only.
    pub fn llama_70b() -> TransformerConfig {
        TransformerConfig {
            layers: 80,
            hidden: 8192,
            heads: 64,
            kv_heads: 8,
            ffn: 28672,
            vocab: 128256,
            max_seq: 8192,
            positions: Positions::Rotary,
            dtype: DType::Bf16,
            materialise: false,
            seed: 0,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.layers == 0
            || self.hidden == 0
            || self.heads == 0
            || self.kv_heads == 0
            || self.ffn == 0
            || self.vocab == 0
            || self.max_seq == 0
        {
            return Err("every size must be positive".into());
        }
        if !self.hidden.is_multiple_of(self.heads) || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "hidden {} must divide by heads {}, and heads by kv_heads {}",
                self.hidden, self.heads, self.kv_heads
            ));
        }
        if self.positions == Positions::Rotary && !self.head_dim().is_multiple_of(2) {
            return Err("rotary positions need an even head dimension".into());
        }
        if !self.dtype.is_float() {
            return Err("the model dtype must be a float type".into());
        }
        Ok(())
    }

    /// Number of weight parameters.
    pub fn parameters(&self) -> u64 {
        let (h, f, v, kv) = (
            self.hidden as u64,
            self.ffn as u64,
            self.vocab as u64,
            (self.kv_heads * self.head_dim()) as u64,
        );
        let layer = h * h * 2 + h * kv * 2 + 3 * h * f + 2 * h;
        v * h * 2 + self.layers as u64 * layer + h
    }
}

/// Generates the transformer. Inputs: `input_ids` int64 [batch, seq] with
/// seq <= max_seq; output: `logits` [batch, seq, vocab].
pub fn transformer(c: &TransformerConfig) -> Result<Graph, String> {
    c.validate()?;
    let mut b = Builder::new("transformer", c.materialise, c.seed);
    let (h, hd, dt) = (c.hidden, c.head_dim(), c.dtype);
    let ids = b.input(
        "input_ids",
        DType::I64,
        vec![Dim::Sym("batch".into()), Dim::Sym("seq".into())],
    );
    let emb = b.weight("embed_tokens", dt, vec![c.vocab, h], 0.0, 1.0);
    let mut x = b.op("Gather", &[&emb, &ids], vec![]);
    let seq_len = b.op("Shape", &[&ids], vec![attr_int("start", 1), attr_int("end", 2)]);
    let zero = b.const_i64("const/zero1", &[0]);
    // Causal mask, computed for the actual length: 0 where key <= query, -1e9 above.
    let seq_scalar = b.op("Squeeze", &[&seq_len, &zero], vec![]);
    let start = b.const_i64_scalar("const/range_start", 0);
    let step = b.const_i64_scalar("const/range_step", 1);
    let pos = b.op("Range", &[&start, &seq_scalar, &step], vec![]);
    let one = b.const_i64("const/axis1", &[1]);
    let rows = b.op("Unsqueeze", &[&pos, &one], vec![]);
    let cols = b.op("Unsqueeze", &[&pos, &zero], vec![]);
    let future = b.op("Greater", &[&cols, &rows], vec![]);
    let neg = b.const_f("const/mask_neg", dt, vec![], &[-1e9]);
    let zero_f = b.const_f("const/mask_zero", dt, vec![], &[0.0]);
    let mask = b.op("Where", &[&future, &neg, &zero_f], vec![]);
    let (mut cos, mut sin) = (String::new(), String::new());
    match c.positions {
        Positions::Learned => {
            let table = b.weight("embed_positions", dt, vec![c.max_seq, h], 0.0, 0.5);
            let pos = b.op("Slice", &[&table, &zero, &seq_len, &zero], vec![]);
            x = b.op("Add", &[&x, &pos], vec![]);
        }
        Positions::Rotary => {
            let half = hd / 2;
            let mut cos_v = Vec::with_capacity(c.max_seq * hd);
            let mut sin_v = Vec::with_capacity(c.max_seq * hd);
            for p in 0..c.max_seq {
                for i in 0..hd {
                    let freq = 1.0f64 / 10000f64.powf((2 * (i % half)) as f64 / hd as f64);
                    let a = p as f64 * freq;
                    cos_v.push(a.cos() as f32);
                    sin_v.push(a.sin() as f32);
                }
            }
            let cos_t = b.const_f("const/rope_cos", dt, vec![c.max_seq, hd], &cos_v);
            let sin_t = b.const_f("const/rope_sin", dt, vec![c.max_seq, hd], &sin_v);
            cos = b.op("Slice", &[&cos_t, &zero, &seq_len, &zero], vec![]);
            sin = b.op("Slice", &[&sin_t, &zero, &seq_len, &zero], vec![]);
        }
    }
    let eps = b.const_f("const/eps", dt, vec![], &[1e-5]);
    let scale = b.const_f("const/attn_scale", dt, vec![], &[1.0 / (hd as f32).sqrt()]);
    let shape_q = b.const_i64("const/shape_q", &[0, 0, c.heads as i64, hd as i64]);
    let shape_kv = b.const_i64("const/shape_kv", &[0, 0, c.kv_heads as i64, hd as i64]);
    let shape_merge = b.const_i64("const/shape_merge", &[0, 0, h as i64]);
    let shape_gqa = b.const_i64("const/shape_gqa", &[0, c.heads as i64, -1, hd as i64]);
    let axis2 = b.const_i64("const/axis2", &[2]);
    let half_lo = b.const_i64("const/rot_lo", &[0]);
    let half_mid = b.const_i64("const/rot_mid", &[(hd / 2) as i64]);
    let half_hi = b.const_i64("const/rot_hi", &[hd as i64]);
    let last = b.const_i64("const/last_axis", &[-1]);
    let rmsnorm = |b: &mut Builder, x: &str, w: &str| {
        let sq = b.op("Mul", &[x, x], vec![]);
        let ms = b.op(
            "ReduceMean",
            &[&sq],
            vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)],
        );
        let mse = b.op("Add", &[&ms, &eps], vec![]);
        let r = b.op("Sqrt", &[&mse], vec![]);
        let n = b.op("Div", &[x, &r], vec![]);
        b.op("Mul", &[&n, w], vec![])
    };
    let rotary = |b: &mut Builder, t: &str| {
        let x1 = b.op("Slice", &[t, &half_lo, &half_mid, &last], vec![]);
        let x2 = b.op("Slice", &[t, &half_mid, &half_hi, &last], vec![]);
        let nx2 = b.op("Neg", &[&x2], vec![]);
        let rot = b.op("Concat", &[&nx2, &x1], vec![attr_int("axis", -1)]);
        let a = b.op("Mul", &[t, &cos], vec![]);
        let r = b.op("Mul", &[&rot, &sin], vec![]);
        b.op("Add", &[&a, &r], vec![])
    };
    let heads_first = vec![attr_ints("perm", &[0, 2, 1, 3])];
    let kvd = c.kv_heads * hd;
    let s_in = 1.0 / (h as f32).sqrt();
    for l in 0..c.layers {
        let p = format!("layers.{l}");
        let wn = b.weight(&format!("{p}.attn_norm"), dt, vec![h], 1.0, 0.1);
        let wq = b.weight(&format!("{p}.attn.q_proj"), dt, vec![h, h], 0.0, s_in);
        let wk = b.weight(&format!("{p}.attn.k_proj"), dt, vec![h, kvd], 0.0, s_in);
        let wv = b.weight(&format!("{p}.attn.v_proj"), dt, vec![h, kvd], 0.0, s_in);
        let wo = b.weight(&format!("{p}.attn.o_proj"), dt, vec![h, h], 0.0, s_in);
        let hn = rmsnorm(&mut b, &x, &wn);
        let q = b.op("MatMul", &[&hn, &wq], vec![]);
        let k = b.op("MatMul", &[&hn, &wk], vec![]);
        let v = b.op("MatMul", &[&hn, &wv], vec![]);
        let q = b.op("Reshape", &[&q, &shape_q], vec![]);
        let mut q = b.op("Transpose", &[&q], heads_first.clone());
        let k = b.op("Reshape", &[&k, &shape_kv], vec![]);
        let mut k = b.op("Transpose", &[&k], heads_first.clone());
        let v = b.op("Reshape", &[&v, &shape_kv], vec![]);
        let mut v = b.op("Transpose", &[&v], heads_first.clone());
        if c.positions == Positions::Rotary {
            q = rotary(&mut b, &q);
            k = rotary(&mut b, &k);
        }
        if c.kv_heads != c.heads {
            let groups = c.heads / c.kv_heads;
            for t in [&mut k, &mut v] {
                let u = b.op("Unsqueeze", &[t.as_str(), &axis2], vec![]);
                let copies: Vec<&str> = std::iter::repeat_n(u.as_str(), groups).collect();
                let cat = b.op("Concat", &copies, vec![attr_int("axis", 2)]);
                *t = b.op("Reshape", &[&cat, &shape_gqa], vec![]);
            }
        }
        let kt = b.op("Transpose", &[&k], vec![attr_ints("perm", &[0, 1, 3, 2])]);
        let sc = b.op("MatMul", &[&q, &kt], vec![]);
        let sc = b.op("Mul", &[&sc, &scale], vec![]);
        let sc = b.op("Add", &[&sc, &mask], vec![]);
        let pr = b.op("Softmax", &[&sc], vec![attr_int("axis", -1)]);
        let o = b.op("MatMul", &[&pr, &v], vec![]);
        let o = b.op("Transpose", &[&o], heads_first.clone());
        let o = b.op("Reshape", &[&o, &shape_merge], vec![]);
        let o = b.op("MatMul", &[&o, &wo], vec![]);
        x = b.op("Add", &[&x, &o], vec![]);
        let wn2 = b.weight(&format!("{p}.mlp_norm"), dt, vec![h], 1.0, 0.1);
        let wg = b.weight(&format!("{p}.mlp.gate_proj"), dt, vec![h, c.ffn], 0.0, s_in);
        let wu = b.weight(&format!("{p}.mlp.up_proj"), dt, vec![h, c.ffn], 0.0, s_in);
        let wd = b.weight(
            &format!("{p}.mlp.down_proj"),
            dt,
            vec![c.ffn, h],
            0.0,
            1.0 / (c.ffn as f32).sqrt(),
        );
        let hn = rmsnorm(&mut b, &x, &wn2);
        let g = b.op("MatMul", &[&hn, &wg], vec![]);
        let u = b.op("MatMul", &[&hn, &wu], vec![]);
        let sg = b.op("Sigmoid", &[&g], vec![]);
        let silu = b.op("Mul", &[&g, &sg], vec![]);
        let m = b.op("Mul", &[&silu, &u], vec![]);
        let d = b.op("MatMul", &[&m, &wd], vec![]);
        x = b.op("Add", &[&x, &d], vec![]);
    }
    let wf = b.weight("final_norm", dt, vec![h], 1.0, 0.1);
    let head = b.weight("lm_head", dt, vec![h, c.vocab], 0.0, s_in);
    let xn = rmsnorm(&mut b, &x, &wf);
    let logits = b.op("MatMul", &[&xn, &head], vec![]);
    // Give the output a stable name.
    let last_node = b.graph.nodes.last_mut().unwrap();
    last_node.output[0] = "logits".into();
    let _ = logits;
    b.output(
        "logits",
        dt,
        vec![Dim::Sym("batch".into()), Dim::Sym("seq".into()), Dim::Fixed(c.vocab)],
    );
    Ok(b.graph)
}
