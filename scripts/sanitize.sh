#!/bin/sh
# Runs the test suite with tidemalloc built under UndefinedBehaviorSanitizer,
# and a multi-threaded stress of tidemalloc's internals under
# ThreadSanitizer. Usage: scripts/sanitize.sh (from the top of the tree,
# after scripts/deps.sh). Builds in ./build-ubsan and ./build-tsan.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ -x configure ] || autoreconf -fi

echo "== UBSan: make check"
rm -rf build-ubsan && mkdir build-ubsan && cd build-ubsan
../configure -q --enable-sanitizer=undefined CFLAGS="-O1 -g -fno-sanitize-recover=undefined"
make -j2 >/dev/null
TIDETEST_VARIANT=0 make -j2 check # the debug+hardened pass would not be sanitized
cd "$top"

echo "== TSan: internal stress"
rm -rf build-tsan && mkdir build-tsan && cd build-tsan
../configure -q >/dev/null
make -j2 >/dev/null # for config.h
# TSan brings its own malloc: rename tidemalloc's public entry points so that
# both coexist, and drive tidemalloc through tm_malloc/tm_free.
rename=""
for f in malloc free calloc realloc reallocarray memalign posix_memalign aligned_alloc valloc pvalloc \
  malloc_usable_size free_sized free_aligned_sized cfree malloc_trim mallopt mallinfo2 mallinfo malloc_stats malloc_info; do
  rename="$rename -D$f=tide_tsan_$f"
done
# shellcheck disable=SC2086
${CC:-gcc} -std=gnu11 -O1 -g -fsanitize=thread -ftls-model=initial-exec -DTIDE_NO_LIBC_ALIASES $rename -I. -I"$top/src" -I"$top/pager" \
  -o tsan_stress "$top/tests/tsan_stress.c" "$top"/src/*.c "$top"/pager/*.c -lpthread \
  $(grep -q '^#define HAVE_LIBURING 1' config.h && echo -luring) \
  $(grep -q '^#define HAVE_LIBNUMA 1' config.h && echo -lnuma)
TSAN_OPTIONS="halt_on_error=1 exitcode=66" ./tsan_stress
echo "sanitizers: clean"
