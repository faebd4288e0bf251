/* The pager thread: its life and its loop.
 *
 * It starts lazily, at the end of a malloc slow path, once some memory has
 * been freed that it could give back (a slice); it is started again in a
 * fork child the same way. It blocks every signal, never allocates, and
 * never makes a system call while holding a lock the front end waits on:
 * each round takes memory out of circulation under the front end's locks,
 * hands it to the kernel with no lock held, and gives it back
 * (pager/policy.c). Between rounds it sleeps until the next thing it knows
 * of is due, or, when nothing is pending, until the front end wakes it.
 *
 * Without the thread (TIDE_PAGER=0, before it starts, or if it could not
 * be created), the thread that empties a segment releases it at once. */
#include "config.h"

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* pthread_setname_np */
#endif

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "pager_int.h"

tm_pager_stats tm_pstat;

enum { TM_PS_OFF = 0, TM_PS_STARTING, TM_PS_RUNNING, TM_PS_FAILED };
static atomic_int tm_pstate;
/* One trimmer at a time: the pager's rounds and tide_purge() (src/trim.c
 * keeps per-heap state with one writer). Never taken by malloc or free. */
static pthread_mutex_t tm_trim_mutex = PTHREAD_MUTEX_INITIALIZER;
static __thread bool tm_turn_mine; /* this thread holds tm_trim_mutex */
static atomic_int tm_asleep; /* 1 while waiting with no deadline */
static pthread_t tm_ptid;

static void tm_turn_take(void) {
  pthread_mutex_lock(&tm_trim_mutex);
  TM_ASSERT(!tm_turn_mine);
  tm_turn_mine = true;
}

static void tm_turn_give(void) {
  TM_ASSERT(tm_turn_mine);
  tm_turn_mine = false;
  pthread_mutex_unlock(&tm_trim_mutex);
}

bool tm_pager_turn_held(void) { return tm_turn_mine; }

/* ---- the loop ------------------------------------------------------------------ */
static void *tm_pager_main(void *arg) {
  (void)arg;
  tm_front_mark_pager_thread();
  bool pressure = false;
  for (;;) {
    tm_turn_take();
    int next = tm_policy_round(tm_now_ms(), pressure);
    tm_turn_give();
    TM_ASSERT(next >= -1);
    TM_PSTAT_ADD(rounds, 1);
    pressure = false;
    if (next < 0) {
      /* Dekker with tm_pager_activity: either the front end sees asleep and
       * wakes us, or tm_policy_pending sees what it did. */
      atomic_store_explicit(&tm_asleep, 1, memory_order_seq_cst);
      if (tm_policy_pending()) {
        atomic_store_explicit(&tm_asleep, 0, memory_order_relaxed);
        continue;
      }
    }
    unsigned ev = tm_loop_wait(next);
    atomic_store_explicit(&tm_asleep, 0, memory_order_relaxed);
    TM_PSTAT_ADD(wakeups, 1);
    if (ev & TM_EV_PRESSURE) pressure = true;
  }
  return NULL;
}

/* ---- starting it --------------------------------------------------------------- */
void tm_pager_maybe_start(void) {
  if (TM_PAGER_LIKELY(atomic_load_explicit(&tm_pstate, memory_order_relaxed) != TM_PS_OFF)) return;
  if (!tm_pager_opt.enabled || !tm_trim_has_work() || !tm_front_ready()) return;
  int expect = TM_PS_OFF;
  if (!atomic_compare_exchange_strong(&tm_pstate, &expect, TM_PS_STARTING)) return;
  int saved = errno;
  int state = TM_PS_FAILED;
  if (tm_loop_open(tm_policy_open(), true)) {
    pthread_attr_t attr;
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    /* the thread inherits the mask: no signal is ever delivered to it */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&tm_ptid, &attr, tm_pager_main, NULL) == 0) {
      pthread_setname_np(tm_ptid, "tide-pager"); /* named before anyone can look */
      state = TM_PS_RUNNING;
      TM_PSTAT_ADD(started, 1);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (state != TM_PS_RUNNING) { /* close what was opened */
      tm_loop_after_fork();
      tm_policy_after_fork();
    }
  }
  atomic_store_explicit(&tm_pstate, state, memory_order_release);
  errno = saved;
}

/* ---- what the front end calls ------------------------------------------------ */
void tm_pager_activity(void) {
  if (TM_PAGER_LIKELY(atomic_load_explicit(&tm_pstate, memory_order_relaxed) == TM_PS_RUNNING)) {
    if (atomic_load_explicit(&tm_asleep, memory_order_seq_cst) &&
        atomic_exchange_explicit(&tm_asleep, 0, memory_order_relaxed))
      tm_loop_wake();
    return;
  }
  if (!tm_trim_empty_hint()) return;
  tm_trim_req req = {.now_ms = tm_now_ms(), .empty_only = true};
  tm_pager_trim_now(&req);
}

/* Collect, release and give back until nothing is left; returns the bytes
 * the kernel took. A small batch on the stack: callers may be on a thread
 * with a small stack, and a batch of 32 ranges is already one syscall each
 * where process_madvise is refused. Segments only (empty_only) need no
 * turn: they are taken under the global lock alone. */
size_t tm_pager_trim_now(const tm_trim_req *req) {
  tm_release storage[32];
  tm_batch b = {0, 32, 0, storage};
  tm_due due = {false, 0, false};
  if (req->empty_only) return tm_policy_collect(req, &b, &due);
  tm_turn_take();
  size_t bytes = tm_policy_collect(req, &b, &due);
  tm_turn_give();
  return bytes;
}

/* Everything free in the process, now: every heap counted idle (their
 * caches asked back), every empty segment unmapped, the huge cache too. */
size_t tm_pager_purge_all(void) {
  tm_trim_req req = {.now_ms = tm_now_ms(), .all = true, .keep_no_empty = true};
  return tm_pager_trim_now(&req);
}

/* Between rounds, hold the pager still (tests that inspect the heaps). */
void tm_pager_pause(void) { tm_turn_take(); }
void tm_pager_resume(void) { tm_turn_give(); }

void tm_pager_after_fork(void) {
  pthread_mutex_init(&tm_trim_mutex, NULL); /* the pager may have held it */
  tm_turn_mine = false;                     /* (or, in tide_purge, the forking thread) */
  tm_release_after_fork();
  int st = atomic_load(&tm_pstate);
  if (st == TM_PS_RUNNING || st == TM_PS_STARTING) {
    tm_loop_after_fork();
    tm_policy_after_fork();
    atomic_store(&tm_pstate, TM_PS_OFF); /* started again on the next slow path */
  }
  atomic_store(&tm_asleep, 0);
}

/* ---- statistics -------------------------------------------------------------- */
void tm_pager_get_stats(tm_pager_stats *out) {
  tm_pager_stats s;
  s.started = __atomic_load_n(&tm_pstat.started, __ATOMIC_RELAXED);
  s.wakeups = __atomic_load_n(&tm_pstat.wakeups, __ATOMIC_RELAXED);
  s.rounds = __atomic_load_n(&tm_pstat.rounds, __ATOMIC_RELAXED);
  s.batches = __atomic_load_n(&tm_pstat.batches, __ATOMIC_RELAXED);
  s.syscalls = __atomic_load_n(&tm_pstat.syscalls, __ATOMIC_RELAXED);
  s.pressure = __atomic_load_n(&tm_pstat.pressure, __ATOMIC_RELAXED);
  s.tight = __atomic_load_n(&tm_pstat.tight, __ATOMIC_RELAXED);
  s.limit = __atomic_load_n(&tm_pstat.limit, __ATOMIC_RELAXED);
  s.delay_ms = s.rounds ? __atomic_load_n(&tm_pstat.delay_ms, __ATOMIC_RELAXED) : (uint64_t)tm_pager_opt.delay_ms;
  s.raised = __atomic_load_n(&tm_pstat.raised, __ATOMIC_RELAXED);
  s.purged_dontneed = __atomic_load_n(&tm_pstat.purged_dontneed, __ATOMIC_RELAXED);
  s.purged_free = __atomic_load_n(&tm_pstat.purged_free, __ATOMIC_RELAXED);
  s.cpu_ns = 0;
  s.loop = TM_LOOP_NONE;
  s.psi = 0;
  if (atomic_load_explicit(&tm_pstate, memory_order_acquire) == TM_PS_RUNNING) {
    clockid_t cid;
    struct timespec ts;
    if (pthread_getcpuclockid(tm_ptid, &cid) == 0 && clock_gettime(cid, &ts) == 0)
      s.cpu_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    s.loop = tm_loop_backend();
    s.psi = tm_loop_has_psi();
  }
  *out = s;
}

const char *tm_pager_loop_name(unsigned loop) {
  switch (loop) {
    case TM_LOOP_POLL:
      return "poll";
    case TM_LOOP_URING:
      return "io_uring";
    default:
      return "none";
  }
}
