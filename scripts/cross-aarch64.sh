#!/bin/sh
# Cross-build tidemalloc for aarch64 with Debian's gcc-aarch64-linux-gnu and
# run its test suite under qemu-user (README.md, "Cross builds: aarch64").
#
# usage: scripts/cross-aarch64.sh [--quick] [--build-only] [--tests "T..."] [-- CONFIGURE-ARGS]
#   --quick       the CI subset: every test but test_stress and test_handoff
#                 (tests/README.md says why)
#   --build-only  build the library, tools, benchmarks and test programs only
#   --tests "T.." run only these tests (names as in tests/Makefile.am TESTS)
#   arguments after `--' go to configure, e.g. -- --enable-debug
#
# Installs what is missing with apt, like scripts/deps.sh: the cross
# compilers, qemu-user and qemu-user-binfmt, and through Debian multiarch
# (arm64) what the build and the tests link: Check, liburing, libnuma,
# libstdc++, pkgconf's aarch64-linux-gnu-pkg-config.  Registers qemu-aarch64
# with binfmt_misc if it is not, so that the aarch64 programs run as if
# native; without binfmt_misc only the test programs that start no other
# aarch64 program run, each through qemu-aarch64.
#
# Builds in build-aarch64/ (BUILD_DIR to change it): src/ is a fresh copy of
# the sources (git's files, uncommitted changes included: a source tree
# configured in place, as ./run-tests leaves it, refuses an out-of-tree
# configure), build/ is configured out of tree with --host=aarch64-linux-gnu.
#
# Exit status: 0 when every test that ran passed, 1 when the build or a test
# failed; 0 with "cross-aarch64: skipped: REASON" when the packages cannot be
# installed.
set -e

quick=no
build_only=no
tests=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=yes ;;
    --build-only) build_only=yes ;;
    --tests) [ $# -ge 2 ] || { echo "cross-aarch64: --tests needs a list" >&2; exit 2; }
             tests=$2; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,29s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "cross-aarch64: unknown argument '$1' (configure arguments go after --)" >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
top=$(pwd -P)
host=aarch64-linux-gnu
build_dir=${BUILD_DIR:-$top/build-aarch64}
case $build_dir in /*) ;; *) build_dir=$top/$build_dir ;; esac
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
t0=$(date +%s)
say() { echo "cross-aarch64: $*"; }
skip() { say "skipped: $*"; exit 0; }
fail() { say "FAILED: $*" >&2; exit 1; }
since() { echo "$(($(date +%s) - $1)) s"; }

# ---------------------------------------------------------------------------
# 1. packages
# ---------------------------------------------------------------------------
installed() {
  dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  skip "not a Debian system (no dpkg/apt-get): install an aarch64-linux-gnu cross toolchain, qemu-user and arm64 Check by hand"
fi

# qemu-user-static (if present) conflicts with qemu-user-binfmt and does the same
if installed qemu-user-static; then
  qemu_pkgs=
else
  qemu_pkgs="qemu-user qemu-user-binfmt"
fi
host_pkgs="autoconf automake libtool pkg-config make gcc g++
gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross $qemu_pkgs"
arm64_pkgs="libc6-dev:arm64 libstdc++6:arm64 check:arm64 liburing-dev:arm64 libnuma-dev:arm64 pkgconf:arm64"

missing=
for p in $host_pkgs $arm64_pkgs; do
  installed "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "installing:$missing"
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    skip "not root and no sudo: cannot install$missing"
  fi
  apt_log=$(mktemp "${TMPDIR:-/tmp}/cross-aarch64-apt.XXXXXX")
  trap 'rm -f "$apt_log"' EXIT
  added_arch=no
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64 || skip "dpkg --add-architecture arm64 failed"
    added_arch=yes
  fi
  # give up: without the arm64 architecture we added (apt-get update would
  # keep asking the mirrors for its lists), then say why
  give_up() {
    tail -15 "$apt_log"
    if [ "$added_arch" = yes ]; then $SUDO dpkg --remove-architecture arm64 2>/dev/null || true; fi
    skip "$@"
  }
  $SUDO apt-get update -qq >"$apt_log" 2>&1 || give_up "apt-get update failed (its last lines above)"
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
    >"$apt_log" 2>&1 || give_up "cannot install the cross packages:$missing (apt-get's last lines above)"
  say "packages installed ($(since "$t0"))"
fi

# ---------------------------------------------------------------------------
# 2. how the aarch64 programs run: binfmt_misc, else qemu-aarch64 by hand
# ---------------------------------------------------------------------------
mkdir -p "$build_dir"
probe_c=$build_dir/probe.c
probe=$build_dir/probe
printf '#include <stdio.h>\nint main(void) { puts("aarch64 ok"); return 0; }\n' >"$probe_c"
$host-gcc -o "$probe" "$probe_c" || fail "$host-gcc cannot build a program"

binfmt=/proc/sys/fs/binfmt_misc
as_root() { # as_root FILE: write stdin into FILE as root
  if [ "$(id -u)" -eq 0 ]; then cat >"$1"; else sudo -n tee "$1" >/dev/null; fi
}
runs_natively() { [ "$("$probe" 2>/dev/null)" = "aarch64 ok" ]; }
if ! runs_natively; then
  if [ ! -e "$binfmt/register" ]; then
    if [ "$(id -u)" -eq 0 ]; then mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
    else sudo -n mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true; fi
  fi
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  if [ -e "$binfmt/register" ] && [ ! -e "$binfmt/qemu-aarch64" ] && [ -r "$conf" ]; then
    grep -v '^[#;]' "$conf" | grep . | as_root "$binfmt/register" 2>/dev/null || true
  fi
  if [ -e "$binfmt/qemu-aarch64" ] && [ "$(sed -n 1p "$binfmt/qemu-aarch64")" = disabled ]; then
    echo 1 | as_root "$binfmt/qemu-aarch64" 2>/dev/null || true
  fi
  if [ -e "$binfmt/status" ] && [ "$(cat "$binfmt/status")" = disabled ]; then
    echo 1 | as_root "$binfmt/status" 2>/dev/null || true
  fi
fi
if runs_natively; then
  run_mode=binfmt
  say "aarch64 programs run through binfmt_misc ($(sed -n 's/^interpreter //p' "$binfmt/qemu-aarch64" 2>/dev/null))"
else
  qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
  [ -n "$qemu" ] || fail "neither binfmt_misc nor qemu-aarch64 runs aarch64 programs"
  [ "$("$qemu" "$probe" 2>/dev/null)" = "aarch64 ok" ] || fail "$qemu cannot run $probe"
  run_mode=explicit
  say "binfmt_misc unavailable: running the test programs through $qemu; those that start other aarch64 programs are skipped"
fi

# ---------------------------------------------------------------------------
# 3. sources: a fresh copy, configured out of tree
# ---------------------------------------------------------------------------
t1=$(date +%s)
if [ "$(git -C "$top" rev-parse --show-toplevel 2>/dev/null)" = "$top" ]; then
  src=$build_dir/src
  rm -rf "$src"
  mkdir -p "$src"
  excl= # a BUILD_DIR inside the tree is no source, ignored or not
  case $build_dir in "$top"/*) excl="--exclude=/${build_dir#"$top"/}/" ;; esac
  git -C "$top" ls-files -z --cached --others --exclude-standard ${excl:+"$excl"} |
    (cd "$top" && tar --null --no-recursion --ignore-failed-read -T - -cf -) |
    tar -xf - -C "$src"
  (cd "$src" && autoreconf -fi >"$build_dir/autoreconf.log" 2>&1) ||
    { cat "$build_dir/autoreconf.log" >&2; fail "autoreconf failed"; }
elif [ -e "$top/config.status" ]; then
  fail "$top is configured in place and is not a git work tree: run 'make distclean' there first"
else
  src=$top # a release tarball: configure is there
fi

obj=$build_dir/build
mkdir -p "$obj"
cd "$obj"
if ! "$src/configure" --host=$host PKG_CONFIG=$host-pkg-config "$@" >configure.log 2>&1; then
  tail -30 configure.log >&2
  fail "configure --host=$host failed (log: $obj/configure.log)"
fi
sed -n '/^tidemalloc .* configured:/,$p' configure.log
if ! make -j"$jobs" >build.log 2>&1; then
  grep -E "error|Error|warning" build.log | head -40 >&2
  fail "cross build failed (log: $obj/build.log)"
fi
say "src/.libs/libtidemalloc.so: $($host-readelf -h src/.libs/libtidemalloc.so | sed -n 's/^ *Machine: *//p')"
make -C tests -j"$jobs" check TESTS= >check-build.log 2>&1 ||
  { grep -E "error|Error|warning" check-build.log | head -40 >&2; fail "building the test programs failed (log: $obj/check-build.log)"; }
say "configured and built in $obj, test programs too ($(since "$t1"))"
if [ "$build_only" = yes ]; then
  say "build only: no test run ($(since "$t0") in all)"
  exit 0
fi

# ---------------------------------------------------------------------------
# 4. tests under qemu-user
# ---------------------------------------------------------------------------
# shellcheck disable=SC2016 # $(TESTS) is make's
all_tests=$(printf 'tide-print-tests:\n\t@echo $(TESTS)\n' | make -s -C tests -f Makefile -f - tide-print-tests)
[ -n "$tests" ] || tests=$all_tests
not_run=
n_not_run=0
drop() { # drop "NAMES" "REASON": take NAMES out of $tests
  for d in $1; do
    case " $tests " in
      *" $d "*) tests=$(echo " $tests " | sed "s/ $d / /; s/^ *//; s/ *\$//")
                n_not_run=$((n_not_run + 1))
                not_run="$not_run
  $d: $2" ;;
    esac
  done
}
if [ "$quick" = yes ]; then
  # thread soak tests, which ./run-tests runs natively (tests/README.md)
  drop test_stress "not in --quick: 2.5 min alone under qemu-user (20 s natively)"
  drop test_handoff "not in --quick: 1.3 min alone under qemu-user (5 s natively)"
fi
if [ "$run_mode" = explicit ]; then
  drop "test_api test_errors test_numa test_pager" "no binfmt_misc: the test executes itself (/proc/self/exe)"
  drop "test_cxx.sh test_init.sh test_tide_rss.sh test_address_space.sh test_python.sh" \
    "no binfmt_misc: the shell test runs aarch64 programs"
  # libtool's wrapper scripts are shell scripts: it hands qemu the real program
  set -- LOG_COMPILER="$obj/libtool --mode=execute $qemu"
else
  set --
fi
if [ -n "$not_run" ]; then
  say "not run:$not_run"
fi
[ -n "$tests" ] || fail "no test left to run"

t2=$(date +%s)
say "make check under qemu-user: $tests"
status=0
# Only tests/: the suite is there (the top level's check-local, if any, is not
# for the cross build). Emulated programs are slow: Check's per-test timeouts
# stretched (CK_TIMEOUT_MULTIPLIER) unless set.
CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-10} \
  make -s -C tests --no-print-directory -j"$jobs" check TESTS="$tests" "$@" || status=$?
elapsed=$(since "$t2")

log=tests/test-suite.log
count() {
  n=$(sed -n "s/^# $1: *\([0-9]*\)\$/\1/p" "$log" 2>/dev/null | head -1)
  echo "${n:-0}"
}
pass=$(count PASS)
failed=$(($(count FAIL) + $(count ERROR) + $(count XPASS)))
# make failed without a failed test (a test program did not build, ...)
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
# skipped: by the tests (exit 77) and not run at all (above)
skipped=$(($(count SKIP) + n_not_run))

# What was left out inside the tests that ran, and why (tests/README.md).
for t in $tests; do
  f=tests/${t%.sh}.log
  [ -f "$f" ] || continue
  grep -h 'SKIP' "$f" | grep -v '^SKIP [^ ]* (exit status: 77)$' | sed "s|^|  ${t}: |"
done >skipped.txt
if [ -s skipped.txt ]; then
  say "skipped under qemu-user (tests or parts of them):"
  cat skipped.txt
fi

if [ "$failed" -ne 0 ]; then
  echo "===== $obj/$log =====" >&2
  cat "$log" >&2 || true
  say "make check under qemu-user FAILED ($elapsed; $(since "$t0") in all)" >&2
  echo "cross-aarch64: $pass passed, $failed failed, $skipped skipped"
  exit 1
fi
say "make check under qemu-user passed ($elapsed; $(since "$t0") in all)"
echo "cross-aarch64: $pass passed, 0 failed, $skipped skipped"
