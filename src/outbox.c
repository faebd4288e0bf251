/* Freed blocks on their way back to their spans: what a cache flush lets go
 * of, and the outbox, where a thread keeps the blocks of other heaps' spans
 * it freed (doc/design.md, "Cross-thread frees").
 *
 * A cross-thread free used to be a CAS on the owning span's thread_free
 * word, a cache line the owner reads and writes too, and the owner later
 * took a cache miss on each block's link when it collected them. Now the
 * freeing thread keeps the block, in its outbox of the block's class:
 *   - its next malloc of that class, finding its cache empty, takes the
 *     whole outbox as its cache (tcmalloc's design: a producer-consumer
 *     pair that also allocates reuses the blocks where they are, hot in
 *     the freeing core's cache, and they never travel);
 *   - past its capacity, the newer half goes back, consecutive blocks of
 *     one span in one CAS (snmalloc's batching per destination);
 *   - the scavenge, thread exit, a flush request and the pager on an idle
 *     heap send everything back.
 * The pager can send an idle thread's outbox back itself, so a thread that
 * freed others' blocks and went idle strands nothing (and take its caches,
 * the same way). Everything but the common push happens under the heap's
 * lock, which the pager try-locks. The common push (a block into an outbox
 * that already holds some, with room), like the caches' fast paths, takes
 * no lock: it is an asymmetric Dekker handshake with the pager, the claim,
 * whose heavy side is membarrier(2) (doc/design.md, "The claim"):
 *
 *   owner                        pager (holding h->lock)
 *   busy = 1                     claim = 1
 *   (compiler barrier)           membarrier(PRIVATE_EXPEDITED)
 *   if claim: take the lock      if busy: give up, come back later
 *   push (or pop)                send the outboxes back, flush the caches
 *   busy = 0 (release)           claim = 0 (release)
 *
 * membarrier makes every running thread of the process execute a full
 * barrier, so either the pager sees busy = 1 or the owner sees claim =
 * 1: never both 0 while both go on. The first block into an empty outbox
 * and a push that overflows take the lock (so the pager sees the activity
 * and is woken), and an outbox that is empty cannot become non-empty
 * without the lock: a pager that finds them all empty needs no claim.
 * Without membarrier (refused, or no pager thread yet), every push locks.
 *
 * Outbox (and cached) blocks count as used in their spans, as blocks on
 * thread_free do: a span with one there is never retired. */
#include "internal.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Own blocks go into their span's bitmap; h->lock held. */
static void tm_block_release_own(tm_heap *h, tm_span *s, void *p, uint32_t idx) {
  if (tm_span_free_block(s, p, idx) && (s->used == 0 || s->queue == TM_Q_FULL)) tm_heap_reconsider(h, s, false);
}

/* Release up to max blocks of `list`, linked as caches link (stopping at
 * NULL or at a link that decodes to no block: in a fork child a list may
 * have been cut mid-push). A block of one of h's spans goes into its
 * bitmap; any other goes to its span's thread_free, a run of consecutive
 * blocks of one span in one CAS. h->lock held. Returns how many went. */
unsigned tm_blocks_release(tm_heap *h, void *list, unsigned max) {
  tm_span *to = NULL;                 /* the span of the chain being built */
  tm_block *first = NULL, *last = NULL; /* the chain, linked through next */
  unsigned i = 0;
  for (; list && !tm_link_bad(list) && i < max; i++) {
    void *next = tm_link_get(list);
    tm_span *s = tm_span_of(tm_segment_base(list), list);
    uint32_t idx;
    if (tm_span_kind(s) != TM_SPAN_SMALL || !tm_span_block_index(s, list, &idx)) {
      tm_report_invalid("free", list, "invalid pointer");
    } else if (tm_span_owner(s) == h) {
      tm_block_release_own(h, s, list, idx);
    } else {
      /* the block counts in s->used until the CAS: s cannot go away */
      if (s != to && first) {
        tm_remote_free_chain(to, first, last);
        first = NULL;
      }
      to = s;
      tm_block *b = list;
      if (first)
        last->next = b;
      else
        first = b;
      last = b;
    }
    list = next;
  }
  if (first) tm_remote_free_chain(to, first, last);
  return i;
}

/* ---- lists linked as caches link (the cache, the outbox) ----------------- */
/* Keep the first n blocks of the list at *head there and return the rest,
 * cut off; fewer stay if the list ends, or reaches a link that decodes to
 * no block (in a fork child a list may have been cut mid-push). *kept, if
 * given, says how many stayed. */
void *tm_list_cut(void **head, unsigned n, unsigned *kept) {
  void *last = NULL, *rest = *head;
  unsigned i = 0;
  for (; rest && !tm_link_bad(rest) && i < n; i++) {
    last = rest;
    rest = tm_link_get(rest);
  }
  if (last)
    tm_link_set(last, NULL);
  else
    *head = NULL;
  if (kept) *kept = i;
  return rest;
}

/* An empty cache takes `list` (n blocks, linked as caches link) as its
 * blocks, and the top one is returned, no longer marked free (see
 * tm_free_key): a malloc miss served by the outbox or the stash. */
void *tm_cache_take_list(tm_cache *k, void *list, unsigned n) {
  TM_ASSERT(tm_cache_n(k) == 0 && list && n >= 1);
  k->head = tm_link_get(list); /* a bad link is the cache pop's to catch */
  tm_cache_set_n(k, n - 1);
  ((uint64_t *)list)[1] = 0;
  return list;
}

/* Is p on the list starting at b (of at most TM_CACHE_LIMIT + 1 blocks)? */
bool tm_list_holds(const void *b, const void *p) {
  for (unsigned i = 0; b && !tm_link_bad(b) && i <= TM_CACHE_LIMIT; i++, b = tm_link_get(b))
    if (b == p) return true;
  return false;
}

/* Send the older blocks of h's outbox of class c back until `keep` remain
 * (h->lock held, and the outbox claimed if not by its owner). */
void tm_outbox_flush(tm_heap *h, unsigned c, unsigned keep) {
  tm_outbox *o = &h->outbox[c];
  TM_ASSERT(tm_heap_locked(h));
  unsigned n = tm_outbox_n(o);
  if (n <= keep) return;
  /* the list as it is, not n - keep blocks of it: a count gone wrong would
   * otherwise strand the blocks past it */
  unsigned sent = tm_blocks_release(h, tm_list_cut(&o->head, keep, NULL), TM_CACHE_LIMIT + 1);
  TM_ASSERT(sent == n - keep);
  (void)sent;
  atomic_store_explicit(&o->n, keep, memory_order_relaxed);
}

/* Send the newest blocks of the outbox of class c back until `keep` remain
 * (h->lock held): on overflow, the blocks still hot in this core's cache,
 * whose links cost nothing to follow; sending the oldest instead took a
 * cache miss per block to walk them (churn, whose long-lived threads only
 * free, ran 3-5% slower than before the outbox that way, and 1% faster
 * this way). The older ones wait for a malloc miss, a scavenge or the
 * pager. */
static void tm_outbox_flush_newest(tm_heap *h, unsigned c, unsigned keep) {
  tm_outbox *o = &h->outbox[c];
  unsigned n = tm_outbox_n(o);
  if (n <= keep) return;
  unsigned go = n - keep;
  void *first = o->head;
  if (!first || tm_link_bad(first)) return;
  unsigned cut;
  o->head = tm_list_cut(&first, go, &cut); /* first: the newest `go` */
  TM_ASSERT(cut == go);
  atomic_store_explicit(&o->n, keep, memory_order_relaxed);
  tm_blocks_release(h, first, cut);
}

void tm_outboxes_flush(tm_heap *h) {
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) tm_outbox_flush(h, c, 0);
}

/* ---- the push without the lock ---------------------------------------------- */
/* Set once membarrier(2) is registered for the process (by the pager thread
 * as it starts), cleared in a fork child until its own pager registers. */
atomic_bool tm_outbox_fast;

void tm_outbox_enable_fast(void) {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
    atomic_store_explicit(&tm_outbox_fast, true, memory_order_relaxed);
}

void tm_outbox_after_fork(void) { atomic_store_explicit(&tm_outbox_fast, false, memory_order_relaxed); }

/* The pager, holding h->lock, wants what an idle heap keeps outside the
 * lock's reach: its outboxes and its caches. Returns what it may touch
 * (TM_CLAIM_*; with TM_CLAIM_HELD, tm_heap_unclaim after), 0 if the owner
 * is inside an operation (try again later).
 *   - Outboxes: an empty one fills only under the lock, so all empty need
 *     no claim; without membarrier (refused, or no pager thread yet) every
 *     push takes the lock, so the claim needs no barrier either.
 *   - Caches: the fast paths push and pop without the lock, from empty
 *     too; only with membarrier does the claim keep them out, and an empty
 *     one has nothing to take. */
unsigned tm_heap_claim(tm_heap *h) {
  TM_ASSERT(tm_heap_locked(h));
  bool fast = atomic_load_explicit(&tm_outbox_fast, memory_order_relaxed);
  bool outboxes = false, caches = false;
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) {
    outboxes |= tm_outbox_n(&h->outbox[c]) != 0;
    caches |= fast && tm_cache_n(&h->cache[c]) != 0;
  }
  if (!outboxes && !caches) return TM_CLAIM_OUTBOXES;
  atomic_store_explicit(&h->claim, 1, memory_order_relaxed);
  if (fast && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
    /* registered, yet refused (cannot happen): the lock alone cannot keep
     * the owner out, so leave it all to the owner */
    atomic_store_explicit(&h->claim, 0, memory_order_relaxed);
    return 0;
  }
  if (atomic_load_explicit(&h->busy, memory_order_acquire)) {
    atomic_store_explicit(&h->claim, 0, memory_order_relaxed);
    TM_STAT_ADD(outbox_claims_busy, 1);
    return 0;
  }
  TM_STAT_ADD(outbox_claims, 1);
  return TM_CLAIM_OUTBOXES | TM_CLAIM_HELD | (fast ? TM_CLAIM_CACHES : 0);
}

/* Done (h->lock still held). */
void tm_heap_unclaim(tm_heap *h) { atomic_store_explicit(&h->claim, 0, memory_order_release); }

/* This thread frees p, a block of s, which belongs to another heap (or to
 * none: an orphan). The caller checked p and marked it free. */
void tm_outbox_free(tm_span *s, void *p) {
  tm_heap *h = tm_heap_tls;
  if (TM_UNLIKELY(tm_heap_state(h) != TM_HEAP_ACTIVE)) {
    /* a thread that only frees gets a heap, as a malloc would give it; one
     * whose heap is gone (exiting, the pager) sends the block at once */
    h = tm_heap_state(h) == TM_HEAP_UNINIT ? tm_heap_new_for_thread() : NULL;
    if (!h) return tm_remote_free(s, p);
  }
  unsigned c = s->size_class;
  tm_outbox *o = &h->outbox[c];
  /* 0: M_PERTURB */
  if (TM_LIKELY(tm_outbox_push_fast(h, o, p))) return;
  tm_heap_lock(h);
  unsigned cap = o->cap;
  if (TM_UNLIKELY(cap == 0)) {
    tm_heap_unlock(h);
    return tm_remote_free(s, p);
  }
  unsigned n = tm_outbox_n(o);
  TM_ASSERT(n <= cap && p != o->head);
  tm_link_set(p, o->head);
  o->head = p;
  atomic_store_explicit(&o->n, n + 1, memory_order_relaxed);
  if (n + 1 > cap) tm_outbox_flush_newest(h, c, cap / 2);
  tm_heap_unlock(h);
}

/* free()'s fast path checked p, a block of another heap's span, and marked
 * it free, but found its outbox empty, full or claimed. */
void tm_outbox_free_marked(void *p) { tm_outbox_free(tm_span_of(tm_segment_base(p), p), p); }

/* malloc found the cache of class c empty: if the outbox holds at least
 * `min` blocks, it becomes the cache, and its newest block is returned
 * (else NULL). h->lock held, by the owner. */
void *tm_outbox_take(tm_heap *h, unsigned c, unsigned min) {
  tm_outbox *o = &h->outbox[c];
  tm_cache *k = &h->cache[c];
  void *top = o->head;
  unsigned n = tm_outbox_n(o);
  if (!top || n < min || tm_cache_n(k) != 0 || n - 1 > k->cap) return NULL;
  o->head = NULL;
  atomic_store_explicit(&o->n, 0, memory_order_relaxed);
  return tm_cache_take_list(k, top, n);
}

/* Bytes in h's outboxes (the census: a look, with blocks coming and going). */
size_t tm_outbox_bytes(const tm_heap *h) {
  size_t sum = 0;
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) sum += (size_t)tm_outbox_n(&h->outbox[c]) * tm_class_size(c);
  return sum;
}
