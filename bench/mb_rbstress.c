/*
 * mb_rbstress: a red-black tree of small nodes under insert/delete churn,
 * next to short-lived strings that are dropped in chunks.
 *
 * Named after "rbstress" in mimalloc-bench (the community allocator
 * benchmark suite; "rbstress1" runs one thread, "rbstressN" several).  The
 * published description of that benchmark is a Ruby program (Sam Saffron's
 * allocator_bench stress script, modified by Daan Leijen "to allocate not
 * fully random but in X size classes"), run by the Ruby interpreter: each
 * thread makes strings in a few sizes ten bytes apart, half of them kept in
 * a growing retained set and half appended to a short-lived chunk that,
 * when it grows past a limit, is dropped and restarted with one ~100 KB
 * string.  ("rb" there is Ruby, not red-black.)  This program is an
 * independent C implementation written for tidemalloc: it keeps that
 * allocation mix (five string sizes 10..50 bytes, a 50/50 split between
 * retained and short-lived, chunks dropped for one 100 KB block), and, as
 * tidemalloc's benchmark plan asked, holds the retained objects in a
 * red-black tree whose nodes and payloads are allocated and freed as the
 * tree changes, so the structure's invariants can be checked at the end.
 * It shares no code with allocator_bench, Ruby or mimalloc-bench.
 *
 * Each of T threads owns a tree and runs `ops' steps.  A step is, with
 * probability short%, a short-lived string: malloc 10, 20, 30, 40 or 50
 * bytes, write it, append it to the chunk; once the chunk holds more than
 * `chunk' strings they are all checked and freed together with the chunk's
 * big block, and a new big block of `big' bytes is made.  Otherwise it is a
 * retained object: a node (56 bytes) with a fresh unique 64-bit key and a
 * payload string of 10..50 bytes is inserted; once the tree holds more than
 * `live' nodes, a random key among those in the tree is looked up, that
 * node is removed (rebalancing), its payload checked, and both freed.  So
 * the tree grows to `live' nodes and then churns.
 *
 * Checks: every node carries a check word and its payload a byte pattern,
 * both derived from the key and verified when the node is removed; short
 * strings are verified when their chunk is dropped, big blocks through the
 * workload.h stamp.  After the clock stops (and every `verify' steps, if
 * given) the whole tree is verified: keys strictly increasing in order,
 * parent links consistent, root black, no red node with a red child, the
 * same black height on every path, node count and all payloads; then
 * everything is freed (untimed).  Any mismatch exits 1.
 *
 * Each thread's work depends only on the seed and the thread number.
 *
 * Output (one line):
 *   rbstress: threads=1 ops=... live=... short=50 chunk=... big=100000
 *             seed=0x... inserts=... deletes=... height=... mallocs=...
 *             frees=... seconds=... ops_per_sec=...
 * ops_per_sec = (mallocs + frees made in the timed steps) / seconds; frees=
 * also counts the untimed final clean-up, so that it equals mallocs.
 * height= is the black height of thread 0's tree at the end.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>

#include "workload.h"

static const char *const PROG = "rbstress";

#define MAX_THREADS 256u
#define NODE_MAGIC 0x7262747265656e64ULL
#define STRING_UNIT 10u		/* string sizes are 1..STRING_SIZES units */
#define STRING_SIZES 5u

struct node {
	struct node *link[2];	/* left, right */
	struct node *parent;
	uint64_t key;
	uint64_t check;		/* key ^ NODE_MAGIC */
	unsigned char *payload;
	uint32_t len;
	uint32_t red;
};

struct tree {
	struct node *root;
	uint64_t size;
};

struct worker {
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t salt, next_key;
	uint64_t mallocs, frees;	/* in the timed steps */
	uint64_t cleanup_frees;
	uint64_t inserts, deletes;
	long black_height;
	struct tree tree;
	uint64_t *keys;			/* keys in the tree, unordered */
	unsigned char **chunk;		/* short-lived strings */
	uint64_t chunk_len;
	void *big;			/* the chunk's big block */
} __attribute__((aligned(64)));

static uint64_t ops_per_thread, live, short_pct, chunk_max, big_size,
	verify_every, seed;
static pthread_barrier_t barrier;

static void fail(const void *where, const char *what)
	__attribute__((noreturn, cold));
static void fail(const void *where, const char *what)
{
	wl_corrupt(PROG, where, what);
}

/* ---------------------------------------------------------------------- */
/* Payloads and short strings.                                             */
/* ---------------------------------------------------------------------- */

static inline unsigned char key_byte(uint64_t key)
{
	return (unsigned char)(key ^ (key >> 29) ^ (key >> 51));
}

static inline unsigned char string_byte(size_t n)
{
	return (unsigned char)(n * 7u + 0xa7u);
}

static void check_payload(const struct node *n)
{
	unsigned char b = key_byte(n->key);

	if (n->payload == NULL || n->len == 0 ||
	    n->len > STRING_UNIT * STRING_SIZES)
		fail(n, "bad payload pointer or length in a node");
	for (uint32_t i = 0; i < n->len; i++)
		if (n->payload[i] != b)
			fail(n->payload, "bad payload byte");
}

static void check_node(const struct node *n)
{
	if (n->check != (n->key ^ NODE_MAGIC))
		fail(n, "bad node check word");
}

/* ---------------------------------------------------------------------- */
/* Red-black tree (parent pointers, NULL leaves).                          */
/* ---------------------------------------------------------------------- */

static inline int is_red(const struct node *n)
{
	return n != NULL && n->red;
}

/* dir 0: rotate x left (its right child comes up); dir 1: rotate right. */
static void rotate(struct tree *t, struct node *x, int dir)
{
	struct node *y = x->link[!dir];

	x->link[!dir] = y->link[dir];
	if (y->link[dir] != NULL)
		y->link[dir]->parent = x;
	y->parent = x->parent;
	if (x->parent == NULL)
		t->root = y;
	else
		x->parent->link[x == x->parent->link[1]] = y;
	y->link[dir] = x;
	x->parent = y;
}

static void insert(struct tree *t, struct node *z)
{
	struct node *p = NULL, *c = t->root;
	int dir = 0;

	while (c != NULL) {
		p = c;
		if (z->key == c->key)
			fail(c, "duplicate key in the tree");
		dir = z->key > c->key;
		c = c->link[dir];
	}
	z->link[0] = z->link[1] = NULL;
	z->parent = p;
	z->red = 1;
	if (p == NULL)
		t->root = z;
	else
		p->link[dir] = z;
	t->size++;

	while ((p = z->parent) != NULL && p->red) {
		struct node *g = p->parent;	/* p is red: not the root */
		int pd = p == g->link[1];
		struct node *u = g->link[!pd];

		if (is_red(u)) {
			p->red = 0;
			u->red = 0;
			g->red = 1;
			z = g;
			continue;
		}
		if (z == p->link[!pd]) {	/* inner grandchild */
			rotate(t, p, pd);
			z = p;
			p = z->parent;
		}
		p->red = 0;
		g->red = 1;
		rotate(t, g, !pd);
	}
	t->root->red = 0;
}

static struct node *find(const struct tree *t, uint64_t key)
{
	struct node *c = t->root;

	while (c != NULL && c->key != key)
		c = c->link[key > c->key];
	return c;
}

/* Put v (possibly NULL) where u was under u's parent. */
static void transplant(struct tree *t, struct node *u, struct node *v)
{
	if (u->parent == NULL)
		t->root = v;
	else
		u->parent->link[u == u->parent->link[1]] = v;
	if (v != NULL)
		v->parent = u->parent;
}

/* x (possibly NULL) under xp carries an extra black: restore the rules. */
static void erase_fixup(struct tree *t, struct node *x, struct node *xp)
{
	while (x != t->root && !is_red(x)) {
		int dir = x == xp->link[1];	/* the sibling is not NULL */
		struct node *s = xp->link[!dir];

		if (s->red) {
			s->red = 0;
			xp->red = 1;
			rotate(t, xp, dir);
			s = xp->link[!dir];
		}
		if (!is_red(s->link[0]) && !is_red(s->link[1])) {
			s->red = 1;
			x = xp;
			xp = x->parent;
			continue;
		}
		if (!is_red(s->link[!dir])) {
			s->link[dir]->red = 0;
			s->red = 1;
			rotate(t, s, !dir);
			s = xp->link[!dir];
		}
		s->red = xp->red;
		xp->red = 0;
		s->link[!dir]->red = 0;
		rotate(t, xp, dir);
		x = t->root;
		break;
	}
	if (x != NULL)
		x->red = 0;
}

static void erase(struct tree *t, struct node *z)
{
	struct node *x, *xp;
	int removed_red;

	if (z->link[0] == NULL || z->link[1] == NULL) {
		x = z->link[0] != NULL ? z->link[0] : z->link[1];
		xp = z->parent;
		removed_red = z->red;
		transplant(t, z, x);
	} else {
		struct node *y = z->link[1];	/* successor */
		while (y->link[0] != NULL)
			y = y->link[0];
		removed_red = y->red;
		x = y->link[1];
		if (y->parent == z) {
			xp = y;
		} else {
			xp = y->parent;
			transplant(t, y, x);
			y->link[1] = z->link[1];
			y->link[1]->parent = y;
		}
		transplant(t, z, y);
		y->link[0] = z->link[0];
		y->link[0]->parent = y;
		y->red = z->red;
	}
	t->size--;
	if (!removed_red)
		erase_fixup(t, x, xp);
}

/* Verify the subtree at n (keys strictly between lo and hi, where NULL
 * bounds are open); returns its black height (NULL leaves count 1). */
static long verify_subtree(const struct node *n, const struct node *parent,
			   const struct node *lo, const struct node *hi,
			   uint64_t *count)
{
	if (n == NULL)
		return 1;
	check_node(n);
	if (n->parent != parent)
		fail(n, "tree: bad parent link");
	if ((lo != NULL && n->key <= lo->key) ||
	    (hi != NULL && n->key >= hi->key))
		fail(n, "tree: keys out of order");
	if (n->red && (is_red(n->link[0]) || is_red(n->link[1])))
		fail(n, "tree: red node with a red child");
	check_payload(n);
	(*count)++;
	long l = verify_subtree(n->link[0], n, lo, n, count);
	long r = verify_subtree(n->link[1], n, n, hi, count);
	if (l != r)
		fail(n, "tree: unequal black heights");
	return l + !n->red;
}

static long verify_tree(const struct worker *w)
{
	const struct tree *t = &w->tree;
	uint64_t count = 0;

	if (t->root != NULL && t->root->red)
		fail(t->root, "tree: red root");
	long h = verify_subtree(t->root, NULL, NULL, NULL, &count);
	if (count != t->size)
		fail(t->root, "tree: node count differs from the size");
	return h;
}

/* ---------------------------------------------------------------------- */
/* The workload.                                                           */
/* ---------------------------------------------------------------------- */

static void *xmalloc(struct worker *w, size_t n)
{
	void *p = wl_xmalloc(PROG, n);

	w->mallocs++;
	return p;
}

static void xfree(struct worker *w, void *p)
{
	free(p);
	w->frees++;
}

static void new_big(struct worker *w)
{
	w->big = xmalloc(w, big_size);
	wl_fill(w->big, big_size);
}

static void drop_chunk(struct worker *w)
{
	for (uint64_t i = 0; i < w->chunk_len; i++) {
		unsigned char *s = w->chunk[i];
		size_t n = s[0] == string_byte(10) ? 10 :
			s[0] == string_byte(20) ? 20 :
			s[0] == string_byte(30) ? 30 :
			s[0] == string_byte(40) ? 40 :
			s[0] == string_byte(50) ? 50 : 0;
		if (n == 0 || s[n - 1] != string_byte(n) ||
		    s[n / 2] != string_byte(n))
			fail(s, "bad short string");
		xfree(w, s);
	}
	w->chunk_len = 0;
	if (w->big != NULL) {
		wl_check(PROG, w->big, big_size);
		xfree(w, w->big);
		w->big = NULL;
	}
}

static void short_string(struct worker *w)
{
	size_t n = STRING_UNIT * (1 + (size_t)wl_below(&w->rng, STRING_SIZES));
	unsigned char *s = xmalloc(w, n);

	memset(s, string_byte(n), n);
	w->chunk[w->chunk_len++] = s;
	if (w->chunk_len > chunk_max) {
		drop_chunk(w);
		new_big(w);
	}
}

static void retain(struct worker *w)
{
	struct node *n = xmalloc(w, sizeof(*n));
	uint32_t len = STRING_UNIT * (1 + (uint32_t)wl_below(&w->rng,
							     STRING_SIZES));

	/* splitmix's finalizer is a bijection: keys are unique. */
	n->key = wl_mix64(w->salt + w->next_key++);
	n->check = n->key ^ NODE_MAGIC;
	n->len = len;
	n->payload = xmalloc(w, len);
	memset(n->payload, key_byte(n->key), len);
	insert(&w->tree, n);
	w->keys[w->tree.size - 1] = n->key;
	w->inserts++;

	if (w->tree.size <= live)
		return;
	uint64_t i = wl_below(&w->rng, w->tree.size);
	uint64_t key = w->keys[i];
	struct node *d = find(&w->tree, key);
	if (d == NULL)
		fail(w->tree.root, "tree: a key in the tree was not found");
	check_node(d);
	erase(&w->tree, d);
	w->keys[i] = w->keys[w->tree.size];
	check_payload(d);
	xfree(w, d->payload);
	xfree(w, d);
	w->deletes++;
}

/* Free the tree bottom-up (untimed clean-up). */
static void free_subtree(struct worker *w, struct node *n)
{
	while (n != NULL) {
		free_subtree(w, n->link[0]);
		struct node *right = n->link[1];
		free(n->payload);
		free(n);
		w->cleanup_frees += 2;
		n = right;
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;

	pthread_barrier_wait(&barrier);	/* ready */
	pthread_barrier_wait(&barrier);	/* clock started */

	for (uint64_t i = 0; i < ops_per_thread; i++) {
		if (wl_below(&w->rng, 100) < short_pct)
			short_string(w);
		else
			retain(w);
		if (verify_every != 0 && (i + 1) % verify_every == 0)
			verify_tree(w);
	}
	pthread_barrier_wait(&barrier);	/* all done: clock stops */

	w->black_height = verify_tree(w);
	uint64_t before = w->frees;
	drop_chunk(w);
	w->cleanup_frees += w->frees - before;
	w->frees = before;
	free_subtree(w, w->tree.root);
	w->tree.root = NULL;
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t threads = 1;

	ops_per_thread = 8000000;
	live = 50000;
	short_pct = 50;
	chunk_max = 1000;
	big_size = 100000;
	verify_every = 0;
	seed = 0x12345678;

	struct wl_opt opts[] = {
		{ "threads", &threads, 1, MAX_THREADS,
		  "number of threads (one tree each)", 0, 0 },
		{ "ops", &ops_per_thread, 1, UINT64_C(1) << 40,
		  "steps per thread", 0, 0 },
		{ "live", &live, 1, UINT64_C(1) << 28,
		  "tree size at which deletes start", 0, 0 },
		{ "short", &short_pct, 0, 100,
		  "percent of steps that make a short-lived string", 0, 0 },
		{ "chunk", &chunk_max, 1, UINT64_C(1) << 26,
		  "short strings per chunk before it is dropped", 0, 0 },
		{ "big", &big_size, WL_MIN_SIZE, WL_MAX_SIZE,
		  "size of the block that restarts a chunk", 0, 0 },
		{ "verify", &verify_every, 0, UINT64_C(1) << 40,
		  "verify the whole tree every N steps (0: at the end only)",
		  0, 0 },
		{ "seed", &seed, 0, UINT64_MAX, "random seed", 0, 0 },
	};
	wl_parse(PROG, "Red-black tree insert/delete churn with small payloads, "
		 "plus short-lived strings dropped in chunks (rbstress "
		 "style).", argc, argv, opts, WL_NOPTS(opts));
	unsigned nthreads = (unsigned)threads;

	struct worker *workers = wl_map(PROG, sizeof(*workers) * nthreads);
	for (unsigned t = 0; t < nthreads; t++) {
		struct worker *w = &workers[t];
		w->id = t;
		w->rng = wl_seed(seed, t);
		w->salt = wl_rand(&w->rng);
		w->keys = wl_map(PROG, sizeof(uint64_t) * (live + 1));
		w->chunk = wl_map(PROG, sizeof(void *) * (chunk_max + 1));
	}

	/* The clock stops at the "all done" barrier, before the workers'
	 * untimed verification and clean-up: no wl_timed_run here. */
	pthread_barrier_init(&barrier, NULL, nthreads + 1);
	WL_SPAWN_EACH(PROG, run, workers, nthreads);
	pthread_barrier_wait(&barrier);	/* ready */
	double t0 = wl_now();
	pthread_barrier_wait(&barrier);	/* go */
	pthread_barrier_wait(&barrier);	/* all done */
	double secs = wl_now() - t0;
	WL_JOIN_EACH(workers, nthreads);

	uint64_t mallocs = WL_SUM(workers, nthreads, mallocs);
	uint64_t frees = WL_SUM(workers, nthreads, frees);
	uint64_t cleanup = WL_SUM(workers, nthreads, cleanup_frees);
	uint64_t inserts = WL_SUM(workers, nthreads, inserts);
	uint64_t deletes = WL_SUM(workers, nthreads, deletes);
	wl_check_counts(PROG, mallocs, frees + cleanup, 1);

	WL_PRINT("%s: threads=%u ops=%llu live=%llu short=%llu chunk=%llu "
		 "big=%llu seed=0x%llx inserts=%llu deletes=%llu height=%ld "
		 "mallocs=%llu frees=%llu seconds=%.6f ops_per_sec=%.0f\n",
		 PROG, nthreads, (unsigned long long)ops_per_thread,
		 (unsigned long long)live, (unsigned long long)short_pct,
		 (unsigned long long)chunk_max, (unsigned long long)big_size,
		 (unsigned long long)seed, (unsigned long long)inserts,
		 (unsigned long long)deletes, workers[0].black_height,
		 (unsigned long long)mallocs,
		 (unsigned long long)(frees + cleanup), secs,
		 wl_rate((double)(mallocs + frees), secs));
	return 0;
}
