/* Large blocks (32 KiB < size <= the huge threshold): one block per run of
 * slices in a segment, not owned by any heap; malloc and free take the
 * global lock. Resized in place when the slices around allow it. */
#include "internal.h"

#include <errno.h>

atomic_uint tm_large_ops;

void *tm_large_alloc(size_t size, size_t align) {
  if (size == 0) size = 1; /* the block must start inside the run */
  if (align >= TM_SEG_SIZE) return NULL; /* only a header sits there */
  size_t slack = align > TM_SLICE_SIZE ? align - TM_SLICE_SIZE : 0;
  size_t need = size + slack;
  if (need < size || need > (TM_SLICES - 1) * TM_SLICE_SIZE) return NULL;
  unsigned n = (unsigned)((need + TM_SLICE_SIZE - 1) >> TM_SLICE_SHIFT);
  tm_lock(&tm_global_lock);
  tm_span *s = tm_slices_alloc(n, false);
  tm_unlock(&tm_global_lock);
  if (!s) {
    errno = ENOMEM;
    return NULL;
  }
  tm_segment *seg = tm_segment_of_span(s);
  uintptr_t base = (uintptr_t)seg + ((uintptr_t)(s - seg->spans) << TM_SLICE_SHIFT);
  uintptr_t a = align > TM_SLICE_SIZE ? (base + align - 1) & ~(uintptr_t)(align - 1) : base;
  s->start = (uint8_t *)a;
  s->large_size = tm_page_round(size);
  s->block_size = 0;
  s->capacity = 1;
  s->used = 1;
  s->queue = TM_Q_NONE;
  tm_span_set_owner(s, NULL, false);
  atomic_store_explicit(&s->kind, TM_SPAN_LARGE, memory_order_release);
  TM_STAT_ADD(large_bytes, (size_t)n << TM_SLICE_SHIFT);
  tm_large_activity();
  return s->start;
}

void tm_large_free(tm_span *s) {
  tm_lock(&tm_global_lock);
  TM_STAT_SUB(large_bytes, (size_t)s->slice_count << TM_SLICE_SHIFT);
  tm_slices_free(s);
  tm_unlock(&tm_global_lock);
  tm_large_activity();
  tm_pager_activity();
}

/* Resize a large block in place: use the run's slack, take the free slices
 * that follow it, or give back whole trailing slices. */
bool tm_large_resize(tm_span *s, size_t newsize) {
  tm_segment *seg = tm_segment_of_span(s);
  unsigned idx = (unsigned)(s - seg->spans);
  uintptr_t run_base = (uintptr_t)seg + ((uintptr_t)idx << TM_SLICE_SHIFT);
  size_t offset = (uintptr_t)s->start - run_base;
  size_t want = tm_page_round(newsize);
  if (want < newsize || offset + want > (TM_SLICES - idx) * TM_SLICE_SIZE) return false;
  unsigned need = (unsigned)((offset + want + TM_SLICE_SIZE - 1) >> TM_SLICE_SHIFT);
  bool ok = true, shrunk = false;
  tm_lock(&tm_global_lock);
  unsigned have = s->slice_count;
  if (need > have) {
    ok = tm_slices_extend(s, need);
    if (ok) TM_STAT_ADD(large_bytes, (size_t)(need - have) << TM_SLICE_SHIFT);
  } else if (need < have) {
    tm_slices_trim(s, need);
    TM_STAT_SUB(large_bytes, (size_t)(have - need) << TM_SLICE_SHIFT);
    shrunk = true;
  }
  if (ok) s->large_size = want;
  tm_unlock(&tm_global_lock);
  tm_large_activity();
  if (shrunk) tm_pager_activity();
  return ok;
}
