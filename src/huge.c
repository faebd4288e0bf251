/* Huge blocks: one mapping each, with a segment header in front so that the
 * same lookup as for every other block finds it. realloc moves them with
 * mremap: pages change address, they are never copied.
 *
 * A freed huge mapping is kept a while (with the pager running) in a small
 * cache, pages and all, so that a program that allocates and frees big
 * blocks in a loop reuses resident memory instead of faulting it in again
 * (11 us a page here). The pager unmaps what stayed unused for
 * TIDE_PAGER_DELAY_MS (tm_trim_huge), and everything when it must. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

atomic_size_t tm_huge_threshold_v = (size_t)1 << 20;

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

/* ---- the cache of freed mappings (tm_huge_lock) -------------------------- */
#define TM_HUGE_CACHE_SLOTS 16
typedef struct {
  tm_segment *seg; /* NULL: free slot */
  size_t map_size;
  uint32_t freed_ms;
} tm_huge_entry;
static tm_huge_entry tm_huge_cache[TM_HUGE_CACHE_SLOTS];
static size_t tm_huge_cache_bytes;
static tm_lock_t tm_huge_lock = TM_LOCK_INIT;

/* Debug builds: the byte count matches the entries, under tm_huge_lock. */
static __attribute__((unused)) bool tm_huge_cache_consistent(void) {
  size_t sum = 0;
  for (unsigned i = 0; i < TM_HUGE_CACHE_SLOTS; i++)
    if (tm_huge_cache[i].seg) sum += tm_huge_cache[i].map_size;
  return tm_lock_is_held(&tm_huge_lock) && sum == tm_huge_cache_bytes;
}

/* How much the cache may hold: two fifths of the live huge bytes, at least
 * 64 MiB, so that the resident memory it keeps stays a fraction of what the
 * program itself holds. Measured on malloc_large (20 buffers of 5-25 MiB
 * replaced at random, median of 2 runs; glibc: 1.24 s, peak RSS 481 MB):
 * a quarter took 2.13 s at 469 MB, a third 1.65 s at 470 MB, two fifths
 * 1.40 s at 479-485 MB, three sevenths 1.20 s at 487-493 MB, a half 1.0-1.2 s
 * at 511 MB. */
static size_t tm_huge_cache_limit(void) {
  size_t live = TM_STAT_GET(huge_bytes) * 2 / 5;
  return live > ((size_t)64 << 20) ? live : (size_t)64 << 20;
}

/* Keep a freed mapping (its registry entries already cleared); false if it
 * does not fit or there is no pager to give it back later. */
static bool tm_huge_cache_put(tm_segment *seg, size_t map) {
  if (!tm_pager_opt.enabled || map > tm_huge_cache_limit()) return false;
  bool kept = false;
  uint32_t now = tm_now_ms();
  tm_lock(&tm_huge_lock);
  /* make room by evicting the oldest entries only if the new one fits */
  for (unsigned i = 0; i < TM_HUGE_CACHE_SLOTS && !kept; i++) {
    if (tm_huge_cache[i].seg) continue;
    if (tm_huge_cache_bytes + map > tm_huge_cache_limit()) break;
    tm_huge_cache[i] = (tm_huge_entry){seg, map, now};
    tm_huge_cache_bytes += map;
    kept = true;
  }
  TM_ASSERT(tm_huge_cache_consistent());
  tm_unlock(&tm_huge_lock);
  if (kept) TM_STAT_ADD(huge_cached_bytes, map);
  return kept;
}

/* The best cached mapping for `map` bytes: the smallest that holds it, if
 * it is at most twice as big; else the biggest smaller one (grown below). */
static tm_segment *tm_huge_cache_take(size_t map, size_t *got) {
  tm_lock(&tm_huge_lock);
  int best = -1, below = -1;
  for (int i = 0; i < TM_HUGE_CACHE_SLOTS; i++) {
    size_t m = tm_huge_cache[i].map_size;
    if (!tm_huge_cache[i].seg) continue;
    if (m >= map && m / 2 <= map && (best < 0 || m < tm_huge_cache[best].map_size)) best = i;
    if (m < map && (below < 0 || m > tm_huge_cache[below].map_size)) below = i;
  }
  if (best < 0) best = below;
  tm_segment *seg = NULL;
  if (best >= 0) {
    seg = tm_huge_cache[best].seg;
    *got = tm_huge_cache[best].map_size;
    tm_huge_cache_bytes -= *got;
    tm_huge_cache[best].seg = NULL;
  }
  TM_ASSERT(tm_huge_cache_consistent());
  tm_unlock(&tm_huge_lock);
  if (seg) TM_STAT_SUB(huge_cached_bytes, *got);
  return seg;
}

/* fork child: a thread that vanished (the pager, trimming) may have held
 * the cache's lock mid-update; forget the cache (its mappings stay, unused,
 * in the child) rather than trust it. */
void tm_huge_after_fork(void) {
  if (!tm_lock_is_held(&tm_huge_lock)) return;
  memset(tm_huge_cache, 0, sizeof tm_huge_cache);
  tm_huge_cache_bytes = 0;
  atomic_store_explicit(&tm_stat.huge_cached_bytes, 0, memory_order_relaxed);
  tm_unlock(&tm_huge_lock); /* its holder vanished */
}

/* The pager: entries unused for req->delay_ms (every one when `all`) go to
 * the batch, to be unmapped. */
bool tm_trim_huge(tm_batch *b, const tm_trim_req *req, tm_due *due) {
  bool full = false;
  tm_lock(&tm_huge_lock);
  for (unsigned i = 0; i < TM_HUGE_CACHE_SLOTS; i++) {
    tm_huge_entry *e = &tm_huge_cache[i];
    if (!e->seg) continue;
    if (!req->all && (int32_t)(req->now_ms - e->freed_ms) < (int32_t)req->delay_ms) {
      tm_due_at(due, e->freed_ms + req->delay_ms);
      continue;
    }
    if (tm_batch_full(b)) {
      full = true;
      break;
    }
    tm_batch_add(b, (uintptr_t)e->seg, e->map_size, NULL, 0, TM_REL_UNMAP);
    tm_huge_cache_bytes -= e->map_size;
    TM_STAT_SUB(huge_cached_bytes, e->map_size);
    e->seg = NULL;
  }
  TM_ASSERT(tm_huge_cache_consistent());
  tm_unlock(&tm_huge_lock);
  return full;
}

/* A mapping of at least `map` bytes aligned to 4 MiB, from the cache when
 * it has one near that size, else fresh. A cached one at most twice as big
 * is used whole: its tail, resident from an earlier block, serves the next
 * bigger block without page faults (cutting it off meant faulting the same
 * pages in again later: on malloc_large, 351K faults against 105K for
 * tcmalloc). A smaller one is grown with mremap. *got: its size; *dirty: it
 * comes from the cache and may hold old data. */
static tm_segment *tm_huge_map(size_t map, size_t *size, bool *dirty) {
  size_t got;
  tm_segment *seg = tm_huge_cache_take(map, &got);
  *size = map;
  if (seg && got > map) {
    *size = got;
  } else if (seg && got < map) {
    /* grow: in place if the range after it is free, else move it to a
     * fresh aligned range (mremap moves pages, it does not copy) */
    void *grown = mremap(seg, got, map, 0);
    if (grown == MAP_FAILED) {
      void *target = tm_os_map_aligned(map, TM_SEG_SIZE, TM_MAP_CHARGED);
      grown = target ? mremap(seg, got, map, MREMAP_MAYMOVE | MREMAP_FIXED, target) : MAP_FAILED;
      if (grown == MAP_FAILED && target) tm_os_unmap(target, map);
    }
    if (grown == MAP_FAILED) {
      tm_os_unmap(seg, got);
      TM_STAT_SUB(mapped_bytes, got);
      seg = NULL;
    } else {
      seg = grown;
    }
  }
  if (seg) {
    TM_STAT_ADD(mapped_bytes, *size);
    TM_STAT_SUB(mapped_bytes, got);
    TM_STAT_ADD(huge_reused, 1);
    *dirty = true;
    return seg;
  }
  *dirty = false;
  seg = tm_os_map_aligned(map, TM_SEG_SIZE, TM_MAP_CHARGED);
  if (seg) TM_STAT_ADD(mapped_bytes, map);
  return seg;
}

void *tm_huge_alloc(size_t size, size_t align, bool zero) {
  size_t off = align > TM_SLICE_SIZE ? align : TM_SLICE_SIZE;
  size_t body = tm_page_round(size ? size : 1); /* the block lies inside the mapping */
  size_t map = off + body;
  if (body < size || map < body || size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  bool dirty = false;
  int saved = errno;
  size_t mapped = map;
  tm_segment *seg = align > TM_SEG_SIZE ? tm_os_map_aligned(map, align, TM_MAP_CHARGED) : tm_huge_map(map, &mapped, &dirty);
  errno = saved;
  if (!seg) {
    errno = ENOMEM;
    return NULL;
  }
  if (align > TM_SEG_SIZE) TM_STAT_ADD(mapped_bytes, map);
  uintptr_t block = (uintptr_t)seg + off;
  /* a cached mapping's header is rewritten below (the fields a lookup
   * reads); its block holds old data: calloc needs zeros */
  if (dirty && zero) memset((void *)block, 0, size);
  seg->kind = TM_SEG_HUGE;
  seg->map_size = mapped;
  tm_span *s = tm_huge_span(seg, block);
  s->start = (uint8_t *)block;
  s->large_size = body;
  s->capacity = 1;
  s->used = 1;
  s->slice_count = 1; /* its own descriptor only (a cached mapping's may hold anything) */
  tm_span_set_owner(s, NULL, false);
  atomic_store_explicit(&s->kind, TM_SPAN_HUGE, memory_order_release);
  tm_huge_register(seg, block, 1);
  tm_stat_raise(&tm_stat.huge_bytes_max, TM_STAT_ADD(huge_bytes, body) + body);
  tm_stat_raise(&tm_stat.huge_count_max, TM_STAT_ADD(huge_count, 1) + 1);
  tm_large_activity();
  return (void *)block;
}

void tm_huge_free(tm_segment *seg, tm_span *s) {
  size_t map = seg->map_size;
  TM_STAT_SUB(huge_bytes, s->large_size);
  TM_STAT_SUB(huge_count, 1);
  atomic_store_explicit(&s->kind, TM_SPAN_FREE, memory_order_relaxed);
  tm_huge_register(seg, (uintptr_t)s->start, 0);
  tm_large_activity();
  /* a block aligned beyond 4 MiB has its header elsewhere: not cached */
  if ((uintptr_t)s->start - (uintptr_t)seg < TM_SEG_SIZE && tm_huge_cache_put(seg, map)) {
    tm_pager_activity();
    return;
  }
  TM_STAT_SUB(mapped_bytes, map);
  tm_os_unmap(seg, map);
}

/* Grow or shrink in place when the address space allows, otherwise move the
 * whole mapping (header included) to a fresh aligned range. NULL: the caller
 * falls back to malloc + copy + free. */
void *tm_huge_realloc(tm_segment *seg, tm_span *s, void *p, size_t newsize) {
  size_t off = (uintptr_t)p - (uintptr_t)seg;
  size_t body = tm_page_round(newsize);
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
    void *target = tm_os_map_aligned(new_map, TM_SEG_SIZE, TM_MAP_CHARGED);
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
