/* Unit tests of the allocator's internal modules (linked statically against
 * libtidecore, so internal functions are reachable): size classes, exact
 * block division, the span bitmap and its page occupancy, the registry, and
 * the segment cache bound. */
#include "internal.h"
#include "pager_int.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include "checkrun.h"
#include "testutil.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tm_span *new_span(unsigned c) {
  tm_lock(&tm_global_lock);
  tm_span *s = tm_slices_alloc(1, tm_class_needs_bitmap(c, 1));
  tm_unlock(&tm_global_lock);
  ck_assert_ptr_nonnull(s);
  tm_span_init_small(s, c, NULL);
  return s;
}

/* The test owns the span's blocks: forget them and retire it. */
static void drop_span(tm_span *s) {
  s->used = 0;
  tm_notice_close(s, false);
  tm_lock(&tm_global_lock);
  tm_slices_free(s);
  tm_unlock(&tm_global_lock);
}

START_TEST(t_class_bounds) {
  for (size_t n = 0; n <= TM_SMALL_MAX; n++) {
    unsigned c = tm_size_class(n);
    ck_assert_uint_lt(c, TM_NUM_CLASSES);
    size_t cs = tm_class_size(c);
    ck_assert_msg(cs >= n, "size %zu in class %u of %zu bytes", n, c, cs);
    ck_assert_uint_eq(cs % 16, 0);
    if (c > 0) ck_assert_msg(tm_class_size(c - 1) < n || n == 0, "size %zu not in the smallest class", n);
    if (n > 128) ck_assert_msg((cs - n) * 8 < n, "size %zu wastes %zu bytes in class %zu", n, cs - n, cs);
    if (n <= 2048) ck_assert_uint_eq(tm_class_table[(n + 15) >> 4], tm_size_class_calc(n));
    if (n <= 2048) ck_assert_uint_eq(tm_cache_slot_table[(n + 15) >> 4], 2 * tm_size_class_calc(n));
  }
  ck_assert_uint_eq(tm_class_size(TM_NUM_CLASSES - 1), TM_SMALL_MAX);
  for (unsigned c = 1; c < TM_NUM_CLASSES; c++) ck_assert_uint_gt(tm_class_size(c), tm_class_size(c - 1));
}
END_TEST

START_TEST(t_span_index_exact) {
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    tm_span *s = new_span(c);
    size_t color = (uintptr_t)s->start & (TM_SLICE_SIZE - 1);
    size_t bytes = ((size_t)s->slice_count << TM_SLICE_SHIFT) - color;
    ck_assert_uint_lt(color, TM_PAGE_SIZE);
    ck_assert_uint_eq((uintptr_t)s->start % (s->block_size & (~s->block_size + 1)), 0); /* as aligned as the size */
    ck_assert_uint_eq(s->capacity, bytes / s->block_size > TM_MAX_BLOCKS ? TM_MAX_BLOCKS : bytes / s->block_size);
    for (size_t off = 0; off < bytes + 2 * s->block_size; off += 16) {
      uint64_t idx = tm_span_index(s, s->start + off);
      bool block_start = off % s->block_size == 0 && off / s->block_size < s->capacity;
      if (block_start)
        ck_assert_msg(idx == off / s->block_size, "class %u off %zu: index %llu", c, off,
                      (unsigned long long)idx);
      else
        ck_assert_msg(idx >= s->capacity, "class %u: off %zu accepted as block %llu", c, off,
                      (unsigned long long)idx);
    }
    /* below the span start and misaligned pointers are never blocks */
    ck_assert_uint_ge(tm_span_index(s, s->start - 16), s->capacity);
    ck_assert_uint_ge(tm_span_index(s, s->start + 8), s->capacity);
    drop_span(s);
  }
}
END_TEST

/* OS page (relative to the span's first slice) holding byte 0 of block i */
static unsigned page_of(const tm_span *s, uint32_t i) {
  return (unsigned)((((uintptr_t)s->start & (TM_SLICE_SIZE - 1)) + (size_t)i * s->block_size) >> TM_PAGE_SHIFT);
}

START_TEST(t_bitmap_order_and_pages) {
  unsigned c = tm_size_class(1000); /* 1024-byte blocks: four per page */
  tm_span *s = new_span(c);
  ck_assert_uint_eq(s->block_size, 1024);
  unsigned first_page = page_of(s, 0), last_page = page_of(s, s->capacity - 1);
  uint8_t *prev = NULL;
  for (uint32_t i = 0; i < s->capacity; i++) {
    uint8_t *p = tm_span_pop(s);
    ck_assert_ptr_nonnull(p);
    if (prev) ck_assert_ptr_eq(p, prev + s->block_size); /* lowest address first */
    prev = p;
  }
  ck_assert_ptr_null(tm_span_pop(s));
  ck_assert_uint_eq(s->used, s->capacity);
  ck_assert_uint_eq(last_page - first_page + 1, 16);
  ck_assert_uint_eq(tm_span_free_pages(s), 0); /* every page holds a live block */
  /* free every block of pages 1 and 5, and all but one block of page 2 */
  uint32_t keep = 0;
  for (uint32_t i = 0; i < s->capacity; i++) {
    unsigned page = page_of(s, i);
    if (page == 2 && !keep) {
      keep = i;
      continue;
    }
    if (page == 1 || page == 5 || page == 2) {
      tm_span_bits(s)[i >> 6] |= (uint64_t)1 << (i & 63);
      s->used--;
    }
  }
  ck_assert(tm_span_refresh(s));
  ck_assert_uint_eq(tm_span_free_pages(s), 0x22); /* page 1 and 5 empty, page 2 live */
  ck_assert_int_eq(tm_span_check(s, NULL), 0);
  /* freed blocks come back lowest first */
  uint32_t lowest = 0;
  while (page_of(s, lowest) != 1) lowest++;
  ck_assert_ptr_eq(tm_span_pop(s), s->start + (size_t)lowest * 1024);
  s->used--; /* undo: the test owns the accounting */
  tm_span_bits(s)[lowest >> 6] |= (uint64_t)1 << (lowest & 63);
  ck_assert_int_eq(tm_span_check(s, NULL), 0);
  drop_span(s);
}
END_TEST

/* tm_span_free_pages (O(pages + words)) against a block-by-block reading
 * of the bitmap, for every class, on random bitmaps from dense to sparse. */
START_TEST(t_free_pages_match_reference) {
  uint64_t rng = 0x853c49e6748fea9bull;
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    tm_span *s = new_span(c);
    size_t off = (uintptr_t)s->start & (TM_SLICE_SIZE - 1);
    unsigned npages = (unsigned)(((size_t)s->slice_count << TM_SLICE_SHIFT) >> TM_PAGE_SHIFT);
    for (int round = 0; round < 40; round++) {
      unsigned keep_per_1000 = (unsigned)(round * 25); /* 0% .. 97.5% of blocks live */
      for (uint32_t i = 0; i < s->capacity; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        uint64_t bit = (uint64_t)1 << (i & 63);
        if (rng % 1000 < keep_per_1000)
          tm_span_bits(s)[i >> 6] &= ~bit;
        else
          tm_span_bits(s)[i >> 6] |= bit;
      }
      uint64_t live = 0;
      for (uint32_t i = 0; i < s->capacity; i++) {
        if (tm_span_bits(s)[i >> 6] & ((uint64_t)1 << (i & 63))) continue;
        size_t a = off + (size_t)i * s->block_size, b = a + s->block_size - 1;
        for (size_t pg = a >> TM_PAGE_SHIFT; pg <= b >> TM_PAGE_SHIFT; pg++) live |= (uint64_t)1 << pg;
      }
      /* pages holding blocks, none of them live (pages after the last
       * block are never counted: see tm_span_free_pages) */
      size_t end = off + (size_t)s->capacity * s->block_size;
      uint64_t with_blocks = 0;
      for (size_t pg = off >> TM_PAGE_SHIFT; pg <= (end - 1) >> TM_PAGE_SHIFT && pg < npages; pg++)
        with_blocks |= (uint64_t)1 << pg;
      ck_assert_msg(tm_span_free_pages(s) == (with_blocks & ~live), "class %u round %d: %llx, expected %llx", c,
                    round, (unsigned long long)tm_span_free_pages(s), (unsigned long long)(with_blocks & ~live));
    }
    /* leave it as it was made: every block free */
    for (uint32_t i = 0; i < s->capacity; i++) tm_span_bits(s)[i >> 6] |= (uint64_t)1 << (i & 63);
    drop_span(s);
  }
}
END_TEST

START_TEST(t_check_detects_corruption) {
  tm_span *s = new_span(3);
  ck_assert_int_eq(tm_span_check(s, NULL), 0);
  ck_assert_ptr_nonnull(tm_span_pop(s));
  s->used++; /* a lost free: accounting no longer matches the bitmap */
  ck_assert_int_gt(tm_span_check(s, NULL), 0);
  s->used--;
  ck_assert_int_eq(tm_span_check(s, NULL), 0);
  drop_span(s);
}
END_TEST

START_TEST(t_registry) {
  void *p = malloc(100);
  ck_assert_ptr_nonnull(tm_segment_of(p));
  ck_assert_ptr_eq(tm_segment_of(p), tm_segment_base(p));
  int local;
  ck_assert_ptr_null(tm_segment_of(&local));
  ck_assert_ptr_null(tm_segment_of((void *)0x1000));
  void *h = malloc(8 << 20);
  tm_segment *hs = tm_segment_of(h);
  ck_assert_ptr_nonnull(hs);
  ck_assert_uint_eq(hs->kind, TM_SEG_HUGE);
  free(h);
  ck_assert_ptr_null(tm_segment_of(h));
  free(p);
}
END_TEST

/* 48 bits (aarch64's user space): regions above 2^47 have registry bytes
 * of their own, not the ones of the region 2^47 below (x86_64 never maps
 * there, so this is the arithmetic the lookup uses); at and above 2^48
 * nothing is ours, whatever the low bits say. */
START_TEST(t_registry_48_bits) {
  void *p = malloc(100);
  uintptr_t a = (uintptr_t)p;
  ck_assert_uint_eq(tm_registry_get(a), TM_REG_SEGMENT);
  uintptr_t up = a ^ ((uintptr_t)1 << 47);
  ck_assert_uint_ne(tm_reg_index(up), tm_reg_index(a));
  ck_assert_uint_lt(tm_reg_index(up), (uintptr_t)1 << TM_REGISTRY_BITS);
  ck_assert_uint_lt(tm_reg_index(up) >> TM_REG_LEAF_BITS, (uintptr_t)1 << TM_REG_TOP_BITS);
  for (unsigned bit = 48; bit < 64; bit++) {
    ck_assert_uint_eq(tm_registry_get(a | ((uintptr_t)1 << bit)), TM_REG_NONE);
    ck_assert_ptr_null(tm_segment_of((void *)(a | ((uintptr_t)1 << bit))));
  }
  ck_assert_uint_eq(tm_registry_get(~(uintptr_t)0), TM_REG_NONE);
  free(p);
}
END_TEST

/* VmFlags of the mapping holding addr contain flag (e.g. "nh"). */
static bool vm_flag(const void *addr, const char *flag) {
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  bool in = false, found = false;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
    } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      char want[8];
      snprintf(want, sizeof want, " %s", flag);
      found = strstr(line, want) != NULL;
      break;
    }
  }
  if (f) fclose(f);
  return found;
}

/* With THP "always" (req.nohuge), a segment the pager purges page by page
 * gets MADV_NOHUGEPAGE first (khugepaged would fill the holes back in);
 * without it, the segment keeps its huge-page eligibility. */
static void *purge_pages_of_live_spans(bool nohuge) {
  enum { N = 2000 };
  static void *v[N];
  for (int i = 0; i < N; i++) {
    v[i] = malloc(1000);
    memset(v[i], 1, 1000);
  }
  for (int i = 0; i < N; i++)
    if (i % 50) free(v[i]);
  tm_trim_req req = {.now_ms = tm_now_ms(), .all = true, .nohuge = nohuge};
  ck_assert_uint_gt(tm_pager_trim_now(&req), 0);
  return v[0]; /* still live: its segment was purged page by page */
}

START_TEST(t_nohuge_before_page_purge) {
  tm_pager_opt.enabled = 0; /* only the purge below */
  void *kept = purge_pages_of_live_spans(true);
  ck_assert_msg(vm_flag(tm_segment_base(kept), "nh"), "no MADV_NOHUGEPAGE before purging pages one by one");
}
END_TEST

START_TEST(t_no_nohuge_without_thp_always) {
  tm_pager_opt.enabled = 0;
  void *kept = purge_pages_of_live_spans(false);
  ck_assert_msg(!vm_flag(tm_segment_base(kept), "nh"), "MADV_NOHUGEPAGE without THP \"always\"");
}
END_TEST

/* Without a pager thread, empty segments beyond TIDE_SEGMENT_CACHE (default
 * 1) are unmapped at once by the thread that empties them. */
START_TEST(t_segment_cache_bound) {
  enum { N = 40 };
  tm_pager_opt.enabled = 0; /* (each test runs in its own process) */
  void *big[N];
  struct tide_stats before, full, after;
  tide_get_stats(&before);
  for (int i = 0; i < N; i++) {
    big[i] = malloc(900 * 1024); /* large blocks: ~4 per segment */
    ck_assert_ptr_nonnull(big[i]);
    memset(big[i], 1, 4096);
  }
  tide_get_stats(&full);
  ck_assert_uint_ge(full.segment_count, before.segment_count + N / 4);
  for (int i = 0; i < N; i++) free(big[i]);
  tide_get_stats(&after);
  ck_assert_uint_le(after.cached_segments, (size_t)tm_opt.segment_cache);
  ck_assert_uint_ge(after.segments_released, before.segments_released + N / 4 - 2);
  ck_assert_uint_le(after.segment_count, before.segment_count + 1);
}
END_TEST

/* Sizes whose sum with the alignment wraps: refused before any mapping
 * is tried, with ENOMEM. */
START_TEST(t_map_aligned_wrap) {
  size_t seg = (size_t)1 << 22;
  size_t sizes[] = {SIZE_MAX, SIZE_MAX - seg + 1, SIZE_MAX - 4095};
  for (int k = 0; k < 3; k++) {
    errno = 0;
    void *p = tm_os_map_aligned(sizes[k], seg, TM_MAP_RESERVE);
    ck_assert_msg(p == NULL && errno == ENOMEM, "tm_os_map_aligned(%zu, 4 MiB): %p, errno %d", sizes[k], p, errno);
  }
  void *ok = tm_os_map_aligned(seg, seg, TM_MAP_RESERVE); /* and a real one still works */
  ck_assert_ptr_nonnull(ok);
  ck_assert_uint_eq((uintptr_t)ok & (seg - 1), 0);
  tm_os_unmap(ok, seg);
}
END_TEST

/* A request that lands in class c (the hardened build asks 8 bytes more) */
static size_t req_for_class(unsigned c) {
  size_t r = tm_class_size(c) - (TIDE_HARDENED ? 8 : 0);
  ck_assert_uint_eq(tm_size_class(TIDE_HARDENED ? tm_guard_size(r) : r), c);
  return r;
}

/* The stash (src/stash.c): a cache's overflow kept as whole lists, taken
 * back whole by a miss, bounded, and sent back by a collect and by a
 * scavenge of a class that needed no refill. */
static unsigned stash_lists(const tm_heap *h, unsigned c) {
  unsigned n = 0;
  for (unsigned i = h->stash_top[c]; i; i = h->stash_lists[i - 1].next) n++;
  return n;
}

static unsigned stashed_blocks(const tm_heap *h, unsigned c) {
  unsigned n = 0;
  for (unsigned i = h->stash_top[c]; i; i = h->stash_lists[i - 1].next) n += h->stash_lists[i - 1].n;
  return n;
}

START_TEST(t_stash) {
  enum { N = 6000, FIRST = 3000 }; /* FIRST blocks of 64 bytes fit the base budget */
  static void *v[N];
  tm_pager_opt.enabled = 0; /* its scavenges would come at times the test cannot tell */
  unsigned c = tm_size_class(64);
  tm_heap *h;
  for (int i = 0; i < FIRST; i++) ck_assert_ptr_nonnull(v[i] = malloc(req_for_class(c)));
  h = tm_heap_tls;
  ck_assert_uint_eq(stashed_blocks(h, c), 0);
  unsigned left = tm_cache_n(&h->cache[c]); /* the last refill's rest */
  for (int i = 0; i < FIRST; i++) free(v[i]);
  /* the overflows went to the stash, each a whole cache (a block of a span
   * that was full goes to its bitmap instead: the slow path frees it) */
  unsigned stashed = stashed_blocks(h, c), lists = stash_lists(h, c), in_cache = tm_cache_n(&h->cache[c]);
  ck_assert_uint_gt(lists, 1);
  ck_assert_uint_le(stashed + in_cache, FIRST + left);
  ck_assert_uint_gt(stashed, FIRST * 9 / 10);
  ck_assert_uint_eq(h->stash_bytes, (size_t)stashed * tm_class_size(c));
  struct tide_stats st;
  tide_get_stats(&st);
  ck_assert_uint_ge(st.cached_bytes, h->stash_bytes);
  ck_assert_int_eq(tm_heap_check(h), 0);
  /* the cache empties; the next miss takes the newest list whole. No Check
   * call in between: each one allocates (its mark point), and under qemu,
   * where the paths are longer, its block is of this very class, so that a
   * loop of asserts kept refilling the cache from the stash forever */
  while (tm_cache_n(&h->cache[c]))
    if (!malloc(req_for_class(c))) abort();
  tm_stash_list newest = h->stash_lists[h->stash_top[c] - 1];
  void *p = malloc(req_for_class(c));
  unsigned cached = tm_cache_n(&h->cache[c]), still = stashed_blocks(h, c), lists_now = stash_lists(h, c);
  ck_assert_ptr_eq(p, newest.head);
  ck_assert_uint_eq(cached, newest.n - 1);
  ck_assert_uint_eq(still, stashed - newest.n);
  ck_assert_uint_eq(lists_now, lists - 1);
  ck_assert_int_eq(tm_heap_check(h), 0);
  /* a collect sends the stash back */
  tide_collect();
  ck_assert_uint_eq(h->stash_bytes, 0);
  ck_assert_uint_eq(stashed_blocks(h, c), 0);
  /* bounded in lists: one class in use (never cold) overflows its cache
   * until it holds every list */
  unsigned small = tm_size_class(16), mid = tm_size_class(64);
  for (int i = 0; i < N; i++) ck_assert_ptr_nonnull(v[i] = malloc(req_for_class(small)));
  for (int i = 0; i < N; i++) free(v[i]);
  ck_assert_uint_eq(stash_lists(h, small), TM_STASH_LISTS);
  ck_assert_int_eq(tm_heap_check(h), 0);
  tide_collect();
  /* two classes freed in turn both keep their lists: neither is cold, so
   * neither evicts the other once the lists run out */
  for (int i = 0; i < N / 2; i++) {
    ck_assert_ptr_nonnull(v[2 * i] = malloc(req_for_class(small)));
    ck_assert_ptr_nonnull(v[2 * i + 1] = malloc(req_for_class(mid)));
  }
  for (int i = 0; i < N; i++) free(v[i]);
  unsigned both = stash_lists(h, small) + stash_lists(h, mid);
  ck_assert_uint_eq(both, TM_STASH_LISTS);
  ck_assert_uint_gt(stash_lists(h, small), TM_STASH_LISTS / 4);
  ck_assert_uint_gt(stash_lists(h, mid), TM_STASH_LISTS / 4);
  ck_assert_int_eq(tm_heap_check(h), 0);
  /* a class left alone goes cold: a class that needs room then sends its
   * lists back. Not at once: the two were in use a moment ago, so the new
   * class's first lists find no room (their older halves go to the
   * bitmaps), and each such try ages the others */
  unsigned k = tm_size_class(1024);
  for (int i = 0; i < 3000; i++) ck_assert_ptr_nonnull(v[i] = malloc(req_for_class(k)));
  for (int i = 0; i < 3000; i++) free(v[i]);
  ck_assert_uint_eq(stash_lists(h, small), 0);
  ck_assert_uint_eq(stash_lists(h, mid), 0);
  ck_assert_uint_gt(stash_lists(h, k), 1);
  /* bounded in bytes, at the base budget while nothing thrashed */
  ck_assert_uint_eq(h->stash_grow, 0);
  ck_assert_uint_le(h->stash_bytes, TM_STASH_BYTES);
  ck_assert_uint_gt(h->stash_bytes, TM_STASH_BYTES / 2);
  ck_assert_int_eq(tm_heap_check(h), 0);
  /* scavenges with no refill of class k in between: its stash goes back */
  ck_assert_uint_gt(stashed_blocks(h, k), 0);
  for (int round = 0; round < 2; round++) { /* the first forgets the refills */
    atomic_store(&h->flush_request, TM_ASK_SCAVENGE);
    tm_heap_catch_up();
  }
  ck_assert_uint_eq(stashed_blocks(h, k), 0);
  ck_assert_int_eq(tm_heap_check(h), 0);
}
END_TEST

/* A heap that thrashes doubles its stash budget, up to TM_STASH_GROW_MAX
 * times, and scavenges that find no overflow halve it again. Rounds of
 * 1,600 blocks of 512 bytes (800 KiB, glibc-simple's largest), on a thread
 * of its own, whose heap starts at the base budget: the first round's frees
 * overflow it, and each later round's refill from the spans doubles it,
 * until the whole round fits. */
static void *stash_grows(void *arg) {
  (void)arg;
  enum { R = 1600 };
  static void *w[R];
  unsigned c = tm_size_class(512);
  tm_heap *h = NULL;
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < R; i++) ck_assert_ptr_nonnull(w[i] = malloc(req_for_class(c)));
    h = tm_heap_tls;
    if (round == 0) ck_assert_uint_eq(h->stash_grow, 0);
    if (round == 1) ck_assert_uint_eq(h->stash_grow, 1);
    for (int i = 0; i < R; i++) free(w[i]);
    ck_assert_uint_le(h->stash_bytes, tm_stash_budget(h));
  }
  ck_assert_uint_eq(h->stash_grow, TM_STASH_GROW_MAX);
  ck_assert_uint_le(tm_stash_budget(h), (size_t)1 << 20);
  ck_assert_uint_ge(stashed_blocks(h, c) + tm_cache_n(&h->cache[c]), R); /* the last rounds kept every block */
  ck_assert_int_eq(tm_heap_check(h), 0);
  /* the first scavenge sees the overflows of the first rounds; the next
   * two see none */
  unsigned grow[3];
  for (int i = 0; i < 3; i++) {
    atomic_store(&h->flush_request, TM_ASK_SCAVENGE);
    tm_heap_catch_up();
    grow[i] = h->stash_grow;
  }
  ck_assert_uint_eq(grow[0], TM_STASH_GROW_MAX);
  ck_assert_uint_eq(grow[1], TM_STASH_GROW_MAX - 1);
  ck_assert_uint_eq(grow[2], TM_STASH_GROW_MAX - 2);
  ck_assert_int_eq(tm_heap_check(h), 0);
  return NULL;
}

START_TEST(t_stash_grows) {
  tm_pager_opt.enabled = 0; /* its scavenges would come at times the test cannot tell */
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, stash_grows, NULL), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
}
END_TEST

/* A heap that takes new slices first makes its cold classes give back what
 * they hold (tm_heap_release_cold), and the new spans reuse those resident
 * slices: measured as RSS from /proc. On a thread of its own (a fresh
 * heap), with no pager (its purges would lower RSS on their own): 62
 * blocks of 8 KiB allocated, written and freed stay in the cache and the
 * stash, and pin 8 spans (512 KiB); then 16,384 blocks of 64 bytes (1 MiB,
 * 16 spans) are allocated. Their first span comes while the 8 KiB class is
 * still in use; by the second it is cold, its spans retire, and later
 * 64-byte spans are cut from its slices. */
enum { COLD_BIG = 62, COLD_SMALL = 16384 };
static void *cold_big[COLD_BIG], *cold_small[COLD_SMALL];
static void *cold_classes_give_back(void *arg) {
  long *grew = arg;
  unsigned big = tm_size_class(8192), small = tm_size_class(64);
  for (int i = 0; i < COLD_BIG; i++) {
    ck_assert_ptr_nonnull(cold_big[i] = malloc(req_for_class(big)));
    memset(cold_big[i], 0x5a, 8192 - (TIDE_HARDENED ? 8 : 0));
  }
  for (int i = 0; i < COLD_BIG; i++) free(cold_big[i]);
  tm_heap *h = tm_heap_tls;
  ck_assert_uint_gt(stashed_blocks(h, big) + tm_cache_n(&h->cache[big]), COLD_BIG * 3 / 4);
  memset(cold_small, 0, sizeof cold_small); /* its own 128 KiB, before the measure */
  long before = rss_kb();
  for (int i = 0; i < COLD_SMALL; i++) {
    ck_assert_ptr_nonnull(cold_small[i] = malloc(req_for_class(small)));
    memset(cold_small[i], 0xa5, 64 - (TIDE_HARDENED ? 8 : 0));
  }
  *grew = rss_kb() - before;
  ck_assert_uint_eq(stashed_blocks(h, big) + tm_cache_n(&h->cache[big]), 0);
  /* merely cold: its current span and one spare stay (rare sizes come back) */
  ck_assert_ptr_ne(h->cur[big], &tm_empty_span);
  ck_assert_int_eq(tm_heap_check(h), 0);
  for (int i = 0; i < COLD_SMALL; i++) free(cold_small[i]);
  /* gone (TM_CLASS_GONE_AGE slow paths without it): they retire too, at the
   * next new span (of a third class) */
  unsigned mid = tm_size_class(256);
  for (int round = 0; round < 100000 && tm_class_age(h, big) < TM_CLASS_GONE_AGE; round++) {
    for (int i = 0; i < 100; i++) ck_assert_ptr_nonnull(cold_small[i] = malloc(req_for_class(small)));
    for (int i = 0; i < 100; i++) free(cold_small[i]); /* slow paths: refills and overflows */
  }
  ck_assert_uint_ge(tm_class_age(h, big), TM_CLASS_GONE_AGE);
  for (int i = 0; i < COLD_SMALL; i++) ck_assert_ptr_nonnull(cold_small[i] = malloc(req_for_class(mid)));
  ck_assert_ptr_eq(h->cur[big], &tm_empty_span);
  ck_assert_ptr_null(h->partial[big].first);
  ck_assert_int_eq(tm_heap_check(h), 0);
  for (int i = 0; i < COLD_SMALL; i++) free(cold_small[i]);
  return NULL;
}

START_TEST(t_cold_classes_give_back) {
  tm_pager_opt.enabled = 0;
  long grew = 0;
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, cold_classes_give_back, &grew), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  /* 1 MiB of new blocks: 828-848 KiB of new RSS measured with the release
   * (6 of the 8 KiB class's 8 spans retire), 1,212-1,232 KiB without (they
   * stay, and the 64-byte spans grow beside them) */
  if (grew > 1000) ck_abort_msg("RSS grew by %ld KiB for 1024 KiB of blocks: the cold class's slices were not reused", grew);
}
END_TEST

/* The free fast path reads the descriptor of the block's slice, not its
 * span's (tm_slice_desc): the same for every block of a span of one slice,
 * and for the first slice of a bigger one. The later slices of a span of
 * four (classes above 8 KiB) mirror what the fast path reads, the owner and
 * its full tag included; slices that start no span name no owner, even
 * where retired spans of one slice, which had one, lay before. */
static unsigned later_slice_blocks(void **v, unsigned n, unsigned c) {
  unsigned later = 0;
  for (unsigned i = 0; i < n; i++) {
    if (!v[i]) continue;
    tm_segment *seg = tm_segment_base(v[i]);
    tm_span *s = tm_span_of(seg, v[i]), *d = tm_slice_desc(seg, v[i]);
    ck_assert_uint_eq(s->size_class, c);
    ck_assert_uint_eq(s->slice_count, 4);
    if (d == s) continue;
    uintptr_t mirror_owner = atomic_load_explicit(&d->heap, memory_order_relaxed);
    uintptr_t span_owner = atomic_load_explicit(&s->heap, memory_order_relaxed);
    ck_assert_uint_eq(mirror_owner, span_owner);
    ck_assert_ptr_eq(d->start, s->start);
    ck_assert_uint_eq(d->capacity, s->capacity);
    ck_assert_uint_eq(d->size_class, s->size_class);
    ck_assert_uint_eq(tm_span_index(d, v[i]), tm_span_index(s, v[i]));
    later++;
  }
  return later;
}

static bool span_full(tm_span *s) { return atomic_load_explicit(&s->heap, memory_order_relaxed) & TM_HEAP_FULL_TAG; }

START_TEST(t_slice_desc) {
  enum { N = 40, SMALL = 20000 };
  static void *v[N], *small[SMALL];
  tm_pager_opt.enabled = 0; /* no scavenge between the counts */
  unsigned c = tm_size_class(16384);
  size_t req = req_for_class(c);
  /* spans of one slice, retired, so that their descriptors had an owner */
  for (int i = 0; i < SMALL; i++) ck_assert_ptr_nonnull(small[i] = malloc(req_for_class(tm_size_class(256))));
  for (int i = 0; i < SMALL; i++) free(small[i]);
  tide_collect();
  for (unsigned i = 0; i < N; i++) {
    ck_assert_ptr_nonnull(v[i] = malloc(req));
    memset(v[i], (int)i, req);
  }
  ck_assert_uint_gt(later_slice_blocks(v, N, c), N / 2);
  tm_heap *h = tm_heap_tls;
  tm_cache *k = &h->cache[c];
  /* the owner frees blocks of later slices of spans that are not full: each
   * lands on its cache; of a full span: in its bitmap (the slow path), and
   * the span is no longer full, its mirrors with it */
  unsigned cached = 0, to_cache = 0, to_bitmap = 0, unfull = 0;
  for (unsigned i = 0; i < N; i++) {
    tm_segment *seg = tm_segment_base(v[i]);
    tm_span *s = tm_span_of(seg, v[i]);
    if (tm_slice_desc(seg, v[i]) == s || tm_cache_n(k) >= k->cap) continue;
    bool full = span_full(s);
    unsigned before = tm_cache_n(k);
    free(v[i]);
    bool went = tm_cache_n(k) == before + 1 && k->head == v[i];
    v[i] = NULL;
    if (full) {
      to_bitmap++;
      cached += went;
      unfull += !span_full(s) && !span_full(&s[1]) && !span_full(&s[2]) && !span_full(&s[3]);
    } else {
      to_cache++;
      cached += went;
    }
  }
  ck_assert_uint_gt(to_cache, 0);
  ck_assert_uint_gt(to_bitmap, 0);
  ck_assert_uint_eq(cached, to_cache);
  ck_assert_uint_eq(unfull, to_bitmap);
  ck_assert_uint_eq(tm_outbox_n(&h->outbox[c]), 0);
  ck_assert_int_eq(tm_heap_check(h), 0);
  later_slice_blocks(v, N, c);
  /* and come back, whole */
  for (unsigned i = 0; i < N; i++) {
    if (v[i]) continue;
    ck_assert_ptr_nonnull(v[i] = malloc(req));
    memset(v[i], 0x5a, req);
  }
  later_slice_blocks(v, N, c);
  for (unsigned i = 0; i < N; i++) {
    unsigned char *b = v[i];
    ck_assert(b[0] == b[req - 1]);
    free(v[i]);
  }
  ck_assert_int_eq(tm_heap_check(h), 0);
}
END_TEST

START_TEST(t_delay_next) {
  const uint64_t M = 1u << 20;
  ck_assert_uint_eq(tm_delay_next(100, 100, 64 * M, 63 * M), 200);
  ck_assert_uint_eq(tm_delay_next(100, 100, 64 * M, 32 * M), 200);
  ck_assert_uint_eq(tm_delay_next(800, 100, 64 * M, 64 * M), 1000); /* 10 x 100, and 1 s */
  ck_assert_uint_eq(tm_delay_next(1000, 100, 64 * M, 64 * M), 1000);
  ck_assert_uint_eq(tm_delay_next(50, 50, 64 * M, 64 * M), 100);
  ck_assert_uint_eq(tm_delay_next(500, 50, 64 * M, 64 * M), 500); /* 10 x 50 */
  ck_assert_uint_eq(tm_delay_next(400, 100, 64 * M, 20 * M), 400); /* between a quarter and a half: kept */
  ck_assert_uint_eq(tm_delay_next(400, 100, 64 * M, 15 * M), 200);
  ck_assert_uint_eq(tm_delay_next(150, 100, 64 * M, 0), 100);    /* never below the knob */
  ck_assert_uint_eq(tm_delay_next(400, 100, M - 1, M - 1), 400); /* too little purged to tell */
  ck_assert_uint_eq(tm_delay_next(0, 0, 64 * M, 64 * M), 0);     /* 0: purge at once, always */
  ck_assert_uint_eq(tm_delay_next(5000, 5000, 64 * M, 64 * M), 5000); /* above 1 s: the knob */
  ck_assert_uint_eq(tm_delay_next(30, 100, 64 * M, 0), 100);      /* a stale value below the knob */
}
END_TEST

int main(void) {
  Suite *su = suite_create("units");
  TCase *tc = tcase_create("units");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, t_class_bounds);
  tcase_add_test(tc, t_span_index_exact);
  tcase_add_test(tc, t_bitmap_order_and_pages);
  tcase_add_test(tc, t_free_pages_match_reference);
  tcase_add_test(tc, t_check_detects_corruption);
  tcase_add_test(tc, t_registry);
  tcase_add_test(tc, t_registry_48_bits);
  tcase_add_test(tc, t_segment_cache_bound);
  tcase_add_test_native(tc, t_nohuge_before_page_purge,
                        "qemu-user ignores madvise(MADV_NOHUGEPAGE) (it returns 0; no \"nh\" in VmFlags)");
  tcase_add_test(tc, t_no_nohuge_without_thp_always);
  tcase_add_test(tc, t_delay_next);
  tcase_add_test(tc, t_stash);
  tcase_add_test(tc, t_stash_grows);
  tcase_add_test(tc, t_cold_classes_give_back);
  tcase_add_test(tc, t_slice_desc);
  tcase_add_test(tc, t_map_aligned_wrap);
  suite_add_tcase(su, tc);
  return check_run(su, CK_FORK_GETENV);
}
