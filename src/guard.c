/* The hardened build's block trailers (--enable-hardened): catching a heap
 * overflow at the free of the block it ran off.
 *
 * Every block is allocated 8 bytes larger than asked. Its last 8 bytes (the
 * trailer) hold the size the program asked for, encoded with a per-process
 * secret and the block's address; up to 16 bytes after that size (as many
 * as there are before the trailer) hold a fill byte. free() and realloc()
 * decode the trailer and check the fill: an overflow of even one byte past
 * the asked size changes a fill byte or the trailer, and is reported with
 * the block's address before the block is reused. An overflow runs on from
 * the asked size, so its first bytes are always in the fill (or the
 * trailer): filling the whole gap up to the trailer (up to an eighth of the
 * block) would catch nothing more and cost a memset and a scan of it on
 * every call. The fill byte has its top bit set and is never 0xff, so
 * overflows that write text, zeroes or 0xff are caught every time.
 *
 * malloc_usable_size() reports the size asked for: writing past it is what
 * is checked. The default build compiles this file but never calls it. */
#include "internal.h"

#include <string.h>

#define TM_TRAILER sizeof(uint64_t)
#define TM_FILL_MAX 16 /* fill bytes checked after the asked size */

/* The fill after n in a block of `usable` bytes. */
static size_t tm_fill_len(size_t n, size_t usable) {
  size_t gap = usable - TM_TRAILER - n;
  return gap < TM_FILL_MAX ? gap : TM_FILL_MAX;
}

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

void *tm_guard_seal(void *p, size_t n) { return p ? tm_guard_seal_in(p, n, tm_usable_size(p)) : NULL; }

void *tm_guard_seal_in(void *p, size_t n, size_t usable) {
  TM_ASSERT(usable == tm_usable_size(p) && usable >= n + TM_TRAILER);
  unsigned char *b = p;
  memset(b + n, tm_trailer_fill(), tm_fill_len(n, usable));
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
  /* eight bytes at a time, then the rest */
  unsigned char fill = tm_trailer_fill();
  uint64_t fill8 = fill * 0x0101010101010101ULL;
  size_t len = tm_fill_len((size_t)n, usable), i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, b + n + i, sizeof w);
    if (w != fill8) return SIZE_MAX;
  }
  for (; i < len; i++)
    if (b[n + i] != fill) return SIZE_MAX;
  return (size_t)n;
}

size_t tm_guard_requested(const void *p) {
  size_t usable = tm_usable_size(p);
  if (usable < TM_TRAILER) return 0;
  size_t n = tm_guard_decode(p, usable);
  return n == SIZE_MAX ? 0 : n;
}

bool tm_guard_check_block(const char *who, void *p, size_t usable) {
  if (tm_guard_decode(p, usable) != SIZE_MAX) return true;
  /* A free block holds the free key (and a link) where a small block's
   * trailer may be: a second free, which the caller reports as such. */
  if (((const uint64_t *)p)[1] == tm_free_key()) return true;
  tm_report_invalid(who, p, "heap overflow: the end of the block was overwritten, block");
  return false;
}

bool tm_guard_check(const char *who, void *p) {
  if (!p) return true;
  size_t usable = tm_usable_size(p);
  if (usable < TM_TRAILER) return true; /* not a block of ours: the caller reports it */
  return tm_guard_check_block(who, p, usable);
}
