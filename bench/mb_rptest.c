/*
 * mb_rptest: rpmalloc-benchmark style mixed workload (random sizes with a
 * linear fall-off, a slot array per thread, periodic cross-thread frees).
 *
 * Modelled on the published description of rptest, mimalloc-bench's
 * modified version of rpmalloc-benchmark (mimalloc-bench README: "rptest:
 * modified version of the rpmalloc-benchmark suite"; rpmalloc's
 * BENCHMARKS.md describes the program: each thread runs a number of loops
 * over an array of block slots; every loop frees a number of blocks
 * scattered over the array, then allocates as many into scattered slots
 * (freeing any block already there); every `cross-thread rate' loops it
 * allocates a set of blocks and hands them to another thread to free; sizes
 * are random in [min, max] with an even, linear or exponential fall-off;
 * the loop sequence is run several times, the first times with a full free
 * of all blocks in between; it reports memory operations per CPU second).
 * This is an independent implementation written for tidemalloc from that
 * description only: no code of rpmalloc-benchmark or mimalloc-bench is
 * used.
 *
 * What it measures: thread-local malloc/free throughput over a wide size
 * range (16 B to 16 KB, mostly small), with a live set that is partly
 * replaced every loop, a steady trickle of cross-thread frees, and whole
 * working sets torn down and rebuilt between rounds.
 *
 * Each of `threads' threads owns an array of `blocks' slots and runs
 * `rounds' rounds of `loops' loops.  A loop: (1) free the blocks that the
 * previous thread handed over; (2) pick `ops' random slots and free the
 * block in each (if any); (3) pick `ops' random slots and put a new block in
 * each, freeing the block it replaces; (4) every `xrate' loops, allocate
 * `ops' more blocks and hand them to the next thread (t -> t+1 mod T)
 * through a lock-free single-producer/single-consumer ring, which frees
 * them.  After each of the first half of the rounds the thread frees every
 * block in its array (a full free); in the later rounds the blocks stay
 * alive from one round into the next.  Sizes are in min..max with a linear
 * fall-off (density proportional to max - size: the smaller of two uniform
 * draws).  Every block is stamped when allocated and checked before it is
 * freed, by whichever thread frees it.  With threads=1 (or xrate=0) there
 * are no cross-thread frees.
 *
 * Slots and sizes depend only on the seed and the thread number; only the
 * interleaving of the hand-offs depends on the scheduler.
 *
 * Output (one line):
 *   mb_rptest: threads=2 rounds=4 loops=... blocks=1000 ops=100 xrate=2
 *              min=16 max=16000 seed=0x... mallocs=... frees=...
 *              remote_frees=... cpu_seconds=... ops_per_cpu_sec=...
 *              seconds=... ops_per_sec=...
 * ops_per_sec = (mallocs + frees) / wall seconds (comparable with the other
 * workloads); ops_per_cpu_sec = the same operations per CPU second of the
 * process (the published benchmark's figure).  Both are timed from the
 * moment all threads are released until the last one has finished.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "workload.h"

static const char *const PROG = "mb_rptest";

#define RING_CAP 4096u		/* entries per ring, a power of two */
#define MAX_THREADS 64u

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t mallocs, frees, remote_frees;
	uint64_t head_cache;	/* of the ring this thread pushes to */
	void **slots;
} __attribute__((aligned(64)));

static unsigned nthreads;
static uint64_t rounds, loops, nblocks, ops, xrate, min_size, max_size,
	seed;
static struct wl_ring *rings;	/* rings[t]: blocks from thread t-1 (mod T) */
static struct worker *workers;
static pthread_barrier_t start_barrier;
static _Atomic unsigned producers_done;

/* Linear fall-off in min..max: min of two uniform draws. */
static size_t pick_size(uint64_t *rng)
{
	uint64_t span = max_size - min_size + 1;
	uint64_t a = wl_below(rng, span), b = wl_below(rng, span);

	return (size_t)(min_size + (a < b ? a : b));
}

static void *new_block(struct worker *w)
{
	void *p = wl_new_block(PROG, pick_size(&w->rng));

	w->mallocs++;
	return p;
}

static void free_block(struct worker *w, void *p)
{
	wl_free_block(PROG, p, max_size);
	w->frees++;
}

static void free_handed(void *p, void *w)
{
	free_block(w, p);
}

/* Free every block waiting in w's incoming ring. */
static void drain(struct worker *w)
{
	w->remote_frees += wl_ring_drain(&rings[w->id], free_handed, w);
}

/* Hand p to the next thread; waits (draining, yielding) while full. */
static void push(struct worker *w, void *p)
{
	while (!wl_ring_put(&rings[(w->id + 1) % nthreads], &w->head_cache,
			    p)) {
		drain(w);
		sched_yield();
	}
}

static void free_all_slots(struct worker *w)
{
	for (uint64_t k = 0; k < nblocks; k++) {
		if (w->slots[k] != NULL) {
			free_block(w, w->slots[k]);
			w->slots[k] = NULL;
		}
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;
	int cross = nthreads > 1 && xrate > 0;

	pthread_barrier_wait(&start_barrier);

	for (uint64_t round = 0; round < rounds; round++) {
		for (uint64_t loop = 0; loop < loops; loop++) {
			if (cross)
				drain(w);
			for (uint64_t k = 0; k < ops; k++) {
				size_t s = (size_t)wl_below(&w->rng, nblocks);
				if (w->slots[s] != NULL) {
					free_block(w, w->slots[s]);
					w->slots[s] = NULL;
				}
			}
			for (uint64_t k = 0; k < ops; k++) {
				size_t s = (size_t)wl_below(&w->rng, nblocks);
				void *p = new_block(w);
				if (w->slots[s] != NULL)
					free_block(w, w->slots[s]);
				w->slots[s] = p;
			}
			if (cross && loop % xrate == xrate - 1)
				for (uint64_t k = 0; k < ops; k++)
					push(w, new_block(w));
		}
		if (round < rounds / 2)
			free_all_slots(w);	/* full free between rounds */
	}
	free_all_slots(w);

	atomic_fetch_add_explicit(&producers_done, 1, memory_order_acq_rel);
	while (atomic_load_explicit(&producers_done, memory_order_acquire) <
	       nthreads) {
		drain(w);
		sched_yield();
	}
	drain(w);	/* nothing more will be pushed */
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t threads = 2;

	rounds = 4;
	loops = 5000;
	nblocks = 1000;
	ops = 100;
	xrate = 2;
	min_size = 16;
	max_size = 16000;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &threads, 1, MAX_THREADS, "number of threads", 0, 0 },
		{ "rounds", &rounds, 1, 1u << 20,
		  "rounds (the first half end with a full free)", 0, 0 },
		{ "loops", &loops, 1, UINT64_C(1) << 32, "loops per round", 0, 0 },
		{ "blocks", &nblocks, 1, UINT64_C(1) << 24,
		  "block slots per thread", 0, 0 },
		{ "ops", &ops, 1, RING_CAP / 2,
		  "frees, allocations (and hand-offs) per loop", 0, 0 },
		{ "xrate", &xrate, 0, UINT64_C(1) << 32,
		  "hand ops blocks to the next thread every xrate loops "
		  "(0: never)", 0, 0 },
		{ "min", &min_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "smallest block size", 0, 0 },
		{ "max", &max_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "largest block size (linear fall-off)", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "rptest style: random-size slot churn per thread with "
		 "periodic cross-thread frees.", argc, argv, opts,
		 WL_NOPTS(opts));
	if (max_size < min_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "max must be >= min");
	nthreads = (unsigned)threads;

	rings = wl_rings_new(PROG, nthreads, RING_CAP);
	workers = wl_map(PROG, sizeof(*workers) * nthreads);
	for (unsigned t = 0; t < nthreads; t++) {
		workers[t].id = t;
		workers[t].rng = wl_seed(seed, t);
		workers[t].slots = wl_map(PROG, sizeof(void *) * nblocks);
	}

	double cpu;
	double secs = WL_TIMED_RUN(PROG, &start_barrier, 0, run, workers,
				   nthreads, &cpu);

	uint64_t mallocs = WL_SUM(workers, nthreads, mallocs);
	uint64_t frees = WL_SUM(workers, nthreads, frees);
	uint64_t remote = WL_SUM(workers, nthreads, remote_frees);
	wl_check_counts(PROG, mallocs, frees, 1);

	double nops = (double)(mallocs + frees);
	WL_PRINT("%s: threads=%u rounds=%llu loops=%llu blocks=%llu ops=%llu "
		 "xrate=%llu min=%llu max=%llu seed=0x%llx mallocs=%llu "
		 "frees=%llu remote_frees=%llu cpu_seconds=%.6f "
		 "ops_per_cpu_sec=%.0f seconds=%.6f ops_per_sec=%.0f\n",
		 PROG, nthreads, (unsigned long long)rounds,
		 (unsigned long long)loops, (unsigned long long)nblocks,
		 (unsigned long long)ops, (unsigned long long)xrate,
		 (unsigned long long)min_size, (unsigned long long)max_size,
		 (unsigned long long)seed, (unsigned long long)mallocs,
		 (unsigned long long)frees, (unsigned long long)remote, cpu,
		 wl_rate(nops, cpu), secs, wl_rate(nops, secs));
	return 0;
}
