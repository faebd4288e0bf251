/*
 * mb_cache_scratch: passive false sharing (objects handed to a thread, then
 * recycled by it, must not share cache lines with other threads' objects).
 *
 * Modelled on the published description of cache-scratch, Emery Berger's
 * Hoard benchmark as run by mimalloc-bench (mimalloc-bench README:
 * "cache-scratch: ... to test for passive-false sharing of cache lines:
 * first some small objects are allocated and given to each thread; the
 * threads free that object and allocate immediately another one, and access
 * that repeatedly.  If an allocator allocates objects from different threads
 * close to each other this will lead to cache-line contention."; the Hoard
 * benchmarks README calls it "passive-false" after the Hoard paper (ASPLOS
 * 2000) and gives its parameters as threads, inner loop, object size and
 * iterations; mimalloc-bench runs it as cache-scratch1 with one thread and
 * cache-scratchN with one per core).  This is an independent implementation
 * written for tidemalloc from those descriptions only: no code of Hoard's
 * cache-scratch is used.
 *
 * What it measures: wall time of a write-heavy loop over freshly malloc'ed
 * small objects.  The allocator only decides where the objects go; if a
 * thread's objects end up on a cache line that another thread's objects
 * also use (because the thread freed a block the main thread had allocated
 * next to the other threads' blocks, and got it or its neighbours back),
 * every write bounces the line between cores and the run slows down by
 * a large factor.  With threads=1 there is no one to share with and the
 * figure is mostly malloc/free plus the writes (a baseline).
 *
 * The main thread mallocs `threads' objects of `size' bytes one after the
 * other (so a packing allocator puts them side by side), fills them, and
 * gives object t to worker t.  Worker t checks and frees that object, then
 * runs iters / threads iterations (the total work does not depend on the
 * thread count): malloc an object of `size' bytes, set every byte, then
 * `writes' times increment every byte of it (volatile accesses, so each is
 * a real load and store), check the final value of every byte, free it.
 * The byte values come from the seed and the worker number.
 *
 * Output (one line):
 *   mb_cache_scratch: threads=1 iters=... size=8 writes=... seed=0x...
 *                     mallocs=... frees=... byte_writes=... seconds=...
 *                     ops_per_sec=...
 * ops_per_sec = (mallocs + frees) / seconds (the published benchmark
 * reports only its time; the work per malloc is fixed by size and writes,
 * so this is proportional to 1 / time), timed from the moment the workers
 * are released (after the hand-over objects are made) until the last one
 * has finished.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "workload.h"

static const char *const PROG = "mb_cache_scratch";

#define MAX_THREADS 256u
#define MAX_OBJ_SIZE 65536u

struct worker {
	unsigned id;
	pthread_t tid;
	unsigned char *given;	/* made by the main thread */
	unsigned char salt;
	uint64_t iters;
	uint64_t mallocs, frees;
} __attribute__((aligned(64)));

static uint64_t nthreads, total_iters, obj_size, writes, seed;
static pthread_barrier_t start_barrier;

/* Keep the compiler from eliding a malloc/free pair around p. */
static inline void escape(void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

static void bad_byte(const unsigned char *p, uint64_t j)
	__attribute__((noreturn, cold));
static void bad_byte(const unsigned char *p, uint64_t j)
{
	fprintf(stderr, "%s: object %p: byte %llu has a wrong value\n", PROG,
		(const void *)p, (unsigned long long)j);
	fflush(stderr);
	exit(1);
}

static void *run(void *arg)
{
	struct worker *w = arg;
	const size_t n = (size_t)obj_size;

	pthread_barrier_wait(&start_barrier);

	/* The hand-over object: check the main thread's fill, free it. */
	for (size_t j = 0; j < n; j++)
		if (w->given[j] != (unsigned char)(w->salt ^ j))
			bad_byte(w->given, j);
	free(w->given);
	w->frees++;

	for (uint64_t i = 0; i < w->iters; i++) {
		unsigned char *p = wl_xmalloc(PROG, n);
		escape(p);
		volatile unsigned char *v = p;
		unsigned char base = (unsigned char)(w->salt + i);
		for (size_t j = 0; j < n; j++)
			v[j] = (unsigned char)(base + j);
		for (uint64_t r = 0; r < writes; r++)
			for (size_t j = 0; j < n; j++)
				v[j] = (unsigned char)(v[j] + 1);
		for (size_t j = 0; j < n; j++)
			if (v[j] != (unsigned char)(base + j + writes))
				bad_byte(p, j);
		free(p);
		w->mallocs++;
		w->frees++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	nthreads = 1;
	total_iters = 4000000;
	obj_size = 8;
	writes = 100;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &nthreads, 1, MAX_THREADS, "worker threads", 0, 0 },
		{ "iters", &total_iters, 1, UINT64_C(1) << 40,
		  "malloc/write/free iterations in all (split among the "
		  "threads)", 0, 0 },
		{ "size", &obj_size, 1, MAX_OBJ_SIZE, "object size in bytes",
		  0, 0 },
		{ "writes", &writes, 0, UINT64_C(1) << 32,
		  "times every byte of an object is incremented", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "cache-scratch style: passive false sharing of "
		 "recycled small objects.", argc, argv, opts, WL_NOPTS(opts));

	struct worker *workers = wl_map(PROG, sizeof(*workers) * nthreads);
	uint64_t mallocs = 0;
	for (unsigned t = 0; t < nthreads; t++) {
		struct worker *w = &workers[t];
		uint64_t rng = wl_seed(seed, t);
		w->id = t;
		w->salt = (unsigned char)wl_rand(&rng);
		w->iters = total_iters / nthreads +
			   (t < total_iters % nthreads ? 1 : 0);
		/* Made here, back to back, by the main thread. */
		w->given = wl_xmalloc(PROG, (size_t)obj_size);
		for (size_t j = 0; j < obj_size; j++)
			w->given[j] = (unsigned char)(w->salt ^ j);
		mallocs++;
	}

	double secs = WL_TIMED_RUN(PROG, &start_barrier, 0, run, workers,
				   nthreads, NULL);

	mallocs += WL_SUM(workers, nthreads, mallocs);
	uint64_t frees = WL_SUM(workers, nthreads, frees);
	wl_check_counts(PROG, mallocs, frees,
			mallocs == total_iters + nthreads);

	WL_PRINT("%s: threads=%llu iters=%llu size=%llu writes=%llu "
		 "seed=0x%llx mallocs=%llu frees=%llu byte_writes=%llu "
		 "seconds=%.6f ops_per_sec=%.0f\n",
		 PROG, (unsigned long long)nthreads,
		 (unsigned long long)total_iters, (unsigned long long)obj_size,
		 (unsigned long long)writes, (unsigned long long)seed,
		 (unsigned long long)mallocs, (unsigned long long)frees,
		 (unsigned long long)(total_iters * obj_size * (writes + 1)),
		 secs, wl_rate((double)(mallocs + frees), secs));
	return 0;
}
