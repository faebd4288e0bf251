/* Shared helpers for the tidemalloc test programs (header-only). */
#ifndef TIDE_TESTUTIL_H
#define TIDE_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Hide a value from the optimiser: stops GCC from reasoning about object
 * sizes through malloc's alloc_size attribute (writing all usable bytes is
 * legal but _FORTIFY_SOURCE / -Wstringop-overflow would not know), from
 * warning about free() of non-heap objects, and from constant-folding
 * impossible sizes into compile-time warnings. */
static inline void *launder(void *p) {
  __asm__ volatile("" : "+r"(p));
  return p;
}
static inline size_t opaque(size_t n) {
  __asm__ volatile("" : "+r"(n));
  return n;
}

static inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* Seed for a block: derived from address, size and an owner tag, so two
 * blocks that overlap (or a block handed to the wrong place) never carry the
 * same bytes. */
static inline uint64_t block_seed(const void *p, size_t n, uint64_t owner) {
  return mix64((uint64_t)(uintptr_t)p ^ mix64(n) ^ (owner << 48));
}

static inline uint8_t pattern_byte(uint64_t seed, size_t i) {
  return (uint8_t)(mix64(seed + (i >> 3)) >> ((i & 7) * 8));
}

/* Fill every byte of [p, p+n). */
static inline void pattern_fill(void *p, size_t n, uint64_t seed) {
  unsigned char *c = (unsigned char *)launder(p);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = mix64(seed + (i >> 3));
    memcpy(c + i, &w, 8);
  }
  for (; i < n; i++) c[i] = pattern_byte(seed, i);
}

/* Returns the offset of the first wrong byte, or (size_t)-1 when intact. */
static inline size_t pattern_check(const void *p, size_t n, uint64_t seed) {
  const unsigned char *c = (const unsigned char *)launder((void *)p);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = mix64(seed + (i >> 3)), v;
    memcpy(&v, c + i, 8);
    if (v != w) {
      for (size_t j = i; j < i + 8; j++)
        if (c[j] != pattern_byte(seed, j)) return j;
    }
  }
  for (; i < n; i++)
    if (c[i] != pattern_byte(seed, i)) return i;
  return (size_t)-1;
}

/* Sparse variant for big blocks: the first and last 4 KiB fully, then one
 * 8-byte word every 512 bytes. */
#define SPARSE_EDGE 4096
#define SPARSE_STRIDE 512
static inline void pattern_fill_sparse(void *p, size_t n, uint64_t seed) {
  unsigned char *c = (unsigned char *)launder(p);
  if (n <= 2 * SPARSE_EDGE + SPARSE_STRIDE) {
    pattern_fill(p, n, seed);
    return;
  }
  size_t tail = (n - SPARSE_EDGE) & ~(size_t)7;
  pattern_fill(c, SPARSE_EDGE, seed);
  for (size_t i = SPARSE_EDGE; i + 8 <= tail; i += SPARSE_STRIDE) {
    uint64_t w = mix64(seed + (i >> 3));
    memcpy(c + i, &w, 8);
  }
  for (size_t i = tail; i < n; i++) c[i] = pattern_byte(seed, i);
}
static inline size_t pattern_check_sparse(const void *p, size_t n, uint64_t seed) {
  const unsigned char *c = (const unsigned char *)launder((void *)p);
  if (n <= 2 * SPARSE_EDGE + SPARSE_STRIDE) return pattern_check(p, n, seed);
  size_t tail = (n - SPARSE_EDGE) & ~(size_t)7;
  size_t r = pattern_check(c, SPARSE_EDGE, seed);
  if (r != (size_t)-1) return r;
  for (size_t i = SPARSE_EDGE; i + 8 <= tail; i += SPARSE_STRIDE) {
    uint64_t w = mix64(seed + (i >> 3)), v;
    memcpy(&v, c + i, 8);
    if (v != w) return i;
  }
  for (size_t i = tail; i < n; i++)
    if (c[i] != pattern_byte(seed, i)) return i;
  return (size_t)-1;
}

/* After realloc: check the part of the original fill (pattern_fill when
 * !sparse, pattern_fill_sparse otherwise, over n_orig bytes) that lies in
 * the first keep bytes of p. */
static inline size_t pattern_check_prefix(const void *p, size_t n_orig, uint64_t seed, int sparse,
                                          size_t keep) {
  const unsigned char *c = (const unsigned char *)launder((void *)p);
  if (keep > n_orig) keep = n_orig;
  if (!sparse || n_orig <= 2 * SPARSE_EDGE + SPARSE_STRIDE) return pattern_check(p, keep, seed);
  size_t tail = (n_orig - SPARSE_EDGE) & ~(size_t)7;
  size_t r = pattern_check(c, keep < SPARSE_EDGE ? keep : SPARSE_EDGE, seed);
  if (r != (size_t)-1) return r;
  for (size_t i = SPARSE_EDGE; i + 8 <= tail && i + 8 <= keep; i += SPARSE_STRIDE) {
    uint64_t w = mix64(seed + (i >> 3)), v;
    memcpy(&v, c + i, 8);
    if (v != w) return i;
  }
  for (size_t i = tail; i < keep; i++)
    if (c[i] != pattern_byte(seed, i)) return i;
  return (size_t)-1;
}

static inline int is_aligned(const void *p, size_t a) {
  return ((uintptr_t)p & (a - 1)) == 0;
}

static inline double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Scale factor for repetition counts: TIDETEST_SCALE=4 runs four times as
 * many rounds (soak testing); default 1. */
static inline double test_scale(void) {
  const char *s = getenv("TIDETEST_SCALE");
  double v = s ? atof(s) : 1.0;
  return v > 0 ? v : 1.0;
}

/* Wait for pid for at most timeout seconds.  Returns 0 and sets *status when
 * it exited, -1 on timeout (the child is then SIGKILLed and reaped). */
static inline int wait_with_timeout(pid_t pid, int *status, double timeout) {
  double end = now_sec() + timeout;
  for (;;) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return 0;
    if (r < 0 && errno != EINTR) return -2;
    if (now_sec() > end) {
      kill(pid, SIGKILL);
      while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
      }
      return -1;
    }
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Describe a wait status into buf (for failure messages). */
static inline const char *describe_status(int st, char *buf, size_t len) {
  if (WIFEXITED(st))
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
  else
    snprintf(buf, len, "wait status 0x%x", st);
  return buf;
}

/* Run this program again, as `exe arg`, in a fresh process: the
 * environment as it is (libtool's LD_LIBRARY_PATH among it) without TIDE_*
 * variables (and without LD_PRELOAD when drop_preload), plus `env`
 * ("NAME=value" strings, NULL-terminated). Its stdout and stderr go into
 * text. Returns 0 and sets *status when it exited within timeout seconds,
 * -1 when it hung (it is killed). */
static inline int run_self(const char *exe, const char *arg, const char *const *env, int drop_preload, char *text,
                           size_t cap, int *status, double timeout) {
  int out[2];
  if (pipe(out) != 0) return -2;
  pid_t pid = fork();
  if (pid < 0) return -2;
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(out[0]);
    close(out[1]);
    extern char **environ;
    char *envp[256];
    int n = 0;
    for (char **e = environ; *e && n < 240; e++)
      if (strncmp(*e, "TIDE_", 5) != 0 && !(drop_preload && strncmp(*e, "LD_PRELOAD=", 11) == 0)) envp[n++] = *e;
    for (int i = 0; env && env[i] && n < 255; i++) envp[n++] = (char *)env[i];
    envp[n] = NULL;
    execle(exe, exe, arg, (char *)NULL, envp);
    _exit(127);
  }
  close(out[1]);
  size_t len = 0;
  ssize_t r;
  while (len < cap - 1 && (r = read(out[0], text + len, cap - 1 - len)) > 0) len += (size_t)r;
  text[len] = 0;
  close(out[0]);
  return wait_with_timeout(pid, status, timeout);
}

/* The kB figure of `field` in a /proc file of ours (status, smaps_rollup).
 * Allocates nothing (a read into a stack buffer), so it can be asked in the
 * middle of a measurement. */
static inline long proc_kb(const char *path, const char *field) {
  char buf[4096];
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *p = strstr(buf, field);
  return p ? strtol(p + strlen(field) + 1, NULL, 10) : -1;
}
static inline long status_kb(const char *field) { return proc_kb("/proc/self/status", field); }
/* Resident memory now, from the kernel (tests of memory measure this, not
 * our counters). */
static inline long rss_kb(void) { return status_kb("VmRSS"); }

#endif /* TIDE_TESTUTIL_H */
