/* Internal types and inline helpers of the front end (src/); the pager
 * (pager/) sees only pager.h. Nothing here is installed. See doc/design.md for the
 * layout of a segment and the life of a span. */
#ifndef TIDE_INTERNAL_H
#define TIDE_INTERNAL_H

#include "config.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lock.h"
#include "tidemalloc.h"

#define TM_API __attribute__((visibility("default")))
#define TM_LIKELY(x) __builtin_expect(!!(x), 1)
#define TM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TM_NOINLINE __attribute__((noinline))
#define TM_INLINE static inline __attribute__((always_inline))

/* glibc's prototypes carry malloc attributes an alias cannot repeat */
#if defined(__GNUC__) && !defined(__clang__)
#define TM_ALIAS_BEGIN _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmissing-attributes\"")
#define TM_ALIAS_END _Pragma("GCC diagnostic pop")
#else
#define TM_ALIAS_BEGIN
#define TM_ALIAS_END
#endif

#include "tm_assert.h"

/* ---- geometry ---------------------------------------------------------- */
#define TM_PAGE_SHIFT 12
#define TM_PAGE_SIZE ((size_t)1 << TM_PAGE_SHIFT)
#define TM_SEG_SHIFT 22 /* 4 MiB segments, aligned to their size */
#define TM_SEG_SIZE ((size_t)1 << TM_SEG_SHIFT)
#define TM_SEG_MASK (TM_SEG_SIZE - 1)
#define TM_SLICE_SHIFT 16 /* 64 KiB slices: the unit spans are made of */
#define TM_SLICE_SIZE ((size_t)1 << TM_SLICE_SHIFT)
#define TM_SLICES (TM_SEG_SIZE / TM_SLICE_SIZE) /* 64 */
#define TM_DATA_SLICES_MASK (~(uint64_t)1)      /* slice 0 holds the header */

#define TM_ALIGN 16 /* every block is at least 16-byte aligned */
#define TM_NUM_CLASSES 72
#define TM_SMALL_MAX ((size_t)32768)
#define TM_MAX_BLOCKS 4096 /* bitmap capacity: 64 words of 64 bits */
#define TM_BITMAP_WORDS (TM_MAX_BLOCKS / 64)
#define TM_INLINE_BITMAP_WORDS 3 /* spans of up to 192 blocks need no other page */

/* The registry maps each 4 MiB region of the user address space to a byte:
 * 0 = not ours, 1 = a segment header sits at the region base, k >= 2 = the
 * region starts a huge block whose header is (4 MiB << (k-2)) below. It
 * covers 48 bits: what Linux hands out without an address hint on x86_64
 * (47 bits) and on aarch64 (48 bits, with 4 KiB pages). A pointer above
 * that is never ours (tm_registry_get), and a mapping above it is not used
 * (os.c). */
#define TM_ADDR_BITS 48
#define TM_REGISTRY_BITS (TM_ADDR_BITS - TM_SEG_SHIFT)
/* In two levels (os.c): a leaf of 2^13 bytes covers 32 GiB. */
#define TM_REG_LEAF_BITS 13
#define TM_REG_TOP_BITS (TM_REGISTRY_BITS - TM_REG_LEAF_BITS)
#define TM_REG_NONE 0
#define TM_REG_SEGMENT 1

/* ---- types ------------------------------------------------------------- */
typedef struct tm_block {
  struct tm_block *next; /* only used for cross-thread frees in flight */
} tm_block;

enum tm_span_kind {
  TM_SPAN_NONE = 0, /* never used, or the header slice: no block lives here */
  TM_SPAN_FREE,     /* retired; its slices are free in the segment */
  TM_SPAN_SMALL,    /* blocks of one size class, owned by a heap or orphaned */
  TM_SPAN_LARGE,    /* one block of a page run, not owned by any heap */
  TM_SPAN_HUGE,     /* one block in its own mapping */
};

enum tm_span_queue {
  TM_Q_NONE = 0,
  TM_Q_CURRENT, /* heap->cur[class]: allocation happens here */
  TM_Q_PARTIAL, /* heap->partial[class]: has free blocks */
  TM_Q_FULL,    /* heap->full: no free block seen at last look */
  TM_Q_ORPHAN,  /* global orphan list: owner thread exited */
};

struct tm_heap;

/* A span descriptor lives in its segment's header, never next to the blocks:
 * whole pages of free blocks can be returned to the OS without losing state.
 * Free blocks are recorded in `bits` (1 = free), so which OS pages hold live
 * blocks is known from the bitmap alone. */
typedef struct tm_span {
  /* owner-only, hot: the first cache line is all the fast paths read */
  uint64_t summary;  /* bit i set: word i of the bitmap may be nonzero (a hint) */
  uint8_t *start;    /* address of block 0 */
  uint32_t block_size;
  uint32_t capacity; /* number of blocks */
  uint16_t used;     /* live blocks + blocks in flight (cache, thread_free) */
  uint8_t div_shift; /* block_size = odd * 2^div_shift */
  uint8_t changed;   /* blocks were freed into the bitmap since the pager's last look */
  uint8_t size_class;
  _Atomic uint8_t kind; /* enum tm_span_kind; read by other threads on free */
  uint8_t queue;        /* enum tm_span_queue */
  uint8_t slice_count;
  uint64_t div_inv; /* inverse of the odd part of block_size mod 2^64 */
  /* owner heap, NULL when orphaned/large/huge. A full span carries its
   * owner's address with TM_HEAP_FULL_TAG set, so the owner's free fast
   * path (which compares with the plain address) falls to the slow path
   * exactly when the span must move back to the partial queue. */
  _Atomic uintptr_t heap;
  struct tm_span *next, *prev; /* links in the owner's queue */
  /* shared with other threads (src/remote.c) */
  _Atomic uintptr_t thread_free; /* blocks freed by other threads | notice state */
  struct tm_span *remote_next;   /* link on the owner's remote list */
  size_t large_size;               /* usable bytes of a large/huge block */
  uint64_t *bits;                  /* free bitmap: inline_bits, or the segment's */
  uint64_t inline_bits[TM_INLINE_BITMAP_WORDS];
} __attribute__((aligned(64))) tm_span;

#define TM_HEAP_FULL_TAG ((uintptr_t)1)

/* Spans of up to this many slices have their pages in one 64-bit mask. */
#define TM_SPAN_MASK_SLICES 4
/* The OS pages of a small span, bit i = page i from its first slice (a span
 * has at most 4 slices, 64 pages). Kept beside the descriptors, in the
 * segment header: only slow paths and the pager look at them. */
typedef struct tm_span_pages {
  _Atomic uint64_t back; /* purged by a release, not yet put back in the bitmap */
  uint64_t purged;       /* purged and not touched since (span's lock) */
  uint64_t seen_free;    /* wholly free at the pager's last visit (span's lock) */
  uint64_t touched;      /* may be resident: a block on it was handed out, or a
                            former span left it dirty (span's lock; the census) */
} tm_span_pages;

/* thread_free: blocks | TM_TF_BACK | notice state (src/remote.c). */
#define TM_TF_BACK ((uintptr_t)4) /* the pager gave pages back (tm_span_pages.back) */
enum tm_notice {
  TM_NOTICE_IDLE = 0,   /* owner not told: the next remote free tells it */
  TM_NOTICE_BUSY = 1,   /* a remote freer is telling the owner now */
  TM_NOTICE_QUEUED = 2, /* on the owner's remote list */
  TM_NOTICE_NEVER = 3,  /* nobody to tell: orphan or retired */
};

enum tm_segment_kind { TM_SEG_NORMAL = 1, TM_SEG_HUGE = 2 };

typedef struct tm_segment {
  /* slice -> index of the span descriptor covering it; a free slice maps to
   * itself (descriptor FREE or NONE); slice 0 is the header. */
  uint8_t slice_map[TM_SLICES];
  uint32_t kind;
  uint32_t fork_gen;         /* generation of the list it was put on */
  uint32_t all_gen;          /* generation of the list of all segments */
  uint8_t list;              /* which list (segment.c) */
  uint8_t busy_header;       /* its header pages are being purged */
  uint8_t header_clean;      /* header pages beyond the first purged, untouched since */
  uint8_t node;              /* NUMA node its pages are bound to */
  uint8_t nohuge;            /* MADV_NOHUGEPAGE was given (pager/policy.c: THP) */
  /* slice masks, bit i = slice i (global lock; see segment.c) */
  uint64_t free_slices;      /* free and available */
  uint64_t dirty_slices;     /* free, pages maybe resident */
  uint64_t purging_slices;   /* taken out by a release in flight */
  uint64_t purged_slices;    /* free, and purged since they were last used */
  uint64_t bitmap_slots;     /* bitmaps[] in use */
  size_t map_size;           /* bytes mapped at this address */
  struct tm_segment *next, *prev;         /* its list */
  struct tm_segment *all_next, *all_prev; /* every normal segment */
  uint32_t slice_freed_ms[TM_SLICES];     /* when each free slice was freed */
  uint16_t slice_pages[TM_SLICES];        /* a dirty free slice's pages that may be resident */
  tm_span_pages span_pages[TM_SLICES];    /* per span: its OS pages (span.c) */
  /* Descriptors are two cache lines; the first is all a free reads, and
   * the hot lines of all 64 spans share two pages. */
  tm_span spans[TM_SLICES] __attribute__((aligned(64)));
  uint64_t bitmaps[TM_SLICES][TM_BITMAP_WORDS]; /* bitmaps of spans over 192 blocks, packed from 0 */
} tm_segment;

_Static_assert(sizeof(tm_segment) <= TM_SLICE_SIZE - TM_PAGE_SIZE,
               "segment header must fit in slice 0, before the hardened build's guard page");

typedef struct tm_queue {
  tm_span *first, *last;
} tm_queue;

enum tm_heap_state {
  TM_HEAP_UNINIT = 0, /* the static empty heap: first malloc sets up a real one */
  TM_HEAP_ACTIVE,
  TM_HEAP_POOLED,  /* its thread exited; waiting for a new thread */
  TM_HEAP_EXITING, /* static heap of a thread whose heap was torn down */
  TM_HEAP_DEAD,    /* abandoned unsafely after fork: never touched again */
};

/* Per class, a LIFO of blocks the owner freed, linked through word 0 of the
 * blocks (word 1 holds the free key): malloc hands back the most recently
 * freed, cache-hot block first, and a hit touches only this 16-byte head and
 * the block itself. Cached blocks still count as used in their span (their
 * bitmap bits are clear, so no page holding one is ever given back): they
 * reach the bitmap when the cache overflows or the heap is collected.
 *
 * A class's capacity is TM_CACHE_BASE blocks (16 above 8 KiB). A cache
 * that overflows moves its whole list to the heap's stash (below), where the
 * next miss finds it, and where the pager can reach it under the lock: a
 * cached block can pin its page, so the caches stay small (capacities that
 * grew to 1 MiB per heap let the two blocked threads of burst_idle keep 30 MB
 * resident that went back before; doc/design.md). The fast paths work on the
 * cache without the lock, inside the claim handshake (tm_claim_enter), so
 * that the pager can take an idle heap's caches too. TM_CACHE_LIMIT bounds every walk of a list linked as caches
 * link (a cache, an outbox, a stashed list). */
#define TM_CACHE_BASE 31
#define TM_CACHE_LIMIT 1024
typedef struct tm_cache {
  void *head;
  _Atomic uint32_t n; /* blocks on the list; relaxed atomic: the census reads it */
  uint32_t cap;       /* its capacity (0 on static heaps) */
} tm_cache;

/* The owner's reads and writes of n are plain loads and stores (relaxed). */
TM_INLINE unsigned tm_cache_n(const tm_cache *k) {
  return atomic_load_explicit(&((tm_cache *)k)->n, memory_order_relaxed);
}
TM_INLINE void tm_cache_set_n(tm_cache *k, unsigned n) {
  atomic_store_explicit(&k->n, n, memory_order_relaxed);
}

/* Per class, the blocks of other heaps' spans this thread freed (src/
 * outbox.c), linked as a cache is. The owner pushes without the heap's lock
 * while no pager claims it (busy, claim); everything else happens
 * under the lock, so that the pager can send an idle thread's on. A malloc
 * that finds its cache empty takes them first. Like cached blocks, they
 * count as used in their spans. */
typedef struct tm_outbox {
  void *head;
  _Atomic uint32_t n; /* relaxed atomic: the pager and the census read it */
  uint32_t cap;       /* the class's cache capacity, at most TM_OUTBOX_BYTES of blocks */
} tm_outbox;
/* What one outbox may hold: its blocks pin pages of other heaps, which
 * those heaps cannot reuse meanwhile (rptest's peak RSS grew by 45% with
 * outboxes as large as the caches, up to 31 blocks of 8 KiB). */
#define TM_OUTBOX_BYTES ((size_t)64 << 10)

/* Per class, the lists a cache let go of when frees overflowed it (src/
 * stash.c), kept whole under the heap's lock: a malloc that finds its cache
 * empty takes the newest back; the pager sends an idle heap's back to the
 * spans. The lists live in descriptors in the heap (stash_lists), chained
 * by index + 1 from stash_top[class], newest first. */
typedef struct tm_stash_list {
  void *head;    /* linked as caches link */
  uint32_t n;    /* its blocks */
  uint8_t next;  /* the next older list of the class (index + 1), 0 at the end */
} tm_stash_list;
/* Descriptors per heap (a bit each in stash_used), and the bytes of blocks
 * all the lists of a heap may hold: the memory an active thread keeps for
 * its next burst beyond its caches; an idle one's goes back. Per thread, so
 * a program of many busy threads pays it many times: with 1 MiB, rocksdb's
 * (db_bench, 2 threads and RocksDB's own) peak RSS was 228-265 MB against
 * 218-222 MB without a stash; with 256 KiB, 213-219 MB. glibc-simple gave
 * up a little for it: 1.08x the old flush against 1.12x. */
#define TM_STASH_LISTS 128
#define TM_STASH_BYTES ((size_t)256 << 10)
/* A heap that thrashes (a class's list found no room, and the class then
 * refilled from its spans: the blocks went to the bitmaps and came back out
 * of them) doubles its budget, up to 4 times the base (src/stash.c); a
 * scavenge that finds no overflow since the last one halves it again. */
#define TM_STASH_GROW_MAX 2

/* A class that none of the last 64 slow paths of its heap were for is cold:
 * its stash makes room for a class in use (src/stash.c), and before the
 * heap takes new slices its cache, stash and empty spans go back
 * (tm_heap_release_cold). */
#define TM_CLASS_COLD_AGE 64u
/* One none of the last 4,096 were for is gone: its current span and spare
 * retire too, if empty (tm_heap_release_cold). */
#define TM_CLASS_GONE_AGE 4096u

/* What the pager asks of a heap's owner (flush_request), honoured on its
 * next slow path. */
enum { TM_ASK_NONE = 0, TM_ASK_SCAVENGE = 1, TM_ASK_FLUSH = 2 };

/* The fast paths touch only cache[]. Everything below it changes only under
 * `lock`: the owner takes it on every slow path, the pager only tries it. */
typedef struct tm_heap {
  tm_cache cache[TM_NUM_CLASSES]; /* the owner, without the lock inside the claim handshake */
  tm_span *cur[TM_NUM_CLASSES];   /* refills take blocks from here; never NULL */
  tm_queue partial[TM_NUM_CLASSES];
  tm_queue full;
  tm_outbox outbox[TM_NUM_CLASSES];
  uint8_t stash_top[TM_NUM_CLASSES]; /* per class, the newest list (index + 1), 0 if none */
  tm_stash_list stash_lists[TM_STASH_LISTS];
  uint64_t stash_used[TM_STASH_LISTS / 64]; /* descriptors in use */
  size_t stash_bytes;  /* bytes of blocks in all stashed lists */
  uint32_t class_clock; /* the owner's slow paths, to age its classes (tm_class_touch) */
  uint32_t class_seen[TM_NUM_CLASSES]; /* per class, class_clock at its last slow path */
  uint8_t stash_grow;     /* the budget is TM_STASH_BYTES << stash_grow */
  uint8_t stash_overflow; /* the class (+ 1) whose list last found no room, 0 if none */
  uint8_t stash_overflowed; /* a list found no room since the last scavenge */
  /* the claim handshake (src/outbox.c): the owner works on its caches or
   * pushes on an outbox without the lock while busy; the pager, holding the
   * lock, may touch them while it holds the claim */
  _Atomic uint8_t busy;
  _Atomic uint8_t claim;
  uint16_t misses[TM_NUM_CLASSES]; /* refills per class since the last scavenge */
  tm_span *_Atomic remote_spans; /* spans that received cross-thread frees */
  _Atomic uint32_t lock_seq;     /* the slow-path lock, odd while held (heap.c) */
  _Atomic uint32_t state;        /* enum tm_heap_state; the pager reads it */
  _Atomic uint32_t flush_request; /* TM_ASK_*: the pager wants cached blocks back */
  uint32_t check_count;           /* debug: periodic consistency checks */
  uint32_t cache_gen;             /* tm_cache_gen its cache capacities follow */
  uint32_t activity;       /* the owner's slow paths (under lock): the pager's sign of life */
  /* the trimmer's view of the heap (src/trim.c; one trimmer at a time) */
  uint32_t trim_seq;       /* lock_seq after its last visit */
  uint32_t trim_activity;  /* activity at its last visit */
  uint32_t trim_change_ms; /* when it last saw the heap active */
  uint32_t trim_visit_ms;  /* when it last looked at the spans */
  uint8_t trim_done;       /* idle, and everything it could do is done */
  uint8_t trim_flush_asked;
  struct tm_heap *next_all;  /* list of every heap ever made (never freed) */
  struct tm_heap *next_pool; /* pool of heaps of exited threads */
} tm_heap;

/* A slow path for class c (h->lock held): it is in use, every other class
 * ages by one. */
TM_INLINE void tm_class_touch(tm_heap *h, unsigned c) { h->class_seen[c] = ++h->class_clock; }
/* Slow paths since class c's last one (unsigned: right across wraps). */
TM_INLINE uint32_t tm_class_age(const tm_heap *h, unsigned c) { return h->class_clock - h->class_seen[c]; }

TM_INLINE unsigned tm_heap_state(const tm_heap *h) {
  return atomic_load_explicit(&((tm_heap *)h)->state, memory_order_relaxed);
}
TM_INLINE void tm_heap_set_state(tm_heap *h, unsigned st) {
  atomic_store_explicit(&h->state, st, memory_order_relaxed);
}

/* ---- globals (heap.c, segment.c, options.c) ------------------------------ */
extern tm_span tm_empty_span;
extern tm_heap tm_heap_empty;
extern __thread tm_heap *tm_heap_tls __attribute__((tls_model("initial-exec")));
extern _Atomic uintptr_t tm_reg_top[(size_t)1 << TM_REG_TOP_BITS];
extern _Atomic uint8_t tm_reg_zero_leaf[];

typedef struct tm_options {
  int abort_on_error;
  int segment_cache;
  int show_stats;
  int verbose;
} tm_options;
extern tm_options tm_opt;
extern atomic_size_t tm_huge_threshold_v; /* blocks above this get their own mapping */
/* n rounded up to whole pages. Within a page of SIZE_MAX it wraps to a
 * value below n: callers that take sizes from the program compare. */
TM_INLINE size_t tm_page_round(size_t n) { return (n + TM_PAGE_SIZE - 1) & ~(TM_PAGE_SIZE - 1); }

TM_INLINE size_t tm_huge_threshold(void) {
  return atomic_load_explicit(&tm_huge_threshold_v, memory_order_relaxed); /* mallopt may change it */
}

/* statistics, updated on slow paths only */
typedef struct tm_counters {
  atomic_size_t mapped_bytes;
  atomic_size_t segment_count;
  atomic_size_t cached_segments;
  atomic_size_t span_bytes;
  atomic_size_t large_bytes;
  atomic_size_t huge_bytes;
  atomic_size_t huge_count;
  atomic_size_t huge_count_max; /* the most huge blocks live at once (glibc's max mmap regions) */
  atomic_size_t huge_bytes_max; /* the most huge bytes live at once (max mmap bytes) */
  atomic_size_t heap_count;
  atomic_size_t segments_released;
  atomic_size_t purged_bytes;      /* given back with madvise, all kinds */
  atomic_size_t span_pages_purged; /* of which pages inside live spans */
  atomic_size_t refault_bytes;     /* purged pages of live spans handed out again */
  atomic_size_t huge_cached_bytes; /* freed huge mappings kept for reuse */
  atomic_size_t huge_reused;       /* huge blocks served from that cache */
  atomic_size_t slices_reused;     /* purged free slices taken again (bytes) */
  atomic_size_t outbox_claims;     /* the pager took an idle thread's outboxes (and caches) */
  atomic_size_t outbox_claims_busy; /* ... found the owner pushing, came back */
  atomic_size_t caches_claimed;   /* class caches the pager flushed under a claim */
} tm_counters;

/* Where the heap's bytes sit (census.c). */
typedef struct tm_census {
  size_t cached;         /* blocks in thread caches */
  size_t span_used;      /* blocks in use in small spans (live, cached, in flight) */
  size_t span_free;      /* free blocks in small spans */
  size_t pages_unpurged; /* wholly free pages of live spans, still resident */
  size_t pages_purged;   /* pages of live spans given back */
  size_t slices_dirty;   /* free slices that may be resident (or being purged) */
  size_t slices_purged;  /* free slices given back */
  size_t header;         /* segment header pages in use */
  size_t huge_cached;    /* freed huge mappings kept, resident */
  size_t resident;       /* all of the heap that may be resident */
} tm_census;
void tm_census_take(tm_census *c);
extern tm_counters tm_stat;

#define TM_STAT_ADD(f, v) atomic_fetch_add_explicit(&tm_stat.f, (v), memory_order_relaxed)
#define TM_STAT_SUB(f, v) atomic_fetch_sub_explicit(&tm_stat.f, (v), memory_order_relaxed)
/* A high-water mark: *max = the larger of *max and v. */
TM_INLINE void tm_stat_raise(atomic_size_t *max, size_t v) {
  size_t cur = atomic_load_explicit(max, memory_order_relaxed);
  while (cur < v && !atomic_compare_exchange_weak_explicit(max, &cur, v, memory_order_relaxed, memory_order_relaxed)) {
  }
}
#define TM_STAT_GET(f) atomic_load_explicit(&tm_stat.f, memory_order_relaxed)

/* ---- size classes (size_class.c) ----------------------------------------- */
extern const uint8_t tm_class_table[129]; /* class of sizes up to 2048, by 16 bytes */
extern const uint8_t tm_cache_slot_table[129]; /* the same, times 2 (tm_malloc_small) */
TM_INLINE unsigned tm_size_class_calc(size_t n) {
  if (n <= 128) return n ? (unsigned)((n - 1) >> 4) : 0;
  size_t s = n - 1;
  unsigned e = 63u - (unsigned)__builtin_clzl(s);
  return 8u + ((e - 7u) << 3) + (unsigned)((s >> (e - 3u)) & 7u);
}
TM_INLINE unsigned tm_size_class(size_t n) {
  if (TM_LIKELY(n <= 2048)) return tm_class_table[(n + 15) >> 4];
  return tm_size_class_calc(n);
}
size_t tm_class_size(unsigned c);

/* ---- OS and registry (os.c) ---------------------------------------------- */
enum { TM_MAP_RESERVE = 0, TM_MAP_CHARGED = 1 }; /* segments; huge blocks (os.c) */
void *tm_os_map(size_t size, unsigned how);
void *tm_os_map_aligned(size_t size, size_t align, unsigned how);
void tm_os_unmap(void *p, size_t size);
bool tm_os_guard_page(void *page); /* PROT_NONE; false if the kernel refused */

/* Two loads: a top entry holds its leaf's offset from a leaf of zeroes, so
 * an unused entry is 0 and reads that leaf (no branch, and the table is
 * .bss, with no relocation to apply at load). Acquire on the entry: a reader
 * that sees a new leaf sees it zeroed (free on x86). */
#define TM_REG_LEAF_SIZE ((size_t)1 << TM_REG_LEAF_BITS)
/* The registry index of the region holding a, an address below 2^48 (its
 * top entry: index >> leaf bits, its byte in the leaf: index & leaf mask). */
TM_INLINE uintptr_t tm_reg_index(uintptr_t a) {
  return (a >> TM_SEG_SHIFT) & (((uintptr_t)1 << TM_REGISTRY_BITS) - 1);
}
TM_INLINE _Atomic uint8_t *tm_reg_leaf(uintptr_t top_index, memory_order mo) {
  return (_Atomic uint8_t *)((uintptr_t)tm_reg_zero_leaf + atomic_load_explicit(&tm_reg_top[top_index], mo));
}
/* Any pointer at all: one above 2^48 (kernel, non-canonical, or tagged in
 * its top byte) is not ours, rather than aliasing a region below, which a
 * mask alone would do. */
TM_INLINE unsigned tm_registry_get(uintptr_t a) {
  uintptr_t top = a >> (TM_SEG_SHIFT + TM_REG_LEAF_BITS); /* the range check is on it (one shift less) */
  if (TM_UNLIKELY(top >= ((uintptr_t)1 << TM_REG_TOP_BITS))) return TM_REG_NONE;
  _Atomic uint8_t *leaf = tm_reg_leaf(top, memory_order_acquire);
  return atomic_load_explicit(&leaf[(a >> TM_SEG_SHIFT) & (TM_REG_LEAF_SIZE - 1)], memory_order_relaxed);
}
/* Set the byte of a region whose leaf exists (tm_os_map_aligned made it). */
void tm_registry_set(uintptr_t region_base, unsigned value);
/* header of the segment holding the block p starts, or NULL if not ours */
tm_segment *tm_segment_of(const void *p);

/* ---- segments, slices, orphans (segment.c), large blocks (large.c) ------ */
extern tm_lock_t tm_global_lock;
tm_span *tm_slices_alloc(unsigned nslices, bool bitmap); /* global lock held (may drop it) */
void tm_slices_free(tm_span *s);                          /* global lock held */
bool tm_slices_extend(tm_span *s, unsigned need);         /* global lock held */
void tm_slices_trim(tm_span *s, unsigned need);           /* global lock held */
void tm_slices_take_for_purge(struct tm_segment *seg, uint64_t m);
void tm_slices_purged(struct tm_segment *seg, uint64_t m, bool purged);
uint64_t tm_run_mask(unsigned idx, unsigned n);
struct tm_segment *tm_segments_first(void);
struct tm_segment *tm_segments_empty_oldest(unsigned node);
size_t tm_segments_empty_count(void);
void tm_segment_forget(struct tm_segment *seg);
void tm_orphan_push(tm_span *s);            /* global lock held */
tm_span *tm_orphan_take(unsigned c, unsigned node); /* global lock held */
tm_span *tm_orphans_first(unsigned c);      /* global lock held */
size_t tm_orphans_sweep(void);              /* global lock held */
void *tm_meta_alloc(size_t size);           /* global lock held; zeroed, never freed */
void tm_global_reset_after_fork(void);
void tm_segments_after_fork(void);
void *tm_large_alloc(size_t size, size_t align);
void tm_large_free(tm_span *s);
bool tm_large_resize(tm_span *s, size_t newsize);
/* Large and huge blocks come and go without a heap's lock, so no heap sees
 * them: this counts them, for the pager to tell a process busy with them
 * from an idle one (src/trim.c). */
extern atomic_uint tm_large_ops;
TM_INLINE void tm_large_activity(void) { atomic_fetch_add_explicit(&tm_large_ops, 1, memory_order_relaxed); }
int tm_segments_check(void);

TM_INLINE tm_segment *tm_segment_base(const void *p) {
  return (tm_segment *)((uintptr_t)p & ~(uintptr_t)TM_SEG_MASK);
}
TM_INLINE tm_span *tm_span_of(tm_segment *seg, const void *p) {
  return &seg->spans[seg->slice_map[((uintptr_t)p & TM_SEG_MASK) >> TM_SLICE_SHIFT]];
}
/* The descriptor of the slice holding p, without the slice map: one
 * dependent load less on every free (the slice map's byte). It is p's
 * span's when p lies in the span's first slice. The later slices of a small
 * span (four slices, classes above 8 KiB) hold a mirror of what the free
 * fast path reads (tm_span_mirror: heap, start, block size, capacity,
 * divisor, class); every other slice that starts no span has heap 0
 * (tm_slices_clear_owners), so the fast path, which compares heap with its
 * own, leaves for the slow path there, which looks at the span itself
 * (tm_free_resolve). */
TM_INLINE tm_span *tm_slice_desc(tm_segment *seg, const void *p) {
  return &seg->spans[((uintptr_t)p & TM_SEG_MASK) >> TM_SLICE_SHIFT];
}
TM_INLINE tm_segment *tm_segment_of_span(tm_span *s) {
  return tm_segment_base(s);
}
TM_INLINE struct tm_heap *tm_span_owner(tm_span *s) {
  return (struct tm_heap *)(atomic_load_explicit(&s->heap, memory_order_acquire) & ~TM_HEAP_FULL_TAG);
}
/* The owner (and the full tag) go into the mirrors of a span of several
 * slices too (tm_slice_desc): a large block's get 0, as they had; a huge
 * block's span counts one slice. */
TM_INLINE void tm_span_set_owner(tm_span *s, struct tm_heap *h, bool full) {
  uintptr_t v = (uintptr_t)h | (full ? TM_HEAP_FULL_TAG : 0);
  atomic_store_explicit(&s->heap, v, memory_order_release);
  if (TM_UNLIKELY(s->slice_count > 1) && s->slice_count <= TM_SPAN_MASK_SLICES)
    for (unsigned j = 1; j < s->slice_count; j++) atomic_store_explicit(&s[j].heap, v, memory_order_release);
}
/* The free bitmap of a small span (1 = free). */
TM_INLINE uint64_t *tm_span_bits(tm_span *s) { return s->bits; }
TM_INLINE unsigned tm_span_kind(tm_span *s) {
  return atomic_load_explicit(&s->kind, memory_order_relaxed);
}

/* ---- spans (span.c) ------------------------------------------------------ */
/* Index of the block starting at p, by exact division: multiplying by the
 * inverse of the odd part and rotating by the power of two gives the index
 * when p - start is a multiple of block_size, and a value above any capacity
 * otherwise (Granlund-Montgomery). So `index < capacity` checks at once that
 * p is inside the span and is the exact start of a block. */
TM_INLINE uint64_t tm_span_index(const tm_span *s, const void *p) {
  uint64_t x = ((uint64_t)(uintptr_t)p - (uint64_t)(uintptr_t)s->start) * s->div_inv;
  unsigned k = s->div_shift;
  return (x >> k) | (x << ((64 - k) & 63));
}

void tm_span_init_small(tm_span *s, unsigned c, struct tm_heap *owner);
bool tm_span_refresh(tm_span *s); /* recompute summary; true if a block is free */
void tm_span_collect(tm_span *s); /* move thread_free blocks into the bitmap */
void tm_span_collect_word(tm_span *s, uintptr_t taken);
bool tm_span_free_block(tm_span *s, void *p, uint32_t idx); /* false: double free, reported */
void tm_span_retire(tm_span *s);  /* give the slices back (global lock NOT held) */
size_t tm_span_free_slices(tm_span *s); /* its last step (global lock held); returns the bytes */
bool tm_class_needs_bitmap(unsigned c, unsigned nslices);
/* The index of the block starting at p, if p starts a block of s. */
TM_INLINE bool tm_span_block_index(tm_span *s, const void *p, uint32_t *idx) {
  uint64_t i = tm_span_index(s, p);
  if (i >= s->capacity) return false;
  *idx = (uint32_t)i;
  return true;
}
int tm_span_check(tm_span *s, tm_heap *expected_owner);
void tm_span_resync(tm_span *s); /* after fork: recount used, rebuild summary */
tm_span_pages *tm_span_pg(tm_span *s);
uint64_t tm_span_free_pages(tm_span *s);
unsigned tm_span_reserve_pages(tm_span *s, uint64_t pages);
uintptr_t tm_span_page_addr(tm_span *s, unsigned page);

/* Take up to n free blocks, lowest address first, into out[]; returns how
 * many. Writes no block memory (the caller clears the free key of a block
 * it hands out). Slow paths only (h->lock, or the global lock). */
unsigned tm_span_pop_batch(tm_span *s, void **out, unsigned n);
TM_INLINE void *tm_span_pop(tm_span *s) {
  void *p;
  if (!tm_span_pop_batch(s, &p, 1)) return NULL;
  ((uint64_t *)p)[1] = 0;
  return p;
}

/* ---- the cross-thread handoff (remote.c) -------------------------------- */
void tm_remote_free(tm_span *s, void *p);
void tm_remote_free_chain(tm_span *s, void *first, void *last);
void tm_span_give_back(tm_span *s);
uintptr_t tm_span_take_remote(tm_span *s);
uintptr_t tm_notice_take(tm_span *s, bool forced);
unsigned tm_notice_close(tm_span *s, bool forced);
void tm_notice_open(tm_span *s);
void tm_notice_init(tm_span *s, bool owned);
unsigned tm_notice_state(const tm_span *s);
bool tm_span_has_remote(const tm_span *s);
tm_span *tm_remote_list_take(struct tm_heap *h);

/* ---- freed blocks going back to their spans (outbox.c) ------------------- */
unsigned tm_blocks_release(tm_heap *h, void *list, unsigned max);
/* the stash (stash.c); h->lock held */
bool tm_stash_put(tm_heap *h, unsigned c, void *list, unsigned n);
size_t tm_stash_budget(const tm_heap *h);
bool tm_stash_evict_cold(tm_heap *h);
void tm_stash_refilled(tm_heap *h, unsigned c);
void tm_stash_scavenged(tm_heap *h);
void *tm_stash_take(tm_heap *h, unsigned c);
void tm_stash_flush(tm_heap *h, unsigned c);
void tm_stashes_flush(tm_heap *h);
bool tm_stash_holds(const tm_heap *h, unsigned c, const void *p);
int tm_stash_check(tm_heap *h);
void tm_outbox_free(tm_span *s, void *p);
void tm_outbox_flush(tm_heap *h, unsigned c, unsigned keep);
void tm_outboxes_flush(tm_heap *h);
void *tm_outbox_take(tm_heap *h, unsigned c, unsigned min);
void *tm_list_cut(void **head, unsigned n, unsigned *kept);
void *tm_cache_take_list(tm_cache *k, void *list, unsigned n);
unsigned tm_check_block_list(tm_heap *h, unsigned c, void *b, const char *what);
bool tm_list_holds(const void *b, const void *p);
size_t tm_outbox_bytes(const tm_heap *h);
TM_INLINE unsigned tm_outbox_n(const tm_outbox *o) {
  return atomic_load_explicit(&((tm_outbox *)o)->n, memory_order_relaxed);
}
/* The owner's side of the claim handshake, around every cache operation
 * outside the heap's lock (the malloc and free fast paths) and the outbox's
 * push: busy, a compiler barrier (the pager's membarrier(2) is the CPU
 * barrier), then a look at the claim; a claimed heap's operation takes the
 * lock instead, which the claiming pager holds. */
TM_INLINE void tm_claim_enter(tm_heap *h) {
  atomic_store_explicit(&h->busy, 1, memory_order_relaxed);
  atomic_signal_fence(memory_order_seq_cst);
}
/* acquire: a claim of 0 that a pager's unclaim wrote brings what it did */
TM_INLINE bool tm_claimed(tm_heap *h) { return atomic_load_explicit(&h->claim, memory_order_acquire) != 0; }
/* release: a pager that sees 0 sees the operation */
TM_INLINE void tm_claim_leave(tm_heap *h) { atomic_store_explicit(&h->busy, 0, memory_order_release); }
/* What the pager may touch of an idle heap (tm_heap_claim). */
enum { TM_CLAIM_OUTBOXES = 1, TM_CLAIM_CACHES = 2, TM_CLAIM_HELD = 4 };
unsigned tm_heap_claim(tm_heap *h);
void tm_heap_flush_claimed_caches(tm_heap *h);
void tm_heap_unclaim(tm_heap *h);
void tm_outbox_enable_fast(void);
void tm_outbox_after_fork(void);

/* ---- heaps (heap.c) and their threads (thread.c) ------------------------- */
extern tm_heap *_Atomic tm_all_heaps;
void tm_init(void);
tm_heap *tm_heap_create(void);
tm_heap *tm_heap_new_for_thread(void);
void tm_heap_lock(tm_heap *h);
void tm_heap_lock_quiet(tm_heap *h);
void tm_heap_unlock_quiet(tm_heap *h);
bool tm_heap_trylock(tm_heap *h);
bool tm_heap_locked(const tm_heap *h);
void tm_heap_unlock(tm_heap *h);
void tm_heap_each_span(tm_heap *h, void (*fn)(tm_span *s, void *arg), void *arg);
void tm_heap_drain_remote(tm_heap *h, bool forced);
void tm_heap_reconsider(tm_heap *h, tm_span *s, bool all);
void tm_heap_flush_caches(tm_heap *h);
bool tm_heap_is_shared(const tm_heap *h);
void tm_heap_shared_after_fork(void);
void *tm_alloc_slow(tm_heap *h, unsigned c);
void tm_free_cache_full(tm_heap *h, void *p);
void tm_free_suspect(void *p, const char *who);
void tm_free_local_bad(void *p);
bool tm_block_is_free(tm_heap *h, tm_span *s, void *p);

/* Per-process secrets, drawn from the kernel's AT_RANDOM bytes in tm_init
 * (thread.c) before the first block is handed out, and never changed (a
 * fork child keeps them). */
extern uint64_t tm_free_key_v;
extern uintptr_t tm_link_key;

/* Every free writes this into word 1 of the block (as glibc's tcache does
 * with its key), allocation clears it. Finding it already there on free
 * means a probable double free, confirmed on a slow path: the block is in
 * the cache or its bitmap bit is set. Random per process, so no program
 * stores it by design and none can forge it; data that equals it by chance
 * (2^-64) only costs that check. */
TM_INLINE uint64_t tm_free_key(void) { return tm_free_key_v; }

/* In the hardened build, cache links are stored encoded, as glibc's
 * safe-linking does, with a random key besides: word 0 of a cached block
 * holds next ^ (its own address >> 12) ^ tm_link_key. An overflow or
 * use-after-free that writes a plain pointer there decodes to a misaligned
 * address, which the pop catches (tm_cache_corrupt), instead of handing out
 * memory the program chose. Not in the default build: it cost dist_app
 * 1.0-1.3% (paired medians of 31 and 61 alternations), above the 1% it was
 * allowed (doc/results.md). -DTIDE_SAFE_LINKS=1 turns it on alone. */
#ifndef TIDE_SAFE_LINKS
#define TIDE_SAFE_LINKS TIDE_HARDENED
#endif
/* The low 4 bits of the mask are always set: a stored link always has them
 * set, so any 16-aligned value written over it (a plain pointer, zeroes)
 * decodes misaligned and is caught every time, not 15 times in 16. */
TM_INLINE uintptr_t tm_link_mask(const void *b) {
  return TIDE_SAFE_LINKS ? (((uintptr_t)b >> 12) ^ tm_link_key) | (TM_ALIGN - 1) : 0;
}
TM_INLINE void *tm_link_get(const void *b) { return (void *)(*(const uintptr_t *)b ^ tm_link_mask(b)); }
TM_INLINE void tm_link_set(void *b, const void *next) { *(uintptr_t *)b = (uintptr_t)next ^ tm_link_mask(b); }

/* The outbox's common push: o holds blocks and has room, and no pager
 * claims the outboxes. False if the lock is needed. The count is read again
 * after the handshake: one read before it could predate a pager's send-back
 * that finished just before the claim was looked at, and the push would
 * count from a length the list no longer has (or fill an empty outbox
 * without the lock). */
extern atomic_bool tm_outbox_fast;
TM_INLINE bool tm_outbox_push_fast(tm_heap *h, tm_outbox *o, void *p) {
  if (!atomic_load_explicit(&tm_outbox_fast, memory_order_relaxed)) return false;
  unsigned n = tm_outbox_n(o), cap = o->cap;
  if (n == 0 || n >= cap) return false; /* the slow path for sure: no handshake */
  /* the CPU may still move busy's store after the claim's load: the
   * pager's membarrier is what forbids that, by a barrier on this CPU in
   * between */
  tm_claim_enter(h);
  bool pushed = false;
  if (TM_LIKELY(!tm_claimed(h))) {
    n = tm_outbox_n(o);
    if (TM_LIKELY(n != 0 && n < cap)) {
      TM_ASSERT(p != o->head);
      tm_link_set(p, o->head);
      o->head = p;
      atomic_store_explicit(&o->n, n + 1, memory_order_relaxed);
      pushed = true;
    }
  }
  tm_claim_leave(h);
  return pushed;
}
void tm_outbox_free_marked(void *p);
/* A decoded link that cannot be a block (every block is 16-byte aligned). */
TM_INLINE bool tm_link_bad(const void *next) { return TIDE_SAFE_LINKS && ((uintptr_t)next & (TM_ALIGN - 1)) != 0; }
void *tm_cache_corrupt(tm_heap *h, unsigned c, void *top);
void *tm_malloc_claimed(tm_heap *h, unsigned c);
void tm_cache_check_heads(void);
/* M_PERTURB and MALLOC_PERTURB_, as glibc: a block is filled with the
 * byte's complement when handed out and with the byte when freed, so that
 * code reading uninitialized or freed memory misbehaves at once. While it is
 * on, every heap's cache capacity is 0: both fast paths fall to slow paths,
 * the only places that fill, and the default fast paths carry no test.
 * Heaps pick up a change at their next slow path (tm_cache_gen). */
extern atomic_int tm_perturb_v;
extern atomic_uint tm_cache_gen;
TM_INLINE int tm_perturb(void) { return atomic_load_explicit(&tm_perturb_v, memory_order_relaxed); }
void tm_perturb_set(int byte);
void tm_perturb_alloc(void *p, size_t n);
void tm_perturb_free(void *p, size_t n);
uint32_t tm_cache_cap(unsigned c);
void tm_heap_set_caps(tm_heap *h);
void tm_heap_catch_up(void);
/* The hardened build's block trailers (guard.c). */
size_t tm_guard_size(size_t n);
void *tm_guard_seal(void *p, size_t n);
void *tm_guard_seal_in(void *p, size_t n, size_t usable); /* usable: p's usable size */
bool tm_guard_check(const char *who, void *p);                         /* looks p up */
bool tm_guard_check_block(const char *who, void *p, size_t usable); /* p's usable size known */
size_t tm_guard_requested(const void *p);
void tm_free_other(void *p, tm_span *s, const char *who);
/* A small block of another heap, found at an index of its span, about to be
 * freed (tm_free_other, free()'s shortcut tm_free_resolve): the hardened
 * guard, then the free key (a second free, reported). False once reported. */
TM_INLINE bool tm_free_foreign_ok(void *p, size_t block_size, const char *who) {
  if (TIDE_HARDENED && !tm_guard_check_block(who, p, block_size)) return false;
  if (TM_UNLIKELY(((uint64_t *)p)[1] == tm_free_key())) {
    tm_free_suspect(p, who);
    return false;
  }
  return true;
}
/* ... and then marked free: the debug fill, M_PERTURB's, and the free key,
 * with which a second free, from any thread, is caught above. */
TM_INLINE void tm_free_foreign_mark(void *p, size_t block_size) {
#if TIDE_DEBUG
  memset(p, 0xdf, block_size);
#endif
  if (TM_UNLIKELY(tm_perturb())) tm_perturb_free(p, block_size);
  ((uint64_t *)p)[1] = tm_free_key();
}
void tm_free_slow(void *p, const char *who);
void tm_heap_collect_all(tm_heap *h);
void tm_heap_retire_empty(tm_heap *h, bool outboxes);
tm_heap *tm_heap_shared_get(void);
int tm_heap_check(tm_heap *h);
int tm_heap_check_locked(tm_heap *h);
size_t tm_stranded_spans(size_t *blocks_out); /* test hook */

/* ---- huge blocks (huge.c) ------------------------------------------------ */
void *tm_huge_alloc(size_t size, size_t align, bool zero);
void tm_huge_free(tm_segment *seg, tm_span *s);
void tm_huge_after_fork(void);
void *tm_huge_realloc(tm_segment *seg, tm_span *s, void *p, size_t newsize);

/* ---- generic allocation (alloc.c, aligned.c) ----------------------------- */
void *tm_malloc(size_t size);
void *tm_malloc_in_class(unsigned c);
void *tm_malloc_aligned(size_t size, size_t align);
void tm_free(void *p);
size_t tm_usable_size(const void *p);

/* ---- reporting (report.c) and options (options.c) ------------------------ */
void tm_report_invalid(const char *who, const void *p, const char *what);
void tm_warn(const char *msg, const char *detail);
int tm_check_problem(const char *what, const void *where); /* reports, returns 1 */
void tm_write_str(int fd, const char *s);
/* Bounded line building on a stack buffer: the allocator cannot use stdio. */
typedef struct tm_line {
  char *buf;
  size_t cap, len;
} tm_line;
#define TM_LINE(name, storage) tm_line name = {(storage), sizeof(storage), 0}
void tm_line_add(tm_line *l, const char *s);
void tm_line_add_n(tm_line *l, const char *s, size_t n);
void tm_line_add_u64(tm_line *l, uint64_t v);
void tm_line_add_hex(tm_line *l, uint64_t v);
void tm_options_load(void);

/* ---- back end (pager/) -------------------------------------------------- */
#include "pager.h"

#endif
