/*
 * larson: a larson-style server simulation.
 *
 * A shared pool of `blocks' slots (atomic pointers).  Before the clock
 * starts, thread t fills the slots t, t+T, t+2T, ... with stamped blocks.
 * Then each thread runs `ops' steps: pick a random slot, malloc a new block
 * of random size (uniform in min..max) and stamp it, atomically exchange it
 * with the slot's block, check the old block and free it.  Blocks therefore
 * die on threads other than the ones that made them, and the live set stays
 * at `blocks' blocks.  After the clock stops the main thread frees the pool.
 *
 * The sizes and slots each thread picks depend only on the seed and the
 * thread number; which block a thread frees depends on the interleaving.
 *
 * Output (one line):
 *   larson: threads=4 blocks=... ops=... min=16 max=1024 seed=0x...
 *           mallocs=... frees=... seconds=... ops_per_sec=...
 * ops_per_sec = (mallocs + frees) / seconds in the timed steps.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "larson";

#define MAX_THREADS 256u

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t mallocs, frees;
} __attribute__((aligned(64)));

static unsigned nthreads;
static uint64_t nblocks, ops_per_thread, min_size, max_size, seed;
static _Atomic(void *) *pool;
static pthread_barrier_t barrier;

static void *new_block(struct worker *w)
{
	return wl_new_block(PROG, wl_range(&w->rng, min_size, max_size));
}

static void *run(void *arg)
{
	struct worker *w = arg;

	/* Fill this thread's share of the pool (not timed). */
	for (uint64_t k = w->id; k < nblocks; k += nthreads)
		atomic_store_explicit(&pool[k], new_block(w),
				      memory_order_release);
	pthread_barrier_wait(&barrier);	/* pool full */
	pthread_barrier_wait(&barrier);	/* clock started */

	for (uint64_t i = 0; i < ops_per_thread; i++) {
		size_t k = (size_t)wl_below(&w->rng, nblocks);
		void *p = new_block(w);
		w->mallocs++;
		void *old = atomic_exchange_explicit(&pool[k], p,
						     memory_order_acq_rel);
		if (old != NULL) {
			wl_free_block(PROG, old, max_size);
			w->frees++;
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t threads = 4;

	nblocks = 10000;
	ops_per_thread = 12000000;
	min_size = 16;
	max_size = 1024;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &threads, 1, MAX_THREADS, "number of threads", 0, 0 },
		{ "blocks", &nblocks, 1, UINT64_C(1) << 26,
		  "slots in the shared pool", 0, 0 },
		{ "ops", &ops_per_thread, 1, UINT64_C(1) << 40,
		  "replacements per thread", 0, 0 },
		{ "min", &min_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "smallest block size", 0, 0 },
		{ "max", &max_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "largest block size", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Threads replace random blocks of a shared pool; "
		 "blocks die on other threads.", argc, argv, opts,
		 WL_NOPTS(opts));
	if (max_size < min_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "max must be >= min");
	nthreads = (unsigned)threads;

	pool = mmap(NULL, sizeof(*pool) * nblocks, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct worker *workers = mmap(NULL, sizeof(*workers) * nthreads,
				      PROT_READ | PROT_WRITE,
				      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pool == MAP_FAILED || workers == MAP_FAILED) {
		perror("larson: mmap");
		return 1;
	}
	for (unsigned t = 0; t < nthreads; t++) {
		workers[t].id = t;
		workers[t].rng = wl_seed(seed, t);
	}

	/* The clock starts once the pool is full ("go": the second barrier
	 * round). */
	double secs = WL_TIMED_RUN(PROG, &barrier, 1, run, workers, nthreads,
				   NULL);

	uint64_t mallocs = WL_SUM(workers, nthreads, mallocs);
	uint64_t frees = WL_SUM(workers, nthreads, frees);
	uint64_t left = 0;
	for (uint64_t k = 0; k < nblocks; k++) {
		void *p = atomic_load_explicit(&pool[k], memory_order_acquire);
		if (p != NULL) {
			wl_free_block(PROG, p, max_size);
			left++;
		}
	}
	if (left != nblocks || frees != mallocs) {
		fprintf(stderr, "larson: %llu blocks left in a pool of %llu, "
			"%llu mallocs, %llu frees\n", (unsigned long long)left,
			(unsigned long long)nblocks,
			(unsigned long long)mallocs, (unsigned long long)frees);
		return 1;
	}

	WL_PRINT("larson: threads=%u blocks=%llu ops=%llu min=%llu max=%llu "
		 "seed=0x%llx mallocs=%llu frees=%llu seconds=%.6f "
		 "ops_per_sec=%.0f\n",
		 nthreads, (unsigned long long)nblocks,
		 (unsigned long long)ops_per_thread,
		 (unsigned long long)min_size, (unsigned long long)max_size,
		 (unsigned long long)seed, (unsigned long long)mallocs,
		 (unsigned long long)frees, secs,
		 wl_rate((double)(mallocs + frees), secs));
	return 0;
}
