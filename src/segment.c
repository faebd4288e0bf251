/* Segments and their slices: the shared, lock-protected middle of the
 * allocator. Heaps come here once per span (64 KiB or more of blocks), large
 * blocks once per allocation; the malloc/free fast paths never do.
 *
 * tm_global_lock protects: the segment lists, every segment's slice masks,
 * the orphan lists, the heap pool and the metadata arena. Nobody makes a
 * system call while holding it: a new segment is mapped with the lock
 * dropped, and purges and unmaps go through a batch that the pager (or, with
 * no pager thread, the freeing thread) hands to the kernel afterwards
 * (src/trim.c, pager/release.c).
 *
 * A data slice is in exactly one state:
 *   in use     part of a live span or large block (slice_map points at it)
 *   free       in free_slices; also in dirty_slices if its pages may still
 *              be resident (freed, not purged since), with the time it was
 *              freed in slice_freed_ms[]
 *   purging    in purging_slices: taken out by a batch in flight; free
 *              again, and clean, when the batch is done
 * A segment is on one list, by what its slices are: the partial list (some
 * slice in use, some free), the empty list (no slice in use), or none (no
 * free slice). */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

tm_lock_t tm_global_lock = TM_LOCK_INIT;
tm_counters tm_stat;

enum { TM_LIST_NONE = 0, TM_LIST_PARTIAL, TM_LIST_EMPTY };

/* Lists per NUMA node (one node: only [0] is used): segments are pooled by
 * the node their pages are bound to. */
static tm_segment *tm_lists[TM_NUMA_MAX][3];   /* heads of the partial and empty lists */
static tm_segment *tm_empty_tail[TM_NUMA_MAX]; /* oldest empty segment: released first */
static size_t tm_empty_count;                  /* all nodes */
static atomic_bool tm_empty_hint; /* a segment became empty: see tm_trim_empty_hint */
static atomic_size_t tm_freed_slices; /* slices ever freed */

/* Work for a pager: the heap grew past one segment, or a megabyte of
 * slices was freed (a library that frees one buffer at startup, as
 * libnuma's constructor does, is not worth a thread). */
bool tm_trim_has_work(void) {
  return TM_STAT_GET(mapped_bytes) > TM_SEG_SIZE ||
         atomic_load_explicit(&tm_freed_slices, memory_order_relaxed) >= (1u << 20) / TM_SLICE_SIZE;
}
static tm_segment *tm_all_segs;   /* every normal segment */
static uint32_t tm_fork_gen = 1;  /* bumped when a fork child drops the lists; 0 = never listed */
static tm_span *tm_orphans[TM_NUM_CLASSES];
static size_t tm_orphan_count;
static uint8_t *tm_meta_cur;
static size_t tm_meta_left;

uint32_t tm_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO: no system call */
  return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

/* ---- metadata arena --------------------------------------------------- */
void *tm_meta_alloc(size_t size) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  size = (size + 63) & ~(size_t)63;
  if (size > tm_meta_left) {
    size_t chunk = size > TM_SLICE_SIZE ? size : TM_SLICE_SIZE;
    uint8_t *p = tm_os_map(chunk, TM_MAP_RESERVE);
    if (!p) return NULL;
    tm_meta_cur = p;
    tm_meta_left = chunk;
  }
  void *r = tm_meta_cur;
  tm_meta_cur += size;
  tm_meta_left -= size;
  return r;
}

/* ---- segment lists ------------------------------------------------------- */
static unsigned tm_seg_list(const tm_segment *seg) {
  return seg->fork_gen == tm_fork_gen ? seg->list : TM_LIST_NONE;
}

static void tm_seg_unlink(tm_segment *seg) {
  unsigned l = tm_seg_list(seg);
  if (l == TM_LIST_NONE) return;
  if (seg->prev)
    seg->prev->next = seg->next;
  else
    tm_lists[seg->node][l] = seg->next;
  if (seg->next)
    seg->next->prev = seg->prev;
  else if (l == TM_LIST_EMPTY)
    tm_empty_tail[seg->node] = seg->prev;
  if (l == TM_LIST_EMPTY) tm_empty_count--;
  seg->next = seg->prev = NULL;
  seg->list = TM_LIST_NONE;
}

static void tm_seg_link(tm_segment *seg, unsigned l) {
  seg->list = l;
  seg->fork_gen = tm_fork_gen;
  seg->prev = NULL;
  seg->next = tm_lists[seg->node][l];
  if (seg->next)
    seg->next->prev = seg;
  else if (l == TM_LIST_EMPTY)
    tm_empty_tail[seg->node] = seg;
  tm_lists[seg->node][l] = seg;
  if (l == TM_LIST_EMPTY) tm_empty_count++;
}

static void tm_seg_all_add(tm_segment *seg);

/* Put seg on the list its slices call for. */
static void tm_seg_place(tm_segment *seg) {
  /* a segment a fork child forgot comes back when one of its spans frees */
  if (seg->all_gen != tm_fork_gen) tm_seg_all_add(seg);
  unsigned want;
  if ((seg->free_slices | seg->purging_slices) == TM_DATA_SLICES_MASK)
    want = TM_LIST_EMPTY;
  else if (seg->free_slices)
    want = TM_LIST_PARTIAL;
  else
    want = TM_LIST_NONE;
  if (tm_seg_list(seg) == want) return;
  tm_seg_unlink(seg);
  if (want != TM_LIST_NONE) tm_seg_link(seg, want);
  if (want == TM_LIST_EMPTY) atomic_store_explicit(&tm_empty_hint, true, memory_order_relaxed);
}

bool tm_trim_empty_hint(void) {
  return atomic_load_explicit(&tm_empty_hint, memory_order_relaxed) &&
         atomic_exchange_explicit(&tm_empty_hint, false, memory_order_relaxed);
}

static void tm_seg_all_add(tm_segment *seg) {
  seg->all_gen = tm_fork_gen;
  seg->all_prev = NULL;
  seg->all_next = tm_all_segs;
  if (tm_all_segs) tm_all_segs->all_prev = seg;
  tm_all_segs = seg;
}

static void tm_seg_all_remove(tm_segment *seg) {
  if (seg->all_gen != tm_fork_gen) return;
  seg->all_gen = tm_fork_gen - 1;
  if (seg->all_prev)
    seg->all_prev->all_next = seg->all_next;
  else
    tm_all_segs = seg->all_next;
  if (seg->all_next) seg->all_next->all_prev = seg->all_prev;
}

tm_segment *tm_segments_first(void) { return tm_all_segs; }
tm_segment *tm_segments_empty_oldest(unsigned node) { return tm_empty_tail[node]; }
size_t tm_segments_empty_count(void) { return tm_empty_count; }

/* Take an empty segment off every list: it is about to be unmapped. */
void tm_segment_forget(tm_segment *seg) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  TM_ASSERT((seg->free_slices | seg->purging_slices) == TM_DATA_SLICES_MASK && !seg->purging_slices);
  tm_seg_unlink(seg);
  tm_seg_all_remove(seg);
  tm_registry_set((uintptr_t)seg, TM_REG_NONE);
  TM_STAT_SUB(segment_count, 1);
}

/* A fresh segment on `node`: mapped with the global lock dropped, since mmap
 * is a system call; the caller retakes it and adds the segment. */
static tm_segment *tm_segment_map(unsigned node) {
  tm_segment *seg = tm_os_map_aligned(TM_SEG_SIZE, TM_SEG_SIZE, TM_MAP_RESERVE);
  if (!seg) return NULL;
  if (TIDE_HARDENED && !tm_os_guard_page((uint8_t *)seg + TM_SLICE_SIZE - TM_PAGE_SIZE)) {
    tm_os_unmap(seg, TM_SEG_SIZE);
    return NULL;
  }
  tm_numa_bind(seg, TM_SEG_SIZE, node); /* before any page of it is touched */
  seg->node = (uint8_t)node;
  seg->kind = TM_SEG_NORMAL;
  seg->map_size = TM_SEG_SIZE;
  seg->free_slices = TM_DATA_SLICES_MASK; /* fresh pages: free and clean */
  TM_STAT_ADD(mapped_bytes, TM_SEG_SIZE);
  return seg;
}

static void tm_segment_add(tm_segment *seg) {
  TM_STAT_ADD(segment_count, 1);
  tm_registry_set((uintptr_t)seg, TM_REG_SEGMENT);
  tm_seg_place(seg);
}

/* ---- slices ------------------------------------------------------------- */
/* First slice of a run of n slices set in mask, or -1. */
static int tm_find_run(uint64_t mask, unsigned n) {
  uint64_t starts = mask;
  for (unsigned i = 1; i < n && starts; i++) starts &= mask >> i;
  return starts ? __builtin_ctzll(starts) : -1;
}

uint64_t tm_run_mask(unsigned idx, unsigned n) {
  return (n >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1)) << idx;
}

/* The pages of the dirty slices of run `m` (starting at slice idx) that
 * may be resident, as a span's page mask (16 pages a slice). */
static uint64_t tm_slice_pages(tm_segment *seg, uint64_t m, unsigned idx) {
  uint64_t pages = 0;
  for (; m; m &= m - 1) {
    unsigned j = (unsigned)__builtin_ctzll(m);
    pages |= (uint64_t)seg->slice_pages[j] << (16 * (j - idx));
  }
  return pages;
}

/* Descriptors of slices [from, to) that start no span (free slices, and
 * every slice of a span after its first) have heap 0: the free fast path
 * reads the descriptor of a block's slice without the slice map
 * (tm_slice_desc), and must find no owner there unless it is the span's. */
static void tm_slices_clear_owners(tm_segment *seg, unsigned from, unsigned to) {
  for (unsigned j = from; j < to; j++) atomic_store_explicit(&seg->spans[j].heap, 0, memory_order_relaxed);
}

static tm_span *tm_take_run(tm_segment *seg, unsigned idx, unsigned n, bool bitmap) {
  uint64_t m = tm_run_mask(idx, n);
  uint64_t dirty = seg->dirty_slices & m; /* a former span's pages may still be there */
  if (seg->purged_slices & m) TM_STAT_ADD(slices_reused, (size_t)__builtin_popcountll(seg->purged_slices & m) << TM_SLICE_SHIFT);
  seg->purged_slices &= ~m;
  seg->free_slices &= ~m;
  seg->dirty_slices &= ~m;
  seg->header_clean = 0;
  for (unsigned j = idx; j < idx + n; j++) seg->slice_map[j] = (uint8_t)idx;
  tm_slices_clear_owners(seg, idx + 1, idx + n);
  tm_span *s = &seg->spans[idx];
  s->slice_count = (uint8_t)n;
  s->bits = NULL;
  seg->span_pages[idx].touched = n <= TM_SPAN_MASK_SLICES ? tm_slice_pages(seg, dirty, idx) : 0; /* large runs: whole */
  if (bitmap) {
    /* bitmaps of big spans are packed from the start of the area, so the
     * header pages a segment touches grow with what it holds */
    unsigned slot = (unsigned)__builtin_ctzll(~seg->bitmap_slots);
    seg->bitmap_slots |= (uint64_t)1 << slot;
    s->bits = seg->bitmaps[slot];
  }
  tm_seg_place(seg);
  return s;
}

/* A run of n free slices in seg, resident ones first when `dirty_first`. */
static int tm_seg_find(tm_segment *seg, unsigned n, bool dirty_only) {
  if (seg->busy_header) return -1; /* its header pages are being purged */
  uint64_t mask = dirty_only ? seg->free_slices & seg->dirty_slices : seg->free_slices;
  return tm_find_run(mask, n);
}

/* n free slices for a span (with a bitmap slot in the header if `bitmap`),
 * global lock held; it may be dropped and retaken to map a new segment.
 * Slices still resident are preferred to clean ones (no page faults), and
 * segments in use to empty ones (which can then be given back). */
/* A run of n free slices in node's segments, or NULL. */
static tm_span *tm_slices_find(unsigned node, unsigned n, bool bitmap) {
  static const unsigned order[4][2] = {
      {TM_LIST_PARTIAL, 1}, {TM_LIST_PARTIAL, 0}, {TM_LIST_EMPTY, 1}, {TM_LIST_EMPTY, 0}};
  for (unsigned o = 0; o < 4; o++) {
    for (tm_segment *seg = tm_lists[node][order[o][0]]; seg; seg = seg->next) {
      int idx = tm_seg_find(seg, n, order[o][1]);
      if (idx >= 0) return tm_take_run(seg, (unsigned)idx, n, bitmap);
    }
  }
  return NULL;
}

tm_span *tm_slices_alloc(unsigned n, bool bitmap) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  unsigned node = tm_numa_node(); /* (0 on a machine with one node) */
  for (int attempt = 0; attempt < 3; attempt++) {
    tm_span *s = tm_slices_find(node, n, bitmap);
    if (s) return s;
    /* before mapping more, see whether exited threads left empty spans */
    if (attempt == 0 && tm_orphan_count && tm_orphans_sweep()) continue;
    if (attempt == 2) break;
    tm_unlock(&tm_global_lock);
    tm_segment *seg = tm_segment_map(node);
    tm_lock(&tm_global_lock);
    if (!seg) break;
    tm_segment_add(seg);
  }
  /* no memory on our node: any other node's free slices rather than none */
  for (unsigned other = 0; other < tm_numa_nodes(); other++) {
    tm_span *s = other == node ? NULL : tm_slices_find(other, n, bitmap);
    if (s) return s;
  }
  return NULL;
}

void tm_slices_free(tm_span *s) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  tm_segment *seg = tm_segment_of_span(s);
  unsigned idx = (unsigned)(s - seg->spans);
  TM_ASSERT(tm_span_kind(s) != TM_SPAN_SMALL ||
            (tm_notice_state(s) == TM_NOTICE_NEVER && !tm_span_has_remote(s) && s->used == 0));
  atomic_store_explicit(&s->kind, TM_SPAN_FREE, memory_order_relaxed);
  tm_slices_clear_owners(seg, idx, idx + s->slice_count);
  s->queue = TM_Q_NONE;
  if (s->bits && s->bits != s->inline_bits) {
    unsigned slot = (unsigned)((s->bits - &seg->bitmaps[0][0]) / TM_BITMAP_WORDS);
    seg->bitmap_slots &= ~((uint64_t)1 << slot);
  }
  s->bits = NULL;
  uint64_t m = tm_run_mask(idx, s->slice_count);
  TM_ASSERT(!(seg->free_slices & m) && !(seg->purging_slices & m));
  /* which of its pages may be resident: a small span knows; a large block
   * is taken as written all over */
  uint64_t resident = ~(uint64_t)0;
  if (tm_span_kind(s) == TM_SPAN_SMALL) resident = tm_span_pg(s)->touched & ~tm_span_pg(s)->purged;
  for (unsigned j = idx; j < idx + s->slice_count; j++)
    seg->slice_pages[j] = s->slice_count <= TM_SPAN_MASK_SLICES ? (uint16_t)(resident >> (16 * (j - idx))) : 0xffff;
  seg->free_slices |= m;
  seg->dirty_slices |= m;
  atomic_fetch_add_explicit(&tm_freed_slices, s->slice_count, memory_order_relaxed);
  uint32_t now = tm_now_ms();
  /* free slices map to themselves (descriptors FREE or NONE), so that no
   * slice of a later span keeps pointing at a descriptor reused elsewhere */
  for (unsigned j = idx; j < idx + s->slice_count; j++) {
    seg->slice_map[j] = (uint8_t)j;
    seg->slice_freed_ms[j] = now;
  }
  tm_seg_place(seg);
}

/* After a release: the slices of m are free again, clean if `purged`. */
void tm_slices_purged(tm_segment *seg, uint64_t m, bool purged) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  TM_ASSERT((seg->purging_slices & m) == m);
  seg->purging_slices &= ~m;
  seg->free_slices |= m;
  if (purged) {
    seg->purged_slices |= m;
    for (uint64_t k = m; k; k &= k - 1) seg->slice_pages[__builtin_ctzll(k)] = 0;
  } else {
    seg->dirty_slices |= m; /* the kernel refused: still resident */
  }
  tm_seg_place(seg);
}

/* Take the slices of m (free and dirty) out of circulation for a purge. */
void tm_slices_take_for_purge(tm_segment *seg, uint64_t m) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  TM_ASSERT((seg->free_slices & seg->dirty_slices & m) == m);
  seg->free_slices &= ~m;
  seg->dirty_slices &= ~m;
  seg->purging_slices |= m;
  tm_seg_place(seg);
}

/* Grow large block s in place over the free slices that follow it. */
bool tm_slices_extend(tm_span *s, unsigned need) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  tm_segment *seg = tm_segment_of_span(s);
  unsigned idx = (unsigned)(s - seg->spans), have = s->slice_count;
  uint64_t more = tm_run_mask(idx + have, need - have);
  if ((seg->free_slices & more) != more) return false;
  seg->free_slices &= ~more;
  seg->dirty_slices &= ~more;
  seg->purged_slices &= ~more;
  for (unsigned j = idx + have; j < idx + need; j++) seg->slice_map[j] = (uint8_t)idx;
  tm_slices_clear_owners(seg, idx + have, idx + need);
  s->slice_count = (uint8_t)need;
  tm_seg_place(seg);
  return true;
}

/* Shrink large block s to `need` slices: the rest become free (dirty). */
void tm_slices_trim(tm_span *s, unsigned need) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  tm_segment *seg = tm_segment_of_span(s);
  unsigned idx = (unsigned)(s - seg->spans), have = s->slice_count;
  uint64_t m = tm_run_mask(idx + need, have - need);
  uint32_t now = tm_now_ms();
  for (unsigned j = idx + need; j < idx + have; j++) {
    seg->spans[j].slice_count = 1;
    seg->spans[j].bits = NULL;
    atomic_store_explicit(&seg->spans[j].kind, TM_SPAN_FREE, memory_order_relaxed);
    seg->slice_map[j] = (uint8_t)j;
    seg->slice_freed_ms[j] = now;
  }
  for (unsigned j = idx + need; j < idx + have; j++) seg->slice_pages[j] = 0xffff;
  seg->free_slices |= m;
  seg->dirty_slices |= m;
  s->slice_count = (uint8_t)need;
  tm_seg_place(seg);
}

/* ---- orphans: spans whose owner thread exited --------------------------- */
void tm_orphan_push(tm_span *s) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  TM_ASSERT(tm_notice_state(s) == TM_NOTICE_NEVER && tm_span_owner(s) == NULL);
  s->queue = TM_Q_ORPHAN;
  s->prev = NULL;
  s->next = tm_orphans[s->size_class];
  tm_orphans[s->size_class] = s;
  tm_orphan_count++;
}

tm_span *tm_orphans_first(unsigned c) { return tm_orphans[c]; }

/* An orphan of class c on `node` (an orphan elsewhere waits for a thread
 * of its own node, or for a sweep: taking it would put this thread's
 * blocks on another node's memory). */
tm_span *tm_orphan_take(unsigned c, unsigned node) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  tm_span **link = &tm_orphans[c];
  while (*link && tm_segment_of_span(*link)->node != node) link = &(*link)->next;
  tm_span *s = *link;
  if (!s) return NULL;
  *link = s->next;
  s->next = NULL;
  s->queue = TM_Q_NONE;
  tm_orphan_count--;
  return s;
}

/* Collect cross-thread frees into orphaned spans and retire the empty ones.
 * Returns the number of bytes of spans retired. */
size_t tm_orphans_sweep(void) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  size_t freed = 0;
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    tm_span **link = &tm_orphans[c];
    while (*link) {
      tm_span *s = *link;
      tm_span_collect(s);
      if (s->used == 0) {
        *link = s->next;
        tm_orphan_count--;
        freed += tm_span_free_slices(s);
      } else {
        link = &s->next;
      }
    }
  }
  return freed;
}

/* ---- fork and consistency ------------------------------------------------ */
/* In a fork child whose parent had the lock taken: the lists may be half
 * updated, so forget them. Segments keep working for the blocks that live in
 * them; their free slices are lost to this child. */
void tm_global_reset_after_fork(void) {
  tm_fork_gen++;
  memset(tm_lists, 0, sizeof tm_lists);
  memset(tm_empty_tail, 0, sizeof tm_empty_tail);
  tm_empty_count = 0;
  tm_all_segs = NULL;
  memset(tm_orphans, 0, sizeof tm_orphans);
  tm_orphan_count = 0;
  tm_meta_cur = NULL;
  tm_meta_left = 0;
  atomic_store(&tm_global_lock.held, 0);
}

/* In a fork child whose parent did not hold the lock: a release that was in
 * flight vanished with its thread; its slices are free (and maybe still
 * resident) again, and no header purge is in progress. */
void tm_segments_after_fork(void) {
  tm_lock(&tm_global_lock);
  for (tm_segment *seg = tm_all_segs; seg; seg = seg->all_next) {
    seg->free_slices |= seg->purging_slices;
    seg->dirty_slices |= seg->purging_slices;
    seg->purging_slices = 0;
    seg->busy_header = 0;
    tm_seg_place(seg);
  }
  tm_unlock(&tm_global_lock);
}

int tm_segments_check(void) {
  int problems = 0;
  tm_lock(&tm_global_lock);
  size_t empties = 0;
  for (tm_segment *seg = tm_all_segs; seg; seg = seg->all_next) {
    if (seg->kind != TM_SEG_NORMAL || ((seg->free_slices | seg->purging_slices) & 1)) problems += tm_check_problem("segment is not a normal one", seg);
    if (seg->free_slices & seg->purging_slices) problems += tm_check_problem("slice both free and purging", seg);
    if (seg->dirty_slices & ~seg->free_slices) problems += tm_check_problem("dirty slice that is not free", seg);
    if (tm_seg_list(seg) == TM_LIST_EMPTY) empties++;
    for (unsigned i = 1; i < TM_SLICES; i++) {
      if (!((seg->free_slices | seg->purging_slices) & ((uint64_t)1 << i))) continue;
      unsigned k = tm_span_kind(&seg->spans[seg->slice_map[i]]);
      if (k == TM_SPAN_SMALL || k == TM_SPAN_LARGE) problems += tm_check_problem("free slice maps to a live span", seg);
    }
  }
  if (empties != tm_empty_count) problems += tm_check_problem("empty segment count is wrong", &tm_empty_count);
  tm_unlock(&tm_global_lock);
  return problems;
}
