/*
 * lifetimes: a long-running steady state of short-, medium- and long-lived
 * objects interleaved, so that fragmentation can accumulate.  Its RSS over
 * time (sampled from outside, e.g. by rss_sample) is the result; the live
 * bytes it reports give the floor to compare the RSS with.
 *
 * Single thread.  Three classes, each an array of slots; a step draws a
 * class, a slot in it and a size, mallocs and stamps a block and puts it in
 * the slot; the block that was there (if any) is checked and freed.  So an
 * object lives a geometric number of steps with mean slots/probability:
 *
 *   class   prob  slots        mean life  sizes (by count)
 *   short   60%   6            10 steps   90% 16..256, 10% 257..4096
 *   medium  30%   300          1000       85% 16..1024, 15% 1025..16384
 *   long    10%   long_live    100000     80% 32..512, 18% 513..8192,
 *                 (10000)                 2% 8193..131072
 *
 * With the default long_live=10000 the steady live set is about 25 MB.  The
 * run stops after `ops' steps, or after `seconds' seconds if that is given
 * (checked every 1024 steps; the sequence is still the seed's, only its
 * length depends on the speed).  Then every object is freed.
 *
 * Output (one line):
 *   lifetimes: ops=... seconds_limit=... long_live=... seed=0x... steps=...
 *              mallocs=... frees=... live_kb_max=... live_kb_end=...
 *              seconds=... ops_per_sec=...
 * ops_per_sec = (mallocs + frees) / seconds, including the final frees;
 * live_kb_end is the live set just before the final frees.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "lifetimes";

#define MAX_BLOCK 131072u

struct slot {
	void *p;
	size_t n;
};

static inline size_t size_short(uint64_t *rng)
{
	return wl_below(rng, 100) < 90 ? wl_range(rng, 16, 256)
				       : wl_range(rng, 257, 4096);
}

static inline size_t size_medium(uint64_t *rng)
{
	return wl_below(rng, 100) < 85 ? wl_range(rng, 16, 1024)
				       : wl_range(rng, 1025, 16384);
}

static inline size_t size_long(uint64_t *rng)
{
	uint64_t u = wl_below(rng, 100);

	if (u < 80)
		return wl_range(rng, 32, 512);
	if (u < 98)
		return wl_range(rng, 513, 8192);
	return wl_range(rng, 8193, MAX_BLOCK);
}

static inline void release(struct slot *s, uint64_t *live, uint64_t *frees)
{
	if (wl_check(PROG, s->p, MAX_BLOCK) != s->n)
		wl_corrupt(PROG, s->p, "size does not match");
	free(s->p);
	*live -= s->n;
	(*frees)++;
	s->p = NULL;
}

int main(int argc, char **argv)
{
	uint64_t ops = 60000000, seconds = 0, long_live = 10000,
		 seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "ops", &ops, 1, UINT64_C(1) << 40,
		  "steps (one malloc each)", 0, 0 },
		{ "seconds", &seconds, 0, 86400,
		  "run this many seconds instead of ops= steps (0: use ops)",
		  0, 0 },
		{ "long_live", &long_live, 1, UINT64_C(1) << 24,
		  "slots of the long-lived class", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Short-, medium- and long-lived objects interleaved "
		 "(mean lives 10, 1000, 100000 steps). Give ops= or seconds=, "
		 "not both.", argc, argv, opts, WL_NOPTS(opts));
	if (opts[0].given && seconds != 0)
		wl_usage(PROG, "", opts, WL_NOPTS(opts),
			 "give ops= or seconds=, not both");

	const uint64_t nslots[3] = { 6, 300, long_live };
	struct slot *cls[3];
	for (int c = 0; c < 3; c++) {
		cls[c] = mmap(NULL, nslots[c] * sizeof(struct slot),
			      PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (cls[c] == MAP_FAILED) {
			perror("lifetimes: mmap");
			return 1;
		}
	}

	uint64_t rng = wl_seed(seed, 0);
	uint64_t mallocs = 0, frees = 0, live = 0, live_max = 0, steps = 0;
	double t0 = wl_now(), deadline = t0 + (double)seconds;

	for (;;) {
		if (seconds) {
			if ((steps & 1023) == 0 && wl_now() >= deadline)
				break;
		} else if (steps == ops) {
			break;
		}
		steps++;

		uint64_t u = wl_below(&rng, 10);
		int c = u < 6 ? 0 : u < 9 ? 1 : 2;
		struct slot *s = &cls[c][wl_below(&rng, nslots[c])];
		size_t n = c == 0 ? size_short(&rng)
			 : c == 1 ? size_medium(&rng) : size_long(&rng);

		if (s->p != NULL)
			release(s, &live, &frees);
		void *p = malloc(n);
		if (p == NULL)
			wl_oom(PROG, n);
		wl_fill(p, n);
		mallocs++;
		s->p = p;
		s->n = n;
		live += n;
		if (live > live_max)
			live_max = live;
	}
	uint64_t live_end = live;
	for (int c = 0; c < 3; c++)
		for (uint64_t k = 0; k < nslots[c]; k++)
			if (cls[c][k].p != NULL)
				release(&cls[c][k], &live, &frees);
	double secs = wl_now() - t0;

	if (frees != mallocs || live != 0) {
		fprintf(stderr, "lifetimes: %llu mallocs, %llu frees, "
			"%llu bytes left\n", (unsigned long long)mallocs,
			(unsigned long long)frees, (unsigned long long)live);
		return 1;
	}
	WL_PRINT("lifetimes: ops=%llu seconds_limit=%llu long_live=%llu "
		 "seed=0x%llx steps=%llu mallocs=%llu frees=%llu "
		 "live_kb_max=%llu live_kb_end=%llu seconds=%.6f "
		 "ops_per_sec=%.0f\n",
		 (unsigned long long)(seconds ? 0 : ops),
		 (unsigned long long)seconds, (unsigned long long)long_live,
		 (unsigned long long)seed, (unsigned long long)steps,
		 (unsigned long long)mallocs, (unsigned long long)frees,
		 (unsigned long long)(live_max / 1024),
		 (unsigned long long)(live_end / 1024), secs,
		 secs > 0 ? (double)(mallocs + frees) / secs : 0.0);
	return 0;
}
