#!/bin/sh
# Address space: a trivial program's VmSize under tidemalloc stays within
# 8 MiB of its VmSize under glibc's malloc (a flat 32 MiB registry once made
# it 39 MB), and under `ulimit -v` set to glibc's VmSize + 16 MiB the preload
# is not refused (ld.so would print "cannot be preloaded" and the program run
# on glibc), malloc ends in NULL with ENOMEM at the limit and works again once
# memory is freed.
set -eu
: "${TIDETEST_SRCDIR:?TIDETEST_SRCDIR is not set: run this test through make check}"
: "${TIDETEST_BUILDDIR:?TIDETEST_BUILDDIR is not set: run this test through make check}"
. "$TIDETEST_SRCDIR/tide_lib.sh"

if [ -n "${TIDETEST_EMULATOR:-}" ]; then
  echo "SKIP: the test programs run under $TIDETEST_EMULATOR (cross build): VmSize and ulimit -v are those of the emulator's process (its own heap and translation cache included), not the program's" >&2
  exit 77
fi

prog="$TIDETEST_BUILDDIR/addr_space"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide_as.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
status=0

glibc_kb=$(env -u LD_PRELOAD "$prog" vmsize)
tide_kb=$(LD_PRELOAD="$tide_lib" "$prog" vmsize)
echo "VmSize after one malloc: glibc $glibc_kb KiB, tidemalloc $tide_kb KiB"
if [ $((tide_kb - glibc_kb)) -gt 8192 ]; then
  echo "FAIL: tidemalloc's VmSize is $((tide_kb - glibc_kb)) KiB above glibc's (at most 8192)" >&2
  status=1
fi

limit=$((glibc_kb + 16384))
rc=0
(ulimit -v "$limit" && LD_PRELOAD="$tide_lib" exec "$prog" fill) >"$tmp/out" 2>"$tmp/err" || rc=$?
echo "under ulimit -v $limit: $(cat "$tmp/out")"
if grep -q "cannot be preloaded" "$tmp/err"; then
  echo "FAIL: under ulimit -v $limit the preload was refused:" >&2
  cat "$tmp/err" >&2
  status=1
fi
if [ "$rc" -ne 0 ]; then
  echo "FAIL: under ulimit -v $limit the fill program failed (status $rc)" >&2
  cat "$tmp/err" >&2
  status=1
fi
if grep -Eq "$tide_error_pattern" "$tmp/err"; then
  echo "FAIL: tidemalloc reported an error:" >&2
  cat "$tmp/err" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "PASS: VmSize within 8 MiB of glibc's; NULL/ENOMEM at the limit and recovery"
exit "$status"
