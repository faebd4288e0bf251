/* Data-race check of the allocator's own code under ThreadSanitizer.
 * TSan replaces malloc/free with its own, so this program drives tidemalloc
 * through its internal entry points (tm_malloc/tm_free), compiled from source
 * with -fsanitize=thread: see scripts/sanitize.sh. Threads allocate, free
 * locally, hand blocks to the next thread through a mutex-protected mailbox
 * (cross-thread frees, through the outboxes), exit and get replaced (heap
 * abandon and adoption), while the pager thread gives memory back with no
 * delay and takes the outboxes and caches of heaps it counts idle (all of
 * them: the claim races the fast paths). Every block is
 * stamped with its size and address and checked before it is freed, by
 * whichever thread frees it, and the heaps and segments must pass the
 * consistency check at the end. A further thread turns M_PERTURB on and off
 * (mallopt's steps: the byte, the cache generation) while the workers run,
 * so every heap follows new cache capacities in the middle of its traffic.
 * Bursts of one size overflow the caches into the stashes, which the pager
 * sends back from heaps it counts idle, under the heaps' locks.
 * Exit status 0 and no TSan report means clean. */
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 4, ROUNDS = 3, OPS = 20000, SLOTS = 256, MAILBOX = 1024 };

typedef struct {
  void *p;
  size_t n;
} block;

static pthread_mutex_t box_lock = PTHREAD_MUTEX_INITIALIZER;
static block box[MAILBOX];
static size_t box_n;
static atomic_int damaged;
static atomic_int stash_seen; /* bursts after which the heap had a stash */

/* Stamp: size and address in the first 16 bytes (a byte pattern below). */
static uint64_t stamp_word(const void *p, size_t n) { return ((uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull) ^ n; }
static void stamp(void *p, size_t n) {
  if (n >= 16) {
    uint64_t w[2] = {n, stamp_word(p, n)};
    memcpy(p, w, sizeof w);
  } else {
    memset(p, (int)(n + 1), n);
  }
}
static void check_and_free(block b) {
  if (!b.p) return;
  bool ok = true;
  if (b.n >= 16) {
    uint64_t w[2];
    memcpy(w, b.p, sizeof w);
    ok = w[0] == b.n && w[1] == stamp_word(b.p, b.n);
  } else {
    for (size_t i = 0; i < b.n; i++) ok = ok && ((unsigned char *)b.p)[i] == (unsigned char)(b.n + 1);
  }
  if (!ok && atomic_fetch_add(&damaged, 1) == 0) printf("tsan_stress: block %p of %zu bytes damaged\n", b.p, b.n);
  tm_free(b.p);
}

static uint64_t next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *worker(void *arg) {
  uint64_t rng = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
  block slot[SLOTS];
  memset(slot, 0, sizeof slot);
  for (int op = 0; op < OPS; op++) {
    unsigned i = (unsigned)(next(&rng) % SLOTS);
    if (slot[i].p) {
      if (next(&rng) % 4 == 0) {
        pthread_mutex_lock(&box_lock);
        if (box_n < MAILBOX) {
          box[box_n++] = slot[i];
          slot[i].p = NULL;
        }
        pthread_mutex_unlock(&box_lock);
      }
      check_and_free(slot[i]);
      slot[i].p = NULL;
    } else {
      size_t n = next(&rng) % 100 == 0 ? (size_t)(next(&rng) % (2u << 20)) : (size_t)(next(&rng) % 3000);
      slot[i].p = tm_malloc(n);
      slot[i].n = n;
      if (!slot[i].p) abort();
      stamp(slot[i].p, n);
    }
    if (op % 1024 == 0) { /* a burst of one size: the cache overflows into the stash */
      void *burst[100];
      for (int k = 0; k < 100; k++)
        if (!(burst[k] = tm_malloc(64))) abort();
      for (int k = 0; k < 100; k++) tm_free(burst[k]);
      tm_heap *h = tm_heap_tls;
      tm_heap_lock(h); /* the pager may be sending it back right now */
      if (h->stash_bytes) atomic_fetch_add(&stash_seen, 1);
      tm_heap_unlock(h);
    }
    if (op % 64 == 0) { /* free what other threads handed over */
      pthread_mutex_lock(&box_lock);
      while (box_n) check_and_free(box[--box_n]);
      pthread_mutex_unlock(&box_lock);
    }
  }
  for (unsigned i = 0; i < SLOTS; i++) check_and_free(slot[i]);
  return NULL;
}

static atomic_int stop_toggling;
static void *perturb_toggler(void *arg) {
  (void)arg;
  for (int i = 0; !atomic_load(&stop_toggling); i++) {
    tm_perturb_set(i & 1 ? 0x5a : 0);
    tm_heap_catch_up();
    for (volatile int spin = 0; spin < 20000; spin++) {
    }
  }
  tm_perturb_set(0);
  return NULL;
}

int main(void) {
  tm_pager_opt.delay_ms = 0; /* the pager gives memory back while the workers run */
  tm_pager_opt.idle_ms = 0;  /* and counts every heap idle: it takes outboxes mid-traffic */
  for (int r = 0; r < ROUNDS; r++) {
    pthread_t t[THREADS], toggler;
    atomic_store(&stop_toggling, 0);
    pthread_create(&toggler, NULL, perturb_toggler, NULL);
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    atomic_store(&stop_toggling, 1);
    pthread_join(toggler, NULL);
  }
  while (box_n) check_and_free(box[--box_n]);
  if (atomic_load(&damaged)) {
    printf("tsan_stress: %d blocks damaged\n", atomic_load(&damaged));
    return 1;
  }
  if (atomic_load(&tm_cache_gen) < 2) {
    printf("tsan_stress: M_PERTURB was never toggled (cache generation %u)\n", atomic_load(&tm_cache_gen));
    return 1;
  }
  int problems = tm_heap_check(tm_heap_tls) + tm_segments_check();
  if (problems) {
    printf("tsan_stress: the consistency check found %d problems\n", problems);
    return 1;
  }
  if (!TM_STAT_GET(outbox_claims)) {
    printf("tsan_stress: the pager never took an outbox\n");
    return 1;
  }
  if (!TM_STAT_GET(caches_claimed)) {
    printf("tsan_stress: the pager never took a cache\n");
    return 1;
  }
  if (!atomic_load(&stash_seen)) {
    printf("tsan_stress: no burst ever reached the stash\n");
    return 1;
  }
  tm_pager_stats ps;
  tm_pager_get_stats(&ps);
  if (!ps.started || !ps.batches) {
    printf("tsan_stress: the pager did not run (started %llu, batches %llu)\n", (unsigned long long)ps.started,
           (unsigned long long)ps.batches);
    return 1;
  }
  printf("tsan_stress: ok (pager: %llu rounds, %llu batches; %d bursts stashed; %zu caches taken)\n",
         (unsigned long long)ps.rounds, (unsigned long long)ps.batches, atomic_load(&stash_seen),
         (size_t)TM_STAT_GET(caches_claimed));
  return 0;
}
