"""Concurrent run() on one engine, and engines running side by side.

Executor::run serializes calls on one engine (one arena) and each engine owns
a thread pool; these tests drive both from several Python threads at once
(run() releases the GIL) and require every output to be bitwise equal to the
same input run alone. They are also the workload of the ThreadSanitizer build
(README, development section: `ENGINE_SANITIZE=thread`).
"""

import threading

import numpy as np
import pytest

import pyengine
from pyengine import zoo

THREADS = 4
RUNS = 20
INPUTS_PER_THREAD = 3


def _run_threads(work, n):
    """Runs work(i) on n threads started together; re-raises the first failure."""
    barrier = threading.Barrier(n)
    errors = []

    def body(i):
        try:
            barrier.wait()
            work(i)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def resnet18():
    return zoo.ZOO["resnet18"]()


def _engine(model, precision):
    if precision == "int8":
        name = model.graph.input[0].name
        calib = [zoo.make_input(model, 1, seed=100 + i)[name] for i in range(2)]
        return pyengine.build(model, precision="int8", calibration_data=calib, num_threads=2,
                              report=False, progress=False)
    return pyengine.build(model, backend="cpu", num_threads=2)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_threads_share_one_engine(resnet18, precision):
    """4 threads x 20 runs on one engine (2 pool threads), batch 1 and 2
    interleaved so the plan cache switches shapes between concurrent calls:
    every output equals the single-threaded run of the same input."""
    engine = _engine(resnet18, precision)
    assert engine.precision == precision
    name = engine.inputs[0].name
    feeds = [[zoo.make_input(resnet18, 1 + i % 2, seed=10 * i + k)[name] for k in range(INPUTS_PER_THREAD)]
             for i in range(THREADS)]
    want = [[engine.run({name: x}) for x in per_thread] for per_thread in feeds]
    got = [[None] * RUNS for _ in range(THREADS)]

    def work(i):
        for r in range(RUNS):
            got[i][r] = engine.run({name: feeds[i][r % INPUTS_PER_THREAD]})

    _run_threads(work, THREADS)
    for i in range(THREADS):
        for r in range(RUNS):
            ref = want[i][r % INPUTS_PER_THREAD]
            assert got[i][r].keys() == ref.keys()
            for key in ref:
                assert np.isfinite(ref[key]).all()
                np.testing.assert_array_equal(got[i][r][key], ref[key], err_msg=f"thread {i} run {r} {key}")


def test_engines_side_by_side(resnet18, tmp_path):
    """Three engines (fp32 with 2 pool threads, fp32 with 1, and the fp32 plan
    loaded from disk on the worker thread itself) run at the same time: no
    state is shared between engines that changes their results."""
    built = _engine(resnet18, "fp32")
    path = tmp_path / "r18.plan"
    built.save(path)
    name = built.inputs[0].name
    x = zoo.make_input(resnet18, 2, seed=3)[name]
    want = built.run({name: x})
    engines = [built, pyengine.build(resnet18, backend="cpu", num_threads=1), None]
    got = [[] for _ in engines]

    def work(i):
        engine = engines[i] if engines[i] is not None else pyengine.load(path, num_threads=2)
        for _ in range(6):
            got[i].append(engine.run({name: x}))

    _run_threads(work, len(engines))
    for i, outs in enumerate(got):
        assert len(outs) == 6
        for out in outs:
            for key in want:
                np.testing.assert_array_equal(out[key], want[key], err_msg=f"engine {i} {key}")


def test_introspection_during_runs(resnet18):
    """memory_info(), profile() and the plan cache read while other threads
    run the same engine: each read takes the executor's lock (ThreadSanitizer
    reported the unlocked reads of the arena size, the profiling flag and the
    last plan), and the runs still give the single-threaded outputs."""
    engine = _engine(resnet18, "fp32")
    name = engine.inputs[0].name
    feeds = [zoo.make_input(resnet18, b, seed=b)[name] for b in (1, 2, 3)]
    want = [engine.run({name: x}) for x in feeds]
    got = [[] for _ in range(2)]
    infos, profiles = [], []

    def work(i):
        if i < 2:
            for r in range(8):
                k = (r + i) % len(feeds)
                got[i].append((k, engine.run({name: feeds[k]})))
        else:
            for _ in range(4):
                infos.append(engine.memory_info())
                profiles.append(engine.profile({name: feeds[0]}, runs=1))

    _run_threads(work, 3)
    for outs in got:
        for k, out in outs:
            for key in want[k]:
                np.testing.assert_array_equal(out[key], want[k][key])
    assert all(info["arena"] > 0 and info["weights"] > 0 for info in infos)
    for layers in profiles:
        assert layers and all(layer["ms"] >= 0 for layer in layers)
        assert any(layer["op"] == "Conv" and layer["executed"] for layer in layers)


# ------------------------------------------------- the kernels' task claims


@pytest.mark.parametrize("n,threads", [(0, 2), (1, 2), (7, 3), (12, 2), (100, 4), (33, 9), (5, 16)])
def test_affine_tasks_claim_each_task_once(n, threads):
    """AffineTasks (thread_pool.h), which the int8 conv, SGEMM and
    parallel_for kernels claim their tasks from: on a real pool every task is
    claimed by exactly one slot (the hook raises on a double claim), and a
    slot 0 left alone (workers too late to start) takes them all: its own
    range in order, then each other range from its back, nearest slot first."""
    from pyengine import _core

    by, _ = _core._affine_claims(n, threads, True, 20.0)
    assert len(by) == n and all(0 <= s < threads for s in by)
    by, order = _core._affine_claims(n, threads, False)
    assert by == [0] * n and sorted(order) == list(range(n))
    homes = [list(range(n * s // threads, n * (s + 1) // threads)) for s in range(threads)]
    assert order == homes[0] + [t for home in homes[1:] for t in reversed(home)]


def test_affine_tasks_keep_each_slot_on_its_range():
    """With both slots present and tasks long enough for the worker to wake
    up (2 ms each), the worker takes tasks from its own half."""
    from pyengine import _core

    if _core.cpu_info()["hardware_threads"] < 2:
        pytest.skip("one hardware thread: the worker shares the core with slot 0")
    by, _ = _core._affine_claims(10, 2, True, 2000.0)
    assert 1 in by[5:], f"slot 1 claimed none of its home tasks 5..9: {by}"


def test_core_to_core_probe():
    """The machine-state probe tools/bench.py prints: a cache-line round trip
    between the first two CPUs this process may use, in ns (a real, finite
    time: at least a few ns, far below a millisecond), or -1 on one CPU."""
    import os

    from pyengine import _core

    ns = _core.core_to_core_ns()
    if len(os.sched_getaffinity(0)) < 2:
        assert ns == -1
    else:
        assert 5.0 < ns < 1e6, ns
