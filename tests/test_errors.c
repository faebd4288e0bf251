/* test_errors: bad input is detected, reported on stderr and (by default)
 * aborts; TIDE_ABORT_ON_ERROR=0 reports and continues; malformed TIDE_*
 * environment variables are reported with a one-line warning.
 *
 * Every scenario runs in a child process whose stdout/stderr are captured.
 * Scenarios that need a fresh environment re-execute this very program
 * (/proc/self/exe --helper MODE) with the environment prepared. */
#define _GNU_SOURCE
#include "config.h" /* TIDE_HARDENED */
#include <check.h>
#include "checkrun.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tidemalloc.h"
#include "testutil.h"

extern char **environ;

#define OUTMAX 16384

struct child_result {
  int status;
  int timed_out;
  char out[OUTMAX];
  char err[OUTMAX];
};

static void no_core_dumps(void) {
  struct rlimit rl = {0, 0};
  setrlimit(RLIMIT_CORE, &rl);
}

/* Run fn(arg) in a forked child with stdout and stderr captured.  The child
 * exits 0 when fn returns. */
static void run_child(void (*fn)(void *), void *arg, struct child_result *r) {
  int po[2], pe[2];
  memset(r, 0, sizeof *r);
  ck_assert_int_eq(pipe(po), 0);
  ck_assert_int_eq(pipe(pe), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    no_core_dumps();
    close(po[0]);
    close(pe[0]);
    dup2(po[1], 1);
    dup2(pe[1], 2);
    close(po[1]);
    close(pe[1]);
    fn(arg);
    fflush(stdout);
    _exit(0);
  }
  close(po[1]);
  close(pe[1]);
  size_t no = 0, ne = 0;
  int open_o = 1, open_e = 1;
  double deadline = now_sec() + 20;
  while (open_o || open_e) {
    struct pollfd pf[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    double left = deadline - now_sec();
    if (left <= 0) break;
    int n = poll(pf, 2, (int)(left * 1000) + 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    char tmp[4096];
    if (open_o && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t k = read(po[0], tmp, sizeof tmp);
      if (k <= 0)
        open_o = 0;
      else {
        size_t c = (size_t)k < OUTMAX - 1 - no ? (size_t)k : OUTMAX - 1 - no;
        memcpy(r->out + no, tmp, c);
        no += c;
      }
    }
    if (open_e && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t k = read(pe[0], tmp, sizeof tmp);
      if (k <= 0)
        open_e = 0;
      else {
        size_t c = (size_t)k < OUTMAX - 1 - ne ? (size_t)k : OUTMAX - 1 - ne;
        memcpy(r->err + ne, tmp, c);
        ne += c;
      }
    }
  }
  close(po[0]);
  close(pe[0]);
  double left = deadline - now_sec();
  if (wait_with_timeout(pid, &r->status, left > 1 ? left : 1) != 0) r->timed_out = 1;
}

static const char *status_str(const struct child_result *r) {
  static char buf[128];
  if (r->timed_out) return "hung (killed after 20 s)";
  return describe_status(r->status, buf, sizeof buf);
}

static int aborted(const struct child_result *r) {
  return !r->timed_out && WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGABRT;
}

static int exited_ok(const struct child_result *r) {
  return !r->timed_out && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

/* Find "<prefix>" in text, parse the hex number that follows it (the prefix
 * ends in "0x").  Returns 1 and the value when found. */
static int find_pointer_after(const char *text, const char *prefix, uintptr_t *val) {
  const char *s = strstr(text, prefix);
  if (!s) return 0;
  s += strlen(prefix);
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 16);
  if (end == s || errno) return 0;
  *val = (uintptr_t)v;
  return 1;
}

#define ASSERT_INVALID_POINTER_REPORT(r, func, ptr)                                               \
  do {                                                                                          \
    const char *pfx_ = "tidemalloc: " func "(): invalid pointer 0x";                            \
    uintptr_t got_ = 0;                                                                         \
    ck_assert_msg(find_pointer_after((r)->err, pfx_, &got_),                                    \
                  "stderr lacks \"%s<hex>\"; child %s; stderr was:\n%s", pfx_, status_str(r),   \
                  (r)->err);                                                                    \
    ck_assert_msg(got_ == (uintptr_t)(ptr), "reported pointer 0x%lx, expected %p; stderr:\n%s", \
                  (unsigned long)got_, (void *)(ptr), (r)->err);                                \
  } while (0)

/* ------------------------------------------------------------------ */
/* in-process scenarios (default settings: abort on error)             */

static void *g_bad; /* the pointer passed to free/realloc, for the report check */

static void do_free(void *p) {
  g_bad = p;
  free(launder(p));
}

static void sc_free_stack(void *out) {
  char buf[256];
  memset(buf, 1, sizeof buf);
  void *p = buf + 16;
  *(void **)out = p;
  free(launder(p));
}

static char static_area[8192] __attribute__((aligned(64)));

static void sc_free_static(void *out) {
  void *p = static_area + 64;
  *(void **)out = p;
  free(launder(p));
}

static void sc_free_interior_small(void *out) {
  char *p = malloc(64);
  *(void **)out = p + 8;
  free(launder(p + 8));
}

static void sc_free_interior_4096(void *out) {
  char *p = malloc(4096);
  *(void **)out = p + 16;
  free(launder(p + 16));
}

static void sc_free_interior_large(void *out) {
  char *p = malloc(300 * 1024);
  *(void **)out = p + 4096;
  free(launder(p + 4096));
}

static void sc_free_interior_huge(void *out) {
  char *p = malloc(20 << 20);
  *(void **)out = p + 64;
  free(launder(p + 64));
}

static void sc_free_foreign_mmap(void *out) {
  char *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) _exit(99);
  *(void **)out = p + 16;
  free(launder(p + 16));
}

static void sc_realloc_interior(void *out) {
  char *p = malloc(64);
  *(void **)out = p + 8;
  void *q = realloc(launder(p + 8), 100);
  (void)q;
}

static void sc_realloc_stack(void *out) {
  char buf[128];
  memset(buf, 2, sizeof buf);
  *(void **)out = buf + 32;
  void *q = realloc(launder(buf + 32), 1000);
  (void)q;
}

/* A block's address with a bit set above the 48 bits user space has (a
 * kernel address, a non-canonical one, a pointer tagged in its top byte).
 * The registry must not alias it to the block's region: the allocator
 * would then read a "segment header" at an address that does not exist. */
static void *high_bits(void *p, unsigned bit) { return (void *)((uintptr_t)p | ((uintptr_t)1 << bit)); }

static void sc_free_above_47(void *out) {
  void *q = high_bits(malloc(64), 47);
  *(void **)out = q;
  free(launder(q));
}

static void sc_free_above_48(void *out) {
  void *q = high_bits(malloc(64), 48);
  *(void **)out = q;
  free(launder(q));
}

static void sc_free_tagged(void *out) {
  void *q = high_bits(malloc(1000), 60);
  *(void **)out = q;
  free(launder(q));
}

static void sc_realloc_above_48(void *out) {
  void *q = high_bits(malloc(64), 52);
  *(void **)out = q;
  void *r = realloc(launder(q), 100);
  (void)r;
}

/* The child writes the bad pointer into a shared page so the parent can
 * compare it with the report. */
static void **shared_slot(void) {
  static void **slot;
  if (!slot) {
    slot = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_msg(slot != MAP_FAILED, "mmap failed");
  }
  *slot = NULL;
  return slot;
}

static void check_invalid(void (*sc)(void *), const char *func, const char *what) {
  void **slot = shared_slot();
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_child(sc, slot, r);
  ck_assert_msg(*slot != NULL, "%s: scenario did not run (%s)", what, status_str(r));
  ck_assert_msg(aborted(r), "%s: expected abort (SIGABRT), child %s; stderr:\n%s", what,
                status_str(r), r->err);
  if (strcmp(func, "free") == 0)
    ASSERT_INVALID_POINTER_REPORT(r, "free", *slot);
  else
    ASSERT_INVALID_POINTER_REPORT(r, "realloc", *slot);
  free(r);
}

START_TEST(t_free_stack) { check_invalid(sc_free_stack, "free", "free(stack address)"); }
END_TEST
START_TEST(t_free_static) { check_invalid(sc_free_static, "free", "free(static array + 64)"); }
END_TEST
START_TEST(t_free_interior_small) {
  check_invalid(sc_free_interior_small, "free", "free(malloc(64) + 8)");
}
END_TEST
START_TEST(t_free_interior_4096) {
  check_invalid(sc_free_interior_4096, "free", "free(malloc(4096) + 16)");
}
END_TEST
START_TEST(t_free_interior_large) {
  check_invalid(sc_free_interior_large, "free", "free(malloc(300 KiB) + 4096)");
}
END_TEST
START_TEST(t_free_interior_huge) {
  check_invalid(sc_free_interior_huge, "free", "free(malloc(20 MiB) + 64)");
}
END_TEST
START_TEST(t_free_foreign_mmap) {
  check_invalid(sc_free_foreign_mmap, "free", "free(mmap'd page + 16)");
}
END_TEST
START_TEST(t_realloc_interior) {
  check_invalid(sc_realloc_interior, "realloc", "realloc(malloc(64) + 8, 100)");
}
END_TEST
START_TEST(t_free_high_bits) {
  check_invalid(sc_free_above_47, "free", "free(block | 1 << 47)");
  check_invalid(sc_free_above_48, "free", "free(block | 1 << 48)");
  check_invalid(sc_free_tagged, "free", "free(block | 1 << 60)");
  check_invalid(sc_realloc_above_48, "realloc", "realloc(block | 1 << 52, 100)");
  void *p = malloc(64);
  ck_assert_uint_eq(malloc_usable_size(high_bits(p, 48)), 0);
  free(p);
}
END_TEST
START_TEST(t_realloc_stack) {
  check_invalid(sc_realloc_stack, "realloc", "realloc(stack address, 1000)");
}
END_TEST

static void sc_double_free_small(void *arg) {
  (void)arg;
  void *keep = malloc(32);
  void *p = malloc(32);
  void *keep2 = malloc(32);
  free(p);
  do_free(p);
  free(keep);
  free(keep2);
}

static void sc_double_free_small_later(void *arg) {
  (void)arg;
  void *p = malloc(100);
  free(p);
  void *others[10];
  for (int i = 0; i < 10; i++) others[i] = malloc(200); /* other size class */
  do_free(p);
  for (int i = 0; i < 10; i++) free(others[i]);
}

/* another block of the same size freed in between: p is no longer the most
 * recently freed block (glibc's tcache detects this too) */
static void sc_double_free_small_interleaved(void *arg) {
  (void)arg;
  void *p = malloc(32);
  void *q = malloc(32);
  free(p);
  free(q);
  do_free(p);
}

static void sc_double_free_large(void *arg) {
  (void)arg;
  void *p = malloc(200 * 1024);
  free(p);
  do_free(p);
}

static void sc_double_free_huge(void *arg) {
  (void)arg;
  void *p = malloc(32 << 20);
  free(p);
  do_free(p);
}

/* A second free from another thread of a block that sits in its owner's
 * cache: the remote push would overwrite the cache link and corrupt the
 * owner's cache (the block then handed out twice, or a wild pointer
 * followed). It must be reported as a double free instead. */
static void *g_remote_block;

/* Run fn(arg) on a new thread and wait for it. */
static void on_other_thread(void *(*fn)(void *), void *arg) {
  pthread_t t;
  if (pthread_create(&t, NULL, fn, arg) != 0) _exit(3);
  pthread_join(t, NULL);
}

static void *free_remote(void *arg) {
  (void)arg;
  do_free(g_remote_block);
  return NULL;
}

static void sc_double_free_remote_cached(void *arg) {
  (void)arg;
  void *keep = malloc(48);
  g_remote_block = malloc(48);
  void *after = malloc(48);
  free(g_remote_block); /* into this thread's cache */
  on_other_thread(free_remote, NULL);
  /* not reported: show what the corrupted cache does */
  void *a = malloc(48), *b = malloc(48), *c = malloc(48);
  printf("not reported: malloc gave %p %p %p (the block was %p)\n", a, b, c, g_remote_block);
  free(keep);
  free(after);
}

/* The same checks from a thread whose outbox already holds a block of the
 * class: free() then takes its shortcut for another heap's block
 * (tm_free_resolve), which makes them itself, on the slice's descriptor,
 * before the push that needs no lock. A second free pushed again would make
 * the outbox loop; an interior pointer pushed would be handed out. */
static void *g_outbox_first;
static void *free_remote_twice_after_one(void *arg) {
  (void)arg;
  free(g_outbox_first);
  do_free(g_remote_block);
  do_free(g_remote_block);
  return NULL;
}

static void sc_double_free_remote_outbox(void *arg) {
  (void)arg;
  void *keep = malloc(48);
  g_outbox_first = malloc(48);
  g_remote_block = malloc(48);
  on_other_thread(free_remote_twice_after_one, NULL);
  printf("not reported at the second free\n");
  fflush(stdout);
  free(keep);
}

static void *free_interior_after_one(void *out) {
  free(g_outbox_first);
  void *q = (char *)g_remote_block + 16;
  *(void **)out = q;
  do_free(q);
  printf("not reported at the free\n"); /* (it would be later, when the outbox is sent back) */
  fflush(stdout);
  return NULL;
}

static void sc_free_interior_remote_outbox(void *out) {
  g_outbox_first = malloc(64);
  g_remote_block = malloc(64);
  on_other_thread(free_interior_after_one, out);
}

/* Run a scenario in a child: it must abort with `needle` on stderr. */
static void expect_abort_with(void (*sc)(void *), void *arg, const char *needle, const char *what) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_child(sc, arg, r);
  ck_assert_msg(aborted(r) && strstr(r->err, needle) != NULL, "%s: child %s; stdout: %s; stderr:\n%s", what,
                status_str(r), r->out, r->err);
  free(r);
}

/* A block freed by another thread sits on its span's thread_free list
 * until the owner collects it. A second free of it, from that thread or
 * from the owner, must be reported at once: pushed again, the list loops;
 * cached by the owner, the block is handed out twice. */
static void sc_double_free_remote_twice(void *arg) {
  (void)arg;
  void *keep = malloc(48);
  g_remote_block = malloc(48);
  on_other_thread(free_remote, NULL);
  on_other_thread(free_remote, NULL);
  printf("not reported at the second free\n");
  fflush(stdout);
  free(keep);
}

static void sc_double_free_remote_then_owner(void *arg) {
  (void)arg;
  void *keep = malloc(48);
  g_remote_block = malloc(48);
  on_other_thread(free_remote, NULL);
  do_free(g_remote_block); /* the owner frees it again */
  void *a = malloc(48), *b = malloc(48);
  printf("not reported: malloc gave %p %p (the block was %p)\n", a, b, g_remote_block);
  free(keep);
}

START_TEST(t_double_free_remote_list) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_child(sc_double_free_remote_twice, NULL, r);
  ck_assert_msg(aborted(r) && strstr(r->err, "double free") != NULL && !strstr(r->out, "not reported"),
                "a block freed twice by another thread: child %s; stdout: %s; stderr:\n%s", status_str(r), r->out,
                r->err);
  free(r);
  expect_abort_with(sc_double_free_remote_then_owner, NULL, "double free",
                    "a block freed by another thread, then by its owner");
}
END_TEST


START_TEST(t_remote_free_checks_with_outbox) {
  expect_abort_with(sc_double_free_remote_outbox, NULL, "double free",
                    "a block freed twice by another thread whose outbox holds one of its class");
  void **slot = shared_slot();
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_child(sc_free_interior_remote_outbox, slot, r);
  ck_assert_msg(*slot != NULL && aborted(r) && !strstr(r->out, "not reported"),
                "free(malloc(64) + 16) by another thread whose outbox holds one of its class: child %s; "
                "stdout: %s; stderr:\n%s",
                status_str(r), r->out, r->err);
  ASSERT_INVALID_POINTER_REPORT(r, "free", *slot);
  free(r);
}
END_TEST

START_TEST(t_double_free_remote_cached) {
  expect_abort_with(sc_double_free_remote_cached, NULL, "double free", "a remote double free of a cached block");
}
END_TEST

START_TEST(t_double_free_small) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_child(sc_double_free_small, NULL, r);
  ck_assert_msg(aborted(r), "double free of a small block: child %s; stderr:\n%s", status_str(r),
                r->err);
  ck_assert_msg(strstr(r->err, "double free") != NULL,
                "double free of a small block: stderr lacks \"double free\":\n%s", r->err);
  run_child(sc_double_free_small_later, NULL, r);
  ck_assert_msg(aborted(r), "double free after other allocations: child %s; stderr:\n%s",
                status_str(r), r->err);
  ck_assert_msg(strstr(r->err, "double free") != NULL,
                "double free after other allocations: stderr lacks \"double free\":\n%s", r->err);
  free(r);
}
END_TEST

START_TEST(t_double_free_small_interleaved) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_child(sc_double_free_small_interleaved, NULL, r);
  ck_assert_msg(aborted(r),
                "free(p); free(q); free(p) (32-byte blocks): expected SIGABRT, child %s; "
                "stderr:\n%s",
                status_str(r), r->err);
  ck_assert_msg(strstr(r->err, "double free") != NULL,
                "free(p); free(q); free(p): stderr lacks \"double free\":\n%s", r->err);
  free(r);
}
END_TEST

START_TEST(t_double_free_big) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  void (*const sc[2])(void *) = {sc_double_free_large, sc_double_free_huge};
  const char *names[2] = {"200 KiB", "32 MiB"};
  for (int i = 0; i < 2; i++) {
    run_child(sc[i], NULL, r);
    ck_assert_msg(aborted(r), "double free of a %s block: child %s; stderr:\n%s", names[i],
                  status_str(r), r->err);
    ck_assert_msg(strstr(r->err, "double free") || strstr(r->err, "invalid pointer"),
                  "double free of a %s block: stderr reports neither \"double free\" nor "
                  "\"invalid pointer\":\n%s",
                  names[i], r->err);
  }
  free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* scenarios in a freshly exec'd process (environment read at start)   */

struct exec_args {
  const char *mode;
  const char *env[4]; /* NAME=VALUE entries to add, NULL-terminated */
};

static void exec_helper(void *arg) {
  struct exec_args *a = arg;
  size_t n = 0;
  while (environ[n]) n++;
  char **envp = calloc(n + 8, sizeof *envp);
  if (!envp) _exit(98);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "TIDE_", 5) != 0) envp[k++] = environ[i];
  for (int i = 0; i < 4 && a->env[i]; i++) envp[k++] = (char *)a->env[i];
  envp[k] = NULL;
  char *argv[] = {"test_errors", "--helper", (char *)a->mode, NULL};
  execve("/proc/self/exe", argv, envp);
  _exit(97);
}

static void run_helper(const char *mode, const char *env1, const char *env2,
                       struct child_result *r) {
  struct exec_args a = {mode, {env1, env2, NULL, NULL}};
  run_child(exec_helper, &a, r);
  ck_assert_msg(!(WIFEXITED(r->status) && WEXITSTATUS(r->status) >= 97),
                "could not exec the helper (%s)", status_str(r));
}

/* Count the lines of text containing needle. */
static int lines_with(const char *text, const char *needle) {
  int count = 0;
  const char *line = text;
  while (*line) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    char *tmp = strndup(line, len);
    if (tmp && strstr(tmp, needle)) count++;
    free(tmp);
    if (!nl) break;
    line = nl + 1;
  }
  return count;
}

#define ASSERT_SURVIVED(r, what)                                                              \
  do {                                                                                        \
    ck_assert_msg(exited_ok(r), "%s: expected exit 0, child %s; stderr:\n%s", (what),          \
                  status_str(r), (r)->err);                                                   \
    ck_assert_msg(strstr((r)->out, "helper: survived heap_check=0") != NULL,                  \
                  "%s: helper did not finish cleanly; stdout:\n%s\nstderr:\n%s", (what),      \
                  (r)->out, (r)->err);                                                        \
  } while (0)

START_TEST(t_clean_run_is_silent) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_helper("clean", NULL, NULL, r);
  ASSERT_SURVIVED(r, "clean run");
  ck_assert_msg(r->err[0] == '\0', "a clean run printed on stderr:\n%s", r->err);
  free(r);
}
END_TEST

START_TEST(t_no_abort_invalid_free) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_helper("invalid-free", "TIDE_ABORT_ON_ERROR=0", NULL, r);
  ASSERT_SURVIVED(r, "TIDE_ABORT_ON_ERROR=0 + invalid free");
  unsigned long bad = 0;
  ck_assert_msg(sscanf(r->out, "bad=%lx", &bad) == 1, "helper stdout: %s", r->out);
  ASSERT_INVALID_POINTER_REPORT(r, "free", bad);
  free(r);
}
END_TEST

START_TEST(t_no_abort_invalid_realloc) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_helper("invalid-realloc", "TIDE_ABORT_ON_ERROR=0", NULL, r);
  ASSERT_SURVIVED(r, "TIDE_ABORT_ON_ERROR=0 + invalid realloc");
  unsigned long bad = 0;
  ck_assert_msg(sscanf(r->out, "bad=%lx", &bad) == 1, "helper stdout: %s", r->out);
  ASSERT_INVALID_POINTER_REPORT(r, "realloc", bad);
  free(r);
}
END_TEST

START_TEST(t_no_abort_double_free) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_helper("double-free", "TIDE_ABORT_ON_ERROR=0", NULL, r);
  ASSERT_SURVIVED(r, "TIDE_ABORT_ON_ERROR=0 + double free");
  ck_assert_msg(strstr(r->err, "double free") != NULL, "no \"double free\" report:\n%s", r->err);
  free(r);
}
END_TEST

START_TEST(t_abort_on_error_explicit) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_helper("invalid-free", "TIDE_ABORT_ON_ERROR=1", NULL, r);
  ck_assert_msg(aborted(r), "TIDE_ABORT_ON_ERROR=1: expected SIGABRT, child %s; stderr:\n%s",
                status_str(r), r->err);
  ck_assert_msg(strstr(r->err, "tidemalloc: free(): invalid pointer 0x") != NULL, "stderr:\n%s",
                r->err);
  free(r);
}
END_TEST

static void check_env_warning(const char *assignment, const char *var) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_helper("threads", assignment, NULL, r);
  ASSERT_SURVIVED(r, assignment);
  int n = lines_with(r->err, var);
  ck_assert_msg(n == 1, "%s: expected exactly one warning line mentioning %s, got %d; stderr:\n%s",
                assignment, var, n, r->err);
  free(r);
}

START_TEST(t_env_malformed_value) { check_env_warning("TIDE_SEGMENT_CACHE=banana", "TIDE_SEGMENT_CACHE"); }
END_TEST
START_TEST(t_env_unknown_variable) { check_env_warning("TIDE_NOSUCH=1", "TIDE_NOSUCH"); }
END_TEST

/* glibc's tst-malloc-stats-cancellation: a thread with a cancellation
 * pending calls malloc_stats. Output to stderr must not be a cancellation
 * point (glibc's is not), or the thread dies in the first write and prints
 * nothing; the same holds for the allocator's warnings and error reports,
 * which can come from inside malloc. The thread must still be cancelled at
 * the next real cancellation point. */
static void *stats_with_cancel_pending(void *arg) {
  (void)arg;
  pthread_cancel(pthread_self()); /* deferred: pending until a cancellation point */
  malloc_stats();
  write(1, "after malloc_stats\n", 19); /* a cancellation point: cancelled here */
  return NULL;
}

static void sc_stats_cancel(void *arg) {
  (void)arg;
  pthread_t t;
  void *ret = NULL;
  if (pthread_create(&t, NULL, stats_with_cancel_pending, NULL) != 0) _exit(3);
  pthread_join(t, &ret);
  printf("cancelled=%d\n", ret == PTHREAD_CANCELED);
}

START_TEST(t_stats_cancel_pending) {
  struct child_result r;
  run_child(sc_stats_cancel, NULL, &r);
  ck_assert_msg(exited_ok(&r), "child %s; stderr:\n%s", status_str(&r), r.err);
  ck_assert_msg(strstr(r.err, "statistics") && strstr(r.err, "memory limit"),
                "malloc_stats with a cancellation pending printed:\n%s", r.err);
  ck_assert_msg(strstr(r.out, "cancelled=1") && !strstr(r.out, "after malloc_stats"),
                "the thread was not cancelled at the next cancellation point: %s", r.out);
}
END_TEST

/* ------------------------------------------------------------------ */
/* helper mode (runs in the exec'd process)                            */

static void *helper_thread(void *arg) {
  uintptr_t id = (uintptr_t)arg;
  void *v[64];
  for (int round = 0; round < 50; round++) {
    for (int i = 0; i < 64; i++) {
      v[i] = malloc((size_t)(i * 61 + (int)id) % 5000 + 1);
      if (!v[i]) return (void *)1;
    }
    for (int i = 0; i < 64; i++) free(v[i]);
  }
  return NULL;
}

static int helper_main(const char *mode) {
  /* some ordinary work first */
  void *warm[32];
  for (int i = 0; i < 32; i++) warm[i] = malloc((size_t)i * 100 + 1);
  if (strcmp(mode, "invalid-free") == 0) {
    char *p = malloc(64);
    printf("bad=%lx\n", (unsigned long)(uintptr_t)(p + 8));
    fflush(stdout);
    free(launder(p + 8));
    free(p);
  } else if (strcmp(mode, "invalid-realloc") == 0) {
    char *p = malloc(64);
    printf("bad=%lx\n", (unsigned long)(uintptr_t)(p + 8));
    fflush(stdout);
    void *q = realloc(launder(p + 8), 100);
    (void)q; /* must not be used: it is not a valid result */
    free(p);
  } else if (strcmp(mode, "double-free") == 0) {
    void *p = malloc(48);
    free(p);
    free(launder(p));
  } else if (strcmp(mode, "threads") == 0) {
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
      if (pthread_create(&t[i], NULL, helper_thread, (void *)i) != 0) return 3;
    for (int i = 0; i < 4; i++) {
      void *res;
      pthread_join(t[i], &res);
      if (res) return 4;
    }
  } else if (strcmp(mode, "clean") != 0) {
    return 2;
  }
  /* the allocator still works afterwards */
  for (int i = 0; i < 1000; i++) {
    void *p = malloc((size_t)(i * 37) % 70000 + 1);
    if (!p) return 5;
    memset(p, 1, (size_t)(i * 37) % 70000 + 1);
    free(p);
  }
  for (int i = 0; i < 32; i++) free(warm[i]);
  printf("helper: survived heap_check=%d\n", tide_heap_check());
  fflush(stdout);
  return 0;
}

#if TIDE_HARDENED
/* ------------------------------------------------------------------ */
/* the hardened build (--enable-hardened): block ends checked on free   */

/* A use after free that writes a pointer over a cached block's first word
 * (the cache link): the next mallocs of that class must not hand out the
 * address the program wrote. */
static char g_fake_block[64] __attribute__((aligned(16)));
static void sc_cache_link_overwrite(void *arg) {
  (void)arg;
  void *p = malloc(48), *q = malloc(48);
  free(p);
  free(q); /* on top of the cache, linked to p */
  void *volatile *qv = q;
  *qv = g_fake_block; /* a dangling pointer written through */
  void *a = malloc(48), *b = malloc(48);
  printf("not reported: malloc gave %p %p (the fake block is %p)\n", a, b, (void *)g_fake_block);
}

static void sc_cache_link_zeroed(void *arg) {
  (void)arg;
  void *p = malloc(48), *q = malloc(48);
  free(p);
  free(q);
  memset(q, 0, 16); /* as a use after free that clears a struct */
  void *a = malloc(48), *b = malloc(48);
  printf("not reported: malloc gave %p %p\n", a, b);
}

/* The same, then a large malloc (glibc's tst-safe-linking: a large request
 * checks the small free lists). */
static void sc_cache_link_then_large(void *arg) {
  (void)arg;
  void *p = malloc(32), *q = malloc(32);
  free(p);
  free(q);
  void *volatile *qv = q;
  *qv = g_fake_block;
  void *big = malloc(256 * 1024);
  printf("not reported: malloc(256 KiB) gave %p\n", big);
}

START_TEST(t_cache_link_overwrite) {
  expect_abort_with(sc_cache_link_overwrite, NULL, "corrupted free block", "a cache link overwritten with a pointer");
  expect_abort_with(sc_cache_link_zeroed, NULL, "corrupted free block", "a cache link overwritten with zeroes");
  expect_abort_with(sc_cache_link_then_large, NULL, "corrupted free block",
                    "a cache link overwritten, then a large malloc");
}
END_TEST

/* Overflows written through a volatile pointer: a compiler may drop plain
 * stores into a block that is freed next. */
static void overflow(void *p, size_t at, size_t len, unsigned char v) {
  volatile unsigned char *b = p;
  /* One byte of the seal or the fill, both drawn from the process's
   * secrets, already holds v once in 256 runs: write its complement then,
   * or nothing would have changed (CI saw case 2 pass unreported) */
  if (len == 1 && b[at] == v) v = (unsigned char)~v;
  for (size_t i = 0; i < len; i++) b[at + i] = v;
}

typedef struct {
  size_t size, at, len;
  unsigned char v;
  int how; /* 0 malloc, 1 calloc, 2 aligned_alloc(64), 3 realloc'd then realloc'd again */
} overflow_case;

static void sc_overflow(void *arg) {
  const overflow_case *c = arg;
  char *p;
  switch (c->how) {
    case 1: p = calloc(1, c->size); break;
    case 2: p = aligned_alloc(64, c->size); break;
    case 3: p = realloc(malloc(8), c->size); break;
    default: p = malloc(c->size); break;
  }
  if (!p) _exit(3);
  g_bad = p;
  if (malloc_usable_size(p) != c->size) {
    printf("usable size %zu, asked %zu\n", malloc_usable_size(p), c->size);
    _exit(4);
  }
  memset(p, 0x41, c->size); /* the whole block, legitimately */
  overflow(p, c->at, c->len, c->v);
  if (c->how == 3)
    p = realloc(launder(p), c->size * 2);
  else
    free(launder(p));
  printf("not reported\n");
}

START_TEST(t_hardened_overflow) {
  static const overflow_case cases[] = {
      {100, 100, 1, 'x', 0},     /* 1 byte, into the fill */
      {100, 100, 16, 0, 0},      /* 16 bytes of zeroes */
      {104, 104, 1, 0xff, 0},    /* no fill: 1 byte into the trailer */
      {16, 16, 1, 0, 0},         /* the smallest class */
      {4000, 4000, 1, 1, 1},     /* calloc */
      {64, 64, 1, 'A', 2},       /* aligned_alloc */
      {300000, 300000, 1, 7, 0}, /* a large block */
      {5 << 20, 5 << 20, 16, 9, 0}, /* a huge block */
      {200, 200, 1, 'z', 3},     /* caught by realloc */
  };
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const overflow_case *c = &cases[i];
    const char *fn = c->how == 3 ? "realloc" : "free";
    run_child(sc_overflow, (void *)c, r);
    ck_assert_msg(aborted(r) && strstr(r->err, "heap overflow") && strstr(r->err, fn),
                  "case %zu (%zu bytes, %zu written at %zu): child %s; stdout: %s; stderr:\n%s", i, c->size, c->len,
                  c->at, status_str(r), r->out, r->err);
  }
  free(r);
}
END_TEST

/* Writes up to the asked size, reallocs both ways, every allocation form:
 * nothing reported. */
START_TEST(t_hardened_no_false_alarm) {
  for (size_t n = 0; n < 70000; n = n * 3 / 2 + 1) {
    unsigned char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(malloc_usable_size(p), n);
    memset(p, 0xa7, n);
    p = realloc(p, n + 1000);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++) ck_assert_uint_eq(p[i], 0xa7);
    memset(p, 0xa7, n + 1000);
    p = realloc(p, n / 2 + 1);
    ck_assert_ptr_nonnull(p);
    memset(p, 0x5c, n / 2 + 1);
    free(p);
    void *a = NULL;
    ck_assert_int_eq(posix_memalign(&a, 256, n + 1), 0);
    memset(a, 0xff, n + 1);
    free(a);
    unsigned char *z = calloc(n + 1, 1);
    for (size_t i = 0; i <= n; i++) ck_assert_uint_eq(z[i], 0);
    free(z);
  }
}
END_TEST

/* The page before a segment's first span is PROT_NONE: a write there
 * (an underflow of the span's first block) faults. */
static void sc_guard_page(void *arg) {
  (void)arg;
  char *p = malloc(64);
  char *seg = (char *)((uintptr_t)p & ~(uintptr_t)((4 << 20) - 1));
  g_bad = seg + 65535;
  overflow(seg, 65535, 1, 0);
  printf("not reported\n");
}

START_TEST(t_hardened_guard_page) {
  struct child_result *r = malloc(sizeof *r);
  ck_assert_ptr_nonnull(r);
  run_child(sc_guard_page, NULL, r);
  ck_assert_msg(!r->timed_out && WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGSEGV,
                "a write to the guard page: child %s; stdout: %s", status_str(r), r->out);
  free(r);
}
END_TEST
#endif

static Suite *errors_suite(void) {
  Suite *s = suite_create("errors");
  TCase *tc = tcase_create("invalid_pointer");
  tcase_add_test(tc, t_free_stack);
  tcase_add_test(tc, t_free_static);
  tcase_add_test(tc, t_free_interior_small);
  tcase_add_test(tc, t_free_interior_4096);
  tcase_add_test(tc, t_free_interior_large);
  tcase_add_test(tc, t_free_interior_huge);
  tcase_add_test(tc, t_free_foreign_mmap);
  tcase_add_test(tc, t_realloc_interior);
  tcase_add_test(tc, t_realloc_stack);
  tcase_add_test(tc, t_free_high_bits);
  tcase_set_timeout(tc, 30);
  suite_add_tcase(s, tc);

  tc = tcase_create("double_free");
  tcase_add_test(tc, t_double_free_small);
  tcase_add_test(tc, t_double_free_small_interleaved);
  tcase_add_test(tc, t_double_free_big);
  tcase_add_test(tc, t_double_free_remote_cached);
  tcase_add_test(tc, t_remote_free_checks_with_outbox);
  tcase_add_test(tc, t_double_free_remote_list);
  tcase_set_timeout(tc, 30);
  suite_add_tcase(s, tc);

  tc = tcase_create("environment");
  tcase_add_test(tc, t_clean_run_is_silent);
  tcase_add_test(tc, t_no_abort_invalid_free);
  tcase_add_test(tc, t_no_abort_invalid_realloc);
  tcase_add_test(tc, t_no_abort_double_free);
  tcase_add_test(tc, t_abort_on_error_explicit);
  tcase_add_test(tc, t_env_malformed_value);
  tcase_add_test(tc, t_env_unknown_variable);
  tcase_add_test(tc, t_stats_cancel_pending);
  tcase_set_timeout(tc, 30);
  suite_add_tcase(s, tc);
#if TIDE_HARDENED
  tc = tcase_create("hardened");
  tcase_add_test(tc, t_cache_link_overwrite); /* encoded links */
  tcase_add_test(tc, t_hardened_overflow);
  tcase_add_test(tc, t_hardened_no_false_alarm);
  tcase_add_test(tc, t_hardened_guard_page);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);
#endif
  return s;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--helper") == 0) return helper_main(argv[2]);
  return check_run(errors_suite(), CK_FORK_GETENV);
}
