/*
 * mb_glibc_simple: the malloc/free fast path for small fixed-size blocks,
 * allocated in runs of a few dozen to a few thousand and then freed.
 *
 * Modelled on the published description of glibc's malloc micro-benchmark
 * bench-malloc-simple, which mimalloc-bench runs as "glibc-simple"
 * (mimalloc-bench README: "glibc-simple and glibc-thread: benchmarks for
 * the glibc"; the glibc commit that added it: "The benchmark does a varying
 * number of allocations of a given block size, then frees them again.  It
 * tests 3 different scenarios: single-threaded using main arena,
 * multi-threaded using thread-arena, main arena with SINGLE_THREAD_P
 * false", to track the per-thread cache and fast-bin paths).  This is an
 * independent implementation written for tidemalloc from that description
 * only: no glibc code is used, and the choice of sizes, counts and amount of
 * work here is our own.
 *
 * What it measures: the time of a malloc + free pair when a single thread
 * allocates `count' blocks of one size and then frees them all in the same
 * order, for every size min, 2*min, 4*min, ... up to max and every count
 * mincount, 4*mincount, 16*mincount, ... up to maxcount (by default sizes
 * 16..512 and counts 25, 100, 400, 1600: from what fits in a per-thread
 * cache to what overflows it).  Each (size, count) configuration does
 * about `pairs' malloc/free pairs (whole rounds of `count').  It is run in
 * up to three scenarios:
 *   1  on the main thread before any other thread has been created (an
 *      allocator may take a single-threaded fast path);
 *   2  on a newly created thread (that thread's own heap or arena);
 *   3  on the main thread while another thread exists (parked on a
 *      condition variable), so single-threaded shortcuts are off.
 * scenario=0 (the default) runs 1, 2 and 3 in that order, as the published
 * program does.  Every block gets a word stamped at its start and a byte at
 * its end (derived from the seed, the size and its index), checked before
 * it is freed; the stamp is cheaper than wl_fill's so that it does not hide
 * the allocator's cost.
 *
 * Output (one line; verbose=1 first prints one line per configuration):
 *   mb_glibc_simple: scenario=0 min=16 max=512 mincount=25 maxcount=1600
 *                    pairs=... seed=0x... configs=... mallocs=... frees=...
 *                    ns_per_pair=... seconds=... ops_per_sec=...
 * seconds is the sum of the timed loops (thread creation is not timed);
 * ops_per_sec = (mallocs + frees) / seconds; ns_per_pair is the mean time
 * of one malloc + free pair over all configurations.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "workload.h"

static const char *const PROG = "mb_glibc_simple";

#define MAX_COUNT (1u << 20)
#define COUNT_STEP 4u

static uint64_t scenario, min_size, max_size, mincount, maxcount, pairs,
	seed, verbose;
static void **arr;		/* the blocks of one round (mmap'ed) */

struct result {
	double secs;
	uint64_t pairs;
	unsigned configs;
};

/* Every configuration, on the calling thread. */
static void run_configs(unsigned sc, struct result *res)
{
	for (uint64_t size = min_size; size <= max_size; size *= 2) {
		for (uint64_t count = mincount; count <= maxcount;
		     count *= COUNT_STEP) {
			uint64_t rounds = (pairs + count - 1) / count;
			uint64_t h = wl_header((size_t)size) ^
				     wl_seed(seed, sc * 1000003u + count);
			const size_t n = (size_t)size;

			double t0 = wl_now();
			for (uint64_t r = 0; r < rounds; r++) {
				for (uint64_t i = 0; i < count; i++) {
					unsigned char *p = wl_xmalloc(PROG, n);
					uint64_t word = h ^ i;
					memcpy(p, &word, sizeof(word));
					p[n - 1] = (unsigned char)(h >> 40 ^ i);
					arr[i] = p;
				}
				for (uint64_t i = 0; i < count; i++) {
					unsigned char *p = arr[i];
					uint64_t word;
					memcpy(&word, p, sizeof(word));
					if (word != (h ^ i))
						wl_corrupt(PROG, p,
							   "bad first word");
					if (p[n - 1] !=
					    (unsigned char)(h >> 40 ^ i))
						wl_corrupt(PROG, p,
							   "bad last byte");
					free(p);
				}
			}
			double dt = wl_now() - t0;

			res->secs += dt;
			res->pairs += rounds * count;
			res->configs++;
			if (verbose)
				WL_PRINT("%s: scenario=%u size=%llu count=%llu "
					 "pairs=%llu ns_per_pair=%.2f\n", PROG,
					 sc, (unsigned long long)size,
					 (unsigned long long)count,
					 (unsigned long long)(rounds * count),
					 dt * 1e9 / (double)(rounds * count));
		}
	}
}

static struct result thread_res;

static void *scenario2(void *arg)
{
	(void)arg;
	run_configs(2, &thread_res);
	return NULL;
}

/* The idle thread of scenario 3. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int done;
} park = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

static void *parked(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&park.lock);
	while (!park.done)
		pthread_cond_wait(&park.cond, &park.lock);
	pthread_mutex_unlock(&park.lock);
	return NULL;
}

int main(int argc, char **argv)
{
	scenario = 0;
	min_size = 16;
	max_size = 512;
	mincount = 25;
	maxcount = 1600;
	pairs = 800000;
	seed = 0x12345678;
	verbose = 0;

	struct wl_opt opts[] = {
		{ "scenario", &scenario, 0, 3,
		  "1 main thread, single-threaded; 2 a new thread; 3 main "
		  "thread with another thread alive; 0 all three", 0, 0 },
		{ "min", &min_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "smallest block size (then doubled up to max)", 0, 0 },
		{ "max", &max_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "largest block size", 0, 0 },
		{ "mincount", &mincount, 1, MAX_COUNT,
		  "fewest blocks per round (then times 4 up to maxcount)",
		  0, 0 },
		{ "maxcount", &maxcount, 1, MAX_COUNT,
		  "most blocks per round", 0, 0 },
		{ "pairs", &pairs, 1, UINT64_C(1) << 40,
		  "malloc/free pairs per configuration (whole rounds)", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed (stamps)", 0, 0 },
		{ "verbose", &verbose, 0, 1,
		  "1: also print one line per configuration", 0, 0 },
	};
	wl_parse(PROG, "glibc bench-malloc-simple style: allocate count "
		 "blocks of one size, free them; sizes x counts.", argc, argv,
		 opts, WL_NOPTS(opts));
	if (max_size < min_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "max must be >= min");
	if (maxcount < mincount)
		wl_usage(PROG, "", opts, WL_NOPTS(opts),
			 "maxcount must be >= mincount");

	arr = wl_map(PROG, sizeof(void *) * maxcount);

	struct result res = { 0, 0, 0 };
	if (scenario == 0 || scenario == 1)
		run_configs(1, &res);	/* no thread created yet */
	if (scenario == 0 || scenario == 2) {
		pthread_t tid;
		wl_spawn(PROG, &tid, scenario2, NULL);
		pthread_join(tid, NULL);
		res.secs += thread_res.secs;
		res.pairs += thread_res.pairs;
		res.configs += thread_res.configs;
	}
	if (scenario == 0 || scenario == 3) {
		pthread_t tid;
		wl_spawn(PROG, &tid, parked, NULL);
		run_configs(3, &res);
		pthread_mutex_lock(&park.lock);
		park.done = 1;
		pthread_cond_signal(&park.cond);
		pthread_mutex_unlock(&park.lock);
		pthread_join(tid, NULL);
	}

	double secs = res.secs;
	WL_PRINT("%s: scenario=%llu min=%llu max=%llu mincount=%llu "
		 "maxcount=%llu pairs=%llu seed=0x%llx configs=%u mallocs=%llu "
		 "frees=%llu ns_per_pair=%.2f seconds=%.6f ops_per_sec=%.0f\n",
		 PROG, (unsigned long long)scenario,
		 (unsigned long long)min_size, (unsigned long long)max_size,
		 (unsigned long long)mincount, (unsigned long long)maxcount,
		 (unsigned long long)pairs, (unsigned long long)seed,
		 res.configs, (unsigned long long)res.pairs,
		 (unsigned long long)res.pairs,
		 res.pairs ? secs * 1e9 / (double)res.pairs : 0.0, secs,
		 wl_rate(2.0 * (double)res.pairs, secs));
	return 0;
}
