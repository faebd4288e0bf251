/*
 * workload.h: helpers shared by the benchmark workloads (xthread, larson,
 * churn, burst_idle, lifetimes, the mb_* programs, ...).  Header-only, plain
 * libc (and pthreads): the workloads are never linked against tidemalloc,
 * LD_PRELOAD chooses the allocator.
 *
 * - key=value argument parsing with a usage message (exit 2 on any bad word);
 * - a splitmix64 generator (deterministic given the seed);
 * - block stamping: every block gets a self-checking header word (its size
 *   and a hash of it) in its first 8 bytes, a check byte in its last byte,
 *   and one byte in every 4 KiB in between, so the allocator's memory is
 *   really touched; wl_check() verifies the header and the last byte before
 *   a block is freed and exits 1 on a mismatch;
 * - CLOCK_MONOTONIC time, process CPU time and VmRSS read without malloc, a
 *   phase line with both, a sleep, and mmap'ed bookkeeping;
 * - threads: starting and joining an array of workers, the timed run from a
 *   start barrier to the last join, and the end-of-run malloc/free count
 *   check.
 */
#ifndef TIDE_BENCH_WORKLOAD_H
#define TIDE_BENCH_WORKLOAD_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

/* Smallest block size: the header word needs 8 bytes, plus room for the
 * last-byte check. */
#define WL_MIN_SIZE 16u
/* Largest block size any workload accepts (the size must fit in 32 bits). */
#define WL_MAX_SIZE (1u << 30)

/* ---------------------------------------------------------------------- */
/* Random numbers: splitmix64.                                             */
/* ---------------------------------------------------------------------- */

static inline uint64_t wl_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline uint64_t wl_rand(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ULL;
	return wl_mix64(*s);
}

/* Uniform in 0..n-1 (n >= 1), multiply-shift (no division). */
static inline uint64_t wl_below(uint64_t *s, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)wl_rand(s) * n) >> 64);
}

/* Uniform in lo..hi inclusive. */
static inline size_t wl_range(uint64_t *s, size_t lo, size_t hi)
{
	return lo + (size_t)wl_below(s, (uint64_t)(hi - lo) + 1);
}

/* o[0..n) = a random permutation of 0..n-1 (Fisher-Yates, from the top). */
static inline void wl_permutation(uint64_t *s, uint32_t *o, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		o[i] = (uint32_t)i;
	for (uint64_t i = n - 1; n > 1 && i > 0; i--) {
		uint64_t j = wl_below(s, i + 1);
		uint32_t tmp = o[i];
		o[i] = o[j];
		o[j] = tmp;
	}
}

/* Independent stream number `stream' derived from the user's seed. */
static inline uint64_t wl_seed(uint64_t seed, uint64_t stream)
{
	return wl_mix64(seed ^ wl_mix64(stream + 0x632be59bd9b4e019ULL));
}

/* ---------------------------------------------------------------------- */
/* Block stamping and checking.                                            */
/* ---------------------------------------------------------------------- */

static inline uint64_t wl_header(size_t n)
{
	return (uint64_t)(uint32_t)n |
	       (wl_mix64((uint64_t)n ^ 0x7469646562656e63ULL) << 32);
}

static inline unsigned char wl_tail(uint64_t h)
{
	return (unsigned char)((h >> 40) ^ 0xa5);
}

/* Stamp a fresh block of n >= WL_MIN_SIZE bytes: header, one byte in every
 * 4 KiB (so every page the block spans is written), last byte. */
static inline void wl_fill(void *block, size_t n)
{
	unsigned char *p = block;
	uint64_t h = wl_header(n);

	memcpy(p, &h, sizeof(h));
	for (size_t off = 4096; off < n - 1; off += 4096)
		p[off] = (unsigned char)off;
	p[n - 1] = wl_tail(h);
}

static void wl_corrupt(const char *prog, const void *block, const char *what)
	__attribute__((noreturn, cold, unused));
static void wl_corrupt(const char *prog, const void *block, const char *what)
{
	fprintf(stderr, "%s: corrupted block %p: %s\n", prog, block, what);
	fflush(stderr);
	exit(1);
}

/* Verify a block stamped by wl_fill; returns its size.  max_size bounds the
 * size read from the header before the last byte is read.  Exits 1 (with a
 * message on stderr) on a mismatch. */
static inline size_t wl_check(const char *prog, const void *block,
			      size_t max_size)
{
	const unsigned char *p = block;
	uint64_t h;

	if (block == NULL)
		wl_corrupt(prog, block, "null pointer");
	memcpy(&h, p, sizeof(h));
	size_t n = (uint32_t)h;
	if (n < WL_MIN_SIZE || n > max_size || h != wl_header(n))
		wl_corrupt(prog, block, "bad header word");
	if (p[n - 1] != wl_tail(h))
		wl_corrupt(prog, block, "bad last byte");
	return n;
}

/* ---------------------------------------------------------------------- */
/* Time and memory.                                                        */
/* ---------------------------------------------------------------------- */

static inline double wl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds (user + system) used so far by the whole process, all
 * threads: for figures per CPU second next to the wall-clock ones. */
static inline double wl_cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) *
	       1e-6;
}

/* n events over secs seconds, 0 for an empty span (a run too short for
 * the clock): the ops_per_sec figure of every workload's output line. */
static inline double wl_rate(double n, double secs)
{
	return secs > 0 ? n / secs : 0.0;
}

/* VmRSS of this process in KiB, read with open/read into a stack buffer (no
 * malloc); -1 if it cannot be read. */
static inline long wl_rss_kb(void)
{
	char buf[4096];
	size_t len = 0;
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
		if (len == sizeof(buf) - 1)
			break;
	}
	close(fd);
	buf[len] = '\0';

	const char *q = strstr(buf, "\nVmRSS:");
	if (q == NULL)
		return -1;
	q += 7;
	while (*q == ' ' || *q == '\t')
		q++;
	long v = 0;
	if (*q < '0' || *q > '9')
		return -1;
	while (*q >= '0' && *q <= '9')
		v = v * 10 + (*q++ - '0');
	return v;
}

/* One line for a phase of a run: its name, the time since t0 (a wl_now()
 * value) and VmRSS; flushed at once so a watcher can follow. */
static inline void wl_phase(const char *prog, double t0, const char *name)
{
	long rss = wl_rss_kb();

	printf("%s: phase=%s t_ms=%.0f rss_kb=%ld\n", prog, name,
	       (wl_now() - t0) * 1e3, rss);
	if (fflush(stdout) != 0) {
		perror("stdout");
		exit(1);
	}
}

/* Sleep ms milliseconds, resuming after signals. */
static inline void wl_sleep_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Zeroed memory for a workload's own bookkeeping, straight from mmap so it
 * is not the allocator under test's; exits 1 on failure. */
static inline void *wl_map(const char *prog, size_t bytes)
{
	void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "%s: mmap(%zu): %s\n", prog, bytes,
			strerror(errno));
		exit(1);
	}
	return p;
}

/* ---------------------------------------------------------------------- */
/* Rings: lock-free single-producer, single-consumer queues of pointers,   */
/* through which workloads hand blocks to the thread that frees them.      */
/* ---------------------------------------------------------------------- */

struct wl_ring {
	_Alignas(64) _Atomic uint64_t head;	/* consumer position */
	_Alignas(64) _Atomic uint64_t tail;	/* producer position */
	_Alignas(64) void **slot;
	uint64_t mask;				/* slots - 1 (a power of two) */
};

/* n empty rings of cap slots each (cap a power of two), mapped zeroed. */
static inline struct wl_ring *wl_rings_new(const char *prog, size_t n,
					   uint64_t cap)
{
	struct wl_ring *r = wl_map(prog, sizeof(*r) * n);
	void **slots = wl_map(prog, sizeof(void *) * cap * n);

	for (size_t i = 0; i < n; i++) {
		r[i].slot = slots + i * cap;
		r[i].mask = cap - 1;
	}
	return r;
}

/* Producer: put p, or return 0 when the ring is full. *head_cache is the
 * producer's last look at the consumer's position (read again only when
 * the ring seems full). */
static inline int wl_ring_put(struct wl_ring *r, uint64_t *head_cache,
			      void *p)
{
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);

	if (tail - *head_cache > r->mask) {
		*head_cache = atomic_load_explicit(&r->head,
						   memory_order_acquire);
		if (tail - *head_cache > r->mask)
			return 0;
	}
	r->slot[tail & r->mask] = p;
	atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
	return 1;
}

/* Consumer: pass every waiting pointer to fn(p, ctx), oldest first, and
 * return how many there were. */
static inline uint64_t wl_ring_drain(struct wl_ring *r,
				     void (*fn)(void *p, void *ctx), void *ctx)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);

	for (uint64_t i = head; i != tail; i++)
		fn(r->slot[i & r->mask], ctx);
	if (head != tail)
		atomic_store_explicit(&r->head, tail, memory_order_release);
	return tail - head;
}

/* ---------------------------------------------------------------------- */
/* Blocks.                                                                 */
/* ---------------------------------------------------------------------- */

static void wl_oom(const char *prog, size_t size)
	__attribute__((noreturn, cold, unused));
static void wl_oom(const char *prog, size_t size)
{
	fprintf(stderr, "%s: malloc(%zu) failed\n", prog, size);
	fflush(stderr);
	exit(1);
}

/* malloc(n) from the allocator under test; exits 1 (wl_oom) if it fails,
 * so no workload has to carry on without its block. */
static inline void *wl_xmalloc(const char *prog, size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		wl_oom(prog, n);
	return p;
}

/* A new block of n >= WL_MIN_SIZE bytes stamped with wl_fill: the usual
 * way a workload makes a block that wl_free_block will check. */
static inline void *wl_new_block(const char *prog, size_t n)
{
	void *p = wl_xmalloc(prog, n);

	wl_fill(p, n);
	return p;
}

/* Check a block made by wl_new_block (wl_check, sizes up to max_size;
 * exits 1 on a mismatch), then free it. */
static inline void wl_free_block(const char *prog, void *p, size_t max_size)
{
	wl_check(prog, p, max_size);
	free(p);
}

/* ---------------------------------------------------------------------- */
/* Threads.                                                                */
/* ---------------------------------------------------------------------- */

/* Start a thread running fn(arg), its id in *tid.  On failure print
 * "prog: pthread_create: reason" and exit 1: a run with a thread missing
 * has nothing to report. */
static inline void wl_spawn(const char *prog, pthread_t *tid,
			    void *(*fn)(void *), void *arg)
{
	int e = pthread_create(tid, NULL, fn, arg);

	if (e != 0) {
		fprintf(stderr, "%s: pthread_create: %s\n", prog, strerror(e));
		exit(1);
	}
}

/*
 * The helpers below work on an array w of n per-thread structs (any struct
 * with a pthread_t member `tid'), which they take as its base, its element
 * size and the address of w[0].tid, so that one helper serves every
 * workload's struct; the WL_* macros after them pass the three from w.
 */

/* Start n threads, thread t running fn(&w[t]) with its id in w[t].tid, in
 * the order of the array (exits 1 as wl_spawn does). */
static inline void wl_spawn_each(const char *prog, void *(*fn)(void *),
				 void *base, size_t elem, pthread_t *tid0,
				 size_t n)
{
	for (size_t t = 0; t < n; t++)
		wl_spawn(prog, (pthread_t *)((char *)tid0 + t * elem), fn,
			 (char *)base + t * elem);
}

/* Join the n threads of the array, in order. */
static inline void wl_join_each(size_t elem, pthread_t *tid0, size_t n)
{
	for (size_t t = 0; t < n; t++)
		pthread_join(*(pthread_t *)((char *)tid0 + t * elem), NULL);
}

/* The main thread's side of a run timed from a start barrier, so that
 * thread creation and each worker's set-up stay out of the figure: size
 * `start' for the n workers and the main thread, start the workers on fn
 * (wl_spawn_each), wait on `start' with them (every worker waits once when
 * it is ready), read the clock, wait `more' further times with them (e.g. a
 * "go" after an untimed fill), join them all.  Returns the wall seconds
 * from that clock reading to the last join and, when cpu is not NULL,
 * stores the process's CPU seconds over the same span in *cpu. */
static inline double wl_timed_run(const char *prog, pthread_barrier_t *start,
				  unsigned more, void *(*fn)(void *),
				  void *base, size_t elem, pthread_t *tid0,
				  size_t n, double *cpu)
{
	pthread_barrier_init(start, NULL, (unsigned)n + 1);
	wl_spawn_each(prog, fn, base, elem, tid0, n);
	pthread_barrier_wait(start);
	double t0 = wl_now(), c0 = cpu != NULL ? wl_cpu_now() : 0.0;
	for (unsigned i = 0; i < more; i++)
		pthread_barrier_wait(start);
	wl_join_each(elem, tid0, n);
	double secs = wl_now() - t0;
	if (cpu != NULL)
		*cpu = wl_cpu_now() - c0;
	return secs;
}

/* Sum of a uint64_t counter over the array: per-thread counts (mallocs,
 * frees, ...) are kept unshared while the run lasts and added up after the
 * join. */
static inline uint64_t wl_sum(size_t elem, const uint64_t *field0, size_t n)
{
	uint64_t s = 0;

	for (size_t t = 0; t < n; t++)
		s += *(const uint64_t *)((const char *)field0 + t * elem);
	return s;
}

#define WL_SPAWN_EACH(prog, fn, w, n)                                   \
	wl_spawn_each((prog), (fn), (w), sizeof(*(w)), &(w)->tid, (n))
#define WL_JOIN_EACH(w, n) wl_join_each(sizeof(*(w)), &(w)->tid, (n))
#define WL_TIMED_RUN(prog, start, more, fn, w, n, cpu)                  \
	wl_timed_run((prog), (start), (more), (fn), (w), sizeof(*(w)),  \
		     &(w)->tid, (n), (cpu))
#define WL_SUM(w, n, field) wl_sum(sizeof(*(w)), &(w)->field, (n))

/* The end-of-run check: every block made was freed (frees == mallocs) and
 * count_ok, the workload's own expectation of the count (1 if it has
 * none), holds; otherwise print "prog: M mallocs but F frees" and exit 1,
 * as a lost or doubly freed block means the run cannot be trusted. */
static inline void wl_check_counts(const char *prog, uint64_t mallocs,
				   uint64_t frees, int count_ok)
{
	if (frees != mallocs || !count_ok) {
		fprintf(stderr, "%s: %llu mallocs but %llu frees\n", prog,
			(unsigned long long)mallocs, (unsigned long long)frees);
		exit(1);
	}
}

/* ---------------------------------------------------------------------- */
/* key=value arguments.                                                    */
/* ---------------------------------------------------------------------- */

struct wl_opt {
	const char *key;
	uint64_t *val;		/* holds the default on entry */
	uint64_t min, max;	/* accepted range (inclusive) */
	const char *help;
	int given;		/* set by wl_parse */
	uint64_t def;		/* set by wl_parse: the default */
};

static void wl_usage(const char *prog, const char *synopsis,
		     const struct wl_opt *o, size_t n, const char *why)
	__attribute__((noreturn, unused));
static void wl_usage(const char *prog, const char *synopsis,
		     const struct wl_opt *o, size_t n, const char *why)
{
	if (why)
		fprintf(stderr, "%s: %s\n", prog, why);
	fprintf(stderr, "usage: %s [key=value ...]\n", prog);
	if (synopsis[0] != '\0')
		fprintf(stderr, "%s\n", synopsis);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "  %-18s %s (default %llu, range %llu..%llu)\n",
			o[i].key, o[i].help, (unsigned long long)o[i].def,
			(unsigned long long)o[i].min,
			(unsigned long long)o[i].max);
	fprintf(stderr, "Numbers are decimal, 0x hex or 0 octal. "
		"Exit status: 0 ok, 1 failure (corruption, malloc failure), "
		"2 usage.\n");
	exit(2);
}

/* Parse an unsigned integer (strtoull base 0); the whole string must be a
 * number. */
static inline int wl_parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno != 0 || end == s || *end != '\0')
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* Parse argv[1..]: every word must be key=value with a known key and a value
 * in range; otherwise print the usage on stderr and exit 2. */
static inline void wl_parse(const char *prog, const char *synopsis,
			    int argc, char **argv, struct wl_opt *o, size_t n)
{
	char why[256];

	for (size_t i = 0; i < n; i++) {
		o[i].def = *o[i].val;
		o[i].given = 0;
	}
	for (int a = 1; a < argc; a++) {
		const char *w = argv[a];
		const char *eq = strchr(w, '=');
		size_t i;

		if (eq == NULL || eq == w) {
			snprintf(why, sizeof(why),
				 "bad argument '%.100s' (expected key=value)", w);
			wl_usage(prog, synopsis, o, n, why);
		}
		for (i = 0; i < n; i++)
			if (strlen(o[i].key) == (size_t)(eq - w) &&
			    memcmp(o[i].key, w, (size_t)(eq - w)) == 0)
				break;
		if (i == n) {
			snprintf(why, sizeof(why), "unknown key '%.*s'",
				 (int)(eq - w > 100 ? 100 : eq - w), w);
			wl_usage(prog, synopsis, o, n, why);
		}
		uint64_t v;
		if (wl_parse_u64(eq + 1, &v) || v < o[i].min || v > o[i].max) {
			snprintf(why, sizeof(why),
				 "bad value '%.100s' for %s (range %llu..%llu)",
				 eq + 1, o[i].key,
				 (unsigned long long)o[i].min,
				 (unsigned long long)o[i].max);
			wl_usage(prog, synopsis, o, n, why);
		}
		*o[i].val = v;
		o[i].given = 1;
	}
}

/* Print a line to stdout and flush; exit 1 if stdout fails. */
#define WL_PRINT(...)                                                   \
	do {                                                            \
		printf(__VA_ARGS__);                                    \
		if (fflush(stdout) != 0) {                              \
			perror("stdout");                               \
			exit(1);                                        \
		}                                                       \
	} while (0)

#define WL_NOPTS(a) (sizeof(a) / sizeof((a)[0]))

#endif /* TIDE_BENCH_WORKLOAD_H */
