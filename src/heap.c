/* Thread heaps: the owner side of every small span, the slow paths behind
 * malloc and free, thread exit, fork, and initialization.
 *
 * A heap is owned by one thread. Its spans are on exactly one of: cur[class]
 * (allocation happens there), partial[class] (has free blocks), full (none at
 * last look). Other threads never touch these lists: they push freed blocks on
 * a span's thread_free list and the span on the owner's remote_spans list,
 * which the owner drains on its slow path. */
#include "internal.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

tm_span tm_empty_span; /* summary 0: every pop fails and takes the slow path */

#define TM_EMPTY_CUR {[0 ... TM_NUM_CLASSES - 1] = &tm_empty_span}

tm_heap tm_heap_empty = {.cur = TM_EMPTY_CUR, .state = TM_HEAP_UNINIT};
static tm_heap tm_heap_exiting = {.cur = TM_EMPTY_CUR, .state = TM_HEAP_EXITING};
/* Serves threads whose own heap was already torn down (late TLS destructors,
 * libc's thread teardown). Made on first use; protected by tm_shared_lock. */
static tm_heap *tm_heap_shared;
static tm_lock_t tm_shared_lock = TM_LOCK_INIT;

__thread tm_heap *tm_heap_tls __attribute__((tls_model("initial-exec"))) = &tm_heap_empty;

static tm_heap *_Atomic tm_all_heaps;
static tm_heap *tm_heap_pool; /* global lock */
static pthread_key_t tm_thread_key;
static atomic_int tm_late_state; /* 0 not done, 1 in progress, 2 done */

/* ---- span queues --------------------------------------------------------- */
static void tm_queue_push_front(tm_queue *q, tm_span *s) {
  s->prev = NULL;
  s->next = q->first;
  if (q->first)
    q->first->prev = s;
  else
    q->last = s;
  q->first = s;
}

static void tm_queue_remove(tm_queue *q, tm_span *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    q->first = s->next;
  if (s->next)
    s->next->prev = s->prev;
  else
    q->last = s->prev;
  s->next = s->prev = NULL;
}

static void tm_heap_make_full(tm_heap *h, tm_span *s) {
  s->queue = TM_Q_FULL;
  tm_span_set_owner(s, h, true);
  tm_queue_push_front(&h->full, s);
}

/* ---- remote frees (the protocol is in remote.c) -------------------------- */
static void tm_heap_reconsider(tm_heap *h, tm_span *s);

/* Take h's remote list and collect every span on it. Each entry is h's own
 * span and stays alive until its notice is taken (remote.c). `forced`: in a
 * fork child, where a notifier may have vanished mid-notice. */
static void tm_heap_drain_remote(tm_heap *h, bool forced) {
  tm_span *list = tm_remote_list_take(h);
  while (list) {
    tm_span *s = list;
    list = s->remote_next; /* read before the notice is taken: s may move on after */
    /* Only a fork child that returned into an interrupted notice can have
     * put someone else's span here (unsupported; see design.md): skip it. */
    if (TM_UNLIKELY(tm_span_kind(s) != TM_SPAN_SMALL || tm_span_owner(s) != h)) continue;
    tm_span_collect_list(s, tm_notice_take(s, forced));
    if (s->queue != TM_Q_NONE) tm_heap_reconsider(h, s);
  }
}

static void tm_heap_process_remote(tm_heap *h) { tm_heap_drain_remote(h, false); }

/* After frees landed in s: a full span becomes available again; an empty
 * span that is not the current one is retired unless it is the only spare
 * span of its class (kept to avoid churn at a boundary). */
static void tm_heap_reconsider(tm_heap *h, tm_span *s) {
  tm_queue *pq = &h->partial[s->size_class];
  if (s->queue == TM_Q_FULL) {
    if (!s->summary && !tm_span_refresh(s)) return;
    tm_queue_remove(&h->full, s);
    s->queue = TM_Q_PARTIAL;
    tm_span_set_owner(s, h, false);
    tm_queue_push_front(pq, s);
  }
  /* a span still QUEUED is retired when its notice is taken */
  if (s->queue == TM_Q_PARTIAL && s->used == 0 && pq->first != pq->last &&
      tm_notice_state(s) == TM_NOTICE_IDLE) {
    tm_queue_remove(pq, s);
    s->queue = TM_Q_NONE;
    tm_span_retire(s);
  }
}

void tm_free_local_event(tm_heap *h, tm_span *s) {
  if (s->queue == TM_Q_CURRENT) return; /* an empty current span stays */
  h->in_slow = 1;
  tm_heap_reconsider(h, s);
  h->in_slow = 0;
}

/* Put a cached block back into its span's bitmap. */
static void tm_cache_release(tm_heap *h, void *p) {
  tm_span *s = tm_span_of(tm_segment_base(p), p);
  uint32_t idx;
  if (!tm_span_block_index(s, p, &idx)) {
    tm_report_invalid("free", p, "invalid pointer");
    return;
  }
  if (tm_span_free_block(s, p, idx) && (s->used == 0 || s->queue == TM_Q_FULL)) tm_heap_reconsider(h, s);
}

/* Release the oldest cached blocks of class c until `keep` remain. The walk
 * is bounded and stops at NULL: in a fork child the list may have been cut
 * in the middle of a push or pop. */
void tm_cache_flush(tm_heap *h, unsigned c, unsigned keep) {
  tm_cache *k = &h->cache[c];
  if (k->n <= keep && keep) return;
  uint32_t saved = h->in_slow;
  h->in_slow = 1;
  void **link = &k->head;
  unsigned kept = 0;
  while (*link && kept < keep) {
    link = (void **)*link;
    kept++;
  }
  void *rest = *link;
  *link = NULL;
  for (unsigned i = 0; rest && i <= TM_CACHE_MAX; i++) {
    void *next = *(void **)rest;
    tm_cache_release(h, rest);
    rest = next;
  }
  k->n = kept;
  h->in_slow = saved;
}

/* Is p, a block of s owned by h, already free (cached or in the bitmap)? */
bool tm_block_is_free(tm_heap *h, tm_span *s, void *p) {
  uint64_t idx = tm_span_index(s, p);
  if (tm_span_bits(s)[idx >> 6] & ((uint64_t)1 << (idx & 63))) return true;
  void *b = h->cache[s->size_class].head;
  for (unsigned i = 0; b && i <= TM_CACHE_MAX; i++, b = *(void **)b)
    if (b == p) return true;
  return false;
}

static void tm_cache_push(tm_cache *k, void *p) {
  *(void **)p = k->head;
  k->head = p;
  k->n++;
}

/* free() found the free key in p: report a double free, or, if the program
 * just happened to store that value, free the block normally. */
void tm_free_suspect(tm_heap *h, tm_span *s, void *p) {
  if (tm_block_is_free(h, s, p)) {
    tm_report_invalid("free", p, "double free");
    return;
  }
  tm_cache *k = &h->cache[s->size_class];
  if (k->n >= k->cap) {
    tm_free_cache_full(h, p);
    return;
  }
  tm_cache_push(k, p);
}

/* free() found the cache of p's class full: make room by releasing the
 * older half, then cache p. */
void tm_free_cache_full(tm_heap *h, void *p) {
  unsigned c = tm_span_of(tm_segment_base(p), p)->size_class;
  tm_cache_flush(h, c, h->cache[c].cap / 2u);
  tm_cache_push(&h->cache[c], p);
}

static void tm_heap_flush_caches(tm_heap *h) {
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) tm_cache_flush(h, c, 0);
}

/* ---- refilling a size class ---------------------------------------------- */
/* Among the first few partial spans, take the fullest one: allocation goes
 * where blocks already live, so that emptier spans drain and get retired. */
static tm_span *tm_heap_pick_partial(tm_heap *h, unsigned c) {
  tm_queue *q = &h->partial[c];
  tm_span *best = NULL;
  unsigned looked = 0;
  for (tm_span *s = q->first, *next; s && looked < 8; s = next, looked++) {
    next = s->next;
    tm_span_collect(s);
    if (!tm_span_refresh(s)) {
      tm_queue_remove(q, s);
      tm_heap_make_full(h, s);
      continue;
    }
    if (!best || s->used > best->used) best = s;
  }
  if (best) tm_queue_remove(q, best);
  return best;
}

static tm_span *tm_heap_adopt_orphan(tm_heap *h, unsigned c) {
  for (int tries = 0; tries < 4; tries++) {
    tm_lock(&tm_global_lock);
    tm_span *s = tm_orphan_take(c);
    tm_unlock(&tm_global_lock);
    if (!s) return NULL;
    tm_span_set_owner(s, h, false);
    tm_notice_open(s);
    tm_span_collect(s);
    if (tm_span_refresh(s)) return s;
    tm_heap_make_full(h, s);
  }
  return NULL;
}

static tm_span *tm_heap_new_span(tm_heap *h, unsigned c) {
  /* One slice up to 8 KiB blocks (at least 8 per span), four above (8 to 28
   * blocks): with one slice, 2-7 blocks per span made sizes over 8 KiB take
   * the slow path every few allocations (random_medium ran at 0.57x
   * tcmalloc), while four slices cost no measurable RSS on dist_app, since
   * only touched pages count. */
  unsigned n = tm_class_size(c) <= 8192 ? 1 : 4;
  tm_lock(&tm_global_lock);
  tm_span *s = tm_slices_alloc(n);
  tm_unlock(&tm_global_lock);
  if (!s) return NULL;
  tm_span_init_small(s, c, h);
  TM_STAT_ADD(span_bytes, (size_t)n << TM_SLICE_SHIFT);
  return s;
}

static tm_span *tm_heap_refill(tm_heap *h, unsigned c) {
  tm_span *s = h->cur[c];
  if (s != &tm_empty_span) {
    tm_span_collect(s);
    if (tm_span_refresh(s)) return s;
    tm_heap_make_full(h, s);
    h->cur[c] = &tm_empty_span;
  }
  tm_heap_process_remote(h);
  s = tm_heap_pick_partial(h, c);
  if (!s) s = tm_heap_adopt_orphan(h, c);
  if (!s) s = tm_heap_new_span(h, c);
  if (!s) return NULL;
  s->queue = TM_Q_CURRENT;
  h->cur[c] = s;
  return s;
}

static void *tm_heap_alloc_slow(tm_heap *h, unsigned c) {
  h->in_slow = 1;
#if TIDE_DEBUG
  if ((++h->slow_count & 255) == 0 && tm_heap_check(h) != 0)
    tm_report_invalid("malloc", h, "heap consistency check failed for heap");
#endif
  tm_span *s = tm_heap_refill(h, c);
  void *p = s ? tm_span_pop(s) : NULL;
  h->in_slow = 0;
  if (!p) errno = ENOMEM;
  return p;
}

/* ---- thread heaps: creation, exit, reuse ---------------------------------- */
static void tm_thread_done(void *value);
static void tm_fork_child(void);

static bool tm_is_main_thread(void) {
  return syscall(SYS_gettid) == getpid();
}

/* Things that need libc up and running: the thread-exit key and the fork
 * handler. Done from the constructor, or by the first other thread. */
static void tm_late_init(void) {
  int expect = 0;
  if (atomic_compare_exchange_strong(&tm_late_state, &expect, 1)) {
    tm_options_load();
    pthread_key_create(&tm_thread_key, tm_thread_done);
    pthread_atfork(NULL, NULL, tm_fork_child);
    atomic_store(&tm_late_state, 2);
    return;
  }
  while (atomic_load(&tm_late_state) != 2) sched_yield();
}

static uint32_t tm_cache_cap(unsigned c) {
  size_t bsize = tm_class_size(c);
  return bsize <= 8192 ? TM_CACHE_MAX : 16;
}

static void tm_heap_reset(tm_heap *h) {
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    h->cache[c].head = NULL;
    h->cache[c].n = 0;
    h->cache[c].cap = tm_cache_cap(c);
    h->cur[c] = &tm_empty_span;
    h->partial[c].first = h->partial[c].last = NULL;
  }
  h->full.first = h->full.last = NULL;
  h->in_slow = 0;
}

static tm_heap *tm_heap_new_for_thread(void) {
  tm_init();
  tm_lock(&tm_global_lock);
  tm_heap *h = tm_heap_pool;
  if (h) {
    tm_heap_pool = h->next_pool;
  } else {
    h = tm_meta_alloc(sizeof(tm_heap));
  }
  tm_unlock(&tm_global_lock);
  if (!h) return NULL;
  if (h->state == TM_HEAP_UNINIT) {
    tm_heap_reset(h);
    tm_heap *head = atomic_load(&tm_all_heaps);
    do {
      h->next_all = head;
    } while (!atomic_compare_exchange_weak(&tm_all_heaps, &head, h));
    TM_STAT_ADD(heap_count, 1);
  }
  h->state = TM_HEAP_ACTIVE;
  tm_heap_tls = h;
  tm_heap_process_remote(h); /* notices that arrived while it was pooled */
  if (atomic_load(&tm_late_state) != 2 && !tm_is_main_thread()) tm_late_init();
  if (atomic_load(&tm_late_state) == 2) pthread_setspecific(tm_thread_key, h);
  return h;
}

/* Call fn on every span h owns (current, partial and full). */
static void tm_heap_each_span(tm_heap *h, void (*fn)(tm_span *s, void *arg), void *arg) {
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    if (h->cur[c] != &tm_empty_span) fn(h->cur[c], arg);
    for (tm_span *s = h->partial[c].first, *next; s; s = next) {
      next = s->next;
      fn(s, arg);
    }
  }
  for (tm_span *s = h->full.first, *next; s; s = next) {
    next = s->next;
    fn(s, arg);
  }
}

static void tm_span_close_cb(tm_span *s, void *forced) { tm_notice_close(s, forced != NULL); }

/* fork child: a span left BUSY by a vanished notifier is on no list now */
static void tm_span_reopen_cb(tm_span *s, void *arg) {
  (void)arg;
  tm_span_collect_list(s, tm_notice_take(s, true));
}

/* Hand every span of h on: empty ones are retired, the rest become orphans
 * that any thread can adopt, and remote frees into them keep working. First
 * no span may tell h anything any more (NEVER), then what was told is
 * drained, so that h's remote list stays empty while it is pooled. */
static void tm_heap_abandon(tm_heap *h, bool after_fork) {
  h->in_slow = 1;
  tm_heap_flush_caches(h);
  tm_heap_each_span(h, tm_span_close_cb, after_fork ? (void *)h : NULL);
  tm_heap_drain_remote(h, after_fork);
  tm_lock(&tm_global_lock);
  for (unsigned c = 0; c <= TM_NUM_CLASSES; c++) {
    tm_span *s;
    if (c < TM_NUM_CLASSES) {
      s = h->cur[c] != &tm_empty_span ? h->cur[c] : NULL;
      if (s) s->next = h->partial[c].first;
      else s = h->partial[c].first;
    } else {
      s = h->full.first;
    }
    while (s) {
      tm_span *next = s->next;
      tm_span_set_owner(s, NULL, false);
      tm_span_collect(s);
      if (after_fork) tm_span_resync(s);
      if (s->used == 0) {
        TM_STAT_SUB(span_bytes, (size_t)s->slice_count << TM_SLICE_SHIFT);
        tm_slices_free(s);
      } else {
        tm_orphan_push(s);
      }
      s = next;
    }
  }
  TM_ASSERT(atomic_load(&h->remote_spans) == NULL);
  tm_heap_reset(h);
  tm_orphans_sweep();
  h->state = TM_HEAP_POOLED;
  h->next_pool = tm_heap_pool;
  tm_heap_pool = h;
  tm_unlock(&tm_global_lock);
}

static void tm_thread_done(void *value) {
  (void)value;
  tm_heap *h = tm_heap_tls;
  if (h->state != TM_HEAP_ACTIVE || h == tm_heap_shared) return;
  tm_heap_abandon(h, false);
  tm_heap_tls = &tm_heap_exiting;
}

static void *tm_alloc_shared(unsigned c) {
  tm_lock(&tm_shared_lock);
  tm_heap *h = tm_heap_shared;
  if (!h) {
    tm_lock(&tm_global_lock);
    h = tm_meta_alloc(sizeof(tm_heap));
    tm_unlock(&tm_global_lock);
    if (h) {
      tm_heap_reset(h);
      for (unsigned k = 0; k < TM_NUM_CLASSES; k++) h->cache[k].cap = 0; /* its blocks are all freed remotely */
      h->state = TM_HEAP_ACTIVE;
      tm_heap_shared = h;
    }
  }
  void *p = NULL;
  if (h) {
    p = tm_span_pop(h->cur[c]);
    if (!p) p = tm_heap_alloc_slow(h, c);
  }
  tm_unlock(&tm_shared_lock);
  return p;
}

void *tm_alloc_slow(tm_heap *h, unsigned c) {
  if (TM_UNLIKELY(h->state != TM_HEAP_ACTIVE)) {
    if (h->state == TM_HEAP_EXITING) return tm_alloc_shared(c);
    h = tm_heap_new_for_thread();
    if (!h) {
      errno = ENOMEM;
      return NULL;
    }
  }
  return tm_heap_alloc_slow(h, c);
}

/* ---- frees that are not the owner's fast path ---------------------------- */
/* The owner freeing into its own full span: set the bit, then move the span
 * back to the partial queue. */
static void tm_free_into_full(tm_heap *h, tm_span *s, void *p, uint32_t idx) {
  if (!tm_span_free_block(s, p, idx)) return;
  ((uint64_t *)p)[1] = tm_free_key(h); /* so that a second free is caught at once */
  tm_free_local_event(h, s);
}

void tm_free_other(void *p, tm_span *s, const char *who) {
  unsigned kind = tm_span_kind(s);
  if (kind == TM_SPAN_SMALL) {
    uint32_t idx;
    if (!tm_span_block_index(s, p, &idx)) {
      tm_report_invalid(who, p, "invalid pointer");
      return;
    }
    tm_heap *h = tm_heap_tls;
    if (tm_span_owner(s) == h && s->queue == TM_Q_FULL) {
      tm_free_into_full(h, s, p, idx);
      return;
    }
#if TIDE_DEBUG
    memset(p, 0xdf, s->block_size);
#endif
    tm_remote_free(s, p);
  } else if (kind == TM_SPAN_LARGE && p == s->start) {
    tm_large_free(s);
  } else if (kind == TM_SPAN_HUGE && p == s->start) {
    tm_huge_free(tm_segment_base(s), s);
  } else {
    tm_report_invalid(who, p, kind == TM_SPAN_FREE ? "double free or invalid pointer" : "invalid pointer");
  }
}

void tm_free_slow(void *p, const char *who) {
  if (!p) return;
  tm_segment *seg = tm_segment_of(p);
  if (!seg) {
    tm_report_invalid(who, p, "invalid pointer");
    return;
  }
  tm_free_other(p, tm_span_of(seg, p), who);
}

/* ---- whole-heap operations ------------------------------------------------ */
void tm_heap_collect_all(tm_heap *h) {
  if (h->state != TM_HEAP_ACTIVE) return;
  h->in_slow = 1;
  tm_heap_flush_caches(h);
  tm_heap_process_remote(h);
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    tm_span *cur = h->cur[c];
    if (cur != &tm_empty_span) {
      tm_span_collect(cur);
      if (cur->used == 0 && tm_notice_state(cur) == TM_NOTICE_IDLE) {
        h->cur[c] = &tm_empty_span;
        cur->queue = TM_Q_NONE;
        tm_span_retire(cur);
      }
    }
    for (tm_span *s = h->partial[c].first, *next; s; s = next) {
      next = s->next;
      tm_span_collect(s);
      if (s->used == 0 && tm_notice_state(s) == TM_NOTICE_IDLE) {
        tm_queue_remove(&h->partial[c], s);
        s->queue = TM_Q_NONE;
        tm_span_retire(s);
      }
    }
  }
  for (tm_span *s = h->full.first, *next; s; s = next) {
    next = s->next;
    tm_span_collect(s);
    tm_heap_reconsider(h, s);
  }
  h->in_slow = 0;
}

int tm_heap_check(tm_heap *h) {
  int problems = 0;
  if (h->state != TM_HEAP_ACTIVE) return 0;
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    tm_span *cur = h->cur[c];
    if (cur != &tm_empty_span) {
      problems += tm_span_check(cur, h);
      if (cur->queue != TM_Q_CURRENT || cur->size_class != c) problems += tm_check_problem("current span in the wrong queue or class", cur);
    }
    for (tm_span *s = h->partial[c].first; s; s = s->next) {
      problems += tm_span_check(s, h);
      if (s->queue != TM_Q_PARTIAL || s->size_class != c) problems += tm_check_problem("partial span in the wrong queue or class", s);
      if (s->next && s->next->prev != s) problems += tm_check_problem("broken queue link", s);
    }
  }
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    tm_cache *k = &h->cache[c];
    if (k->n > k->cap || k->cap > TM_CACHE_MAX) problems += tm_check_problem("cache count out of range", k);
    unsigned len = 0;
    for (void *b = k->head; b && len <= TM_CACHE_MAX; b = *(void **)b, len++) {
      tm_segment *seg = tm_segment_of(b);
      tm_span *s = seg ? tm_span_of(seg, b) : NULL;
      uint32_t idx;
      if (!s || tm_span_kind(s) != TM_SPAN_SMALL || s->size_class != c || !tm_span_block_index(s, b, &idx) ||
          (tm_span_bits(s)[idx >> 6] & ((uint64_t)1 << (idx & 63)))) {
        problems += tm_check_problem("cached block is not a live block of its class", b);
        break; /* do not follow a link out of a bad block */
      }
    }
    if (len != k->n) problems += tm_check_problem("cache list length differs from its count", k);
  }
  for (tm_span *s = h->full.first; s; s = s->next) {
    problems += tm_span_check(s, h);
    if (s->queue != TM_Q_FULL) problems += tm_check_problem("full span in the wrong queue", s);
    if (s->next && s->next->prev != s) problems += tm_check_problem("broken queue link", s);
  }
  return problems;
}

/* ---- fork ------------------------------------------------------------------ */
/* No lock is held across fork (holding ours while libc takes its stdio
 * locks is how allocators deadlock there). Instead the child, which has only
 * the forking thread, repairs: structures whose lock was held are dropped,
 * heaps of vanished threads are abandoned (or, if caught inside a slow path,
 * left alone), and the forking thread gets a fresh heap if it was itself
 * interrupted inside a slow path (fork from a signal handler). */
static void tm_fork_child(void) {
  if (atomic_load(&tm_late_state) == 1) atomic_store(&tm_late_state, 2);
  if (tm_lock_is_held(&tm_global_lock)) tm_global_reset_after_fork();
  if (tm_lock_is_held(&tm_shared_lock)) {
    /* its lists may be half updated: leave it, with its spans, and make a
     * new one on next use; frees into its spans are parked there */
    if (tm_heap_shared) tm_heap_shared->state = TM_HEAP_DEAD;
    tm_heap_shared = NULL;
    atomic_store(&tm_shared_lock.held, 0);
  }
  tm_heap *me = tm_heap_tls;
  if (me->state == TM_HEAP_ACTIVE && me->in_slow) {
    me->state = TM_HEAP_DEAD;
    tm_heap_tls = &tm_heap_empty;
  } else if (me->state == TM_HEAP_ACTIVE) {
    /* A notifier that vanished in the fork may have left a span of ours
     * BUSY, on our remote list or not: drain the list without waiting,
     * then reopen every span that is still BUSY. */
    tm_heap_drain_remote(me, true);
    tm_heap_each_span(me, tm_span_reopen_cb, NULL);
    /* fork from a signal handler may have cut a pop on a current span */
    for (unsigned c = 0; c < TM_NUM_CLASSES; c++)
      if (me->cur[c] != &tm_empty_span) tm_span_resync(me->cur[c]);
  }
  for (tm_heap *h = atomic_load(&tm_all_heaps); h; h = h->next_all) {
    if (h == tm_heap_tls || h->state != TM_HEAP_ACTIVE) continue;
    if (h->in_slow)
      h->state = TM_HEAP_DEAD;
    else
      tm_heap_abandon(h, true);
  }
}

/* ---- initialization -------------------------------------------------------- */
static atomic_int tm_init_state;

void tm_init(void) {
  if (TM_LIKELY(atomic_load_explicit(&tm_init_state, memory_order_acquire) == 2)) return;
  int expect = 0;
  if (atomic_compare_exchange_strong(&tm_init_state, &expect, 1)) {
    tm_options_load(); /* no-op if libc has not set up environ yet */
    atomic_store_explicit(&tm_init_state, 2, memory_order_release);
    return;
  }
  while (atomic_load_explicit(&tm_init_state, memory_order_acquire) != 2) sched_yield();
}

__attribute__((constructor)) static void tm_constructor(void) {
  tm_init();
  tm_late_init();
  if (tm_heap_tls->state == TM_HEAP_ACTIVE) pthread_setspecific(tm_thread_key, tm_heap_tls);
}

__attribute__((destructor)) static void tm_destructor(void) {
  if (tm_opt.show_stats) malloc_stats();
}

/* ---- test hook ------------------------------------------------------------- */
static bool tm_on_remote_list(tm_heap *h, tm_span *s) {
  for (tm_span *r = atomic_load(&h->remote_spans); r; r = r->remote_next)
    if (r == s) return true;
  return false;
}

/* Spans owned by live heaps that hold cross-thread frees their owner will
 * never hear of: not on its remote list. Only meaningful while no thread
 * allocates or frees (tests pause their threads first). */
size_t tm_stranded_spans(size_t *blocks_out) {
  size_t spans = 0, blocks = 0;
  for (tm_heap *h = atomic_load(&tm_all_heaps); h; h = h->next_all) {
    if (h->state != TM_HEAP_ACTIVE) continue;
    for (unsigned q = 0; q <= 2 * TM_NUM_CLASSES; q++) {
      tm_span *s = q < TM_NUM_CLASSES ? h->cur[q] : q < 2 * TM_NUM_CLASSES ? h->partial[q - TM_NUM_CLASSES].first : h->full.first;
      bool single = q < TM_NUM_CLASSES;
      for (; s && s != &tm_empty_span; s = single ? NULL : s->next) {
        tm_block *b = (tm_block *)(atomic_load(&s->thread_free) & ~(uintptr_t)3);
        if (!b || tm_on_remote_list(h, s)) continue;
        spans++;
        for (; b; b = b->next) blocks++;
      }
    }
  }
  if (blocks_out) *blocks_out = blocks;
  return spans;
}
