/*
 * burst_idle: a large allocation burst, then idle periods; measures how much
 * memory the allocator gives back, and when.
 *
 * The sizes are drawn before anything is timed: thread t draws sizes from
 * its own stream until it has burst_mb/threads MiB.  The mix is by count
 * (about a quarter of the bytes each):
 *   96.67%  16..256 B     3.11%  257 B..8 KiB
 *    0.20%  8..128 KiB    0.02%  128 KiB..1 MiB
 * A random permutation of all the blocks (from the seed) fixes the order in
 * which they are freed: the first (100 - keep_pct)% of it in the first free,
 * the rest in the second.  Each free phase is split evenly among the
 * threads, so most blocks are freed by a thread other than their maker.
 *
 * Phases (worker threads stay alive until after idle2_end, blocked on a
 * barrier while the main thread sleeps, so thread exit does not flush their
 * caches during the measurement):
 *   start            before the burst (the bookkeeping arrays are set up)
 *   after_burst      every thread has made and stamped its blocks (each block
 *                    has a byte written in every 4 KiB, so it is resident)
 *   after_free_most  all but keep_pct% freed, in random order
 *   idle1_end        after sleeping idle_ms
 *   after_free_rest  the rest freed
 *   idle2_end        after sleeping idle_ms again
 * At each phase one line goes to stdout:
 *   burst_idle: phase=<name> t_ms=<ms since start> rss_kb=<VmRSS>
 * and at the end the summary:
 *   burst_idle: ops_per_sec=... burst_mb=... threads=... keep_pct=...
 *               idle_ms=... seed=0x... blocks=... kept=... seconds=...
 *               burst_s=... free_most_s=... free_rest_s=...
 * ops_per_sec = (mallocs + frees) / (time of the burst and the two frees;
 * the idle periods do not count).  VmRSS is read from /proc/self/status with
 * open/read into a stack buffer.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "burst_idle";

#define MAX_THREADS 64u
#define MAX_BLOCK (1u << 20)

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t first, count;	/* its blocks: blk[first .. first+count) */
} __attribute__((aligned(64)));

static unsigned nthreads;
static uint64_t nblocks, nkept;
static uint32_t *size_of;	/* per block, drawn up front */
static void **blk;		/* per block */
static uint32_t *order;		/* free order: a permutation of blocks */
static pthread_barrier_t barrier;

static uint64_t size_min, size_max; /* both 0: the mix above */

static size_t draw_size(uint64_t *rng)
{
	if (size_max)
		return wl_range(rng, size_min, size_max);
	uint64_t u = wl_below(rng, 1000000);

	if (u < 966700)
		return wl_range(rng, 16, 256);
	if (u < 997800)
		return wl_range(rng, 257, 8192);
	if (u < 999800)
		return wl_range(rng, 8193, 131072);
	return wl_range(rng, 131073, MAX_BLOCK);
}

/* Free order[lo..hi) split evenly: this thread's part. */
static void free_part(unsigned id, uint64_t lo, uint64_t hi)
{
	uint64_t n = hi - lo;
	uint64_t a = lo + n * id / nthreads, b = lo + n * (id + 1) / nthreads;

	for (uint64_t i = a; i < b; i++) {
		void *p = blk[order[i]];
		size_t sz = wl_check(PROG, p, MAX_BLOCK);
		if (sz != size_of[order[i]])
			wl_corrupt(PROG, p, "size does not match");
		free(p);
		blk[order[i]] = NULL;
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(&barrier);		/* go: burst */
	for (uint64_t i = w->first; i < w->first + w->count; i++) {
		size_t n = size_of[i];
		void *p = malloc(n);
		if (p == NULL)
			wl_oom(PROG, n);
		wl_fill(p, n);
		blk[i] = p;
	}
	pthread_barrier_wait(&barrier);		/* burst done */
	pthread_barrier_wait(&barrier);		/* go: free most */
	free_part(w->id, 0, nblocks - nkept);
	pthread_barrier_wait(&barrier);		/* free most done */
	pthread_barrier_wait(&barrier);		/* go: free rest (after idle) */
	free_part(w->id, nblocks - nkept, nblocks);
	pthread_barrier_wait(&barrier);		/* free rest done */
	pthread_barrier_wait(&barrier);		/* second idle over: exit */
	return NULL;
}

static double t_start;

int main(int argc, char **argv)
{
	uint64_t threads = 2, burst_mb = 300, keep_pct = 10, idle_ms = 1500,
		 seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &threads, 1, MAX_THREADS, "number of threads", 0, 0 },
		{ "burst_mb", &burst_mb, 1, 16384,
		  "MiB allocated in the burst (all threads)", 0, 0 },
		{ "keep_pct", &keep_pct, 0, 100,
		  "percent of the blocks freed only after the first idle", 0, 0 },
		{ "idle_ms", &idle_ms, 0, 3600000,
		  "length of each idle period in ms", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
		{ "min", &size_min, 0, MAX_BLOCK,
		  "with max: sizes uniform in min..max instead of the mix", 0, 0 },
		{ "max", &size_max, 0, MAX_BLOCK,
		  "largest size (0: the mix)", 0, 0 },
	};
	wl_parse(PROG, "Allocate a burst, free most of it, idle, free the "
		 "rest, idle; prints VmRSS at each phase.", argc, argv, opts,
		 WL_NOPTS(opts));
	nthreads = (unsigned)threads;
	if (size_max && (size_min < 16 || size_min > size_max))
		wl_usage(PROG, "", opts, WL_NOPTS(opts),
			 "min must be in 16..max when max is given");
	t_start = wl_now();

	/* Draw every size up front (bookkeeping is mmap'ed, not malloc'ed).
	 * The bound on the number of blocks: every block is >= 16 bytes. */
	uint64_t total = burst_mb << 20;
	uint64_t bound = total / 16 + nthreads;
	size_of = wl_map(PROG, bound * sizeof(*size_of));
	struct worker *workers = wl_map(PROG, sizeof(*workers) * nthreads);
	nblocks = 0;
	for (unsigned t = 0; t < nthreads; t++) {
		uint64_t rng = wl_seed(seed, t);
		uint64_t budget = total / nthreads + (t < total % nthreads);
		uint64_t got = 0;
		workers[t].id = t;
		workers[t].first = nblocks;
		while (got < budget) {
			size_t n = draw_size(&rng);
			size_of[nblocks++] = (uint32_t)n;
			got += n;
		}
		workers[t].count = nblocks - workers[t].first;
	}
	nkept = nblocks * keep_pct / 100;
	blk = wl_map(PROG, nblocks * sizeof(*blk));
	/* Make the bookkeeping resident now, so that the RSS deltas between
	 * the phases are the heap's alone. */
	memset(blk, 0, nblocks * sizeof(*blk));
	order = wl_map(PROG, nblocks * sizeof(*order));
	uint64_t rng = wl_seed(seed, UINT64_C(1) << 32);
	wl_permutation(&rng, order, nblocks);

	pthread_barrier_init(&barrier, NULL, nthreads + 1);
	for (unsigned t = 0; t < nthreads; t++) {
		int e = pthread_create(&workers[t].tid, NULL, run, &workers[t]);
		if (e != 0) {
			fprintf(stderr, "burst_idle: pthread_create: %s\n",
				strerror(e));
			return 1;
		}
	}

	double a, burst_s, most_s, rest_s;

	wl_phase(PROG, t_start, "start");
	a = wl_now();
	pthread_barrier_wait(&barrier);		/* go: burst */
	pthread_barrier_wait(&barrier);		/* burst done */
	burst_s = wl_now() - a;
	wl_phase(PROG, t_start, "after_burst");

	a = wl_now();
	pthread_barrier_wait(&barrier);		/* go: free most */
	pthread_barrier_wait(&barrier);		/* free most done */
	most_s = wl_now() - a;
	wl_phase(PROG, t_start, "after_free_most");

	wl_sleep_ms(idle_ms);
	wl_phase(PROG, t_start, "idle1_end");

	a = wl_now();
	pthread_barrier_wait(&barrier);		/* go: free rest */
	pthread_barrier_wait(&barrier);		/* free rest done */
	rest_s = wl_now() - a;
	wl_phase(PROG, t_start, "after_free_rest");

	wl_sleep_ms(idle_ms);
	wl_phase(PROG, t_start, "idle2_end");

	pthread_barrier_wait(&barrier);		/* let the workers exit */
	for (unsigned t = 0; t < nthreads; t++)
		pthread_join(workers[t].tid, NULL);

	double secs = burst_s + most_s + rest_s;
	WL_PRINT("burst_idle: ops_per_sec=%.0f burst_mb=%llu threads=%u "
		 "keep_pct=%llu idle_ms=%llu seed=0x%llx blocks=%llu "
		 "kept=%llu seconds=%.6f burst_s=%.6f free_most_s=%.6f "
		 "free_rest_s=%.6f\n",
		 secs > 0 ? (double)(2 * nblocks) / secs : 0.0,
		 (unsigned long long)burst_mb, nthreads,
		 (unsigned long long)keep_pct, (unsigned long long)idle_ms,
		 (unsigned long long)seed, (unsigned long long)nblocks,
		 (unsigned long long)nkept, secs, burst_s, most_s, rest_s);
	return 0;
}
