/* test_api: conformance of every corner of the allocation API (glibc's
 * documented behaviour) plus tidemalloc's own tide_* entry points.
 *
 * Linked against libtidemalloc, so malloc & co. resolve to tidemalloc. */
#define _GNU_SOURCE
#include <check.h>
#include "checkrun.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
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

/* C23 / glibc 2.39+; glibc 2.36's headers do not declare them. */
void free_sized(void *, size_t);
void free_aligned_sized(void *, size_t, size_t);
/* glibc's internal aliases, which tidemalloc must also provide. */
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)
#define KiB ((size_t)1 << 10)
#define NOT_FOUND ((size_t)-1)

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* Fill and verify helpers that report the failing block in the message. */
#define CHECK_PATTERN(p, n, seed, what)                                              \
  do {                                                                               \
    size_t bad_ = pattern_check((p), (n), (seed));                                   \
    ck_assert_msg(bad_ == NOT_FOUND, "%s: block %p (%zu bytes) corrupted at offset %zu", \
                  (what), (void *)(p), (size_t)(n), bad_);                           \
  } while (0)

#define EXPECT_NULL_ENOMEM(expr)                                                          \
  do {                                                                                    \
    errno = 0;                                                                            \
    void *r_ = (expr);                                                                    \
    int e_ = errno;                                                                       \
    ck_assert_msg(r_ == NULL, "%s returned %p, expected NULL", #expr, r_);              \
    ck_assert_msg(e_ == ENOMEM, "%s: errno = %d (%s), expected ENOMEM", #expr, e_,        \
                  strerror(e_));                                                          \
  } while (0)

/* ------------------------------------------------------------------ */
/* linkage: the process really uses tidemalloc                         */

static const char *object_of(const char *sym) {
  static char buf[8][512];
  static int slot;
  void *a = dlsym(RTLD_DEFAULT, sym);
  if (!a) return "(symbol not found)";
  Dl_info info;
  if (!dladdr(a, &info) || !info.dli_fname) return "(dladdr failed)";
  char *b = buf[slot++ & 7];
  snprintf(b, sizeof buf[0], "%s", info.dli_fname);
  return b;
}

START_TEST(t_linkage) {
  static const char *const names[] = {
      "malloc",         "free",          "calloc",          "realloc",
      "reallocarray",   "posix_memalign", "aligned_alloc",  "memalign",
      "valloc",         "pvalloc",       "malloc_usable_size", "free_sized",
      "free_aligned_sized", "malloc_trim", "mallopt",       "mallinfo2",       "mallinfo",
      "malloc_stats",   "malloc_info",   "__libc_malloc",   "__libc_free",
      "__libc_calloc",  "__libc_realloc", "__libc_memalign", "tide_get_stats",
      "tide_collect",   "tide_heap_check"};
  char tide[512];
  snprintf(tide, sizeof tide, "%s", object_of("tide_version"));
  ck_assert_msg(dlsym(RTLD_DEFAULT, "tide_version") != NULL, "tide_version not found");
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    const char *o = object_of(names[i]);
    ck_assert_msg(strcmp(o, tide) == 0,
                  "%s resolves to %s but tide_version lives in %s", names[i], o, tide);
  }
}
END_TEST

/* ------------------------------------------------------------------ */
/* malloc(0), alignment and usable size                                */

START_TEST(t_malloc_zero) {
  void *p = malloc(0), *q = malloc(0);
  ck_assert_ptr_nonnull(p);
  ck_assert_ptr_nonnull(q);
  ck_assert_ptr_ne(p, q);
  ck_assert_msg(is_aligned(p, 16) && is_aligned(q, 16), "malloc(0) not 16-aligned: %p %p", p, q);
  /* many more: all distinct */
  enum { N = 1000 };
  void **v = malloc(N * sizeof *v);
  ck_assert_ptr_nonnull(v);
  for (int i = 0; i < N; i++) {
    v[i] = malloc(0);
    ck_assert_ptr_nonnull(v[i]);
    ck_assert_ptr_ne(v[i], p);
    ck_assert_ptr_ne(v[i], q);
    if (i) ck_assert_ptr_ne(v[i], v[i - 1]);
  }
  for (int i = 0; i < N; i++) free(v[i]);
  free(v);
  free(p);
  free(q);
  free(NULL);
}
END_TEST

START_TEST(t_usable_null) { ck_assert_uint_eq(malloc_usable_size(NULL), 0); }
END_TEST

static size_t size_for(int i) {
  /* 1..1100 exhaustively, then powers of two and neighbours up to 64 MiB */
  if (i < 1100) return (size_t)i + 1;
  i -= 1100;
  int sh = 4 + i / 3;
  size_t b = (size_t)1 << sh;
  switch (i % 3) {
  case 0: return b - 1;
  case 1: return b;
  default: return b + 1;
  }
}
#define NSIZES (1100 + 3 * (26 - 4 + 1)) /* up to 1<<26 + 1 */

START_TEST(t_alignment_and_usable) {
  void **v = calloc(NSIZES, sizeof *v);
  size_t *us = calloc(NSIZES, sizeof *us);
  ck_assert_ptr_nonnull(v);
  ck_assert_ptr_nonnull(us);
  for (int i = 0; i < NSIZES; i++) {
    size_t n = size_for(i);
    void *p = malloc(n);
    ck_assert_msg(p != NULL, "malloc(%zu) failed", n);
    ck_assert_msg(is_aligned(p, 16), "malloc(%zu) = %p not 16-byte aligned", n, p);
    size_t u = malloc_usable_size(p);
    ck_assert_msg(u >= n, "malloc_usable_size(malloc(%zu)) = %zu", n, u);
    /* write all usable bytes */
    pattern_fill(p, u, block_seed(p, u, 1));
    v[i] = p;
    us[i] = u;
  }
  /* other allocations interleaved, then free every other block */
  void *other[512];
  for (int i = 0; i < 512; i++) {
    size_t n = (size_t)(i * 37 % 3000) + 1;
    other[i] = malloc(n);
    ck_assert_ptr_nonnull(other[i]);
    pattern_fill(other[i], malloc_usable_size(other[i]),
                 block_seed(other[i], malloc_usable_size(other[i]), 2));
  }
  for (int i = 0; i < NSIZES; i += 2) {
    CHECK_PATTERN(v[i], us[i], block_seed(v[i], us[i], 1), "usable-size block");
    ck_assert_uint_eq(malloc_usable_size(v[i]), us[i]);
    free(v[i]);
    v[i] = NULL;
  }
  for (int i = 0; i < 512; i += 2) {
    size_t u = malloc_usable_size(other[i]);
    CHECK_PATTERN(other[i], u, block_seed(other[i], u, 2), "interleaved block");
    free(other[i]);
    other[i] = malloc((size_t)i * 5 + 1);
    ck_assert_ptr_nonnull(other[i]);
    u = malloc_usable_size(other[i]);
    pattern_fill(other[i], u, block_seed(other[i], u, 2));
  }
  for (int i = 1; i < NSIZES; i += 2) {
    CHECK_PATTERN(v[i], us[i], block_seed(v[i], us[i], 1), "usable-size block");
    free(v[i]);
  }
  for (int i = 0; i < 512; i++) {
    size_t u = malloc_usable_size(other[i]);
    CHECK_PATTERN(other[i], u, block_seed(other[i], u, 2), "interleaved block");
    free(other[i]);
  }
  free(v);
  free(us);
}
END_TEST

/* ------------------------------------------------------------------ */
/* impossible sizes                                                    */

START_TEST(t_impossible_sizes) {
  const size_t smax = opaque(SIZE_MAX);
  const size_t pmax = opaque((size_t)PTRDIFF_MAX);
  EXPECT_NULL_ENOMEM(malloc(smax));
  EXPECT_NULL_ENOMEM(malloc(smax - 15));
  EXPECT_NULL_ENOMEM(malloc(smax - 2 * 4096));
  EXPECT_NULL_ENOMEM(malloc(pmax + 1));
  EXPECT_NULL_ENOMEM(malloc(pmax));
  EXPECT_NULL_ENOMEM(malloc(pmax / 2));
  EXPECT_NULL_ENOMEM(calloc(smax / 2, 3));
  EXPECT_NULL_ENOMEM(calloc(3, smax / 2));
  EXPECT_NULL_ENOMEM(calloc(opaque((size_t)1) << 32, opaque((size_t)1) << 32));
  EXPECT_NULL_ENOMEM(calloc(1, smax));
  EXPECT_NULL_ENOMEM(calloc(pmax / 2 + 1, 2));
  EXPECT_NULL_ENOMEM(reallocarray(NULL, smax / 2, 3));
  EXPECT_NULL_ENOMEM(realloc(NULL, smax));
  EXPECT_NULL_ENOMEM(pvalloc(smax));
  EXPECT_NULL_ENOMEM(pvalloc(smax - 100)); /* page rounding overflows */
  EXPECT_NULL_ENOMEM(valloc(smax));
  EXPECT_NULL_ENOMEM(valloc(smax - 100));
  EXPECT_NULL_ENOMEM(memalign(16, smax));
  EXPECT_NULL_ENOMEM(memalign(4096, smax - 100));         /* size + alignment overflows */
  EXPECT_NULL_ENOMEM(memalign(opaque(MiB), smax - MiB / 2)); /* idem */
  EXPECT_NULL_ENOMEM(memalign(opaque((size_t)1) << 62, 16)); /* cannot be satisfied */
  /* an alignment of 2^63: the largest memalign takes; PTRDIFF_MAX - align wraps */
  EXPECT_NULL_ENOMEM(memalign(opaque((size_t)1) << 63, 16));
  EXPECT_NULL_ENOMEM(memalign(opaque((size_t)1) << 63, 0));
  EXPECT_NULL_ENOMEM(memalign(opaque((size_t)1) << 63, pmax));
  EXPECT_NULL_ENOMEM(aligned_alloc(opaque((size_t)1) << 63, 1));
  {
    void *p63 = NULL;
    int r63 = posix_memalign(&p63, opaque((size_t)1) << 63, 16);
    ck_assert_msg(r63 == ENOMEM && p63 == NULL, "posix_memalign(2^63, 16) returned %d, %p", r63, p63);
  }
  EXPECT_NULL_ENOMEM(aligned_alloc(16, smax));
  EXPECT_NULL_ENOMEM(aligned_alloc(4096, smax - 4095));

  void *sentinel = (void *)(uintptr_t)0x5151;
  void *p = sentinel;
  errno = 0;
  int r = posix_memalign(&p, 16, smax);
  ck_assert_msg(r == ENOMEM, "posix_memalign(16, SIZE_MAX) returned %d, expected ENOMEM", r);
  ck_assert_msg(errno == ENOMEM, "posix_memalign(16, SIZE_MAX) left errno %d; glibc sets ENOMEM", errno);
  ck_assert_msg(p == sentinel, "posix_memalign modified *memptr on failure (%p)", p);
  r = posix_memalign(&p, 65536, smax - 1000);
  ck_assert_msg(r == ENOMEM, "posix_memalign(65536, SIZE_MAX-1000) returned %d, expected ENOMEM", r);
  ck_assert_ptr_eq(p, sentinel);
  r = posix_memalign(&p, 16, pmax + 1);
  ck_assert_msg(r == ENOMEM, "posix_memalign(16, PTRDIFF_MAX+1) returned %d, expected ENOMEM", r);
  ck_assert_ptr_eq(p, sentinel);

  /* realloc to an impossible size leaves the block alone */
  size_t sizes[] = {100, 5000, 300 * KiB, 16 * MiB};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    size_t n = sizes[k];
    unsigned char *b = malloc(n);
    ck_assert_ptr_nonnull(b);
    pattern_fill(b, n, 77 + k);
    EXPECT_NULL_ENOMEM(realloc(b, smax));
    EXPECT_NULL_ENOMEM(realloc(b, smax - 8));
    EXPECT_NULL_ENOMEM(realloc(b, pmax + 1));
    EXPECT_NULL_ENOMEM(reallocarray(b, smax / 2, 3));
    EXPECT_NULL_ENOMEM(reallocarray(b, 3, smax / 2));
    CHECK_PATTERN(b, n, 77 + k, "block after failed realloc");
    ck_assert_uint_ge(malloc_usable_size(b), n);
    /* still a valid block: grow it for real */
    unsigned char *c = realloc(b, n * 2);
    ck_assert_ptr_nonnull(c);
    CHECK_PATTERN(c, n, 77 + k, "block after failed then successful realloc");
    free(c);
  }
  /* the allocator still works */
  void *q = malloc(100);
  ck_assert_ptr_nonnull(q);
  free(q);
}
END_TEST

/* ------------------------------------------------------------------ */
/* RLIMIT_AS: real out-of-memory                                       */

static size_t vm_size_bytes(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t kb = 0;
  if (!f) return 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmSize: %zu kB", &kb) == 1) break;
  fclose(f);
  return kb * 1024;
}

/* Exit codes of the child, for the failure message. */
static const char *const rlimit_codes[] = {
    [1] = "could not read VmSize / setrlimit failed",
    [2] = "malloc(256 MiB) under the limit did not return NULL",
    [3] = "malloc(256 MiB) returned NULL but errno != ENOMEM",
    [4] = "calloc(1, 256 MiB) did not fail with ENOMEM",
    [5] = "posix_memalign(4096, 256 MiB) did not return ENOMEM, or left errno unset",
    [6] = "realloc(small, 256 MiB) did not fail with ENOMEM or clobbered the block",
    [7] = "1 MiB allocation loop failed with errno != ENOMEM",
    [8] = "1 MiB allocation loop never failed (limit not honoured?)",
    [9] = "fewer than 16 x 1 MiB allocations succeeded under a 64 MiB headroom",
    [10] = "small malloc failed after freeing everything",
    [11] = "1 MiB malloc failed again after freeing everything",
    [12] = "data corruption in a block allocated under memory pressure",
    [13] = "small malloc returned a non-16-aligned block",
};

static int rlimit_child(void) {
  size_t cur = vm_size_bytes();
  if (cur == 0) return 1;
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) != 0) return 1;
  rl.rlim_cur = cur + 64 * MiB;
  if (setrlimit(RLIMIT_AS, &rl) != 0) return 1;

  errno = 0;
  void *p = malloc(opaque(256 * MiB));
  if (p) return 2;
  if (errno != ENOMEM) return 3;
  errno = 0;
  p = calloc(1, opaque(256 * MiB));
  if (p || errno != ENOMEM) return 4;
  errno = 0;
  if (posix_memalign(&p, 4096, opaque(256 * MiB)) != ENOMEM || errno != ENOMEM) return 5;
  char *s = malloc(64);
  if (!s) return 10;
  memset(s, 'x', 64);
  errno = 0;
  if (realloc(s, opaque(256 * MiB)) != NULL || errno != ENOMEM) return 6;
  for (int i = 0; i < 64; i++)
    if (s[i] != 'x') return 6;
  free(s);

  enum { MAXB = 1024 };
  static void *blocks[MAXB];
  int n = 0;
  for (;;) {
    if (n == MAXB) return 8;
    errno = 0;
    void *b = malloc(MiB);
    if (!b) {
      if (errno != ENOMEM) return 7;
      break;
    }
    memset(b, n & 0xff, MiB); /* touch it: really usable */
    blocks[n++] = b;
  }
  if (n < 16) return 9;
  for (int i = 0; i < n; i++) {
    unsigned char *b = blocks[i];
    if (b[0] != (i & 0xff) || b[MiB - 1] != (i & 0xff)) return 12;
  }
  for (int i = 0; i < n; i++) free(blocks[i]);
  for (int i = 0; i < 2000; i++) {
    void *q = malloc((size_t)(i % 500) + 1);
    if (!q) return 10;
    if (!is_aligned(q, 16)) return 13;
    memset(q, 1, (size_t)(i % 500) + 1);
    blocks[i % MAXB] = q;
    if (i % MAXB == MAXB - 1)
      for (int j = 0; j < MAXB; j++) free(blocks[j]);
  }
  void *big = malloc(MiB);
  if (!big) return 11;
  free(big);
  return 0;
}

/* Sizes that fit the address space but that no machine here could back:
 * under the kernel's heuristic overcommit (the default, 0) or strict
 * accounting (2) it refuses such a mapping, and so must we, as glibc does,
 * on every entry point and on the huge path's realloc. With overcommit 1
 * (always) the kernel grants anything: nothing to check. */
static int overcommit_mode(void) {
  FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
  int mode = -1;
  if (f) {
    if (fscanf(f, "%d", &mode) != 1) mode = -1;
    fclose(f);
  }
  return mode;
}

START_TEST(t_unbackable_sizes) {
  int mode = overcommit_mode();
  if (mode == 1 || mode < 0) {
    fprintf(stderr, "t_unbackable_sizes: overcommit_memory is %d, the kernel grants anything: not checked\n", mode);
    return;
  }
  const size_t TiB = (size_t)1 << 40;
  size_t big = opaque(64 * TiB);
  EXPECT_NULL_ENOMEM(malloc(big));
  EXPECT_NULL_ENOMEM(malloc(opaque(16 * TiB)));
  EXPECT_NULL_ENOMEM(calloc(opaque(64 * 1024), opaque(GiB)));
  EXPECT_NULL_ENOMEM(aligned_alloc(4096, big));
  EXPECT_NULL_ENOMEM(aligned_alloc(opaque(64 * MiB), big)); /* the over-aligned huge path */
  EXPECT_NULL_ENOMEM(memalign(16, big));
  EXPECT_NULL_ENOMEM(realloc(NULL, big));
  void *p = NULL;
  int r = posix_memalign(&p, 4096, opaque(TiB) * 64);
  ck_assert_msg(r == ENOMEM && p == NULL, "posix_memalign(4096, 64 TiB) returned %d, %p", r, p);
  /* a block already there, small and huge: a refused realloc leaves it alone */
  size_t sizes[] = {100, 16 * MiB};
  for (size_t k = 0; k < 2; k++) {
    unsigned char *b = malloc(sizes[k]);
    ck_assert_ptr_nonnull(b);
    pattern_fill(b, sizes[k], 91 + k);
    EXPECT_NULL_ENOMEM(realloc(b, big));
    CHECK_PATTERN(b, sizes[k], 91 + k, "block after a refused realloc to 64 TiB");
    free(b);
  }
  /* what the machine can back still works: 256 MiB, every page touched */
  unsigned char *ok = malloc(opaque(256 * MiB));
  ck_assert_ptr_nonnull(ok);
  memset(ok, 1, 256 * MiB);
  free(ok);
}
END_TEST

START_TEST(t_rlimit_as) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) _exit(rlimit_child());
  int st;
  char buf[128];
  ck_assert_msg(wait_with_timeout(pid, &st, 30) == 0, "RLIMIT_AS child hung (killed after 30 s)");
  ck_assert_msg(WIFEXITED(st), "RLIMIT_AS child %s", describe_status(st, buf, sizeof buf));
  int code = WEXITSTATUS(st);
  ck_assert_msg(code == 0, "RLIMIT_AS child: %s (exit %d)",
                code > 0 && code < (int)(sizeof rlimit_codes / sizeof rlimit_codes[0]) &&
                        rlimit_codes[code]
                    ? rlimit_codes[code]
                    : "?",
                code);
}
END_TEST

/* ------------------------------------------------------------------ */
/* calloc                                                              */

static size_t first_nonzero(const void *p, size_t n) {
  const unsigned char *c = launder((void *)p);
  for (size_t i = 0; i < n; i++)
    if (c[i]) return i;
  return NOT_FOUND;
}

START_TEST(t_calloc_zero) {
  static const size_t sizes[] = {1,    8,    16,   24,   100,       1000,      4000,
                                 4096, 5000, 16384, 40000, 100 * KiB, 300 * KiB, MiB,
                                 2 * MiB + 17, 5 * MiB, 9 * MiB, 64 * MiB};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    size_t n = sizes[k];
    /* dirty a few blocks of that size, free them, calloc again */
    for (int round = 0; round < 3; round++) {
      void *d[8];
      int nd = n >= MiB ? 2 : 8;
      for (int i = 0; i < nd; i++) {
        d[i] = malloc(n);
        ck_assert_ptr_nonnull(d[i]);
        memset(launder(d[i]), 0xff, malloc_usable_size(d[i]));
      }
      for (int i = 0; i < nd; i++) free(d[i]);
      for (int i = 0; i < nd; i++) {
        d[i] = calloc(1, n);
        ck_assert_msg(d[i] != NULL, "calloc(1, %zu) failed", n);
        ck_assert_msg(is_aligned(d[i], 16), "calloc(1, %zu) = %p misaligned", n, d[i]);
        size_t z = first_nonzero(d[i], n);
        ck_assert_msg(z == NOT_FOUND, "calloc(1, %zu) = %p: byte %zu is not zero (round %d)", n,
                      d[i], z, round);
        memset(launder(d[i]), 0xa5, n);
      }
      for (int i = 0; i < nd; i++) free(d[i]);
    }
    /* split into nmemb x size */
    if (n % 8 == 0) {
      void *p = calloc(n / 8, 8);
      ck_assert_ptr_nonnull(p);
      ck_assert_msg(first_nonzero(p, n) == NOT_FOUND, "calloc(%zu, 8) not zeroed", n / 8);
      free(p);
    }
  }
  void *z = calloc(0, 0), *z2 = calloc(0, 100), *z3 = calloc(100, 0);
  ck_assert_ptr_nonnull(z);
  ck_assert_ptr_nonnull(z2);
  ck_assert_ptr_nonnull(z3);
  ck_assert_ptr_ne(z, z2);
  ck_assert_ptr_ne(z2, z3);
  free(z);
  free(z2);
  free(z3);
}
END_TEST

/* ------------------------------------------------------------------ */
/* aligned allocation                                                  */

START_TEST(t_posix_memalign_einval) {
  static const size_t bad[] = {0, 1, 2, 3, 4, 6, 12, 24, 48, 100, 1000, 4097, 3 << 20,
                               ((size_t)1 << 20) + 8};
  void *sentinel = (void *)(uintptr_t)0xdead0;
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    void *p = sentinel;
    int r = posix_memalign(&p, opaque(bad[k]), 64);
    ck_assert_msg(r == EINVAL, "posix_memalign(align=%zu) returned %d, expected EINVAL", bad[k], r);
    ck_assert_msg(p == sentinel, "posix_memalign(align=%zu) modified *memptr to %p on EINVAL",
                  bad[k], p);
  }
}
END_TEST

START_TEST(t_posix_memalign_valid) {
  static const size_t sizes[] = {0, 1, 8, 24, 100, 1000, 4096, 12345, 100 * KiB, MiB + 3,
                                 5 * MiB};
  for (size_t a = 8; a <= ((size_t)1 << 22); a <<= 1) {
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
      size_t n = sizes[k];
      void *p = NULL;
      int r = posix_memalign(&p, a, n);
      ck_assert_msg(r == 0, "posix_memalign(align=%zu, size=%zu) returned %d", a, n, r);
      ck_assert_msg(p != NULL, "posix_memalign(align=%zu, size=%zu) gave NULL", a, n);
      ck_assert_msg(is_aligned(p, a), "posix_memalign(align=%zu, size=%zu) = %p misaligned", a,
                    n, p);
      size_t u = malloc_usable_size(p);
      ck_assert_msg(u >= n, "usable size %zu < %zu (align %zu)", u, n, a);
      pattern_fill(p, u, block_seed(p, u, a));
      void *other = malloc(n / 2 + 1);
      ck_assert_ptr_nonnull(other);
      memset(launder(other), 0x33, n / 2 + 1);
      CHECK_PATTERN(p, u, block_seed(p, u, a), "posix_memalign block");
      free(other);
      free(p);
    }
  }
  /* keep many aligned blocks alive at once: no overlap */
  enum { N = 300 };
  void *v[N];
  size_t vs[N];
  for (int i = 0; i < N; i++) {
    size_t a = (size_t)16 << (i % 9);
    vs[i] = (size_t)(i * 131 % 5000) + 1;
    ck_assert_int_eq(posix_memalign(&v[i], a, vs[i]), 0);
    ck_assert(is_aligned(v[i], a));
    pattern_fill(v[i], vs[i], block_seed(v[i], vs[i], 9));
  }
  for (int i = 0; i < N; i++) {
    CHECK_PATTERN(v[i], vs[i], block_seed(v[i], vs[i], 9), "live aligned block");
    free(v[i]);
  }
}
END_TEST

static size_t next_pow2(size_t x) {
  size_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

START_TEST(t_memalign) {
  static const size_t aligns[] = {0, 1, 2, 4, 8, 16, 24, 32, 48, 64, 100, 256, 1000, 3000, 4096,
                                  5000, 65536, 100000, (size_t)1 << 21};
  static const size_t sizes[] = {1, 10, 100, 5000, 300 * KiB, 3 * MiB};
  for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
      size_t a = aligns[i], n = sizes[k];
      size_t want = next_pow2(a < 16 ? 16 : a);
      errno = 0;
      void *p = memalign(opaque(a), n);
      ck_assert_msg(p != NULL, "memalign(%zu, %zu) failed, errno %d", a, n, errno);
      ck_assert_msg(is_aligned(p, want), "memalign(%zu, %zu) = %p not aligned to %zu", a, n, p,
                    want);
      size_t u = malloc_usable_size(p);
      ck_assert_uint_ge(u, n);
      pattern_fill(p, u, 5);
      CHECK_PATTERN(p, u, 5, "memalign block");
      free(p);
    }
  }
}
END_TEST

START_TEST(t_aligned_alloc) {
  static const size_t bad[] = {0, 3, 6, 12, 24, 100, 1000, 4097, 3 << 20};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    errno = 0;
    void *p = aligned_alloc(opaque(bad[k]), 64);
    int e = errno;
    ck_assert_msg(p == NULL, "aligned_alloc(%zu, 64) = %p, expected NULL (not a power of two)",
                  bad[k], p);
    ck_assert_msg(e == EINVAL, "aligned_alloc(%zu, 64): errno %d, expected EINVAL", bad[k], e);
  }
  static const size_t sizes[] = {1, 10, 100, 1000, 4095, 5000, 70000, 3 * MiB + 1};
  for (size_t a = 1; a <= ((size_t)1 << 21); a <<= 1) {
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
      size_t n = sizes[k]; /* deliberately not multiples of the alignment */
      void *p = aligned_alloc(a, n);
      ck_assert_msg(p != NULL, "aligned_alloc(%zu, %zu) failed", a, n);
      ck_assert_msg(is_aligned(p, a < 16 ? 16 : a), "aligned_alloc(%zu, %zu) = %p misaligned", a,
                    n, p);
      ck_assert_uint_ge(malloc_usable_size(p), n);
      pattern_fill(p, n, 6);
      CHECK_PATTERN(p, n, 6, "aligned_alloc block");
      free(p);
    }
  }
}
END_TEST

START_TEST(t_valloc_pvalloc) {
  const size_t pg = page_size();
  static const size_t sizes[] = {0, 1, 100, 4095, 4096, 4097, 5000, 12288, MiB, MiB + 1,
                                 10 * MiB};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    size_t n = sizes[k];
    void *p = valloc(n);
    ck_assert_msg(p != NULL, "valloc(%zu) failed", n);
    ck_assert_msg(is_aligned(p, pg), "valloc(%zu) = %p not page aligned", n, p);
    size_t u = malloc_usable_size(p);
    ck_assert_uint_ge(u, n);
    pattern_fill(p, u, 11);
    CHECK_PATTERN(p, u, 11, "valloc block");
    free(p);

    p = pvalloc(n);
    ck_assert_msg(p != NULL, "pvalloc(%zu) failed", n);
    ck_assert_msg(is_aligned(p, pg), "pvalloc(%zu) = %p not page aligned", n, p);
    size_t rounded = n == 0 ? pg : (n + pg - 1) / pg * pg;
    u = malloc_usable_size(p);
    ck_assert_msg(u >= rounded, "pvalloc(%zu): usable %zu < %zu (rounded to a page)", n, u,
                  rounded);
    pattern_fill(p, rounded, 12);
    CHECK_PATTERN(p, rounded, 12, "pvalloc block");
    free(p);
  }
  /* pvalloc(0) returns one whole page, twice distinct */
  void *a = pvalloc(0), *b = pvalloc(0);
  ck_assert_ptr_nonnull(a);
  ck_assert_ptr_nonnull(b);
  ck_assert_ptr_ne(a, b);
  ck_assert_uint_ge(malloc_usable_size(a), pg);
  memset(launder(a), 1, pg);
  memset(launder(b), 2, pg);
  ck_assert_int_eq(((unsigned char *)a)[pg - 1], 1);
  free(a);
  free(b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* realloc                                                             */

START_TEST(t_realloc_basic) {
  void *p = realloc(NULL, 100);
  ck_assert_ptr_nonnull(p);
  ck_assert_uint_ge(malloc_usable_size(p), 100);
  memset(p, 7, 100);
  errno = 0;
  void *r = realloc(p, 0); /* glibc: frees, returns NULL */
  ck_assert_msg(r == NULL, "realloc(p, 0) returned %p, glibc returns NULL (and frees p)", r);
  /* realloc(NULL, 0) behaves like malloc(0) */
  p = realloc(NULL, 0);
  ck_assert_ptr_nonnull(p);
  free(p);
  /* realloc(p, 0) must really free: doing it many times does not grow memory */
  struct mallinfo2 m0 = mallinfo2();
  for (int i = 0; i < 20000; i++) {
    p = malloc(1000);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_null(realloc(p, 0));
  }
  struct mallinfo2 m1 = mallinfo2();
  ck_assert_msg(m1.uordblks + m1.hblkhd < m0.uordblks + m0.hblkhd + 8 * MiB,
                "realloc(p, 0) leaks: in-use grew from %zu to %zu", m0.uordblks + m0.hblkhd,
                m1.uordblks + m1.hblkhd);
}
END_TEST

START_TEST(t_realloc_chain) {
  static const size_t chain[] = {10,   200,       5000,     100 * KiB, 3 * MiB, 40 * MiB,
                                 100,  10,        MiB,      17,        300 * KiB, 9 * MiB,
                                 8 * MiB, 6 * MiB + 5, 70000, 1,       64 * KiB, 1100};
  for (int variant = 0; variant < 3; variant++) {
    size_t n = chain[0];
    unsigned char *p = variant == 2 ? memalign(4096, n) : malloc(n);
    ck_assert_ptr_nonnull(p);
    uint64_t seed = 1000 + (uint64_t)variant;
    pattern_fill(p, n, seed);
    void *hold = NULL;
    for (size_t k = 1; k < sizeof chain / sizeof chain[0]; k++) {
      size_t m = chain[k];
      if (variant == 1) { /* interleave other allocations so in-place growth is harder */
        free(hold);
        hold = malloc(m / 3 + 1);
        ck_assert_ptr_nonnull(hold);
      }
      unsigned char *q = realloc(p, m);
      ck_assert_msg(q != NULL, "realloc(%zu -> %zu) failed", n, m);
      ck_assert_msg(is_aligned(q, 16), "realloc(%zu -> %zu) = %p not 16-aligned", n, m, q);
      ck_assert_msg(malloc_usable_size(q) >= m, "realloc(%zu -> %zu): usable %zu", n, m,
                    malloc_usable_size(q));
      size_t keep = n < m ? n : m;
      size_t bad = pattern_check(q, keep, seed);
      ck_assert_msg(bad == NOT_FOUND,
                    "realloc(%zu -> %zu) (variant %d) lost content at offset %zu", n, m, variant,
                    bad);
      seed++;
      pattern_fill(q, m, seed);
      p = q;
      n = m;
    }
    free(hold);
    free(p);
  }
}
END_TEST

START_TEST(t_realloc_huge_grow) {
  size_t n = 64 * MiB;
  unsigned char *p = malloc(n);
  ck_assert_ptr_nonnull(p);
  pattern_fill(p, n, 4242);
  unsigned char *q = realloc(p, 128 * MiB);
  ck_assert_ptr_nonnull(q);
  ck_assert(is_aligned(q, 16));
  size_t bad = pattern_check(q, n, 4242);
  ck_assert_msg(bad == NOT_FOUND, "64 MiB -> 128 MiB realloc lost content at offset %zu", bad);
  memset(q + n, 0x5a, 64 * MiB); /* the new part is writable */
  /* shrink moderately and a lot */
  unsigned char *r = realloc(q, 100 * MiB);
  ck_assert_ptr_nonnull(r);
  bad = pattern_check(r, n, 4242);
  ck_assert_msg(bad == NOT_FOUND, "128 MiB -> 100 MiB realloc lost content at offset %zu", bad);
  ck_assert_int_eq(r[100 * MiB - 1], 0x5a);
  unsigned char *s = realloc(r, 5000);
  ck_assert_ptr_nonnull(s);
  bad = pattern_check(s, 5000, 4242);
  ck_assert_msg(bad == NOT_FOUND, "100 MiB -> 5000 B realloc lost content at offset %zu", bad);
  free(s);
}
END_TEST

START_TEST(t_reallocarray) {
  int *a = reallocarray(NULL, 10, sizeof(int));
  ck_assert_ptr_nonnull(a);
  for (int i = 0; i < 10; i++) a[i] = i * i;
  int *b = reallocarray(a, 100000, sizeof(int));
  ck_assert_ptr_nonnull(b);
  for (int i = 0; i < 10; i++) ck_assert_int_eq(b[i], i * i);
  for (int i = 10; i < 100000; i++) b[i] = i;
  errno = 0;
  int *c = reallocarray(b, opaque(SIZE_MAX / 4), 8);
  ck_assert_msg(c == NULL && errno == ENOMEM, "reallocarray overflow: %p errno %d", (void *)c,
                errno);
  for (int i = 10; i < 100000; i++) ck_assert_int_eq(b[i], i);
  c = reallocarray(b, 5, sizeof(int));
  ck_assert_ptr_nonnull(c);
  for (int i = 0; i < 5; i++) ck_assert_int_eq(c[i], i * i);
  free(c);
}
END_TEST

/* ------------------------------------------------------------------ */
/* free keeps errno; free_sized / free_aligned_sized                   */

START_TEST(t_free_errno) {
  static const size_t sizes[] = {1, 100, 4000, 40000, 300 * KiB, 2 * MiB, 16 * MiB, 64 * MiB};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    void *p = malloc(sizes[k]);
    ck_assert_ptr_nonnull(p);
    memset(launder(p), 1, sizes[k]);
    errno = 1234;
    free(p);
    ck_assert_msg(errno == 1234, "free(%zu-byte block) changed errno to %d", sizes[k], errno);
  }
  errno = 1234;
  free(NULL);
  ck_assert_int_eq(errno, 1234);
  /* frees that empty whole segments (release/purge paths) */
  enum { N = 40000 };
  void **v = malloc(N * sizeof *v);
  ck_assert_ptr_nonnull(v);
  for (int i = 0; i < N; i++) {
    v[i] = malloc(512);
    ck_assert_ptr_nonnull(v[i]);
  }
  for (int i = 0; i < N; i++) {
    errno = 1234;
    free(v[i]);
    ck_assert_msg(errno == 1234, "free of small block %d changed errno to %d", i, errno);
  }
  malloc_trim(0);
  errno = 1234;
  free(v);
  ck_assert_msg(errno == 1234, "free changed errno to %d", errno);
}
END_TEST

START_TEST(t_free_sized) {
  struct tide_stats s0, s1;
  free_sized(NULL, 0);
  free_sized(NULL, 100);
  for (size_t n = 1; n < 70000; n += (n < 600 ? 1 : n / 7)) {
    void *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    memset(launder(p), 0x11, n);
    free_sized(p, n);
  }
  void *c = calloc(33, 17);
  ck_assert_ptr_nonnull(c);
  free_sized(c, 33 * 17);
  void *r = malloc(10);
  r = realloc(r, 3000);
  ck_assert_ptr_nonnull(r);
  free_sized(r, 3000);
  void *h = malloc(20 * MiB);
  ck_assert_ptr_nonnull(h);
  free_sized(h, 20 * MiB);

  for (size_t a = 16; a <= 65536; a <<= 1)
    for (size_t m = 1; m <= 5; m++) {
      void *p = aligned_alloc(a, a * m);
      ck_assert_ptr_nonnull(p);
      ck_assert(is_aligned(p, a));
      memset(launder(p), 0x22, a * m);
      free_aligned_sized(p, a, a * m);
    }
  free_aligned_sized(NULL, 64, 64);

  /* they really free: 200k rounds would need >200 MiB if they leaked */
  tide_get_stats(&s0);
  for (int i = 0; i < 100000; i++) {
    void *p = malloc(1000);
    ck_assert_ptr_nonnull(p);
    free_sized(p, 1000);
    p = aligned_alloc(256, 1024);
    ck_assert_ptr_nonnull(p);
    free_aligned_sized(p, 256, 1024);
  }
  tide_get_stats(&s1);
  ck_assert_msg(s1.mapped_bytes < s0.mapped_bytes + 32 * MiB,
                "free_sized/free_aligned_sized leak: mapped %zu -> %zu", s0.mapped_bytes,
                s1.mapped_bytes);
  ck_assert_int_eq(tide_heap_check(), 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* introspection: mallinfo2, malloc_stats, malloc_info, mallopt        */

/* glibc's int mallinfo answers for tidemalloc too (glibc's own would report
 * its empty heap): the same figures as mallinfo2, converted to int as glibc
 * converts them. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
START_TEST(t_mallinfo_int) {
  void *h = malloc(64 * MiB); /* a huge block: its own mapping */
  ck_assert_ptr_nonnull(h);
  memset(launder(h), 1, 4096);
  void *small[64];
  for (int i = 0; i < 64; i++) small[i] = malloc(1000);
  struct mallinfo m = mallinfo();
  struct mallinfo2 m2 = mallinfo2();
  ck_assert_msg(m.hblks >= 1 && m.hblkhd >= (int)(60 * MiB), "mallinfo: hblks %d, hblkhd %d with a 64 MiB block live",
                m.hblks, m.hblkhd);
  ck_assert_int_eq(m.hblks, (int)m2.hblks);
  ck_assert_int_eq(m.hblkhd, (int)m2.hblkhd);
  ck_assert_int_eq(m.arena, (int)m2.arena);
  ck_assert_int_eq(m.keepcost, (int)m2.keepcost);
  ck_assert_msg(m.uordblks >= (int)(64 * 1000), "mallinfo: uordblks %d with 64 KB of small blocks live", m.uordblks);
  for (int i = 0; i < 64; i++) free(small[i]);
  free(h);
}
END_TEST
#pragma GCC diagnostic pop

START_TEST(t_mallinfo2) {
  enum { N = 40960, SZ = 256 }; /* 10 MiB of small blocks */
  void **v = malloc(N * sizeof *v);
  ck_assert_ptr_nonnull(v);
  struct mallinfo2 m0 = mallinfo2();
  for (int i = 0; i < N; i++) {
    v[i] = malloc(SZ);
    ck_assert_ptr_nonnull(v[i]);
    memset(launder(v[i]), 1, SZ);
  }
  struct mallinfo2 m1 = mallinfo2();
  ck_assert_msg(m1.uordblks >= m0.uordblks + 8 * MiB,
                "mallinfo2().uordblks grew only from %zu to %zu after allocating 10 MiB",
                m0.uordblks, m1.uordblks);
  ck_assert_msg(m1.arena + m1.hblkhd >= m1.uordblks,
                "mallinfo2: arena (%zu) + hblkhd (%zu) < uordblks (%zu)", m1.arena, m1.hblkhd,
                m1.uordblks);
  for (int i = 0; i < N; i++) free(v[i]);
  malloc_trim(0);
  struct mallinfo2 m2 = mallinfo2();
  ck_assert_msg(m2.uordblks + 8 * MiB <= m1.uordblks,
                "mallinfo2().uordblks did not go down after free + malloc_trim: %zu -> %zu",
                m1.uordblks, m2.uordblks);

  /* a huge block shows up too */
  size_t before = m2.uordblks + m2.hblkhd;
  void *h = malloc(64 * MiB);
  ck_assert_ptr_nonnull(h);
  struct mallinfo2 m3 = mallinfo2();
  ck_assert_msg(m3.uordblks + m3.hblkhd >= before + 60 * MiB,
                "64 MiB block not reflected: uordblks+hblkhd %zu -> %zu", before,
                m3.uordblks + m3.hblkhd);
  free(h);
  struct mallinfo2 m4 = mallinfo2();
  ck_assert_msg(m4.uordblks + m4.hblkhd + 60 * MiB <= m3.uordblks + m3.hblkhd,
                "freed 64 MiB block still counted: %zu -> %zu", m3.uordblks + m3.hblkhd,
                m4.uordblks + m4.hblkhd);
  free(v);
}
END_TEST

/* Run fn with fd 2 redirected to a temporary file; returns the malloc'd text. */
static char *capture_stderr(void (*fn)(void)) {
  char path[] = "/tmp/tide_stderr_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  unlink(path);
  fflush(stderr);
  int saved = dup(2);
  ck_assert_int_ge(saved, 0);
  dup2(fd, 2);
  fn();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  off_t len = lseek(fd, 0, SEEK_END);
  char *buf = calloc(1, (size_t)len + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(pread(fd, buf, (size_t)len, 0), len);
  close(fd);
  return buf;
}

static void call_malloc_stats(void) { malloc_stats(); }

START_TEST(t_malloc_stats) {
  void *p = malloc(1000);
  ck_assert_ptr_nonnull(p);
  void *h1 = malloc(opaque(8 * MiB)), *h2 = malloc(opaque(16 * MiB)); /* two huge blocks live at once */
  ck_assert_ptr_nonnull(h1);
  ck_assert_ptr_nonnull(h2);
  free(h1);
  free(h2);
  char *out = capture_stderr(call_malloc_stats);
  ck_assert_msg(strlen(out) > 0, "malloc_stats() wrote nothing to stderr");
  ck_assert_msg(strstr(out, "tidemalloc") != NULL,
                "malloc_stats() output does not mention tidemalloc:\n%.400s", out);
  /* glibc's summary lines, in glibc's layout, after our detail */
  const char *total = strstr(out, "Total (incl. mmap):\nsystem bytes     = ");
  ck_assert_msg(strstr(out, "Arena 0:\nsystem bytes     = ") && total,
                "malloc_stats() lacks glibc's summary:\n%s", out);
  const char *regions = strstr(total, "max mmap regions = ");
  const char *bytes = strstr(total, "max mmap bytes   = ");
  ck_assert_msg(regions && bytes, "malloc_stats() lacks glibc's max mmap lines:\n%s", out);
  ck_assert_msg(strtoul(regions + 19, NULL, 10) >= 2, "max mmap regions: %.30s", regions);
  ck_assert_msg(strtoul(bytes + 19, NULL, 10) >= 24 * MiB, "max mmap bytes: %.40s", bytes);
  ck_assert_msg(regions[19 + 9] != ' ' && regions[19 + 10] == '\n', "not %%10u: %.32s", regions);
  free(out);
  free(p);
}
END_TEST

START_TEST(t_malloc_info) {
  FILE *f = tmpfile();
  ck_assert_ptr_nonnull(f);
  void *p = malloc(1000);
  int r = malloc_info(0, f);
  ck_assert_int_eq(r, 0);
  fflush(f);
  long len = ftell(f);
  ck_assert_int_gt(len, 0);
  rewind(f);
  char *buf = calloc(1, (size_t)len + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
  ck_assert_msg(strncmp(buf, "<malloc", 7) == 0, "malloc_info XML does not start with <malloc: %.80s",
                buf);
  ck_assert_msg(strstr(buf, "tidemalloc") != NULL, "malloc_info does not mention tidemalloc: %.400s",
                buf);
  free(buf);
  fclose(f);

  f = tmpfile();
  ck_assert_ptr_nonnull(f);
  errno = 0;
  r = malloc_info(1, f);
  ck_assert_msg(r == -1 && errno == EINVAL, "malloc_info(1, fp) returned %d errno %d", r, errno);
  fclose(f);
  free(p);
}
END_TEST

START_TEST(t_mallopt) {
  ck_assert_int_eq(mallopt(M_MMAP_THRESHOLD, 1 << 20), 1);
  ck_assert_int_eq(mallopt(M_MMAP_THRESHOLD, 128 * 1024), 1);
  /* answered as glibc 2.36 answers them (measured side by side) */
  ck_assert_int_eq(mallopt(M_CHECK_ACTION, 1), 1);
  ck_assert_int_eq(mallopt(M_CHECK_ACTION, 0), 1);
  ck_assert_int_eq(mallopt(M_MXFAST, 0), 1);
  ck_assert_int_eq(mallopt(M_MXFAST, 64), 1);
  ck_assert_int_eq(mallopt(M_MXFAST, 160), 1);
  ck_assert_int_eq(mallopt(M_MXFAST, 161), 0);
  ck_assert_int_eq(mallopt(M_MXFAST, -1), 0);
  ck_assert_int_eq(mallopt(12345, 1), 0);
  ck_assert_int_eq(mallopt(-1000, 5), 0);
  void *p = malloc(300 * KiB);
  ck_assert_ptr_nonnull(p);
  free(p);
}
END_TEST

/* M_PERTURB: every block handed out is filled with ~byte, every block
 * freed with byte (glibc's perturb_byte), from any thread; off again at 0. */
static int all_bytes(const unsigned char *p, size_t from, size_t to, unsigned char b) {
  for (size_t i = from; i < to; i++)
    if (p[i] != b) return 0;
  return 1;
}

static void *perturb_remote_free(void *p) {
  free(p);
  return NULL;
}

/* Reads a block after free: it stays mapped (the pager's delay is far
 * longer than this), and words 0 and 1 may hold the allocator's links. */
static int freed_bytes_are(void *p, size_t n, unsigned char b) {
  const volatile unsigned char *q = p;
  for (size_t i = 16; i < n; i++)
    if (q[i] != b) return 0;
  return 1;
}

static int perturb_check(unsigned char byte) {
  static const size_t sizes[] = {16, 48, 100, 1000, 5000, 20000, 32768, 100000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t n = sizes[i];
    for (int round = 0; round < 3; round++) { /* fresh blocks, then reused ones */
      unsigned char *p = malloc(n);
      if (!p || !all_bytes(p, 0, n, (unsigned char)(byte ^ 0xff))) return 1;
      memset(p, 0x11, n);
      free(p);
      if (n <= 32768 && !freed_bytes_are(p, n, byte)) return 2;
    }
    unsigned char *z = calloc(1, n);
    if (!z || !all_bytes(z, 0, n, 0)) return 3;
    free(z);
  }
  unsigned char *r = malloc(200);
  memset(r, 0x11, 200);
  pthread_t t;
  if (pthread_create(&t, NULL, perturb_remote_free, r) != 0) return 4;
  pthread_join(t, NULL);
  if (!freed_bytes_are(r, 200, byte)) return 5;
  return 0;
}

START_TEST(t_perturb) {
  void *warm = malloc(64); /* a heap with full caches before it is turned on */
  free(warm);
  ck_assert_int_eq(mallopt(M_PERTURB, 0x5a), 1);
  int r = perturb_check(0x5a);
  ck_assert_msg(r == 0, "M_PERTURB fill wrong (check %d)", r);
  ck_assert_int_eq(mallopt(M_PERTURB, 0x1c3), 1); /* the low byte counts, as in glibc */
  r = perturb_check(0xc3);
  ck_assert_msg(r == 0, "M_PERTURB 0x1c3 fill wrong (check %d)", r);
  ck_assert_int_eq(mallopt(M_PERTURB, 0), 1);
  /* off: neither fill any more (the debug build has fills of its own,
   * 0xa5 and 0xdf, but not these), and the cache is back */
  for (int i = 0; i < 3; i++) {
    unsigned char *p = malloc(64);
    ck_assert_msg(!all_bytes(p, 0, 64, 0x3c), "blocks are still filled when handed out after M_PERTURB 0");
    memset(p, 0x11, 64);
    free(p);
    ck_assert_msg(!freed_bytes_are(p, 64, 0xc3), "blocks are still filled when freed after M_PERTURB 0");
    ck_assert_ptr_eq(malloc(64), p); /* from the cache: the last block freed */
    free(p);
  }
}
END_TEST

/* MALLOC_PERTURB_ in the environment, read at start-up: the test program
 * runs itself again with it set (main). */
START_TEST(t_perturb_env) {
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    setenv("MALLOC_PERTURB_", "165", 1);
    setenv("TIDETEST_PERTURB_CHILD", "165", 1);
    execl("/proc/self/exe", "test_api", (char *)NULL);
    _exit(99);
  }
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "MALLOC_PERTURB_=165: child status 0x%x (exit %d)", st,
                WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}
END_TEST

/* ------------------------------------------------------------------ */
/* the program break is never moved                                     */

START_TEST(t_no_sbrk) {
  void *brk0 = sbrk(0);
  enum { N = 6000 };
  void **v = calloc(N, sizeof *v);
  ck_assert_ptr_nonnull(v);
  size_t total = 0;
  int n = 0;
  while (total < 100 * MiB && n < N) {
    size_t sz = n % 100 == 99 ? (size_t)(n % 7 + 1) * MiB : (size_t)(n * 977 % 40000) + 1;
    v[n] = malloc(sz);
    ck_assert_ptr_nonnull(v[n]);
    memset(launder(v[n]), 3, sz < 4096 ? sz : 4096);
    total += sz;
    n++;
  }
  void *brk1 = sbrk(0);
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
  malloc_trim(0);
  void *brk2 = sbrk(0);
  ck_assert_msg(total >= 100 * MiB, "only allocated %zu bytes", total);
  ck_assert_msg(brk1 == brk0, "program break moved while allocating: %p -> %p", brk0, brk1);
  ck_assert_msg(brk2 == brk0, "program break moved after free: %p -> %p", brk0, brk2);
}
END_TEST

/* ------------------------------------------------------------------ */
/* __libc_* aliases                                                    */

START_TEST(t_libc_aliases) {
  char tide[512];
  snprintf(tide, sizeof tide, "%s", object_of("tide_version"));
  ck_assert_ptr_nonnull(tide_version());
  unsigned char *p = __libc_malloc(100);
  ck_assert_ptr_nonnull(p);
  ck_assert_uint_ge(malloc_usable_size(p), 100);
  memset(p, 9, 100);
  free(p);
  p = __libc_calloc(100, 10);
  ck_assert_ptr_nonnull(p);
  ck_assert_msg(first_nonzero(p, 1000) == NOT_FOUND, "__libc_calloc not zeroed");
  pattern_fill(p, 1000, 31);
  p = __libc_realloc(p, 100000);
  ck_assert_ptr_nonnull(p);
  CHECK_PATTERN(p, 1000, 31, "__libc_realloc block");
  ck_assert_uint_ge(malloc_usable_size(p), 100000);
  __libc_free(p);
  p = __libc_memalign(4096, 100);
  ck_assert_ptr_nonnull(p);
  ck_assert(is_aligned(p, 4096));
  ck_assert_uint_ge(malloc_usable_size(p), 100);
  free(p);
  p = malloc(50);
  ck_assert_ptr_nonnull(p);
  __libc_free(p);
  p = __libc_malloc(5 * MiB);
  ck_assert_ptr_nonnull(p);
  ck_assert_uint_ge(malloc_usable_size(p), 5 * MiB);
  memset(p, 1, 5 * MiB);
  free(p);
  ck_assert_int_eq(tide_heap_check(), 0);
  static const char *const al[] = {"__libc_malloc", "__libc_free", "__libc_calloc",
                                   "__libc_realloc", "__libc_memalign"};
  for (size_t i = 0; i < 5; i++) {
    const char *o = object_of(al[i]);
    ck_assert_msg(strcmp(o, tide) == 0, "%s resolves to %s, not tidemalloc (%s)", al[i], o, tide);
  }
}
END_TEST

/* ------------------------------------------------------------------ */
/* tide_* API                                                          */

START_TEST(t_tide_version) {
  const char *v = tide_version();
  ck_assert_ptr_nonnull(v);
  ck_assert_msg(strlen(v) > 0, "tide_version() is empty");
  ck_assert_msg(v[0] >= '0' && v[0] <= '9', "tide_version() = \"%s\" does not start with a digit",
                v);
}
END_TEST

START_TEST(t_tide_stats) {
  struct tide_stats s0, s1, s2, s3;
  memset(&s0, 0xee, sizeof s0);
  tide_get_stats(&s0);
  enum { N = 32768 }; /* 8 MiB of 256-byte blocks */
  void **v = malloc(N * sizeof *v);
  ck_assert_ptr_nonnull(v);
  for (int i = 0; i < N; i++) {
    v[i] = malloc(256);
    ck_assert_ptr_nonnull(v[i]);
  }
  void *huge = malloc(64 * MiB);
  ck_assert_ptr_nonnull(huge);
  memset(&s1, 0xee, sizeof s1);
  tide_get_stats(&s1);
  ck_assert_ptr_nonnull(s1.pager_mode);
  ck_assert_msg(strcmp(s1.pager_mode, "dontneed") == 0 || strcmp(s1.pager_mode, "free") == 0,
                "pager_mode = \"%s\"", s1.pager_mode);
  ck_assert_msg(s1.span_bytes >= s0.span_bytes + 8 * MiB - 64 * KiB,
                "span_bytes %zu -> %zu after 8 MiB of small blocks", s0.span_bytes,
                s1.span_bytes);
  ck_assert_msg(s1.huge_bytes >= s0.huge_bytes + 64 * MiB, "huge_bytes %zu -> %zu",
                s0.huge_bytes, s1.huge_bytes);
  ck_assert_uint_eq(s1.huge_count, s0.huge_count + 1);
  ck_assert_msg(s1.mapped_bytes >= s1.span_bytes + s1.large_bytes + s1.huge_bytes,
                "mapped_bytes %zu < span %zu + large %zu + huge %zu", s1.mapped_bytes,
                s1.span_bytes, s1.large_bytes, s1.huge_bytes);
  ck_assert_msg(s1.mapped_bytes >= s1.segment_count * 4 * MiB,
                "mapped_bytes %zu < segment_count %zu x 4 MiB", s1.mapped_bytes,
                s1.segment_count);
  ck_assert_uint_ge(s1.segment_count, 2);
  ck_assert_uint_le(s1.cached_segments, s1.segment_count);
  ck_assert_uint_ge(s1.heap_count, 1);
  ck_assert_msg(s1.mapped_bytes < ((size_t)1 << 40), "implausible mapped_bytes %zu",
                s1.mapped_bytes);

  void *large = malloc(600 * KiB);
  ck_assert_ptr_nonnull(large);
  memset(launder(large), 1, 600 * KiB);
  tide_get_stats(&s2);
  ck_assert_msg(s2.large_bytes + s2.huge_bytes + s2.span_bytes >=
                    s1.large_bytes + s1.huge_bytes + s1.span_bytes + 600 * KiB,
                "a 600 KiB block is not accounted in large/huge/span bytes");
  free(large);

  free(huge);
  for (int i = 0; i < N; i++) free(v[i]);
  free(v);
  /* what tide_collect says it gave back is what the counters saw go: bytes
   * purged plus mappings unmapped around the call (the pager may give back
   * more meanwhile, never less); with no pager thread, it did it all */
  struct tide_stats before;
  tide_get_stats(&before);
  size_t given = tide_collect();
  tide_get_stats(&s3);
  size_t seen = (s3.purged_bytes - before.purged_bytes) +
                (before.mapped_bytes > s3.mapped_bytes ? before.mapped_bytes - s3.mapped_bytes : 0);
  ck_assert_msg(given <= seen, "tide_collect() returned %zu, but only %zu bytes were purged or unmapped", given, seen);
  if (!s3.pager_running)
    ck_assert_msg(given > 0, "tide_collect() gave back nothing after 72 MiB were freed, with no pager");
  ck_assert_uint_eq(s3.huge_count, s0.huge_count);
  ck_assert_msg(s3.huge_bytes + 64 * MiB <= s1.huge_bytes, "huge_bytes %zu -> %zu after free",
                s1.huge_bytes, s3.huge_bytes);
  ck_assert_msg(s3.span_bytes + 6 * MiB <= s1.span_bytes,
                "span_bytes %zu -> %zu after freeing 8 MiB of small blocks and tide_collect()",
                s1.span_bytes, s3.span_bytes);
  ck_assert_msg(s3.mapped_bytes + 64 * MiB <= s1.mapped_bytes,
                "mapped_bytes %zu -> %zu after freeing a 64 MiB block", s1.mapped_bytes,
                s3.mapped_bytes);
  ck_assert_int_eq(tide_heap_check(), 0);
}
END_TEST

START_TEST(t_heap_check_mix) {
  enum { N = 5000 };
  void **v = calloc(N, sizeof *v);
  size_t *sz = calloc(N, sizeof *sz);
  ck_assert_ptr_nonnull(v);
  ck_assert_ptr_nonnull(sz);
  uint64_t rng = 12345;
  ck_assert_int_eq(tide_heap_check(), 0);
  for (int op = 0; op < 60000; op++) {
    rng = mix64(rng);
    int i = (int)(rng % N);
    int kind = (int)((rng >> 20) % 10);
    size_t n = (rng >> 32) % 3000 + 1;
    if ((rng >> 40) % 200 == 0) n = (size_t)((rng >> 48) % 8 + 1) * 300 * KiB;
    if (v[i]) {
      if (pattern_check(v[i], sz[i], block_seed(v[i], sz[i], 3)) != NOT_FOUND)
        ck_abort_msg("block %p (%zu) corrupted at op %d", v[i], sz[i], op);
      if (kind < 2) {
        void *q = realloc(v[i], n);
        ck_assert_ptr_nonnull(q);
        v[i] = q;
        sz[i] = n;
        pattern_fill(q, n, block_seed(q, n, 3));
      } else {
        free(v[i]);
        v[i] = NULL;
      }
    } else {
      if (kind < 5)
        v[i] = malloc(n);
      else if (kind < 7)
        v[i] = calloc(1, n);
      else if (kind < 9)
        v[i] = memalign((size_t)32 << (rng % 8), n);
      else
        ck_assert_int_eq(posix_memalign(&v[i], 64, n), 0);
      ck_assert_ptr_nonnull(v[i]);
      sz[i] = n;
      pattern_fill(v[i], n, block_seed(v[i], n, 3));
    }
    if (op % 20000 == 19999) ck_assert_int_eq(tide_heap_check(), 0);
  }
  ck_assert_int_eq(tide_heap_check(), 0);
  for (int i = 0; i < N; i += 2) {
    free(v[i]);
    v[i] = NULL;
  }
  ck_assert_int_eq(tide_heap_check(), 0);
  tide_collect();
  ck_assert_int_eq(tide_heap_check(), 0);
  for (int i = 0; i < N; i++) {
    if (v[i]) {
      CHECK_PATTERN(v[i], sz[i], block_seed(v[i], sz[i], 3), "live block after collect");
      free(v[i]);
    }
  }
  ck_assert_int_eq(tide_heap_check(), 0);
  free(v);
  free(sz);
}
END_TEST

static Suite *api_suite(void) {
  Suite *s = suite_create("api");
  TCase *tc;

  tc = tcase_create("linkage");
  tcase_add_test(tc, t_linkage);
  tcase_add_test(tc, t_libc_aliases);
  tcase_set_timeout(tc, 30);
  suite_add_tcase(s, tc);

  tc = tcase_create("basic");
  tcase_add_test(tc, t_malloc_zero);
  tcase_add_test(tc, t_usable_null);
  tcase_add_test(tc, t_alignment_and_usable);
  tcase_add_test(tc, t_calloc_zero);
  tcase_add_test(tc, t_free_errno);
  tcase_add_test(tc, t_free_sized);
  tcase_add_test(tc, t_no_sbrk);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("impossible");
  tcase_add_test(tc, t_impossible_sizes);
  tcase_add_test_native(tc, t_rlimit_as, "qemu-user ignores setrlimit(RLIMIT_AS) (it returns 0)");
  tcase_add_test(tc, t_unbackable_sizes);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("aligned");
  tcase_add_test(tc, t_posix_memalign_einval);
  tcase_add_test(tc, t_posix_memalign_valid);
  tcase_add_test(tc, t_memalign);
  tcase_add_test(tc, t_aligned_alloc);
  tcase_add_test(tc, t_valloc_pvalloc);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("realloc");
  tcase_add_test(tc, t_realloc_basic);
  tcase_add_test(tc, t_realloc_chain);
  tcase_add_test(tc, t_realloc_huge_grow);
  tcase_add_test(tc, t_reallocarray);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);

  tc = tcase_create("introspection");
  tcase_add_test(tc, t_mallinfo2);
  tcase_add_test(tc, t_mallinfo_int);
  tcase_add_test(tc, t_malloc_stats);
  tcase_add_test(tc, t_malloc_info);
  tcase_add_test(tc, t_mallopt);
  tcase_add_test(tc, t_perturb);
  tcase_add_test(tc, t_perturb_env);
  tcase_add_test(tc, t_tide_version);
  tcase_add_test(tc, t_tide_stats);
  tcase_add_test(tc, t_heap_check_mix);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  const char *perturb = getenv("TIDETEST_PERTURB_CHILD");
  if (perturb) return perturb_check((unsigned char)atoi(perturb));
  return check_run(api_suite(), CK_FORK_GETENV);
}
