"""The `pyengine` console script end to end on zoo models: build, run,
profile (--json), compare, inspect, and the exit codes of bad invocations."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

import pyengine

from models import ZOO


def _cli():
    exe = shutil.which("pyengine")
    return [exe] if exe else [sys.executable, "-m", "pyengine"]


def run_cli(*args, cwd=None):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.exists(os.path.join(root, "pyengine", "__init__.py")) and any(
            f.startswith("_core") for f in os.listdir(os.path.join(root, "pyengine"))):
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")  # an in-place development build
    return subprocess.run(_cli() + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    path = d / "resnet18.onnx"
    onnx.save(ZOO["resnet18"](), path)
    return path


def test_build_run_compare_inspect(r18, tmp_path):
    plan = tmp_path / "r18.plan"
    res = run_cli("build", r18, "-o", plan)
    assert res.returncode == 0, res.stderr
    assert plan.exists() and "optimizer" in res.stdout

    out = tmp_path / "out.npz"
    x = np.random.default_rng().standard_normal((2, 3, 64, 64), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    res = run_cli("run", plan, "--input", tmp_path / "x.npy", "--output", out)
    assert res.returncode == 0, res.stderr
    with np.load(out) as z:
        assert z["output"].shape == (2, 10)

    res = run_cli("compare", plan, f"onnxruntime:{r18}", "--batch", 2, "--json", tmp_path / "cmp.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASSED" in res.stdout
    report = json.loads((tmp_path / "cmp.json").read_text())
    assert report["pass"] and report["outputs"]["output"]["cosine"] > 0.9999

    res = run_cli("inspect", r18)
    assert res.returncode == 0, res.stderr
    assert "Conv" in res.stdout and "GFLOPs" in res.stdout and "input" in res.stdout


def test_compare_detects_a_mismatch(r18, tmp_path):
    other = tmp_path / "other.onnx"
    onnx.save(ZOO["resnet18"](seed=1), other)
    res = run_cli("compare", r18, f"onnxruntime:{other}")
    assert res.returncode == 3 and "FAILED" in res.stdout


def test_compare_int8_plan_uses_cosine(r18, tmp_path):
    """An INT8 plan against FP32 onnxruntime: elementwise FP32 tolerances
    cannot hold, so the default criterion is the cosine (>= 0.99); explicit
    --atol/--rtol still mean an elementwise check, and a different model
    still fails."""
    import pyengine
    from pyengine import zoo

    def int8_plan(model, path):
        calib = [zoo.make_input(model, 4, seed=s) for s in range(3)]
        pyengine.build(model, precision="int8", calibration_data=calib, progress=False).save(path)

    plan = tmp_path / "r18-int8.plan"
    int8_plan(onnx.load(r18), plan)
    res = run_cli("compare", plan, f"onnxruntime:{r18}", "--batch", 4, "--seed", np.random.default_rng().integers(1 << 30))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASSED (cosine >= 0.99)" in res.stdout
    res = run_cli("compare", plan, f"onnxruntime:{r18}", "--batch", 4, "--atol", 1e-4, "--rtol", 1e-4)
    assert res.returncode == 3 and "FAILED (atol 0.0001, rtol 0.0001)" in res.stdout
    other = tmp_path / "other-int8.plan"
    int8_plan(ZOO["resnet18"](seed=1), other)
    res = run_cli("compare", other, f"onnxruntime:{r18}", "--batch", 4)
    assert res.returncode == 3 and "FAILED (cosine >= 0.99)" in res.stdout


def test_profile_json(r18, tmp_path):
    js = tmp_path / "prof.json"
    res = run_cli("profile", r18, "--batch", "1,2", "--iterations", 5, "--warmup-ms", 10,
                  "--per-layer", "--compare", "onnxruntime", "--json", js)
    assert res.returncode == 0, res.stderr
    data = json.loads(js.read_text())
    assert {"cpu", "cores", "isa", "versions"} <= set(data["machine"])
    rows = data["results"]
    # No --threads: both runtimes run the default count, and the machine line says so.
    default = data["machine"]["default_threads"]
    assert default == pyengine.default_threads() and {r["threads"] for r in rows} == {default}
    assert f"pyengine threads {default} (default {default}: one per physical core" in res.stdout
    assert {(r["runtime"], r["batch"]) for r in rows} == {("pyengine", 1), ("pyengine", 2),
                                                          ("onnxruntime", 1), ("onnxruntime", 2)}
    for r in rows:
        assert len(r["samples_ms"]) == 5
        s = r["stats"]
        assert s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert s["throughput_per_s"] > 0 and s["cv_percent"] >= 0
    layers = next(r for r in rows if r["runtime"] == "pyengine")["layers"]
    assert layers and abs(sum(l["share"] for l in layers) - 1.0) < 1e-6
    assert any(l["op"] in ("Conv", "FusedConv") and l["gflops_per_s"] > 0 for l in layers)
    assert "vs ort" in res.stdout
    # onnxruntime's own per-node times beside each layer (--per-layer --compare onnxruntime).
    assert "ort ms" in res.stdout
    with_ort = [l for l in layers if l.get("ort_ms")]
    assert any(l["op"] in ("Conv", "FusedConv") for l in with_ort) and all(l["ort_ms"] > 0 for l in with_ort)
    convs = [l for l in layers if l["op"] in ("Conv", "FusedConv")]
    assert len([l for l in convs if l.get("ort_ms")]) == len(convs), "every conv layer finds its onnxruntime nodes"


def test_profile_qdq_file_int8_per_layer(r18, tmp_path):
    # A Q/DQ file (here pyengine's own; ModelOpt's or onnxruntime's alike)
    # profiles as INT8 with its own scales, also without --precision (as
    # build and run decide from the graph): no calibration is added, and
    # onnxruntime's per-node times are its int8 ones.
    import pyengine

    rng = np.random.default_rng()
    calib = [rng.standard_normal((2, 3, 64, 64), dtype=np.float32) for _ in range(2)]
    qdq = tmp_path / "r18_qdq.onnx"
    onnx.save(pyengine.quantize(onnx.load(r18), calibration_data=calib, progress=False), qdq)
    js = tmp_path / "prof.json"
    res = run_cli("profile", qdq, "--batch", 2, "--iterations", 3, "--warmup-ms", 10,
                  "--per-layer", "--compare", "onnxruntime", "--json", js)
    assert res.returncode == 0, res.stderr
    assert "calibrated on random inputs" not in res.stderr
    ours = next(r for r in json.loads(js.read_text())["results"] if r["runtime"] == "pyengine")
    assert ours["precision"] == "int8"
    layers = ours["layers"]
    qconvs = [l for l in layers if l["op"] == "QConv"]
    assert qconvs and all(l.get("ort_ms") for l in qconvs)


def test_ort_nodes_map_to_layers_by_origin():
    from pyengine.profile import attach_ort_layers

    rows = [{"name": "conv_0", "origin": ["conv_0", "batchnormalization_0", "relu_0"]},
            {"name": "conv_1", "origin": ["conv_1"]},
            {"name": "pool", "origin": []}]
    # onnxruntime's renamed fused nodes (suffixes after a node name), one it
    # inserted, and a node cut back only as far as a real name.
    node_ms = {"relu_0_nchwc": 1.5, "conv_1_token_12": 0.25, "conv_1": 0.5, "ReorderOutput": 0.125, "pool": 2.0}
    unclaimed = attach_ort_layers(rows, node_ms)
    assert [r["ort_ms"] for r in rows] == [1.5, 0.75, 2.0]
    assert unclaimed == 0.125


@pytest.mark.parametrize("args,code,message", [
    (["build", "missing.onnx", "-o", "x.plan"], 1, "does not exist"),
    (["run", "missing.plan"], 1, "does not exist"),
    (["profile", "missing.onnx"], 1, "does not exist"),
    (["compare", "a.onnx", "b.onnx"], 1, "does not exist"),
    (["inspect", "nothing.plan"], 1, "does not exist"),
    (["build"], 2, "usage"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_bad_invocations(tmp_path, args, code, message):
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == code
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_model_and_bad_option(r18, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all" * 20)
    res = run_cli("inspect", bad)
    assert res.returncode == 1 and "bad.onnx" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("profile", r18, "--batch", "0")
    assert res.returncode == 1 and "--batch" in res.stderr
    res = run_cli("profile", r18, "--precision", "fp64")
    assert res.returncode == 1 and "fp64" in res.stderr


def test_demo_fp32_and_int8(tmp_path):
    r = run_cli("demo", "--model", "resnet18", "--size", "32", "--duration", "0.2", "--out", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    assert "pyengine/ort =" in r.stdout
    assert f"s, {pyengine.default_threads()} threads" in r.stdout  # the FP32 engine's (and onnxruntime's) count
    assert "built an INT8 engine" in r.stdout and "speed-up over pyengine fp32" in r.stdout
    cos = float(r.stdout.split("cosine int8 vs fp32 ")[1].split()[0])
    assert 0.9 < cos <= 1.0001, r.stdout
    assert (tmp_path / "d" / "resnet18.plan").stat().st_size > 0
