/* What can be given back, and taking it out of circulation: the front end's
 * side of the pager (pager/pager.h). Everything here runs under the front
 * end's own locks and makes no system call: it fills a batch, which the
 * caller hands to the kernel (pager/release.c) with no lock held, and then
 * gives back with tm_trim_done. */
#include "internal.h"

static bool tm_older(uint32_t now, uint32_t t, uint32_t delay) {
  return (int32_t)(now - t) >= (int32_t)delay;
}

/* Empty segments beyond the cache bound, oldest first: off every list and
 * into the batch, to be unmapped. */
static bool tm_trim_excess_empty(tm_batch *b, size_t keep) {
  tm_segment *seg = tm_segments_empty_oldest();
  while (seg && tm_segments_empty_count() > keep) {
    tm_segment *prev = seg->prev;
    if (!seg->purging_slices && !seg->busy_header) {
      if (tm_batch_full(b)) return true;
      tm_segment_forget(seg);
      tm_batch_add(b, (uintptr_t)seg, TM_SEG_SIZE, seg, 0, TM_REL_UNMAP);
    }
    seg = prev;
  }
  return false;
}

/* The header pages of an empty segment beyond the first (descriptors and
 * bitmaps): nothing in them is needed until a slice is used again. */
static void tm_trim_header(tm_batch *b, tm_segment *seg) {
  size_t first = TM_PAGE_SIZE;
  size_t end = (sizeof(tm_segment) + TM_PAGE_SIZE - 1) & ~(TM_PAGE_SIZE - 1);
  seg->busy_header = 1; /* no slice of it is handed out until done */
  tm_batch_add(b, (uintptr_t)seg + first, end - first, seg, 0, TM_REL_HEADER);
}

/* Dirty free slices of seg freed at least req->delay_ms ago, in runs. */
static bool tm_trim_segment_slices(tm_batch *b, tm_segment *seg, const tm_trim_req *req, tm_due *due) {
  if (seg->busy_header) return false;
  uint64_t dirty = seg->free_slices & seg->dirty_slices;
  uint64_t expired = 0;
  for (uint64_t m = dirty; m; m &= m - 1) {
    unsigned j = (unsigned)__builtin_ctzll(m);
    uint32_t t = seg->slice_freed_ms[j];
    if (tm_older(req->now_ms, t, req->delay_ms)) {
      expired |= (uint64_t)1 << j;
    } else {
      tm_due_at(due, t + req->delay_ms);
    }
  }
  while (expired) {
    if (tm_batch_full(b)) return true;
    /* slice 0 is the header, never free: so idx >= 1 and the shifted mask
     * has a clear top bit, which ends the run */
    unsigned idx = (unsigned)__builtin_ctzll(expired);
    unsigned n = (unsigned)__builtin_ctzll(~(expired >> idx));
    uint64_t run = tm_run_mask(idx, n);
    tm_slices_take_for_purge(seg, run);
    tm_batch_add(b, (uintptr_t)seg + ((uintptr_t)idx << TM_SLICE_SHIFT), (size_t)n << TM_SLICE_SHIFT, seg, run,
                 TM_REL_SLICES);
    expired &= ~run;
  }
  /* an empty segment left with nothing resident but its header */
  if ((seg->free_slices | seg->purging_slices) == TM_DATA_SLICES_MASK && !seg->dirty_slices && !seg->header_clean) {
    if (tm_batch_full(b)) return true;
    tm_trim_header(b, seg);
  }
  return false;
}

bool tm_trim_segments(tm_batch *b, const tm_trim_req *req, tm_due *due) {
  bool full;
  tm_lock(&tm_global_lock);
  size_t keep = req->keep_no_empty ? 0 : (size_t)tm_opt.segment_cache;
  full = tm_trim_excess_empty(b, keep);
  for (tm_segment *seg = tm_segments_first(); seg && !full; seg = seg->all_next) {
    bool empty = (seg->free_slices | seg->purging_slices) == TM_DATA_SLICES_MASK;
    if (req->empty_only && !empty) continue;
    full = tm_trim_segment_slices(b, seg, req, due);
  }
  tm_unlock(&tm_global_lock);
  return full;
}

void tm_trim_done(tm_batch *b) {
  tm_lock(&tm_global_lock);
  for (unsigned i = 0; i < b->n; i++) {
    tm_release *r = &b->r[i];
    tm_segment *seg = r->obj;
    switch (r->kind) {
      case TM_REL_SLICES:
        tm_slices_purged(seg, r->mask, r->ok);
        if (r->ok) TM_STAT_ADD(purged_bytes, r->len);
        break;
      case TM_REL_HEADER:
        seg->busy_header = 0;
        seg->header_clean = r->ok;
        if (r->ok) TM_STAT_ADD(purged_bytes, r->len);
        break;
      case TM_REL_UNMAP:
        TM_STAT_SUB(mapped_bytes, r->len);
        TM_STAT_ADD(segments_released, 1);
        break;
      default:
        break;
    }
  }
  tm_unlock(&tm_global_lock);
  b->n = 0;
  b->bytes = 0;
}
