/*
 * xthread: producer/consumer frees across threads (servers, pipelines).
 *
 * T threads each run `ops' steps.  A step mallocs a block (size uniform in
 * min..max), stamps it, and puts it in a random slot of the thread's window
 * of `live' blocks; the block it displaces is retired: with probability
 * share% it is handed to another thread (chosen at random) through a
 * lock-free single-producer/single-consumer ring, one ring per ordered
 * (producer, consumer) pair, and that thread checks and frees it; otherwise
 * it is checked and freed locally.  Every thread drains its incoming rings
 * every few steps, and whenever a ring it pushes to is full (it yields until
 * there is room, draining meanwhile, so no block is ever dropped or freed by
 * its maker instead).  When a thread has made its blocks it frees its window
 * and keeps draining until every producer is done.
 *
 * The sizes, slots, hand-off decisions and targets depend only on the seed
 * and the thread number; only the interleaving depends on the scheduler.
 *
 * Output (one line):
 *   xthread: threads=4 share=50 ops=... live=... min=16 max=1024 seed=0x...
 *            mallocs=... frees=... remote_frees=... seconds=... ops_per_sec=...
 * ops_per_sec = (mallocs + frees) / seconds, timed from the moment all
 * threads are released until the last one has finished.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "xthread";

#define RING_CAP 1024u		/* entries per ring, a power of two */
#define DRAIN_EVERY 16u		/* steps between two drains */
#define MAX_THREADS 64u

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t mallocs, frees, remote_frees;
	uint64_t head_cache[MAX_THREADS];	/* of rings id -> j */
	void **window;
} __attribute__((aligned(64)));

static unsigned nthreads;
static uint64_t share, ops_per_thread, live, min_size, max_size, seed;
static struct wl_ring *rings;		/* rings[src * nthreads + dst] */
static struct worker *workers;
static pthread_barrier_t start_barrier;
static _Atomic unsigned producers_done;

static inline struct wl_ring *ring_at(unsigned src, unsigned dst)
{
	return &rings[(size_t)src * nthreads + dst];
}

static void free_handed(void *p, void *ctx)
{
	(void)ctx;
	wl_free_block(PROG, p, max_size);
}

/* Free every block waiting in the rings addressed to w. */
static void drain(struct worker *w)
{
	for (unsigned src = 0; src < nthreads; src++) {
		if (src == w->id)
			continue;
		uint64_t n = wl_ring_drain(ring_at(src, w->id), free_handed,
					   NULL);
		w->frees += n;
		w->remote_frees += n;
	}
}

/* Hand p to thread dst; waits (draining, yielding) while the ring is full. */
static void push(struct worker *w, unsigned dst, void *p)
{
	while (!wl_ring_put(ring_at(w->id, dst), &w->head_cache[dst], p)) {
		drain(w);
		sched_yield();
	}
}

static void retire(struct worker *w, void *p)
{
	if (nthreads > 1 && wl_below(&w->rng, 100) < share) {
		unsigned dst = (unsigned)wl_below(&w->rng, nthreads - 1);
		if (dst >= w->id)
			dst++;
		push(w, dst, p);
	} else {
		wl_free_block(PROG, p, max_size);
		w->frees++;
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(&start_barrier);

	for (uint64_t i = 0; i < ops_per_thread; i++) {
		size_t n = wl_range(&w->rng, min_size, max_size);
		void *p = wl_new_block(PROG, n);
		w->mallocs++;

		size_t k = (size_t)wl_below(&w->rng, live);
		void *old = w->window[k];
		w->window[k] = p;
		if (old != NULL)
			retire(w, old);
		if ((i & (DRAIN_EVERY - 1)) == DRAIN_EVERY - 1)
			drain(w);
	}
	for (uint64_t k = 0; k < live; k++) {
		void *p = w->window[k];
		if (p != NULL) {
			wl_free_block(PROG, p, max_size);
			w->frees++;
			w->window[k] = NULL;
		}
	}

	atomic_fetch_add_explicit(&producers_done, 1, memory_order_acq_rel);
	while (atomic_load_explicit(&producers_done, memory_order_acquire) <
	       nthreads) {
		drain(w);
		sched_yield();
	}
	/* Every producer is done: nothing more will be pushed. */
	drain(w);
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t threads = 4;

	share = 50;
	ops_per_thread = 6000000;
	live = 1000;
	min_size = 16;
	max_size = 1024;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &threads, 1, MAX_THREADS, "number of threads", 0, 0 },
		{ "share", &share, 0, 100,
		  "percent of frees handed to another thread", 0, 0 },
		{ "ops", &ops_per_thread, 1, UINT64_C(1) << 40,
		  "mallocs per thread", 0, 0 },
		{ "live", &live, 1, UINT64_C(1) << 24,
		  "live blocks per thread (window)", 0, 0 },
		{ "min", &min_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "smallest block size", 0, 0 },
		{ "max", &max_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "largest block size", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Threads allocate; share% of the blocks are freed by "
		 "another thread (SPSC rings).", argc, argv, opts,
		 WL_NOPTS(opts));
	if (max_size < min_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "max must be >= min");
	nthreads = (unsigned)threads;

	rings = wl_rings_new(PROG, (size_t)nthreads * nthreads, RING_CAP);
	workers = wl_map(PROG, sizeof(*workers) * nthreads);
	for (unsigned t = 0; t < nthreads; t++) {
		workers[t].id = t;
		workers[t].rng = wl_seed(seed, t);
		workers[t].window = wl_map(PROG, sizeof(void *) * live);
	}

	double secs = WL_TIMED_RUN(PROG, &start_barrier, 0, run, workers,
				   nthreads, NULL);

	uint64_t mallocs = WL_SUM(workers, nthreads, mallocs);
	uint64_t frees = WL_SUM(workers, nthreads, frees);
	uint64_t remote = WL_SUM(workers, nthreads, remote_frees);
	wl_check_counts(PROG, mallocs, frees, 1);

	WL_PRINT("xthread: threads=%u share=%llu ops=%llu live=%llu min=%llu "
		 "max=%llu seed=0x%llx mallocs=%llu frees=%llu "
		 "remote_frees=%llu seconds=%.6f ops_per_sec=%.0f\n",
		 nthreads, (unsigned long long)share,
		 (unsigned long long)ops_per_thread, (unsigned long long)live,
		 (unsigned long long)min_size, (unsigned long long)max_size,
		 (unsigned long long)seed, (unsigned long long)mallocs,
		 (unsigned long long)frees, (unsigned long long)remote, secs,
		 wl_rate((double)(mallocs + frees), secs));
	return 0;
}
