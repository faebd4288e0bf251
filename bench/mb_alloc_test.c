/*
 * mb_alloc_test: replace blocks of a large per-thread array, sizes from a
 * Pareto-like (heavy toward small) law, with the memory really written.
 *
 * Modelled on the published description of "alloc-test" in mimalloc-bench
 * (the community allocator benchmark suite; "alloc-test1" runs one thread,
 * "alloc-testN" one per core), the allocator test of OLogN Technologies
 * (ITHare.com, "Testing Memory Allocators ... While Trying to Simulate
 * Real-World Loads"): it simulates an intensive allocation load with a
 * Pareto size distribution, objects up to 1 KiB, many allocations per
 * thread, and it insists on what that article says most allocator tests
 * lack: non-uniform sizes, non-uniform lifetimes and actually touching the
 * allocated memory.  This is an independent implementation written for
 * tidemalloc from those descriptions; it shares no code with alloc-test or
 * mimalloc-bench.
 *
 * Each of T threads owns an array of `live' slots, filled before the clock
 * starts.  Then it runs `ops' steps: pick a slot, check and free its block,
 * malloc a new one, write all of it, and store it in the slot.
 *  - Sizes: an octave min*2^o .. min*2^(o+1)-1 is chosen uniformly, then a
 *    size uniformly inside it (a size past max is drawn again), so the
 *    density falls as 1/size: every octave weighs the same, so there are
 *    many small blocks and few large ones (8..1023 bytes, a few of 1024).
 *    With large=L, L per mille of the blocks instead get a size uniform in
 *    max+1..largemax (default 0: the published test stays under 1 KiB).
 *  - Lifetimes: the slot is floor(a*b/live) for a, b uniform in 0..live-1,
 *    so low slots are replaced often (short-lived blocks) and high slots
 *    rarely (long-lived ones), instead of a uniform choice.
 *  - Access: every new block is memset with a byte derived from its size,
 *    then (from 16 bytes) gets the workload.h header word and last byte;
 *    before a block is freed its header, last byte and a byte in its middle
 *    (its first and last byte if it is smaller) are verified.
 * After the clock stops every slot is checked and freed.
 *
 * The sizes and slots depend only on the seed and the thread number.
 *
 * Output (one line):
 *   alloc-test: threads=1 ops=... live=... min=8 max=1024 large=0
 *               largemax=32768 seed=0x... mallocs=... frees=... seconds=...
 *               ops_per_sec=...
 * ops_per_sec = (mallocs + frees) / seconds over the timed steps.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "alloc-test";

#define MAX_THREADS 256u

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t mallocs, frees;
	void **slot;
	uint32_t *size;		/* size of the block in each slot */
} __attribute__((aligned(64)));

static unsigned nthreads;
static uint64_t ops_per_thread, live, min_size, max_size, large_pm,
	large_max, seed;
static unsigned octaves;	/* octaves 0..octaves-1 start at <= max */
static pthread_barrier_t barrier;

static inline unsigned char fill_byte(size_t n)
{
	return (unsigned char)(n ^ (n >> 8) ^ 0xc3);
}

static size_t draw_size(uint64_t *rng)
{
	uint64_t r = wl_rand(rng);

	if (large_pm != 0 && wl_below(rng, 1000) < large_pm)
		return wl_range(rng, max_size + 1, large_max);
	for (;;) {
		unsigned o = (unsigned)(((r >> 32) * octaves) >> 32);
		size_t lo = (size_t)min_size << o;
		size_t n = lo + (size_t)(((r & 0xffffffffu) * lo) >> 32);
		if (n <= max_size)
			return n;
		r = wl_rand(rng);	/* past max in the last octave */
	}
}

static inline size_t draw_slot(uint64_t *rng)
{
	uint64_t r = wl_rand(rng);
	uint64_t a = ((r >> 32) * live) >> 32;
	uint64_t b = ((r & 0xffffffffu) * live) >> 32;

	return (size_t)(a * b / live);
}

/* Malloc a block for slot k and write all of it. */
static void new_block(struct worker *w, size_t k)
{
	size_t n = draw_size(&w->rng);
	unsigned char *p = wl_xmalloc(PROG, n);

	memset(p, fill_byte(n), n);
	if (n >= WL_MIN_SIZE)
		wl_fill(p, n);	/* header word, last byte (and page bytes) */
	w->slot[k] = p;
	w->size[k] = (uint32_t)n;
}

/* Verify the block in slot k before it is freed. */
static void check_block(const struct worker *w, size_t k)
{
	const unsigned char *p = w->slot[k];
	size_t n = w->size[k];

	if (p == NULL)
		wl_corrupt(PROG, p, "null pointer in a slot");
	if (n < WL_MIN_SIZE) {
		if (p[0] != fill_byte(n) || p[n - 1] != fill_byte(n))
			wl_corrupt(PROG, p, "bad bytes in a small block");
		return;
	}
	if (wl_check(PROG, p, large_max) != n)
		wl_corrupt(PROG, p, "size in header differs");
	size_t mid = (n / 2) | 1;	/* odd: never a wl_fill page byte */
	if (mid < n - 1 && p[mid] != fill_byte(n))
		wl_corrupt(PROG, p, "bad byte in the middle");
}

static void *run(void *arg)
{
	struct worker *w = arg;

	/* Fill the array (not timed). */
	for (uint64_t k = 0; k < live; k++)
		new_block(w, k);
	pthread_barrier_wait(&barrier);	/* filled */
	pthread_barrier_wait(&barrier);	/* clock started */

	for (uint64_t i = 0; i < ops_per_thread; i++) {
		size_t k = draw_slot(&w->rng);
		check_block(w, k);
		free(w->slot[k]);
		w->frees++;
		new_block(w, k);
		w->mallocs++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t threads = 1;

	ops_per_thread = 15000000;
	live = 50000;
	min_size = 8;
	max_size = 1024;
	large_pm = 0;
	large_max = 32768;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &threads, 1, MAX_THREADS,
		  "number of threads (alloc-test1: 1, alloc-testN: cores)",
		  0, 0 },
		{ "ops", &ops_per_thread, 1, UINT64_C(1) << 40,
		  "replacements (free + malloc) per thread", 0, 0 },
		{ "live", &live, 1, UINT64_C(1) << 31,
		  "live blocks per thread", 0, 0 },
		{ "min", &min_size, 1, WL_MAX_SIZE, "smallest block size", 0, 0 },
		{ "max", &max_size, 1, WL_MAX_SIZE,
		  "largest block size of the 1/size law", 0, 0 },
		{ "large", &large_pm, 0, 1000,
		  "per mille of blocks sized max+1..largemax", 0, 0 },
		{ "largemax", &large_max, WL_MIN_SIZE, WL_MAX_SIZE,
		  "largest size of those large blocks", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Threads replace blocks of a private array; sizes "
		 "~ 1/size, skewed lifetimes, memory written (alloc-test "
		 "style).", argc, argv, opts, WL_NOPTS(opts));
	if (max_size < min_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "max must be >= min");
	if (large_pm != 0 && large_max <= max_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts),
			 "largemax must be > max when large > 0");
	if (large_max < max_size)
		large_max = max_size;	/* bound for wl_check */
	nthreads = (unsigned)threads;
	octaves = 0;
	while (octaves < 63 && (min_size << octaves) <= max_size)
		octaves++;

	struct worker *workers = wl_map(PROG, sizeof(*workers) * nthreads);
	for (unsigned t = 0; t < nthreads; t++) {
		workers[t].id = t;
		workers[t].rng = wl_seed(seed, t);
		workers[t].slot = wl_map(PROG, sizeof(void *) * live);
		workers[t].size = wl_map(PROG, sizeof(uint32_t) * live);
	}

	/* The clock starts once every array is filled ("go": the second
	 * barrier round). */
	double secs = WL_TIMED_RUN(PROG, &barrier, 1, run, workers, nthreads,
				   NULL);

	for (unsigned t = 0; t < nthreads; t++) {
		struct worker *w = &workers[t];
		for (uint64_t k = 0; k < live; k++) {
			check_block(w, k);
			free(w->slot[k]);
			w->slot[k] = NULL;
		}
	}
	uint64_t mallocs = WL_SUM(workers, nthreads, mallocs);
	uint64_t frees = WL_SUM(workers, nthreads, frees);
	wl_check_counts(PROG, mallocs, frees,
			mallocs == ops_per_thread * nthreads);

	WL_PRINT("%s: threads=%u ops=%llu live=%llu min=%llu max=%llu "
		 "large=%llu largemax=%llu seed=0x%llx mallocs=%llu frees=%llu "
		 "seconds=%.6f ops_per_sec=%.0f\n",
		 PROG, nthreads, (unsigned long long)ops_per_thread,
		 (unsigned long long)live, (unsigned long long)min_size,
		 (unsigned long long)max_size, (unsigned long long)large_pm,
		 (unsigned long long)large_max, (unsigned long long)seed,
		 (unsigned long long)mallocs, (unsigned long long)frees, secs,
		 wl_rate((double)(mallocs + frees), secs));
	return 0;
}
