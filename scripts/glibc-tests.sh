#!/bin/bash
# Run glibc's own malloc tests (malloc/tst-*.c of glibc 2.36, from Debian's
# glibc-source tarball) standalone, each under glibc and preloaded with
# tidemalloc, tcmalloc, mimalloc and jemalloc, and report PASS / FAIL /
# TIMEOUT / UNSUPPORTED per test and allocator as a markdown table.
#
# usage: scripts/glibc-tests.sh [options]
#   --tide PATH         tidemalloc library (default: src/.libs/libtidemalloc.so
#                       of this checkout); copied at the start, the copy is
#                       preloaded
#   --out FILE          also write the markdown report to FILE
#   --work DIR          work directory: extracted sources, shim, libsupport,
#                       binaries, logs/TEST.ALLOCATOR.log (stdout+stderr);
#                       default a new ${TMPDIR:-/tmp}/glibc-tests.XXXXXX, kept
#   --timeout S         limit for one test (default 30)
#   --long-timeout S    limit for the tests whose source asks glibc's driver
#                       for more than its default 20 s: tst-mallocfork2,
#                       tst-mallocfork3, tst-malloc-thread-fail (100 s) and
#                       tst-malloc-tcache-leak (50 s) (default 120)
#   --allocators LIST   comma-separated, from glibc,tidemalloc,tcmalloc,
#                       mimalloc,jemalloc (default: all five)
#   --tests LIST        comma-separated test names (default: the 37 below)
#   --list              print the tests run and the ones left out, and exit
#
# The 37 tests are glibc 2.36's malloc/Makefile `tests' (with the tunables
# and GLIBC_2.23-compat additions) less mallocbug (not a tst-*.c), the four
# tst-interpose-* (they bring their own malloc, two are static) and
# tst-alloc_buffer (glibc's private alloc_buffer API); --list names every
# tst-*.c left out and why.  Five of the 37 test glibc's debugging library
# libc_malloc_debug.so or its GLIBC_2.2.5 compatibility ABI rather than the
# malloc API (marked "glibc-only"); the totals are given with and without
# them.  Tests run one at a time through glibc's own forking test driver
# (support/test-driver.c), as `make check' runs them: with LC_ALL=C, the
# malloc/Makefile's TEST-ENV settings, TMPDIR in the work directory, stdin
# from /dev/null, and TIMEOUTFACTOR set so that the driver's alarm comes
# after this script's limit.  Under glibc the -ENV's LD_PRELOAD of
# libc_malloc_debug.so is kept; under the others the allocator alone is
# preloaded (the MALLOC_CHECK_/GLIBC_TUNABLES variables stay).  Nothing of
# glibc's source enters the repository: it is extracted into the work
# directory at run time; the few glibc-internal headers the tests and
# libsupport include are written here (our own stand-ins) or copied from
# the tarball into the work directory.  Needs gcc, xz and glibc-source
# (installed with apt-get when missing and run as root).
set -u

usage() { sed -n '2,43s/^# \{0,1\}//p' "$0"; }

here=$(cd "$(dirname "$0")" && pwd)
TIDE="$here/../src/.libs/libtidemalloc.so"
OUT=
WORK=
TIMEOUT=30
LONG_TIMEOUT=120
ALLOCATORS=glibc,tidemalloc,tcmalloc,mimalloc,jemalloc
TESTS_ARG=
LIST_ONLY=

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --tide) TIDE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --long-timeout) LONG_TIMEOUT=$2; shift 2 ;;
    --allocators) ALLOCATORS=$2; shift 2 ;;
    --tests) TESTS_ARG=$2; shift 2 ;;
    --list) LIST_ONLY=1; shift ;;
    *) echo "glibc-tests: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------- the tests

# name  kind: api = checks the malloc API any allocator offers;
# glibc = checks glibc's debugging library or compatibility ABI.
TEST_TABLE="
tst-calloc api
tst-compathooks-off glibc
tst-compathooks-on glibc
tst-free-errno api
tst-mallinfo2 api
tst-malloc api
tst-malloc-backtrace api
tst-malloc-check api
tst-malloc-fork-deadlock api
tst-malloc-stats-cancellation api
tst-malloc-tcache-leak api
tst-malloc-thread-exit api
tst-malloc-thread-fail api
tst-malloc-too-large api
tst-malloc-usable glibc
tst-malloc-usable-tunables glibc
tst-malloc_info api
tst-mallocalign1 api
tst-mallocfork api
tst-mallocfork2 api
tst-mallocfork3 api
tst-mallocstate glibc
tst-mallopt api
tst-memalign api
tst-mxfast api
tst-obstack api
tst-posix_memalign api
tst-pvalloc api
tst-pvalloc-fortify api
tst-realloc api
tst-reallocarray api
tst-safe-linking api
tst-tcfree1 api
tst-tcfree2 api
tst-tcfree3 api
tst-trim1 api
tst-valloc api
"

EXCLUDED="
tst-interpose-nothread|brings its own malloc (tst-interpose-aux.c) linked into the program: it tests interposition itself, and a preloaded allocator would be bypassed
tst-interpose-thread|as tst-interpose-nothread, with threads
tst-interpose-static-nothread|static program with its own malloc: LD_PRELOAD has no effect
tst-interpose-static-thread|static program with its own malloc: LD_PRELOAD has no effect
tst-alloc_buffer|glibc's private alloc_buffer API (<alloc_buffer.h>, __libc_alloc_buffer_* GLIBC_PRIVATE): no malloc test
tst-dynarray|tests-internal: glibc's private dynarray (malloc/dynarray-skeleton.c, __libc_dynarray_*), and its mtrace check
tst-dynarray-fail|tests-internal: private dynarray, mcheck and mtrace
tst-dynarray-at-fail|tests-internal: private dynarray's failure path
tst-scratch_buffer|tests-internal: glibc's private scratch_buffer (__libc_scratch_buffer_*)
tst-mtrace|test-srcs, not a test: mtrace(3) output checked by tst-mtrace.sh with the mtrace Perl script; mtrace lives in libc_malloc_debug.so
"
# Not tst-*.c files: mallocbug.c (a test in the Makefile, left out as the
# earlier count was of tst-*.c); the -mcheck, -malloc-check,
# -malloc-hugetlb1/2 variants the Makefile builds of every test (the same
# programs linked with libmcheck or run under MALLOC_CHECK_=3 or the
# glibc.malloc.hugetlb tunable: glibc's own modes); the helpers
# tst-interpose-aux*.c, tst-interpose-skeleton.c, tst-dynarray-shared.h.

# The TEST-ENV lines of glibc 2.36's malloc/Makefile; "DEBUG" stands for
# LD_PRELOAD of libc_malloc_debug.so, kept only under glibc.
test_env() {
  case "$1" in
    tst-malloc-check) echo "MALLOC_CHECK_=3 DEBUG" ;;
    tst-malloc-usable) echo "MALLOC_CHECK_=3 DEBUG" ;;
    tst-malloc-usable-tunables) echo "GLIBC_TUNABLES=glibc.malloc.check=3 DEBUG" ;;
    tst-mxfast) echo "GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0" ;;
    tst-compathooks-on) echo "DEBUG" ;;
    tst-mallocstate) echo "DEBUG" ;;
  esac
}

test_kind() { echo "$TEST_TABLE" | awk -v t="$1" '$1 == t { print $2 }'; }

if [ -n "$LIST_ONLY" ]; then
  echo "Run ($(echo "$TEST_TABLE" | grep -c .)):"
  echo "$TEST_TABLE" | awk 'NF { printf "  %-30s %s\n", $1, ($2 == "glibc" ? "glibc-only" : "") }'
  echo "Left out:"
  echo "$EXCLUDED" | awk -F'|' 'NF { printf "  %-30s %s\n", $1, $2 }'
  exit 0
fi

if [ -n "$TESTS_ARG" ]; then
  TESTS=$(echo "$TESTS_ARG" | tr ',' ' ')
  for t in $TESTS; do
    [ -n "$(test_kind "$t")" ] || { echo "glibc-tests: '$t' is not one of the tests (see --list)" >&2; exit 2; }
  done
else
  TESTS=$(echo "$TEST_TABLE" | awk 'NF { print $1 }')
fi
ALLOCS=$(echo "$ALLOCATORS" | tr ',' ' ')

LIBDIR=/usr/lib/x86_64-linux-gnu
alloc_lib() {
  case "$1" in
    glibc) echo "" ;;
    tidemalloc) echo "$TIDE" ;;
    tcmalloc) echo "$LIBDIR/libtcmalloc_minimal.so.4" ;;
    mimalloc) echo "$LIBDIR/libmimalloc.so.2" ;;
    jemalloc) echo "$LIBDIR/libjemalloc.so.2" ;;
    *) echo "glibc-tests: unknown allocator '$1'" >&2; exit 2 ;;
  esac
}
for a in $ALLOCS; do alloc_lib "$a" >/dev/null || exit 2; done
[ "$(echo "$ALLOCATORS" | tr ',' '\n' | grep -cx tidemalloc)" -eq 0 ] || [ -f "$TIDE" ] || {
  echo "glibc-tests: no tidemalloc library at $TIDE (build first, or --tide PATH)" >&2; exit 1; }
case "$TIDE" in /*) ;; *) TIDE="$(pwd)/$TIDE" ;; esac

# ---------------------------------------------------------------- sources

GLIBC_VERSION=$(getconf GNU_LIBC_VERSION | awk '{ print $2 }')
TARBALL=/usr/src/glibc/glibc-$GLIBC_VERSION.tar.xz
if [ ! -f "$TARBALL" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "glibc-tests: installing glibc-source" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq glibc-source >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq glibc-source >/dev/null; }
  fi
  [ -f "$TARBALL" ] || { echo "glibc-tests: $TARBALL missing: apt-get install glibc-source" >&2; exit 1; }
fi
DEBUG_LIB=
for f in /lib/x86_64-linux-gnu/libc_malloc_debug.so.0 "$LIBDIR/libc_malloc_debug.so.0"; do
  [ -f "$f" ] && { DEBUG_LIB=$f; break; }
done
[ -n "$DEBUG_LIB" ] || { echo "glibc-tests: libc_malloc_debug.so.0 not found" >&2; exit 1; }

if [ -z "$WORK" ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/glibc-tests.XXXXXX")
else
  mkdir -p "$WORK"
fi
WORK=$(cd "$WORK" && pwd)
SRC=$WORK/glibc-$GLIBC_VERSION
START=$(date +%s)

echo "glibc-tests: work directory $WORK" >&2
rm -rf "$SRC" "${WORK:?}/inc" "${WORK:?}/shim" "${WORK:?}/obj" "${WORK:?}/bin" "${WORK:?}/logs" "${WORK:?}/tmp"
mkdir -p "$WORK/inc" "$WORK/shim" "$WORK/obj" "$WORK/bin" "$WORK/logs" "$WORK/tmp" "$WORK/run"
tar -xJf "$TARBALL" -C "$WORK" \
  "glibc-$GLIBC_VERSION/malloc" "glibc-$GLIBC_VERSION/support" \
  "glibc-$GLIBC_VERSION/test-skeleton.c" \
  "glibc-$GLIBC_VERSION/include/libc-diag.h" \
  "glibc-$GLIBC_VERSION/include/array_length.h" \
  "glibc-$GLIBC_VERSION/sysdeps/generic/malloc-size.h" \
  "glibc-$GLIBC_VERSION/sysdeps/generic/malloc-alignment.h" ||
  { echo "glibc-tests: extracting $TARBALL failed" >&2; exit 1; }

# <support/...> and <malloc/...> resolve through inc/; the glibc root itself
# cannot be on the include path (its bits/ would shadow the installed ones).
ln -s "$SRC/support" "$WORK/inc/support"
ln -s "$SRC/malloc" "$WORK/inc/malloc"
# Self-contained glibc-internal headers the tests include, used as they are.
cp "$SRC/include/libc-diag.h" "$SRC/include/array_length.h" \
   "$SRC/sysdeps/generic/malloc-size.h" "$SRC/sysdeps/generic/malloc-alignment.h" \
   "$WORK/shim/"

# ---------------------------------------------------------------- the shim

# Stands in for glibc's generated config.h (forced in first, as glibc's
# build forces config.h and libc-symbols.h in).
cat > "$WORK/shim/config.h" <<'EOF'
/* glibc-tests.sh: what the tests and libsupport need of config.h.  */
#ifndef _GNU_SOURCE
# define _GNU_SOURCE 1
#endif
/* configure's --with-timeoutfactor default; TIMEOUTFACTOR in the
   environment scales the driver's timeout at run time.  */
#define TIMEOUTFACTOR 1
EOF

# tst-mallocstate and tst-compathooks-* bind to compatibility symbols.
cat > "$WORK/shim/shlib-compat.h" <<'EOF'
/* glibc-tests.sh: compat_symbol_reference binds LOCAL to SYMBOL at the
   first symbol version of x86_64 (GLIBC_2.0 there is GLIBC_2.2.5).  */
#ifndef _SHLIB_COMPAT_H
#define _SHLIB_COMPAT_H 1
#define compat_symbol_reference(lib, local, symbol, version) \
  __asm__ (".symver " #local "," #symbol "@GLIBC_2.2.5")
#endif
EOF
cat > "$WORK/shim/libc-symbols.h" <<'EOF'
/* glibc-tests.sh: nothing of glibc's symbol machinery is needed.  */
EOF

# support_capture_subprocess.c reads the pipes into a scratch_buffer,
# glibc's private API: a small stand-in with the same behaviour.
cat > "$WORK/shim/scratch_buffer.h" <<'EOF'
/* glibc-tests.sh: stand-in for glibc's private scratch_buffer.  */
#ifndef _SCRATCH_BUFFER_H
#define _SCRATCH_BUFFER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
struct scratch_buffer
{
  void *data;
  size_t length;
  union { max_align_t __align; char __c[1024]; } __space;
};
static inline void
scratch_buffer_init (struct scratch_buffer *b)
{
  b->data = b->__space.__c;
  b->length = sizeof b->__space;
}
static inline void
scratch_buffer_free (struct scratch_buffer *b)
{
  if (b->data != b->__space.__c)
    free (b->data);
}
static inline bool
scratch_buffer_grow (struct scratch_buffer *b)
{
  size_t n = 2 * b->length;
  void *p = n < b->length ? NULL : malloc (n);
  scratch_buffer_free (b);
  if (p == NULL)
    {
      scratch_buffer_init (b);
      return false;
    }
  b->data = p;
  b->length = n;
  return true;
}
#endif
EOF

# support_paths.c wants the build's directories on the command line.
cat > "$WORK/shim/support-paths.h" <<EOF
#define SRCDIR_PATH "$SRC"
#define OBJDIR_PATH "$WORK"
#define OBJDIR_ELF_LDSO_PATH "/lib64/ld-linux-x86-64.so.2"
#define INSTDIR_PATH "/"
#define LIBDIR_PATH "$LIBDIR"
#define BINDIR_PATH "/usr/bin"
#define SBINDIR_PATH "/usr/sbin"
#define SLIBDIR_PATH "/lib/x86_64-linux-gnu"
#define ROOTSBINDIR_PATH "/sbin"
#define COMPLOCALEDIR_PATH "/usr/lib/locale"
EOF

# ---------------------------------------------------------------- build

# glibc's flags for tests (Makeconfig: -std=gnu11 -fgnu89-inline, default
# -g -O2, -fmerge-all-constants, -frounding-math; malloc/Makefile:
# -DTEST_NO_MALLOPT), without -Werror: warnings are glibc's business.
CFLAGS_GLIBC="-std=gnu11 -fgnu89-inline -g -O2 -fmerge-all-constants -frounding-math"
INCS="-include $WORK/shim/config.h -I$WORK/shim -I$WORK/inc"

# The members of glibc's libsupport the 37 tests link.
SUPPORT_OBJS="check ignore_stderr oom_error support-xstat
support_capture_subprocess support_copy_file support_copy_file_range
support_paths support_record_failure support_shared_allocate
support_subprocess support_test_compare_failure support_test_main
support_test_verify_impl temp_file write_message xasprintf xcalloc xchdir
xclose xdup2 xfclose xfopen xfork xmalloc xmemstream xmmap xmunmap xopen
xpipe xpoll xposix_spawn xposix_spawn_file_actions_addclose
xposix_spawn_file_actions_adddup2 xpthread_barrier_destroy
xpthread_barrier_init xpthread_barrier_wait xpthread_barrierattr_destroy
xpthread_barrierattr_init xpthread_barrierattr_setpshared
xpthread_check_return xpthread_create xpthread_join xpthread_kill xrealloc
xsignal xsysconf xwaitpid"

echo "glibc-tests: building libsupport and $(echo "$TESTS" | wc -w) tests" >&2
for o in $SUPPORT_OBJS; do
  extra=
  # temp_file.c takes NAME_MAX from glibc's internal <limits.h> wrapper.
  [ "$o" = temp_file ] && extra="-include limits.h"
  [ "$o" = support_paths ] && extra="-include $WORK/shim/support-paths.h"
  # shellcheck disable=SC2086
  gcc -c $CFLAGS_GLIBC $INCS -I"$SRC/support" $extra -w \
      "$SRC/support/$o.c" -o "$WORK/obj/$o.o" 2>"$WORK/obj/$o.err" ||
    { echo "glibc-tests: libsupport: $o.c does not build:" >&2; cat "$WORK/obj/$o.err" >&2; exit 1; }
done
rm -f "$WORK/libsupport.a"
ar rcs "$WORK/libsupport.a" "$WORK"/obj/*.o

BUILD_FAILED=
for t in $TESTS; do
  extra=
  # malloc_get_state/malloc_set_state live in libc_malloc_debug.so only
  # (malloc/Makefile links it in the same way).
  [ "$t" = tst-mallocstate ] && extra=$DEBUG_LIB
  # shellcheck disable=SC2086
  if ! gcc $CFLAGS_GLIBC $INCS -DTEST_NO_MALLOPT -w "$SRC/malloc/$t.c" \
       -o "$WORK/bin/$t" "$WORK/libsupport.a" $extra -lpthread \
       >"$WORK/logs/$t.build.log" 2>&1; then
    echo "glibc-tests: $t does not build (logs/$t.build.log)" >&2
    BUILD_FAILED="$BUILD_FAILED $t"
  fi
done

# ---------------------------------------------------------------- run

# The limit of a test: --long-timeout for the tests whose source sets a
# TIMEOUT above the driver's DEFAULT_TIMEOUT (20 s), else --timeout.
own_timeout() {
  local n
  n=$(sed -n 's/^#define TIMEOUT[[:space:]]\{1,\}\([0-9]\{1,\}\).*/\1/p' "$SRC/malloc/$1.c" | head -n 1)
  echo "${n:-20}"
}

sig_short() {
  case "$1" in
    Aborted) echo SIGABRT ;;
    "Segmentation fault") echo SIGSEGV ;;
    "Bus error") echo SIGBUS ;;
    Killed) echo SIGKILL ;;
    "Illegal instruction") echo SIGILL ;;
    "Floating point exception") echo SIGFPE ;;
    "Trace/breakpoint trap") echo SIGTRAP ;;
    Terminated) echo SIGTERM ;;
    *) echo "$1" ;;
  esac
}

# Ends whatever a run left behind (the driver's child runs in its own
# process group): the processes carrying this run's token in their
# environment, each by its pid.
reap() {
  local token=$1 p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    if grep -qzx "GLIBC_TESTS_TOKEN=$token" "/proc/$p/environ" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null
    fi
  done
}

# tidemalloc is preloaded from a copy taken now: src/.libs may be rebuilt
# while the tests run, and a run should test one build.
lib_id() { [ -f "$1" ] && echo "$(sha256sum "$1" | cut -c1-12), built $(date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ)"; }
TIDE_ORIG=$(readlink -f "$TIDE")
TIDE_ID=$(lib_id "$TIDE_ORIG")
TIDE_SRC=
if [ -f "$TIDE_ORIG" ]; then
  mkdir -p "$WORK/lib"
  cp "$TIDE_ORIG" "$WORK/lib/libtidemalloc.so"
  TIDE=$WORK/lib/libtidemalloc.so
  # The checkout it was built in, if it is one (the tree may have moved on).
  top=$(cd "$(dirname "$TIDE_ORIG")" && git rev-parse --show-toplevel 2>/dev/null)
  [ -n "$top" ] && TIDE_SRC="checkout $(git -C "$top" rev-parse --short HEAD)$([ -z "$(git -C "$top" status --porcelain -- src pager 2>/dev/null)" ] || echo ' with uncommitted changes in src/ or pager/')"
fi

declare -A RESULT
declare -A SECS
RUN_NO=0
for t in $TESTS; do
  own=$(own_timeout "$t")
  limit=$TIMEOUT
  [ "$own" -gt 20 ] && limit=$LONG_TIMEOUT
  factor=$(( limit / own + 2 ))
  tenv=$(test_env "$t")
  for a in $ALLOCS; do
    log=$WORK/logs/$t.$a.log
    lib=$(alloc_lib "$a")
    if [ "$a" != glibc ] && [ ! -f "$lib" ]; then
      RESULT[$t.$a]="n/a"; SECS[$t.$a]=0
      echo "$a: $lib not installed" > "$log"
      continue
    fi
    if [ ! -x "$WORK/bin/$t" ]; then
      RESULT[$t.$a]="BUILD"; SECS[$t.$a]=0
      continue
    fi
    preload=
    vars=
    for v in $tenv; do
      if [ "$v" = DEBUG ]; then
        [ "$a" = glibc ] && preload=$DEBUG_LIB
      else
        vars="$vars $v"
      fi
    done
    [ -n "$lib" ] && preload=$lib
    RUN_NO=$((RUN_NO + 1))
    token="$$.$RUN_NO"
    tmp=$WORK/tmp/$t.$a
    mkdir -p "$tmp"
    {
      echo "# $t under $a: limit ${limit}s, TIMEOUTFACTOR=$factor (test's own timeout ${own}s)"
      echo "# env: LC_ALL=C TMPDIR=$tmp${vars}${preload:+ LD_PRELOAD=$preload}"
    } > "$log"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    ( cd "$WORK/run" &&
      exec timeout -s INT -k 10 "$limit" \
        env LC_ALL=C TMPDIR="$tmp" TIMEOUTFACTOR="$factor" \
            GLIBC_TESTS_TOKEN="$token" $vars ${preload:+LD_PRELOAD=$preload} \
            "$WORK/bin/$t" ) </dev/null >>"$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    reap "$token"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    SECS[$t.$a]=$secs
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      res="TIMEOUT"
    elif [ $rc -eq 0 ]; then
      res="PASS"
    elif [ $rc -eq 77 ]; then
      res="UNSUPPORTED"
    elif [ $rc -gt 128 ]; then
      res="FAIL($(sig_short "$(kill -l $((rc - 128)) 2>/dev/null | sed 's/^/SIG/')"))"
    else
      # The driver turns a child's signal into exit 1 and says which.
      s=$(sed -n "s/^Didn't expect signal from child: got \`\(.*\)'\$/\1/p" "$log" | head -n 1)
      w=$(sed -n "s/^Incorrect signal from child: got \`\(.*\)', need \`\(.*\)'\$/\1|\2/p" "$log" | head -n 1)
      n=$(sed -n "s/^Expected signal '\(.*\)' from child, got none\$/\1/p" "$log" | head -n 1)
      if [ -n "$s" ]; then
        res="FAIL($(sig_short "$s"))"
      elif [ -n "$w" ]; then
        res="FAIL($(sig_short "${w%%|*}"), wants $(sig_short "${w#*|}"))"
      elif [ -n "$n" ]; then
        res="FAIL(no $(sig_short "$n"))"
      else
        res="FAIL(exit $rc)"
      fi
    fi
    echo "# result: $res (exit $rc, ${secs}s)" >> "$log"
    RESULT[$t.$a]=$res
    printf 'glibc-tests: %-30s %-11s %-20s %6ss\n' "$t" "$a" "$res" "$secs" >&2
  done
done
END=$(date +%s)
TIDE_NOTE=
if [ -n "$TIDE_ID" ] && [ "$(lib_id "$TIDE_ORIG")" != "$TIDE_ID" ]; then
  TIDE_NOTE="Note: $TIDE_ORIG was rebuilt during the run; the run used the copy taken at its start."
fi

# ---------------------------------------------------------------- report

report() {
  local t a n_all n_api
  echo "## glibc $GLIBC_VERSION malloc tests, standalone, per allocator"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(uname -m), $(nproc) cores."
  echo "tidemalloc: $TIDE_ORIG (sha256 ${TIDE_ID:-?}${TIDE_SRC:+; $TIDE_SRC}), preloaded from a copy."
  [ -n "$TIDE_NOTE" ] && echo "$TIDE_NOTE"
  echo "Limits: ${TIMEOUT}s, ${LONG_TIMEOUT}s for tests that set a longer TIMEOUT; run one at a time through glibc's test driver."
  echo
  printf '| test |'; for a in $ALLOCS; do printf ' %s |' "$a"; done; echo
  printf '| --- |'; for a in $ALLOCS; do printf ' --- |'; done; echo
  for t in $TESTS; do
    if [ "$(test_kind "$t")" = glibc ]; then printf '| %s (glibc-only) |' "$t"; else printf '| %s |' "$t"; fi
    for a in $ALLOCS; do printf ' %s |' "${RESULT[$t.$a]}"; done; echo
  done
  n_all=$(echo "$TESTS" | wc -w)
  n_api=0
  for t in $TESTS; do [ "$(test_kind "$t")" = api ] && n_api=$((n_api + 1)); done
  printf '| **passed, of %d** |' "$n_all"
  for a in $ALLOCS; do
    n=0; for t in $TESTS; do [ "${RESULT[$t.$a]}" = PASS ] && n=$((n + 1)); done
    printf ' **%d** |' "$n"
  done; echo
  printf '| passed, of the %d API tests |' "$n_api"
  for a in $ALLOCS; do
    n=0; for t in $TESTS; do [ "$(test_kind "$t")" = api ] && [ "${RESULT[$t.$a]}" = PASS ] && n=$((n + 1)); done
    printf ' %d |' "$n"
  done; echo
  printf '| time (s) |'
  for a in $ALLOCS; do
    printf ' %s |' "$(for t in $TESTS; do echo "${SECS[$t.$a]}"; done | awk '{ s += $1 } END { printf "%.0f", s }')"
  done; echo
  echo
  echo "glibc-only: checks glibc's debugging library libc_malloc_debug.so (MALLOC_CHECK_ usable sizes,"
  echo "malloc_set_state of a dumped glibc heap) or its GLIBC_2.2.5 hook variables, not the malloc API."
  echo "FAIL(SIG...): the test died of that signal; FAIL(no SIGABRT): it expected an abort that did not come."
  [ -n "$BUILD_FAILED" ] && echo "Did not build:$BUILD_FAILED"
  echo "Total run time: $((END - START)) s. Logs: $WORK/logs/TEST.ALLOCATOR.log"
}

report | tee ${OUT:+"$OUT"}
