#!/bin/sh
# Initialization from another library's constructor, before main: tidemalloc
# preloaded into a program whose shared library allocates, starts a thread and
# calls dlsym/dlerror in its constructor. The constructor must see tidemalloc
# and succeed, with no error report.
set -eu
: "${TIDETEST_SRCDIR:?TIDETEST_SRCDIR is not set: run this test through make check}"
: "${TIDETEST_BUILDDIR:?TIDETEST_BUILDDIR is not set: run this test through make check}"
. "$TIDETEST_SRCDIR/tide_lib.sh"

prog="$TIDETEST_BUILDDIR/early_main"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide_init.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

status=0
for round in 1 2 3 4 5; do
  rc=0
  env "$tide_preload" "$prog" >"$tmp/out" 2>"$tmp/err" || rc=$?
  got=$(cat "$tmp/out")
  if [ "$rc" -ne 0 ] || [ "$got" != "early: ok tidemalloc=yes" ]; then
    echo "FAIL (round $round): status $rc, output: $got" >&2
    cat "$tmp/err" >&2
    status=1
  fi
  if grep -Eq "$tide_error_pattern" "$tmp/err"; then
    echo "FAIL (round $round): tidemalloc reported an error:" >&2
    cat "$tmp/err" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "PASS: constructor-time allocation, threads and dlerror work under tidemalloc"
exit "$status"
