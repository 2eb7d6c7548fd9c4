#!/usr/bin/env python3
"""Ray Data throughput with 1 and 2 pyengine actors (issue 14, item 3).

Runs the README's Ray example end to end (read a folder of images, resize and
preprocess, run the engine in PyengineMapper actors of 1 thread each, write
predictions to Parquet) on a local Ray instance, once per actor count, and
prints images/s next to a plain single-process loop over the same files (no
Ray: Pillow read + the same preprocessing + engine.run on batches, 1 thread).

    pip install "ray[data]" scikit-image
    PYTHONPATH=. python3 tools/bench_ray.py --images 256 --actors 1,2

The model is the zoo's full-width ResNet-18 at --image-size (random weights);
the images are crops of scikit-image's sample pictures (random pixels without
scikit-image), written once to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyengine  # noqa: E402
from pyengine import zoo  # noqa: E402
from pyengine.integrations.ray import ImagePreprocess, PyengineMapper  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_images(folder, count, seed=0):
    """``count`` JPEG crops (100 to 200 px a side) of scikit-image's sample pictures."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    try:
        from skimage import data

        pictures = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    except ImportError:
        pictures = [rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)]
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        pic = pictures[i % len(pictures)]
        h, w = rng.integers(100, 201, 2)
        top, left = rng.integers(0, pic.shape[0] - h), rng.integers(0, pic.shape[1] - w)
        Image.fromarray(pic[top:top + h, left:left + w]).save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)


def run_ray(ray, images, plan, out_dir, actors, batch_size, size):
    """The README example: returns the number of rows written."""
    ds = ray.data.read_images(images, size=(size, size), mode="RGB", include_paths=True, num_cpus=0)
    preds = ds.map_batches(
        PyengineMapper,
        fn_constructor_kwargs={"model": plan, "preprocess": ImagePreprocess(MEAN, STD), "num_threads": 1},
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
        batch_size=batch_size, batch_format="numpy")
    preds.write_parquet(out_dir)
    import pyarrow.parquet as pq

    return pq.read_table(out_dir).num_rows


def run_plain(images, plan, batch_size, size):
    """The same work in one process without Ray."""
    from PIL import Image

    engine = pyengine.load(plan, num_threads=1)
    prep = ImagePreprocess(MEAN, STD)
    files = sorted(os.listdir(images))
    n = 0
    for start in range(0, len(files), batch_size):
        batch = []
        for f in files[start:start + batch_size]:
            with Image.open(os.path.join(images, f)) as img:
                batch.append(np.asarray(img.resize((size, size), Image.BILINEAR).convert("RGB")))
        n += len(engine(prep(np.stack(batch))))
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--actors", default="1,2", help="comma-separated actor counts")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--niceness", type=int, default=0,
                    help="the Ray workers' nice value (RAY_worker_niceness). Ray starts its workers niced "
                         "by default; 0 runs them at the plain loop's priority, which is what a fair comparison "
                         "on a loaded machine needs")
    ap.add_argument("--small", type=int, default=32,
                    help="also run each actor count on this many images: the difference between the two runs "
                         "gives the marginal rate, without Ray's fixed start-up costs (0: skip)")
    args = ap.parse_args(argv)
    import ray

    work = tempfile.mkdtemp(prefix="pyengine-bench-ray-")
    try:
        images, plan = os.path.join(work, "images"), os.path.join(work, "resnet18.plan")
        write_images(images, args.images)
        pyengine.build(zoo.build_model("resnet18", image_size=args.image_size), backend="cpu",
                       num_threads=1).save(plan)
        t = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"RAY_worker_niceness": str(args.niceness), "PYTHONPATH": os.pathsep.join(
                     p for p in [os.path.dirname(os.path.dirname(pyengine.__file__)),
                                 os.environ.get("PYTHONPATH", "")] if p)}})
        ray.data.DataContext.get_current().enable_progress_bars = False
        init_s = time.perf_counter() - t
        rows = []
        t = time.perf_counter()
        n = run_plain(images, plan, args.batch_size, args.image_size)
        rows.append(("plain loop, no Ray", 1, n, time.perf_counter() - t))
        small = os.path.join(work, "small")
        if args.small:
            os.makedirs(small)
            for f in sorted(os.listdir(images))[:args.small]:
                shutil.copy(os.path.join(images, f), small)
        marginal = {}
        for k in [int(a) for a in args.actors.split(",")]:
            t = time.perf_counter()
            n = run_ray(ray, images, plan, os.path.join(work, f"out{k}"), k, args.batch_size, args.image_size)
            wall = time.perf_counter() - t
            rows.append(("Ray Data -> Parquet", k, n, wall))
            if args.small:
                t = time.perf_counter()
                m = run_ray(ray, small, plan, os.path.join(work, f"small{k}"), k, args.batch_size, args.image_size)
                marginal[k] = (n - m) / max(wall - (time.perf_counter() - t), 1e-9)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
          f"ray {ray.__version__} (workers at nice {args.niceness}), ray.init {init_s:.1f} s (not counted)")
    print(f"model: zoo ResNet-18 (full width, random weights) {args.image_size}x{args.image_size} fp32, "
          f"{args.images} JPEG images, batch {args.batch_size}, 1 thread per actor")
    print(f"{'pipeline':<22}{'actors':>7}{'images':>8}{'wall s':>9}{'images/s':>10}{'vs 1 actor':>12}")
    one = next((n / s for name, k, n, s in rows if name.startswith("Ray") and k == 1), None)
    for name, k, n, s in rows:
        rel = f"{n / s / one:.2f}x" if one and name.startswith("Ray") else ""
        print(f"{name:<22}{k:>7}{n:>8}{s:>9.2f}{n / s:>10.1f}{rel:>12}")
    if marginal:
        base = marginal.get(1)
        print(f"marginal rate (({args.images} - {args.small}) images / difference of the two wall times), "
              f"without Ray's fixed costs:")
        for k, rate in marginal.items():
            rel = f", {rate / base:.2f}x 1 actor" if base else ""
            print(f"  {k} actor{'s' if k > 1 else ''}: {rate:.1f} images/s{rel}")


if __name__ == "__main__":
    main()
