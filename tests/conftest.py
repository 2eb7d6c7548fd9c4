"""Shared test setup: makes tests/ importable (models.py) and seeds nothing
globally; each test draws its own fresh random inputs."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def isa_tiers():
    """The FP32 ISA tiers ("ref", "avx2", "avx512") this CPU and build have,
    whatever PYENGINE_ISA caps (tests raise or lower the cap themselves with
    _core.set_isa_cap and restore it)."""
    from pyengine import _core

    info = _core.cpu_info()
    top = info["max_isa"]
    tiers = ["ref"]
    if top != "ref":
        tiers.append("avx2")
        if top in ("avx512", "amx") or (top == "vnni" and info["avx512f"]):
            tiers.append("avx512")
    return tiers


def tier_params(tiers=("ref", "avx2", "avx512")):
    """pytest params for each tier, skipped (with the reason) where the CPU or
    build lacks it."""
    import pytest

    have = isa_tiers()
    return [pytest.param(t, id=t, marks=[] if t in have else [pytest.mark.skip(
        reason=f"this CPU/build has no {t} tier (it has {', '.join(have)})")]) for t in tiers]
