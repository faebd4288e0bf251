/* The public allocation entry points and their fast paths.
 *
 * malloc: size class -> pop the thread's cache of that class; on a miss the
 *         slow path refills the cache from a span (heap.c).
 * free:   registry byte -> segment header -> span descriptor; the owner
 *         pushes the block on its cache (the slow path moves the overflow
 *         into the bitmap); anyone else pushes it on the span's thread_free
 *         list (remote.c). No lock, no system call, no shared cache line
 *         written on either fast path. */
#include "internal.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static TM_NOINLINE void *tm_malloc_big(size_t size, bool zero) {
  if (size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  tm_init();
  tm_pager_maybe_start(); /* a malloc path: a thread may be created here */
  if (TIDE_SAFE_LINKS) tm_cache_check_heads();
  if (size <= tm_huge_threshold()) {
    void *p = tm_large_alloc(size, TM_ALIGN);
    if (p) {
      if (zero)
        memset(p, 0, size);
      else
        tm_perturb_alloc(p, size);
      return p;
    }
  }
  return tm_huge_alloc(size, TM_ALIGN, zero); /* fresh mappings are zero */
}

/* A block from the cache k of h: its top, else the slow path. The class is
 * k's place among h's caches, worked out only off the fast path. The pop
 * runs inside the claim handshake (tm_claim_enter), so that the pager can
 * take the caches of a thread that went idle or blocked. */
TM_INLINE void *tm_malloc_from(tm_heap *h, tm_cache *k) {
  tm_claim_enter(h);
  if (TM_UNLIKELY(tm_claimed(h))) { /* before any look at the cache: the pager is flushing it */
    tm_claim_leave(h);
    return tm_malloc_claimed(h, (unsigned)(k - h->cache));
  }
  void **top = k->head;
  if (TM_LIKELY(top != NULL)) {
    void *next = tm_link_get(top);
    if (TM_UNLIKELY(tm_link_bad(next))) return tm_cache_corrupt(h, (unsigned)(k - h->cache), top);
    k->head = next;
    tm_cache_set_n(k, tm_cache_n(k) - 1);
    tm_claim_leave(h);
    top[1] = NULL; /* no longer marked free (see tm_free_key) */
#if TIDE_DEBUG
    memset(top, 0xa5, tm_class_size((unsigned)(k - h->cache)));
#endif
    __asm__("" : "+r"(top)); /* (keeps gcc from a register move before the return) */
    return top;
  }
  tm_claim_leave(h);
  return tm_alloc_slow(h, (unsigned)(k - h->cache));
}

TM_INLINE void *tm_malloc_class(unsigned c) {
  tm_heap *h = tm_heap_tls;
  return tm_malloc_from(h, &h->cache[c]);
}

/* Up to 2 KiB: the table gives the cache's place in the heap in 8-byte
 * units (twice the class), which the address scales for free: two
 * instructions fewer than class * sizeof(tm_cache). */
_Static_assert(sizeof(tm_cache) == 16, "tm_cache_slot_table counts caches in 8-byte units, two a cache");
TM_INLINE void *tm_malloc_small(size_t size) {
  unsigned slot = tm_cache_slot_table[(size + 15) >> 4];
  tm_heap *h = tm_heap_tls;
  return tm_malloc_from(h, (tm_cache *)((uintptr_t)h->cache + (uintptr_t)slot * 8));
}

TM_INLINE void *tm_malloc_inline(size_t size) {
  if (TM_LIKELY(size <= 2048)) return tm_malloc_small(size);
  if (TM_LIKELY(size <= TM_SMALL_MAX)) return tm_malloc_class(tm_size_class_calc(size));
  return tm_malloc_big(size, false);
}

void *tm_malloc_in_class(unsigned c) { return tm_malloc_class(c); }

void *tm_malloc(size_t size) { return tm_malloc_inline(size); }

/* p is in one of our segments, and the descriptor of its slice (d) names
 * another owner, or none, or the full tag. The common case first: a block
 * of another heap's small span, freed into this thread's outbox as
 * tm_free_other would (the same checks, on the descriptor), without the
 * slice map or two more calls: on xthread the free of another thread's
 * block took three times tcmalloc's samples. Everything else (an orphan's
 * block, our own full span, large, huge, bad pointers, an outbox that
 * needs the lock) goes on from p's span itself. */
static TM_NOINLINE void tm_free_resolve(void *p, tm_span *d, tm_heap *h) {
  uintptr_t owner = atomic_load_explicit(&d->heap, memory_order_relaxed) & ~TM_HEAP_FULL_TAG;
  /* a small span's (large and huge spans have no owner), whose fields the
   * descriptor holds or mirrors and which cannot change while p lives; an
   * outbox of 1 <= n < cap blocks, whose push may need no lock (M_PERTURB's
   * capacity is 0, and a thread without a heap has empty outboxes) */
  tm_outbox *o = owner && owner != (uintptr_t)h ? &h->outbox[d->size_class] : NULL;
  if (o && TM_LIKELY(tm_outbox_n(o) - 1u < o->cap - 1u) && !tm_perturb() &&
      TM_LIKELY(tm_span_index(d, p) < d->capacity)) {
    if (!tm_free_foreign_ok(p, d->block_size, "free")) return;
    tm_free_foreign_mark(p, d->block_size);
    if (TM_LIKELY(tm_outbox_push_fast(h, o, p))) return;
    return tm_outbox_free_marked(p);
  }
  tm_free_other(p, tm_span_of(tm_segment_base(p), p), "free");
}

/* Every unusual case leaves through a tail call, so the fast path needs no
 * stack frame. It starts at the descriptor of p's slice (tm_slice_desc):
 * p's span's, or its mirror in a later slice of a span of several, which
 * holds the fields read here; the slow paths look at the span itself. */
TM_INLINE void tm_free_inline(void *p) {
  if (TM_UNLIKELY(tm_registry_get((uintptr_t)p) != TM_REG_SEGMENT))
    return tm_free_slow(p, "free"); /* NULL, far huge blocks, foreign pointers */
  tm_span *s = tm_slice_desc(tm_segment_base(p), p);
  __asm__("" : "+r"(s)); /* keep s in a register: compilers otherwise recompute it per field */
  tm_heap *h = tm_heap_tls;
  if (TM_UNLIKELY(atomic_load_explicit(&s->heap, memory_order_relaxed) != (uintptr_t)h))
    return tm_free_resolve(p, s, h); /* other thread's, full, large, huge, bad */
  uint64_t idx = tm_span_index(s, p);
  if (TM_UNLIKELY(idx >= s->capacity)) return tm_free_local_bad(p);
  uint64_t *word = p;
  if (TM_UNLIKELY(word[1] == tm_free_key())) return tm_free_suspect(p, "free"); /* freed twice */
  if (TIDE_HARDENED && TM_UNLIKELY(!tm_guard_check_block("free", p, s->block_size))) return;
#if TIDE_DEBUG
  if (tm_block_is_free(h, tm_span_of(tm_segment_base(p), p), p)) return tm_report_invalid("free", p, "double free");
  memset(p, 0xdf, s->block_size);
#endif
  word[1] = tm_free_key();
  tm_cache *k = &h->cache[s->size_class];
  tm_claim_enter(h);
  unsigned n = tm_cache_n(k); /* once: the count is atomic, and the link store could alias it */
  if (TM_UNLIKELY(n >= k->cap) || TM_UNLIKELY(tm_claimed(h))) {
    tm_claim_leave(h);
    return tm_free_cache_full(h, p);
  }
  tm_link_set(p, k->head);
  k->head = p;
  tm_cache_set_n(k, n + 1);
  tm_claim_leave(h);
}

void tm_free(void *p) { tm_free_inline(p); }

static void *tm_calloc(size_t total) {
  if (total > TM_SMALL_MAX) return tm_malloc_big(total, true);
  void *p = tm_malloc_inline(total);
  if (p) memset(p, 0, total);
  return p;
}

size_t tm_usable_size(const void *p) {
  tm_segment *seg = tm_segment_of(p);
  if (!seg) return 0;
  tm_span *s = tm_span_of(seg, p);
  switch (tm_span_kind(s)) {
    case TM_SPAN_SMALL: {
      uint32_t idx;
      return tm_span_block_index(s, p, &idx) ? s->block_size : 0;
    }
    case TM_SPAN_LARGE:
    case TM_SPAN_HUGE:
      return p == s->start ? s->large_size : 0;
    default:
      return 0;
  }
}

static void *tm_realloc_move(void *p, size_t old_usable, size_t size) {
  void *q = tm_malloc_inline(size);
  if (!q) return NULL; /* errno is ENOMEM; p stays valid */
  memcpy(q, p, old_usable < size ? old_usable : size);
  tm_free_inline(p);
  return q;
}

/* p is not NULL, size is not 0. */
static void *tm_realloc(void *p, size_t size) {
  if (size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  tm_segment *seg = tm_segment_of(p);
  tm_span *s = seg ? tm_span_of(seg, p) : NULL;
  unsigned kind = s ? tm_span_kind(s) : TM_SPAN_NONE;
  uint32_t idx;
  switch (kind) {
    case TM_SPAN_SMALL:
      if (!tm_span_block_index(s, p, &idx)) break;
      /* keep the block while the new size still uses at least half of it */
      if (size <= s->block_size && (size > s->block_size / 2 || s->block_size <= 128)) return p;
      return tm_realloc_move(p, s->block_size, size);
    case TM_SPAN_LARGE:
      if (p != s->start) break;
      if (size > TM_SMALL_MAX && size <= tm_huge_threshold() && tm_large_resize(s, size)) return p;
      return tm_realloc_move(p, s->large_size, size);
    case TM_SPAN_HUGE:
      if (p != s->start) break;
      if (size > tm_huge_threshold()) {
        void *q = tm_huge_realloc(tm_segment_base(s), s, p, size);
        if (q) return q;
      }
      return tm_realloc_move(p, s->large_size, size);
    default:
      break;
  }
  tm_report_invalid("realloc", p, "invalid pointer");
  errno = EINVAL;
  return NULL;
}

/* ---- the entry points ------------------------------------------------------
 * The hardened build (src/guard.c) asks every block 8 bytes larger, seals
 * its end after allocating and checks it before resizing; free checks it
 * where it finds the block (tm_free_inline, tm_free_other), so free needs no
 * wrapper. */
#if TIDE_HARDENED
TM_INLINE void *tm_malloc_api(size_t size) {
  size_t g = tm_guard_size(size);
  if (TM_LIKELY(g <= TM_SMALL_MAX)) { /* the class tells the usable size: no lookup */
    unsigned c = tm_size_class(g);
    void *p = tm_malloc_class(c);
    return p ? tm_guard_seal_in(p, size, tm_class_size(c)) : NULL;
  }
  return tm_guard_seal(tm_malloc_big(g, false), size);
}

static void *tm_calloc_api(size_t total) { return tm_guard_seal(tm_calloc(tm_guard_size(total)), total); }

TM_API size_t malloc_usable_size(void *p) { return p ? tm_guard_requested(p) : 0; }

TM_API void *realloc(void *p, size_t size) {
  if (!p) return tm_malloc_api(size);
  if (!tm_guard_check("realloc", p)) {
    errno = EINVAL;
    return NULL;
  }
  if (size == 0) {
    tm_free_inline(p);
    return NULL;
  }
  return tm_guard_seal(tm_realloc(p, tm_guard_size(size)), size);
}
#else
TM_INLINE void *tm_malloc_api(size_t size) { return tm_malloc_inline(size); }

static void *tm_calloc_api(size_t total) { return tm_calloc(total); }

TM_API size_t malloc_usable_size(void *p) { return p ? tm_usable_size(p) : 0; }

TM_API void *realloc(void *p, size_t size) {
  if (!p) return tm_malloc_inline(size);
  if (size == 0) {
    tm_free_inline(p);
    return NULL;
  }
  return tm_realloc(p, size);
}
#endif

TM_API void *malloc(size_t size) { return tm_malloc_api(size); }

TM_API void free(void *p) { tm_free_inline(p); }

TM_API void free_sized(void *p, size_t size) {
  (void)size;
  tm_free_inline(p);
}

TM_API void free_aligned_sized(void *p, size_t align, size_t size) {
  (void)align;
  (void)size;
  tm_free_inline(p);
}

TM_API void cfree(void *p) { tm_free_inline(p); }

TM_API void *calloc(size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return tm_calloc_api(total);
}

TM_API void *reallocarray(void *p, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return realloc(p, total);
}

/* glibc-internal names some programs and libraries call directly. */
#ifndef TIDE_NO_LIBC_ALIASES /* set when the public names are renamed (scripts/sanitize.sh) */
TM_ALIAS_BEGIN
TM_API void *__libc_malloc(size_t size) __attribute__((alias("malloc")));
TM_API void __libc_free(void *p) __attribute__((alias("free")));
TM_API void *__libc_calloc(size_t n, size_t size) __attribute__((alias("calloc")));
TM_API void *__libc_realloc(void *p, size_t size) __attribute__((alias("realloc")));
TM_ALIAS_END
#endif
