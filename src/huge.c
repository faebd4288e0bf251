/* Huge blocks: one mapping each, with a segment header in front so that the
 * same lookup as for every other block finds it. realloc moves them with
 * mremap: pages change address, they are never copied. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "internal.h"

#include <errno.h>
#include <sys/mman.h>

atomic_size_t tm_huge_threshold_v = (size_t)1 << 20;

static size_t tm_round_page(size_t n) {
  return (n + TM_PAGE_SIZE - 1) & ~(TM_PAGE_SIZE - 1);
}

/* Registry entries for a huge mapping: the header region, and, when the
 * block itself starts a later region (alignments above 4 MiB), that region
 * with the distance back to the header. */
static void tm_huge_register(tm_segment *seg, uintptr_t block, unsigned on) {
  tm_registry_set((uintptr_t)seg, on ? TM_REG_SEGMENT : TM_REG_NONE);
  size_t off = block - (uintptr_t)seg;
  if (off >= TM_SEG_SIZE) {
    unsigned k = (unsigned)__builtin_ctzll(off) - TM_SEG_SHIFT;
    tm_registry_set(block, on ? 2 + k : TM_REG_NONE);
  }
}

static tm_span *tm_huge_span(tm_segment *seg, uintptr_t block) {
  unsigned slot = (unsigned)((block & TM_SEG_MASK) >> TM_SLICE_SHIFT);
  seg->slice_map[slot] = (uint8_t)slot;
  return &seg->spans[slot];
}

void *tm_huge_alloc(size_t size, size_t align, bool zero) {
  (void)zero; /* a fresh mapping reads as zero */
  size_t off = align > TM_SLICE_SIZE ? align : TM_SLICE_SIZE;
  size_t body = tm_round_page(size ? size : 1); /* the block lies inside the mapping */
  size_t map = off + body;
  if (body < size || map < body || size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  tm_segment *seg = tm_os_map_aligned(map, align > TM_SEG_SIZE ? align : TM_SEG_SIZE);
  if (!seg) {
    errno = ENOMEM;
    return NULL;
  }
  uintptr_t block = (uintptr_t)seg + off;
  seg->kind = TM_SEG_HUGE;
  seg->map_size = map;
  tm_span *s = tm_huge_span(seg, block);
  s->start = (uint8_t *)block;
  s->large_size = body;
  s->capacity = 1;
  s->used = 1;
  tm_span_set_owner(s, NULL, false);
  atomic_store_explicit(&s->kind, TM_SPAN_HUGE, memory_order_release);
  tm_huge_register(seg, block, 1);
  TM_STAT_ADD(mapped_bytes, map);
  TM_STAT_ADD(huge_bytes, body);
  TM_STAT_ADD(huge_count, 1);
  return (void *)block;
}

void tm_huge_free(tm_segment *seg, tm_span *s) {
  size_t map = seg->map_size;
  TM_STAT_SUB(mapped_bytes, map);
  TM_STAT_SUB(huge_bytes, s->large_size);
  TM_STAT_SUB(huge_count, 1);
  atomic_store_explicit(&s->kind, TM_SPAN_FREE, memory_order_relaxed);
  tm_huge_register(seg, (uintptr_t)s->start, 0);
  tm_os_unmap(seg, map);
}

/* Grow or shrink in place when the address space allows, otherwise move the
 * whole mapping (header included) to a fresh aligned range. NULL: the caller
 * falls back to malloc + copy + free. */
void *tm_huge_realloc(tm_segment *seg, tm_span *s, void *p, size_t newsize) {
  size_t off = (uintptr_t)p - (uintptr_t)seg;
  size_t body = tm_round_page(newsize);
  if (body < newsize || off + body < body) return NULL;
  size_t old_map = seg->map_size, new_map = off + body;
  int saved = errno;
  if (new_map <= old_map) {
    if (new_map < old_map) tm_os_unmap((uint8_t *)seg + new_map, old_map - new_map);
  } else if (mremap(seg, old_map, new_map, 0) == MAP_FAILED) {
    if (off >= TM_SEG_SIZE) {
      errno = saved;
      return NULL;
    }
    void *target = tm_os_map_aligned(new_map, TM_SEG_SIZE);
    if (!target) {
      errno = saved;
      return NULL;
    }
    /* unregister first: once moved, the old range may be mapped by others */
    tm_huge_register(seg, (uintptr_t)p, 0);
    void *moved = mremap(seg, old_map, new_map, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    if (moved == MAP_FAILED) {
      tm_huge_register(seg, (uintptr_t)p, 1);
      tm_os_unmap(target, new_map);
      errno = saved;
      return NULL;
    }
    seg = moved;
    p = (uint8_t *)moved + off;
    s = tm_huge_span(seg, (uintptr_t)p);
    s->start = p;
    tm_huge_register(seg, (uintptr_t)p, 1);
  }
  errno = saved;
  TM_STAT_ADD(mapped_bytes, new_map);
  TM_STAT_SUB(mapped_bytes, old_map);
  TM_STAT_ADD(huge_bytes, body);
  TM_STAT_SUB(huge_bytes, s->large_size);
  seg->map_size = new_map;
  s->large_size = body;
  return p;
}
