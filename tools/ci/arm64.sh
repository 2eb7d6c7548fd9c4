#!/usr/bin/env bash
# The aarch64 check (issue 13): cross-compiles the C++ core and the
# pyengine_run sample with Debian's g++-aarch64-linux-gnu, then runs the
# sample under qemu-user on plans that Python saved here and compares its
# outputs with Python's (tools/ci/arm64_check.py). Prints the time each step
# takes. Needs root for apt-get when the toolchain is missing; where it
# cannot be installed the check is skipped loudly, never failed silently.
#   tools/ci/arm64.sh [build-dir]        (default: build-arm64)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-arm64}
t0=$(date +%s)
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null 2>&1; } \
      || true
  fi
fi
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "SKIPPED: aarch64 check (g++-aarch64-linux-gnu / qemu-user unavailable)"
  exit 0
fi
t1=$(date +%s)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
  -DPYENGINE_PYTHON=OFF "${launcher[@]}" >/dev/null
cmake --build "$build" --target pyengine_run -j2 >/dev/null
t2=$(date +%s)
aarch64-linux-gnu-readelf -h "$build/pyengine_run" | grep -q AArch64 || { echo "FAIL: $build/pyengine_run is not an aarch64 binary"; exit 1; }
python3 tools/ci/arm64_check.py "$build/pyengine_run"
t3=$(date +%s)
echo "aarch64 check: toolchain $((t1 - t0)) s, cross-build $((t2 - t1)) s, qemu runs + compare $((t3 - t2)) s"
