#!/bin/sh
# The second pass of `make check': the same test suite against the checking
# build, configured with --enable-debug --enable-hardened (every TM_ASSERT
# compiled in, heap consistency checks, block ends sealed and checked, guard
# pages), from a clean copy of the distributed sources in a temporary
# directory. Run by the top-level `check-local'; exits non-zero when the
# build or any test fails, with the failed tests' logs on stderr.
#
# usage: scripts/variant-check.sh MAKE DISTDIR_PARENT [configure args...]
#   MAKE is the make program to use; DISTDIR_PARENT the top build directory
#   (where `make distdir' runs). Extra arguments replace the default
#   configure arguments. TIDETEST_VARIANT=0 in the environment skips it
#   (the nested run sets it, so the pass never recurses).
set -e

make_prog=${1:?usage: variant-check.sh MAKE TOP_BUILDDIR [configure args]}
top_builddir=${2:?usage: variant-check.sh MAKE TOP_BUILDDIR [configure args]}
shift 2
[ $# -gt 0 ] || set -- --enable-debug --enable-hardened

if [ "${TIDETEST_VARIANT:-1}" = 0 ]; then
  echo "variant-check: skipped (TIDETEST_VARIANT=0)"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tide-variant.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT INT TERM

echo "variant-check: make check with ./configure $* (in $work)"
start=$(date +%s)
# automake's distdir takes a path relative to the top build directory
rel=tide-variant-$$
"$make_prog" -C "$top_builddir" distdir distdir="$rel" >"$work/distdir.log" 2>&1 || {
  rm -rf "${top_builddir:?}/$rel"
  cat "$work/distdir.log" >&2
  echo "variant-check: make distdir failed" >&2
  exit 1
}
mv "$top_builddir/$rel" "$work/src"
cd "$work/src"
if ! ./configure --disable-silent-rules "$@" >"$work/configure.log" 2>&1; then
  tail -40 "$work/configure.log" >&2
  echo "variant-check: configure $* failed" >&2
  exit 1
fi
if ! "$make_prog" -j2 >"$work/build.log" 2>&1; then
  grep -E "error|Error" "$work/build.log" | head -40 >&2
  echo "variant-check: build with $* failed" >&2
  exit 1
fi
if ! TIDETEST_VARIANT=0 "$make_prog" -j2 check >"$work/check.log" 2>&1; then
  grep -E "^(PASS|FAIL|SKIP|ERROR|XFAIL|XPASS):|^# " "$work/check.log" >&2 || true
  find . -name test-suite.log | while IFS= read -r f; do
    echo "===== variant ($*): $f =====" >&2
    cat "$f" >&2
  done
  echo "variant-check: make check FAILED in the build with $*" >&2
  exit 1
fi
grep -E "^(FAIL|SKIP|ERROR|XPASS):|^# (TOTAL|PASS|SKIP|FAIL|ERROR)" "$work/check.log" | sed 's/^/variant-check: /'
echo "variant-check: all tests passed with $* ($(($(date +%s) - start)) s)"
