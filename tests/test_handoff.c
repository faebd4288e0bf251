/* The cross-thread handoff: a block freed by a thread that does not own its
 * span must always reach a place where the span's owner (or whoever adopts
 * it) will collect it. Linked statically against libtidecore, so the test
 * can look at the heaps while every thread is parked.
 *
 * stranded: short-lived threads allocate blocks and exit while a remote
 * freer frees those blocks, so that the freer's notice races the owner's
 * abandon; a long-lived thread adopts the orphaned spans, keeps half of its
 * blocks (its spans go full) and hands the other half to the freer. Then no
 * more threads are made, the two go on for a while, and are parked. No span
 * of a live heap may hold cross-thread frees without being on its owner's
 * notice list. */
#include "internal.h"

#include <check.h>
#include "checkrun.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { BLOCK = 64, SHORT_BLOCKS = 96, KEEP = 20000 };

static pthread_mutex_t inbox_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t inbox_cond = PTHREAD_COND_INITIALIZER;
static void **inbox;
static size_t inbox_n, inbox_cap;
static atomic_int stop_freer, stop_keeper, park;
static atomic_int parked;

static void inbox_put(void **v, size_t n) {
  pthread_mutex_lock(&inbox_lock);
  if (inbox_n + n > inbox_cap) {
    size_t cap = (inbox_n + n) * 2;
    void **grown = realloc(inbox, cap * sizeof *inbox);
    if (!grown) abort();
    inbox = grown;
    inbox_cap = cap;
  }
  memcpy(inbox + inbox_n, v, n * sizeof *v);
  inbox_n += n;
  pthread_cond_signal(&inbox_cond);
  pthread_mutex_unlock(&inbox_lock);
}

static void wait_parked(void) {
  atomic_fetch_add(&parked, 1);
  while (atomic_load(&park)) sched_yield();
  atomic_fetch_sub(&parked, 1);
}

/* Frees whatever lands in the inbox, as soon as it lands. */
static void *freer(void *arg) {
  (void)arg;
  void *batch[256];
  for (;;) {
    pthread_mutex_lock(&inbox_lock);
    while (inbox_n == 0 && !atomic_load(&stop_freer) && !atomic_load(&park)) pthread_cond_wait(&inbox_cond, &inbox_lock);
    size_t n = inbox_n < 256 ? inbox_n : 256;
    inbox_n -= n;
    memcpy(batch, inbox + inbox_n, n * sizeof *batch);
    pthread_mutex_unlock(&inbox_lock);
    for (size_t i = 0; i < n; i++) free(batch[i]);
    if (n == 0 && atomic_load(&park)) wait_parked();
    if (n == 0 && atomic_load(&stop_freer)) return NULL;
  }
}

static void *short_lived(void *arg) {
  (void)arg;
  void *v[SHORT_BLOCKS];
  for (int i = 0; i < SHORT_BLOCKS; i++) {
    v[i] = malloc(BLOCK);
    if (!v[i]) abort();
    memset(v[i], 0x5a, BLOCK);
  }
  inbox_put(v, SHORT_BLOCKS);
  return NULL; /* exit at once: the abandon races the freer */
}

/* Adopts orphans of its class, keeps half of its blocks, gives away half. */
static void *keeper(void *arg) {
  (void)arg;
  void **kept = calloc(KEEP, sizeof *kept);
  if (!kept) abort();
  size_t next = 0;
  uint64_t rng = 0x243f6a8885a308d3ull;
  while (!atomic_load(&stop_keeper)) {
    if (atomic_load(&park)) wait_parked();
    void *give[16];
    for (int i = 0; i < 16; i++) {
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      void *p = malloc(BLOCK);
      if (!p) abort();
      memset(p, 0x33, BLOCK);
      if (rng & 1) {
        give[i] = p;
      } else {
        give[i] = kept[next]; /* may be NULL: free(NULL) is fine */
        kept[next] = p;
        next = (next + 1) % KEEP;
      }
    }
    inbox_put(give, 16);
  }
  for (size_t i = 0; i < KEEP; i++) free(kept[i]);
  free(kept);
  return NULL;
}

static void run_handoff(int short_rounds, int tail_ms) {
  pthread_t f, k;
  atomic_store(&stop_freer, 0);
  atomic_store(&stop_keeper, 0);
  ck_assert_int_eq(pthread_create(&f, NULL, freer, NULL), 0);
  ck_assert_int_eq(pthread_create(&k, NULL, keeper, NULL), 0);
  for (int r = 0; r < short_rounds; r++) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_create(&t[i], NULL, short_lived, NULL), 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  }
  struct timespec ts = {tail_ms / 1000, (long)(tail_ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  /* park both threads, with the freer's inbox drained */
  atomic_store(&park, 1);
  pthread_mutex_lock(&inbox_lock);
  pthread_cond_broadcast(&inbox_cond);
  pthread_mutex_unlock(&inbox_lock);
  while (atomic_load(&parked) < 2) {
    pthread_mutex_lock(&inbox_lock);
    pthread_cond_broadcast(&inbox_cond);
    pthread_mutex_unlock(&inbox_lock);
    sched_yield();
  }
  size_t blocks = 0;
  size_t spans = tm_stranded_spans(&blocks);
  atomic_store(&park, 0);
  atomic_store(&stop_keeper, 1);
  pthread_join(k, NULL);
  atomic_store(&stop_freer, 1);
  pthread_mutex_lock(&inbox_lock);
  pthread_cond_broadcast(&inbox_cond);
  pthread_mutex_unlock(&inbox_lock);
  pthread_join(f, NULL);
  ck_assert_msg(spans == 0, "%zu spans hold %zu cross-thread frees their owner will never collect", spans, blocks);
}

/* drain: the owner drains its remote list over and over while two threads
 * free its blocks remotely, so that a drain falls between a freer's look at
 * the notice state and its push as often as possible. */
enum { DRAIN_BLOCKS = 60000 };
static void *drain_blocks[DRAIN_BLOCKS];
static atomic_int drain_done;

static void *drain_freer(void *arg) {
  long half = (long)arg;
  for (long i = half; i < DRAIN_BLOCKS; i += 2) free(drain_blocks[i]);
  atomic_fetch_add(&drain_done, 1);
  return NULL;
}

START_TEST(t_drain_race) {
  for (int round = 0; round < 5; round++) {
    for (int i = 0; i < DRAIN_BLOCKS; i++) {
      drain_blocks[i] = malloc(BLOCK);
      ck_assert_ptr_nonnull(drain_blocks[i]);
    }
    atomic_store(&drain_done, 0);
    pthread_t f[2];
    for (long i = 0; i < 2; i++) ck_assert_int_eq(pthread_create(&f[i], NULL, drain_freer, (void *)i), 0);
    tm_heap *h = tm_heap_tls;
    while (atomic_load(&drain_done) < 2) { /* the owner's drain, as its slow paths do it */
      tm_heap_lock(h);
      tm_heap_drain_remote(h, false);
      tm_heap_unlock(h);
    }
    for (int i = 0; i < 2; i++) pthread_join(f[i], NULL);
    size_t blocks = 0;
    size_t spans = tm_stranded_spans(&blocks);
    ck_assert_msg(spans == 0, "round %d: %zu spans hold %zu cross-thread frees nobody was told of", round, spans, blocks);
    tm_heap_collect_all(h);
  }
}
END_TEST

START_TEST(t_no_stranded_frees) {
  /* the race is hit in about half the rounds on a broken handoff */
  for (int round = 0; round < 3; round++) run_handoff(1500, 300);
}
END_TEST

/* fork between a remote freer's IDLE -> BUSY and its push: the freer does
 * not exist in the child, so BUSY would stay, and every later remote free
 * into that span would land on thread_free with nobody told (BUSY means
 * someone is telling the owner). The child's fork handler must reopen it:
 * a remote free in the child then tells the owner (QUEUED). The vanished
 * freer is simulated by setting BUSY on a span of ours before the fork. */
static void *g_child_block;
static void *child_remote_free(void *arg) {
  (void)arg;
  free(g_child_block);
  return NULL;
}

START_TEST(t_fork_busy_notice) {
  void *keep = malloc(BLOCK);
  void *p = malloc(BLOCK);
  g_child_block = malloc(BLOCK);
  ck_assert_ptr_nonnull(keep);
  ck_assert_ptr_nonnull(p);
  tm_span *s = tm_span_of(tm_segment_base(p), p);
  ck_assert_ptr_eq(tm_span_of(tm_segment_base(g_child_block), g_child_block), s);
  ck_assert_uint_eq(tm_notice_state(s), TM_NOTICE_IDLE);
  atomic_fetch_or(&s->thread_free, (uintptr_t)TM_NOTICE_BUSY); /* a notifier inside BUSY */
  fflush(stdout);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    if (tm_notice_state(s) == TM_NOTICE_BUSY) _exit(1); /* the vanished notifier's BUSY stayed */
    pthread_t t;
    if (pthread_create(&t, NULL, child_remote_free, NULL) != 0) _exit(3);
    pthread_join(t, NULL);
    _exit(tm_notice_state(s) == TM_NOTICE_QUEUED ? 0 : 2); /* the owner was told */
  }
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  atomic_fetch_and(&s->thread_free, ~(uintptr_t)TM_NOTICE_BUSY); /* the parent's notifier "finishes" */
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                "fork child: %s (status 0x%x)",
                WIFEXITED(status) && WEXITSTATUS(status) == 1   ? "the notice stayed BUSY"
                : WIFEXITED(status) && WEXITSTATUS(status) == 2 ? "a remote free did not tell the owner"
                                                                : "failed",
                status);
  free(p);
  free(keep);
  free(g_child_block);
}
END_TEST

int main(void) {
  Suite *su = suite_create("handoff");
  TCase *tc = tcase_create("stranded");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, t_no_stranded_frees);
  tcase_add_test(tc, t_drain_race);
  tcase_add_test(tc, t_fork_busy_notice);
  suite_add_tcase(su, tc);
  return check_run(su, CK_FORK_GETENV);
}
