/* Aligned allocation. Small blocks get their alignment for free from a size
 * class whose block size is a multiple of it (spans start 64 KiB aligned);
 * larger alignments come from page runs or huge mappings placed to suit. */
#include "internal.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

static bool tm_is_pow2(size_t x) { return x && !(x & (x - 1)); }

/* align: a power of two. */
static void *tm_malloc_aligned_raw(size_t size, size_t align) {
  if (align <= TM_ALIGN) return tm_malloc(size);
  /* both sides explicit: PTRDIFF_MAX - align would wrap for an alignment
   * of 2^63 and let every size through */
  if (align > PTRDIFF_MAX || size > PTRDIFF_MAX - align) {
    errno = ENOMEM;
    return NULL;
  }
  if (size <= TM_SMALL_MAX && align <= TM_SMALL_MAX) {
    for (unsigned c = tm_size_class(size < align ? align : size); c < TM_NUM_CLASSES; c++)
      if ((tm_class_size(c) & (align - 1)) == 0) return tm_malloc_in_class(c);
  }
  tm_init();
  if (size <= tm_huge_threshold()) {
    void *p = tm_large_alloc(size, align);
    if (p) return p;
  }
  return tm_huge_alloc(size, align, false);
}

/* The hardened build seals the block's end (src/guard.c). */
void *tm_malloc_aligned(size_t size, size_t align) {
  if (TIDE_HARDENED) return tm_guard_seal(tm_malloc_aligned_raw(tm_guard_size(size), align), size);
  return tm_malloc_aligned_raw(size, align);
}

/* glibc: alignments below 16 are plain malloc, others are rounded up to a
 * power of two, and absurd ones are EINVAL. */
TM_API void *memalign(size_t align, size_t size) {
  if (align > SIZE_MAX / 2 + 1) {
    errno = EINVAL;
    return NULL;
  }
  if (!tm_is_pow2(align)) {
    size_t a = TM_ALIGN;
    while (a < align) a <<= 1;
    align = a;
  }
  return tm_malloc_aligned(size, align);
}

/* On failure errno is ENOMEM as well, as glibc leaves it (measured side
 * by side, for impossible sizes and for real exhaustion under RLIMIT_AS);
 * glibc's tst-malloc-thread-fail tests it. */
TM_API int posix_memalign(void **out, size_t align, size_t size) {
  if (align % sizeof(void *) != 0 || !tm_is_pow2(align)) return EINVAL;
  void *p = tm_malloc_aligned(size, align);
  if (!p) {
    errno = ENOMEM;
    return ENOMEM;
  }
  *out = p;
  return 0;
}

/* As glibc 2.38: the alignment must be a power of two, the size need not be
 * a multiple of it. */
TM_API void *aligned_alloc(size_t align, size_t size) {
  if (!tm_is_pow2(align)) {
    errno = EINVAL;
    return NULL;
  }
  return tm_malloc_aligned(size, align);
}

TM_API void *valloc(size_t size) { return tm_malloc_aligned(size, TM_PAGE_SIZE); }

TM_API void *pvalloc(size_t size) {
  size_t rounded = tm_page_round(size);
  if (rounded < size) {
    errno = ENOMEM;
    return NULL;
  }
  return tm_malloc_aligned(rounded ? rounded : TM_PAGE_SIZE, TM_PAGE_SIZE);
}

#ifndef TIDE_NO_LIBC_ALIASES /* set when the public names are renamed (scripts/sanitize.sh) */
TM_ALIAS_BEGIN
TM_API void *__libc_memalign(size_t align, size_t size) __attribute__((alias("memalign")));
TM_API void *__libc_valloc(size_t size) __attribute__((alias("valloc")));
TM_API void *__libc_pvalloc(size_t size) __attribute__((alias("pvalloc")));
TM_ALIAS_END
#endif
