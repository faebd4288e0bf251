#!/bin/sh
# Run cxx_forms (every C++ new/delete form, containers) plainly and with
# tidemalloc preloaded; the result lines must match and the program must
# confirm that its allocations went to tidemalloc.
set -eu
: "${TIDETEST_SRCDIR:?TIDETEST_SRCDIR is not set: run this test through make check}"
: "${TIDETEST_BUILDDIR:?TIDETEST_BUILDDIR is not set: run this test through make check}"
. "$TIDETEST_SRCDIR/tide_lib.sh"

prog="$TIDETEST_BUILDDIR/cxx_forms"
if [ ! -x "$prog" ]; then
  echo "FAIL: $prog not built" >&2
  exit 99
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide_cxx.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

if ! "$prog" >"$tmp/ref.out" 2>"$tmp/ref.err"; then
  echo "FAIL: cxx_forms without tidemalloc failed:" >&2
  cat "$tmp/ref.out" "$tmp/ref.err" >&2
  exit 1
fi
expected=$(cat "$tmp/ref.out")
case $expected in
  "cxx_forms: forms="*" errors=0 checksum="*) ;;
  *) echo "FAIL: unexpected reference output: $expected" >&2; exit 1 ;;
esac

rc=0
env "$tide_preload" CXX_FORMS_EXPECT_TIDEMALLOC=1 "$prog" >"$tmp/out" 2>"$tmp/err" || rc=$?
status=0
if [ "$rc" -ne 0 ]; then
  echo "FAIL: cxx_forms with tidemalloc preloaded exited with status $rc" >&2
  status=1
fi
got=$(sed -n 1p "$tmp/out")
if [ "$got" != "$expected" ]; then
  echo "FAIL: result differs with tidemalloc" >&2
  echo "  expected: $expected" >&2
  echo "  got:      $got" >&2
  status=1
fi
if ! grep -q '^tide-check: ok' "$tmp/out"; then
  echo "FAIL: allocations did not go to tidemalloc:" >&2
  status=1
fi
if grep -E "$tide_error_pattern" "$tmp/err" >&2; then
  echo "FAIL: tidemalloc reported errors (above)" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "--- stdout:" >&2; cat "$tmp/out" >&2
  echo "--- stderr:" >&2; cat "$tmp/err" >&2
  exit 1
fi
cat "$tmp/out"
