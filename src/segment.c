/* Segments and their slices: the shared, lock-protected middle of the
 * allocator. Heaps come here once per span (64 KiB or more of blocks), large
 * blocks once per allocation; the malloc/free fast paths never do.
 *
 * tm_global_lock protects: the list of segments with free slices, every
 * segment's free_slices, the orphan lists, the heap pool and the metadata
 * arena. Holders never call into libc (only raw mmap/munmap/madvise). */
#include "internal.h"

#include <errno.h>
#include <string.h>

tm_lock_t tm_global_lock = TM_LOCK_INIT;
tm_counters tm_stat;

static tm_segment *tm_free_segs; /* normal segments with a free data slice */
static uint32_t tm_fork_gen;     /* bumped when a fork child drops the lists */
static tm_span *tm_orphans[TM_NUM_CLASSES];
static size_t tm_orphan_count;
static uint8_t *tm_meta_cur;
static size_t tm_meta_left;

/* ---- metadata arena --------------------------------------------------- */
void *tm_meta_alloc(size_t size) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  size = (size + 63) & ~(size_t)63;
  if (size > tm_meta_left) {
    size_t chunk = size > TM_SLICE_SIZE ? size : TM_SLICE_SIZE;
    uint8_t *p = tm_os_map(chunk);
    if (!p) return NULL;
    tm_meta_cur = p;
    tm_meta_left = chunk;
  }
  void *r = tm_meta_cur;
  tm_meta_cur += size;
  tm_meta_left -= size;
  return r;
}

/* ---- the list of segments with free slices ---------------------------- */
static bool tm_seg_listed(tm_segment *seg) {
  return seg->listed && seg->fork_gen == tm_fork_gen;
}

static void tm_seg_list_add(tm_segment *seg) {
  seg->listed = 1;
  seg->fork_gen = tm_fork_gen;
  seg->prev = NULL;
  seg->next = tm_free_segs;
  if (tm_free_segs) tm_free_segs->prev = seg;
  tm_free_segs = seg;
}

static void tm_seg_list_remove(tm_segment *seg) {
  if (seg->prev)
    seg->prev->next = seg->next;
  else
    tm_free_segs = seg->next;
  if (seg->next) seg->next->prev = seg->prev;
  seg->next = seg->prev = NULL;
  seg->listed = 0;
}

static tm_segment *tm_segment_new(void) {
  tm_segment *seg = tm_pager_segment_reuse();
  if (!seg) {
    seg = tm_os_map_aligned(TM_SEG_SIZE, TM_SEG_SIZE);
    if (!seg) return NULL;
    seg->kind = TM_SEG_NORMAL;
    seg->map_size = TM_SEG_SIZE;
    TM_STAT_ADD(mapped_bytes, TM_SEG_SIZE);
    TM_STAT_ADD(segment_count, 1);
    tm_registry_set((uintptr_t)seg, TM_REG_SEGMENT);
  }
  seg->free_slices = TM_DATA_SLICES_MASK;
  tm_seg_list_add(seg);
  return seg;
}

/* First slice of a run of n free slices in mask, or -1. */
static int tm_find_run(uint64_t mask, unsigned n) {
  uint64_t starts = mask;
  for (unsigned i = 1; i < n && starts; i++) starts &= mask >> i;
  return starts ? __builtin_ctzll(starts) : -1;
}

static uint64_t tm_run_mask(unsigned idx, unsigned n) {
  return (n >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1)) << idx;
}

static tm_span *tm_take_run(tm_segment *seg, unsigned idx, unsigned n) {
  seg->free_slices &= ~tm_run_mask(idx, n);
  if (seg->free_slices == 0) tm_seg_list_remove(seg);
  for (unsigned j = idx; j < idx + n; j++) seg->slice_map[j] = (uint8_t)idx;
  tm_span *s = &seg->spans[idx];
  s->slice_count = (uint8_t)n;
  return s;
}

tm_span *tm_slices_alloc(unsigned n) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  for (int attempt = 0; attempt < 2; attempt++) {
    for (tm_segment *seg = tm_free_segs; seg; seg = seg->next) {
      int idx = tm_find_run(seg->free_slices, n);
      if (idx >= 0) return tm_take_run(seg, (unsigned)idx, n);
    }
    /* before mapping more, see whether exited threads left empty spans */
    if (attempt == 0 && (tm_orphan_count == 0 || tm_orphans_sweep() == 0)) break;
  }
  tm_segment *seg = tm_segment_new();
  if (!seg) return NULL;
  return tm_take_run(seg, 1, n);
}

void tm_slices_free(tm_span *s) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  tm_segment *seg = tm_segment_of_span(s);
  unsigned idx = (unsigned)(s - seg->spans);
  TM_ASSERT(tm_span_kind(s) != TM_SPAN_SMALL ||
            (tm_notice_state(s) == TM_NOTICE_NEVER && !tm_span_has_remote(s) && s->used == 0));
  atomic_store_explicit(&s->kind, TM_SPAN_FREE, memory_order_relaxed);
  s->queue = TM_Q_NONE;
  seg->free_slices |= tm_run_mask(idx, s->slice_count);
  /* free slices map to themselves (descriptors FREE or NONE), so that no
   * slice of a later span keeps pointing at a descriptor reused elsewhere */
  for (unsigned j = idx + 1; j < idx + s->slice_count; j++) seg->slice_map[j] = (uint8_t)j;
  if (!tm_seg_listed(seg)) tm_seg_list_add(seg);
  /* An empty segment goes to the pager. No descriptor in it is on a remote
   * list: a span on one is never retired (src/remote.c). */
  if (seg->free_slices == TM_DATA_SLICES_MASK) {
    tm_seg_list_remove(seg);
    tm_pager_segment_empty(seg);
  }
}

/* ---- orphans: spans whose owner thread exited --------------------------- */
void tm_orphan_push(tm_span *s) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  s->queue = TM_Q_ORPHAN;
  s->prev = NULL;
  s->next = tm_orphans[s->size_class];
  tm_orphans[s->size_class] = s;
  tm_orphan_count++;
}

tm_span *tm_orphan_take(unsigned c) {
  TM_ASSERT(tm_lock_is_held(&tm_global_lock));
  tm_span *s = tm_orphans[c];
  if (!s) return NULL;
  tm_orphans[c] = s->next;
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
        size_t bytes = (size_t)s->slice_count << TM_SLICE_SHIFT;
        TM_STAT_SUB(span_bytes, bytes);
        freed += bytes;
        tm_slices_free(s);
      } else {
        link = &s->next;
      }
    }
  }
  return freed;
}

/* ---- large blocks: one block per run of slices -------------------------- */
static size_t tm_page_round(size_t n) {
  return (n + TM_PAGE_SIZE - 1) & ~(TM_PAGE_SIZE - 1);
}

void *tm_large_alloc(size_t size, size_t align) {
  if (size == 0) size = 1; /* the block must start inside the run */
  if (align >= TM_SEG_SIZE) return NULL; /* only a header sits there */
  size_t slack = align > TM_SLICE_SIZE ? align - TM_SLICE_SIZE : 0;
  size_t need = size + slack;
  if (need < size || need > (TM_SLICES - 1) * TM_SLICE_SIZE) return NULL;
  unsigned n = (unsigned)((need + TM_SLICE_SIZE - 1) >> TM_SLICE_SHIFT);
  tm_lock(&tm_global_lock);
  tm_span *s = tm_slices_alloc(n);
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
  return s->start;
}

void tm_large_free(tm_span *s) {
  tm_lock(&tm_global_lock);
  TM_STAT_SUB(large_bytes, (size_t)s->slice_count << TM_SLICE_SHIFT);
  tm_slices_free(s);
  tm_unlock(&tm_global_lock);
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
  bool ok = true;
  tm_lock(&tm_global_lock);
  unsigned have = s->slice_count;
  if (need > have) {
    uint64_t more = tm_run_mask(idx + have, need - have);
    if ((seg->free_slices & more) == more) {
      seg->free_slices &= ~more;
      if (seg->free_slices == 0 && tm_seg_listed(seg)) tm_seg_list_remove(seg);
      for (unsigned j = idx + have; j < idx + need; j++) seg->slice_map[j] = (uint8_t)idx;
      s->slice_count = (uint8_t)need;
      TM_STAT_ADD(large_bytes, (size_t)(need - have) << TM_SLICE_SHIFT);
    } else {
      ok = false;
    }
  } else if (need < have) {
    seg->free_slices |= tm_run_mask(idx + need, have - need);
    for (unsigned j = idx + need; j < idx + have; j++) {
      seg->spans[j].slice_count = 1;
      atomic_store_explicit(&seg->spans[j].kind, TM_SPAN_FREE, memory_order_relaxed);
      seg->slice_map[j] = (uint8_t)j;
    }
    if (!tm_seg_listed(seg)) tm_seg_list_add(seg);
    s->slice_count = (uint8_t)need;
    TM_STAT_SUB(large_bytes, (size_t)(have - need) << TM_SLICE_SHIFT);
  }
  if (ok) s->large_size = want;
  tm_unlock(&tm_global_lock);
  return ok;
}

/* ---- fork and consistency ------------------------------------------------ */
/* In a fork child whose parent had the lock taken: the lists may be half
 * updated, so forget them. Segments keep working for the blocks that live in
 * them; their free slices are lost to this child. */
void tm_global_reset_after_fork(void) {
  tm_fork_gen++;
  tm_free_segs = NULL;
  memset(tm_orphans, 0, sizeof tm_orphans);
  tm_orphan_count = 0;
  tm_meta_cur = NULL;
  tm_meta_left = 0;
  tm_pager_reset_after_fork();
  atomic_store(&tm_global_lock.held, 0);
}

int tm_segments_check(void) {
  int problems = 0;
  tm_lock(&tm_global_lock);
  for (tm_segment *seg = tm_free_segs; seg; seg = seg->next) {
    if (seg->kind != TM_SEG_NORMAL || seg->free_slices == 0 || (seg->free_slices & 1)) problems += tm_check_problem("listed segment is not a normal one with free slices", seg);
    for (unsigned i = 1; i < TM_SLICES; i++) {
      if (!(seg->free_slices & ((uint64_t)1 << i))) continue;
      unsigned k = tm_span_kind(&seg->spans[seg->slice_map[i]]);
      if (k == TM_SPAN_SMALL || k == TM_SPAN_LARGE) problems += tm_check_problem("free slice maps to a live span", seg);
    }
  }
  tm_unlock(&tm_global_lock);
  return problems;
}
