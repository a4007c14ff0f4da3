"""Writes crafted hostile ONNX models into OUT (for crates/cli/tests/hostile_models.rs).

Each is what an attacker would hand a user, a deployer or a node:
- key_initializer.onnx: an initializer whose external data is OUT/node.json,
  a SplitUp key file (mode 0600) that this script writes with a marker secret;
- key_attribute.onnx: a ConstantOfShape whose `value` attribute tensor points
  at the same key file;
- custom_op.onnx: a node of a vendor domain (com.evil::Steal);
- loop_2_62.onnx: a Loop whose trip count is the constant 2^62;
- over_vram.onnx: ConstantOfShape whose shape is a model input (the user
  can make it allocate any amount);
- type_mismatch.onnx: Add of a float input and an int64 initializer, which
  passes the op allow-list but ONNX Runtime refuses to load;
- ir14.onnx: a plain model saved with IR version 14, which the pinned ONNX
  Runtime cannot load (onnx 1.23 writes it by default).
Usage: python3 hostile_models.py OUT
"""

import json
import os
import sys

import onnx
from onnx import TensorProto, helper

SECRET = "5ec12e7" * 9 + "5"  # 64 hex digits, easy to grep for


def external(name, dims, length):
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.UINT8
    t.dims.extend(dims)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "node.json"), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def save(m, out, name, ir=8):
    m.ir_version = ir
    onnx.save(m, os.path.join(out, name))


def opset(v=17):
    return [helper.make_opsetid("", v)]


def main(out):
    os.makedirs(out, exist_ok=True)
    key = os.path.join(out, "node.json")
    with open(key, "w") as f:
        json.dump({"secret": SECRET, "public": "00" * 32}, f)
    os.chmod(key, 0o600)
    key_len = os.path.getsize(key)

    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [key_len])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [key_len])
    w = external("w", [key_len], key_len)
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "steal", [x], [y], [w])
    save(helper.make_model(g, opset_imports=opset()), out, "key_initializer.onnx")

    v = external("v", [1], 1)
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [key_len])
    n = helper.make_node("ConstantOfShape", ["shape"], ["c"], value=v)
    g = helper.make_graph(
        [n, helper.make_node("Add", ["x", "c"], ["y"])], "steal_attr", [x], [y], [shape]
    )
    save(helper.make_model(g, opset_imports=opset()), out, "key_attribute.onnx")

    f = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    fy = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    g = helper.make_graph([helper.make_node("Steal", ["x"], ["y"], domain="com.evil")], "custom", [f], [fy])
    save(
        helper.make_model(g, opset_imports=opset() + [helper.make_opsetid("com.evil", 1)]),
        out,
        "custom_op.onnx",
    )

    # Loop(M = 2^62, cond = true, v = x): body adds 1 to v.
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    g = helper.make_graph(
        [helper.make_node("Loop", ["m", "t", "x"], ["y"], body=body)],
        "forever",
        [f],
        [fy],
        [
            helper.make_tensor("m", TensorProto.INT64, [], [1 << 62]),
            helper.make_tensor("t", TensorProto.BOOL, [], [True]),
        ],
    )
    save(helper.make_model(g, opset_imports=opset()), out, "loop_2_62.onnx")

    s = helper.make_tensor_value_info("n", TensorProto.INT64, [1])
    big = helper.make_tensor_value_info("big", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("ConstantOfShape", ["n"], ["big"])], "alloc", [s], [big])
    save(helper.make_model(g, opset_imports=opset()), out, "over_vram.onnx")

    g = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "mismatch",
        [f],
        [fy],
        [helper.make_tensor("c", TensorProto.INT64, [4], [1, 2, 3, 4])],
    )
    save(helper.make_model(g, opset_imports=opset()), out, "type_mismatch.onnx")

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "plain", [f], [fy])
    save(helper.make_model(g, opset_imports=opset()), out, "ir14.onnx", ir=14)
    print(SECRET)


if __name__ == "__main__":
    main(sys.argv[1])
