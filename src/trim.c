/* What can be given back, and taking it out of circulation: the front end's
 * side of the pager (pager/pager.h). Everything here runs under the front
 * end's own locks and makes no system call: it fills a batch, which the
 * caller hands to the kernel (pager/release.c) with no lock held, and then
 * gives back with tm_trim_done. One trimmer runs at a time (the pager
 * serializes its rounds with tide_purge's), so the trim_* fields of a heap
 * have one writer.
 *
 * Three sources:
 *   heaps     an idle heap (no slow path for idle_ms) gets its slow-path
 *             work done for it under a try-lock: remote frees collected,
 *             empty spans retired, its caches asked back, and every wholly
 *             free page of its spans purged; an active heap only loses
 *             pages that stayed wholly free across two looks delay_ms apart
 *   orphans   spans of exited threads, under the global lock: swept, and
 *             their free pages aged like an active heap's
 *   segments  free slices older than delay_ms, empty segments beyond the
 *             cache bound, header pages of empty segments */
#include "internal.h"

static bool tm_older(uint32_t now, uint32_t t, uint32_t delay) {
  return (int32_t)(now - t) >= (int32_t)delay;
}

/* Empty segments beyond the cache bound, oldest first: off every list and
 * into the batch, to be unmapped. */
static bool tm_trim_excess_empty(tm_batch *b, size_t keep) {
  for (unsigned node = 0; node < tm_numa_nodes(); node++) {
    tm_segment *seg = tm_segments_empty_oldest(node);
    while (seg && tm_segments_empty_count() > keep) {
      tm_segment *prev = seg->prev;
      TM_ASSERT(seg->free_slices == TM_DATA_SLICES_MASK || seg->purging_slices); /* on the empty list */
      if (!seg->purging_slices && !seg->busy_header) {
        if (tm_batch_full(b)) return true;
        tm_segment_forget(seg);
        tm_batch_add(b, (uintptr_t)seg, TM_SEG_SIZE, seg, 0, TM_REL_UNMAP);
      }
      seg = prev;
    }
  }
  return false;
}

/* The header pages of an empty segment beyond the first (descriptors and
 * bitmaps): nothing in them is needed until a slice is used again. */
static void tm_trim_header(tm_batch *b, tm_segment *seg) {
  size_t first = TM_PAGE_SIZE;
  size_t end = tm_page_round(sizeof(tm_segment));
  /* every data slice free, or being purged in this same batch */
  TM_ASSERT((seg->free_slices | seg->purging_slices) == TM_DATA_SLICES_MASK && !seg->busy_header);
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
    TM_ASSERT(idx >= 1 && n >= 1 && idx + n <= TM_SLICES);
    tm_slices_take_for_purge(seg, run);
    tm_batch_add(b, (uintptr_t)seg + ((uintptr_t)idx << TM_SLICE_SHIFT), (size_t)n << TM_SLICE_SHIFT, seg, run,
                 TM_REL_SLICES);
    expired &= ~run;
  }
  /* An empty segment left with nothing resident but its header. The
   * header purge takes the whole segment out of circulation (a thread that
   * needs slices meanwhile maps a new segment), so only once it has stayed
   * empty for the idle time, or when everything must go. */
  if ((seg->free_slices | seg->purging_slices) == TM_DATA_SLICES_MASK && !seg->dirty_slices && !seg->header_clean) {
    uint32_t emptied = 0;
    for (unsigned j = 1; j < TM_SLICES; j++)
      if ((int32_t)(seg->slice_freed_ms[j] - emptied) > 0 || j == 1) emptied = seg->slice_freed_ms[j];
    if (req->all || tm_older(req->now_ms, emptied, req->idle_ms)) {
      if (tm_batch_full(b)) return true;
      tm_trim_header(b, seg);
    } else {
      tm_due_at(due, emptied + req->idle_ms);
    }
  }
  return false;
}

bool tm_trim_segments(tm_batch *b, const tm_trim_req *req, tm_due *due) {
  bool full;
  tm_lock(&tm_global_lock);
  size_t keep = req->keep_no_empty ? 0 : (size_t)tm_opt.segment_cache;
  full = tm_trim_excess_empty(b, keep);
  /* node by node: one node's ranges go to the kernel together */
  for (unsigned node = 0; node < tm_numa_nodes() && !full; node++) {
    for (tm_segment *seg = tm_segments_first(); seg && !full; seg = seg->all_next) {
      bool empty = (seg->free_slices | seg->purging_slices) == TM_DATA_SLICES_MASK;
      if (seg->node != node || (req->empty_only && !empty)) continue;
      full = tm_trim_segment_slices(b, seg, req, due);
    }
  }
  tm_unlock(&tm_global_lock);
  return full;
}

/* ---- pages inside live spans --------------------------------------------- */
/* Take the pages of `pages` out of s (its lock held) into b, one range per
 * run of consecutive pages, as many runs as b has room for. */
static bool tm_trim_span_pages(tm_batch *b, tm_span *s, uint64_t pages, bool nohuge) {
  /* wholly free pages, holding at least one block each (a page past the
   * last block would pin nothing: see tm_span_free_pages), not out already */
  TM_ASSERT((pages & ~tm_span_free_pages(s)) == 0 && !(pages & tm_span_pg(s)->purged));
  TM_ASSERT(!(pages & atomic_load_explicit(&tm_span_pg(s)->back, memory_order_relaxed)));
  uint64_t taken = 0;
  bool full = false;
  tm_segment *seg = tm_segment_of_span(s);
  if (nohuge && !seg->nohuge) {
    /* the first page purged one by one in this segment: from here on it
     * has no huge pages (the flag is set now; the ranges after it in the
     * batch go to the kernel after it) */
    if (tm_batch_full(b)) return true;
    seg->nohuge = 1;
    tm_batch_add(b, (uintptr_t)seg, TM_SEG_SIZE, seg, 0, TM_REL_NOHUGE);
  }
  for (uint64_t m = pages; m;) {
    if (tm_batch_full(b)) {
      full = true;
      break;
    }
    unsigned p = (unsigned)__builtin_ctzll(m);
    uint64_t rest = ~(m >> p); /* zero only when all 64 pages are free from page 0 */
    unsigned n = rest ? (unsigned)__builtin_ctzll(rest) : 64;
    uint64_t run = tm_run_mask(p, n);
    tm_batch_add(b, tm_span_page_addr(s, p), (size_t)n << TM_PAGE_SHIFT, s, run, TM_REL_SPAN_PAGES);
    taken |= run;
    m &= ~run;
  }
  if (taken) tm_span_reserve_pages(s, taken);
  return full;
}

/* Which pages of s go now: every wholly free one when `all`, otherwise
 * those that were wholly free at the last look too (decay by two looks).
 * Pages found free now are remembered for the next look. */
static bool tm_trim_span(tm_batch *b, tm_span *s, bool all, bool nohuge) {
  tm_span_pages *pg = tm_span_pg(s);
  if (!s->changed && !pg->seen_free && !all) return false;
  s->changed = 0;
  uint64_t free_pages = tm_span_free_pages(s) & ~pg->purged;
  uint64_t go = all ? free_pages : free_pages & pg->seen_free;
  pg->seen_free = free_pages & ~go;
  return go && tm_trim_span_pages(b, s, go, nohuge);
}

typedef struct {
  tm_batch *b;
  bool all, nohuge, full, waiting;
} tm_trim_walk;

static void tm_trim_span_cb(tm_span *s, void *arg) {
  tm_trim_walk *w = arg;
  if (w->full) return;
  w->full = tm_trim_span(w->b, s, w->all, w->nohuge);
  if (tm_span_pg(s)->seen_free) w->waiting = true;
}

/* ---- heaps ------------------------------------------------------------------ */
static bool tm_trim_heap(tm_batch *b, const tm_trim_req *req, tm_due *due, tm_heap *h) {
  if (tm_heap_state(h) != TM_HEAP_ACTIVE) return false;
  uint32_t now = req->now_ms;
  /* Someone took the lock since the last look (the owner, or only the
   * census): look under it whether the owner did anything. */
  bool touched = atomic_load_explicit(&h->lock_seq, memory_order_seq_cst) != h->trim_seq;
  bool told = atomic_load_explicit(&h->remote_spans, memory_order_seq_cst) != NULL;
  bool idle = req->all || tm_older(now, h->trim_change_ms, req->idle_ms);
  bool visit_due = tm_older(now, h->trim_visit_ms, req->delay_ms);
  if (!touched && !told && !req->all && (h->trim_done || (!idle && !visit_due))) {
    if (!idle) due->busy = true;
    if (!h->trim_done) {
      tm_due_at(due, h->trim_visit_ms + req->delay_ms);
      tm_due_at(due, h->trim_change_ms + req->idle_ms);
    }
    return false;
  }
  if (!tm_heap_trylock(h)) { /* the owner is in a slow path: not idle after all */
    due->busy = true;
    tm_due_at(due, now + 10);
    return false;
  }
  uint32_t mine = atomic_load_explicit(&h->lock_seq, memory_order_relaxed); /* odd: ours */
  TM_ASSERT(mine & 1u);
  bool full = false, done = false, outboxes = true;
  if (tm_heap_state(h) != TM_HEAP_ACTIVE) { /* abandoned meanwhile (under its lock) */
    done = true;
  } else {
    if (h->activity != h->trim_activity) { /* the owner took slow paths: active */
      h->trim_activity = h->activity;
      h->trim_change_ms = now;
      h->trim_done = 0;
      h->trim_flush_asked = 0;
      idle = req->all;
    }
    if (!idle) due->busy = true;
    if (idle || visit_due || told) {
      h->trim_visit_ms = now;
      tm_trim_walk w = {b, idle, req->nohuge, false, false};
      /* an idle heap's caches and outboxes, unless the owner is working on
       * one right now (the claim); its cached blocks are asked for too, on
       * its next slow path, in case they cannot be claimed (no membarrier);
       * an active heap is asked for the unneeded half */
      if (idle) {
        unsigned claimed = tm_heap_claim(h);
        outboxes = claimed & TM_CLAIM_OUTBOXES;
        if (claimed & TM_CLAIM_CACHES) tm_heap_flush_claimed_caches(h);
        tm_heap_retire_empty(h, outboxes);
        if (claimed & TM_CLAIM_HELD) tm_heap_unclaim(h);
        if (!outboxes) due->busy = true;
        if (!h->trim_flush_asked) {
          atomic_store_explicit(&h->flush_request, TM_ASK_FLUSH, memory_order_relaxed);
          h->trim_flush_asked = 1;
        }
      } else {
        tm_heap_drain_remote(h, false);
        unsigned none = TM_ASK_NONE;
        atomic_compare_exchange_strong_explicit(&h->flush_request, &none, TM_ASK_SCAVENGE, memory_order_relaxed,
                                                memory_order_relaxed);
      }
      tm_heap_each_span(h, tm_trim_span_cb, &w);
      full = w.full;
      done = idle && !full && outboxes;
    }
  }
  tm_heap_unlock_quiet(h); /* not activity, and no wakeup: we are the pager */
  h->trim_seq = mine + 1;
  if (full) return true;
  h->trim_done = done;
  if (!done) {
    tm_due_at(due, h->trim_visit_ms + req->delay_ms); /* pages to age, or idleness to notice */
    tm_due_at(due, h->trim_change_ms + req->idle_ms);
  }
  return false;
}

/* Large and huge blocks: busy while their count moved within idle_ms. */
static uint32_t tm_large_ops_seen, tm_large_change_ms;
static void tm_trim_large_busy(const tm_trim_req *req, tm_due *due) {
  unsigned ops = atomic_load_explicit(&tm_large_ops, memory_order_relaxed);
  if (ops != tm_large_ops_seen) {
    tm_large_ops_seen = ops;
    tm_large_change_ms = req->now_ms;
  }
  if (!req->all && !tm_older(req->now_ms, tm_large_change_ms, req->idle_ms)) {
    due->busy = true;
    tm_due_at(due, tm_large_change_ms + req->idle_ms); /* to notice idleness */
  }
}

bool tm_trim_heaps(tm_batch *b, const tm_trim_req *req, tm_due *due, struct tm_heap **cursor) {
  TM_ASSERT(tm_pager_turn_held()); /* the trim_* fields have one writer */
  if (!*cursor) tm_trim_large_busy(req, due);
  tm_heap *h = *cursor ? *cursor : atomic_load_explicit(&tm_all_heaps, memory_order_acquire);
  for (; h; h = h->next_all) {
    if (tm_trim_heap(b, req, due, h)) {
      *cursor = h;
      return true;
    }
  }
  tm_heap *shared = tm_heap_shared_get();
  if (shared && tm_trim_heap(b, req, due, shared)) { /* rarely matters; visited last */
    *cursor = NULL;
    return true;
  }
  *cursor = NULL;
  return false;
}

/* Did anything happen to a heap since the trimmer last looked? */
bool tm_trim_heaps_pending(void) {
  for (tm_heap *h = atomic_load_explicit(&tm_all_heaps, memory_order_acquire); h; h = h->next_all) {
    if (tm_heap_state(h) != TM_HEAP_ACTIVE) continue;
    if (atomic_load_explicit(&h->lock_seq, memory_order_seq_cst) != h->trim_seq || !h->trim_done ||
        atomic_load_explicit(&h->remote_spans, memory_order_seq_cst))
      return true; /* (a look by the census counts: one round tells) */
  }
  return false;
}

uint64_t tm_trim_reused_bytes(void) {
  return (uint64_t)TM_STAT_GET(refault_bytes) + (uint64_t)TM_STAT_GET(slices_reused);
}

/* ---- orphans ---------------------------------------------------------------- */
static uint32_t tm_orphans_visit_ms;

bool tm_trim_orphans(tm_batch *b, const tm_trim_req *req, tm_due *due) {
  TM_ASSERT(tm_pager_turn_held()); /* tm_orphans_visit_ms has one writer */
  if (!req->all && !tm_older(req->now_ms, tm_orphans_visit_ms, req->delay_ms)) {
    tm_due_at(due, tm_orphans_visit_ms + req->delay_ms);
    return false;
  }
  tm_trim_walk w = {b, req->all, req->nohuge, false, false};
  tm_lock(&tm_global_lock);
  tm_orphans_visit_ms = req->now_ms;
  tm_orphans_sweep();
  for (unsigned c = 0; c < TM_NUM_CLASSES && !w.full; c++)
    for (tm_span *s = tm_orphans_first(c); s && !w.full; s = s->next) tm_trim_span_cb(s, &w);
  tm_unlock(&tm_global_lock);
  if (w.waiting) tm_due_at(due, req->now_ms + req->delay_ms);
  return w.full;
}

bool tm_trim_orphans_pending(void) {
  bool any = false;
  tm_lock(&tm_global_lock);
  for (unsigned c = 0; c < TM_NUM_CLASSES && !any; c++)
    for (tm_span *s = tm_orphans_first(c); s && !any; s = s->next) any = tm_span_has_remote(s);
  tm_unlock(&tm_global_lock);
  return any;
}

/* ---- giving back ---------------------------------------------------------- */
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
        if (seg) TM_STAT_ADD(segments_released, 1);
        break;
      default:
        break;
    }
  }
  tm_unlock(&tm_global_lock);
  /* pages of live spans: whoever holds each span now puts them back, as
   * it collects a remote free (remote.c); no lock needed here */
  for (unsigned i = 0; i < b->n; i++) {
    tm_release *r = &b->r[i];
    if (r->kind != TM_REL_SPAN_PAGES) continue;
    if (r->ok) {
      TM_STAT_ADD(purged_bytes, r->len);
      TM_STAT_ADD(span_pages_purged, r->len);
    }
    tm_span *s = r->obj;
    uint64_t was = atomic_fetch_or_explicit(&tm_span_pg(s)->back, r->mask, memory_order_release);
    TM_ASSERT(!(was & r->mask)); /* each page taken once */
    (void)was;
    /* one signal per span, after its last range (a span's ranges are
     * consecutive in the batch): the signal is the last touch of it */
    if (i + 1 == b->n || b->r[i + 1].obj != s) tm_span_give_back(s);
  }
  b->n = 0;
  b->bytes = 0;
}
