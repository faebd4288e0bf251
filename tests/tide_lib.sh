# Sourced by the shell tests: locate the uninstalled libtidemalloc.so.
# Sets tide_lib; exits 77 (skip) when the library was built static-only,
# 99 (hard error) when it should exist but does not.
: "${TIDETEST_TOP_BUILDDIR:?TIDETEST_TOP_BUILDDIR is not set: run this test through make check}"
tide_la="$TIDETEST_TOP_BUILDDIR/src/libtidemalloc.la"
if [ ! -f "$tide_la" ]; then
  echo "FAIL: $tide_la not found (library not built?)" >&2
  exit 99
fi
tide_dlname=$(sed -n "s/^dlname='\(.*\)'$/\1/p" "$tide_la")
if [ -z "$tide_dlname" ]; then
  echo "SKIP: libtidemalloc was built without a shared library (--disable-shared)" >&2
  exit 77
fi
tide_lib="$TIDETEST_TOP_BUILDDIR/src/.libs/$tide_dlname"
if [ ! -f "$tide_lib" ]; then
  echo "FAIL: $tide_lib not found although $tide_la names it" >&2
  exit 99
fi
# How to preload it: `env "$tide_preload" PROGRAM ...'.  Under qemu-user (a
# cross build's make check, TIDETEST_EMULATOR) the variable goes through
# QEMU_SET_ENV into the emulated program's environment only: the x86_64
# qemu-aarch64 process itself would refuse the aarch64 library with an ld.so
# error on stderr.  Host programs (python3, sh) cannot load it at all there.
if [ -n "${TIDETEST_EMULATOR:-}" ]; then
  tide_preload="QEMU_SET_ENV=LD_PRELOAD=$tide_lib"
else
  tide_preload="LD_PRELOAD=$tide_lib"
fi
# Error reports tidemalloc prints on stderr; none may appear in a correct run.
tide_error_pattern='tidemalloc: .*(invalid pointer|double free|corrupt|heap check)'
