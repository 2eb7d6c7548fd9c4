#!/usr/bin/env bash
# Runs test files against the ThreadSanitizer build of the core:
#   cmake -S . -B build-tsan -G Ninja -DENGINE_SANITIZE=thread -DPYENGINE_INPLACE=OFF
#   ninja -C build-tsan -j2 _core
#   tools/run_tsan.sh test_concurrency.py test_int8_kernels.py -k ...
# Arguments go to pytest (run in tests/). The instrumented _core is staged
# with a copy of the Python package in a temp dir, so the worktree's own
# _core stays the release build. TSan reports go to $TSAN_LOG.<pid> (default
# under the staging dir); the script prints how many there are, and how many
# name pyengine's own code (engine:: or the _core module), and exits non-zero if any does.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TSAN_BUILD:-$root/build-tsan}
# The interpreter itself, not a pyenv shim: LD_PRELOAD must not reach bash.
py=$(python3 -c 'import sys; print(sys.executable)')
stage=$(mktemp -d /tmp/pyengine-tsan.XXXXXX)
cp -r "$root/pyengine" "$stage/"
rm -f "$stage"/pyengine/_core*.so
cp "$build"/_core*.so "$stage/pyengine/" || { echo "no $build/_core*.so: build it first" >&2; exit 2; }
log=${TSAN_LOG:-$stage/tsan}
cd "$root/tests"
PYTHONPATH=$stage \
TSAN_OPTIONS="suppressions=$root/tools/tsan.supp report_signal_unsafe=0 halt_on_error=0 log_path=$log ${TSAN_OPTIONS:-}" \
LD_PRELOAD=$(gcc -print-file-name=libtsan.so) \
  "$py" -m pytest -q -p no:cacheprovider "$@"
rc=$?
reports=$(cat "$log".* 2>/dev/null | grep -c '^WARNING: ThreadSanitizer' || true)
ours=0
for f in "$log".*; do
  [ -e "$f" ] || continue
  # One report per block between "WARNING:" lines; count those naming engine code.
  n=$(awk '/^WARNING: ThreadSanitizer/{if (hit) c++; hit=0} /engine::|_core\./{hit=1} END{if (hit) c++; print c+0}' "$f")
  ours=$((ours + n))
done
echo "ThreadSanitizer: $reports report(s), $ours in pyengine code (engine:: or _core); logs: $log.*"
[ "$ours" -eq 0 ] || rc=1
exit $rc
