#!/usr/bin/env bash
# Embedding check (issue 13, part 3; README "Embedding in C and C++"): builds
# samples/cpp_app and samples/c_app outside the tree against an installed
# pyengine C++ package, runs both on a plan Python saved (fresh random input,
# 2 threads) and requires their outputs to equal Python's engine.run bit for
# bit. Prints the time of each step. tests/test_embed.py checks the same and
# more (INT8, the C API's error paths) inside the suite.
#
#   tools/ci/embed_sample.sh [PREFIX]
#
# PREFIX (or $PYENGINE_EMBED_PREFIX): an installed package. By default, the
# one the installed pyengine wheel carries (`python3 -m pyengine.embed`);
# without one, the library alone is built with cmake (ccache if present, -j2)
# and installed into a temp prefix.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyengine-embed.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"   # so that `import pyengine` is the installed package, not the source tree
start=$SECONDS
if ! command -v cmake >/dev/null; then
  # The wheel build may have used an isolated cmake: get one the same way.
  python3 -m pip install --quiet cmake || true
fi
if ! command -v cmake >/dev/null || ! command -v "${CXX:-c++}" >/dev/null || ! command -v "${CC:-cc}" >/dev/null; then
  echo "embed: skipped (needs cmake and C/C++ compilers on PATH)"
  exit 0
fi
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

PREFIX=${1:-${PYENGINE_EMBED_PREFIX:-}}
if [ -z "$PREFIX" ]; then
  PREFIX=$(python3 -m pyengine.embed 2>/dev/null) || PREFIX=""
fi
if [ -z "$PREFIX" ]; then
  echo "embed: no installed C++ package; building the library with cmake"
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$REPO" -B "$WORK/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DPYENGINE_PYTHON=OFF \
    "${launcher[@]}" >/dev/null
  cmake --build "$WORK/build" --target pyengine -j 2 >/dev/null
  cmake --install "$WORK/build" --prefix "$WORK/prefix" >/dev/null
  PREFIX=$WORK/prefix
fi
echo "embed: package $PREFIX ($((SECONDS - start)) s)"

t=$SECONDS
for app in cpp_app c_app; do
  cmake -S "$REPO/samples/$app" -B "$WORK/$app" "${gen[@]}" -DCMAKE_PREFIX_PATH="$PREFIX" >/dev/null
  cmake --build "$WORK/$app" -j 2 >/dev/null
done
echo "embed: samples built out of tree ($((SECONDS - t)) s)"

t=$SECONDS
python3 - "$WORK" <<'PY'
import subprocess, sys
import numpy as np
import pyengine
from pyengine import zoo

work = sys.argv[1]
model = zoo.ZOO["resnet18"]()
pyengine.build(model, backend="cpu", num_threads=2).save(f"{work}/m.plan")
engine = pyengine.load(f"{work}/m.plan", num_threads=2)
x = zoo.make_input(model, 2, seed=int(np.random.default_rng().integers(1 << 16)))[engine.inputs[0].name]
want = engine(x)
np.save(f"{work}/x.npy", x)
x.tofile(f"{work}/x.raw")
for app, inp in (("cpp_app", "x.npy"), ("c_app", "x.raw")):
    subprocess.run([f"{work}/{app}/{app}", f"{work}/m.plan", f"{work}/{inp}", f"{work}/y.raw", "2"], check=True,
                   stdout=subprocess.DEVNULL)
    got = np.fromfile(f"{work}/y.raw", dtype=np.float32).reshape(want.shape)
    if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
        sys.exit(f"embed: {app}'s output differs from Python's (max |diff| {np.abs(got - want).max()})")
    print(f"embed: {app} output {list(got.shape)} equals Python's bit for bit")
PY
echo "embed: plan + runs ($((SECONDS - t)) s); total $((SECONDS - start)) s"
