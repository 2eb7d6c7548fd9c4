"""Every zoo model, built by pyengine (fp32, CPU), against onnxruntime.

Outputs are compared elementwise (rtol = atol = 1e-4) and by relative L2 error,
for the built engine and for the same engine after a save/load round trip.
"""

import functools

import numpy as np
import pytest

import pyengine
from models import ZOO, make_input, run_onnxruntime

pytest.importorskip("onnxruntime")

RTOL = 1e-4
ATOL = 1e-4
MAX_REL_L2 = 1e-5
BATCHES = (1, 3)
SLOW_MODELS = {"resnet50"}


@functools.lru_cache(maxsize=None)
def zoo_model(name):
    return ZOO[name]()


@functools.lru_cache(maxsize=None)
def case(name, batch):
    """Returns (feeds, onnxruntime outputs) for a zoo model and batch size."""
    model = zoo_model(name)
    feeds = make_input(model, batch, seed=batch)
    return feeds, run_onnxruntime(model, feeds)


@pytest.fixture(scope="module", params=[
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODELS else name
    for name in ZOO])
def model_name(request):
    return request.param


@pytest.fixture(scope="module")
def engine(model_name):
    return pyengine.build(zoo_model(model_name), backend="cpu")


def assert_outputs_close(actual, expected):
    """Checks every output: same names, shape and dtype, allclose and relative L2."""
    assert sorted(actual) == sorted(expected)
    for name, ref in expected.items():
        out = actual[name]
        assert isinstance(out, np.ndarray), name
        assert out.dtype == ref.dtype and out.shape == ref.shape, (name, out.dtype, out.shape)
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL, err_msg=f"output {name!r}")
        ref64 = ref.astype(np.float64)
        rel_l2 = np.linalg.norm(out - ref64) / np.linalg.norm(ref64)
        assert rel_l2 < MAX_REL_L2, f"output {name!r}: relative L2 error {rel_l2:.3g}"


@pytest.mark.parametrize("batch", BATCHES)
def test_matches_onnxruntime(model_name, engine, batch):
    feeds, expected = case(model_name, batch)
    assert_outputs_close(engine.run(feeds), expected)


@pytest.mark.parametrize("batch", BATCHES)
def test_matches_onnxruntime_after_save_load(model_name, engine, batch, tmp_path):
    path = tmp_path / f"{model_name}.plan"
    engine.save(str(path))
    feeds, expected = case(model_name, batch)
    assert_outputs_close(pyengine.load(str(path)).run(feeds), expected)
