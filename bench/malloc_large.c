/*
 * malloc_large: one thread replacing large buffers (5..25 MiB) over and over,
 * after the description of mimalloc-bench's "malloc-large" test; then every
 * buffer is freed and the program idles, to see whether the memory goes back.
 *
 * The program keeps an array of `slots' buffers, all empty at first.  Each
 * of `iters' steps picks a random slot, frees the buffer in it (if any) and
 * puts a new one there, of a size uniform in min..max bytes.  The new buffer
 * is written so that its pages are really faulted in: its header word and
 * last byte are stamped as in the other workloads (workload.h), and the
 * first touch_pct% of it get one byte in every 4 KiB (memset=0) or are
 * cleared with memset (memset=1).  Every buffer is checked before it is
 * freed.  The sizes and slots depend only on the seed.
 *
 * After the loop every buffer still held is freed, then (VmRSS from
 * /proc/self/status, read without malloc):
 *   malloc_large: phase=after_free t_ms=<ms since start> rss_kb=<VmRSS>
 * the program sleeps idle_ms, and
 *   malloc_large: phase=idle_end t_ms=... rss_kb=...
 * and at the end the summary:
 *   malloc_large: ops_per_sec=... iters=... slots=... min=... max=...
 *                 touch_pct=... memset=... idle_ms=... seed=0x... mallocs=...
 *                 frees=... mb_per_sec=... seconds=... free_all_s=...
 * ops_per_sec = (mallocs + frees of the loop) / seconds of the loop; the
 * final frees (free_all_s) and the idle period do not count.  mb_per_sec is
 * the MiB allocated per second of the loop.
 *
 * The default iters=3000 makes the loop take about 2 s under glibc on the
 * reference machine (2-core AMD EPYC); allocators that fault every new
 * buffer in again take several times longer.
 */
#define _GNU_SOURCE
#include "workload.h"

static const char *const PROG = "malloc_large";

#define MAX_SLOTS 4096u
#define PAGE 4096u

static void *slot[MAX_SLOTS];
static double t_start;

/* Write the first touch_pct% of the buffer (one byte per page, or memset),
 * then stamp its header word and last byte. */
static void touch(unsigned char *p, size_t n, unsigned pct, int use_memset)
{
	size_t part = (size_t)((unsigned __int128)n * pct / 100);
	uint64_t h = wl_header(n);

	if (use_memset) {
		memset(p, 0, part);
	} else {
		for (size_t off = 0; off < part; off += PAGE)
			p[off] = (unsigned char)(off >> 12);
	}
	memcpy(p, &h, sizeof(h));
	p[n - 1] = wl_tail(h);
}

int main(int argc, char **argv)
{
	uint64_t iters = 3000, slots = 20, min_size = 5u << 20,
		 max_size = 25u << 20, touch_pct = 100, use_memset = 0,
		 idle_ms = 1000, seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "iters", &iters, 1, UINT64_C(1) << 40,
		  "buffers replaced (loop steps)", 0, 0 },
		{ "slots", &slots, 1, MAX_SLOTS, "buffers kept at most", 0, 0 },
		{ "min", &min_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "smallest buffer in bytes", 0, 0 },
		{ "max", &max_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "largest buffer in bytes", 0, 0 },
		{ "touch_pct", &touch_pct, 0, 100,
		  "percent of each new buffer written", 0, 0 },
		{ "memset", &use_memset, 0, 1,
		  "1: memset the written part; 0: one byte per 4 KiB", 0, 0 },
		{ "idle_ms", &idle_ms, 0, 3600000,
		  "sleep after freeing everything, in ms", 0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Replace random buffers of min..max bytes in a few "
		 "slots, free them all, idle; prints VmRSS after the frees "
		 "and after the idle period.", argc, argv, opts, WL_NOPTS(opts));
	if (min_size > max_size)
		wl_usage(PROG, "", opts, WL_NOPTS(opts), "min must be <= max");
	t_start = wl_now();

	uint64_t rng = wl_seed(seed, 0);
	uint64_t mallocs = 0, frees = 0, bytes = 0;
	double a = wl_now();

	for (uint64_t i = 0; i < iters; i++) {
		size_t k = (size_t)wl_below(&rng, slots);
		size_t n = wl_range(&rng, min_size, max_size);

		if (slot[k] != NULL) {
			wl_check(PROG, slot[k], max_size);
			free(slot[k]);
			frees++;
		}
		void *p = malloc(n);
		if (p == NULL)
			wl_oom(PROG, n);
		touch(p, n, (unsigned)touch_pct, (int)use_memset);
		slot[k] = p;
		mallocs++;
		bytes += n;
	}
	double loop_s = wl_now() - a;

	a = wl_now();
	for (uint64_t k = 0; k < slots; k++) {
		if (slot[k] != NULL) {
			wl_check(PROG, slot[k], max_size);
			free(slot[k]);
			slot[k] = NULL;
		}
	}
	double free_all_s = wl_now() - a;

	wl_phase(PROG, t_start, "after_free");
	wl_sleep_ms(idle_ms);
	wl_phase(PROG, t_start, "idle_end");

	WL_PRINT("malloc_large: ops_per_sec=%.0f iters=%llu slots=%llu "
		 "min=%llu max=%llu touch_pct=%llu memset=%llu idle_ms=%llu "
		 "seed=0x%llx mallocs=%llu frees=%llu mb_per_sec=%.1f "
		 "seconds=%.6f free_all_s=%.6f\n",
		 loop_s > 0 ? (double)(mallocs + frees) / loop_s : 0.0,
		 (unsigned long long)iters, (unsigned long long)slots,
		 (unsigned long long)min_size, (unsigned long long)max_size,
		 (unsigned long long)touch_pct, (unsigned long long)use_memset,
		 (unsigned long long)idle_ms, (unsigned long long)seed,
		 (unsigned long long)mallocs, (unsigned long long)frees,
		 loop_s > 0 ? (double)bytes / 1048576.0 / loop_s : 0.0,
		 loop_s, free_all_s);
	return 0;
}
