/*
 * dist_app: tidemalloc's seed workload.
 *
 * Single thread.  An array of WS slots (initially empty).  Each step a 64-bit
 * LCG picks a slot; a full slot is freed, an empty one gets malloc(size) with
 * size drawn from DIST and clipped to MIN..MAX.  The first and last byte of
 * every new block are written, and read back (into a checksum) before the
 * block is freed, so neither the allocations nor the stores can be elided.
 *
 * Usage: dist_app ITERS WS MIN MAX SEED DIST
 *   canonical: dist_app 20000000 400 16 32768 0x12345678 app
 *
 * The program is built with no special flags and linked against libc only,
 * so LD_PRELOAD decides which malloc it exercises.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LCG_MUL 6364136223846793005ULL
#define LCG_ADD 1442695040888963407ULL

/* Upper bounds that keep the run sane; not part of the workload definition. */
#define WS_LIMIT   (1UL << 26)
#define SIZE_LIMIT (1UL << 30)

enum dist { DIST_APP, DIST_UNIFORM };

static uint64_t lcg_state;

/* Sum of the bytes read back before each free (keeps the work observable). */
volatile uint64_t dist_app_checksum;

/* One LCG step; returns the high bits of the new state (31 bits). */
static inline uint64_t next_r(void)
{
	lcg_state = lcg_state * LCG_MUL + LCG_ADD;
	return lcg_state >> 33;
}

/* Uniform in lo..hi (inclusive), one LCG step. */
static inline size_t uniform(size_t lo, size_t hi)
{
	return lo + (size_t)(next_r() % (uint64_t)(hi - lo + 1));
}

static inline size_t draw_size(enum dist d, size_t min, size_t max)
{
	size_t s;

	if (d == DIST_UNIFORM)
		return uniform(min, max);

	uint64_t u = next_r() % 100;
	if (u < 80)
		s = uniform(16, 256);
	else if (u < 95)
		s = uniform(257, 2048);
	else
		s = uniform(2049, 32768);

	if (s < min)
		s = min;
	if (s > max)
		s = max;
	return s;
}

static void usage(const char *why)
{
	if (why)
		fprintf(stderr, "dist_app: %s\n", why);
	fprintf(stderr,
		"usage: dist_app ITERS WS MIN MAX SEED DIST\n"
		"  ITERS  number of steps (>= 1)\n"
		"  WS     number of slots (1..%lu)\n"
		"  MIN    smallest size in bytes (>= 1)\n"
		"  MAX    largest size in bytes (MIN..%lu)\n"
		"  SEED   LCG seed (strtoull base 0, e.g. 0x12345678)\n"
		"  DIST   app | uniform\n"
		"canonical: dist_app 20000000 400 16 32768 0x12345678 app\n",
		WS_LIMIT, SIZE_LIMIT);
	exit(2);
}

/* Parse an unsigned integer (base 0); the whole string must be a number. */
static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	const char *p = s;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '-' || *p == '\0')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(p, &end, 0);
	if (errno != 0 || end == p || *end != '\0')
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	uint64_t iters, ws, min, max, seed;
	enum dist dist;

	if (argc != 7)
		usage("expected 6 arguments");
	if (parse_u64(argv[1], &iters) || iters == 0)
		usage("bad ITERS");
	if (parse_u64(argv[2], &ws) || ws == 0 || ws > WS_LIMIT)
		usage("bad WS");
	if (parse_u64(argv[3], &min) || min == 0 || min > SIZE_LIMIT)
		usage("bad MIN");
	if (parse_u64(argv[4], &max) || max < min || max > SIZE_LIMIT)
		usage("bad MAX (must be >= MIN)");
	if (parse_u64(argv[5], &seed))
		usage("bad SEED");
	if (strcmp(argv[6], "app") == 0)
		dist = DIST_APP;
	else if (strcmp(argv[6], "uniform") == 0)
		dist = DIST_UNIFORM;
	else
		usage("bad DIST (app | uniform)");

	unsigned char **slot = calloc(ws, sizeof(*slot));
	uint32_t *len = calloc(ws, sizeof(*len));
	if (!slot || !len) {
		fprintf(stderr, "dist_app: cannot allocate %llu slots\n",
			(unsigned long long)ws);
		return 1;
	}

	lcg_state = seed;
	uint64_t sum = 0;
	double t0 = now_sec();

	for (uint64_t i = 0; i < iters; i++) {
		uint64_t r = next_r();
		size_t k = (size_t)(r % ws);
		unsigned char *p = slot[k];

		if (p) {
			sum += p[0] + (uint64_t)p[len[k] - 1] * 3;
			free(p);
			slot[k] = NULL;
		} else {
			size_t size = draw_size(dist, (size_t)min, (size_t)max);
			p = malloc(size);
			if (!p) {
				fprintf(stderr,
					"dist_app: malloc(%zu) failed at step %llu\n",
					size, (unsigned long long)i);
				return 1;
			}
			p[0] = (unsigned char)r;
			p[size - 1] = (unsigned char)(r >> 8);
			slot[k] = p;
			len[k] = (uint32_t)size;
		}
	}
	for (uint64_t k = 0; k < ws; k++) {
		unsigned char *p = slot[k];
		if (p) {
			sum += p[0] + (uint64_t)p[len[k] - 1] * 3;
			free(p);
			slot[k] = NULL;
		}
	}

	double secs = now_sec() - t0;
	free(len);
	free(slot);

	/* The checksum only needs to be observable; it goes to a volatile. */
	dist_app_checksum = sum;

	printf("dist_app: iters=%llu ws=%llu min=%llu max=%llu dist=%s "
	       "seconds=%.6f ops_per_sec=%.0f\n",
	       (unsigned long long)iters, (unsigned long long)ws,
	       (unsigned long long)min, (unsigned long long)max, argv[6],
	       secs, secs > 0 ? (double)iters / secs : 0.0);
	return fflush(stdout) == 0 ? 0 : 1;
}
