/* test_stress: multi-threaded stress with content checks.
 *
 * Every block is filled with a pattern derived from its address, size and
 * owner, and verified before it is freed (and after realloc), so overlapping
 * blocks, blocks handed out twice, or memory clobbered by the allocator show
 * up as a precise failure.  Scenarios:
 *   mixed      - random alloc/free/realloc of 1 B..64 KiB and 1..8 MiB, 2-8 threads
 *   xthread    - producers allocate, consumers verify and free (SPSC lock-free
 *                rings and a mutex/condvar queue)
 *   churn      - thousands of short-lived threads; blocks outlive their thread;
 *                memory and heap count must stay bounded
 *   tls_dtor   - pthread key destructors that free and malloc after the
 *                allocator's own thread teardown
 *   fork       - fork while 4 threads allocate; the child allocates and uses stdio
 *   sigfork    - fork from a signal handler that interrupted malloc
 *
 * Repetitions scale with TIDETEST_SCALE (default 1). */
#define _GNU_SOURCE
#include <check.h>
#include "checkrun.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tidemalloc.h"
#include "testutil.h"

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define NOT_FOUND ((size_t)-1)

/* ------------------------------------------------------------------ */
/* error collection from worker threads                                */

static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char err_msg[1024];
static atomic_int err_count;

__attribute__((format(printf, 1, 2))) static void report(const char *fmt, ...) {
  pthread_mutex_lock(&err_lock);
  if (atomic_fetch_add(&err_count, 1) == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&err_lock);
}

static void reset_errors(void) {
  atomic_store(&err_count, 0);
  err_msg[0] = 0;
}

#define ASSERT_NO_ERRORS(what)                                                                  \
  ck_assert_msg(atomic_load(&err_count) == 0, "%s: %d error(s); first: %s", (what),             \
                atomic_load(&err_count), err_msg)

/* For hangs/deadlocks: report without calling malloc (Check's ck_abort_msg
 * allocates, which would hang too if the allocator is deadlocked), then leave
 * the test process; Check reports the early exit as an error. */
__attribute__((format(printf, 1, 2), noreturn)) static void hang_fail(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(2, "test_stress: FAILURE: ", 22);
  w = write(2, buf, (size_t)n);
  (void)w;
  _exit(3);
}

static int reps(int base) {
  int r = (int)(base * test_scale() + 0.5);
  return r < 1 ? 1 : r;
}

/* Blocks bigger than this are filled/checked sparsely. */
#define FULL_CHECK_MAX (64 * KiB)

struct blk {
  void *p;
  size_t n;
  uint64_t seed;
};

static void blk_fill(struct blk *b, uint64_t owner) {
  b->seed = block_seed(b->p, b->n, owner);
  if (b->n <= FULL_CHECK_MAX)
    pattern_fill(b->p, b->n, b->seed);
  else
    pattern_fill_sparse(b->p, b->n, b->seed);
}

/* After realloc of b to q: the first keep bytes still hold b's pattern. */
static int blk_verify_moved(const struct blk *b, const void *q, size_t keep, const char *where) {
  size_t bad = pattern_check_prefix(q, b->n, b->seed, b->n > FULL_CHECK_MAX, keep);
  if (bad != NOT_FOUND) {
    report("%s: realloc(%p, ...) of a %zu-byte block = %p lost content at offset %zu (kept %zu)",
           where, b->p, b->n, q, bad, keep);
    return 0;
  }
  return 1;
}

/* Returns 1 when intact; reports otherwise. */
static int blk_verify(const struct blk *b, const char *where) {
  size_t bad = b->n <= FULL_CHECK_MAX ? pattern_check(b->p, b->n, b->seed)
                                      : pattern_check_sparse(b->p, b->n, b->seed);
  if (bad != NOT_FOUND) {
    report("%s: block %p of %zu bytes corrupted at offset %zu (byte 0x%02x, expected 0x%02x)",
           where, b->p, b->n, bad, ((unsigned char *)b->p)[bad], pattern_byte(b->seed, bad));
    return 0;
  }
  return 1;
}

static uint64_t rng_next(uint64_t *s) {
  *s = mix64(*s);
  return *s;
}

/* 1 B .. 64 KiB, skewed to small sizes; ~0.4% in 1..8 MiB. */
static size_t random_size(uint64_t *rng, int allow_big) {
  uint64_t r = rng_next(rng);
  unsigned sel = (unsigned)(r % 1000);
  if (allow_big && sel < 4) return MiB + (size_t)((r >> 16) % (7 * MiB));
  if (sel < 850) {
    unsigned sh = (unsigned)((r >> 10) % 11); /* up to 1 KiB */
    return (size_t)((r >> 20) & (((uint64_t)1 << (sh + 1)) - 1)) + 1;
  }
  if (sel < 950) return (size_t)((r >> 20) % (8 * KiB)) + 1;
  return (size_t)((r >> 20) % (64 * KiB)) + 1;
}

/* Allocate with a random API; returns NULL on failure (reported). */
static void *random_alloc(uint64_t *rng, size_t n, const char *where) {
  uint64_t r = rng_next(rng);
  void *p = NULL;
  switch (r % 16) {
  case 0:
  case 1: {
    p = calloc(1, n);
    if (p) {
      const unsigned char *c = p;
      size_t lim = n < 4096 ? n : 4096;
      for (size_t i = 0; i < lim; i++)
        if (c[i]) {
          report("%s: calloc(1, %zu) = %p: byte %zu not zero", where, n, p, i);
          break;
        }
      for (size_t i = lim; i < n; i += 4096)
        if (c[i]) {
          report("%s: calloc(1, %zu) = %p: byte %zu not zero", where, n, p, i);
          break;
        }
    }
    break;
  }
  case 2: {
    size_t a = (size_t)16 << ((r >> 8) % 9);
    p = memalign(a, n);
    if (p && !is_aligned(p, a)) report("%s: memalign(%zu, %zu) = %p misaligned", where, a, n, p);
    break;
  }
  case 3: {
    size_t a = (size_t)8 << ((r >> 8) % 8);
    if (posix_memalign(&p, a, n) != 0) p = NULL;
    if (p && !is_aligned(p, a))
      report("%s: posix_memalign(%zu, %zu) = %p misaligned", where, a, n, p);
    break;
  }
  default:
    p = malloc(n);
  }
  if (!p)
    report("%s: allocation of %zu bytes failed", where, n);
  else if (!is_aligned(p, 16))
    report("%s: %p (%zu bytes) not 16-byte aligned", where, p, n);
  return p;
}

/* ------------------------------------------------------------------ */
/* (a) mixed sizes, random alloc/free/realloc                          */

#define MIXED_SLOTS 1500

struct mixed_arg {
  int id;
  int ops;
};

static void *mixed_worker(void *arg) {
  struct mixed_arg *a = arg;
  struct blk *slots = calloc(MIXED_SLOTS, sizeof *slots);
  if (!slots) {
    report("mixed: calloc of slot array failed");
    return NULL;
  }
  uint64_t rng = 0x1234567ull * (uint64_t)(a->id + 1);
  uint64_t owner = (uint64_t)a->id + 1;
  for (int op = 0; op < a->ops && atomic_load(&err_count) == 0; op++) {
    struct blk *b = &slots[rng_next(&rng) % MIXED_SLOTS];
    if (b->p) {
      if (!blk_verify(b, "mixed")) break;
      unsigned act = (unsigned)(rng_next(&rng) % 100);
      if (act < 20) {
        size_t m = random_size(&rng, 1);
        void *q = realloc(b->p, m);
        if (!q) {
          report("mixed: realloc(%zu -> %zu) failed", b->n, m);
          break;
        }
        int ok = blk_verify_moved(b, q, m, "mixed");
        b->p = q;
        b->n = m;
        blk_fill(b, owner);
        if (!ok) break;
      } else {
        free(b->p);
        b->p = NULL;
      }
    } else {
      b->n = random_size(&rng, 1);
      b->p = random_alloc(&rng, b->n, "mixed");
      if (!b->p) break;
      blk_fill(b, owner);
    }
  }
  for (int i = 0; i < MIXED_SLOTS; i++)
    if (slots[i].p) {
      blk_verify(&slots[i], "mixed final");
      free(slots[i].p);
    }
  free(slots);
  return NULL;
}

static void run_mixed(int nthreads, int total_ops) {
  pthread_t t[16];
  struct mixed_arg a[16];
  reset_errors();
  for (int i = 0; i < nthreads; i++) {
    a[i].id = i;
    a[i].ops = total_ops / nthreads;
    ck_assert_int_eq(pthread_create(&t[i], NULL, mixed_worker, &a[i]), 0);
  }
  for (int i = 0; i < nthreads; i++) pthread_join(t[i], NULL);
  char what[64];
  snprintf(what, sizeof what, "mixed with %d threads", nthreads);
  ASSERT_NO_ERRORS(what);
  ck_assert_int_eq(tide_heap_check(), 0);
}

START_TEST(t_mixed_2) {
  for (int r = 0; r < reps(2); r++) run_mixed(2, 400000);
}
END_TEST
START_TEST(t_mixed_4) {
  for (int r = 0; r < reps(2); r++) run_mixed(4, 400000);
}
END_TEST
START_TEST(t_mixed_8) {
  for (int r = 0; r < reps(2); r++) run_mixed(8, 400000);
}
END_TEST

/* ------------------------------------------------------------------ */
/* (b) cross-thread frees                                              */

#define RING_CAP 256 /* power of two */

struct spsc_ring {
  _Alignas(64) atomic_size_t head; /* consumer */
  _Alignas(64) atomic_size_t tail; /* producer */
  struct blk items[RING_CAP];
};

static int ring_push(struct spsc_ring *r, const struct blk *b) {
  size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
  size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
  if (t - h == RING_CAP) return 0;
  r->items[t % RING_CAP] = *b;
  atomic_store_explicit(&r->tail, t + 1, memory_order_release);
  return 1;
}

static int ring_pop(struct spsc_ring *r, struct blk *b) {
  size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
  size_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
  if (h == t) return 0;
  *b = r->items[h % RING_CAP];
  atomic_store_explicit(&r->head, h + 1, memory_order_release);
  return 1;
}

/* mutex/condvar bounded MPMC queue */
#define MQ_CAP 512
struct mqueue {
  pthread_mutex_t lock;
  pthread_cond_t not_empty, not_full;
  struct blk items[MQ_CAP];
  size_t head, count;
  int producers_left;
};

#define XT_MAXP 4
#define XT_MAXC 4
struct xthread {
  int np, nc, per_producer, use_mutex;
  struct spsc_ring *rings; /* [np][nc] */
  struct mqueue mq;
  atomic_int producers_done;
  atomic_long consumed;
};

struct xt_arg {
  struct xthread *x;
  int id;
};

static void *xt_producer(void *arg) {
  struct xt_arg *a = arg;
  struct xthread *x = a->x;
  uint64_t rng = 0xabcdefull + (uint64_t)a->id * 7919;
  uint64_t owner = 100 + (uint64_t)a->id;
  for (int i = 0; i < x->per_producer && atomic_load(&err_count) == 0; i++) {
    struct blk b;
    b.n = random_size(&rng, (i % 64) == 0);
    b.p = random_alloc(&rng, b.n, "xthread producer");
    if (!b.p) break;
    blk_fill(&b, owner);
    if (x->use_mutex) {
      pthread_mutex_lock(&x->mq.lock);
      while (x->mq.count == MQ_CAP) pthread_cond_wait(&x->mq.not_full, &x->mq.lock);
      x->mq.items[(x->mq.head + x->mq.count) % MQ_CAP] = b;
      x->mq.count++;
      pthread_cond_signal(&x->mq.not_empty);
      pthread_mutex_unlock(&x->mq.lock);
    } else {
      struct spsc_ring *r = &x->rings[a->id * x->nc + (i % x->nc)];
      while (!ring_push(r, &b)) {
        if (atomic_load(&err_count)) {
          free(b.p);
          goto out;
        }
        sched_yield();
      }
    }
  }
out:
  if (x->use_mutex) {
    pthread_mutex_lock(&x->mq.lock);
    x->mq.producers_left--;
    pthread_cond_broadcast(&x->mq.not_empty);
    pthread_mutex_unlock(&x->mq.lock);
  }
  atomic_fetch_add(&x->producers_done, 1);
  return NULL;
}

static void xt_consume(struct blk *b, uint64_t *rng) {
  if (!blk_verify(b, "xthread consumer")) return;
  if (rng_next(rng) % 8 == 0) { /* realloc a foreign block before freeing it */
    size_t m = random_size(rng, 0);
    void *q = realloc(b->p, m);
    if (!q) {
      report("xthread consumer: realloc failed");
      return;
    }
    int ok = blk_verify_moved(b, q, m, "xthread consumer");
    b->p = q;
    if (!ok) return;
  }
  free(b->p);
}

static void *xt_consumer(void *arg) {
  struct xt_arg *a = arg;
  struct xthread *x = a->x;
  uint64_t rng = 0x5555ull + (uint64_t)a->id;
  struct blk b;
  if (x->use_mutex) {
    for (;;) {
      pthread_mutex_lock(&x->mq.lock);
      while (x->mq.count == 0 && x->mq.producers_left > 0)
        pthread_cond_wait(&x->mq.not_empty, &x->mq.lock);
      if (x->mq.count == 0) {
        pthread_mutex_unlock(&x->mq.lock);
        break;
      }
      b = x->mq.items[x->mq.head];
      x->mq.head = (x->mq.head + 1) % MQ_CAP;
      x->mq.count--;
      pthread_cond_signal(&x->mq.not_full);
      pthread_mutex_unlock(&x->mq.lock);
      xt_consume(&b, &rng);
      atomic_fetch_add(&x->consumed, 1);
    }
  } else {
    for (;;) {
      int got = 0;
      int done = atomic_load(&x->producers_done) == x->np;
      for (int p = 0; p < x->np; p++)
        while (ring_pop(&x->rings[p * x->nc + a->id], &b)) {
          xt_consume(&b, &rng);
          atomic_fetch_add(&x->consumed, 1);
          got = 1;
        }
      if (done && !got) break;
      if (!got) sched_yield();
    }
  }
  return NULL;
}

static void run_xthread(int np, int nc, int per_producer, int use_mutex) {
  struct xthread *x = calloc(1, sizeof *x);
  ck_assert_ptr_nonnull(x);
  x->np = np;
  x->nc = nc;
  x->per_producer = per_producer;
  x->use_mutex = use_mutex;
  x->rings = aligned_alloc(64, sizeof(struct spsc_ring) * (size_t)(np * nc));
  ck_assert_ptr_nonnull(x->rings);
  memset(x->rings, 0, sizeof(struct spsc_ring) * (size_t)(np * nc));
  pthread_mutex_init(&x->mq.lock, NULL);
  pthread_cond_init(&x->mq.not_empty, NULL);
  pthread_cond_init(&x->mq.not_full, NULL);
  x->mq.producers_left = np;
  reset_errors();
  pthread_t tp[XT_MAXP], tc[XT_MAXC];
  struct xt_arg ap[XT_MAXP], ac[XT_MAXC];
  for (int i = 0; i < nc; i++) {
    ac[i] = (struct xt_arg){x, i};
    ck_assert_int_eq(pthread_create(&tc[i], NULL, xt_consumer, &ac[i]), 0);
  }
  for (int i = 0; i < np; i++) {
    ap[i] = (struct xt_arg){x, i};
    ck_assert_int_eq(pthread_create(&tp[i], NULL, xt_producer, &ap[i]), 0);
  }
  for (int i = 0; i < np; i++) pthread_join(tp[i], NULL);
  for (int i = 0; i < nc; i++) pthread_join(tc[i], NULL);
  char what[96];
  snprintf(what, sizeof what, "cross-thread %s, %d producers, %d consumers",
           use_mutex ? "mutex queue" : "lock-free rings", np, nc);
  ASSERT_NO_ERRORS(what);
  ck_assert_msg(atomic_load(&x->consumed) == (long)np * per_producer,
                "%s: consumed %ld of %ld blocks", what, atomic_load(&x->consumed),
                (long)np * per_producer);
  tide_collect();
  ck_assert_int_eq(tide_heap_check(), 0);
  pthread_mutex_destroy(&x->mq.lock);
  pthread_cond_destroy(&x->mq.not_empty);
  pthread_cond_destroy(&x->mq.not_full);
  free(x->rings);
  free(x);
}

START_TEST(t_xthread_rings) {
  for (int r = 0; r < reps(2); r++) {
    run_xthread(1, 1, 150000, 0);
    run_xthread(2, 2, 60000, 0);
    run_xthread(3, 1, 40000, 0);
    run_xthread(1, 3, 100000, 0);
  }
}
END_TEST

START_TEST(t_xthread_mutex) {
  for (int r = 0; r < reps(2); r++) {
    run_xthread(2, 2, 60000, 1);
    run_xthread(4, 4, 30000, 1);
  }
}
END_TEST

/* ------------------------------------------------------------------ */
/* (c) thread create/exit churn                                        */

struct handoff {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct blk *items;
  size_t count, cap;
  int stop;
  long freed;
};

static struct handoff g_pending; /* filled by short-lived threads */
static struct handoff g_survivor; /* drained by the survivor thread */

static void handoff_init(struct handoff *h) {
  memset(h, 0, sizeof *h);
  pthread_mutex_init(&h->lock, NULL);
  pthread_cond_init(&h->cond, NULL);
}

static int handoff_push(struct handoff *h, const struct blk *b) {
  pthread_mutex_lock(&h->lock);
  if (h->count == h->cap) {
    size_t nc = h->cap ? h->cap * 2 : 1024;
    struct blk *ni = realloc(h->items, nc * sizeof *ni);
    if (!ni) {
      pthread_mutex_unlock(&h->lock);
      report("handoff: realloc failed");
      return 0;
    }
    h->items = ni;
    h->cap = nc;
  }
  h->items[h->count++] = *b;
  pthread_cond_signal(&h->cond);
  pthread_mutex_unlock(&h->lock);
  return 1;
}

static void *survivor_main(void *arg) {
  (void)arg;
  struct handoff *h = &g_survivor;
  pthread_mutex_lock(&h->lock);
  for (;;) {
    while (h->count == 0 && !h->stop) pthread_cond_wait(&h->cond, &h->lock);
    if (h->count == 0 && h->stop) break;
    struct blk b = h->items[--h->count];
    pthread_mutex_unlock(&h->lock);
    blk_verify(&b, "churn survivor");
    free(b.p);
    pthread_mutex_lock(&h->lock);
    h->freed++;
    pthread_cond_broadcast(&h->cond);
  }
  pthread_mutex_unlock(&h->lock);
  return NULL;
}

static void *short_lived(void *arg) {
  uintptr_t id = (uintptr_t)arg;
  uint64_t rng = mix64(id * 0x9E37ull + 17);
  struct blk v[40];
  for (int i = 0; i < 40; i++) {
    v[i].n = (i % 13 == 12) ? 100 * KiB + (size_t)(rng_next(&rng) % (200 * KiB))
                            : random_size(&rng, 0);
    v[i].p = random_alloc(&rng, v[i].n, "churn thread");
    if (!v[i].p) return NULL;
    blk_fill(&v[i], 0x1000 + id);
  }
  for (int i = 0; i < 40; i++) {
    if (i % 4 == 0) {
      handoff_push(&g_pending, &v[i]); /* outlives this thread */
    } else {
      blk_verify(&v[i], "churn thread");
      free(v[i].p);
    }
  }
  return NULL;
}

/* Move everything pending (its threads have exited) to the survivor; the
 * main thread frees every 5th block itself. */
static void flush_pending(void) {
  pthread_mutex_lock(&g_pending.lock);
  size_t n = g_pending.count;
  struct blk *items = g_pending.items;
  g_pending.items = NULL;
  g_pending.count = g_pending.cap = 0;
  pthread_mutex_unlock(&g_pending.lock);
  for (size_t i = 0; i < n; i++) {
    if (i % 5 == 0) {
      blk_verify(&items[i], "churn main");
      free(items[i].p);
    } else {
      handoff_push(&g_survivor, &items[i]);
    }
  }
  free(items);
}

static void wait_survivor_drained(void) {
  pthread_mutex_lock(&g_survivor.lock);
  while (g_survivor.count) pthread_cond_wait(&g_survivor.cond, &g_survivor.lock);
  pthread_mutex_unlock(&g_survivor.lock);
}

START_TEST(t_thread_churn) {
  handoff_init(&g_pending);
  handoff_init(&g_survivor);
  reset_errors();
  pthread_t surv;
  ck_assert_int_eq(pthread_create(&surv, NULL, survivor_main, NULL), 0);
  enum { PER_ROUND = 240, BATCH = 8 };
  const int rounds = 10 * reps(1);
  struct tide_stats st2, stn;
  memset(&st2, 0, sizeof st2);
  uintptr_t id = 0;
  for (int round = 1; round <= rounds; round++) {
    for (int k = 0; k < PER_ROUND; k += BATCH) {
      pthread_t t[BATCH];
      for (int j = 0; j < BATCH; j++)
        ck_assert_int_eq(pthread_create(&t[j], NULL, short_lived, (void *)(id++)), 0);
      for (int j = 0; j < BATCH; j++) pthread_join(t[j], NULL);
      flush_pending();
      ck_assert_msg(atomic_load(&err_count) == 0, "churn round %d: %s", round, err_msg);
    }
    wait_survivor_drained();
    /* what the churn holds, not what the pager's decay has yet to give
     * back (its delay adapts to the load): everything free goes first */
    if (round == 2) {
      tide_purge();
      tide_get_stats(&st2);
    }
  }
  tide_purge();
  tide_get_stats(&stn);
  pthread_mutex_lock(&g_survivor.lock);
  g_survivor.stop = 1;
  pthread_cond_broadcast(&g_survivor.cond);
  pthread_mutex_unlock(&g_survivor.lock);
  pthread_join(surv, NULL);
  ASSERT_NO_ERRORS("thread churn");
  printf("churn: %lu threads; mapped_bytes %zu after round 2, %zu after round %d; heap_count %zu "
         "-> %zu\n",
         (unsigned long)id, st2.mapped_bytes, stn.mapped_bytes, rounds, st2.heap_count,
         stn.heap_count);
  fflush(stdout);
  ck_assert_msg(stn.mapped_bytes <= 2 * st2.mapped_bytes,
                "memory grows with thread churn: mapped_bytes %zu after round 2, %zu after "
                "round %d (%lu threads)",
                st2.mapped_bytes, stn.mapped_bytes, rounds, (unsigned long)id);
  ck_assert_msg(stn.heap_count <= 2 * st2.heap_count + BATCH,
                "thread heaps are not reused: heap_count %zu after round 2, %zu after round %d",
                st2.heap_count, stn.heap_count, rounds);
  tide_collect();
  ck_assert_int_eq(tide_heap_check(), 0);
  free(g_survivor.items);
}
END_TEST

/* pthread key destructors that allocate after the allocator's teardown */

static pthread_key_t tls_key;
static atomic_int dtor_calls;
#define DTOR_ROUNDS 3 /* re-arms: destructor runs DTOR_ROUNDS + 1 times */

struct tls_blk {
  int round;
  size_t n;
  uint64_t seed;
};

static void tls_dtor(void *v) {
  struct tls_blk *b = v;
  atomic_fetch_add(&dtor_calls, 1);
  size_t payload = b->n - sizeof *b;
  if (pattern_check((char *)b + sizeof *b, payload, b->seed) != NOT_FOUND)
    report("tls destructor: block %p (round %d) corrupted", (void *)b, b->round);
  int round = b->round;
  free(b);
  /* allocate and free during teardown */
  for (int i = 0; i < 20; i++) {
    void *t = malloc((size_t)(i * 301) % 9000 + 1);
    if (!t) {
      report("tls destructor: malloc failed");
      return;
    }
    memset(t, i, (size_t)(i * 301) % 9000 + 1);
    free(t);
  }
  /* a block that outlives the thread, freed by the main thread */
  struct blk keep;
  keep.n = 1000 + (size_t)round * 100;
  keep.p = malloc(keep.n);
  if (!keep.p) {
    report("tls destructor: malloc failed");
    return;
  }
  blk_fill(&keep, 0x7777);
  handoff_push(&g_pending, &keep);
  if (round < DTOR_ROUNDS) { /* re-arm: the destructor runs again */
    size_t n = sizeof(struct tls_blk) + 500 + (size_t)round * 1000;
    struct tls_blk *nb = malloc(n);
    if (!nb) {
      report("tls destructor: malloc failed");
      return;
    }
    nb->round = round + 1;
    nb->n = n;
    nb->seed = block_seed(nb, n, 0x4444);
    pattern_fill((char *)nb + sizeof *nb, n - sizeof *nb, nb->seed);
    pthread_setspecific(tls_key, nb);
  }
}

static void *tls_thread(void *arg) {
  (void)arg;
  void *warm[16];
  for (int i = 0; i < 16; i++) warm[i] = malloc((size_t)i * 64 + 8);
  for (int i = 0; i < 16; i++) free(warm[i]);
  size_t n = sizeof(struct tls_blk) + 300;
  struct tls_blk *b = malloc(n);
  if (!b) return NULL;
  b->round = 0;
  b->n = n;
  b->seed = block_seed(b, n, 0x4444);
  pattern_fill((char *)b + sizeof *b, n - sizeof *b, b->seed);
  pthread_setspecific(tls_key, b);
  /* leave some live blocks in this thread's heap, freed by main later */
  struct blk keep = {malloc(777), 777, 0};
  if (keep.p) {
    blk_fill(&keep, 0x5555);
    handoff_push(&g_pending, &keep);
  }
  return NULL;
}

START_TEST(t_tls_destructor) {
  handoff_init(&g_pending);
  reset_errors();
  void *first = malloc(10); /* the allocator is initialised before our key */
  free(first);
  ck_assert_int_eq(pthread_key_create(&tls_key, tls_dtor), 0);
  atomic_store(&dtor_calls, 0);
  enum { THREADS = 400, BATCH = 8 };
  struct tide_stats s_early, s_late;
  for (int k = 0; k < THREADS; k += BATCH) {
    pthread_t t[BATCH];
    for (int j = 0; j < BATCH; j++)
      ck_assert_int_eq(pthread_create(&t[j], NULL, tls_thread, NULL), 0);
    for (int j = 0; j < BATCH; j++) pthread_join(t[j], NULL);
    /* free what the dead threads left behind */
    pthread_mutex_lock(&g_pending.lock);
    for (size_t i = 0; i < g_pending.count; i++) {
      blk_verify(&g_pending.items[i], "block left by an exited thread");
      free(g_pending.items[i].p);
    }
    g_pending.count = 0;
    pthread_mutex_unlock(&g_pending.lock);
    /* what stays mapped, not what the pager has not given back yet */
    if (k == 80) {
      tide_purge();
      tide_get_stats(&s_early);
    }
  }
  tide_purge();
  tide_get_stats(&s_late);
  printf("tls: %d threads; mapped_bytes %zu after 88 threads, %zu at the end; heap_count %zu\n",
         THREADS, s_early.mapped_bytes, s_late.mapped_bytes, s_late.heap_count);
  fflush(stdout);
  ASSERT_NO_ERRORS("TLS destructors");
  ck_assert_msg(atomic_load(&dtor_calls) == THREADS * (DTOR_ROUNDS + 1),
                "destructor ran %d times, expected %d", atomic_load(&dtor_calls),
                THREADS * (DTOR_ROUNDS + 1));
  ck_assert_msg(s_late.mapped_bytes <= 2 * s_early.mapped_bytes,
                "memory grows with threads that allocate in TLS destructors: %zu -> %zu",
                s_early.mapped_bytes, s_late.mapped_bytes);
  ck_assert_int_eq(tide_heap_check(), 0);
  pthread_key_delete(tls_key);
  free(g_pending.items);
  g_pending.items = NULL;
}
END_TEST

/* ------------------------------------------------------------------ */
/* (d) fork while other threads allocate                               */

static atomic_int fork_stop;

static void *fork_worker(void *arg) {
  uintptr_t id = (uintptr_t)arg;
  uint64_t rng = mix64(id + 99);
  struct blk v[64];
  memset(v, 0, sizeof v);
  while (!atomic_load(&fork_stop)) {
    struct blk *b = &v[rng_next(&rng) % 64];
    if (b->p) {
      blk_verify(b, "fork worker");
      free(b->p);
      b->p = NULL;
    } else {
      b->n = (rng_next(&rng) % 50 == 0) ? MiB + (size_t)(rng % MiB) : random_size(&rng, 0);
      b->p = random_alloc(&rng, b->n, "fork worker");
      if (!b->p) break;
      blk_fill(b, 0x2000 + id);
    }
  }
  for (int i = 0; i < 64; i++)
    if (v[i].p) {
      blk_verify(&v[i], "fork worker final");
      free(v[i].p);
    }
  return NULL;
}

static void *child_thread(void *arg) {
  (void)arg;
  for (int i = 0; i < 100; i++) {
    void *p = malloc((size_t)i * 50 + 1);
    if (!p) return (void *)1;
    free(p);
  }
  return NULL;
}

/* Runs in the forked child; returns the exit code (0 = fine). */
static int fork_child_work(struct blk *inherited, int ninh, int iteration) {
  /* blocks allocated by the parent before the fork are intact and freeable */
  for (int i = 0; i < ninh; i++) {
    size_t bad = pattern_check(inherited[i].p, inherited[i].n, inherited[i].seed);
    if (bad != NOT_FOUND) return 10;
    if (i % 2) free(inherited[i].p);
  }
  uint64_t rng = mix64((uint64_t)iteration + 5);
  struct blk v[300];
  for (int i = 0; i < 300; i++) {
    v[i].n = i % 97 == 0 ? 2 * MiB + (size_t)i : random_size(&rng, 0);
    v[i].p = malloc(v[i].n);
    if (!v[i].p) return 11;
    v[i].seed = block_seed(v[i].p, v[i].n, 0x3000);
    pattern_fill(v[i].p, v[i].n, v[i].seed);
    if (i % 3 == 0) {
      free(v[i].p);
      v[i].p = NULL;
    }
  }
  for (int i = 0; i < 300; i++)
    if (v[i].p) {
      if (pattern_check(v[i].p, v[i].n, v[i].seed) != NOT_FOUND) return 12;
      free(v[i].p);
    }
  /* stdio */
  int fd = open("/dev/null", O_WRONLY);
  if (fd < 0) return 13;
  dup2(fd, 1);
  close(fd);
  printf("child %d writes %s %f\n", iteration, "to /dev/null", 3.25);
  fflush(stdout);
  FILE *f = fopen("/dev/null", "w");
  if (!f) return 14;
  for (int i = 0; i < 100; i++) fprintf(f, "line %d %s\n", i, "xxxxxxxxxxxxxxxxxxxxxxxx");
  if (fclose(f) != 0) return 15;
  char *s = NULL;
  if (asprintf(&s, "%d-%s", iteration, "asprintf") < 0 || !s) return 16;
  free(s);
  if (iteration % 10 == 0) { /* a new thread in the child */
    pthread_t t;
    void *res;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0) return 17;
    pthread_join(t, &res);
    if (res) return 18;
  }
  if (tide_heap_check() != 0) return 19;
  return 0;
}

START_TEST(t_fork_while_allocating) {
  reset_errors();
  atomic_store(&fork_stop, 0);
  pthread_t w[4];
  for (uintptr_t i = 0; i < 4; i++)
    ck_assert_int_eq(pthread_create(&w[i], NULL, fork_worker, (void *)i), 0);
  enum { NINH = 40 };
  struct blk inh[NINH];
  uint64_t rng = 42;
  for (int i = 0; i < NINH; i++) {
    inh[i].n = random_size(&rng, 0);
    inh[i].p = malloc(inh[i].n);
    ck_assert_ptr_nonnull(inh[i].p);
    inh[i].seed = block_seed(inh[i].p, inh[i].n, 0x4000);
    pattern_fill(inh[i].p, inh[i].n, inh[i].seed);
  }
  const int nforks = 200 * reps(1);
  char buf[128];
  for (int k = 0; k < nforks; k++) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) _exit(fork_child_work(inh, NINH, k));
    int st;
    int r = wait_with_timeout(pid, &st, 10);
    if (r != 0)
      hang_fail("fork %d: child hung for 10 s (deadlock after fork while threads allocate)", k);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
      atomic_store(&fork_stop, 1);
      ck_abort_msg("fork %d: child %s (codes: 10 inherited block corrupt, 11 malloc failed, 12 "
                   "corrupt, 13-16 stdio, 17-18 thread, 19 heap check)",
                   k, describe_status(st, buf, sizeof buf));
    }
  }
  atomic_store(&fork_stop, 1);
  for (int i = 0; i < 4; i++) pthread_join(w[i], NULL);
  ASSERT_NO_ERRORS("fork while allocating (parent workers)");
  for (int i = 0; i < NINH; i++) {
    ck_assert_uint_eq(pattern_check(inh[i].p, inh[i].n, inh[i].seed), NOT_FOUND);
    free(inh[i].p);
  }
  ck_assert_int_eq(tide_heap_check(), 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* (e) fork from a signal handler that interrupted malloc              */

#define SF_MAX 4096
static pid_t sf_pids[SF_MAX];
static double sf_start[SF_MAX];
static atomic_int sf_started;
static atomic_int sf_reaped;
static atomic_int sf_target;
static atomic_int sf_stop;
static atomic_long sf_loop_iters;
static atomic_int sf_fork_errors;

static int sigfork_child(void) {
  uint64_t rng = 77;
  struct blk v[200];
  for (int i = 0; i < 200; i++) {
    v[i].n = i % 50 == 49 ? MiB + (size_t)i : random_size(&rng, 0);
    v[i].p = malloc(v[i].n);
    if (!v[i].p) return 20;
    v[i].seed = block_seed(v[i].p, v[i].n, 0x6000);
    pattern_fill(v[i].p, v[i].n, v[i].seed);
    if (i % 2) {
      free(v[i].p);
      v[i].p = NULL;
    }
  }
  for (int i = 0; i < 200; i++)
    if (v[i].p) {
      if (pattern_check(v[i].p, v[i].n, v[i].seed) != NOT_FOUND) return 21;
      free(v[i].p);
    }
  void *c = calloc(1000, 10);
  if (!c) return 22;
  for (int i = 0; i < 10000; i++)
    if (((unsigned char *)c)[i]) return 23;
  free(c);
  return 0;
}

static void sigfork_handler(int sig) {
  (void)sig;
  int saved = errno;
  int started = atomic_load(&sf_started);
  if (started < atomic_load(&sf_target) && started - atomic_load(&sf_reaped) < 8) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pid_t pid = fork();
    if (pid == 0) _exit(sigfork_child());
    if (pid > 0) {
      sf_pids[started] = pid;
      sf_start[started] = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
      atomic_store(&sf_started, started + 1);
    } else {
      atomic_fetch_add(&sf_fork_errors, 1);
    }
  }
  errno = saved;
}

static atomic_int sf_tid;

static void *sigfork_allocator(void *arg) {
  (void)arg;
  atomic_store(&sf_tid, (int)syscall(SYS_gettid));
  uint64_t rng = 3;
  void *live[32] = {0};
  while (!atomic_load(&sf_stop)) {
    size_t n;
    uint64_t r = rng_next(&rng);
    if (r % 500 == 0)
      n = 2 * MiB + (size_t)(r >> 40) % MiB; /* huge: mmap/munmap paths */
    else if (r % 20 == 0)
      n = 64 * KiB + (size_t)(r >> 40) % (256 * KiB); /* large */
    else
      n = (size_t)(r >> 40) % 2048 + 1;
    int i = (int)((r >> 16) % 32);
    if (live[i]) free(live[i]);
    live[i] = (r >> 30) % 3 == 0 ? calloc(1, n) : malloc(n);
    if (!live[i]) {
      report("sigfork allocator: allocation of %zu failed", n);
      break;
    }
    ((unsigned char *)live[i])[0] = 1;
    void *tmp = malloc(n / 2 + 1);
    free(tmp);
    atomic_fetch_add(&sf_loop_iters, 1);
  }
  for (int i = 0; i < 32; i++) free(live[i]);
  return NULL;
}

static void run_sigfork(int target) {
  reset_errors();
  atomic_store(&sf_started, 0);
  atomic_store(&sf_reaped, 0);
  atomic_store(&sf_target, target);
  atomic_store(&sf_stop, 0);
  atomic_store(&sf_tid, 0);
  atomic_store(&sf_fork_errors, 0);
  static char reaped[SF_MAX];
  memset(reaped, 0, sizeof reaped);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = sigfork_handler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);

  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, sigfork_allocator, NULL), 0);
  while (atomic_load(&sf_tid) == 0) sched_yield();

  timer_t timer;
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = SIGUSR1;
  sev.sigev_notify_thread_id = atomic_load(&sf_tid);
  ck_assert_int_eq(timer_create(CLOCK_MONOTONIC, &sev, &timer), 0);
  struct itimerspec its = {{0, 500 * 1000}, {0, 500 * 1000}}; /* every 0.5 ms */
  ck_assert_int_eq(timer_settime(timer, 0, &its, NULL), 0);

  double last_progress = now_sec();
  int last_started = 0;
  char buf[128];
  const char *failure = NULL;
  int fail_index = -1, fail_status = 0;
  while (atomic_load(&sf_reaped) < target) {
    int started = atomic_load(&sf_started);
    for (int i = 0; i < started; i++) {
      if (reaped[i]) continue;
      int st;
      pid_t r = waitpid(sf_pids[i], &st, WNOHANG);
      if (r == sf_pids[i]) {
        reaped[i] = 1;
        atomic_fetch_add(&sf_reaped, 1);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0) && !failure) {
          failure = "child failed";
          fail_index = i;
          fail_status = st;
        }
      } else if (now_sec() - sf_start[i] > 10) {
        kill(sf_pids[i], SIGKILL);
        waitpid(sf_pids[i], &st, 0);
        reaped[i] = 1;
        atomic_fetch_add(&sf_reaped, 1);
        if (!failure) {
          failure = "child forked from a signal handler hung for 10 s";
          fail_index = i;
        }
      }
    }
    if (failure) break;
    if (started != last_started) {
      last_started = started;
      last_progress = now_sec();
    } else if (now_sec() - last_progress > 10) {
      failure = "no fork for 10 s: the interrupted thread is stuck (deadlock in fork() called "
                "from a signal handler that interrupted malloc?)";
      break;
    }
    struct timespec ts = {0, 100 * 1000};
    nanosleep(&ts, NULL);
  }
  timer_delete(timer);
  if (failure && !fail_status)
    hang_fail("sigfork: %s (fork #%d of %d; %d started; loop iterations %ld)", failure,
              fail_index, target, atomic_load(&sf_started), atomic_load(&sf_loop_iters));
  if (failure) {
    if (fail_status)
      ck_abort_msg("sigfork: %s (fork #%d, %s; loop iterations %ld)", failure, fail_index,
                   describe_status(fail_status, buf, sizeof buf), atomic_load(&sf_loop_iters));
    ck_abort_msg("sigfork: %s (fork #%d of %d; %d started; loop iterations %ld)", failure,
                 fail_index, target, atomic_load(&sf_started), atomic_load(&sf_loop_iters));
  }
  atomic_store(&sf_stop, 1);
  pthread_join(t, NULL);
  signal(SIGUSR1, SIG_IGN);
  ASSERT_NO_ERRORS("sigfork allocator thread");
  ck_assert_int_eq(atomic_load(&sf_fork_errors), 0);
  ck_assert_int_eq(tide_heap_check(), 0);
}

START_TEST(t_fork_in_signal_handler) {
  for (int r = 0; r < reps(3); r++) run_sigfork(200);
}
END_TEST

static Suite *stress_suite(void) {
  Suite *s = suite_create("stress");
  TCase *tc;

  tc = tcase_create("mixed");
  tcase_add_test(tc, t_mixed_2);
  tcase_add_test(tc, t_mixed_4);
  tcase_add_test(tc, t_mixed_8);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("xthread");
  tcase_add_test(tc, t_xthread_rings);
  tcase_add_test(tc, t_xthread_mutex);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("churn");
  tcase_add_test(tc, t_thread_churn);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("tls");
  tcase_add_test(tc, t_tls_destructor);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("fork");
  tcase_add_test_native(tc, t_fork_while_allocating, EMU_THREAD_AFTER_FORK);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);

  tc = tcase_create("sigfork");
  tcase_add_test_native(tc, t_fork_in_signal_handler, EMU_THREAD_AFTER_FORK);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return check_run(stress_suite(), CK_FORK_GETENV);
}
