#!/bin/sh
# Run an allocation-heavy Python program with tidemalloc preloaded
# (PYTHONMALLOC=malloc so every Python object goes through malloc) and compare
# its checksum with a run without tidemalloc.
set -eu
: "${TIDETEST_SRCDIR:?TIDETEST_SRCDIR is not set: run this test through make check}"
. "$TIDETEST_SRCDIR/tide_lib.sh"

if [ -n "${TIDETEST_EMULATOR:-}" ]; then
  echo "SKIP: the test programs run under $TIDETEST_EMULATOR (cross build): this machine's python3 is not built for the library's architecture and cannot preload it" >&2
  exit 77
fi

py=${PYTHON:-python3}
if [ "$py" = ":" ] || ! command -v "$py" >/dev/null 2>&1; then
  echo "SKIP: $py not found" >&2
  exit 77
fi
# resolve wrappers (pyenv shims etc.) to the real interpreter
py=$("$py" -c 'import sys; print(sys.executable)')
script="$TIDETEST_SRCDIR/alloc_heavy.py"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide_python.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

if ! "$py" "$script" >"$tmp/ref.out" 2>"$tmp/ref.err"; then
  echo "FAIL: reference run (without tidemalloc) failed:" >&2
  cat "$tmp/ref.err" >&2
  exit 1
fi
expected=$(cat "$tmp/ref.out")
case $expected in
  "alloc_heavy checksum="*) ;;
  *) echo "FAIL: unexpected reference output: $expected" >&2; exit 1 ;;
esac

status=0
for pymalloc in malloc pymalloc; do
  rc=0
  LD_PRELOAD="$tide_lib" PYTHONMALLOC=$pymalloc ALLOC_HEAVY_EXPECT_TIDEMALLOC=1 \
    "$py" "$script" >"$tmp/out" 2>"$tmp/err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAIL: PYTHONMALLOC=$pymalloc with tidemalloc preloaded exited with status $rc; stderr:" >&2
    cat "$tmp/err" >&2
    status=1
    continue
  fi
  got=$(cat "$tmp/out")
  if [ "$got" != "$expected" ]; then
    echo "FAIL: PYTHONMALLOC=$pymalloc: output differs with tidemalloc" >&2
    echo "  expected: $expected" >&2
    echo "  got:      $got" >&2
    status=1
  fi
  if ! grep -q '^tidemalloc: loaded ' "$tmp/err"; then
    echo "FAIL: PYTHONMALLOC=$pymalloc: tidemalloc was not loaded into python; stderr:" >&2
    cat "$tmp/err" >&2
    status=1
  fi
  if grep -E "$tide_error_pattern" "$tmp/err" >&2; then
    echo "FAIL: PYTHONMALLOC=$pymalloc: tidemalloc reported errors (above)" >&2
    status=1
  fi
  if [ "$status" -eq 0 ]; then
    echo "ok: PYTHONMALLOC=$pymalloc: $got ($(sed -n 's/^tidemalloc: //p' "$tmp/err"))"
  fi
done
exit $status
