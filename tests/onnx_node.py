"""Loads the ONNX backend node tests: the cases onnx generates in memory
(onnx.backend.test.case.node) and the pytorch-converted / pytorch-operator
folders it still ships. Shared by tests/test_onnx_node.py and the allow-list
updater (python tests/onnx_node.py --update)."""

from __future__ import annotations

import glob
import os
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

ALLOWLIST = os.path.join(os.path.dirname(__file__), "onnx_node_allowlist.txt")
_DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def _read_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def all_cases() -> dict:
    """name -> (model, [(inputs, outputs)], rtol, atol)."""
    from onnx.backend.test.case.node import collect_testcases

    cases = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in collect_testcases(""):
            cases[c.name] = (c.model, c.data_sets, c.rtol, c.atol)
    for folder in ("pytorch-converted", "pytorch-operator"):
        for d in sorted(glob.glob(os.path.join(_DATA, folder, "test_*"))):
            model = onnx.load(os.path.join(d, "model.onnx"))
            sets = []
            for ds in sorted(glob.glob(os.path.join(d, "test_data_set_*"))):
                ins = [_read_pb(p) for p in sorted(glob.glob(os.path.join(ds, "input_*.pb")))]
                outs = [_read_pb(p) for p in sorted(glob.glob(os.path.join(ds, "output_*.pb")))]
                sets.append((ins, outs))
            cases[f"{folder}/{os.path.basename(d)}"] = (model, sets, 1e-3, 1e-7)
    return cases


def run_case(model, data_sets, rtol, atol) -> None:
    """Builds the model with pyengine and checks every data set; raises on mismatch."""
    import pyengine

    engine = pyengine.build(model)
    names = [s.name for s in engine.inputs]
    for inputs, expected in data_sets:
        got = engine.run(dict(zip(names, inputs)))
        for out_spec, want in zip(engine.outputs, expected):
            have = got[out_spec.name]
            want = numpy_helper.to_array(want) if isinstance(want, onnx.TensorProto) else np.asarray(want)
            assert have.shape == want.shape, f"{out_spec.name}: shape {have.shape} != {want.shape}"
            if want.dtype.kind in "fc":
                np.testing.assert_allclose(have, want, rtol=max(rtol, 1e-4), atol=max(atol, 1e-5),
                                           err_msg=out_spec.name)
            else:
                np.testing.assert_array_equal(have, want, err_msg=out_spec.name)


def read_allowlist() -> list:
    with open(ALLOWLIST) as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def update_allowlist() -> None:
    """Runs every case and writes the passing ones to the allow-list."""
    passing, failing = [], {}
    for name, (model, sets, rtol, atol) in sorted(all_cases().items()):
        try:
            run_case(model, sets, rtol, atol)
            passing.append(name)
        except Exception as exc:  # noqa: BLE001 - we record every failure kind
            failing[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    with open(ALLOWLIST, "w") as f:
        f.write("# ONNX backend node tests pyengine must pass (tests/test_onnx_node.py).\n"
                "# Regenerate with: python tests/onnx_node.py --update  (review the diff!)\n")
        for name in passing:
            f.write(name + "\n")
    print(f"{len(passing)} passing, {len(failing)} failing")
    if "-v" in sys.argv:
        for name, why in failing.items():
            print(f"  {name}: {why}")


if __name__ == "__main__":
    if "--update" in sys.argv:
        update_allowlist()
