/*
 * churn: short-lived threads that hand blocks to long-lived ones.
 *
 * `survivors' long-lived threads run for the whole program.  Then, for each
 * of `rounds' rounds, `threads_per_round' short-lived threads are created;
 * each mallocs `allocs' blocks (size uniform in min..max) and stamps them;
 * share% of them are handed to the survivors through one mutex-protected
 * queue (in batches of up to 32), the rest are kept and, once all are made,
 * checked and freed in random order; then the thread exits.  The round ends
 * when all of its threads are joined.  A survivor takes blocks off the queue
 * into a FIFO of `delay' blocks and checks and frees the block that falls out
 * of it, so handed-off blocks outlive their makers.  At the end the
 * survivors free what they still hold and exit.
 *
 * Sizes, hand-off decisions and free orders depend only on the seed, the
 * round and the thread's number in the round.
 *
 * Output (one line):
 *   churn: rounds=... threads_per_round=4 allocs=... share=25 survivors=2
 *          delay=... min=16 max=2048 seed=0x... threads=... mallocs=...
 *          frees=... handed=... seconds=... threads_per_sec=...
 *          ops_per_sec=...
 * ops_per_sec = (mallocs + frees) / seconds, timed from before the first
 * round's threads are created until the survivors have freed everything;
 * threads_per_sec = short-lived threads / seconds.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "churn";

#define QUEUE_CAP 8192u		/* pointers in the hand-off queue */
#define BATCH 32u
#define MAX_SURVIVORS 64u

static uint64_t rounds, per_round, allocs, share, nsurv, delay, min_size,
	max_size, seed;

/* The hand-off queue: a ring of pointers under a mutex. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full;
	uint64_t head, tail;	/* tail - head = entries */
	int closing;
	void *slot[QUEUE_CAP];
} q = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.not_empty = PTHREAD_COND_INITIALIZER,
	.not_full = PTHREAD_COND_INITIALIZER,
};

struct survivor {
	pthread_t tid;
	uint64_t frees;
	void **fifo;
} __attribute__((aligned(64)));

struct shortlived {
	pthread_t tid;
	uint64_t rng;
	uint64_t mallocs, frees, handed;
	void **keep;
} __attribute__((aligned(64)));

static void queue_put(void *const *p, unsigned n)
{
	pthread_mutex_lock(&q.lock);
	while (n > 0) {
		while (q.tail - q.head == QUEUE_CAP)
			pthread_cond_wait(&q.not_full, &q.lock);
		while (n > 0 && q.tail - q.head < QUEUE_CAP) {
			q.slot[q.tail++ % QUEUE_CAP] = *p++;
			n--;
		}
		pthread_cond_signal(&q.not_empty);
	}
	pthread_mutex_unlock(&q.lock);
}

/* Take up to max entries; 0 means the queue is closed and empty. */
static unsigned queue_take(void **out, unsigned max)
{
	unsigned n = 0;

	pthread_mutex_lock(&q.lock);
	while (q.tail == q.head && !q.closing)
		pthread_cond_wait(&q.not_empty, &q.lock);
	while (n < max && q.head != q.tail)
		out[n++] = q.slot[q.head++ % QUEUE_CAP];
	if (n > 0)
		pthread_cond_broadcast(&q.not_full);
	pthread_mutex_unlock(&q.lock);
	return n;
}

static void *survivor_run(void *arg)
{
	struct survivor *s = arg;
	void *batch[BATCH * 2];
	uint64_t pos = 0;
	unsigned n;

	while ((n = queue_take(batch, BATCH * 2)) > 0) {
		for (unsigned i = 0; i < n; i++) {
			void **slot = &s->fifo[pos++ % delay];
			if (*slot != NULL) {
				wl_free_block(PROG, *slot, max_size);
				s->frees++;
			}
			*slot = batch[i];
		}
	}
	for (uint64_t k = 0; k < delay; k++) {
		if (s->fifo[k] != NULL) {
			wl_free_block(PROG, s->fifo[k], max_size);
			s->frees++;
			s->fifo[k] = NULL;
		}
	}
	return NULL;
}

static void *short_run(void *arg)
{
	struct shortlived *t = arg;
	void *batch[BATCH];
	unsigned nbatch = 0;
	uint64_t nkeep = 0;

	for (uint64_t i = 0; i < allocs; i++) {
		size_t n = wl_range(&t->rng, min_size, max_size);
		void *p = malloc(n);
		if (p == NULL)
			wl_oom(PROG, n);
		wl_fill(p, n);
		t->mallocs++;
		if (wl_below(&t->rng, 100) < share) {
			batch[nbatch++] = p;
			t->handed++;
			if (nbatch == BATCH) {
				queue_put(batch, nbatch);
				nbatch = 0;
			}
		} else {
			t->keep[nkeep++] = p;
		}
	}
	if (nbatch > 0)
		queue_put(batch, nbatch);

	/* Free the kept blocks in random order (partial Fisher-Yates). */
	while (nkeep > 0) {
		uint64_t j = wl_below(&t->rng, nkeep);
		void *p = t->keep[j];
		t->keep[j] = t->keep[--nkeep];
		wl_free_block(PROG, p, max_size);
		t->frees++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	rounds = 1000;
	per_round = 4;
	allocs = 2000;
	share = 25;
	nsurv = 2;
	delay = 1024;
	min_size = 16;
	max_size = 2048;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "rounds", &rounds, 1, UINT64_C(1) << 32, "rounds", 0, 0 },
		{ "threads_per_round", &per_round, 1, 1024,
		  "short-lived threads per round", 0, 0 },
		{ "allocs", &allocs, 1, UINT64_C(1) << 24,
		  "mallocs per short-lived thread", 0, 0 },
		{ "share", &share, 0, 100,
		  "percent of blocks handed to the survivors", 0, 0 },
		{ "survivors", &nsurv, 1, MAX_SURVIVORS,
		  "long-lived threads", 0, 0 },
		{ "delay", &delay, 1, UINT64_C(1) << 24,
		  "blocks a survivor holds before freeing", 0, 0 },
		{ "min", &min_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "smallest block size", 0, 0 },
		{ "max", &max_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "largest block size", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Rounds of short-lived threads allocate, hand share% "
		 "of their blocks to long-lived threads, free the rest and "
		 "exit.", argc, argv, opts, WL_NOPTS(opts));
	if (max_size < min_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "max must be >= min");

	struct survivor *surv = wl_map(PROG, sizeof(*surv) * nsurv);
	struct shortlived *sl = wl_map(PROG, sizeof(*sl) * per_round);
	for (uint64_t i = 0; i < nsurv; i++)
		surv[i].fifo = wl_map(PROG, sizeof(void *) * delay);
	for (uint64_t i = 0; i < per_round; i++)
		sl[i].keep = wl_map(PROG, sizeof(void *) * allocs);

	double t0 = wl_now();
	for (uint64_t i = 0; i < nsurv; i++) {
		int e = pthread_create(&surv[i].tid, NULL, survivor_run,
				       &surv[i]);
		if (e != 0) {
			fprintf(stderr, "churn: pthread_create: %s\n",
				strerror(e));
			return 1;
		}
	}

	uint64_t mallocs = 0, frees = 0, handed = 0;
	for (uint64_t r = 0; r < rounds; r++) {
		for (uint64_t i = 0; i < per_round; i++) {
			sl[i].rng = wl_seed(seed, r * per_round + i);
			sl[i].mallocs = sl[i].frees = sl[i].handed = 0;
			int e = pthread_create(&sl[i].tid, NULL, short_run,
					       &sl[i]);
			if (e != 0) {
				fprintf(stderr, "churn: pthread_create: %s\n",
					strerror(e));
				return 1;
			}
		}
		for (uint64_t i = 0; i < per_round; i++) {
			pthread_join(sl[i].tid, NULL);
			mallocs += sl[i].mallocs;
			frees += sl[i].frees;
			handed += sl[i].handed;
		}
	}

	pthread_mutex_lock(&q.lock);
	q.closing = 1;
	pthread_cond_broadcast(&q.not_empty);
	pthread_mutex_unlock(&q.lock);
	for (uint64_t i = 0; i < nsurv; i++) {
		pthread_join(surv[i].tid, NULL);
		frees += surv[i].frees;
	}
	double secs = wl_now() - t0;

	if (frees != mallocs) {
		fprintf(stderr, "churn: %llu mallocs but %llu frees\n",
			(unsigned long long)mallocs, (unsigned long long)frees);
		return 1;
	}
	uint64_t nthr = rounds * per_round;
	WL_PRINT("churn: rounds=%llu threads_per_round=%llu allocs=%llu "
		 "share=%llu survivors=%llu delay=%llu min=%llu max=%llu "
		 "seed=0x%llx threads=%llu mallocs=%llu frees=%llu "
		 "handed=%llu seconds=%.6f threads_per_sec=%.1f "
		 "ops_per_sec=%.0f\n",
		 (unsigned long long)rounds, (unsigned long long)per_round,
		 (unsigned long long)allocs, (unsigned long long)share,
		 (unsigned long long)nsurv, (unsigned long long)delay,
		 (unsigned long long)min_size, (unsigned long long)max_size,
		 (unsigned long long)seed, (unsigned long long)nthr,
		 (unsigned long long)mallocs, (unsigned long long)frees,
		 (unsigned long long)handed, secs,
		 secs > 0 ? (double)nthr / secs : 0.0,
		 secs > 0 ? (double)(mallocs + frees) / secs : 0.0);
	return 0;
}
