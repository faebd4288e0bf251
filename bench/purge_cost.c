/* Measures what giving pages back costs, to choose the pager's default mode:
 * for MADV_DONTNEED and MADV_FREE, the time of the madvise call itself, the
 * RSS right after it, and the time to touch the pages again (refault for
 * DONTNEED; for FREE, reuse of pages the kernel has not reclaimed yet).
 * usage: purge_cost [MIB] [ROUNDS]   (default 64 MiB, 5 rounds) */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) v = strtol(line + 6, NULL, 10);
  if (f) fclose(f);
  return v;
}

static void touch(char *p, size_t len) {
  for (size_t i = 0; i < len; i += 4096) p[i] = (char)i;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
  int rounds = argc > 2 ? atoi(argv[2]) : 5;
  if (mib == 0 || rounds <= 0 || rounds > 100) {
    fprintf(stderr, "usage: purge_cost [MIB] [ROUNDS]\n");
    return 2;
  }
  size_t len = mib << 20, pages = len / 4096;
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 1;
  const struct {
    const char *name;
    int advice;
  } modes[] = {{"dontneed", MADV_DONTNEED}, {"free", MADV_FREE}};
  printf("pages=%zu rounds=%d (median per page)\n", pages, rounds);
  printf("%-9s %14s %14s %16s %16s\n", "mode", "madvise_ns/pg", "retouch_ns/pg", "rss_after_kib", "rss_touched_kib");
  for (int m = 0; m < 2; m++) {
    double adv[100], ret[100];
    long rss_after = 0, rss_touched = 0;
    for (int r = 0; r < rounds; r++) {
      touch(p, len);
      rss_touched = rss_kib();
      double t0 = now_us();
      if (madvise(p, len, modes[m].advice) != 0) {
        perror("madvise");
        return 1;
      }
      double t1 = now_us();
      rss_after = rss_kib();
      double t2 = now_us();
      touch(p, len);
      double t3 = now_us();
      adv[r] = (t1 - t0) * 1e3 / pages;
      ret[r] = (t3 - t2) * 1e3 / pages;
    }
    qsort(adv, rounds, sizeof adv[0], cmp_double);
    qsort(ret, rounds, sizeof ret[0], cmp_double);
    printf("%-9s %14.1f %14.1f %16ld %16ld\n", modes[m].name, adv[rounds / 2], ret[rounds / 2], rss_after, rss_touched);
  }
  return 0;
}
