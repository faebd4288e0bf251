/* Data-race check of the allocator's own code under ThreadSanitizer.
 * TSan replaces malloc/free with its own, so this program drives tidemalloc
 * through its internal entry points (tm_malloc/tm_free), compiled from source
 * with -fsanitize=thread: see scripts/sanitize.sh. Threads allocate, free
 * locally, hand blocks to the next thread through a mutex-protected mailbox
 * (cross-thread frees), exit and get replaced (heap abandon and adoption),
 * while the pager thread gives memory back with no delay.
 * Exit status 0 and no TSan report means clean. */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 4, ROUNDS = 3, OPS = 20000, SLOTS = 256, MAILBOX = 1024 };

static pthread_mutex_t box_lock = PTHREAD_MUTEX_INITIALIZER;
static void *box[MAILBOX];
static size_t box_n;

static uint64_t next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *worker(void *arg) {
  uint64_t rng = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
  void *slot[SLOTS] = {0};
  for (int op = 0; op < OPS; op++) {
    unsigned i = (unsigned)(next(&rng) % SLOTS);
    if (slot[i]) {
      if (next(&rng) % 4 == 0) {
        pthread_mutex_lock(&box_lock);
        if (box_n < MAILBOX) {
          box[box_n++] = slot[i];
          slot[i] = NULL;
        }
        pthread_mutex_unlock(&box_lock);
      }
      if (slot[i]) tm_free(slot[i]);
      slot[i] = NULL;
    } else {
      size_t n = next(&rng) % 100 == 0 ? (size_t)(next(&rng) % (2u << 20)) : (size_t)(next(&rng) % 3000);
      slot[i] = tm_malloc(n);
      if (!slot[i]) abort();
      memset(slot[i], (int)i, n < 64 ? n : 64);
    }
    if (op % 64 == 0) { /* free what other threads handed over */
      pthread_mutex_lock(&box_lock);
      while (box_n) tm_free(box[--box_n]);
      pthread_mutex_unlock(&box_lock);
    }
  }
  for (unsigned i = 0; i < SLOTS; i++) tm_free(slot[i]);
  return NULL;
}

int main(void) {
  tm_pager_opt.delay_ms = 0; /* the pager gives memory back while the workers run */
  for (int r = 0; r < ROUNDS; r++) {
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  }
  while (box_n) tm_free(box[--box_n]);
  tm_pager_stats ps;
  tm_pager_get_stats(&ps);
  if (!ps.started || !ps.batches) {
    printf("tsan_stress: the pager did not run (started %llu, batches %llu)\n", (unsigned long long)ps.started,
           (unsigned long long)ps.batches);
    return 1;
  }
  printf("tsan_stress: ok (pager: %llu rounds, %llu batches)\n", (unsigned long long)ps.rounds,
         (unsigned long long)ps.batches);
  return 0;
}
