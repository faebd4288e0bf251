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


/* tm_size_class_calc(i * 16) for i = 0..128, generated and checked against
 * it for every size (tests/test_units.c checks it again). */
/* The same, times two: the offset of the class's cache in a heap in 8-byte
 * units, which an x86 address scales for free (the malloc fast path). */
const uint8_t tm_cache_slot_table[129] = {0, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 32, 34, 34, 36, 36, 38, 38, 40, 40, 42, 42, 44, 44, 46, 46, 48, 48, 48, 48, 50, 50, 50, 50, 52, 52, 52, 52, 54, 54, 54, 54, 56, 56, 56, 56, 58, 58, 58, 58, 60, 60, 60, 60, 62, 62, 62, 62, 64, 64, 64, 64, 64, 64, 64, 64, 66, 66, 66, 66, 66, 66, 66, 66, 68, 68, 68, 68, 68, 68, 68, 68, 70, 70, 70, 70, 70, 70, 70, 70, 72, 72, 72, 72, 72, 72, 72, 72, 74, 74, 74, 74, 74, 74, 74, 74, 76, 76, 76, 76, 76, 76, 76, 76, 78, 78, 78, 78, 78, 78, 78, 78};

const uint8_t tm_class_table[129] = {
    0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    15, 16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21, 22, 22, 23,
    23, 24, 24, 24, 24, 25, 25, 25, 25, 26, 26, 26, 26, 27, 27, 27,
    27, 28, 28, 28, 28, 29, 29, 29, 29, 30, 30, 30, 30, 31, 31, 31,
    31, 32, 32, 32, 32, 32, 32, 32, 32, 33, 33, 33, 33, 33, 33, 33,
    33, 34, 34, 34, 34, 34, 34, 34, 34, 35, 35, 35, 35, 35, 35, 35,
    35, 36, 36, 36, 36, 36, 36, 36, 36, 37, 37, 37, 37, 37, 37, 37,
    37, 38, 38, 38, 38, 38, 38, 38, 38, 39, 39, 39, 39, 39, 39, 39,
    39,
};
