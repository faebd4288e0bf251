/* Thread heaps: the owner side of every small span, and the slow paths
 * behind malloc and free.
 *
 * A heap is used by one thread. Its fast paths (alloc.c) touch only its
 * caches. Everything else (the spans' bitmaps, cur[class], the partial and
 * full queues, the remote list) is changed only under h->lock, which the
 * owner takes on every slow path and the pager takes only with a try-lock
 * (pager/, through tm_heap_trim). So the pager can do an idle thread's slow
 * path work for it while that thread sleeps, and the fast paths stay as
 * they were. A span is on exactly one of: cur[class], partial[class], full.
 * Other threads never touch these lists: they push freed blocks on a span's
 * thread_free list and the span on the owner's remote list (remote.c). */
#include "internal.h"

#include <errno.h>
#include <string.h>

tm_span tm_empty_span; /* summary 0: every pop fails */

/* ---- span queues (h->lock) ----------------------------------------------- */
static void tm_queue_push_front(tm_queue *q, tm_span *s) {
  TM_ASSERT(s->next == NULL && s->prev == NULL && q->first != s); /* on no queue */
  TM_ASSERT(tm_span_kind(s) == TM_SPAN_SMALL);
  s->prev = NULL;
  s->next = q->first;
  if (q->first)
    q->first->prev = s;
  else
    q->last = s;
  q->first = s;
}

static void tm_queue_remove(tm_queue *q, tm_span *s) {
  TM_ASSERT(s->prev ? s->prev->next == s : q->first == s); /* on this queue */
  TM_ASSERT(s->next ? s->next->prev == s : q->last == s);
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
  TM_ASSERT(tm_heap_locked(h) && s->queue != TM_Q_FULL);
  s->queue = TM_Q_FULL;
  tm_span_set_owner(s, h, true);
  tm_queue_push_front(&h->full, s);
}

void tm_heap_each_span(tm_heap *h, void (*fn)(tm_span *s, void *arg), void *arg) {
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

/* ---- the slow-path lock ---------------------------------------------------- */
/* A sequence word: odd while held. Each taking moves it by two, which is
 * what tells a pager about to sleep that something happened; the seq_cst
 * CAS that takes it is also what orders it before the owner's look at
 * whether the pager sleeps (tm_pager_activity), so that a pager going to
 * sleep either sees the change or is woken. Whether it was the owner's
 * activity, `activity` says (the census and the pager take the lock too). */
static bool tm_heap_trylock_seq(tm_heap *h) {
  uint32_t v = atomic_load_explicit(&h->lock_seq, memory_order_relaxed);
  return !(v & 1) && atomic_compare_exchange_strong_explicit(&h->lock_seq, &v, v + 1, memory_order_seq_cst,
                                                             memory_order_relaxed);
}

/* For someone who only looks (the census): the heap is not more active for
 * it, and the pager is not woken. */
void tm_heap_lock_quiet(tm_heap *h) {
  unsigned spins = 0;
  while (!tm_heap_trylock_seq(h)) {
    if (++spins < 64) {
      tm_cpu_relax();
    } else {
      sched_yield();
      spins = 0;
    }
  }
}

void tm_heap_unlock_quiet(tm_heap *h) {
  TM_ASSERT(tm_heap_locked(h));
  atomic_store_explicit(&h->lock_seq, atomic_load_explicit(&h->lock_seq, memory_order_relaxed) + 1,
                        memory_order_release);
}

/* The owner's slow paths: each one is activity. */
void tm_heap_lock(tm_heap *h) {
  tm_heap_lock_quiet(h);
  h->activity++;
}

bool tm_heap_trylock(tm_heap *h) { return tm_heap_trylock_seq(h); }

bool tm_heap_locked(const tm_heap *h) {
  return atomic_load_explicit(&((tm_heap *)h)->lock_seq, memory_order_relaxed) & 1;
}

/* Unlock, then tell the pager (never with the lock held: without a pager
 * thread, tm_pager_activity releases empty segments at once). */
void tm_heap_unlock(tm_heap *h) {
  tm_heap_unlock_quiet(h);
  tm_pager_activity();
}

/* ---- retiring spans ------------------------------------------------------- */
/* After frees landed in s: a full span becomes available again; an empty
 * span that is not the current one is retired unless it is the only spare
 * span of its class (kept to avoid churn at a boundary) or `all` is set. */
void tm_heap_reconsider(tm_heap *h, tm_span *s, bool all) {
  TM_ASSERT(tm_heap_locked(h) && tm_span_owner(s) == h && tm_span_kind(s) == TM_SPAN_SMALL);
  tm_queue *pq = &h->partial[s->size_class];
  if (s->queue == TM_Q_FULL) {
    if (!s->summary && !tm_span_refresh(s)) return;
    tm_queue_remove(&h->full, s);
    s->queue = TM_Q_PARTIAL;
    tm_span_set_owner(s, h, false);
    tm_queue_push_front(pq, s);
  }
  /* a span still QUEUED is retired when its notice is taken */
  if (s->queue == TM_Q_PARTIAL && s->used == 0 && (all || pq->first != pq->last) &&
      tm_notice_state(s) == TM_NOTICE_IDLE) {
    tm_queue_remove(pq, s);
    s->queue = TM_Q_NONE;
    tm_span_retire(s);
  }
}

/* ---- remote frees (the protocol is in remote.c) -------------------------- */
/* Take h's remote list and collect every span on it. Each entry is h's own
 * span and stays alive until its notice is taken (remote.c). `forced`: in a
 * fork child, where a notifier may have vanished mid-notice. */
void tm_heap_drain_remote(tm_heap *h, bool forced) {
  tm_span *list = tm_remote_list_take(h);
  while (list) {
    tm_span *s = list;
    list = s->remote_next; /* read before the notice is taken: s may move on after */
    /* Only a fork child that returned into an interrupted notice can have
     * put someone else's span here (unsupported; see design.md): skip it. */
    if (TM_UNLIKELY(tm_span_kind(s) != TM_SPAN_SMALL || tm_span_owner(s) != h)) continue;
    tm_span_collect_word(s, tm_notice_take(s, forced));
    if (s->queue != TM_Q_NONE) tm_heap_reconsider(h, s, false);
  }
}

/* ---- caches ---------------------------------------------------------------- */
/* Release the oldest cached blocks of class c until `keep` remain (h->lock
 * held): into their spans' bitmaps, or, for blocks of other heaps' spans
 * (taken from the outbox), to their owners (outbox.c). The walk is bounded
 * and stops at NULL: in a fork child the list may have been cut in the
 * middle of a push or pop. */
static void tm_cache_flush(tm_heap *h, unsigned c, unsigned keep) {
  tm_cache *k = &h->cache[c];
  if (tm_cache_n(k) <= keep && keep) return;
  unsigned kept;
  tm_blocks_release(h, tm_list_cut(&k->head, keep, &kept), TM_CACHE_LIMIT + 1);
  tm_cache_set_n(k, kept);
}

/* Every class's cache, to the bitmaps and the owners' spans; returns how
 * many held blocks. A cache whose list and count disagree is flushed too
 * (in a fork child a push or pop may have been cut between the two). */
static unsigned tm_caches_flush(tm_heap *h) {
  unsigned flushed = 0;
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++)
    if (h->cache[c].head || tm_cache_n(&h->cache[c])) {
      tm_cache_flush(h, c, 0);
      flushed++;
    }
  return flushed;
}

/* The pager holds an idle heap's claim (tm_heap_claim, with the caches):
 * every cached block goes back, as the owner's own flush would send it. A
 * cached block pins its page: burst_idle's two blocked threads kept 22.4 MB
 * resident after everything was freed; 11.8 MB once the pager took their
 * caches. */
void tm_heap_flush_claimed_caches(tm_heap *h) {
  TM_ASSERT(tm_heap_locked(h) && atomic_load_explicit(&h->claim, memory_order_relaxed) &&
            !atomic_load_explicit(&h->busy, memory_order_relaxed));
  TM_STAT_ADD(caches_claimed, tm_caches_flush(h));
}

/* Every cached block, the stash and the outboxes. */
void tm_heap_flush_caches(tm_heap *h) {
  tm_caches_flush(h);
  tm_stashes_flush(h);
  tm_outboxes_flush(h);
}

/* Half of what sat in a class's cache since the last scavenge without the
 * class ever running dry goes back to the bitmaps: those blocks were not
 * needed, and each pins a page the pager cannot give back. Its stash goes
 * back whole (no miss wanted it). A class that needed refills keeps both.
 * An outbox that no miss took since goes back whole: its blocks pin other
 * heaps' pages. */
static void tm_heap_scavenge(tm_heap *h) {
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    tm_cache *k = &h->cache[c];
    if (!h->misses[c]) {
      if (tm_cache_n(k)) tm_cache_flush(h, c, tm_cache_n(k) / 2u);
      tm_stash_flush(h, c);
      tm_outbox_flush(h, c, 0);
    }
    h->misses[c] = 0;
  }
  tm_stash_scavenged(h);
}

/* ---- cache capacities and M_PERTURB ---------------------------------------- */
static void tm_heap_honour_flush(tm_heap *h);
atomic_int tm_perturb_v;
atomic_uint tm_cache_gen;

/* The base capacity of class c (and of its outbox). */
uint32_t tm_cache_cap(unsigned c) {
  if (tm_perturb()) return 0;
  return tm_class_size(c) <= 8192 ? TM_CACHE_BASE : 16;
}

/* Class c's cache capacity, and with it its outbox's (h->lock held). */
static void tm_cache_set_cap(tm_heap *h, unsigned c, uint32_t cap) {
  size_t bytes = TM_OUTBOX_BYTES / tm_class_size(c);
  if (bytes < 2) bytes = 2;
  h->cache[c].cap = cap;
  h->outbox[c].cap = cap < bytes ? cap : (uint32_t)bytes;
}

/* The capacities for the current generation (the owner, under its lock,
 * with its caches empty, or a heap nobody uses yet): the base. Generation
 * first: a change racing with this is seen again at the next slow path. */
void tm_heap_set_caps(tm_heap *h) {
  h->cache_gen = atomic_load_explicit(&tm_cache_gen, memory_order_acquire);
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) tm_cache_set_cap(h, c, tm_cache_cap(c));
}

/* mallopt(M_PERTURB) and MALLOC_PERTURB_. Only the low byte counts, as in
 * glibc; 0 turns it off. */
void tm_perturb_set(int byte) {
  int was = atomic_exchange_explicit(&tm_perturb_v, byte & 0xff, memory_order_relaxed);
  if (!was == !(byte & 0xff)) return;
  atomic_fetch_add_explicit(&tm_cache_gen, 1, memory_order_release);
}

/* The calling thread's heap follows a change at once (mallopt's caller
 * expects its next malloc to be filled); others at their next slow path. */
void tm_heap_catch_up(void) {
  tm_heap *h = tm_heap_tls;
  if (tm_heap_state(h) != TM_HEAP_ACTIVE || tm_heap_is_shared(h)) return;
  tm_heap_lock(h);
  tm_heap_honour_flush(h);
  tm_heap_unlock(h);
}

void tm_perturb_alloc(void *p, size_t n) {
  int b = tm_perturb();
  if (TM_UNLIKELY(b)) memset(p, b ^ 0xff, n);
}

void tm_perturb_free(void *p, size_t n) {
  int b = tm_perturb();
  if (TM_UNLIKELY(b)) memset(p, b, n);
}

/* What others asked of the owner, honoured on its next slow path, the only
 * place where it can be reached: new cache capacities (M_PERTURB), or the
 * pager wants cached blocks back (src/trim.c). */
static void tm_heap_honour_flush(tm_heap *h) {
  if (TM_UNLIKELY(h->cache_gen != atomic_load_explicit(&tm_cache_gen, memory_order_acquire)) &&
      !tm_heap_is_shared(h)) {
    tm_heap_flush_caches(h);
    tm_heap_set_caps(h);
  }
  if (TM_LIKELY(!atomic_load_explicit(&h->flush_request, memory_order_relaxed))) return;
  unsigned ask = atomic_exchange_explicit(&h->flush_request, TM_ASK_NONE, memory_order_relaxed);
  if (ask == TM_ASK_FLUSH)
    tm_heap_flush_caches(h);
  else if (ask == TM_ASK_SCAVENGE)
    tm_heap_scavenge(h);
}

/* Is p, a block of s owned by h, already free (cached or in the bitmap)?
 * h->lock held. */
static bool tm_block_is_free_locked(tm_heap *h, tm_span *s, void *p) {
  uint64_t idx = tm_span_index(s, p);
  if (tm_span_bits(s)[idx >> 6] & ((uint64_t)1 << (idx & 63))) return true;
  unsigned c = s->size_class;
  return tm_list_holds(h->cache[c].head, p) || tm_list_holds(h->outbox[c].head, p) || tm_stash_holds(h, c, p);
}

bool tm_block_is_free(tm_heap *h, tm_span *s, void *p) {
  tm_heap_lock(h);
  bool r = tm_block_is_free_locked(h, s, p);
  tm_heap_unlock(h);
  return r;
}

static void tm_cache_push(tm_cache *k, void *p) {
  TM_ASSERT(tm_cache_n(k) < TM_CACHE_LIMIT + 1 && p != k->head);
  tm_link_set(p, k->head);
  k->head = p;
  tm_cache_set_n(k, tm_cache_n(k) + 1);
}

/* The cache of class c overflowed: the whole list goes to the stash as it
 * is, without a walk (glibc-simple 1.21x the old flush, where the older half
 * only, which needs a walk to the middle, gave 1.14x); if the stash is full,
 * the older half goes to the bitmaps, as before the stash. h->lock held. */
static void tm_cache_spill(tm_heap *h, unsigned c) {
  tm_cache *k = &h->cache[c];
  if (tm_stash_put(h, c, k->head, tm_cache_n(k))) {
    k->head = NULL;
    tm_cache_set_n(k, 0);
  } else {
    tm_cache_flush(h, c, k->cap / 2u);
  }
}

/* free() found the cache of p's class full, or its heap claimed by the
 * pager: under the lock, make room if there is none (tm_cache_spill), then
 * cache p. */
void tm_free_cache_full(tm_heap *h, void *p) {
  TM_ASSERT(!atomic_load_explicit(&h->busy, memory_order_relaxed)); /* out of the handshake first */
  tm_span *s = tm_span_of(tm_segment_base(p), p);
  unsigned c = s->size_class;
  tm_heap_lock(h);
  tm_heap_honour_flush(h);
  tm_class_touch(h, c);
  if (h->cache[c].cap == 0) { /* M_PERTURB: no cache, straight to the bitmap */
    tm_perturb_free(p, s->block_size);
    ((uint64_t *)p)[1] = tm_free_key();
    tm_blocks_release(h, p, 1);
    tm_heap_unlock(h);
    return;
  }
  if (tm_cache_n(&h->cache[c]) >= h->cache[c].cap) tm_cache_spill(h, c);
  tm_cache_push(&h->cache[c], p);
  tm_heap_unlock(h);
}

/* malloc() found a cache link that decodes to no block: something wrote
 * into a free block (an overflow from its neighbour, a use after free).
 * Reported with the block; if the program goes on (TIDE_ABORT_ON_ERROR=0),
 * the class's cached blocks are abandoned, not trusted. */
static void tm_cache_drop_corrupt(tm_heap *h, unsigned c, void *top) {
  tm_report_invalid("malloc", top, "corrupted free block (overwritten after free) at");
  tm_cache *k = &h->cache[c];
  k->head = NULL;
  tm_cache_set_n(k, 0);
}

/* From the malloc fast path, inside the claim handshake (no pager holds
 * the caches). */
void *tm_cache_corrupt(tm_heap *h, unsigned c, void *top) {
  tm_cache_drop_corrupt(h, c, top);
  tm_claim_leave(h);
  return tm_alloc_slow(h, c);
}

/* The malloc fast path found its heap claimed: the pager is flushing the
 * caches, under the lock. Wait for it to finish, then try again. */
void *tm_malloc_claimed(tm_heap *h, unsigned c) {
  tm_heap_lock(h);
  tm_heap_unlock(h);
  return tm_malloc_in_class(c);
}

/* A large or huge malloc looks at the first link of every class's cache,
 * as glibc checks its small bins on a large request: an overwritten free
 * block is found before the program goes on writing through it, not only
 * when its class is next allocated (72 loads, against the microseconds of
 * a page-run allocation). */
void tm_cache_check_heads(void) {
  tm_heap *h = tm_heap_tls;
  if (tm_heap_state(h) != TM_HEAP_ACTIVE) return;
  tm_claim_enter(h);
  if (!tm_claimed(h)) /* (a claiming pager is flushing them) */
    for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
      void *top = h->cache[c].head;
      if (TM_UNLIKELY(top != NULL) && TM_UNLIKELY(tm_link_bad(tm_link_get(top)))) tm_cache_drop_corrupt(h, c, top);
    }
  tm_claim_leave(h);
}

/* free() found the free key in p: a double free. The block cannot be
 * searched for: it may sit in another thread's outbox or cache, which only
 * that thread (or its lock) can look at. No block is handed out with the
 * key in it, and no program can store it by design (random per process):
 * data that equals it by chance, at 2^-64, is the only false alarm. */
void tm_free_suspect(void *p, const char *who) { tm_report_invalid(who, p, "double free"); }

/* ---- refilling a size class (h->lock) ------------------------------------ */
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
    tm_span *s = tm_orphan_take(c, tm_numa_node());
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
  tm_span *s = tm_slices_alloc(n, tm_class_needs_bitmap(c, n));
  tm_unlock(&tm_global_lock);
  if (!s) return NULL;
  tm_span_init_small(s, c, h);
  TM_STAT_ADD(span_bytes, (size_t)n << TM_SLICE_SHIFT);
  return s;
}

/* Every empty span of class c retires, the current one and the spare
 * included (h->lock held). */
static void tm_heap_retire_class(tm_heap *h, unsigned c) {
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
    tm_heap_reconsider(h, s, true);
  }
}

/* Before the heap takes new slices for class c, the classes none of its
 * last TM_CLASS_COLD_AGE slow paths were for give back what they hold: their
 * cache and stash go to the bitmaps, where the spans that become empty
 * retire (all but the current one and one spare, as on any free). Their
 * slices, still resident, are what the new span is then cut from (dirty
 * slices first), instead of fresh pages: a program that moves from one size
 * to the next (glibc-simple's rounds of 1,600 blocks of 16, 32, ... 512
 * bytes) kept the peak of every size at once, 3.1 MB against glibc's 2.0 MB.
 * A class gone for longer (TM_CLASS_GONE_AGE) gives back its current span and
 * the spare too, if they are empty: glibc-simple's five sizes before the last
 * kept 640 KiB in them (4.5 MB against 3.7). Not a class that is merely cold:
 * retiring those made the sizes that are rare but never gone (glibc-thread's
 * up to 32 KiB) take new spans over and over, each cut from fresh slices while
 * the old ones waited for the pager (peak RSS 5.6 MB against 3.5). Only here,
 * where memory would grow: a cold class's next miss costs a refill. */
static void tm_heap_release_cold(tm_heap *h, unsigned c) {
  for (unsigned k = 0; k < TM_NUM_CLASSES; k++) {
    uint32_t age = tm_class_age(h, k);
    if (k == c || age < TM_CLASS_COLD_AGE) continue;
    if (tm_cache_n(&h->cache[k])) tm_cache_flush(h, k, 0);
    tm_stash_flush(h, k);
    if (age >= TM_CLASS_GONE_AGE) tm_heap_retire_class(h, k);
  }
}

/* A span of class c with a free block, made current. */
static tm_span *tm_heap_current(tm_heap *h, unsigned c) {
  tm_span *s = h->cur[c];
  if (s != &tm_empty_span) {
    if (s->summary) return s; /* the usual case: no need to look further */
    tm_span_collect(s);
    if (tm_span_refresh(s)) return s;
    tm_heap_make_full(h, s);
    h->cur[c] = &tm_empty_span;
  }
  tm_heap_drain_remote(h, false);
  s = tm_heap_pick_partial(h, c);
  if (!s) s = tm_heap_adopt_orphan(h, c);
  if (!s) {
    tm_heap_release_cold(h, c);
    s = tm_heap_new_span(h, c);
  }
  if (!s) return NULL;
  s->queue = TM_Q_CURRENT;
  h->cur[c] = s;
  return s;
}

/* How many blocks a cache miss moves from the span into the cache: about
 * two OS pages worth (the link written into each block touches its page),
 * at least two blocks, at most half the cache, so that frees still fit, and
 * at most TM_REFILL_MAX (they pass through the stack). */
#define TM_REFILL_BYTES (2 * TM_PAGE_SIZE)
#define TM_REFILL_MAX 128
static unsigned tm_refill_count(const tm_cache *k, size_t bsize) {
  unsigned n = (unsigned)(TM_REFILL_BYTES / bsize);
  if (n < 2) n = 2;
  if (n > k->cap / 2) n = k->cap / 2;
  if (n > TM_REFILL_MAX) n = TM_REFILL_MAX;
  return n ? n : 1;
}

/* One block of class c for the caller, and up to a page worth more into the
 * cache, lowest address on top. h->lock held. */
static void *tm_heap_refill(tm_heap *h, unsigned c) {
  tm_span *s = tm_heap_current(h, c);
  if (!s) return NULL;
  tm_cache *k = &h->cache[c];
  unsigned want = tm_refill_count(k, s->block_size);
  unsigned room = (unsigned)k->cap - tm_cache_n(k) + 1u;
  if (want > room) want = room;
  void *got[TM_REFILL_MAX];
  unsigned n = tm_span_pop_batch(s, got, want);
  TM_ASSERT(n >= 1); /* tm_heap_current found a free block */
  while (n > 1) tm_cache_push(k, got[--n]);
  ((uint64_t *)got[0])[1] = 0; /* no longer marked free (see tm_free_key) */
  return got[0];
}

static void *tm_heap_alloc_slow(tm_heap *h, unsigned c) {
  TM_ASSERT(!atomic_load_explicit(&h->busy, memory_order_relaxed)); /* out of the handshake first */
  tm_heap_lock(h);
#if TIDE_DEBUG
  if ((++h->check_count & 255) == 0 && tm_heap_check_locked(h) != 0)
    tm_report_invalid("malloc", h, "heap consistency check failed for heap");
#endif
  tm_heap_honour_flush(h);
  tm_class_touch(h, c);
  if (h->misses[c] < UINT16_MAX) h->misses[c]++;
  /* blocks this thread freed for others first, if there are enough of them:
   * a few would make a slow path of every other malloc where a thread frees
   * someone's block and allocates one (cache-scratch: 0.93x), and would sit
   * next to their owner's blocks, which other threads may be writing
   * (passive false sharing); half a refill's worth instead */
  void *p = tm_outbox_take(h, c, tm_refill_count(&h->cache[c], tm_class_size(c)) / 2 + 1);
  if (!p) p = tm_stash_take(h, c); /* then what the cache let go of */
  if (!p && (p = tm_heap_refill(h, c)) != NULL) tm_stash_refilled(h, c);
  tm_heap_unlock(h);
  if (!p) errno = ENOMEM;
  return p;
}

/* ---- the heap for threads whose own heap is gone ---------------------------- */
/* Serves threads whose own heap was already torn down (late TLS destructors,
 * libc's thread teardown). Made on first use; protected by tm_shared_lock.
 * Its cache capacity is 0: every allocation is a slow path, and its blocks
 * are always freed remotely (no thread has it as its own heap). */
static tm_heap *tm_heap_shared;
static tm_lock_t tm_shared_lock = TM_LOCK_INIT;

static void *tm_alloc_shared(unsigned c) {
  tm_lock(&tm_shared_lock);
  tm_heap *h = tm_heap_shared;
  if (!h) {
    h = tm_heap_create();
    if (h) {
      for (unsigned k = 0; k < TM_NUM_CLASSES; k++) h->cache[k].cap = h->outbox[k].cap = 0;
      tm_heap_set_state(h, TM_HEAP_ACTIVE);
      tm_heap_shared = h;
    }
  }
  void *p = h ? tm_heap_alloc_slow(h, c) : NULL;
  tm_unlock(&tm_shared_lock);
  return p;
}

bool tm_heap_is_shared(const tm_heap *h) { return h == tm_heap_shared; }

/* The pager thread's heap: it must never allocate. A debug build stops at
 * once; otherwise the block comes from the shared heap, as for a thread
 * whose heap is gone, and nothing deadlocks. */
static tm_heap tm_heap_pager = {.cur = {[0 ... TM_NUM_CLASSES - 1] = &tm_empty_span}, .state = TM_HEAP_EXITING};

void tm_front_mark_pager_thread(void) {
  tm_heap_tls = &tm_heap_pager;
  tm_outbox_enable_fast(); /* the outboxes' pushes can go without the lock now */
}

/* fork child: if a vanished thread held the shared heap, its lists may be
 * half updated; leave it DEAD with its spans (frees into them are parked
 * there) and make a new one on next use. */
void tm_heap_shared_after_fork(void) {
  if (!tm_lock_is_held(&tm_shared_lock)) return;
  if (tm_heap_shared) tm_heap_set_state(tm_heap_shared, TM_HEAP_DEAD);
  tm_heap_shared = NULL;
  atomic_store(&tm_shared_lock.held, 0);
}

void *tm_alloc_slow(tm_heap *h, unsigned c) {
  if (TM_UNLIKELY(tm_heap_state(h) != TM_HEAP_ACTIVE)) {
    TM_ASSERT(h != &tm_heap_pager); /* the pager allocated */
    if (tm_heap_state(h) == TM_HEAP_EXITING) {
      void *p = tm_alloc_shared(c);
      if (p) tm_perturb_alloc(p, tm_class_size(c));
      return p;
    }
    h = tm_heap_new_for_thread();
    if (!h) {
      errno = ENOMEM;
      return NULL;
    }
  }
  void *p = tm_heap_alloc_slow(h, c);
  if (p) tm_perturb_alloc(p, tm_class_size(c));
  tm_pager_maybe_start();
  return p;
}

/* ---- frees that are not the owner's fast path ---------------------------- */
void tm_free_other(void *p, tm_span *s, const char *who) {
  unsigned kind = tm_span_kind(s);
  if (kind == TM_SPAN_SMALL) {
    uint32_t idx;
    if (!tm_span_block_index(s, p, &idx)) {
      tm_report_invalid(who, p, "invalid pointer");
      return;
    }
    /* The free key in word 1: the block sits in a cache, an outbox, on the
     * span's thread_free list, or in its bitmap (see tm_free_suspect). */
    if (!tm_free_foreign_ok(p, s->block_size, who)) return;
    tm_heap *h = tm_heap_tls;
    if (tm_span_owner(s) == h) {
      /* our own full span (the tag sent us here): free into its bitmap and
       * let it move back to the partial queue */
      tm_heap_lock(h);
      if (tm_perturb() && !tm_block_is_free_locked(h, s, p)) tm_perturb_free(p, s->block_size);
      if (tm_span_free_block(s, p, idx)) {
        ((uint64_t *)p)[1] = tm_free_key(); /* so that a second free is caught at once */
        if (s->queue != TM_Q_CURRENT) tm_heap_reconsider(h, s, false);
      }
      tm_heap_unlock(h);
      return;
    }
    tm_free_foreign_mark(p, s->block_size);
    tm_outbox_free(s, p);
  } else if (kind == TM_SPAN_LARGE && p == s->start) {
    if (TIDE_HARDENED && !tm_guard_check_block(who, p, s->large_size)) return;
    tm_perturb_free(p, s->large_size);
    tm_large_free(s);
  } else if (kind == TM_SPAN_HUGE && p == s->start) {
    if (TIDE_HARDENED && !tm_guard_check_block(who, p, s->large_size)) return;
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

/* The owner's fast path found p out of place in its own span: say why. */
void tm_free_local_bad(void *p) {
  tm_span *s = tm_span_of(tm_segment_base(p), p); /* the fast path's may be a mirror, without the bitmap */
  tm_heap *h = tm_heap_tls;
  uint32_t idx;
  tm_heap_lock(h);
  bool twice = tm_span_block_index(s, p, &idx) && (tm_span_bits(s)[idx >> 6] & ((uint64_t)1 << (idx & 63)));
  tm_heap_unlock(h);
  tm_report_invalid("free", p, twice ? "double free" : "invalid pointer");
}

/* ---- whole-heap operations ------------------------------------------------ */
/* The outboxes sent back, remote frees collected, pages given back applied,
 * and every empty span retired, the current ones and the spare included
 * (h->lock held; the pager calls this for an idle heap, after taking its
 * caches if it could claim them, tm_heap_flush_claimed_caches). */
void tm_heap_retire_empty(tm_heap *h, bool outboxes) {
  tm_stashes_flush(h);
  if (outboxes) tm_outboxes_flush(h);
  tm_heap_drain_remote(h, false);
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) tm_heap_retire_class(h, c);
  for (tm_span *s = h->full.first, *next; s; s = next) {
    next = s->next;
    tm_span_collect(s);
    tm_heap_reconsider(h, s, true);
  }
}

/* Everything the owner can give back without help: its caches flushed,
 * then tm_heap_retire_empty. */
void tm_heap_collect_all(tm_heap *h) {
  if (tm_heap_state(h) != TM_HEAP_ACTIVE) return;
  tm_heap_lock(h);
  tm_heap_flush_caches(h);
  tm_heap_retire_empty(h, true);
  tm_heap_unlock(h);
}

tm_heap *tm_heap_shared_get(void) { return tm_heap_shared; }

/* The length of a cache, outbox or stashed list of class c, up to the first block
 * that is not a block of that class in use (reported): only h's own spans'
 * bitmaps can be read, the others change under their owners' locks. */
unsigned tm_check_block_list(tm_heap *h, unsigned c, void *b, const char *what) {
  unsigned len = 0;
  for (; b && len <= TM_CACHE_LIMIT; b = tm_link_get(b), len++) {
    tm_segment *seg = tm_link_bad(b) ? NULL : tm_segment_of(b);
    tm_span *s = seg ? tm_span_of(seg, b) : NULL;
    uint32_t idx;
    if (!s || tm_span_kind(s) != TM_SPAN_SMALL || s->size_class != c || !tm_span_block_index(s, b, &idx) ||
        (tm_span_owner(s) == h && (tm_span_bits(s)[idx >> 6] & ((uint64_t)1 << (idx & 63))))) {
      tm_check_problem(what, b);
      return UINT32_MAX; /* do not follow a link out of a bad block */
    }
  }
  return len;
}

int tm_heap_check_locked(tm_heap *h) {
  int problems = 0;
  if (tm_heap_state(h) != TM_HEAP_ACTIVE) return 0;
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
    if (tm_cache_n(k) > k->cap || k->cap > TM_CACHE_LIMIT) problems += tm_check_problem("cache count out of range", k);
    unsigned len = tm_check_block_list(h, c, k->head, "cached block is not a live block of its class");
    if (len != tm_cache_n(k)) problems += tm_check_problem("cache list length differs from its count", k);
    if (tm_outbox_n(&h->outbox[c]) > h->outbox[c].cap) problems += tm_check_problem("outbox count out of range", &h->outbox[c]);
    len = tm_check_block_list(h, c, h->outbox[c].head, "outbox block is not a live block of its class");
    if (len != tm_outbox_n(&h->outbox[c]))
      problems += tm_check_problem("outbox list length differs from its count", &h->outbox[c]);
  }
  problems += tm_stash_check(h);
  for (tm_span *s = h->full.first; s; s = s->next) {
    problems += tm_span_check(s, h);
    if (s->queue != TM_Q_FULL) problems += tm_check_problem("full span in the wrong queue", s);
    if (s->next && s->next->prev != s) problems += tm_check_problem("broken queue link", s);
  }
  return problems;
}

int tm_heap_check(tm_heap *h) {
  if (tm_heap_state(h) != TM_HEAP_ACTIVE) return 0;
  tm_heap_lock(h);
  int problems = tm_heap_check_locked(h);
  tm_heap_unlock(h);
  return problems;
}
