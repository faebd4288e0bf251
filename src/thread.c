/* The life of thread heaps: made for a thread on its first allocation,
 * abandoned when it exits (its spans become orphans), pooled for the next
 * thread; repaired in a fork child; and the library's initialization. */
#include "internal.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TM_EMPTY_CUR {[0 ... TM_NUM_CLASSES - 1] = &tm_empty_span}

tm_heap tm_heap_empty = {.cur = TM_EMPTY_CUR, .state = TM_HEAP_UNINIT};
static tm_heap tm_heap_exiting = {.cur = TM_EMPTY_CUR, .state = TM_HEAP_EXITING};

__thread tm_heap *tm_heap_tls __attribute__((tls_model("initial-exec"))) = &tm_heap_empty;

tm_heap *_Atomic tm_all_heaps;
static tm_heap *tm_heap_pool; /* global lock */
static pthread_key_t tm_thread_key;
static atomic_int tm_late_state; /* 0 not done, 1 in progress, 2 done */

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

static void tm_heap_reset(tm_heap *h) {
  tm_heap_set_caps(h);
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    h->cache[c].head = NULL;
    tm_cache_set_n(&h->cache[c], 0);
    h->cur[c] = &tm_empty_span;
    h->partial[c].first = h->partial[c].last = NULL;
    TM_ASSERT(tm_outbox_n(&h->outbox[c]) == 0); /* sent back before the heap was pooled */
    h->outbox[c].head = NULL;
    atomic_store_explicit(&h->outbox[c].n, 0, memory_order_relaxed);
    TM_ASSERT(!h->stash_top[c]); /* sent back too */
    h->stash_top[c] = 0;
  }
  memset(h->stash_used, 0, sizeof h->stash_used);
  h->stash_bytes = 0;
  /* a new thread starts with the base budget and no history */
  h->class_clock = 0;
  memset(h->class_seen, 0, sizeof h->class_seen);
  h->stash_grow = h->stash_overflow = h->stash_overflowed = 0;
  h->full.first = h->full.last = NULL;
  /* the claim handshake starts over: a thread that vanished in a fork may
   * have left busy raised in the middle of a fast path (the debug build's
   * check on the slow path caught a pooled heap's stale flag in a fork
   * child); the pager's claim is never left set (it holds the lock) */
  atomic_store_explicit(&h->busy, 0, memory_order_relaxed);
  atomic_store_explicit(&h->claim, 0, memory_order_relaxed);
}

/* A new heap from the metadata arena, on the list of all heaps (which the
 * pager and a fork child walk). Not yet ACTIVE. */
tm_heap *tm_heap_create(void) {
  tm_lock(&tm_global_lock);
  tm_heap *h = tm_meta_alloc(sizeof(tm_heap));
  tm_unlock(&tm_global_lock);
  if (!h) return NULL;
  tm_heap_reset(h);
  tm_heap *head = atomic_load(&tm_all_heaps);
  do {
    h->next_all = head;
  } while (!atomic_compare_exchange_weak(&tm_all_heaps, &head, h));
  TM_STAT_ADD(heap_count, 1);
  return h;
}

tm_heap *tm_heap_new_for_thread(void) {
  tm_init();
  tm_lock(&tm_global_lock);
  tm_heap *h = tm_heap_pool;
  if (h) tm_heap_pool = h->next_pool;
  tm_unlock(&tm_global_lock);
  if (!h) h = tm_heap_create();
  if (!h) return NULL;
  tm_heap_set_state(h, TM_HEAP_ACTIVE);
  tm_heap_tls = h;
  if (atomic_load(&tm_late_state) != 2 && !tm_is_main_thread()) tm_late_init();
  if (atomic_load(&tm_late_state) == 2) pthread_setspecific(tm_thread_key, h);
  return h;
}

static void tm_span_close_cb(tm_span *s, void *forced) { tm_notice_close(s, forced != NULL); }

/* Hand every span of h on: empty ones are retired, the rest become orphans
 * that any thread can adopt, and remote frees into them keep working. First
 * no span may tell h anything any more (NEVER), then what was told is
 * drained, so that h's remote list stays empty while it is pooled. */
static void tm_heap_abandon(tm_heap *h, bool after_fork) {
  tm_heap_lock(h);
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
        tm_span_free_slices(s);
      } else {
        tm_orphan_push(s);
      }
      s = next;
    }
  }
  TM_ASSERT(atomic_load(&h->remote_spans) == NULL);
  tm_heap_reset(h);
  tm_orphans_sweep();
  tm_heap_set_state(h, TM_HEAP_POOLED);
  h->next_pool = tm_heap_pool;
  tm_heap_pool = h;
  tm_unlock(&tm_global_lock);
  tm_heap_unlock(h);
}

static void tm_thread_done(void *value) {
  (void)value;
  tm_heap *h = tm_heap_tls;
  if (tm_heap_state(h) != TM_HEAP_ACTIVE || tm_heap_is_shared(h)) return;
  tm_heap_abandon(h, false);
  tm_heap_tls = &tm_heap_exiting;
}

/* ---- fork ------------------------------------------------------------------ */
/* fork child: a span left BUSY by a vanished notifier is on no list now */
static void tm_span_reopen_cb(tm_span *s, void *arg) {
  (void)arg;
  tm_span_collect_word(s, tm_notice_take(s, true));
}

/* A heap that lives on in the child (its lock free): a notifier that
 * vanished in the fork may have left a span of it BUSY, on its remote list
 * or not: drain the list without waiting, then reopen every span that is
 * still BUSY. */
static void tm_heap_reopen_after_fork(tm_heap *h) {
  tm_heap_lock(h);
  tm_heap_drain_remote(h, true);
  tm_heap_each_span(h, tm_span_reopen_cb, NULL);
  tm_heap_unlock(h);
}

/* No lock is held across fork (holding ours while libc takes its stdio
 * locks is how allocators deadlock there). Instead the child, which has only
 * the forking thread, repairs: structures whose lock was held are dropped,
 * heaps of vanished threads are abandoned (or, if their lock was held, left
 * alone), and the forking thread gets a fresh heap if its own lock was held
 * (fork from a signal handler that interrupted a slow path, or the pager
 * working on it). */
static void tm_fork_child(void) {
  /* The thread that was in tm_late_init is gone; finish its state. This
   * handler runs only once pthread_atfork has registered it, which
   * tm_late_init does after pthread_key_create and tm_options_load (and
   * fork and pthread_atfork serialize on libc's atfork lock): the key and
   * the options exist. */
  if (atomic_load(&tm_late_state) == 1) atomic_store(&tm_late_state, 2);
  if (tm_lock_is_held(&tm_global_lock))
    tm_global_reset_after_fork();
  else
    tm_segments_after_fork();
  tm_heap_shared_after_fork();
  tm_huge_after_fork();
  tm_outbox_after_fork();
  tm_heap *me = tm_heap_tls;
  if (tm_heap_state(me) == TM_HEAP_ACTIVE && tm_heap_locked(me)) {
    tm_heap_set_state(me, TM_HEAP_DEAD);
    tm_heap_tls = &tm_heap_empty;
  } else if (tm_heap_state(me) == TM_HEAP_ACTIVE) {
    tm_heap_reopen_after_fork(me);
  }
  /* the shared heap has no thread to vanish with, but a notifier may have
   * left one of its spans BUSY too */
  tm_heap *shared = tm_heap_shared_get();
  if (shared && tm_heap_state(shared) == TM_HEAP_ACTIVE && !tm_heap_locked(shared)) tm_heap_reopen_after_fork(shared);
  for (tm_heap *h = atomic_load(&tm_all_heaps); h; h = h->next_all) {
    if (h == tm_heap_tls || tm_heap_state(h) != TM_HEAP_ACTIVE || tm_heap_is_shared(h)) continue;
    if (tm_heap_locked(h))
      tm_heap_set_state(h, TM_HEAP_DEAD);
    else
      tm_heap_abandon(h, true);
  }
  tm_pager_after_fork();
}

/* ---- initialization -------------------------------------------------------- */
/* libc is up: the thread key and fork handler are registered (the pager
 * may create its thread from here on). */
bool tm_front_ready(void) { return atomic_load_explicit(&tm_late_state, memory_order_acquire) == 2; }

static atomic_int tm_init_state;

uint64_t tm_free_key_v;
uintptr_t tm_link_key;

/* splitmix64's finalizer: spreads the bits of x over the whole word. */
static uint64_t tm_mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* The per-process secrets. AT_RANDOM is 16 bytes the kernel put on the
 * stack at exec (what glibc seeds its stack protector and pointer guard
 * from): no system call, no file, available before libc is up. */
static void tm_secrets_init(void) {
  uint64_t r[2] = {0, 0};
  const void *at = (const void *)getauxval(AT_RANDOM);
  if (at) memcpy(r, at, sizeof r);
  uint64_t salt = (uint64_t)(uintptr_t)&tm_init_state; /* ASLR, if AT_RANDOM is missing */
  tm_free_key_v = tm_mix(r[0] ^ salt) | 1; /* never 0: fresh blocks hold 0 in word 1 */
  tm_link_key = (uintptr_t)tm_mix(r[1] ^ ~salt);
}

void tm_init(void) {
  if (TM_LIKELY(atomic_load_explicit(&tm_init_state, memory_order_acquire) == 2)) return;
  int expect = 0;
  if (atomic_compare_exchange_strong(&tm_init_state, &expect, 1)) {
    tm_secrets_init();
    tm_options_load(); /* no-op if libc has not set up environ yet */
    atomic_store_explicit(&tm_init_state, 2, memory_order_release);
    return;
  }
  while (atomic_load_explicit(&tm_init_state, memory_order_acquire) != 2) sched_yield();
}

__attribute__((constructor)) static void tm_constructor(void) {
  tm_init();
  tm_late_init();
  if (tm_heap_state(tm_heap_tls) == TM_HEAP_ACTIVE) pthread_setspecific(tm_thread_key, tm_heap_tls);
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

typedef struct {
  tm_heap *h;
  size_t spans, blocks;
} tm_stranded_walk;

static void tm_stranded_cb(tm_span *s, void *arg) {
  tm_stranded_walk *w = arg;
  tm_block *b = (tm_block *)(atomic_load(&s->thread_free) & ~(uintptr_t)7);
  if (!b || tm_on_remote_list(w->h, s)) return;
  w->spans++;
  for (; b; b = b->next) w->blocks++;
}

/* Spans owned by live heaps that hold cross-thread frees their owner will
 * never hear of: not on its remote list. Only meaningful while no thread
 * allocates or frees (tests pause their threads first). */
size_t tm_stranded_spans(size_t *blocks_out) {
  tm_stranded_walk w = {0};
  tm_pager_pause(); /* it drains idle heaps' lists: not between two looks of ours */
  for (tm_heap *h = atomic_load(&tm_all_heaps); h; h = h->next_all) {
    if (tm_heap_state(h) != TM_HEAP_ACTIVE) continue;
    w.h = h;
    tm_heap_each_span(h, tm_stranded_cb, &w);
  }
  tm_pager_resume();
  if (blocks_out) *blocks_out = w.blocks;
  return w.spans;
}
