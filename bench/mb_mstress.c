/*
 * mb_mstress: rounds of threads that allocate, share blocks through a
 * transfer array, die, and leave some blocks to the next round.
 *
 * Modelled on the published description of "mstress" in mimalloc-bench (the
 * community allocator benchmark suite), mimalloc's own stress test: it
 * "simulates real-world server-like allocation patterns, using N threads
 * with allocations in powers of 2 where objects can migrate between threads
 * and some have long life times.  Not all threads have equal workloads and
 * after each phase all threads are destroyed and new threads created where
 * some objects survive between phases"; the allocations are initialized and
 * read again at free, some fraction of them is extra large (and a few very
 * large), and the randomness is deterministic.  This is an independent
 * implementation written for tidemalloc from that description; it shares no
 * code with mimalloc or mimalloc-bench.
 *
 * `rounds' times, T threads are created and joined.  In round r, thread t
 * runs ops * (2 + ((t + r) mod 4)) / 4 steps (unequal workloads) over its
 * own window of `live' slots; its first `keep' slots start with the blocks
 * the previous round's thread t left behind.  A step picks a random slot:
 *   60%  replace: check and free the slot's block, malloc a new one;
 *   15%  drop:    check and free the slot's block (the slot stays empty);
 *   25%  swap:    atomically exchange the slot's block (a new one if the
 *                 slot is empty) with a random entry of the shared transfer
 *                 array of `transfers' entries; whatever comes back (made
 *                 by another thread, or in an earlier round) now belongs
 *                 to this thread, which frees or passes it on later.
 * When its steps are done the thread leaves the blocks of its first `keep'
 * slots for the next round, checks and frees the rest, and exits.  After
 * the last round the main thread checks and frees the survivors and the
 * transfer array (untimed).
 *
 * Sizes: a power of two 16 << e with e uniform in 0..7, then a size uniform
 * in [16 << e, 32 << e), i.e. 16..4095 bytes spread linearly over the powers
 * of two; 1% of the blocks are 32 times larger (up to 128 KiB) and 0.01% 512
 * times larger (up to 2 MiB).  Every block gets the workload.h stamp (header
 * word, a byte in every 4 KiB, last byte), verified before it is freed.
 *
 * Each thread's sizes, slots and choices depend only on the seed, the round
 * and the thread number (a size is drawn at every step, used or not); which
 * blocks come back from the transfer array depends on the interleaving, and
 * so, slightly, do the malloc and free counts (a swap from an empty slot
 * makes a new block).
 *
 * Output (one line):
 *   mstress: threads=2 rounds=10 ops=... live=... keep=... transfers=...
 *            seed=0x... mallocs=... frees=... seconds=... ops_per_sec=...
 * seconds is the wall time of all the rounds, thread creation and exit
 * included; ops_per_sec = (mallocs + frees made by the workers) / seconds
 * (frees= also counts the main thread's untimed final clean-up, so that it
 * equals mallocs).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "mstress";

#define MAX_THREADS 256u
#define MAX_BLOCK ((size_t)4095 * 512)	/* largest size draw_size makes */

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t steps;
	uint64_t mallocs, frees;	/* summed over the rounds */
	void **window;			/* live slots, reused by every round */
	void **survivors;		/* keep slots left for the next round */
} __attribute__((aligned(64)));

static uint64_t rounds, ops, live, keep, ntransfers, seed;
static _Atomic(void *) *transfer;

static size_t draw_size(uint64_t *rng)
{
	uint64_t r = wl_rand(rng);
	size_t base = (size_t)16 << (r & 7);
	size_t n = base + (size_t)((((r >> 3) & 0xffffffffu) * base) >> 32);
	uint64_t big = (r >> 40) % 10000;	/* 24 bits: fine as a draw */

	if (big == 0)
		n *= 512;
	else if (big <= 100)
		n *= 32;
	return n;
}

static void *new_block(struct worker *w, size_t n)
{
	void *p = wl_new_block(PROG, n);

	w->mallocs++;
	return p;
}

static void drop(struct worker *w, void *p)
{
	wl_free_block(PROG, p, MAX_BLOCK);
	w->frees++;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	void **win = w->window;

	/* Take over what this slot's thread of the previous round left. */
	for (uint64_t k = 0; k < keep; k++) {
		win[k] = w->survivors[k];
		w->survivors[k] = NULL;
	}
	for (uint64_t k = keep; k < live; k++)
		win[k] = NULL;

	for (uint64_t i = 0; i < w->steps; i++) {
		uint64_t r = wl_rand(&w->rng);
		size_t k = (size_t)(((r & 0xffffffffu) * live) >> 32);
		unsigned what = (unsigned)(((r >> 32) * 100) >> 32);
		size_t n = draw_size(&w->rng);	/* drawn whether used or not */

		if (what < 60) {
			if (win[k] != NULL)
				drop(w, win[k]);
			win[k] = new_block(w, n);
		} else if (what < 75) {
			if (win[k] != NULL)
				drop(w, win[k]);
			win[k] = NULL;
		} else {
			size_t j = (size_t)wl_below(&w->rng, ntransfers);
			void *p = win[k] != NULL ? win[k] : new_block(w, n);
			win[k] = atomic_exchange_explicit(&transfer[j], p,
							  memory_order_acq_rel);
		}
	}

	for (uint64_t k = 0; k < keep; k++)
		w->survivors[k] = win[k];
	for (uint64_t k = keep; k < live; k++) {
		if (win[k] != NULL)
			drop(w, win[k]);
		win[k] = NULL;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t threads = 2;

	rounds = 10;
	ops = 3000000;
	live = 2000;
	keep = 500;
	ntransfers = 1000;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &threads, 1, MAX_THREADS,
		  "threads per round", 0, 0 },
		{ "rounds", &rounds, 1, 1000000,
		  "rounds (threads created and joined each round)", 0, 0 },
		{ "ops", &ops, 1, UINT64_C(1) << 40,
		  "mean-ish steps per thread per round (x0.5..x1.25)", 0, 0 },
		{ "live", &live, 1, UINT64_C(1) << 26,
		  "window slots per thread", 0, 0 },
		{ "keep", &keep, 0, UINT64_C(1) << 26,
		  "slots whose blocks survive into the next round", 0, 0 },
		{ "transfers", &ntransfers, 1, UINT64_C(1) << 26,
		  "entries of the shared transfer array", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Rounds of threads with unequal work: power-of-two "
		 "sizes, blocks passed between threads, survivors across "
		 "rounds (mimalloc mstress style).", argc, argv, opts,
		 WL_NOPTS(opts));
	if (keep > live)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "keep must be <= live");
	unsigned nthreads = (unsigned)threads;

	transfer = wl_map(PROG, sizeof(*transfer) * ntransfers);
	struct worker *workers = wl_map(PROG, sizeof(*workers) * nthreads);
	for (unsigned t = 0; t < nthreads; t++) {
		workers[t].id = t;
		workers[t].window = wl_map(PROG, sizeof(void *) * live);
		workers[t].survivors = wl_map(PROG, sizeof(void *) *
					      (keep ? keep : 1));
	}

	double t0 = wl_now();
	for (uint64_t r = 0; r < rounds; r++) {
		for (unsigned t = 0; t < nthreads; t++) {
			struct worker *w = &workers[t];
			w->rng = wl_seed(seed, r * nthreads + t);
			w->steps = ops * (2 + ((t + r) & 3)) / 4;
			wl_spawn(PROG, &w->tid, run, w);
		}
		WL_JOIN_EACH(workers, nthreads);
	}
	double secs = wl_now() - t0;

	/* Clean up (untimed): the last round's survivors, the transfers. */
	uint64_t mallocs = WL_SUM(workers, nthreads, mallocs);
	uint64_t frees = WL_SUM(workers, nthreads, frees);
	uint64_t cleanup = 0;
	for (unsigned t = 0; t < nthreads; t++) {
		for (uint64_t k = 0; k < keep; k++) {
			void *p = workers[t].survivors[k];
			if (p != NULL) {
				wl_free_block(PROG, p, MAX_BLOCK);
				cleanup++;
			}
		}
	}
	for (uint64_t j = 0; j < ntransfers; j++) {
		void *p = atomic_load_explicit(&transfer[j],
					       memory_order_acquire);
		if (p != NULL) {
			wl_free_block(PROG, p, MAX_BLOCK);
			cleanup++;
		}
	}
	uint64_t timed_ops = mallocs + frees;
	frees += cleanup;
	wl_check_counts(PROG, mallocs, frees, 1);

	WL_PRINT("%s: threads=%u rounds=%llu ops=%llu live=%llu keep=%llu "
		 "transfers=%llu seed=0x%llx mallocs=%llu frees=%llu "
		 "seconds=%.6f ops_per_sec=%.0f\n",
		 PROG, nthreads, (unsigned long long)rounds,
		 (unsigned long long)ops, (unsigned long long)live,
		 (unsigned long long)keep, (unsigned long long)ntransfers,
		 (unsigned long long)seed, (unsigned long long)mallocs,
		 (unsigned long long)frees, secs,
		 wl_rate((double)timed_ops, secs));
	return 0;
}
