/*
 * mb_glibc_thread: per-thread malloc/free throughput on a small private
 * working set.
 *
 * Modelled on the published description of "glibc-thread" in mimalloc-bench
 * (the community allocator benchmark suite), which runs glibc's
 * benchtests/bench-malloc-thread: each thread repeatedly replaces a random
 * block of a private working set of 1024 blocks, block sizes being drawn from
 * an inverse-square distribution between 4 and 32768 bytes, and the figure
 * is iterations per unit of time.  This is an independent implementation
 * written for tidemalloc from that description; it shares no code with the
 * glibc or mimalloc-bench programs.  Unlike the glibc program (which runs for
 * a fixed time) it does a fixed amount of work, so the rate can be compared
 * across allocators.
 *
 * T threads each run `iters' iterations.  An iteration picks a random slot of
 * the thread's window of `live' slots, checks and frees the block there (if
 * any), mallocs a new block and stamps it.  Sizes come from a per-thread
 * table of 4096 sizes drawn up front (untimed) with density proportional to
 * 1/size^2 on min..max, so most blocks are tiny and a few are large.  A block
 * gets its first and last byte stamped (blocks of 16 bytes and more get the
 * full workload.h stamp), and the stamp is verified before the block is
 * freed.  The window starts empty and is emptied at the end, both inside the
 * timed region.
 *
 * The sizes and slots depend only on the seed and the thread number.
 *
 * Output (one line):
 *   glibc-thread: threads=2 iters=... live=1024 min=4 max=32768 seed=0x...
 *                 mallocs=... frees=... seconds=... ops_per_sec=...
 * ops_per_sec = (mallocs + frees) / seconds (one iteration is one malloc and,
 * once the window is full, one free), timed from the moment all threads are
 * released until the last one has finished.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "glibc-thread";

#define MAX_THREADS 256u
#define SIZE_TABLE 4096u	/* sizes drawn up front, a power of two */

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t mallocs, frees;
	void **window;		/* live slots */
	uint32_t *wsize;	/* size of the block in each slot */
	uint32_t *sizes;	/* SIZE_TABLE sizes */
} __attribute__((aligned(64)));

static uint64_t iters, live, min_size, max_size, seed;
static pthread_barrier_t start_barrier;

/* A size in min..max with density proportional to 1/size^2: the inverse of
 * its distribution function, F(x) = (1/min - 1/x) / (1/min - 1/max). */
static uint32_t inverse_square_size(uint64_t *rng)
{
	double a = 1.0 / (double)min_size, b = 1.0 / (double)max_size;
	double u = (double)(wl_rand(rng) >> 11) * 0x1p-53;	/* [0, 1) */
	double x = 1.0 / (a - u * (a - b));
	uint64_t n = (uint64_t)x;

	if (n < min_size)
		n = min_size;
	if (n > max_size)
		n = max_size;
	return (uint32_t)n;
}

static inline unsigned char small_tag(size_t n)
{
	return (unsigned char)(n * 0x9du + 0x3bu);
}

static void stamp(void *p, size_t n)
{
	if (n >= WL_MIN_SIZE) {
		wl_fill(p, n);
		return;
	}
	unsigned char *b = p;
	b[0] = small_tag(n);
	if (n > 1)
		b[n - 1] = (unsigned char)(small_tag(n) ^ 0x5a);
}

static void check(const void *p, size_t n)
{
	if (n >= WL_MIN_SIZE) {
		if (wl_check(PROG, p, max_size) != n)
			wl_corrupt(PROG, p, "size in header differs");
		return;
	}
	const unsigned char *b = p;
	if (b[0] != small_tag(n) ||
	    (n > 1 && b[n - 1] != (unsigned char)(small_tag(n) ^ 0x5a)))
		wl_corrupt(PROG, p, "bad stamp on a small block");
}

static void *run(void *arg)
{
	struct worker *w = arg;
	const uint32_t *sizes = w->sizes;

	pthread_barrier_wait(&start_barrier);

	for (uint64_t i = 0; i < iters; i++) {
		uint64_t r = wl_rand(&w->rng);
		size_t k = (size_t)(((unsigned __int128)r * live) >> 64);
		size_t n = sizes[r & (SIZE_TABLE - 1)];

		void *old = w->window[k];
		if (old != NULL) {
			check(old, w->wsize[k]);
			free(old);
			w->frees++;
		}
		void *p = wl_xmalloc(PROG, n);
		stamp(p, n);
		w->mallocs++;
		w->window[k] = p;
		w->wsize[k] = (uint32_t)n;
	}
	for (uint64_t k = 0; k < live; k++) {
		void *p = w->window[k];
		if (p != NULL) {
			check(p, w->wsize[k]);
			free(p);
			w->frees++;
			w->window[k] = NULL;
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t threads = 2;

	iters = 70000000;
	live = 1024;
	min_size = 4;
	max_size = 32768;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &threads, 1, MAX_THREADS, "number of threads", 0, 0 },
		{ "iters", &iters, 1, UINT64_C(1) << 40,
		  "iterations (free + malloc) per thread", 0, 0 },
		{ "live", &live, 1, UINT64_C(1) << 24,
		  "working-set slots per thread", 0, 0 },
		{ "min", &min_size, 1, WL_MAX_SIZE, "smallest block size", 0, 0 },
		{ "max", &max_size, 1, WL_MAX_SIZE, "largest block size", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Threads replace random blocks of a private working "
		 "set; sizes ~ 1/size^2 (glibc bench-malloc-thread style).",
		 argc, argv, opts, WL_NOPTS(opts));
	if (max_size < min_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "max must be >= min");
	unsigned nthreads = (unsigned)threads;

	struct worker *workers = wl_map(PROG, sizeof(*workers) * nthreads);
	for (unsigned t = 0; t < nthreads; t++) {
		struct worker *w = &workers[t];
		w->id = t;
		w->rng = wl_seed(seed, t);
		w->window = wl_map(PROG, sizeof(void *) * live);
		w->wsize = wl_map(PROG, sizeof(uint32_t) * live);
		w->sizes = wl_map(PROG, sizeof(uint32_t) * SIZE_TABLE);
		for (unsigned i = 0; i < SIZE_TABLE; i++)
			w->sizes[i] = inverse_square_size(&w->rng);
	}

	double secs = WL_TIMED_RUN(PROG, &start_barrier, 0, run, workers,
				   nthreads, NULL);

	uint64_t mallocs = WL_SUM(workers, nthreads, mallocs);
	uint64_t frees = WL_SUM(workers, nthreads, frees);
	wl_check_counts(PROG, mallocs, frees, mallocs == iters * nthreads);

	WL_PRINT("%s: threads=%u iters=%llu live=%llu min=%llu max=%llu "
		 "seed=0x%llx mallocs=%llu frees=%llu seconds=%.6f "
		 "ops_per_sec=%.0f\n",
		 PROG, nthreads, (unsigned long long)iters,
		 (unsigned long long)live, (unsigned long long)min_size,
		 (unsigned long long)max_size, (unsigned long long)seed,
		 (unsigned long long)mallocs, (unsigned long long)frees, secs,
		 wl_rate((double)(mallocs + frees), secs));
	return 0;
}
