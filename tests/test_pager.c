/* The pager, seen from outside: its thread, and memory that really goes
 * back, measured from /proc (never from tidemalloc's own counters).
 *
 * Each scenario runs in a fresh process: the test re-executes this program
 * with the scenario's name (and an environment of its choice), so that
 * every scenario starts with a pager that has never run. A scenario prints
 * what went wrong on stderr and exits 1; the test shows that text. Waits
 * for memory to come back poll /proc every 10 ms and give up after several
 * seconds: they assert that it happens, not how fast. */
#define _GNU_SOURCE
#include <check.h>
#include "checkrun.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <tidemalloc.h>

#include "testutil.h"

static char self_exe[4096];

/* ---- what a scenario can look at ------------------------------------------- */

/* Number of this process's threads named `name`. Allocates nothing (raw
 * getdents64 into a stack buffer): an opendir would itself start a pager. */
static int threads_named(const char *name) {
  int dfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY);
  if (dfd < 0) return -1;
  char buf[8192];
  int count = 0;
  long n;
  while ((n = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
    for (long off = 0; off < n;) {
      struct {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[];
      } *d = (void *)(buf + off);
      off += d->reclen;
      if (d->name[0] == '.') continue;
      char path[300], comm[64] = {0};
      snprintf(path, sizeof path, "/proc/self/task/%s/comm", d->name);
      int fd = open(path, O_RDONLY);
      if (fd < 0) continue;
      ssize_t len = read(fd, comm, sizeof comm - 1);
      close(fd);
      if (len > 0 && comm[len - 1] == '\n') comm[len - 1] = 0;
      if (strcmp(comm, name) == 0) count++;
    }
  }
  close(dfd);
  return count;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int failed;
static void problem(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  failed = 1;
}

/* Wait until VmRSS is at most limit_kb; returns the ms it took, or -1. */
static int wait_rss_below(long limit_kb, int timeout_ms) {
  for (int t = 0; t <= timeout_ms; t += 10) {
    if (rss_kb() <= limit_kb) return t;
    sleep_ms(10);
  }
  return -1;
}

/* A malloc path the compiler cannot take away (a large block never comes
 * from a thread cache): the pager starts on one once there is work. */
static void poke_malloc(void) {
  static void *volatile sink;
  sink = malloc(100 * 1024);
  free(sink);
}

/* 96 MiB of 200 KB large blocks, every page touched. */
enum { NBIG = 480, BIG = 200 * 1024 };
static void *big[NBIG];
static void alloc_big(void) {
  for (int i = 0; i < NBIG; i++) {
    big[i] = malloc(BIG);
    if (!big[i]) abort();
    memset(big[i], 0x5a, BIG);
  }
}

/* ---- scenarios ------------------------------------------------------------- */
/* Lazy start: no thread until there is work (memory freed, or a heap of
 * more than one segment). */
static void sc_lazy(void) {
  struct tide_stats st;
  static void *volatile sink;
  /* small blocks of 16 classes: one segment, nothing freed, no work */
  for (int i = 0; i < 1000; i++) sink = malloc((size_t)(i % 16) * 16 + 1);
  (void)sink;
  tide_get_stats(&st);
  if (st.pager_running || threads_named("tide-pager"))
    problem("the pager runs before anything was freed (running=%d threads=%d)", st.pager_running,
         threads_named("tide-pager"));
  alloc_big();
  for (int i = 0; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  tide_get_stats(&st);
  if (!st.pager_running || st.pager_started != 1) problem("no pager after frees (running=%d started=%zu)", st.pager_running, st.pager_started);
  if (threads_named("tide-pager") != 1) problem("%d threads named tide-pager", threads_named("tide-pager"));
}

/* Free slices in segments still in use go back once the delay passes, and
 * then the pager sleeps: no wakeups at all while nothing changes. */
static void sc_rss_drop(void) {
  long base = rss_kb();
  alloc_big();
  long full = rss_kb();
  for (int i = 0; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  long half_kb = (long)(NBIG / 2) * (BIG / 1024);
  int t = wait_rss_below(full - half_kb * 8 / 10, 5000);
  if (t < 0) problem("RSS %ld KiB after freeing half of %ld KiB (base %ld): not given back", rss_kb(), full, base);
  sleep_ms(300); /* let it finish and go to sleep */
  struct tide_stats a, b;
  tide_get_stats(&a);
  sleep_ms(1000);
  tide_get_stats(&b);
  if (b.pager_wakeups != a.pager_wakeups)
    problem("the pager woke %zu times in 1 s with nothing to do", b.pager_wakeups - a.pager_wakeups);
  if (b.pager_cpu_ns - a.pager_cpu_ns > 10000000) problem("the pager used %zu ns of CPU in 1 s idle", b.pager_cpu_ns - a.pager_cpu_ns);
  for (int i = 1; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  if (wait_rss_below(base + 4096, 5000) < 0) problem("RSS %ld KiB after freeing everything (base %ld)", rss_kb(), base);
  tide_get_stats(&b);
  if (b.pager_wakeups == a.pager_wakeups) problem("the front end did not wake the sleeping pager");
}

/* TIDE_PAGER=0: no thread; free slices of a segment in use stay resident
 * (the A/B baseline), empty segments still go back at once. */
static void sc_disabled(void) {
  long base = rss_kb();
  alloc_big();
  long full = rss_kb();
  for (int i = 0; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  sleep_ms(400);
  struct tide_stats st;
  tide_get_stats(&st);
  if (st.pager_running || st.pager_started || threads_named("tide-pager")) problem("a pager thread runs with TIDE_PAGER=0");
  if (rss_kb() < full - 8192) problem("RSS fell from %ld to %ld KiB without a pager", full, rss_kb());
  for (int i = 1; i < NBIG; i += 2) free(big[i]);
  if (rss_kb() > base + 8192) problem("empty segments kept: RSS %ld KiB, base %ld", rss_kb(), base);
}

/* The loop runs on io_uring where it can, and on poll(2) where io_uring is
 * refused (here by a seccomp filter, as a container runtime might). */
static void deny_io_uring(void) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
    problem("cannot install the seccomp filter: %s", strerror(errno));
}

static void check_loop(const char *want) {
  long base = rss_kb();
  alloc_big();
  long full = rss_kb();
  for (int i = 0; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  struct tide_stats st;
  tide_get_stats(&st);
  if (strcmp(st.pager_loop, want) != 0) problem("the pager waits with %s, not %s", st.pager_loop, want);
  if (wait_rss_below(full - (long)(NBIG / 2) * (BIG / 1024) * 8 / 10, 5000) < 0)
    problem("RSS %ld KiB (full %ld, base %ld): nothing given back", rss_kb(), full, base);
}

/* The pager ran, whatever it waits with, and gave memory back. */
static void check_loop_backend_any(void) {
  long base = rss_kb();
  alloc_big();
  long full = rss_kb();
  for (int i = 0; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  if (wait_rss_below(full - (long)(NBIG / 2) * (BIG / 1024) * 8 / 10, 5000) < 0)
    problem("RSS %ld KiB (full %ld, base %ld): nothing given back", rss_kb(), full, base);
}

static void sc_loop_uring(void) {
  int fd = (int)syscall(__NR_io_uring_setup, 1, &(char[120]){0});
  if (fd < 0) {
    printf("SKIP: io_uring_setup refused here (%s)\n", strerror(errno));
    return;
  }
  close(fd);
#ifdef TIDETEST_HAVE_LIBURING
  check_loop("io_uring");
#else
  check_loop("poll");
#endif
}

static void sc_loop_poll(void) {
  deny_io_uring();
  check_loop("poll");
}

/* fork: the child has no pager thread until it has work, then starts its
 * own, which gives the child's memory back; the parent's keeps running. */
static void sc_fork(void) {
  alloc_big();
  for (int i = 0; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  struct tide_stats st;
  tide_get_stats(&st);
  if (!st.pager_running) problem("no pager in the parent");
  pid_t pid = fork();
  if (pid == 0) {
    tide_get_stats(&st);
    if (st.pager_running || threads_named("tide-pager")) problem("child: a pager thread right after fork");
    long full = rss_kb();
    for (int i = 1; i < NBIG; i += 2) free(big[i]);
    poke_malloc();
    tide_get_stats(&st);
    if (!st.pager_running || threads_named("tide-pager") != 1) problem("child: the pager did not start again");
    if (wait_rss_below(full - (long)(NBIG / 2) * (BIG / 1024) * 8 / 10, 5000) < 0)
      problem("child: RSS %ld KiB from %ld: nothing given back", rss_kb(), full);
    _exit(failed);
  }
  int status;
  if (wait_with_timeout(pid, &status, 30) != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    problem("the child failed (status 0x%x)", status);
  tide_get_stats(&st);
  if (!st.pager_running || threads_named("tide-pager") != 1) problem("parent: pager gone after fork");
}

/* fork again and again while the pager is busy giving memory back: every
 * child must find a consistent heap, allocate, and exit cleanly. */
static void sc_fork_busy(void) {
  for (int round = 0; round < 20; round++) {
    alloc_big();
    for (int i = 0; i < NBIG; i += 3) free(big[i]);
    poke_malloc();
    pid_t pid = fork();
    if (pid == 0) {
      if (tide_heap_check() != 0) _exit(2);
      for (int i = 0; i < NBIG; i++)
        if (i % 3) free(big[i]);
      void *p[256];
      for (int i = 0; i < 256; i++) {
        p[i] = malloc((size_t)(i + 1) * 1000);
        if (!p[i]) _exit(3);
        memset(p[i], 1, (size_t)(i + 1) * 1000);
      }
      for (int i = 0; i < 256; i++) free(p[i]);
      printf("%s", ""); /* stdio in the child */
      _exit(tide_heap_check() != 0 ? 4 : 0);
    }
    for (int i = 0; i < NBIG; i++)
      if (i % 3) free(big[i]);
    int status;
    if (wait_with_timeout(pid, &status, 30) != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      problem("round %d: child status 0x%x", round, status);
      return;
    }
  }
}

/* A thread that made blocks, handed them to us and then blocks forever (it
 * never takes another slow path): the pager must still collect our frees
 * into its spans, retire them and give the memory back. */
static int made_pipe[2], block_pipe[2];
/* Tell the main thread we are done, then block in read(2) for the rest of
 * the test: nobody writes. */
static void tell_then_block(void) {
  char c;
  if (write(made_pipe[1], "x", 1) != 1) abort();
  while (read(block_pipe[0], &c, 1) != 1) {
  }
}

static void *blocks_then_sleep(void *arg) {
  void **v = arg;
  for (int i = 0; i < 40000; i++) {
    v[i] = malloc(512 + (size_t)(i % 4) * 512);
    if (!v[i]) abort();
    memset(v[i], 0x77, 512);
  }
  tell_then_block();
  return NULL;
}

static void sc_blocked_owner(void) {
  static void *v[40000];
  if (pipe(made_pipe) != 0 || pipe(block_pipe) != 0) abort();
  long base = rss_kb();
  pthread_t t;
  pthread_create(&t, NULL, blocks_then_sleep, v);
  char c;
  if (read(made_pipe[0], &c, 1) != 1) abort(); /* its blocks are made */
  long full = rss_kb();
  for (int i = 0; i < 40000; i++) free(v[i]); /* cross-thread frees to a sleeper */
  poke_malloc();
  long made = full - base;
  int t_ms = wait_rss_below(base + made / 5, 5000);
  if (t_ms < 0) problem("RSS %ld KiB: %ld KiB the blocked thread made and we freed are still resident (base %ld)",
                        rss_kb(), rss_kb() - base, base);
  else
    printf("blocked owner: %ld KiB back in %d ms\n", full - rss_kb(), t_ms);
}

/* A blocked thread freed what took RSS from base to full: within 5 s all
 * of it but 2 MiB must be back, which only the pager can do. */
static void expect_back_from_blocked(const char *what, long base, long full) {
  poke_malloc();
  long made = full - base;
  int t_ms = wait_rss_below(base + 2048, 5000);
  if (t_ms < 0)
    problem("%s: RSS %ld KiB: %ld KiB of the %ld KiB a thread freed before it blocked are still resident "
            "(base %ld)",
            what, rss_kb(), rss_kb() - base, made, base);
  else
    printf("%s: %ld of %ld KiB back in %d ms\n", what, full - rss_kb(), made, t_ms);
}

/* The other way round: we make blocks of the larger small classes, a
 * thread frees them all and then blocks forever. The blocks it freed last
 * wait in its outbox (src/outbox.c), each pinning a page of one of our spans
 * (about 4 MiB here, had they stayed there); the pager must send the
 * sleeper's outbox back itself, so that our spans empty and go back. */
enum { NFREED = 24 * 160 };
static void *freed_v[NFREED];
static void *frees_then_sleep(void *arg) {
  (void)arg;
  for (int i = 0; i < NFREED; i++) free(freed_v[i]);
  tell_then_block();
  return NULL;
}

static void sc_blocked_freer(void) {
  if (pipe(made_pipe) != 0 || pipe(block_pipe) != 0) abort();
  long base = rss_kb();
  /* every class from 4 KiB to 32 KiB, in turn */
  for (int i = 0; i < NFREED; i++) {
    size_t n = 4096 + (size_t)(i % 24) * 1190 + 1;
    freed_v[i] = malloc(n);
    if (!freed_v[i]) abort();
    memset(freed_v[i], 0x55, n);
  }
  long full = rss_kb();
  pthread_t t;
  pthread_create(&t, NULL, frees_then_sleep, NULL);
  char c;
  if (read(made_pipe[0], &c, 1) != 1) abort(); /* it freed them all */
  expect_back_from_blocked("blocked freer", base, full);
}

/* A thread makes 8 MiB of 64-byte blocks, frees one on each page first and
 * then all the others, and blocks forever. Frees that overflow its cache
 * go to its stash (src/stash.c) as whole lists until the stash is full: the
 * first ones, one a page, pin up to 8 MiB there. The pager must send the
 * sleeper's stash back itself (as its caches, blocked_caches), so that the
 * spans empty and go back. */
enum { CHURN_PAGES = 2048, CHURN_N = CHURN_PAGES * 64 };
static void *churn_v[CHURN_N];
static void *churns_then_sleeps(void *arg) {
  (void)arg;
  for (int i = 0; i < CHURN_N; i++) {
    churn_v[i] = malloc(64);
    if (!churn_v[i]) abort();
    memset(churn_v[i], 0x33, 64);
  }
  if (write(made_pipe[1], "x", 1) != 1) abort(); /* made */
  for (int i = 0; i < CHURN_N; i += 64) free(churn_v[i]);
  for (int i = 0; i < CHURN_N; i++)
    if (i % 64) free(churn_v[i]);
  tell_then_block();
  return NULL;
}

/* A thread that makes blocks (then says "made"), frees them and blocks
 * (then says so again): what it freed must come back. `v`, its array of
 * pointers, is made resident before the base is taken. */
static void run_makes_frees_blocks(const char *what, void *(*thread)(void *), void *v, size_t v_size) {
  if (pipe(made_pipe) != 0 || pipe(block_pipe) != 0) abort();
  memset(v, 0, v_size);
  long base = rss_kb();
  pthread_t t;
  pthread_create(&t, NULL, thread, NULL);
  char c;
  if (read(made_pipe[0], &c, 1) != 1) abort(); /* made */
  long full = rss_kb();
  if (read(made_pipe[0], &c, 1) != 1) abort(); /* freed, and blocked */
  expect_back_from_blocked(what, base, full);
}

static void sc_blocked_stash(void) { run_makes_frees_blocks("blocked stash", churns_then_sleeps, churn_v, sizeof churn_v); }

/* A thread makes blocks of every class up to 2 KiB, frees them so that the
 * last blocks of each class, those its cache keeps, lie one a page, on
 * pages where nothing else is used, and blocks forever. Each cached block
 * pins its page: up to 31 pages a class, 40 classes. Only the owner works
 * on its caches without the lock; the pager must claim the sleeper's heap
 * (the handshake of doc/design.md, "The claim") and take its caches, so
 * that the pages empty and go back. */
enum { CACHED_CLASSES = 40, CACHED_PAGES = 64 };
static void *cached_v[CACHED_CLASSES][CACHED_PAGES * 256];
/* the class sizes: 16..128 by 16, then 8 a doubling up to 2 KiB */
static size_t cached_size(int k) {
  if (k < 8) return 16 + 16 * (size_t)k;
  size_t p = (size_t)128 << ((k - 8) / 8);
  return p + p / 8 * (size_t)((k - 8) % 8 + 1);
}
static void *caches_then_sleep(void *arg) {
  (void)arg;
  for (int k = 0; k < CACHED_CLASSES; k++) {
    size_t n = cached_size(k), per_page = 4096 / n, count = per_page * CACHED_PAGES;
    for (size_t i = 0; i < count; i++) {
      if (!(cached_v[k][i] = malloc(n))) abort();
      memset(cached_v[k][i], 0x44, n);
    }
  }
  if (write(made_pipe[1], "x", 1) != 1) abort(); /* made */
  for (int k = 0; k < CACHED_CLASSES; k++) {
    size_t n = cached_size(k), per_page = 4096 / n, count = per_page * CACHED_PAGES;
    /* all but one block of every page, then that one of each page: the
     * last frees, one a page, are what the cache keeps */
    for (size_t i = 0; i < count; i++)
      if (i % per_page) free(cached_v[k][i]);
    for (size_t i = 0; i < count; i += per_page) free(cached_v[k][i]);
  }
  tell_then_block();
  return NULL;
}

static void sc_blocked_caches(void) {
  run_makes_frees_blocks("blocked caches", caches_then_sleep, cached_v, sizeof cached_v);
}

/* 64 MiB of 1-4 KiB blocks, 90% freed at random, the rest kept and idle:
 * the wholly free pages inside the spans go back, and what was kept is
 * intact (a purge of a page with a live block on it would zero it). */
enum { NPART = 64 * 1024 * 1024 / 2560 };
static void *part[NPART];
static size_t part_n[NPART];
static void sc_partial_pages(void) {
  long base = rss_kb();
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < NPART; i++) {
    rng = mix64(rng);
    part_n[i] = 1024 + (size_t)(rng % 3073);
    part[i] = malloc(part_n[i]);
    if (!part[i]) abort();
    pattern_fill(part[i], part_n[i], (uint64_t)i);
  }
  long full = rss_kb();
  for (int i = 0; i < NPART; i++) {
    rng = mix64(rng);
    if (rng % 10) {
      free(part[i]);
      part[i] = NULL;
    }
  }
  poke_malloc();
  long made = full - base;
  int t_ms = wait_rss_below(base + made * 45 / 100, 5000);
  if (t_ms < 0) problem("RSS %ld KiB after freeing 90%% of %ld KiB at random (base %ld): free pages kept", rss_kb(), made, base);
  else
    printf("partial: %ld of %ld KiB resident after %d ms\n", rss_kb() - base, made, t_ms);
  for (int i = 0; i < NPART; i++)
    if (part[i] && pattern_check(part[i], part_n[i], (uint64_t)i) != (size_t)-1) {
      problem("block %d (%zu bytes) changed while the pager purged around it", i, part_n[i]);
      break;
    }
}

/* Threads allocate, check and free blocks of every small size while the
 * pager, with no delay and every heap counted idle, keeps taking pages out
 * of their spans: no block may ever be handed out on a page being purged. */
static atomic_int race_stop;
static void *race_worker(void *arg) {
  uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  enum { SLOTS = 4096 };
  void **slot = calloc(SLOTS, sizeof *slot);
  size_t *len = calloc(SLOTS, sizeof *len);
  long bad = 0;
  while (!atomic_load(&race_stop)) {
    rng = mix64(rng);
    unsigned i = (unsigned)(rng % SLOTS);
    if (slot[i]) {
      if (pattern_check(slot[i], len[i], (uint64_t)(uintptr_t)slot[i]) != (size_t)-1) bad++;
      free(slot[i]);
      slot[i] = NULL;
    } else {
      /* every small class, so that spans of 4 slices (blocks over 8 KiB,
       * with pages after their last block) come and go too */
      len[i] = 16 + (size_t)((rng >> 20) % (rng & 1 ? 4096 : 32752));
      slot[i] = malloc(len[i]);
      if (!slot[i]) abort();
      pattern_fill(slot[i], len[i], (uint64_t)(uintptr_t)slot[i]);
    }
    if ((rng & 0xffff) == 0) sleep_ms(2); /* look idle now and then */
  }
  for (unsigned i = 0; i < SLOTS; i++) {
    if (slot[i] && pattern_check(slot[i], len[i], (uint64_t)(uintptr_t)slot[i]) != (size_t)-1) bad++;
    free(slot[i]);
  }
  free(slot);
  free(len);
  return (void *)bad;
}

static void sc_purge_race(void) {
  pthread_t t[3];
  for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, race_worker, (void *)(i + 1));
  sleep_ms(3000);
  atomic_store(&race_stop, 1);
  long bad = 0;
  for (int i = 0; i < 3; i++) {
    void *r;
    pthread_join(t[i], &r);
    bad += (long)r;
  }
  struct tide_stats st;
  tide_get_stats(&st);
  if (bad) problem("%ld blocks changed between malloc and free", bad);
  if (!st.pager_batches) problem("the pager never ran a batch");
  printf("purge race: %zu batches, %zu bytes purged\n", st.pager_batches, st.purged_bytes);
}

/* The outbox's push without the lock against the pager taking the outbox
 * (src/outbox.c). A freer thread frees 64-byte blocks the main thread
 * makes, about one a microsecond: its outbox fills without the lock for 16
 * pushes at a time (from half its capacity of 31 to full), long enough for
 * the pager (no delay, every heap counted idle) to find it idle and take
 * the outbox, now and then in the middle of a push. A pager that
 * took it without the handshake would lose a block or hand one out twice:
 * patterns, the free key and the heap check catch either. */
enum { XRING = 4096, XN = 64 };
static _Atomic(void *) xring[XRING];
static atomic_ulong xhead, xtail;
static void *xblock_new(void) {
  uint64_t *p = malloc(XN);
  if (!p) abort();
  pattern_fill(p, XN, (uint64_t)(uintptr_t)p);
  return p;
}
static long xblock_free(void *p) {
  long bad = pattern_check(p, XN, (uint64_t)(uintptr_t)p) != (size_t)-1;
  free(p);
  return bad;
}
static void spin_ns(long ns) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do clock_gettime(CLOCK_MONOTONIC, &b);
  while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < ns);
}
static void *outbox_freer(void *arg) {
  (void)arg;
  long bad = 0;
  for (;;) {
    unsigned long t = atomic_load(&xtail);
    /* race_stop before xhead: once the producer has stopped, xhead is
     * final (the other order could stop with the ring full, if the
     * producer filled it between the two loads) */
    bool stop = atomic_load(&race_stop);
    if (t == atomic_load_explicit(&xhead, memory_order_acquire)) {
      if (stop) break;
      continue;
    }
    bad += xblock_free(atomic_load(&xring[t % XRING]));
    atomic_store_explicit(&xtail, t + 1, memory_order_release);
    /* every outbox's list as long as its count says, now and then: a
     * push that counted from a length the pager had just sent back
     * would make them differ */
    if ((t & 1023) == 0 && tide_heap_check() != 0) bad++;
    spin_ns(1000);
  }
  return (void *)bad;
}

static void sc_outbox_race(void) {
  pthread_t t;
  struct tide_stats st;
  /* memory to give back: the pager starts (it starts lazily, on work) */
  alloc_big();
  for (int i = 0; i < NBIG; i++) free(big[i]);
  poke_malloc();
  tide_get_stats(&st);
  if (!st.pager_running) problem("no pager");
  tide_collect();
  tide_get_stats(&st);
  size_t used_before = st.span_used_bytes;
  atomic_store(&race_stop, 0);
  pthread_create(&t, NULL, outbox_freer, NULL);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do {
    unsigned long h = atomic_load(&xhead);
    if (h - atomic_load_explicit(&xtail, memory_order_acquire) < XRING) {
      atomic_store(&xring[h % XRING], xblock_new());
      atomic_store_explicit(&xhead, h + 1, memory_order_release);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
  } while (b.tv_sec - a.tv_sec < 3);
  atomic_store(&race_stop, 1);
  void *r;
  pthread_join(t, &r);
  long bad = (long)r;
  /* every block freed, the freer gone: nothing may be left in use. The
   * blocks of pages the pager is purging count as used until the pages
   * come back (census.c), and the pager (no delay) purges free pages of
   * this thread's spans as they empty: look again until it is done */
  tide_collect();
  tide_get_stats(&st);
  for (int waited = 0; waited < 2000 && st.span_used_bytes > used_before + 4096; waited += 10) {
    sleep_ms(10);
    tide_collect();
    tide_get_stats(&st);
  }
  if (bad) problem("%ld blocks changed between malloc and free, or the heap check failed", bad);
  if (tide_heap_check() != 0) problem("heap check failed");
  /* (slack for what libc allocates for a thread and the pager's start) */
  if (st.span_used_bytes > used_before + 4096)
    problem("%zu bytes of blocks still in use after every block was freed (%zu before)", st.span_used_bytes,
            used_before);
  if (!st.outbox_claims) problem("the pager never took an outbox");
  printf("outbox race: the pager took outboxes %zu times, found the owner pushing %zu times\n", st.outbox_claims,
         st.outbox_claims_busy);
}

/* ---- policy: limits, pressure ------------------------------------------------ */
/* 96 MiB allocated, half freed, with a decay of 10 s: only a limit can make
 * the pager give the free half back within the wait. */
static void half_freed_under_long_delay(bool expect_drop) {
  alloc_big();
  long full = rss_kb();
  for (int i = 0; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  long half_kb = (long)(NBIG / 2) * (BIG / 1024);
  int t = wait_rss_below(full - half_kb * 7 / 10, 2000);
  struct tide_stats st;
  tide_get_stats(&st);
  if (expect_drop && t < 0)
    problem("RSS %ld KiB from %ld under a limit of %zu KiB: the free half stayed", rss_kb(), full, st.memory_limit >> 10);
  if (!expect_drop && t >= 0) problem("RSS fell from %ld to %ld KiB with no limit and a 10 s delay", full, rss_kb());
  if (expect_drop && !st.pager_tight_rounds) problem("no round ran near the limit");
  if (t >= 0) printf("given back in %d ms (limit %zu KiB, %zu tight rounds)\n", t, st.memory_limit >> 10, st.pager_tight_rounds);
}

/* TIDE_RSS_LIMIT a little under what the program holds. */
static void sc_rss_limit(void) { half_freed_under_long_delay(true); }
static void sc_no_limit(void) { half_freed_under_long_delay(false); }

/* The same with the cgroup's limit (v1 memory.limit_in_bytes, or v2
 * memory.high): the process moves into a fresh memory cgroup first. */
static bool write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
  close(fd);
  return ok;
}

static void sc_cgroup_limit(void) {
  char dir[256], path[300], text[64];
  long pid = (long)getpid();
  const char *limit_file;
  snprintf(dir, sizeof dir, "/sys/fs/cgroup/memory/tidetest.%ld", pid);
  limit_file = "memory.limit_in_bytes";
  if (mkdir(dir, 0755) != 0) {
    snprintf(dir, sizeof dir, "/sys/fs/cgroup/tidetest.%ld", pid); /* v2 */
    limit_file = "memory.high";
    if (mkdir(dir, 0755) != 0) {
      printf("SKIP: cannot make a memory cgroup here (%s)\n", strerror(errno));
      return;
    }
  }
  snprintf(path, sizeof path, "%s/%s", dir, limit_file);
  snprintf(text, sizeof text, "%ld", 104L << 20);
  snprintf(path, sizeof path, "%s/%s", dir, limit_file);
  bool ok = write_file(path, text);
  snprintf(path, sizeof path, "%s/cgroup.procs", dir);
  snprintf(text, sizeof text, "%ld", pid);
  ok = ok && write_file(path, text);
  if (!ok) {
    printf("SKIP: cannot set up the memory cgroup %s (%s)\n", dir, strerror(errno));
  } else {
    half_freed_under_long_delay(true);
  }
  /* back to the parent cgroup, then remove ours */
  char parent[256];
  snprintf(parent, sizeof parent, "%.*s/cgroup.procs", (int)(strrchr(dir, '/') - dir), dir);
  write_file(parent, text);
  rmdir(dir);
}

/* PSI: armed where /proc/pressure/memory exists; where it does not (here:
 * hidden under an empty tmpfs in a private mount namespace), the pager
 * runs without it. */
static void sc_psi(void) {
  long base = rss_kb();
  (void)base;
  check_loop_backend_any();
  struct tide_stats st;
  tide_get_stats(&st);
  if (access("/proc/pressure/memory", R_OK) == 0 && !st.pager_psi) problem("PSI exists but no trigger is armed");
}

static void sc_no_psi(void) {
  if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
      mount("none", "/proc/pressure", "tmpfs", 0, NULL) != 0) {
    printf("SKIP: cannot hide /proc/pressure (%s)\n", strerror(errno));
    return;
  }
  check_loop_backend_any();
  struct tide_stats st;
  tide_get_stats(&st);
  if (st.pager_psi) problem("a PSI trigger is armed without /proc/pressure");
}

/* ---- release backends ---------------------------------------------------------- */
static void deny_syscall(long nr) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
    problem("cannot install the seccomp filter: %s", strerror(errno));
}

static void check_release(const char *want) {
  check_loop_backend_any();
  struct tide_stats st;
  tide_get_stats(&st);
  /* RSS falls while the call runs: the backend is noted when it returns */
  for (int t = 0; t < 2000 && strcmp(st.release_backend, "none") == 0; t += 10) {
    sleep_ms(10);
    tide_get_stats(&st);
  }
  if (strcmp(st.release_backend, want) != 0) problem("memory went back with %s, not %s", st.release_backend, want);
}

static void sc_pmadv(void) {
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
  /* does this kernel take MADV_DONTNEED through process_madvise? */
  int pfd = (int)syscall(434 /* pidfd_open */, getpid(), 0);
  void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  struct iovec iov = {m, 4096};
  long r = pfd >= 0 ? syscall(SYS_process_madvise, pfd, &iov, 1, MADV_DONTNEED, 0) : -1;
  munmap(m, 4096);
  if (r != 4096) {
    printf("SKIP: this kernel refuses process_madvise(MADV_DONTNEED) (%s)\n", strerror(errno));
    check_release("madvise");
    return;
  }
  check_release("process_madvise");
}

static void sc_pmadv_refused(void) {
  deny_syscall(SYS_process_madvise);
  check_release("madvise");
}

/* TIDE_PAGER_MODE=free: pages go back with MADV_FREE. The kernel takes them
 * only under pressure, so RSS need not fall; smaps says LazyFree instead.
 * Reused memory must still read as the program wrote it after reuse. */
static long rollup_kb(const char *field) { return proc_kb("/proc/self/smaps_rollup", field); }

static void sc_mode_free(void) {
  struct tide_stats st;
  tide_get_stats(&st);
  if (strcmp(st.pager_mode, "free") != 0) problem("pager mode %s, not free", st.pager_mode);
  alloc_big();
  for (int i = 0; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  long lazy = 0;
  for (int t = 0; t < 5000 && (lazy = rollup_kb("LazyFree")) < (long)(NBIG / 2) * (BIG / 1024) / 2; t += 10) sleep_ms(10);
  if (lazy < (long)(NBIG / 2) * (BIG / 1024) / 2) problem("LazyFree %ld KiB: the free half was not given back with MADV_FREE", lazy);
  for (int i = 0; i < NBIG; i += 2) { /* reuse: every byte as written */
    big[i] = malloc(BIG);
    pattern_fill(big[i], BIG, (uint64_t)i);
  }
  for (int i = 0; i < NBIG; i += 2)
    if (pattern_check(big[i], BIG, (uint64_t)i) != (size_t)-1) problem("block %d changed after reuse", i);
}

/* Spans come and go on the same slices while the pager purges: blocks of
 * 20 KiB (12 to a span of 4 slices, whose last 16 KiB hold no block) are
 * made and freed, then blocks of 32 KiB (8 to a span, the last covering
 * those pages) are made there, filled, checked and freed. The pager must
 * never give back a page under a block a new span handed out, nor hand a
 * block out twice, however its purge of the old span's pages overlaps. */
static atomic_int tail_stop;
static void *tail_noise(void *arg) { /* keeps the pager's batches long */
  (void)arg;
  enum { N = 8192 };
  static void *v[N];
  while (!atomic_load(&tail_stop)) {
    for (int i = 0; i < N; i++) {
      v[i] = malloc(1024 + (size_t)(i % 3) * 1024);
      memset(v[i], 1, 64);
    }
    for (int i = 0; i < N; i++)
      if (i % 8) free(v[i]);
    sleep_ms(1);
    for (int i = 0; i < N; i += 8) free(v[i]);
  }
  return NULL;
}

static void sc_tail_race(void) {
  enum { A = 20480, B = 32768, NA = 48, NB = 32 };
  void *a[NA], *b[NB];
  long bad = 0;
  /* a round takes some 50 times longer under qemu-user: 3000 there would
   * take minutes and overrun the 120 s of the test case */
  int rounds = check_emulator() ? 300 : 3000;
  if (check_emulator()) printf("%d rounds under %s (3000 natively)\n", rounds, check_emulator());
  pthread_t noise;
  pthread_create(&noise, NULL, tail_noise, NULL);
  for (int round = 0; round < rounds && !bad; round++) {
    for (int i = 0; i < NA; i++) {
      a[i] = malloc(A);
      memset(a[i], 0x11, A);
    }
    for (int i = 0; i < NA; i++) free(a[i]);
    for (int i = 0; i < NB; i++) {
      b[i] = malloc(B);
      pattern_fill(b[i], B, (uint64_t)(uintptr_t)b[i]);
    }
    if (round % 16 == 0) sleep_ms(1); /* let the pager in */
    for (int i = 0; i < NB; i++) {
      if (pattern_check(b[i], B, (uint64_t)(uintptr_t)b[i]) != (size_t)-1) bad++;
      free(b[i]);
    }
  }
  atomic_store(&tail_stop, 1);
  pthread_join(noise, NULL);
  struct tide_stats st;
  tide_get_stats(&st);
  if (bad) problem("%ld blocks of 32 KiB changed while the pager purged", bad);
  if (!st.pager_batches) problem("the pager never ran a batch");
}

/* The decay delay adapts (pager/policy.c, "the delay"). Half of 96 MiB is
 * freed and allocated again every 250 ms: longer than the 100 ms delay, so
 * at first every cycle's free slices are purged and faulted back in, and
 * within the idle time (1 s here), so the program is busy throughout. The
 * delay must rise until they stay, and later cycles reuse far less purged
 * memory than the first ones. Once the program idles, the delay is back at
 * 100 ms and everything goes back (RSS read from /proc). */
static size_t reused_bytes(void) {
  struct tide_stats st;
  tide_get_stats(&st);
  return st.slices_reused_bytes + st.refault_bytes;
}

static void sc_delay_adapts(void) {
  enum { CYCLES = 12 };
  long base = rss_kb();
  alloc_big();
  poke_malloc();
  size_t reused[CYCLES + 1];
  for (int c = 0; c < CYCLES; c++) {
    reused[c] = reused_bytes();
    for (int i = 1; i < NBIG; i += 2) free(big[i]);
    poke_malloc();
    sleep_ms(250);
    for (int i = 1; i < NBIG; i += 2) {
      big[i] = malloc(BIG);
      if (!big[i]) abort();
      memset(big[i], 0x5a, BIG);
    }
  }
  reused[CYCLES] = reused_bytes();
  struct tide_stats st;
  tide_get_stats(&st);
  size_t first = reused[4] - reused[0], last = reused[CYCLES] - reused[CYCLES - 4];
  printf("purged memory reused: %zu KiB in the first 4 cycles, %zu KiB in the last 4; delay %zu ms, raised %zu times\n",
         first >> 10, last >> 10, st.pager_delay_ms, st.pager_delay_raised);
  if (first < (size_t)(NBIG / 2) * BIG) problem("only %zu KiB reused in the first 4 cycles: nothing to adapt to", first >> 10);
  if (!st.pager_delay_raised || st.pager_delay_ms <= 100) problem("the delay stayed at %zu ms", st.pager_delay_ms);
  /* A fixed delay reuses as much at the end as at the start. Quiet, the
   * adapted one reuses a small fraction; under a load of 6-8 on two cores
   * the cycles stretch and it was about half (65 of 120 MiB): a quarter
   * less is the bar, far from both. */
  if (last * 4 > first * 3)
    problem("%zu KiB reused in the last 4 cycles against %zu KiB in the first", last >> 10, first >> 10);
  /* the program stops with half of it freed */
  long full = rss_kb();
  for (int i = 1; i < NBIG; i += 2) free(big[i]);
  poke_malloc();
  long half_kb = (long)(NBIG / 2) * (BIG / 1024);
  int t = wait_rss_below(full - half_kb * 8 / 10, 3000);
  if (t < 0) problem("RSS %ld KiB 3 s after freeing %ld of %ld KiB (base %ld)", rss_kb(), half_kb, full, base);
  int waited = 0;
  for (; waited < 3000 && (tide_get_stats(&st), st.pager_delay_ms != 100); waited += 10) sleep_ms(10);
  if (st.pager_delay_ms != 100) problem("the delay is %zu ms 3 s into idle, not TIDE_PAGER_DELAY_MS", st.pager_delay_ms);
  printf("freed half back in %d ms; the delay back at 100 ms after %d ms of idle\n", t, waited);
}

/* Every scenario, with the environment it runs in (added to a clean one). */
#define NO_DELAY "TIDE_PAGER_DELAY_MS=0", "TIDE_PAGER_IDLE_MS=0"
#define LONG_DELAY "TIDE_PAGER_DELAY_MS=10000"
static const struct {
  const char *name;
  void (*run)(void);
  const char *env[3];
} scenarios[] = {
    /* the thread and its loop */
    {"lazy", sc_lazy, {NULL}},
    {"rss_drop", sc_rss_drop, {NULL}},
    {"disabled", sc_disabled, {"TIDE_PAGER=0", NULL}},
    {"loop_uring", sc_loop_uring, {NULL}},
    {"loop_poll", sc_loop_poll, {NULL}},
    {"fork", sc_fork, {NULL}},
    {"fork_busy", sc_fork_busy, {NULL}},
    {"blocked_owner", sc_blocked_owner, {NULL}},
    {"blocked_freer", sc_blocked_freer, {NULL}},
    {"blocked_stash", sc_blocked_stash, {NULL}},
    {"blocked_caches", sc_blocked_caches, {NULL}},
    {"partial_pages", sc_partial_pages, {NULL}},
    {"purge_race", sc_purge_race, {NO_DELAY, NULL}},
    {"tail_race", sc_tail_race, {NO_DELAY, NULL}},
    {"outbox_race", sc_outbox_race, {NO_DELAY, NULL}},
    /* policy and release backends */
    {"rss_limit", sc_rss_limit, {LONG_DELAY, "TIDE_RSS_LIMIT=80M", NULL}},
    {"no_limit", sc_no_limit, {LONG_DELAY, NULL}},
    {"cgroup_limit", sc_cgroup_limit, {LONG_DELAY, NULL}},
    {"psi", sc_psi, {NULL}},
    {"no_psi", sc_no_psi, {NULL}},
    {"pmadv", sc_pmadv, {NULL}},
    {"pmadv_refused", sc_pmadv_refused, {NULL}},
    {"mode_free", sc_mode_free, {"TIDE_PAGER_MODE=free", NULL}},
    {"delay_adapts", sc_delay_adapts, {"TIDE_PAGER_IDLE_MS=1000", NULL}},
};
#define NSCENARIOS ((int)(sizeof scenarios / sizeof scenarios[0]))

/* The scenarios that cannot run under an emulator (checkrun.h), and why. */
#define EMU_NO_SECCOMP "qemu-user does not implement seccomp: the filter cannot be installed (ENOSYS)"
static const struct {
  const char *name, *why;
} not_emulated[] = {
    {"loop_poll", EMU_NO_SECCOMP},
    {"fork", EMU_THREAD_AFTER_FORK},
    {"fork_busy", EMU_THREAD_AFTER_FORK},
    {"pmadv_refused", EMU_NO_SECCOMP},
    {"mode_free", "qemu-user ignores madvise(MADV_FREE) (it returns 0; LazyFree stays 0)"},
};

/* ---- the Check side ---------------------------------------------------------- */
/* Run scenario _i (the loop index) in a fresh process. */
START_TEST(t_scenario) {
  const char *name = scenarios[_i].name;
  char text[4096];
  int status;
  for (size_t k = 0; check_emulator() && k < sizeof not_emulated / sizeof not_emulated[0]; k++) {
    if (strcmp(name, not_emulated[k].name) == 0) {
      fprintf(stderr, "%s: SKIP under %s: %s\n", name, check_emulator(), not_emulated[k].why);
      return;
    }
  }
  int w = run_self(self_exe, name, scenarios[_i].env, 0, text, sizeof text, &status, 60);
  ck_assert_msg(w == 0, "scenario %s hung", name);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "scenario %s (status 0x%x):\n%s", name, status, text);
  if (strncmp(text, "SKIP", 4) == 0) fprintf(stderr, "%s: %s", name, text);
}
END_TEST

int main(int argc, char **argv) {
  if (argc == 2) {
    for (int i = 0; i < NSCENARIOS; i++) {
      if (strcmp(argv[1], scenarios[i].name) == 0) {
        scenarios[i].run();
        return failed;
      }
    }
    fprintf(stderr, "unknown scenario %s\n", argv[1]);
    return 2;
  }
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  if (n <= 0) return 2;
  self_exe[n] = 0;
  Suite *su = suite_create("pager");
  TCase *tc = tcase_create("scenarios");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, t_scenario, 0, NSCENARIOS);
  suite_add_tcase(su, tc);
  return check_run(su, CK_FORK_GETENV);
}
