/* The hardened build's block trailers (--enable-hardened): catching a heap
 * overflow at the free of the block it ran off.
 *
 * Every block is allocated 8 bytes larger than asked. Its last 8 bytes (the
 * trailer) hold the size the program asked for, encoded with a per-process
 * secret and the block's address; every byte between that size and the
 * trailer holds a fill byte. free() and realloc() decode the trailer and
 * check the fill: an overflow of even one byte past the asked size changes
 * a fill byte or the trailer, and is reported with the block's address
 * before the block is reused. The fill byte has its top bit set and is never
 * 0xff, so overflows that write text, zeroes or 0xff are caught every time.
 *
 * malloc_usable_size() reports the size asked for: writing past it is what
 * is checked. The default build compiles this file but never calls it. */
#include "internal.h"

#include <string.h>

#define TM_TRAILER sizeof(uint64_t)

static uint64_t tm_trailer_code(const void *p) {
  /* the same secrets as the free key and the links, in another mix */
  return ((tm_free_key() << 17) | (tm_free_key() >> 47)) ^ tm_link_key ^ (uint64_t)(uintptr_t)p;
}

static unsigned char tm_trailer_fill(void) {
  unsigned char b = (unsigned char)(0x80 | ((tm_link_key >> 16) & 0x7f));
  return b == 0xff ? 0xfe : b;
}

size_t tm_guard_size(size_t n) {
  /* beyond PTRDIFF_MAX every allocator path refuses with ENOMEM */
  return n > PTRDIFF_MAX - TM_TRAILER ? SIZE_MAX : n + TM_TRAILER;
}

void *tm_guard_seal(void *p, size_t n) {
  if (!p) return NULL;
  size_t usable = tm_usable_size(p);
  TM_ASSERT(usable >= n + TM_TRAILER);
  unsigned char *b = p;
  memset(b + n, tm_trailer_fill(), usable - TM_TRAILER - n);
  uint64_t code = (uint64_t)n ^ tm_trailer_code(p);
  memcpy(b + usable - TM_TRAILER, &code, sizeof code);
  return p;
}

/* The size p was asked with, or SIZE_MAX when its end was overwritten. */
static size_t tm_guard_decode(const void *p, size_t usable) {
  const unsigned char *b = p;
  uint64_t code;
  memcpy(&code, b + usable - TM_TRAILER, sizeof code);
  uint64_t n = code ^ tm_trailer_code(p);
  if (n > usable - TM_TRAILER) return SIZE_MAX;
  unsigned char fill = tm_trailer_fill();
  for (size_t i = (size_t)n; i < usable - TM_TRAILER; i++)
    if (b[i] != fill) return SIZE_MAX;
  return (size_t)n;
}

size_t tm_guard_requested(const void *p) {
  size_t usable = tm_usable_size(p);
  if (usable < TM_TRAILER) return 0;
  size_t n = tm_guard_decode(p, usable);
  return n == SIZE_MAX ? 0 : n;
}

bool tm_guard_check(const char *who, void *p) {
  if (!p) return true;
  size_t usable = tm_usable_size(p);
  if (usable < TM_TRAILER) return true; /* not a block of ours: the caller reports it */
  if (tm_guard_decode(p, usable) != SIZE_MAX) return true;
  /* A free block holds the free key (and a link) where a small block's
   * trailer may be: a second free, which the caller reports as such. */
  if (((const uint64_t *)p)[1] == tm_free_key()) return true;
  tm_report_invalid(who, p, "heap overflow: the end of the block was overwritten, block");
  return false;
}
