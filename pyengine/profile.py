"""The profiler behind `pyengine profile` and tools/profile.

Same code path as an application: ``Engine.run`` on numpy arrays. Warm-up by
time, then timed runs by duration or count; latency percentiles, throughput,
coefficient of variation (with trtexec's warning), peak memory, per-layer
times with GFLOP/s, and onnxruntime side by side on the same inputs and
threads.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time

import numpy as np

CV_WARN_PERCENT = 2.5


def _progress(total_s: float, desc: str):
    """A time-based progress bar (tqdm if installed and the run is long)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    if total_s < 2.0 or not sys.stderr.isatty():
        return None
    return tqdm(total=round(total_s, 1), desc=desc, unit="s", leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f}s")


def measure(fn, warmup_ms: float = 200, duration_s: float = 3.0, iterations: int | None = None,
            min_iterations: int = 10, desc: str = "timing") -> list:
    """Calls fn repeatedly; returns per-call latencies in ms.

    Warm-up runs for ``warmup_ms``; then either exactly ``iterations`` calls, or
    calls until ``duration_s`` has passed (at least ``min_iterations``).
    """
    end = time.perf_counter() + warmup_ms / 1e3
    fn()
    while time.perf_counter() < end:
        fn()
    samples = []
    bar = _progress(duration_s if iterations is None else 0, desc)
    start = time.perf_counter()
    last = start
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1e3)
        if bar is not None and t1 - last > 0.1:
            bar.update(round(min(t1 - start, duration_s) - bar.n, 1))
            last = t1
        if iterations is not None:
            if len(samples) >= iterations:
                break
        elif t1 - start >= duration_s and len(samples) >= min_iterations:
            break
    if bar is not None:
        bar.close()
    return samples


def summarize(samples: list, batch: int) -> dict:
    a = np.asarray(samples, dtype=np.float64)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {
        "iterations": int(a.size),
        "min_ms": float(a.min()), "mean_ms": mean, "median_ms": float(np.median(a)),
        "p90_ms": float(np.percentile(a, 90)), "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
        "std_ms": std, "cv_percent": 100.0 * std / mean if mean > 0 else 0.0,
        "throughput_per_s": 1e3 * batch / mean if mean > 0 else 0.0,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_line(threads) -> str:
    """One line naming the CPU, the ISA tier and the threads the CPU engines
    used (``threads``: their counts) against the default."""
    m = machine()
    cores = f", {m['physical_cores']} physical cores" if m.get("physical_cores") else ""
    quota = f", cgroup quota {m['cpu_quota']:g} CPUs" if m.get("cpu_quota") else ""
    used = "/".join(str(t) for t in threads) or "-"
    return (f"machine: {m['cpu'] or 'unknown CPU'} ({m.get('allowed_cpus') or m['cores']} CPUs{cores}{quota}), "
            f"tier {m['isa']}; pyengine threads {used} (default {m['default_threads']}: one per physical core, "
            "PYENGINE_NUM_THREADS or --threads to change)")


def machine() -> dict:
    """What the numbers were measured on."""
    from . import __version__, _core

    info = _core.cpu_info()
    cpu = info.get("brand") or platform.processor()
    if not cpu and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    versions = {"pyengine": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for mod in ("onnx", "onnxruntime"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": info["isa"],
            "allowed_cpus": info.get("allowed_cpus"), "physical_cores": info.get("physical_cores"),
            "cpu_quota": info.get("cpu_quota"), "default_threads": info["default_threads"],
            "features": {k: v for k, v in info.items() if isinstance(v, bool)},
            "platform": platform.platform(), "versions": versions}


def layer_table(layers: list, total_ms: float, top: int | None = None) -> list:
    """Executed layers sorted by time, with share and GFLOP/s."""
    rows = []
    for l in layers:
        if not l.get("executed", True):
            continue
        gflops = l["flops"] / (l["ms"] * 1e6) if l["ms"] > 0 and l["flops"] else 0.0
        rows.append({"name": l["name"], "op": l["op"], "kernel": l.get("kernel", ""), "ms": l["ms"],
                     "share": l["ms"] / total_ms if total_ms > 0 else 0.0, "gflops_per_s": gflops,
                     "flops": l["flops"], "origin": l.get("origin", [])})
    rows.sort(key=lambda r: -r["ms"])
    return rows[:top] if top else rows


def ort_node_times(sess_factory, feeds: dict, runs: int = 10) -> dict:
    """{ONNX node name: mean ms per run} from onnxruntime's own profiler
    (``enable_profiling``): ``sess_factory(options)`` makes the session with
    the given SessionOptions, which this function switches profiling on in.
    A node onnxruntime fused (Conv + Relu, say) is named after one of its
    nodes, with a suffix (``relu_0_nchwc``): see attach_ort_layers."""
    return {n: sum(t) / len(t) for n, (_, t) in ort_node_samples(sess_factory, feeds, runs).items()}


def ort_node_samples(sess_factory, feeds: dict, runs: int = 10) -> dict:
    """{ONNX node name: (op type, [ms in each of the last ``runs`` runs])}
    from onnxruntime's own profiler, nodes in the order of their first
    event (ort_node_times' measurement, per run)."""
    import json
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        sess = sess_factory(options)
        sess.run(None, feeds)  # warm-up (its events are dropped below)
        for _ in range(runs):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    per_node: dict = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"][:-len("_kernel_time")]
            per_node.setdefault(name, (e.get("args", {}).get("op_name", ""), []))[1].append(e["dur"] / 1e3)
    return {n: (op, t[-runs:]) for n, (op, t) in per_node.items()}


def attach_ort_layers(rows: list, node_ms: dict) -> float:
    """Adds ``ort_ms`` to each layer row: the time onnxruntime spent in the
    ONNX nodes the layer was made from (its ``origin``). onnxruntime renames
    the nodes it rewrites by appending to one of their names (``relu_0_nchwc``,
    ``conv_0_token_3``), so a node name is cut back at underscores until it
    names an origin. Returns the time of the onnxruntime nodes no layer claims
    (layout reorders it inserted, nodes pyengine folded away)."""
    owner = {}
    for i, r in enumerate(rows):
        for n in r["origin"] or [r["name"]]:
            owner.setdefault(n, i)
    ort_ms = [0.0] * len(rows)
    claimed = [False] * len(rows)
    unclaimed = 0.0
    for name, ms in node_ms.items():
        key = name
        while key and key not in owner:
            key = key.rpartition("_")[0]
        if key:
            ort_ms[owner[key]] += ms
            claimed[owner[key]] = True
        else:
            unclaimed += ms
    for r, ms, c in zip(rows, ort_ms, claimed):
        r["ort_ms"] = ms if c else None
    return unclaimed


def format_latency_table(results: list) -> str:
    head = (f"{'model':<22} {'prec':<5} {'batch':>5} {'runtime':<12} {'median':>8} {'mean':>8} {'p90':>8} "
            f"{'p99':>8} {'min':>8} {'cv%':>5} {'img/s':>8} {'vs ort':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        s = r["stats"]
        ratio = f"{r['ratio_vs_ort']:.2f}x" if r.get("ratio_vs_ort") else ""
        lines.append(f"{r['model'][:22]:<22} {r['precision']:<5} {r['batch']:>5} {r['runtime']:<12} "
                     f"{s['median_ms']:>8.2f} {s['mean_ms']:>8.2f} {s['p90_ms']:>8.2f} {s['p99_ms']:>8.2f} "
                     f"{s['min_ms']:>8.2f} {s['cv_percent']:>5.1f} {s['throughput_per_s']:>8.1f} {ratio:>7}")
    return "\n".join(lines)


def format_layer_table(rows: list, top: int) -> str:
    ort = any("ort_ms" in r for r in rows)
    extra = f" {'ort ms':>8} {'vs ort':>7}" if ort else ""
    lines = [f"{'layer':<36} {'op':<14} {'ms':>8} {'share':>6} {'GFLOP/s':>8}{extra}  from ONNX nodes"]
    for r in rows[:top]:
        origin = ",".join(r["origin"][:4]) + ("..." if len(r["origin"]) > 4 else "")
        cols = ""
        if ort:
            o = r.get("ort_ms")
            cols = f" {o:>8.3f} {r['ms'] / o:>6.2f}x" if o else f" {'-':>8} {'':>7}"
        lines.append(f"{r['name'][:36]:<36} {r['op'][:14]:<14} {r['ms']:>8.3f} {100 * r['share']:>5.1f}% "
                     f"{r['gflops_per_s']:>8.1f}{cols}  {origin}")
    return "\n".join(lines)


def plot(path: str, results: list) -> None:
    """Latency distributions and the per-layer breakdown as one PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from .errors import InvalidArgumentError

        raise InvalidArgumentError("--plot needs matplotlib: pip install 'pyengine[plot]'") from None
    with_layers = [r for r in results if r.get("layers")]
    fig, axes = plt.subplots(1, 2 if with_layers else 1, figsize=(13 if with_layers else 7, 4.5))
    axes = np.atleast_1d(axes)
    for r in results:
        axes[0].hist(r["samples_ms"], bins=40, alpha=0.6,
                     label=f"{r['runtime']} {r['precision']} b{r['batch']}")
    axes[0].set_xlabel("latency (ms)")
    axes[0].set_ylabel("runs")
    axes[0].legend(fontsize=8)
    axes[0].set_title("latency distribution")
    if with_layers:
        rows = with_layers[0]["layers"][:15][::-1]
        axes[1].barh([r["name"][:28] for r in rows], [r["ms"] for r in rows])
        axes[1].set_xlabel("ms per run")
        axes[1].set_title(f"top layers ({with_layers[0]['runtime']}, batch {with_layers[0]['batch']})")
        axes[1].tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
