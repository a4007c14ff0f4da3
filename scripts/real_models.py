#!/usr/bin/env python3
"""Collects third-party ONNX models shipped inside pip packages, with inputs.

For each pinned package below, finds its directory WITHOUT importing it (the
packages' own dependencies are not installed), lists every `.onnx` file it
ships, writes seeded realistic inputs for every real graph input as .npy, runs
the model once in ONNX Runtime (CPU) and checks the outputs, then writes
OUT_DIR/models.json:

    {"models": [{"name", "package", "path", "shapes", "inputs", "vendor_ops",
                 "nodes", "ort_runs", "outputs", "output_shapes", "note",
                 ["error"]}, ...]}

- shapes:     concrete shape of every graph input that is not an initializer
- inputs:     input name -> OUT_DIR/inputs/<safe name>/<input>.npy
- outputs:    output name -> OUT_DIR/outputs/<safe name>/<output>.npy, the
              ONNX Runtime result on those inputs (only when ort_runs)
- vendor_ops: "domain::OpType" of ops outside "", "ai.onnx", "ai.onnx.ml",
              anywhere in the graph including subgraphs
- nodes:      number of top-level nodes

Checks, per model: ORT runs it, every output is finite, and some output holds
two distinct values. Where every output is a single value (fixed batch 1
classifiers), the model is run again on a second seeded input instead and
some output must change. Exits non-zero if a check fails.

Needs (pip): onnxruntime==1.31.1 onnx==1.23.2 numpy, and the model packages,
installed without their dependencies:

    python3 -m pip install --no-deps rapidocr-onnxruntime==1.4.4 \
        silero-vad==6.2.3 magika==1.0.3 ddddocr==1.6.1 speechmos==0.0.1.1 \
        openwakeword==0.4.0

Usage: real_models.py OUT_DIR
"""
import importlib.util
import json
import os
import re
import shutil
import sys
import time
import zlib

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        f"real_models.py: missing Python package ({e}). Install with:\n"
        "  python3 -m pip install onnxruntime==1.31.1 onnx==1.23.2 numpy"
    )

# module name -> pinned distribution ("name==version")
PACKAGES = {
    "rapidocr_onnxruntime": "rapidocr-onnxruntime==1.4.4",
    "silero_vad": "silero-vad==6.2.3",
    "magika": "magika==1.0.3",
    "ddddocr": "ddddocr==1.6.1",
    "speechmos": "speechmos==0.0.1.1",
    "openwakeword": "openwakeword==0.4.0",
}
INSTALL_HINT = (
    "python3 -m pip install --no-deps rapidocr-onnxruntime==1.4.4 silero-vad==6.2.3 "
    "magika==1.0.3 ddddocr==1.6.1 speechmos==0.0.1.1 openwakeword==0.4.0"
)
# Leading path components dropped when naming a model.
GENERIC_DIRS = {"data", "models", "resources"}
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}

F32 = np.float32


# ---------------------------------------------------------------- signals ---

def speechlike(rng, shape, scale=0.1):
    """Noise shaped a little like speech: a few decaying harmonics plus noise,
    clipped to [-1, 1)."""
    n = shape[-1]
    t = np.arange(n) / 16000.0
    out = np.empty(shape, dtype=np.float64)
    flat = out.reshape(-1, n)
    for row in flat:
        f0 = rng.uniform(90, 250)
        sig = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3))
                  for k in range(1, 6))
        row[:] = scale * (0.5 * sig + rng.normal(0, 0.3, n))
    return np.clip(out, -1.0, 1.0 - 1e-6).astype(F32)


def log_power_spec(rng, frames, nfft, scale_db=1.0):
    """log10 power spectrogram of speech-like audio: [frames, nfft//2+1]."""
    hop = nfft // 2
    audio = speechlike(rng, (hop * (frames + 1),)).astype(np.float64)
    win = np.hanning(nfft)
    idx = np.arange(frames)[:, None] * hop + np.arange(nfft)[None, :]
    spec = np.abs(np.fft.rfft(audio[idx] * win, axis=1)) ** 2
    return (scale_db * np.log10(spec + 1e-12)).astype(F32)


def mel_db_norm(rng, shape):
    """Stand-in for (power_to_db(mel, ref=max) + 40) / 40: values in [-1, 1]."""
    base = rng.uniform(-1.0, 0.6, shape[:-1] + (1,))
    return np.clip(base + rng.normal(0, 0.25, shape), -1.0, 1.0).astype(F32)


def text_image(rng, h, w, channels=3):
    """A light page with dark 'glyph' blocks on a few text lines, in [0, 1)."""
    img = np.full((h, w), rng.uniform(0.82, 0.95)) + rng.normal(0, 0.02, (h, w))
    line_h = max(6, h // 3)
    y = rng.integers(1, max(2, h - line_h))
    while y + line_h <= h:
        x = rng.integers(0, max(1, w // 8))
        while x < w - 4:
            cw = rng.integers(3, max(4, line_h))
            ink = rng.uniform(0.05, 0.3)
            for _ in range(3):  # a few strokes per glyph
                sy = y + rng.integers(0, line_h // 2)
                sx = x + rng.integers(0, max(1, cw // 2))
                img[sy:sy + rng.integers(1, line_h // 2 + 2), sx:sx + rng.integers(1, cw // 2 + 2)] = ink
            x += cw + rng.integers(1, 4)
        y += line_h + rng.integers(2, 8)
    img = np.clip(img, 0.0, 0.999)
    return np.repeat(img[None], channels, axis=0).astype(F32)


def ocr_norm(img):
    """PaddleOCR / RapidOCR normalisation: (x - 0.5) / 0.5."""
    return ((img - 0.5) / 0.5).astype(F32)


# ------------------------------------------------------ per-model inputs ---
# Each function takes a numpy Generator and returns {input name: array}.

def rapidocr_det(rng):
    # DB detector: any multiple of 32; a small text patch.
    return {"x": ocr_norm(text_image(rng, 64, 96))[None]}


def rapidocr_rec(rng):
    # CRNN/SVTR recogniser: height 48, width a multiple of 8 (-> W/8 steps).
    return {"x": ocr_norm(text_image(rng, 48, 160))[None]}


def rapidocr_cls(rng):
    # Angle classifier, standard 3x48x192; batch 2 (one flipped).
    a = ocr_norm(text_image(rng, 48, 192))
    return {"x": np.stack([a, a[:, ::-1, ::-1]]).copy()}


def silero_576(rng, batch=2, sr=True):
    # silero-vad v5/v6 ONNX: 512 new samples at 16 kHz plus 64 samples of
    # context, as silero_vad.utils_vad.OnnxWrapper feeds it (576 in all).
    feeds = {"input": speechlike(rng, (batch, 576)),
             "state": np.zeros((2, batch, 128), F32)}
    if sr:
        feeds["sr"] = np.array(16000, dtype=np.int64)
    return feeds


def silero_half(rng):
    return silero_576(rng, sr=False)


def silero_openvino(rng):
    return silero_576(rng, batch=1, sr=False)  # all dims fixed: [1, 576]


def silero_sequence(rng):
    # rows are consecutive 576-sample windows (512 + 64 context), batch 1 LSTM
    return {"input": speechlike(rng, (4, 576)),
            "h": np.zeros((1, 1, 128), F32), "c": np.zeros((1, 1, 128), F32)}


def magika_model(rng):
    # features: first 1024 + last 1024 bytes, 256 = padding. Row 0: a short
    # text file (padded); row 1: a binary blob.
    text = rng.choice(np.frombuffer(b"etaoin shrdlu\n{}()=;:,.\"'0123456789_", np.uint8), 700)
    row0 = np.full(2048, 256, np.int32)
    row0[:700] = text
    row0[1024:1024 + 700] = text
    row1 = rng.integers(0, 256, 2048).astype(np.int32)
    row1[:4] = [0x7F, 0x45, 0x4C, 0x46]  # ELF magic
    return {"bytes": np.stack([row0, row1])}


def ddddocr_ocr(rng):
    # grayscale captcha, height 64, values /255 -> [0, 1); width 96 -> 12 steps
    return {"input1": text_image(rng, 64, 96, channels=1)[None]}


def ddddocr_det(rng):
    # YOLOX-style detector, fixed 1x3x416x416, raw 0..255 pixels, pad value 114
    img = np.full((3, 416, 416), 114.0, F32)
    img[:, :208, :312] = text_image(rng, 208, 312) * 255.0
    return {"images": img[None]}


def dnsmos_logpow(rng):
    # old DNSMOS sig/bak_ovr: log-power spectrogram, 901 frames x 161 bins
    # (all fixed but the batch). Batch 1: these are the slowest models here.
    return {"input_1": log_power_spec(rng, 901, 320)[None]}


def dnsmos_p808(rng):
    # P.808 model: normalised mel dB, 900 frames x 120 mels; batch 2
    return {"input_1": mel_db_norm(rng, (2, 900, 120))}


def dnsmos_raw(rng):
    # DNSMOS P.835 (sig_bak_ovr): raw 16 kHz audio, 9.01 s = 144160 samples
    return {"input_1": speechlike(rng, (1, 144160))}


def aecmos(hidden, scenario):
    def make(rng):
        # stacked mel features of loopback, mic, enhanced: [1, 3, frames, 160].
        # Scenario-aware models get 20 rows of marker ones + 20 rows of zeros.
        # h0 is fixed at batch 1, so the batch is 1.
        feats = mel_db_norm(rng, (1, 3, 24 if scenario else 64, 160))
        if scenario:
            marker = np.concatenate([np.ones((1, 3, 20, 160), F32), np.zeros((1, 3, 20, 160), F32)], axis=2)
            feats = np.concatenate([feats, marker], axis=2)
        return {"input": feats, "h0": np.zeros((4, 1, hidden), F32)}
    return make


def plcmos(rng):
    # log-power STFT / 20 (floor -120 dB), 512-point DFT -> 257 bins; batch 2
    # (the graph declares a scalar output; ORT gives one score per item).
    spec = np.stack([log_power_spec(rng, 32, 512, scale_db=10.0) / 20.0 for _ in range(2)])
    return {"degraded_audio": np.maximum(spec, -6.0)[:, None].astype(F32),
            "rater_embed": rng.normal(size=(2, 64)).astype(F32)}


def oww_melspec(rng):
    # openwakeword feeds int16-scale floats (not [-1, 1)); 1280 samples = 80 ms
    return {"input": np.round(speechlike(rng, (1, 1280), scale=0.3) * 32767).astype(F32)}


def oww_embedding(rng):
    # windows of 76 melspectrogram frames x 32 bins, transformed x/10 + 2
    return {"input_1": rng.normal(5.0, 1.5, (2, 76, 32, 1)).astype(F32)}


def oww_classifier(frames, batch=1, name="onnx::Flatten_0"):
    def make(rng):
        # frames x 96 speech embeddings; scale 4 keeps the sigmoid heads unsaturated
        return {name: rng.normal(0.0, 4.0, (batch, frames, 96)).astype(F32)}
    return make


def oww_silero(rng):
    # silero-vad v4 (h/c state, 64 units): 512-sample window at 16 kHz
    return {"input": speechlike(rng, (2, 512)), "sr": np.array(16000, dtype=np.int64),
            "h": np.zeros((2, 2, 64), F32), "c": np.zeros((2, 2, 64), F32)}


SPECS = {
    "rapidocr-onnxruntime/ch_PP-OCRv4_det_infer": rapidocr_det,
    "rapidocr-onnxruntime/ch_PP-OCRv4_rec_infer": rapidocr_rec,
    "rapidocr-onnxruntime/ch_ppocr_mobile_v2.0_cls_infer": rapidocr_cls,
    "silero-vad/silero_vad": silero_576,
    "silero-vad/silero_vad_16k_op15": silero_576,
    "silero-vad/silero_vad_op18_ifless": silero_576,
    "silero-vad/silero_vad_half": silero_half,
    "silero-vad/silero_vad_openvino_16k": silero_openvino,
    "silero-vad/silero_vad_16k_sequence": silero_sequence,
    "magika/standard_v3_3/model": magika_model,
    "ddddocr/common": ddddocr_ocr,
    "ddddocr/common_old": ddddocr_ocr,
    "ddddocr/common_det": ddddocr_det,
    "speechmos/dnsmos_models/sig": dnsmos_logpow,
    "speechmos/dnsmos_models/bak_ovr": dnsmos_logpow,
    "speechmos/dnsmos_models/model_v8": dnsmos_p808,
    "speechmos/dnsmos_models/sig_bak_ovr": dnsmos_raw,
    "speechmos/pdnsmos_models/sig_bak_ovr": dnsmos_raw,
    "speechmos/aecmos_models/Run_1663829550_Stage_0": aecmos(64, scenario=False),
    "speechmos/aecmos_models/Run_1663915512_Stage_0": aecmos(64, scenario=True),
    "speechmos/aecmos_models/Run_1668423760_Stage_0": aecmos(96, scenario=True),
    "speechmos/plcmos_models/plcmos_v2": plcmos,
    "openwakeword/melspectrogram": oww_melspec,
    "openwakeword/embedding_model": oww_embedding,
    "openwakeword/alexa_v0.1": oww_classifier(16),
    "openwakeword/hey_jarvis_v0.1": oww_classifier(16, name="x.1"),
    "openwakeword/hey_marvin_v0.1": oww_classifier(16),
    "openwakeword/hey_mycroft_v0.1": oww_classifier(16, batch=2, name="input_1"),
    "openwakeword/timer_v0.1": oww_classifier(34),
    "openwakeword/weather_v0.1": oww_classifier(22),
    "openwakeword/silero_vad": oww_silero,
}

NOTES = {
    "silero-vad/silero_vad": "576 = 512 samples + 64 context (OnnxWrapper); 512 alone runs but gives the same output for every row",
    "ddddocr/common": "graph declares output [1, seqlen]; ORT returns [T, 1, 8210] logits (T = width/8)",
    "ddddocr/common_old": "dynamically quantised; uses com.microsoft::DynamicQuantizeLSTM (ORT CPU has it); output as ddddocr/common",
    "speechmos/aecmos_models/Run_1663829550_Stage_0": "h0 fixes batch 1; output declared [batch_size] but has 4 values",
    "speechmos/aecmos_models/Run_1663915512_Stage_0": "h0 fixes batch 1; output declared [batch_size] but has 4 values",
    "speechmos/aecmos_models/Run_1668423760_Stage_0": "h0 fixes batch 1; output declared [batch_size] but has 2 values",
    "speechmos/plcmos_models/plcmos_v2": "output declared as a scalar []; ORT returns [batch]",
    "openwakeword/melspectrogram": "input is int16-scale audio; needs >= 640 samples (480 fails in Conv)",
    "speechmos/dnsmos_models/sig": "fixed 901x161, ~0.5 s on 2 cores; batch 1 (single output value)",
    "speechmos/dnsmos_models/bak_ovr": "fixed 901x161, ~0.5 s on 2 cores; batch 1",
}


# ---------------------------------------------------------------- helpers ---

def find_package_dirs(module):
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"real_models.py: package '{module}' is not installed. Install with:\n  {INSTALL_HINT}")
    return sorted(set(spec.submodule_search_locations))


def model_name(dist, rel):
    parts = rel[: -len(".onnx")].split("/")
    while len(parts) > 1 and parts[0] in GENERIC_DIRS:
        parts = parts[1:]
    return dist.split("==")[0] + "/" + "/".join(parts)


def safe(s):
    return re.sub(r"[^A-Za-z0-9._-]", "_", s)


def seed_of(name):
    return zlib.crc32(name.encode()) & 0xFFFFFFFF


def all_ops(graph):
    """Every op of the graph and its subgraphs, as sorted "domain::OpType"."""
    ops = set()

    def walk(g):
        for n in g.node:
            ops.add(f"{n.domain}::{n.op_type}")
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    walk(graph)
    return sorted(ops)


def vendor_ops(graph):
    return [o for o in all_ops(graph) if o.split("::")[0] not in STANDARD_DOMAINS]


def real_inputs(model):
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def check_feeds(model, feeds):
    """The feeds cover exactly the real inputs, with a matching element type
    and agreeing with every fixed dimension."""
    ins = real_inputs(model)
    names = [i.name for i in ins]
    if sorted(names) != sorted(feeds):
        raise ValueError(f"inputs {names} but spec gives {sorted(feeds)}")
    for i in ins:
        t = i.type.tensor_type
        want = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        a = feeds[i.name]
        if a.dtype != want:
            raise ValueError(f"input {i.name}: dtype {a.dtype}, graph wants {want}")
        dims = t.shape.dim
        if t.HasField("shape") and len(dims) != a.ndim:
            raise ValueError(f"input {i.name}: rank {a.ndim}, graph wants {len(dims)}")
        for k, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != a.shape[k]:
                raise ValueError(f"input {i.name}: dim {k} is {a.shape[k]}, graph fixes {d.dim_value}")


def generic_feeds(model, rng):
    """Fallback for a model with no spec: unknown dims -> 1, floats in [0, 1)."""
    feeds = {}
    for i in real_inputs(model):
        t = i.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim]
        dt = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dt, np.floating):
            feeds[i.name] = rng.random(shape).astype(dt)
        else:
            feeds[i.name] = rng.integers(0, 2, shape).astype(dt)
    return feeds


def run_ort(path, feeds):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    t0 = time.perf_counter()
    outs = sess.run(None, feeds)
    return names, outs, time.perf_counter() - t0


def verify(name, spec, path, feeds, outs):
    """Returns a list of problems (empty when fine)."""
    problems = []
    for o in outs:
        if np.issubdtype(o.dtype, np.floating) and not np.isfinite(o).all():
            problems.append("non-finite output")
    if any(np.unique(o).size >= 2 for o in outs):
        return problems
    if all(o.size <= 1 for o in outs):
        # single-value model: it must at least react to its input
        other = spec(np.random.default_rng(seed_of(name) + 1))
        _, outs2, _ = run_ort(path, other)
        if all(np.array_equal(a, b) for a, b in zip(outs, outs2)):
            problems.append("single-value outputs do not change with the input")
        return problems
    problems.append("every output is constant")
    return problems


# ------------------------------------------------------------------- main ---

def collect():
    found = []
    for module, dist in PACKAGES.items():
        for base in find_package_dirs(module):
            for root, dirs, files in os.walk(base):
                dirs.sort()
                for f in sorted(files):
                    if f.endswith(".onnx"):
                        p = os.path.join(root, f)
                        rel = os.path.relpath(p, base).replace(os.sep, "/")
                        found.append((model_name(dist, rel), dist, os.path.abspath(p)))
    names = [n for n, _, _ in found]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SystemExit(f"real_models.py: two models would share a name: {sorted(dup)}")
    return found


def main(out):
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    for sub in ("inputs", "outputs"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    ort.set_default_logger_severity(3)

    entries, failures, rows = [], [], []
    for name, dist, path in collect():
        model = onnx.load(path, load_external_data=False)
        spec = SPECS.get(name)
        note = NOTES.get(name, "")
        if spec is None:
            note = (note + "; " if note else "") + "no input spec: generic inputs"
            print(f"warning: {name}: no input spec, using generic inputs", file=sys.stderr)
            spec = lambda rng, m=model: generic_feeds(m, rng)  # noqa: E731
        feeds = spec(np.random.default_rng(seed_of(name)))
        check_feeds(model, feeds)

        d_in = os.path.join(out, "inputs", safe(name.replace("/", "__")))
        os.makedirs(d_in)
        inputs, used = {}, set()
        for k in sorted(feeds):
            fn = safe(k)
            while fn in used:
                fn += "_"
            used.add(fn)
            inputs[k] = os.path.join(d_in, fn + ".npy")
            np.save(inputs[k], feeds[k])

        entry = {
            "name": name, "package": dist, "path": path,
            "shapes": {k: list(v.shape) for k, v in feeds.items()},
            "inputs": inputs,
            "vendor_ops": vendor_ops(model.graph),
            "nodes": len(model.graph.node),
        }
        secs = None
        try:
            out_names, outs, secs = run_ort(path, feeds)
        except Exception as e:  # ORT refuses the model
            # listed, not fatal: some shipped models need ops ORT lacks
            entry.update(ort_runs=False, error=str(e).strip().splitlines()[0][:500])
            print(f"warning: {name}: ORT refuses it: {entry['error']}", file=sys.stderr)
        else:
            problems = verify(name, spec, path, feeds, outs)
            entry["ort_runs"] = True
            d_out = os.path.join(out, "outputs", safe(name.replace("/", "__")))
            os.makedirs(d_out)
            entry["outputs"], used = {}, set()
            for k, v in zip(out_names, outs):
                fn = safe(k)[:100]
                while fn in used:
                    fn += "_"
                used.add(fn)
                entry["outputs"][k] = os.path.join(d_out, fn + ".npy")
                np.save(entry["outputs"][k], v)
            entry["output_shapes"] = {k: list(v.shape) for k, v in zip(out_names, outs)}
            if problems:
                entry["error"] = "; ".join(problems)
                failures.append(f"{name}: {entry['error']}")
        entry["note"] = note
        entries.append(entry)
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
        ok = "ok" if entry["ort_runs"] and "error" not in entry else "FAIL"
        rows.append((name, shapes, ok, "-" if secs is None else f"{secs:.3f}"))

    with open(os.path.join(out, "models.json"), "w") as f:
        json.dump({"models": entries}, f, indent=1)
        f.write("\n")

    w = [max(len(r[i]) for r in rows + [("name", "inputs", "ORT", "seconds")]) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w[i]) for i, c in enumerate(r))  # noqa: E731
    print(line(("name", "inputs", "ORT", "seconds")))
    for r in rows:
        print(line(r))
    print(f"{len(entries)} models, {len(failures)} failed -> {os.path.join(out, 'models.json')}")
    for f in failures:
        print("FAIL", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    sys.exit(main(sys.argv[1]))
