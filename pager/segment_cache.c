/* The pager, synchronous edition: what happens to a segment whose last span
 * was retired. Up to TIDE_SEGMENT_CACHE of them are kept with every data page
 * given back to the OS (the address range stays, ready for reuse without an
 * mmap); the rest are unmapped at once. Called with tm_global_lock held. */
#include "internal.h"

static tm_segment *tm_cached; /* singly linked through seg->next */
static size_t tm_cached_count;

static void tm_segment_unmap(tm_segment *seg) {
  tm_registry_set((uintptr_t)seg, TM_REG_NONE);
  TM_STAT_SUB(mapped_bytes, TM_SEG_SIZE);
  TM_STAT_SUB(segment_count, 1);
  TM_STAT_ADD(segments_released, 1);
  tm_os_unmap(seg, TM_SEG_SIZE);
}

void tm_pager_segment_empty(tm_segment *seg) {
  if (tm_cached_count >= (size_t)tm_opt.segment_cache) {
    tm_segment_unmap(seg);
    return;
  }
  tm_os_purge((uint8_t *)seg + TM_SLICE_SIZE, TM_SEG_SIZE - TM_SLICE_SIZE);
  seg->next = tm_cached;
  tm_cached = seg;
  tm_cached_count++;
  TM_STAT_ADD(cached_segments, 1);
}

tm_segment *tm_pager_segment_reuse(void) {
  tm_segment *seg = tm_cached;
  if (!seg) return NULL;
  tm_cached = seg->next;
  seg->next = NULL;
  tm_cached_count--;
  TM_STAT_SUB(cached_segments, 1);
  return seg;
}

size_t tm_pager_release_cached(void) {
  size_t bytes = 0;
  tm_segment *seg;
  while ((seg = tm_pager_segment_reuse()) != NULL) {
    tm_segment_unmap(seg);
    bytes += TM_SEG_SIZE;
  }
  return bytes;
}

void tm_pager_reset_after_fork(void) {
  tm_cached = NULL;
  tm_cached_count = 0;
}
