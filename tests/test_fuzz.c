/* A fuzz-style drive of the whole API from several threads, with contents
 * checked: malloc, calloc, realloc, reallocarray, posix_memalign,
 * aligned_alloc, memalign, free, free_sized, malloc_usable_size and
 * malloc_trim, in random order and sizes from 1 byte to 8 MiB, with blocks
 * handed between threads (freed, resized or kept by another thread than
 * their maker). Every block carries a pattern from its own seed and is
 * checked before each free and realloc (the part realloc keeps), calloc's
 * zeroes and every alignment are checked, and each thread's heap passes
 * tide_heap_check at the end.
 *
 * It runs for TIDETEST_FUZZ_SECONDS (default 3, times TIDETEST_SCALE) in
 * make check; `make stress` runs it for 60 s. The seed is printed, and
 * TIDETEST_FUZZ_SEED replays one. */
#define _GNU_SOURCE
#include <check.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkrun.h"
#include "testutil.h"
#include "tidemalloc.h"

void free_sized(void *, size_t); /* C23; glibc 2.36 does not declare it */

enum { THREADS = 4, SLOTS = 512, EXCHANGE = 64 };

typedef struct {
  unsigned char *p;
  size_t size;
  uint64_t seed;
} fz_block;

/* Blocks in transit between threads. */
static struct {
  pthread_mutex_t lock;
  fz_block b[EXCHANGE];
  int n;
} fz_exchange = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};

static atomic_int fz_failed;
static char fz_msg[512];
static double fz_deadline;

static void fz_fail(const char *what, const void *p, size_t size, size_t at) {
  if (atomic_exchange(&fz_failed, 1) == 0)
    snprintf(fz_msg, sizeof fz_msg, "%s: block %p of %zu bytes, at offset %zu", what, p, size, at);
}

static uint64_t fz_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Mostly small, some medium and large, a few huge. */
static size_t fz_size(uint64_t *rng) {
  uint64_t r = fz_next(rng) % 1000;
  uint64_t v = fz_next(rng);
  if (r < 900) return 1 + v % 1024;
  if (r < 990) return 1024 + v % (64 * 1024);
  if (r < 999) return 64 * 1024 + v % (2 << 20);
  return (2 << 20) + v % (6 << 20);
}

static void fz_fill(fz_block *b, uint64_t *rng) {
  b->seed = fz_next(rng);
  pattern_fill(b->p, b->size, b->seed);
}

static bool fz_intact(const fz_block *b, size_t n, const char *when) {
  size_t bad = pattern_check(b->p, n, b->seed);
  if (bad != (size_t)-1) {
    fz_fail(when, b->p, b->size, bad);
    return false;
  }
  if (malloc_usable_size(b->p) < b->size) {
    fz_fail("malloc_usable_size below the size asked for", b->p, b->size, 0);
    return false;
  }
  return true;
}

static void fz_release(fz_block *b, uint64_t *rng) {
  if (!b->p) return;
  fz_intact(b, b->size, "block changed before free");
  if (fz_next(rng) & 1)
    free(b->p);
  else
    free_sized(b->p, b->size);
  b->p = NULL;
}

static bool fz_aligned(const void *p, size_t align) { return ((uintptr_t)p & (align - 1)) == 0; }

/* A new block in b, by one of the allocation calls. */
static void fz_allocate(fz_block *b, uint64_t *rng) {
  size_t size = fz_size(rng);
  size_t align = (size_t)1 << (4 + fz_next(rng) % 13); /* 16 B .. 64 KiB */
  void *p = NULL;
  switch (fz_next(rng) % 6) {
    case 0:
    case 1:
      p = malloc(size);
      break;
    case 2: {
      size_t n = 1 + fz_next(rng) % 16;
      size = (size + n - 1) / n * n;
      p = calloc(n, size / n);
      if (p)
        for (size_t i = 0; i < size; i++)
          if (((unsigned char *)p)[i] != 0) {
            fz_fail("calloc block not zeroed", p, size, i);
            break;
          }
      break;
    }
    case 3:
      if (posix_memalign(&p, align, size) != 0) p = NULL;
      if (p && !fz_aligned(p, align)) fz_fail("posix_memalign misaligned", p, size, align);
      break;
    case 4:
      p = aligned_alloc(align, size);
      if (p && !fz_aligned(p, align)) fz_fail("aligned_alloc misaligned", p, size, align);
      break;
    default:
      p = memalign(align, size);
      if (p && !fz_aligned(p, align)) fz_fail("memalign misaligned", p, size, align);
      break;
  }
  if (!p) {
    fz_fail("allocation failed", NULL, size, 0);
    return;
  }
  b->p = p;
  b->size = size;
  fz_fill(b, rng);
}

/* Resize b with realloc or reallocarray: the bytes kept must be intact. */
static void fz_resize(fz_block *b, uint64_t *rng) {
  size_t size = fz_size(rng);
  if (!fz_intact(b, b->size, "block changed before realloc")) return;
  void *q;
  if (fz_next(rng) & 1) {
    q = realloc(b->p, size);
  } else {
    size_t n = 1 + fz_next(rng) % 8;
    size = (size + n - 1) / n * n;
    q = reallocarray(b->p, n, size / n);
  }
  if (!q) {
    fz_fail("realloc failed", b->p, size, 0);
    return;
  }
  size_t kept = b->size < size ? b->size : size;
  b->p = q;
  b->size = size;
  fz_intact(b, kept, "realloc lost the bytes it keeps");
  fz_fill(b, rng);
}

static void *fz_thread(void *arg) {
  uint64_t rng = (uint64_t)(uintptr_t)arg;
  fz_block slot[SLOTS];
  memset(slot, 0, sizeof slot);
  unsigned long ops = 0;
  while (!atomic_load_explicit(&fz_failed, memory_order_relaxed)) {
    if ((ops & 1023) == 0 && now_sec() > fz_deadline) break;
    ops++;
    fz_block *b = &slot[fz_next(&rng) % SLOTS];
    uint64_t op = fz_next(&rng) % 100;
    if (op < 40) {
      fz_release(b, &rng);
      fz_allocate(b, &rng);
    } else if (op < 60) {
      if (b->p) fz_resize(b, &rng);
    } else if (op < 80) {
      fz_release(b, &rng);
    } else if (op < 90) { /* hand a block to whichever thread comes next */
      pthread_mutex_lock(&fz_exchange.lock);
      if (b->p && fz_exchange.n < EXCHANGE) {
        fz_exchange.b[fz_exchange.n++] = *b;
        b->p = NULL;
      }
      pthread_mutex_unlock(&fz_exchange.lock);
    } else if (op < 99) { /* take one: keep it, resize it, or free it */
      fz_block got = {0};
      pthread_mutex_lock(&fz_exchange.lock);
      if (fz_exchange.n) got = fz_exchange.b[--fz_exchange.n];
      pthread_mutex_unlock(&fz_exchange.lock);
      if (got.p) {
        if (!fz_intact(&got, got.size, "block changed in transit")) break;
        if (!b->p && (fz_next(&rng) & 1)) {
          *b = got;
          if (fz_next(&rng) & 1) fz_resize(b, &rng);
        } else {
          fz_release(&got, &rng);
        }
      }
    } else if ((fz_next(&rng) & 63) == 0) {
      malloc_trim(0);
    }
  }
  for (int i = 0; i < SLOTS; i++) fz_release(&slot[i], &rng);
  if (tide_heap_check() != 0) fz_fail("tide_heap_check found problems in a thread's heap", NULL, 0, 0);
  return (void *)ops;
}

START_TEST(t_fuzz) {
  const char *sec = getenv("TIDETEST_FUZZ_SECONDS");
  double seconds = (sec ? atof(sec) : 3.0) * test_scale();
  const char *seed_env = getenv("TIDETEST_FUZZ_SEED");
  uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)(now_sec() * 1e6);
  printf("fuzz: seed 0x%llx (TIDETEST_FUZZ_SEED replays it), %.0f s, %d threads\n", (unsigned long long)seed,
         seconds, THREADS);
  fz_deadline = now_sec() + seconds;
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, fz_thread, (void *)(uintptr_t)(mix64(seed + (uint64_t)i) | 1)), 0);
  unsigned long total = 0;
  for (int i = 0; i < THREADS; i++) {
    void *ops;
    pthread_join(t[i], &ops);
    total += (unsigned long)(uintptr_t)ops;
  }
  uint64_t rng = seed | 1;
  while (fz_exchange.n) fz_release(&fz_exchange.b[--fz_exchange.n], &rng);
  ck_assert_msg(!atomic_load(&fz_failed), "seed 0x%llx: %s", (unsigned long long)seed, fz_msg);
  ck_assert_int_eq(tide_heap_check(), 0);
  printf("fuzz: %lu operations\n", total);
  ck_assert_uint_gt(total, 1000);
}
END_TEST

int main(void) {
  Suite *su = suite_create("fuzz");
  TCase *tc = tcase_create("fuzz");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, t_fuzz);
  suite_add_tcase(su, tc);
  return check_run(su, CK_FORK_GETENV);
}
