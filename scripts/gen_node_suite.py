#!/usr/bin/env python3
"""Writes the ONNX backend node test suite as files SplitUp's conformance test reads.

Uses onnx.backend.test.case.node.collect_testcases() from the pip `onnx`
package: one directory per case with model.onnx and test_data_set_N/
{input,output}_K.pb (TensorProto). Cases whose inputs or outputs are not
plain tensors (sequences, optionals, maps) get a file `unsupported` naming why,
so the Rust side counts them instead of guessing.

Usage: gen_node_suite.py OUT_DIR
"""
import os
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases


def main(out):
    warnings.simplefilter("ignore")
    os.makedirs(out, exist_ok=True)
    cases = collect_testcases()
    written = 0
    for case in cases:
        d = os.path.join(out, case.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        for i, (inputs, outputs) in enumerate(case.data_sets or []):
            ds = os.path.join(d, f"test_data_set_{i}")
            os.makedirs(ds, exist_ok=True)
            try:
                for kind, values, infos in (("input", inputs, case.model.graph.input), ("output", outputs, case.model.graph.output)):
                    for k, v in enumerate(values):
                        if isinstance(v, onnx.TensorProto):
                            t = v  # types numpy has no dtype for (float8, int4, ...)
                        else:
                            if isinstance(v, np.generic):
                                v = np.asarray(v)
                            if not isinstance(v, np.ndarray):
                                raise TypeError(f"{kind} {k} is a {type(v).__name__}, not a tensor")
                            t = numpy_helper.from_array(v, infos[k].name if k < len(infos) else f"{kind}_{k}")
                        with open(os.path.join(ds, f"{kind}_{k}.pb"), "wb") as f:
                            f.write(t.SerializeToString())
            except Exception as e:  # noqa: BLE001 - the reason is recorded for the test
                with open(os.path.join(d, "unsupported"), "w") as f:
                    f.write(str(e))
        with open(os.path.join(d, "tolerance"), "w") as f:
            f.write(f"{case.rtol} {case.atol}\n")
        written += 1
    print(f"wrote {written} node test cases to {out} (onnx {onnx.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
