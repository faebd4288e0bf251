/* Where every byte of the heap sits: a census taken on demand (tide_get_stats,
 * malloc_stats, malloc_info). It takes each live heap's lock in turn, for as
 * long as it takes to read its spans, then the global lock for the orphans
 * and the segments, and the huge cache's; it never allocates.
 *
 * "Resident" is a model, not a measurement: a page counts when a block on it
 * was ever handed out (or a former span left it dirty) and it has not been
 * purged since; a large block's pages, a huge block's, a dirty free slice's
 * and a cached huge mapping's all count; and the header pages a segment has
 * in use. test_census compares it with what mincore(2) says. */
#include "internal.h"

#include <stddef.h>
#include <string.h>

static size_t tm_pages_bytes(uint64_t m) { return (size_t)__builtin_popcountll(m) << TM_PAGE_SHIFT; }

/* One small span (its lock held). */
static void tm_census_span(tm_census *c, tm_span *s) {
  tm_span_pages *pg = tm_span_pg(s);
  size_t free_blocks = (size_t)s->capacity - s->used;
  c->span_free += free_blocks * s->block_size;
  c->span_used += (size_t)s->used * s->block_size;
  /* pages purged and not yet put back in the bitmap (back) are purged too;
   * their blocks count as used until then */
  uint64_t purged = pg->purged | atomic_load_explicit(&pg->back, memory_order_relaxed);
  uint64_t free_pages = tm_span_free_pages(s);
  c->pages_unpurged += tm_pages_bytes(free_pages & ~purged & pg->touched);
  c->pages_purged += tm_pages_bytes(purged);
  c->resident += tm_pages_bytes(pg->touched & ~purged);
}

static void tm_census_span_cb(tm_span *s, void *arg) { tm_census_span(arg, s); }

static void tm_census_heap(tm_census *c, tm_heap *h) {
  for (unsigned k = 0; k < TM_NUM_CLASSES; k++) c->cached += (size_t)tm_cache_n(&h->cache[k]) * tm_class_size(k);
  tm_heap_lock_quiet(h); /* a look is not activity */
  c->cached += tm_outbox_bytes(h) + h->stash_bytes;
  if (tm_heap_state(h) == TM_HEAP_ACTIVE) tm_heap_each_span(h, tm_census_span_cb, c);
  tm_heap_unlock_quiet(h);
}

/* Header pages of seg in use: the first, and those holding the descriptor,
 * the page record and the bitmap of each slice in use (or free and dirty:
 * its descriptor was written), unless the header was purged since. */
static size_t tm_census_header(tm_segment *seg) {
  if (seg->header_clean) return TM_PAGE_SIZE;
  uint64_t pages = 1;
  uint64_t used = ~(seg->free_slices | seg->purging_slices) | seg->dirty_slices;
  for (unsigned j = 1; j < TM_SLICES; j++) {
    if (!(used & ((uint64_t)1 << j))) continue;
    pages |= (uint64_t)1 << (offsetof(tm_segment, spans[j]) >> TM_PAGE_SHIFT);
    pages |= (uint64_t)1 << ((offsetof(tm_segment, spans[j]) + sizeof(tm_span) - 1) >> TM_PAGE_SHIFT);
    pages |= (uint64_t)1 << (offsetof(tm_segment, span_pages[j]) >> TM_PAGE_SHIFT);
  }
  for (uint64_t m = seg->bitmap_slots; m; m &= m - 1)
    pages |= (uint64_t)1 << (offsetof(tm_segment, bitmaps[__builtin_ctzll(m)]) >> TM_PAGE_SHIFT);
  return tm_pages_bytes(pages);
}

void tm_census_take(tm_census *c) {
  memset(c, 0, sizeof *c);
  for (tm_heap *h = atomic_load_explicit(&tm_all_heaps, memory_order_acquire); h; h = h->next_all)
    if (tm_heap_state(h) == TM_HEAP_ACTIVE) tm_census_heap(c, h);
  tm_heap *shared = tm_heap_shared_get();
  if (shared) tm_census_heap(c, shared);
  tm_lock(&tm_global_lock);
  for (unsigned k = 0; k < TM_NUM_CLASSES; k++)
    for (tm_span *s = tm_orphans_first(k); s; s = s->next) tm_census_span(c, s);
  for (tm_segment *seg = tm_segments_first(); seg; seg = seg->all_next) {
    c->header += tm_census_header(seg);
    for (uint64_t m = seg->dirty_slices | seg->purging_slices; m; m &= m - 1)
      c->slices_dirty += (size_t)__builtin_popcount(seg->slice_pages[__builtin_ctzll(m)]) << TM_PAGE_SHIFT;
    c->slices_purged += (size_t)__builtin_popcountll(seg->free_slices & ~seg->dirty_slices & seg->purged_slices)
                        << TM_SLICE_SHIFT;
    for (unsigned j = 1; j < TM_SLICES;) { /* large blocks: every page */
      tm_span *s = &seg->spans[seg->slice_map[j]];
      if (seg->slice_map[j] == j && tm_span_kind(s) == TM_SPAN_LARGE) {
        c->resident += (size_t)s->slice_count << TM_SLICE_SHIFT;
        j += s->slice_count;
      } else {
        j++;
      }
    }
  }
  tm_unlock(&tm_global_lock);
  c->resident += c->header + c->slices_dirty;
  /* huge blocks: the block and the header's first page; the cache whole */
  c->huge_cached = TM_STAT_GET(huge_cached_bytes);
  c->resident += TM_STAT_GET(huge_bytes) + TM_STAT_GET(huge_count) * TM_PAGE_SIZE + c->huge_cached;
}
