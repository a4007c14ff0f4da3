#!/usr/bin/env python3
"""Builds ONNX models of classes the shipped real models do not cover.

Every model is made with a real tool (onnx.helper, ONNX Runtime's quantizer,
skl2onnx), run once in ONNX Runtime (CPU) on seeded inputs and checked: it
runs, outputs are finite, some output holds two distinct values. Written to
OUT_DIR/models.json in the format of real_models.py:

    {"models": [{"name", "package", "path", "shapes", "inputs", "vendor_ops",
                 "nodes", "ort_runs", "outputs", "output_shapes", "ops",
                 "note"}, ...]}

("ops" lists every "domain::OpType" in the graph, subgraphs included.)

Models (each in OUT_DIR/<name>/model.onnx):
  loop_const        Loop with constant trip count 6 (MatMul+Add+Tanh state,
                    one scan output), onnx.helper, opset 17
  scan              Scan over axis 0 of [T, B, D], running tanh state, opset 17
  qdq_static        quantize_static, QDQ format, of a real model
  qoperator_static  quantize_static, QOperator format (QLinearConv, ...)
  dynamic           quantize_dynamic (DynamicQuantizeLinear, ConvInteger,
                    MatMulInteger) of a real model
  sklearn_tree      StandardScaler + RandomForestClassifier via skl2onnx
  sklearn_linear    StandardScaler + LogisticRegression via skl2onnx
  external_data     two MatMul+Add+Relu layers, weights in weights.bin
The quantised models use only default-domain ops (checked).

Hostile models, not meant to run, under OUT_DIR/hostile/ and listed in
OUT_DIR/hostile.json as {"name", "path", "why", "ort"} ("ort" records what
ONNX Runtime did with it, for information):
  ext_abs     initializer whose external data location is /etc/hostname
  ext_dotdot  initializer at ../secret.bin (OUT_DIR/secret.bin exists)
  ext_link    initializer at link.bin, a symlink to ../secret.bin
  ext_attr    ConstantOfShape whose `value` attribute tensor is external
              data in node.json (a fake secret)

Needs (pip): onnxruntime==1.31.1 onnx==1.23.2 numpy scikit-learn==1.9.1
skl2onnx==1.20.0. REAL_MODELS_JSON is OUT_DIR/models.json of real_models.py
(the quantised models are made from models listed there).

Usage: make_models.py OUT_DIR REAL_MODELS_JSON
"""
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

PIP = ("python3 -m pip install onnxruntime==1.31.1 onnx==1.23.2 numpy "
       "scikit-learn==1.9.1 skl2onnx==1.20.0")
try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    import sklearn
    import skl2onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"make_models.py: missing Python package ({e}). Install with:\n  {PIP}")

# The op walk and file naming are real_models.py's (same folder).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_models import all_ops, safe, vendor_ops  # noqa: E402

F32 = np.float32
OPSET = 17
# onnx 1.23 stamps IR version 14 by default; ORT 1.31 reads at most 13.
# IR 8 is the version that goes with opset 17.
IR_VERSION = 8
DEFAULT_DOMAINS = {"", "ai.onnx"}

# Real models to quantise, first one present in REAL_MODELS_JSON wins.
STATIC_SOURCES = ["openwakeword/embedding_model", "speechmos/dnsmos_models/model_v8"]
DYNAMIC_SOURCES = ["speechmos/dnsmos_models/model_v8", "magika/standard_v3_3/model"]
# QOperator ops that stay in the default domain (Add/Mul/LeakyRelu/Sigmoid/
# Gemm/... would become com.microsoft QLinear* ops).
QOPERATOR_OPS = ["Conv", "MatMul", "MaxPool", "Pad", "Reshape", "Flatten", "Squeeze", "Unsqueeze"]


class VerifyError(Exception):
    pass


# ---------------------------------------------------------------- helpers ---

def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def real_inputs(model):
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def record(out, name, path, feeds, package, note="", ref=None, ref_tol=None):
    """Check `path` in ORT on `feeds`, save inputs/outputs, return the entry.

    ref: optional expected outputs (list, same order) compared with ref_tol
    (absolute) - used where the tool that made the model can predict them."""
    model = onnx.load(path, load_external_data=False)
    if sorted(real_inputs(model)) != sorted(feeds):
        raise VerifyError(f"{name}: graph inputs {real_inputs(model)} != feeds {sorted(feeds)}")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    t0 = time.perf_counter()
    outs = sess.run(None, feeds)
    secs = time.perf_counter() - t0
    for k, o in zip(out_names, outs):
        if np.issubdtype(o.dtype, np.floating) and not np.isfinite(o).all():
            raise VerifyError(f"{name}: output {k} is not finite")
    if not any(np.unique(o).size >= 2 for o in outs):
        raise VerifyError(f"{name}: every output is constant")
    for k, o, r in zip(out_names, outs, ref or []):
        r = np.asarray(r)
        if o.shape != r.shape:
            raise VerifyError(f"{name}: output {k} has shape {list(o.shape)}, reference {list(r.shape)}")
        if not np.allclose(o, r, atol=ref_tol, rtol=0):
            diff = np.max(np.abs(o.astype(np.float64) - r))
            raise VerifyError(f"{name}: output {k} differs from the reference by up to {diff:.3g}")

    entry = {"name": name, "package": package, "path": os.path.abspath(path),
             "shapes": {k: list(v.shape) for k, v in feeds.items()}, "inputs": {},
             "vendor_ops": vendor_ops(model.graph), "nodes": len(model.graph.node),
             "ort_runs": True, "outputs": {}, "output_shapes": {},
             "ops": all_ops(model.graph), "note": note}
    for sub, items, key in (("inputs", feeds.items(), "inputs"), ("outputs", zip(out_names, outs), "outputs")):
        d = fresh_dir(os.path.join(out, sub, safe(name)))
        used = set()
        for k, v in items:
            fn = safe(k)[:100]
            while fn in used:
                fn += "_"
            used.add(fn)
            p = os.path.join(d, fn + ".npy")
            np.save(p, v)
            entry[key][k] = p
            if key == "outputs":
                entry["output_shapes"][k] = list(v.shape)
    return entry, secs


def save(model, path):
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save_model(model, path)
    return path


def made_by(*mods):
    return " ".join(f"{m.__name__}=={m.__version__}" for m in mods)


# ----------------------------------------------------------- control flow ---

def make_loop_const(out):
    """Loop, trip count M=6 from a Constant node, cond an initializer (true),
    body: state = tanh(state @ W + b), cond passed through, scan output = state."""
    rng = np.random.default_rng(1001)
    D, B, M = 64, 4, 6
    W = (rng.normal(0, 1.0 / np.sqrt(D), (D, D)) * 1.2).astype(F32)
    b = rng.normal(0, 0.1, D).astype(F32)
    # A MatMul before and a Tanh after the Loop, so there is something to split around it.
    Win = rng.normal(0, 1.0 / np.sqrt(D), (D, D)).astype(F32)

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["s_in", "W"], ["mm"]),
         helper.make_node("Add", ["mm", "b"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y"])],
        "loop_body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [B, D])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [B, D]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, D])])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["M"], value=numpy_helper.from_array(np.array(M, np.int64), "M")),
         helper.make_node("MatMul", ["x", "Win"], ["x1"]),
         helper.make_node("Loop", ["M", "cond", "x1"], ["final0", "trace"], body=body),
         helper.make_node("Tanh", ["final0"], ["final"])],
        "loop_const",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, D])],
        [helper.make_tensor_value_info("final", TensorProto.FLOAT, [B, D]),
         helper.make_tensor_value_info("trace", TensorProto.FLOAT, [M, B, D])],
        [numpy_helper.from_array(np.array(True), "cond"),
         numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(Win, "Win")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="splitup-make_models")
    path = save(model, os.path.join(fresh_dir(os.path.join(out, "loop_const")), "model.onnx"))

    x = rng.uniform(-1, 1, (B, D)).astype(F32)
    s, trace = x.astype(np.float64) @ Win, []
    for _ in range(M):
        s = np.tanh(s @ W + b)
        trace.append(s)
    return record(out, "loop_const", path, {"x": x}, made_by(onnx),
                  note="MatMul, then a Loop (M=6 from a Constant node, cond=true initializer; W, b are outer-scope initializers used in the body), then Tanh",
                  ref=[np.tanh(s), np.stack(trace)], ref_tol=1e-4)


def make_scan(out):
    """Scan over axis 0 of x [T, B, D]: state = tanh(state @ W + x_t)."""
    rng = np.random.default_rng(1002)
    T, B, D = 5, 3, 32
    W = (rng.normal(0, 1.0 / np.sqrt(D), (D, D))).astype(F32)
    # A MatMul on the sequence before the Scan, so there is something to split around it.
    Win = rng.normal(0, 1.0 / np.sqrt(D), (D, D)).astype(F32)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["s_in", "W"], ["mm"]),
         helper.make_node("Add", ["mm", "x_t"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y_t"])],
        "scan_body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [B, D]),
         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [B, D])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [B, D]),
         helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [B, D])])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "Win"], ["xw"]),
         helper.make_node("Scan", ["h0", "xw"], ["h_final", "ys"], body=body, num_scan_inputs=1)],
        "scan",
        [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [B, D]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, B, D])],
        [helper.make_tensor_value_info("h_final", TensorProto.FLOAT, [B, D]),
         helper.make_tensor_value_info("ys", TensorProto.FLOAT, [T, B, D])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(Win, "Win")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="splitup-make_models")
    path = save(model, os.path.join(fresh_dir(os.path.join(out, "scan")), "model.onnx"))

    h0 = rng.normal(0, 0.5, (B, D)).astype(F32)
    x = rng.normal(0, 1.0, (T, B, D)).astype(F32)
    s, ys = h0.astype(np.float64), []
    xw = x.astype(np.float64) @ Win
    for t in range(T):
        s = np.tanh(s @ W + xw[t])
        ys.append(s)
    return record(out, "scan", path, {"h0": h0, "x": x}, made_by(onnx),
                  note="MatMul, then a Scan over axis 0 (one state, one scan input, one scan output)",
                  ref=[s, np.stack(ys)], ref_tol=1e-4)


# ----------------------------------------------------------- quantisation ---

def pick_source(real, names, why):
    by_name = {m["name"]: m for m in real["models"]}
    for n in names:
        m = by_name.get(n)
        if m and m.get("ort_runs") and os.path.exists(m["path"]):
            return m
    raise VerifyError(f"none of {names} ({why}) is in REAL_MODELS_JSON with ort_runs true")


def load_feeds(src):
    return {k: np.load(p) for k, p in src["inputs"].items()}


class SeededReader(CalibrationDataReader):
    """A few inputs of the source's shapes: its own inputs, perturbed."""

    def __init__(self, src, count=4, seed=7):
        base = load_feeds(src)
        rng = np.random.default_rng(seed)
        self.items = []
        for _ in range(count):
            item = {}
            for k, v in base.items():
                if np.issubdtype(v.dtype, np.floating):
                    spread = float(np.std(v)) or 1.0
                    item[k] = (v * rng.uniform(0.8, 1.2) + rng.normal(0, 0.2 * spread, v.shape)).astype(v.dtype)
                else:
                    item[k] = v
            self.items.append(item)
        self.it = iter(self.items)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.items)


def check_default_domain(name, path):
    model = onnx.load(path, load_external_data=False)
    bad = [o for o in all_ops(model.graph) if o.split("::")[0] not in DEFAULT_DOMAINS]
    if bad:
        raise VerifyError(f"{name}: quantised model uses non-default-domain ops {bad}")


def float_diff(src, feeds, qpath):
    ref = ort.InferenceSession(src["path"], providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(qpath, providers=["CPUExecutionProvider"]).run(None, feeds)
    return max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(ref, got))


def make_static(out, real, name, fmt):
    src = pick_source(real, STATIC_SOURCES, "static quantisation source")
    d = fresh_dir(os.path.join(out, name))
    path = os.path.join(d, "model.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(src["path"], pre)
        kw = {}
        if fmt == QuantFormat.QOperator:
            kw["op_types_to_quantize"] = QOPERATOR_OPS
        quantize_static(pre, path, SeededReader(src), quant_format=fmt,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=False, extra_options={"ActivationSymmetric": False}, **kw)
    check_default_domain(name, path)
    feeds = load_feeds(src)
    diff = float_diff(src, feeds, path)
    return record(out, name, path, feeds, made_by(ort),
                  note=f"quantize_static({fmt.name}) of {src['name']} ({src['package']}); "
                       f"max |diff| vs float {diff:.4g}")


def make_dynamic(out, real):
    src = pick_source(real, DYNAMIC_SOURCES, "dynamic quantisation source")
    d = fresh_dir(os.path.join(out, "dynamic"))
    path = os.path.join(d, "model.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(src["path"], pre)
        # ORT's CPU ConvInteger takes uint8 weights only
        quantize_dynamic(pre, path, op_types_to_quantize=["Conv", "MatMul"],
                         weight_type=QuantType.QUInt8, per_channel=False)
    check_default_domain("dynamic", path)
    feeds = load_feeds(src)
    diff = float_diff(src, feeds, path)
    return record(out, "dynamic", path, feeds, made_by(ort),
                  note=f"quantize_dynamic of {src['name']} ({src['package']}); max |diff| vs float {diff:.4g}")


# ----------------------------------------------------------------- sklearn ---

def sk_data(seed, n=240, f=6, classes=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, f)) * rng.uniform(0.5, 20, f) + rng.uniform(-5, 5, f)
    w = rng.normal(0, 1, (f, classes)) / (np.std(X, axis=0)[:, None])
    y = np.argmax((X - X.mean(0)) @ w + rng.normal(0, 0.3, (n, classes)), axis=1).astype(np.int64)
    return X.astype(F32), y


def make_sklearn(out, name, clf, seed):
    X, y = sk_data(seed)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", clf)]).fit(X, y)
    N, F = 8, X.shape[1]
    onx = convert_sklearn(pipe, name=name, initial_types=[("input", FloatTensorType([N, F]))],
                          target_opset={"": OPSET, "ai.onnx.ml": 3},
                          options={id(clf): {"zipmap": False}})
    path = save(onx, os.path.join(fresh_dir(os.path.join(out, name)), "model.onnx"))
    Xt = X[:N]
    model = onnx.load(path)
    if [o.name for o in model.graph.output] != ["label", "probabilities"]:
        raise VerifyError(f"{name}: outputs {[o.name for o in model.graph.output]}, want label, probabilities")
    ml = sorted(o for o in all_ops(model.graph) if o.startswith("ai.onnx.ml::"))
    opsets = [f"{o.domain or 'ai.onnx'}:{o.version}" for o in model.opset_import]
    return record(out, name, path, {"input": Xt}, made_by(skl2onnx, sklearn),
                  note=f"{type(clf).__name__}, 3 classes, zipmap off; ml ops {ml}; "
                       f"opset_import as skl2onnx wrote it: {opsets}",
                  ref=[pipe.predict(Xt).astype(np.int64), pipe.predict_proba(Xt).astype(F32)], ref_tol=1e-4)


# ----------------------------------------------------------- external data ---

def make_external_data(out):
    rng = np.random.default_rng(1003)
    B, D = 4, 256
    ws = [(rng.normal(0, 1.0 / np.sqrt(D), (D, D))).astype(F32) for _ in range(2)]
    bs = [rng.normal(0, 0.1, D).astype(F32) for _ in range(2)]
    nodes, prev = [], "x"
    for i in range(2):
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"mm{i}"]),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"pre{i}"]),
                  helper.make_node("Relu", [f"pre{i}"], [f"h{i}"])]
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "external_data",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, D])],
        [helper.make_tensor_value_info("h1", TensorProto.FLOAT, [B, D])],
        [numpy_helper.from_array(t, n) for i in range(2)
         for n, t in ((f"W{i}", ws[i]), (f"b{i}", bs[i]))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="splitup-make_models")
    onnx.checker.check_model(model, full_check=True)
    d = fresh_dir(os.path.join(out, "external_data"))  # onnx appends to weights.bin
    path = os.path.join(d, "model.onnx")
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    want = sum(t.nbytes for t in ws + bs)
    got = os.path.getsize(os.path.join(d, "weights.bin"))
    if got < want or os.path.getsize(path) > 4096:
        raise VerifyError(f"external_data: weights.bin is {got} bytes (want >= {want}), model.onnx {os.path.getsize(path)}")
    onnx.checker.check_model(path)
    x = rng.normal(0, 1, (B, D)).astype(F32)
    h = x.astype(np.float64)
    for i in range(2):
        h = np.maximum(h @ ws[i] + bs[i], 0)
    return record(out, "external_data", path, {"x": x}, made_by(onnx),
                  note=f"all 4 initializers in weights.bin ({got} bytes)", ref=[h], ref_tol=1e-4)


# ----------------------------------------------------------------- hostile ---

def external_tensor(name, dtype, dims, location, length):
    t = TensorProto()
    t.name, t.data_type = name, dtype
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def hostile_initializer_model(location, n=8):
    """out = Identity(W) where W is n uint8 bytes of external data."""
    w = external_tensor("W", TensorProto.UINT8, [n], location, n)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["W"], ["out"])], "hostile",
        [], [helper.make_tensor_value_info("out", TensorProto.UINT8, [n])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def hostile_attr_model():
    value = external_tensor("value", TensorProto.FLOAT, [1], "node.json", 4)
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["out"], value=value)], "hostile_attr",
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def ort_verdict(path):
    try:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.array([2], np.int64) for i in sess.get_inputs()}
        outs = sess.run(None, feeds)
        return "loaded and ran: " + repr(outs[0].tolist())[:80]
    except Exception as e:
        msg = " ".join(str(e).split())
        return "refused: " + (msg if len(msg) <= 300 else "..." + msg[-300:])


def make_hostile(out):
    d = fresh_dir(os.path.join(out, "hostile"))
    secret = os.path.join(out, "secret.bin")  # next to hostile/, reached by ../secret.bin
    with open(secret, "wb") as f:
        f.write(b"FAKE-SECRET: outside the model directory\n")
    os.symlink(os.path.join("..", "secret.bin"), os.path.join(d, "link.bin"))
    with open(os.path.join(d, "node.json"), "w") as f:
        f.write('{"api_key": "FAKE-0000-SECRET", "note": "test fixture, not a real secret"}\n')

    specs = [
        ("ext_abs", hostile_initializer_model("/etc/hostname", n=2),  # short: any hostname file has 2 bytes
         "initializer external data location is an absolute path (/etc/hostname)"),
        ("ext_dotdot", hostile_initializer_model("../secret.bin"),
         "initializer external data location ../secret.bin escapes the model directory"),
        ("ext_link", hostile_initializer_model("link.bin"),
         "initializer external data location link.bin is a symlink in the model directory to ../secret.bin"),
        ("ext_attr", hostile_attr_model(),
         "ConstantOfShape `value` attribute tensor stored as external data (node.json, a fake secret)"),
    ]
    listed = []
    for name, model, why in specs:
        path = os.path.join(d, name + ".onnx")
        # raw bytes: onnx.save_model must not try to resolve the external data
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        listed.append({"name": name, "path": path, "why": why, "ort": ort_verdict(path)})
    with open(os.path.join(out, "hostile.json"), "w") as f:
        json.dump(listed, f, indent=1)
        f.write("\n")
    return listed


# -------------------------------------------------------------------- main ---

def main(out, real_json):
    out = os.path.abspath(out)
    try:
        with open(real_json) as f:
            real = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"make_models.py: cannot read REAL_MODELS_JSON {real_json!r} ({e}); "
                 "make it with scripts/real_models.py OUT_DIR")
    os.makedirs(out, exist_ok=True)
    for sub in ("inputs", "outputs"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    ort.set_default_logger_severity(3)
    warnings.simplefilter("ignore")

    builders = [
        ("loop_const", lambda: make_loop_const(out)),
        ("scan", lambda: make_scan(out)),
        ("qdq_static", lambda: make_static(out, real, "qdq_static", QuantFormat.QDQ)),
        ("qoperator_static", lambda: make_static(out, real, "qoperator_static", QuantFormat.QOperator)),
        ("dynamic", lambda: make_dynamic(out, real)),
        ("sklearn_tree", lambda: make_sklearn(out, "sklearn_tree", RandomForestClassifier(
            n_estimators=6, max_depth=4, random_state=0, n_jobs=1), seed=1004)),
        ("sklearn_linear", lambda: make_sklearn(out, "sklearn_linear", LogisticRegression(
            max_iter=500, random_state=0), seed=1005)),
        ("external_data", lambda: make_external_data(out)),
    ]
    entries, secs, failures = [], {}, []
    for name, build in builders:
        try:
            entry, secs[name] = build()
            entries.append(entry)
        except Exception as e:  # report every model, fail at the end
            failures.append(f"{name}: {type(e).__name__}: {e}")
    with open(os.path.join(out, "models.json"), "w") as f:
        json.dump({"models": entries}, f, indent=1)
        f.write("\n")
    hostile = make_hostile(out)

    print(f"{'name':18} {'inputs':34} {'ORT':4} {'seconds':8} ops")
    for e in entries:
        shapes = ", ".join(f"{k}{v}" for k, v in e["shapes"].items())
        print(f"{e['name']:18} {shapes:34} {'ok':4} {secs[e['name']]:<8.4f} {' '.join(e['ops'])}")
        print(f"{'':18} {e['note']}")
    for h in hostile:
        print(f"hostile {h['name']:10} ORT {h['ort']}")
    print(f"{len(entries)} models, {len(failures)} failed -> {os.path.join(out, 'models.json')}")
    for f_ in failures:
        print("FAIL", f_, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    sys.exit(main(sys.argv[1], sys.argv[2]))
