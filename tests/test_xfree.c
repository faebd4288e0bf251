/* Cross-thread frees under load: the behaviour any design of the remote
 * free path must keep (issue 8 will rework that path; these tests are its
 * guard rails). Every block carries a pattern derived from its address, size
 * and producer, checked by whichever thread frees it.
 *
 * - many producers hand blocks of every kind (small, large, huge) to many
 *   consumers, who check and free them;
 * - consumers that free foreign blocks and exit at once, round after
 *   round: nothing they freed may be lost (the heap check passes, and the
 *   memory comes back: RSS read from /proc after tide_purge);
 * - fork in the middle of that traffic: the child can free blocks that
 *   threads which do not exist in it allocated, allocate, and passes the
 *   heap check. */
#include <check.h>
#include "checkrun.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "tidemalloc.h"
#include "testutil.h"

/* ---- a bounded multi-producer, multi-consumer queue of blocks ---------- */
typedef struct {
  void *p;
  size_t n;
  uint64_t owner;
} item;

#define QCAP 4096
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full;
  item slots[QCAP];
  unsigned head, count;
  unsigned producers_left;
} queue;

static void q_init(queue *q, unsigned producers) {
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->not_empty, NULL);
  pthread_cond_init(&q->not_full, NULL);
  q->head = q->count = 0;
  q->producers_left = producers;
}

static void q_put(queue *q, item it) {
  pthread_mutex_lock(&q->mu);
  while (q->count == QCAP) pthread_cond_wait(&q->not_full, &q->mu);
  q->slots[(q->head + q->count) % QCAP] = it;
  q->count++;
  pthread_cond_signal(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}

/* false when every producer is done and the queue is empty */
static bool q_get(queue *q, item *out) {
  pthread_mutex_lock(&q->mu);
  while (q->count == 0 && q->producers_left) pthread_cond_wait(&q->not_empty, &q->mu);
  bool got = q->count != 0;
  if (got) {
    *out = q->slots[q->head];
    q->head = (q->head + 1) % QCAP;
    q->count--;
    pthread_cond_signal(&q->not_full);
  }
  pthread_mutex_unlock(&q->mu);
  return got;
}

static void q_producer_done(queue *q) {
  pthread_mutex_lock(&q->mu);
  q->producers_left--;
  pthread_cond_broadcast(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}

/* ---- blocks ------------------------------------------------------------ */
/* Mostly small, some large (page runs), a few huge (own mappings). */
static size_t pick_size(uint64_t *rng) {
  uint64_t r = (*rng = mix64(*rng + 0x9e3779b97f4a7c15ULL));
  unsigned k = (unsigned)(r % 1000);
  if (k < 2) return (size_t)(1 << 20) + (size_t)(r >> 20) % (3 << 20); /* huge */
  if (k < 20) return 32768 + (size_t)(r >> 16) % (512 * 1024);       /* large */
  return 16 + (size_t)(r >> 12) % (k < 500 ? 256 : 8192);
}

static atomic_long bad_blocks;
static atomic_long freed_blocks;

static void *make_block(size_t n, uint64_t owner) {
  void *p = malloc(n);
  if (!p) abort();
  pattern_fill_sparse(p, n, block_seed(p, n, owner));
  return p;
}

static void check_free(const item *it) {
  if (pattern_check_sparse(it->p, it->n, block_seed(it->p, it->n, it->owner)) != (size_t)-1)
    atomic_fetch_add(&bad_blocks, 1);
  free(it->p);
  atomic_fetch_add(&freed_blocks, 1);
}

/* ---- many producers, many consumers ------------------------------------ */
typedef struct {
  queue *q;
  unsigned id;
  unsigned blocks;
} producer_arg;

static void *producer(void *arg) {
  producer_arg *a = arg;
  uint64_t rng = a->id * 7919u + 1;
  void *keep[64] = {0}; /* some blocks live a while in their owner */
  for (unsigned i = 0; i < a->blocks; i++) {
    size_t n = pick_size(&rng);
    void *p = make_block(n, a->id);
    if (rng & 1) {
      q_put(a->q, (item){p, n, a->id});
    } else {
      unsigned k = (unsigned)(rng >> 8) % 64;
      if (keep[k]) free(keep[k]); /* a local free, mixed in */
      keep[k] = p;
      q_put(a->q, (item){make_block(48, a->id), 48, a->id});
    }
  }
  for (unsigned k = 0; k < 64; k++) free(keep[k]);
  q_producer_done(a->q);
  return NULL;
}

static void *consumer(void *arg) {
  queue *q = arg;
  item it;
  while (q_get(q, &it)) check_free(&it);
  return NULL;
}

static unsigned scaled(unsigned n) { return check_emulator() ? n / 8 : n; }

START_TEST(t_many_producers_consumers) {
  enum { P = 6, C = 6 };
  static queue q;
  q_init(&q, P);
  atomic_store(&bad_blocks, 0);
  atomic_store(&freed_blocks, 0);
  pthread_t pt[P], ct[C];
  producer_arg pa[P];
  for (unsigned c = 0; c < C; c++) ck_assert_int_eq(pthread_create(&ct[c], NULL, consumer, &q), 0);
  for (unsigned i = 0; i < P; i++) {
    pa[i] = (producer_arg){&q, i + 1, scaled(40000)};
    ck_assert_int_eq(pthread_create(&pt[i], NULL, producer, &pa[i]), 0);
  }
  for (unsigned i = 0; i < P; i++) pthread_join(pt[i], NULL);
  for (unsigned c = 0; c < C; c++) pthread_join(ct[c], NULL);
  ck_assert_int_eq(atomic_load(&bad_blocks), 0);
  ck_assert_int_eq(atomic_load(&freed_blocks), (long)P * scaled(40000));
  ck_assert_int_eq(tide_heap_check(), 0);
}
END_TEST

/* ---- consumers that exit right after freeing foreign blocks ------------ */
typedef struct {
  item *items;
  unsigned n;
} batch;

static void *free_batch_and_exit(void *arg) {
  batch *b = arg;
  for (unsigned i = 0; i < b->n; i++) check_free(&b->items[i]);
  return NULL; /* exits with others' blocks in its outbox (src/outbox.c) */
}

START_TEST(t_exit_after_foreign_frees) {
  enum { ROUNDS = 40, THREADS = 4, PER = 2000 };
  static item items[THREADS][PER];
  atomic_store(&bad_blocks, 0);
  tide_purge();
  long base = rss_kb();
  uint64_t rng = 42;
  unsigned rounds = check_emulator() ? ROUNDS / 8 : ROUNDS;
  for (unsigned r = 0; r < rounds; r++) {
    for (unsigned t = 0; t < THREADS; t++)
      for (unsigned i = 0; i < PER; i++) {
        /* half small, half of the classes from 4 to 32 KiB, each of which
         * pins up to 8 pages wherever a block of it is left behind */
        rng = mix64(rng);
        size_t n = (i & 1) ? 16 + (size_t)(rng % 2048) : 4096 + (size_t)(rng % 28672);
        items[t][i] = (item){make_block(n, 99), n, 99};
      }
    pthread_t th[THREADS];
    batch b[THREADS];
    for (unsigned t = 0; t < THREADS; t++) {
      b[t] = (batch){items[t], PER};
      ck_assert_int_eq(pthread_create(&th[t], NULL, free_batch_and_exit, &b[t]), 0);
    }
    for (unsigned t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    ck_assert_int_eq(tide_heap_check(), 0);
  }
  ck_assert_int_eq(atomic_load(&bad_blocks), 0);
  /* everything was freed: after a purge the process is back near where it
   * started (8 MiB of slack for the threads' stacks and our own heaps) */
  tide_purge();
  long after = rss_kb();
  if (check_emulator()) { /* RSS there is the emulator's, its code cache growing */
    fprintf(stderr, "SKIP under %s: the RSS check of t_exit_after_foreign_frees\n", check_emulator());
    return;
  }
  ck_assert_msg(after < base + 8192, "RSS %ld KiB after freeing everything and tide_purge, %ld KiB before", after,
                base);
}
END_TEST

/* ---- fork in the middle of the traffic --------------------------------- */
static atomic_int stop_traffic;
static void *traffic(void *arg) {
  queue *q = arg;
  uint64_t rng = (uint64_t)(uintptr_t)arg;
  while (!atomic_load(&stop_traffic)) {
    size_t n = pick_size(&rng);
    if (n > 65536) n = 4096;
    q_put(q, (item){make_block(n, 7), n, 7});
  }
  q_producer_done(q);
  return NULL;
}

START_TEST(t_fork_amid_traffic) {
  static queue q;
  q_init(&q, 2);
  atomic_store(&stop_traffic, 0);
  atomic_store(&bad_blocks, 0);
  pthread_t prod[2], cons[2];
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(pthread_create(&prod[i], NULL, traffic, &q), 0);
    ck_assert_int_eq(pthread_create(&cons[i], NULL, consumer, &q), 0);
  }
  void *mine[256];
  for (int i = 0; i < 256; i++) mine[i] = make_block(64 + (size_t)i * 8, 5);
  for (int f = 0; f < 20; f++) {
    usleep(2000);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      /* the producers and consumers are gone; their blocks in the queue
       * belong to heaps nobody runs: free them all, check, allocate */
      int bad = 0;
      item it;
      pthread_mutex_init(&q.mu, NULL); /* may have been held at the fork */
      while (q.count) {
        it = q.slots[q.head];
        q.head = (q.head + 1) % QCAP;
        q.count--;
        if (pattern_check_sparse(it.p, it.n, block_seed(it.p, it.n, it.owner)) != (size_t)-1) bad++;
        free(it.p);
      }
      for (int i = 0; i < 256; i++) {
        if (pattern_check_sparse(mine[i], 64 + (size_t)i * 8, block_seed(mine[i], 64 + (size_t)i * 8, 5)) !=
            (size_t)-1)
          bad++;
        free(mine[i]);
      }
      for (int i = 0; i < 10000; i++) free(make_block(16 + (size_t)i % 3000, 6));
      _exit(bad ? 2 : tide_heap_check() != 0 ? 3 : 0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork %d: child status 0x%x", f, st);
  }
  atomic_store(&stop_traffic, 1);
  for (int i = 0; i < 2; i++) pthread_join(prod[i], NULL);
  for (int i = 0; i < 2; i++) pthread_join(cons[i], NULL);
  for (int i = 0; i < 256; i++) free(mine[i]);
  ck_assert_int_eq(atomic_load(&bad_blocks), 0);
  ck_assert_int_eq(tide_heap_check(), 0);
}
END_TEST

static Suite *xfree_suite(void) {
  Suite *s = suite_create("xfree");
  TCase *tc = tcase_create("xfree");
  tcase_add_test(tc, t_many_producers_consumers);
  tcase_add_test(tc, t_exit_after_foreign_frees);
  tcase_add_test_native(tc, t_fork_amid_traffic, EMU_THREAD_AFTER_FORK);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_run(xfree_suite(), CK_FORK_GETENV); }
