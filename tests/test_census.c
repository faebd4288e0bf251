/* The census (tide_get_stats: resident_bytes and where the bytes sit)
 * against the kernel's count of the same mappings, with mincore(2): every
 * normal segment (the internal list; linked statically against
 * libtidecore) and every huge block the test holds. The program touches
 * every byte it allocates, so that what the census counts as resident
 * really was touched; the tolerance is stated below. */
#include "internal.h"

#include <check.h>
#include "checkrun.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <tidemalloc.h>
#include <unistd.h>

/* Tolerance: 5% of the kernel's count, plus one page per segment (the
 * census counts the header pages a segment's slices use; a few more may be
 * resident from slices used earlier), plus 16 KiB (blocks of libc and the
 * test framework the test did not touch itself). */
#define TOL_PCT 5

static size_t resident_of(const void *p, size_t len) {
  static unsigned char vec[1 << 16];
  size_t pages = (len + 4095) / 4096, n = 0;
  for (size_t off = 0; off < pages; off += sizeof vec) {
    size_t chunk = pages - off < sizeof vec ? pages - off : sizeof vec;
    if (mincore((char *)p + off * 4096, chunk * 4096, vec) != 0) return 0;
    for (size_t i = 0; i < chunk; i++) n += vec[i] & 1;
  }
  return n * 4096;
}

enum { NSMALL = 60000, NLARGE = 40, NHUGE = 4 };
static void *small_b[NSMALL], *large_b[NLARGE], *huge_b[NHUGE];

static size_t kernel_count(size_t *segments) {
  size_t total = 0, nseg = 0;
  tm_lock(&tm_global_lock);
  for (tm_segment *seg = tm_segments_first(); seg; seg = seg->all_next, nseg++) total += resident_of(seg, TM_SEG_SIZE);
  tm_unlock(&tm_global_lock);
  for (int i = 0; i < NHUGE; i++)
    if (huge_b[i]) {
      tm_segment *seg = tm_segment_of(huge_b[i]);
      total += resident_of(seg, seg->map_size);
    }
  *segments = nseg;
  return total;
}

/* What the census and the kernel disagree on before the test allocates
 * anything: blocks of libc, the test framework or a sanitizer's runtime,
 * allocated but not all touched (the census counts a large block whole).
 * That stays as it is; the test compares what changes. */
static long foreign_excess;

static long census_excess(size_t *census, size_t *kernel, size_t *nseg) {
  struct tide_stats st;
  tide_get_stats(&st);
  *census = st.resident_bytes;
  *kernel = kernel_count(nseg);
  return (long)*census - (long)*kernel;
}

static void compare(const char *when) {
  struct tide_stats st;
  tide_get_stats(&st);
  size_t nseg, census, kernel;
  long excess = census_excess(&census, &kernel, &nseg) - foreign_excess;
  size_t diff = (size_t)(excess < 0 ? -excess : excess);
  size_t tol = kernel * TOL_PCT / 100 + nseg * 4096 + 16384;
  printf("%s: census %zu KiB, kernel %zu KiB (%zu segments), difference %zu KiB beside the %ld KiB before the test, "
         "tolerance %zu KiB\n",
         when, census >> 10, kernel >> 10, nseg, diff >> 10, foreign_excess / 1024, tol >> 10);
  printf("  cached %zu used %zu free %zu free-resident %zu headers %zu huge cache %zu huge %zu large %zu\n",
         st.cached_bytes >> 10, st.span_used_bytes >> 10, st.span_free_bytes >> 10, st.free_unpurged_bytes >> 10,
         st.header_bytes >> 10, st.huge_cached_bytes >> 10, st.huge_bytes >> 10, st.large_bytes >> 10);
  ck_assert_msg(diff <= tol, "%s: the census says %zu KiB resident, the kernel %zu KiB (%ld KiB apart before)", when,
                census >> 10, kernel >> 10, foreign_excess / 1024);
}

START_TEST(t_census_matches_kernel) {
  size_t c0, k0, n0;
  tide_purge(); /* settle what was there before: the comparisons end with a purge too */
  foreign_excess = census_excess(&c0, &k0, &n0);
  uint64_t rng = 0x2545f4914f6cdd1dull;
  for (int i = 0; i < NSMALL; i++) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    size_t n = 16 + (size_t)(rng % 4000);
    small_b[i] = malloc(n);
    memset(small_b[i], 1, n);
  }
  for (int i = 0; i < NLARGE; i++) {
    size_t n = 40000 + (size_t)i * 20000;
    large_b[i] = malloc(n);
    memset(large_b[i], 2, n);
  }
  for (int i = 0; i < NHUGE; i++) {
    size_t n = ((size_t)2 + (size_t)i) << 20;
    huge_b[i] = malloc(n);
    memset(huge_b[i], 3, n);
  }
  compare("all live");
  for (int i = 0; i < NSMALL; i++)
    if (i % 4) {
      free(small_b[i]);
      small_b[i] = NULL;
    }
  for (int i = 0; i < NLARGE; i += 2) {
    free(large_b[i]);
    large_b[i] = NULL;
  }
  free(huge_b[0]);
  huge_b[0] = NULL;
  compare("three quarters freed, nothing given back yet");
  tide_purge();
  compare("after tide_purge");
  for (int i = 0; i < NSMALL; i++) free(small_b[i]);
  for (int i = 0; i < NLARGE; i++) free(large_b[i]);
  for (int i = 0; i < NHUGE; i++) free(huge_b[i]);
  memset(huge_b, 0, sizeof huge_b);
  tide_purge();
  compare("all freed, after tide_purge");
}
END_TEST

int main(void) {
  tm_pager_opt.delay_ms = 600000; /* nothing goes back but what tide_purge sends */
  tm_pager_opt.idle_ms = 600000;
  Suite *su = suite_create("census");
  TCase *tc = tcase_create("census");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, t_census_matches_kernel);
  suite_add_tcase(su, tc);
  return check_run(su, CK_NOFORK);
}
