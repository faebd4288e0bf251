/* Size classes: 16-byte steps up to 128 bytes, then eight classes per power
 * of two, so a block wastes less than 12.5% of its size above 128 bytes.
 * The class of a size is computed (internal.h); these give its geometry. */
#include "internal.h"

size_t tm_class_size(unsigned c) {
  if (c < 8) return (size_t)(c + 1) * 16;
  unsigned k = c - 8;
  unsigned e = 7 + (k >> 3);
  return (size_t)(9 + (k & 7)) << (e - 3);
}

/* Spans hold at least 8 blocks: one 64 KiB slice up to 8 KiB blocks, four
 * slices above. Only pages that blocks are handed out from get touched. */
unsigned tm_class_slices(unsigned c) {
  return tm_class_size(c) <= 8192 ? 1 : 4;
}
