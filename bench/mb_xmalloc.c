/*
 * mb_xmalloc: asymmetric producer/consumer (allocating threads hand every
 * block to freeing threads).
 *
 * Modelled on the published description of xmalloc-test, as run by
 * mimalloc-bench (its README: "xmalloc-testN: by Lever and Boreham and
 * Christian Eder ... 100 purely allocating threads, and 100 purely
 * deallocating threads with objects of various sizes migrating between
 * them.  This asymmetric producer/consumer pattern is usually difficult to
 * handle by allocators with thread-local caches"; mimalloc-bench runs it
 * with as many allocating and as many freeing threads as there are cores,
 * and the program reports frees per second).  This is an independent
 * implementation written for tidemalloc from that description only: no code
 * of xmalloc-test is used, and the batching, queue and stamping below are
 * our own.
 *
 * What it measures: the cost of the cross-thread free path when frees
 * never happen on the thread that allocated, and of refilling a thread whose
 * frees all come back to other threads (the worst case for per-thread
 * caches: memory flows one way, from consumer threads back to producers).
 *
 * `threads' producer threads and `threads' consumer threads.  A producer
 * makes `ops' blocks (size uniform in min..max), stamps each one, and packs
 * them into batches of `batch' pointers; a full batch goes on one shared
 * FIFO (a mutex and two condition variables), where any consumer takes it,
 * checks and frees its blocks, and returns the empty batch descriptor to a
 * shared free list.  There are `depth' descriptors per producer, so at most
 * threads * depth * batch blocks are in flight: a producer that finds no
 * free descriptor sleeps until a consumer returns one (the published
 * program lets memory grow instead; bounding it keeps the run comparable
 * across allocators of different speed).  The descriptors live in mmap'ed
 * memory, not in the allocator under test.
 *
 * Sizes depend only on the seed and the producer's number; which consumer
 * frees which batch depends on the scheduler.
 *
 * Output (one line):
 *   mb_xmalloc: threads=2 ops=... batch=64 depth=16 min=16 max=128
 *               seed=0x... mallocs=... frees=... seconds=... ops_per_sec=...
 * ops_per_sec = frees / seconds (the published benchmark's "free/sec"),
 * timed from the moment all threads are released until the last consumer
 * has freed the last block.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "workload.h"

static const char *const PROG = "mb_xmalloc";

#define MAX_THREADS 64u		/* producers (and as many consumers) */
#define MAX_BATCH 1024u

struct batch {
	struct batch *next;
	uint64_t n;
	void *p[];		/* `batch' pointers */
};

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t count;		/* mallocs (producer) or frees (consumer) */
} __attribute__((aligned(64)));

static uint64_t nthreads, ops_per_thread, batch_len, depth, min_size,
	max_size, seed;

/* Shared state: FIFO of full batches, stack of empty ones. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t have_full, have_empty;
	struct batch *full_head, *full_tail;
	struct batch *empty;
	uint64_t producers_done;
} q = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.have_full = PTHREAD_COND_INITIALIZER,
	.have_empty = PTHREAD_COND_INITIALIZER,
};

static pthread_barrier_t start_barrier;

/* Take an empty descriptor, sleeping until one is returned; q.lock held. */
static struct batch *take_empty_locked(void)
{
	while (q.empty == NULL)
		pthread_cond_wait(&q.have_empty, &q.lock);
	struct batch *b = q.empty;
	q.empty = b->next;
	return b;
}

static void *producer(void *arg)
{
	struct worker *w = arg;
	uint64_t left = ops_per_thread;

	pthread_barrier_wait(&start_barrier);

	pthread_mutex_lock(&q.lock);
	struct batch *b = take_empty_locked();
	pthread_mutex_unlock(&q.lock);

	while (left > 0) {
		uint64_t n = left < batch_len ? left : batch_len;
		for (uint64_t i = 0; i < n; i++) {
			size_t sz = wl_range(&w->rng, min_size, max_size);
			b->p[i] = wl_new_block(PROG, sz);
		}
		b->n = n;
		b->next = NULL;
		w->count += n;
		left -= n;

		/* Publish the full batch; take the next empty one under the
		 * same lock hold. */
		pthread_mutex_lock(&q.lock);
		if (q.full_tail != NULL)
			q.full_tail->next = b;
		else
			q.full_head = b;
		q.full_tail = b;
		pthread_cond_signal(&q.have_full);
		b = left > 0 ? take_empty_locked() : NULL;
		pthread_mutex_unlock(&q.lock);
	}

	pthread_mutex_lock(&q.lock);
	q.producers_done++;
	if (q.producers_done == nthreads)
		pthread_cond_broadcast(&q.have_full);
	pthread_mutex_unlock(&q.lock);
	return NULL;
}

static void *consumer(void *arg)
{
	struct worker *w = arg;
	struct batch *done = NULL;	/* emptied, to give back */

	pthread_barrier_wait(&start_barrier);

	for (;;) {
		pthread_mutex_lock(&q.lock);
		if (done != NULL) {
			done->next = q.empty;
			q.empty = done;
			pthread_cond_signal(&q.have_empty);
			done = NULL;
		}
		while (q.full_head == NULL && q.producers_done < nthreads)
			pthread_cond_wait(&q.have_full, &q.lock);
		struct batch *b = q.full_head;
		if (b == NULL) {	/* every producer done, FIFO empty */
			pthread_mutex_unlock(&q.lock);
			break;
		}
		q.full_head = b->next;
		if (q.full_head == NULL)
			q.full_tail = NULL;
		pthread_mutex_unlock(&q.lock);

		for (uint64_t i = 0; i < b->n; i++)
			wl_free_block(PROG, b->p[i], max_size);
		w->count += b->n;
		done = b;
	}
	return NULL;
}

/* Workers 0..threads-1 produce, the next `threads' consume. */
static void *run(void *arg)
{
	struct worker *w = arg;

	return w->id < nthreads ? producer(w) : consumer(w);
}

int main(int argc, char **argv)
{
	nthreads = 2;
	ops_per_thread = 15000000;
	batch_len = 64;
	depth = 16;
	min_size = 16;
	max_size = 128;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &nthreads, 1, MAX_THREADS,
		  "allocating threads (as many freeing threads are added)",
		  0, 0 },
		{ "ops", &ops_per_thread, 1, UINT64_C(1) << 40,
		  "blocks made by each allocating thread", 0, 0 },
		{ "batch", &batch_len, 1, MAX_BATCH,
		  "blocks per hand-off batch", 0, 0 },
		{ "depth", &depth, 1, 1u << 16,
		  "batches in flight per allocating thread", 0, 0 },
		{ "min", &min_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "smallest block size", 0, 0 },
		{ "max", &max_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "largest block size", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "xmalloc-test style: threads only allocate, other "
		 "threads only free (shared batch FIFO).", argc, argv, opts,
		 WL_NOPTS(opts));
	if (max_size < min_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "max must be >= min");

	/* Batch descriptors, from mmap (not the allocator under test). */
	size_t bsize = sizeof(struct batch) + sizeof(void *) * batch_len;
	bsize = (bsize + 63) & ~(size_t)63;
	uint64_t nbatches = nthreads * depth;
	unsigned char *bmem = wl_map(PROG, bsize * nbatches);
	for (uint64_t i = 0; i < nbatches; i++) {
		struct batch *b = (struct batch *)(bmem + i * bsize);
		b->next = q.empty;
		q.empty = b;
	}

	unsigned total = (unsigned)(2 * nthreads);
	struct worker *workers = wl_map(PROG, sizeof(*workers) * total);
	for (unsigned t = 0; t < total; t++) {
		workers[t].id = t;
		workers[t].rng = wl_seed(seed, t);
	}

	double secs = WL_TIMED_RUN(PROG, &start_barrier, 0, run, workers,
				   total, NULL);

	uint64_t mallocs = WL_SUM(workers, nthreads, count);
	uint64_t frees = WL_SUM(workers + nthreads, nthreads, count);
	wl_check_counts(PROG, mallocs, frees,
			mallocs == nthreads * ops_per_thread);

	WL_PRINT("%s: threads=%llu ops=%llu batch=%llu depth=%llu min=%llu "
		 "max=%llu seed=0x%llx mallocs=%llu frees=%llu seconds=%.6f "
		 "ops_per_sec=%.0f\n",
		 PROG, (unsigned long long)nthreads,
		 (unsigned long long)ops_per_thread,
		 (unsigned long long)batch_len, (unsigned long long)depth,
		 (unsigned long long)min_size, (unsigned long long)max_size,
		 (unsigned long long)seed, (unsigned long long)mallocs,
		 (unsigned long long)frees, secs,
		 wl_rate((double)frees, secs));
	return 0;
}
