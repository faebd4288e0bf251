/* The cross-thread handoff: how a block freed by a thread that does not own
 * its span reaches the span's owner, how the pager's purged pages come back
 * the same way, and how ownership changes without losing either (doc/
 * design.md, "Cross-thread frees").
 *
 * A span's thread_free word holds the list of blocks other threads freed
 * (linked through word 0 of the blocks; blocks are 16-byte aligned), a flag
 * BACK (the pager put pages in tm_span_pages.back), and, in its two low
 * bits, the notice state:
 *
 *   IDLE    the owner has not been told; the next remote free tells it
 *   BUSY    a remote freer is telling the owner right now: the owner cannot
 *           change, and the span cannot be retired, until it is done
 *   QUEUED  the span is on its owner's remote list; frees just push
 *   NEVER   there is no owner to tell (orphan, retired); frees just push
 *
 * Rules that make it safe:
 *   - only a remote freer (or the pager) moves IDLE -> BUSY -> QUEUED, and
 *     it reads the owner only after winning IDLE -> BUSY, so it tells the
 *     current owner;
 *   - a span is on a remote list exactly while BUSY (after the push) or
 *     QUEUED, so nothing on a list is ever retired (retiring needs used == 0
 *     and IDLE or NEVER) and no list entry points into a released segment;
 *   - the CAS that pushes a block or sets BACK is the pusher's last touch of
 *     the span; until the owner takes that word, the block (or the pages
 *     BACK announces) count in used, so the span stays alive;
 *   - every ownership change waits out BUSY (tm_notice_close) and goes
 *     through NEVER; a new owner opens the span again (tm_notice_open). */
#include "internal.h"

#define TM_TF_STATE ((uintptr_t)3)
#define TM_TF_FLAGS ((uintptr_t)(TM_TF_STATE | TM_TF_BACK))

TM_INLINE unsigned tm_tf_state(uintptr_t w) { return (unsigned)(w & TM_TF_STATE); }

unsigned tm_notice_state(const tm_span *s) {
  return tm_tf_state(atomic_load_explicit(&((tm_span *)s)->thread_free, memory_order_acquire));
}

bool tm_span_has_remote(const tm_span *s) {
  return (atomic_load_explicit(&((tm_span *)s)->thread_free, memory_order_relaxed) & ~TM_TF_STATE) != 0;
}

/* A BUSY window is a few instructions of another thread; it only lasts
 * longer if that thread is preempted inside it. */
static uintptr_t tm_wait_not_busy(tm_span *s) {
  unsigned spins = 0;
  uintptr_t w;
  while (tm_tf_state(w = atomic_load_explicit(&s->thread_free, memory_order_acquire)) == TM_NOTICE_BUSY) {
    if (++spins < 64) {
      tm_cpu_relax();
    } else {
      sched_yield();
      spins = 0;
    }
  }
  return w;
}

/* Push s on its owner's remote list; false if it has none (only after a
 * double free raced a retire). The caller won IDLE -> BUSY. The CAS is
 * seq_cst: with the load in tm_pager_activity it is one side of the pager's
 * sleep handshake (a sleeping pager is woken for an idle owner's notice). */
static bool tm_notify_owner(tm_span *s) {
  tm_heap *h = tm_span_owner(s);
  if (TM_UNLIKELY(!h)) return false;
  tm_span *head = atomic_load_explicit(&h->remote_spans, memory_order_relaxed);
  do {
    s->remote_next = head;
  } while (!atomic_compare_exchange_weak_explicit(&h->remote_spans, &head, s, memory_order_seq_cst,
                                                  memory_order_relaxed));
  return true;
}

/* The thread_free word after pushing the chain b..last (linked through
 * next; or nothing, for NULL) with `flags` on `old`, the notice state
 * becoming st; links last to the blocks there. */
static uintptr_t tm_tf_pushed(uintptr_t old, tm_block *b, tm_block *last, uintptr_t flags, unsigned st) {
  uintptr_t head = old & ~TM_TF_FLAGS;
  if (b) last->next = (tm_block *)head;
  return (b ? (uintptr_t)b : head) | (old & TM_TF_BACK) | flags | st;
}

/* The notifier's last step: push the chain b..last (or nothing, for NULL)
 * on s->thread_free, with `flags` (BACK); BUSY becomes QUEUED, or NEVER when
 * there was no owner to tell. The last touch of s. */
static void tm_push(tm_span *s, tm_block *b, tm_block *last, uintptr_t flags, bool told) {
  uintptr_t old = atomic_load_explicit(&s->thread_free, memory_order_relaxed);
  for (;;) {
    unsigned st = tm_tf_state(old);
    /* (a fork child may have forced BUSY away: then keep what it set) */
    if (st == TM_NOTICE_BUSY) st = told ? TM_NOTICE_QUEUED : TM_NOTICE_NEVER;
    /* seq_cst: one side of the pager's sleep handshake (tm_pager_activity) */
    if (atomic_compare_exchange_weak_explicit(&s->thread_free, &old, tm_tf_pushed(old, b, last, flags, st),
                                              memory_order_seq_cst, memory_order_relaxed))
      return;
  }
}

/* Push (the chain b..last, flags) and make sure whoever holds s will look at it: either
 * the CAS that pushes finds the owner told already (QUEUED, BUSY) or no
 * owner (NEVER), or the CAS takes IDLE -> BUSY and this thread tells the
 * owner. One loop, so that a push never lands on an IDLE word: a drain
 * between a look at the state and the push would leave the block there
 * with nobody told (test_handoff found this). */
static void tm_deliver(tm_span *s, tm_block *b, tm_block *last, uintptr_t flags) {
  uintptr_t old = atomic_load_explicit(&s->thread_free, memory_order_relaxed);
  for (;;) {
    unsigned st = tm_tf_state(old);
    if (st == TM_NOTICE_IDLE) {
      if (!atomic_compare_exchange_weak_explicit(&s->thread_free, &old, old | TM_NOTICE_BUSY,
                                                 memory_order_acquire, memory_order_relaxed))
        continue;
      bool told = tm_notify_owner(s);
      tm_push(s, b, last, flags, told);
      if (told) tm_pager_activity(); /* an idle owner: the pager may do its work */
      return;
    }
    /* seq_cst: one side of the pager's sleep handshake (tm_pager_activity) */
    if (atomic_compare_exchange_weak_explicit(&s->thread_free, &old, tm_tf_pushed(old, b, last, flags, st),
                                              memory_order_seq_cst, memory_order_relaxed)) {
      if (st == TM_NOTICE_NEVER && !flags) tm_pager_activity(); /* an orphan: only a sweep will see it */
      return;
    }
  }
}

/* A thread that does not own s frees p. Once p is on thread_free this
 * thread never touches s again: the owner may collect it and retire s. */
void tm_remote_free(tm_span *s, void *p) { tm_deliver(s, p, p, 0); }

/* The same for blocks first..last of s, already linked through next: one
 * CAS for all of them (an outbox flush, src/outbox.c). */
void tm_remote_free_chain(tm_span *s, void *first, void *last) { tm_deliver(s, first, last, 0); }

/* The pager has put purged pages in s's tm_span_pages.back: tell whoever
 * holds s, as a remote free would (the pages' blocks count in used until
 * then, so s is alive until this returns). */
void tm_span_give_back(tm_span *s) { tm_deliver(s, NULL, NULL, TM_TF_BACK); }

/* Take every block on thread_free, and BACK; the notice state stays.
 * Returns the word taken (decode with tm_span_collect_word). */
uintptr_t tm_span_take_remote(tm_span *s) {
  uintptr_t old = atomic_load_explicit(&s->thread_free, memory_order_relaxed);
  while (old & ~TM_TF_STATE) {
    if (atomic_compare_exchange_weak_explicit(&s->thread_free, &old, old & TM_TF_STATE, memory_order_acquire,
                                              memory_order_relaxed))
      return old;
  }
  return old & TM_TF_STATE;
}

/* The owner took s off its remote list: QUEUED -> IDLE (after waiting out
 * a notifier still finishing), and every block with it. From here the next
 * remote free tells the owner again. In a fork child a notifier may have
 * vanished inside BUSY: `forced` treats BUSY as done. */
uintptr_t tm_notice_take(tm_span *s, bool forced) {
  uintptr_t old = forced ? atomic_load_explicit(&s->thread_free, memory_order_acquire) : tm_wait_not_busy(s);
  for (;;) {
    unsigned st = tm_tf_state(old);
    unsigned nst = st == TM_NOTICE_NEVER ? TM_NOTICE_NEVER : TM_NOTICE_IDLE;
    TM_ASSERT(forced || st == TM_NOTICE_QUEUED || st == TM_NOTICE_NEVER);
    if (atomic_compare_exchange_weak_explicit(&s->thread_free, &old, nst, memory_order_acq_rel,
                                              memory_order_acquire))
      return old;
    if (!forced && tm_tf_state(old) == TM_NOTICE_BUSY) old = tm_wait_not_busy(s);
  }
}

/* Before s changes hands (abandon, retire): nobody may be told about it any
 * more. Waits out a notifier inside BUSY (unless `forced`, in a fork child).
 * Returns the state it had; QUEUED means s is still on the old owner's
 * remote list, which the caller drains. */
unsigned tm_notice_close(tm_span *s, bool forced) {
  uintptr_t old = forced ? atomic_load_explicit(&s->thread_free, memory_order_acquire) : tm_wait_not_busy(s);
  for (;;) {
    uintptr_t nw = (old & ~TM_TF_STATE) | TM_NOTICE_NEVER;
    if (atomic_compare_exchange_weak_explicit(&s->thread_free, &old, nw, memory_order_acq_rel,
                                              memory_order_acquire))
      return tm_tf_state(old);
    if (!forced && tm_tf_state(old) == TM_NOTICE_BUSY) old = tm_wait_not_busy(s);
  }
}

/* A new owner is in s->heap: NEVER -> IDLE, so remote frees tell it. */
void tm_notice_open(tm_span *s) {
  uintptr_t old = atomic_load_explicit(&s->thread_free, memory_order_relaxed);
  TM_ASSERT(tm_span_owner(s) != NULL);
  for (;;) {
    TM_ASSERT(tm_tf_state(old) == TM_NOTICE_NEVER);
    if (atomic_compare_exchange_weak_explicit(&s->thread_free, &old, old & ~TM_TF_STATE, memory_order_release,
                                              memory_order_relaxed))
      return;
  }
}

/* A fresh span (no block, no owner told): IDLE. */
void tm_notice_init(tm_span *s, bool owned) {
  atomic_store_explicit(&s->thread_free, owned ? TM_NOTICE_IDLE : TM_NOTICE_NEVER, memory_order_release);
}

/* Take the whole remote list of h (acquire: the notifiers' links). */
tm_span *tm_remote_list_take(tm_heap *h) {
  if (!atomic_load_explicit(&h->remote_spans, memory_order_relaxed)) return NULL;
  return atomic_exchange_explicit(&h->remote_spans, NULL, memory_order_acquire);
}
