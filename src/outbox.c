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
 *   - past the cache's capacity, the older half goes back, consecutive
 *     blocks of one span in one CAS (snmalloc's batching per destination);
 *   - the scavenge, thread exit, a flush request and the pager on an idle
 *     heap send everything back.
 * The outbox is under the heap's lock, not the owner's alone as the cache
 * is: the pager, which only try-locks a heap, can send an idle thread's
 * outbox back itself, so a thread that freed others' blocks and went idle
 * strands nothing. Outbox (and cached) blocks count as used in their spans,
 * as blocks on thread_free do: a span with one there is never retired. */
#include "internal.h"

/* Own blocks go into their span's bitmap; h->lock held. */
static void tm_block_release_own(tm_heap *h, tm_span *s, void *p, uint32_t idx) {
  if (tm_span_free_block(s, p, idx) && (s->used == 0 || s->queue == TM_Q_FULL)) tm_heap_reconsider(h, s, false);
}

/* Release up to max blocks of `list`, linked as caches link (stopping at
 * NULL or at a link that decodes to no block: in a fork child a list may
 * have been cut mid-push). A block of one of h's spans goes into its
 * bitmap; any other goes to its span's thread_free, a run of consecutive
 * blocks of one span in one CAS. h->lock held. */
void tm_blocks_release(tm_heap *h, void *list, unsigned max) {
  tm_span *to = NULL;                 /* the span of the chain being built */
  tm_block *first = NULL, *last = NULL; /* the chain, linked through next */
  for (unsigned i = 0; list && !tm_link_bad(list) && i < max; i++) {
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
}

/* Send the older blocks of h's outbox of class c back until `keep` remain
 * (h->lock held). */
void tm_outbox_flush(tm_heap *h, unsigned c, unsigned keep) {
  tm_outbox *o = &h->outbox[c];
  TM_ASSERT(tm_heap_locked(h));
  if (o->n <= keep) return;
  void *last = NULL; /* the last block kept; its link is cut */
  void *rest = o->head;
  for (unsigned kept = 0; rest && !tm_link_bad(rest) && kept < keep; kept++) {
    last = rest;
    rest = tm_link_get(rest);
  }
  if (last)
    tm_link_set(last, NULL);
  else
    o->head = NULL;
  tm_blocks_release(h, rest, o->n - keep);
  o->n = keep;
}

void tm_outboxes_flush(tm_heap *h) {
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) tm_outbox_flush(h, c, 0);
}

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
  tm_heap_lock(h);
  unsigned cap = tm_cache_cap(c); /* the base capacity; 0: M_PERTURB */
  if (TM_UNLIKELY(cap == 0)) {
    tm_heap_unlock(h);
    return tm_remote_free(s, p);
  }
  tm_outbox *o = &h->outbox[c];
  TM_ASSERT(o->n <= cap && p != o->head);
  tm_link_set(p, o->head);
  o->head = p;
  if (++o->n > cap) tm_outbox_flush(h, c, cap / 2);
  tm_heap_unlock(h);
}

/* malloc found the cache of class c empty: the outbox becomes the cache,
 * and its newest block is returned (NULL if there is none). h->lock held. */
void *tm_outbox_take(tm_heap *h, unsigned c) {
  tm_outbox *o = &h->outbox[c];
  tm_cache *k = &h->cache[c];
  void *top = o->head;
  if (!top || tm_cache_n(k) != 0 || o->n - 1 > k->cap) return NULL;
  k->head = tm_link_get(top); /* a bad link is the cache pop's to catch */
  tm_cache_set_n(k, o->n - 1);
  o->head = NULL;
  o->n = 0;
  ((uint64_t *)top)[1] = 0; /* no longer marked free (see tm_free_key) */
  return top;
}

/* Is p on h's outbox of class c? h->lock held. */
bool tm_outbox_holds(const tm_heap *h, unsigned c, const void *p) {
  const void *b = h->outbox[c].head;
  for (unsigned i = 0; b && !tm_link_bad(b) && i <= TM_CACHE_BASE; i++, b = tm_link_get(b))
    if (b == p) return true;
  return false;
}

/* Bytes in h's outboxes (h->lock held: the census). */
size_t tm_outbox_bytes(const tm_heap *h) {
  size_t sum = 0;
  for (unsigned c = 0; c < TM_NUM_CLASSES; c++) sum += (size_t)h->outbox[c].n * tm_class_size(c);
  return sum;
}
