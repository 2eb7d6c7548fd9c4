"""The default thread count (num_threads=0): PYENGINE_NUM_THREADS, else one
thread per physical core among the CPUs the process may run on, capped by
its cgroup CPU quota (engine/cpu/thread_pool.h, default_threads).

cpu_budget reads /sys and /proc under a root path: the tests give it
made-up trees (SMT siblings, cgroup v1 and v2 quotas, a hybrid host) and
check the real machine's answer against its own affinity mask.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import pyengine
from pyengine import _core, zoo
from pyengine.errors import InvalidArgumentError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="affinity masks and cgroups: Linux")


def _tree(root, siblings=None, cgroup=None, files=None):
    """A /sys and /proc tree under root: siblings {cpu: thread_siblings_list},
    cgroup the text of /proc/self/cgroup, files {relative path: text}."""
    for cpu, text in (siblings or {}).items():
        d = root / f"sys/devices/system/cpu/cpu{cpu}/topology"
        d.mkdir(parents=True)
        (d / "thread_siblings_list").write_text(text + "\n")
    if cgroup is not None:
        (root / "proc/self").mkdir(parents=True)
        (root / "proc/self/cgroup").write_text(cgroup)
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return str(root)


SMT4 = {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}  # two cores, two hardware threads each


def test_one_thread_per_physical_core(tmp_path):
    root = _tree(tmp_path, SMT4)
    assert _core._cpu_budget([0, 1, 2, 3], root) == {"cpus": 4, "cores": 2, "quota": 0.0, "threads": 2}
    assert _core._cpu_budget([0, 2], root)["threads"] == 1  # both threads of core 0
    assert _core._cpu_budget([0, 1], root)["threads"] == 2


def test_unknown_topology_counts_cpus(tmp_path):
    assert _core._cpu_budget([0, 1, 2], str(tmp_path)) == {"cpus": 3, "cores": 3, "quota": 0.0, "threads": 3}
    # One CPU without topology: the CPU count, not a partial core count.
    root = _tree(tmp_path / "partial", {0: "0,1", 1: "0,1"})
    assert _core._cpu_budget([0, 1, 2], root)["cores"] == 3


@pytest.mark.parametrize("limits, quota, threads", [
    ({"a/cpu.max": "150000 100000\n"}, 1.5, 2),                                  # ceil(1.5)
    ({"a/cpu.max": "max 100000\n"}, 0.0, 4),                                     # no limit
    ({"cpu.max": "50000 100000\n", "a/b/cpu.max": "max 100000\n"}, 0.5, 1),       # an ancestor's limit
    ({"a/cpu.max": "300000 100000\n", "a/b/cpu.max": "200000 100000\n"}, 2.0, 2),  # the tightest one
])
def test_cgroup_v2_quota(tmp_path, limits, quota, threads):
    files = {f"sys/fs/cgroup/{k}": v for k, v in limits.items()}
    root = _tree(tmp_path, {c: str(c) for c in range(4)}, "0::/a/b\n", files)
    got = _core._cpu_budget([0, 1, 2, 3], root)
    assert got["quota"] == pytest.approx(quota) and got["threads"] == threads, got


def test_cgroup_v1_quota_and_hybrid_hosts(tmp_path):
    cpus = {c: str(c) for c in range(8)}
    # v1 in a container: /proc/self/cgroup names the host's path, the mount
    # shows the container's own cgroup at its root.
    v1 = _tree(tmp_path / "v1", cpus, "4:memory:/docker/x\n3:cpu,cpuacct:/docker/x\n",
               {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "250000\n",
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert _core._cpu_budget(list(cpus), v1)["threads"] == 3
    none = _tree(tmp_path / "none", cpus, "3:cpu,cpuacct:/\n",
                 {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                  "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert _core._cpu_budget(list(cpus), none)["threads"] == 8
    hybrid = _tree(tmp_path / "hybrid", cpus, "1:cpu:/\n0::/\n", {"sys/fs/cgroup/unified/cpu.max": "100000 100000\n"})
    assert _core._cpu_budget(list(cpus), hybrid)["threads"] == 1
    garbage = _tree(tmp_path / "garbage", cpus, "0::/\n", {"sys/fs/cgroup/cpu.max": "lots\n"})
    assert _core._cpu_budget(list(cpus), garbage)["threads"] == 8


def test_this_machine(monkeypatch):
    monkeypatch.delenv("PYENGINE_NUM_THREADS", raising=False)
    info = _core.cpu_info()
    allowed = len(os.sched_getaffinity(0))
    assert info["allowed_cpus"] == allowed
    assert 1 <= info["physical_cores"] <= allowed
    assert 1 <= pyengine.default_threads() == info["default_threads"] <= info["physical_cores"]


def test_engines_follow_the_affinity_mask():
    """A process pinned to one CPU builds one-thread engines by default (it
    made one thread per online CPU before, each spin-wait then a time slice)."""
    cpu = min(os.sched_getaffinity(0))
    code = ("import numpy as np, pyengine\nfrom pyengine import zoo\n"
            "e = pyengine.build(zoo.build_model('resnet18', image_size=32), backend='cpu')\n"
            "print(pyengine.default_threads(), e.num_threads)")
    env = {k: v for k, v in os.environ.items() if k != "PYENGINE_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


def test_environment_variable(monkeypatch):
    model = zoo.build_model("resnet18", image_size=32)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    ref = pyengine.build(model, backend="cpu", num_threads=1).run({"input": x})
    monkeypatch.setenv("PYENGINE_NUM_THREADS", "3")
    assert pyengine.default_threads() == 3
    engine = pyengine.build(model, backend="cpu")
    assert engine.num_threads == 3
    assert pyengine.build(model, backend="cpu", num_threads=2).num_threads == 2  # an explicit count wins
    out = engine.run({"input": x})
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value", ["0", "-2", "abc", "2x", " 2", "99999", "1.5"])
def test_environment_variable_rejects_garbage(monkeypatch, value):
    monkeypatch.setenv("PYENGINE_NUM_THREADS", value)
    with pytest.raises(InvalidArgumentError, match="PYENGINE_NUM_THREADS"):
        pyengine.default_threads()
    with pytest.raises(InvalidArgumentError, match="PYENGINE_NUM_THREADS"):
        pyengine.build(zoo.build_model("resnet18", image_size=32), backend="cpu")
