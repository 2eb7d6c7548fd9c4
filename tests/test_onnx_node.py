"""ONNX backend node tests, driven by tests/onnx_node_allowlist.txt: every
listed case must pass, so a regression fails loudly. Cases not listed are
operators or variants pyengine does not support (yet)."""

import functools

import pytest

import onnx_node


@functools.lru_cache(maxsize=1)
def _cases():
    return onnx_node.all_cases()


ALLOWED = onnx_node.read_allowlist()


def test_allowlist_names_exist():
    missing = [n for n in ALLOWED if n not in _cases()]
    assert not missing, f"allow-list names unknown to this onnx version: {missing[:10]}"


@pytest.mark.parametrize("name", ALLOWED)
def test_node(name):
    model, sets, rtol, atol = _cases()[name]
    onnx_node.run_case(model, sets, rtol, atol)
