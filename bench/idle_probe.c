/*
 * idle_probe: a heap that was used and emptied, then a long idle period
 * with every thread alive and blocked.  bench/pager_cost.sh runs it with
 * tidemalloc preloaded and watches the pager thread from outside (its CPU
 * time and context switches during the idle period): what a background
 * pager costs a process that does nothing.
 *
 * `threads' worker threads together allocate `total_mb' MiB in blocks of
 * mixed sizes (by count: 90% 16..512 B, 9% 513 B..32 KiB, 0.9% 32 KiB..1 MiB,
 * 0.1% 1..4 MiB; about 3%, 16%, 53% and 28% of the bytes), each block
 * stamped with a byte in every 4 KiB so that it is resident, then each
 * frees all of its own blocks in a random order.  Then the workers block on
 * a barrier and the main thread sleeps `idle_ms'; only then are the workers
 * let go and joined.  Sizes and orders come from the seed only; the
 * bookkeeping is mmap'ed, not malloc'ed.
 *
 * Lines on stdout (flushed at once, so a watcher can follow them):
 *   idle_probe: phase=start t_ms=N rss_kb=N          before the workers start
 *   idle_probe: phase=after_alloc t_ms=N rss_kb=N    every block made
 *   idle_probe: phase=idle_start t_ms=N rss_kb=N     every block freed; idle
 *   idle_probe: phase=idle_end t_ms=N rss_kb=N       after sleeping idle_ms
 *   idle_probe: threads=N total_mb=N idle_ms=N seed=0x.. blocks=N bytes=N
 *               alloc_s=N free_s=N
 * VmRSS is read from /proc/self/status without malloc.  Not linked with
 * tidemalloc: LD_PRELOAD chooses the allocator.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "idle_probe";

#define MAX_THREADS 64u
#define MAX_BLOCK (4u << 20)

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t first, count;	/* its blocks: blk[first .. first+count) */
	uint64_t seed;
} __attribute__((aligned(64)));

static uint32_t *size_of;	/* per block, drawn up front */
static void **blk;		/* per block */
static uint32_t *order;		/* per worker, a permutation of its blocks */
static pthread_barrier_t barrier;

static size_t draw_size(uint64_t *rng)
{
	uint64_t u = wl_below(rng, 1000);

	if (u < 900)
		return wl_range(rng, 16, 512);
	if (u < 990)
		return wl_range(rng, 513, 32768);
	if (u < 999)
		return wl_range(rng, 32769, 1u << 20);
	return wl_range(rng, (1u << 20) + 1, MAX_BLOCK);
}

static void *run(void *arg)
{
	struct worker *w = arg;
	uint32_t *ord = order + w->first;

	pthread_barrier_wait(&barrier);		/* go: allocate */
	for (uint64_t i = w->first; i < w->first + w->count; i++) {
		size_t n = size_of[i];
		void *p = malloc(n);
		if (p == NULL)
			wl_oom(PROG, n);
		wl_fill(p, n);
		blk[i] = p;
	}
	pthread_barrier_wait(&barrier);		/* allocated */
	pthread_barrier_wait(&barrier);		/* go: free */
	for (uint64_t k = 0; k < w->count; k++) {
		uint64_t i = w->first + ord[k];
		size_t n = wl_check(PROG, blk[i], MAX_BLOCK);
		if (n != size_of[i])
			wl_corrupt(PROG, blk[i], "size does not match");
		free(blk[i]);
		blk[i] = NULL;
	}
	pthread_barrier_wait(&barrier);		/* freed */
	pthread_barrier_wait(&barrier);		/* idle over: exit */
	return NULL;
}

static double t_start;

int main(int argc, char **argv)
{
	uint64_t threads = 2, total_mb = 200, idle_ms = 10000, seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &threads, 1, MAX_THREADS, "number of worker threads", 0, 0 },
		{ "total_mb", &total_mb, 1, 16384,
		  "MiB allocated (all threads together)", 0, 0 },
		{ "idle_ms", &idle_ms, 0, 3600000,
		  "idle period after the frees, in ms", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Allocate and free a heap on worker threads, then idle "
		 "with the workers blocked; prints VmRSS at each phase.",
		 argc, argv, opts, WL_NOPTS(opts));
	unsigned nthreads = (unsigned)threads;
	t_start = wl_now();

	/* Sizes up front; every block is >= 16 bytes. */
	uint64_t total = total_mb << 20;
	uint64_t bound = total / 16 + nthreads;
	size_of = wl_map(PROG, bound * sizeof(*size_of));
	struct worker *workers = wl_map(PROG, sizeof(*workers) * nthreads);
	uint64_t nblocks = 0, bytes = 0;
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
		bytes += got;
	}
	blk = wl_map(PROG, nblocks * sizeof(*blk));
	memset(blk, 0, nblocks * sizeof(*blk));
	/* Each worker frees its own blocks in a random order. */
	order = wl_map(PROG, nblocks * sizeof(*order));
	for (unsigned t = 0; t < nthreads; t++) {
		uint64_t rng = wl_seed(seed, (UINT64_C(1) << 32) + t);
		wl_permutation(&rng, order + workers[t].first, workers[t].count);
	}

	pthread_barrier_init(&barrier, NULL, nthreads + 1);
	for (unsigned t = 0; t < nthreads; t++) {
		int e = pthread_create(&workers[t].tid, NULL, run, &workers[t]);
		if (e != 0) {
			fprintf(stderr, "idle_probe: pthread_create: %s\n",
				strerror(e));
			return 1;
		}
	}

	double a, alloc_s, free_s;

	wl_phase(PROG, t_start, "start");
	a = wl_now();
	pthread_barrier_wait(&barrier);		/* go: allocate */
	pthread_barrier_wait(&barrier);		/* allocated */
	alloc_s = wl_now() - a;
	wl_phase(PROG, t_start, "after_alloc");

	a = wl_now();
	pthread_barrier_wait(&barrier);		/* go: free */
	pthread_barrier_wait(&barrier);		/* freed */
	free_s = wl_now() - a;
	wl_phase(PROG, t_start, "idle_start");

	wl_sleep_ms(idle_ms);
	wl_phase(PROG, t_start, "idle_end");

	pthread_barrier_wait(&barrier);		/* let the workers exit */
	for (unsigned t = 0; t < nthreads; t++)
		pthread_join(workers[t].tid, NULL);

	WL_PRINT("idle_probe: threads=%u total_mb=%llu idle_ms=%llu seed=0x%llx "
		 "blocks=%llu bytes=%llu alloc_s=%.6f free_s=%.6f\n",
		 nthreads, (unsigned long long)total_mb,
		 (unsigned long long)idle_ms, (unsigned long long)seed,
		 (unsigned long long)nblocks, (unsigned long long)bytes,
		 alloc_s, free_s);
	return 0;
}
