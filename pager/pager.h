/* The one header between the front end (src/) and the pager (pager/).
 *
 * The front end owns every structure: heaps, spans, segments, the huge
 * cache. It knows how to take memory out of circulation and put it back,
 * and does so only under its own locks, never making a system call while
 * holding one (src/trim.c). The pager owns time and the kernel: when to
 * look (its thread, pager/thread.c), what is old enough to go (its policy,
 * pager/policy.c), and how pages go back (pager/release.c).
 *
 * Between them travels a batch: ranges the front end has taken out of
 * circulation, which the pager hands to the kernel and the front end then
 * takes back (tm_trim_done). */
#ifndef TIDE_PAGER_H
#define TIDE_PAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tm_assert.h"

struct tm_segment;
struct tm_span;
struct tm_heap;

/* ---- batches -------------------------------------------------------------- */
enum tm_release_kind {
  TM_REL_SLICES,      /* free slices of a segment: purge, then free again (clean) */
  TM_REL_SPAN_PAGES,  /* wholly free pages of a live span: purge, then give back */
  TM_REL_HEADER,      /* header pages of an empty segment: purge */
  TM_REL_UNMAP,       /* a whole mapping already taken off every list (a segment,
                         or a huge mapping when obj is NULL): unmap */
  TM_REL_NOHUGE,      /* a segment about to lose pages one by one: MADV_NOHUGEPAGE,
                         so that khugepaged does not fill the holes back in */
};

typedef struct tm_release {
  uintptr_t addr;
  size_t len;
  void *obj;      /* the segment (slices, header, unmap) or span (pages) */
  uint64_t mask;  /* slices of the segment, or pages of the span */
  uint8_t kind;   /* enum tm_release_kind */
  uint8_t ok;     /* set by the release: the kernel took it */
} tm_release;

typedef struct tm_batch {
  unsigned n, cap;
  size_t bytes;       /* sum of len */
  tm_release *r;
} tm_batch;

static inline bool tm_batch_full(const tm_batch *b) { return b->n >= b->cap; }
static inline void tm_batch_add(tm_batch *b, uintptr_t addr, size_t len, void *obj, uint64_t mask, unsigned kind) {
  TM_ASSERT(!tm_batch_full(b));
  TM_ASSERT(len > 0 && ((addr | len) & 4095) == 0); /* whole pages only: a purge must not reach a neighbour */
  tm_release *r = &b->r[b->n++];
  r->addr = addr;
  r->len = len;
  r->obj = obj;
  r->mask = mask;
  r->kind = (uint8_t)kind;
  r->ok = 0;
  b->bytes += len;
}

/* ---- what the pager asks of the front end (src/trim.c) -------------------- */
/* What a round wants: free slices and pages idle for at least `delay_ms`;
 * heaps with no slow path for `idle_ms` treated as idle; `all`: every heap
 * as idle and everything free now (pressure, tide_purge); `empty_only`:
 * only empty segments (the synchronous mode without a pager thread);
 * `keep_no_empty`: unmap every empty segment, whatever TIDE_SEGMENT_CACHE
 * keeps. */
typedef struct tm_trim_req {
  uint32_t now_ms;
  uint32_t delay_ms;
  uint32_t idle_ms;
  bool all;
  bool empty_only;
  bool keep_no_empty;
  bool nohuge; /* THP is "always": segments purged page by page get MADV_NOHUGEPAGE */
} tm_trim_req;

/* When something not yet old enough will be: the earliest such time. */
typedef struct tm_due {
  bool any;
  uint32_t at_ms;
  bool busy; /* set by tm_trim_heaps: a heap took a slow path within idle_ms */
} tm_due;
static inline void tm_due_at(tm_due *d, uint32_t t) {
  if (!d->any || (int32_t)(t - d->at_ms) < 0) d->at_ms = t;
  d->any = true;
}

/* Take expired free slices, empty segments beyond the cache bound (to be
 * unmapped) and header pages of clean empty segments out of circulation
 * into b. Returns true when b filled up before everything was taken;
 * notes in *due when the rest will be old enough. */
bool tm_trim_segments(tm_batch *b, const tm_trim_req *req, tm_due *due);
/* The same for the heaps, from *cursor on (NULL: the first); on a full
 * batch *cursor is where to go on. */
bool tm_trim_heaps(tm_batch *b, const tm_trim_req *req, tm_due *due, struct tm_heap **cursor);
/* The same for the spans of exited threads. */
bool tm_trim_orphans(tm_batch *b, const tm_trim_req *req, tm_due *due);
/* The same for freed huge mappings kept for reuse (src/huge.c). */
bool tm_trim_huge(tm_batch *b, const tm_trim_req *req, tm_due *due);
/* Has any heap done anything since the trimmer last looked? Has a thread
 * freed into an orphan? */
bool tm_trim_heaps_pending(void);
bool tm_trim_orphans_pending(void);
/* Put back what the release took (clean, when it went through). */
void tm_trim_done(tm_batch *b);
/* True (once) when a segment became empty since the last call. */
bool tm_trim_empty_hint(void);
/* Bytes of purged memory handed out again since the start: purged pages
 * of live spans refaulted and purged free slices reused. */
uint64_t tm_trim_reused_bytes(void);
/* Is there work for a pager: does the heap span more than one segment, or
 * has a megabyte of slices been freed? */
bool tm_trim_has_work(void);
/* The calling thread is the pager: it must never allocate. */
void tm_front_mark_pager_thread(void);
/* The front end is far enough in its initialization to create threads. */
bool tm_front_ready(void);
/* I/O with no cancellation point (src/sysio.c): open, read, write, close
 * through syscall(2), EINTR retried; the whole of a small file as a string
 * (-1: unreadable; what does not fit in buf is left unread). */
int tm_sys_open(const char *path, int flags);
ssize_t tm_sys_read(int fd, void *buf, size_t n);
ssize_t tm_sys_write(int fd, const void *buf, size_t n);
void tm_sys_close(int fd);
ssize_t tm_read_small(const char *path, char *buf, size_t cap);
/* Milliseconds of CLOCK_MONOTONIC (wraps; compare differences). */
uint32_t tm_now_ms(void);

/* ---- knobs (parsed by src/options.c; doc/knobs.md) ------------------------- */
enum { TM_MODE_DONTNEED = 0, TM_MODE_FREE = 1 };
typedef struct tm_pager_opts {
  int enabled;      /* TIDE_PAGER: 0 = no pager thread (empty segments released at once) */
  int delay_ms;     /* TIDE_PAGER_DELAY_MS: how long free memory stays before it goes back */
  int idle_ms;      /* TIDE_PAGER_IDLE_MS: a thread without a slow path this long is idle */
  int psi;          /* TIDE_PAGER_PSI: purge everything free when the kernel reports pressure */
  int mode;         /* TIDE_PAGER_MODE: TM_MODE_DONTNEED or TM_MODE_FREE */
  size_t rss_limit; /* TIDE_RSS_LIMIT: bytes (0: none); near it, purge everything free */
} tm_pager_opts;
extern tm_pager_opts tm_pager_opt;

/* ---- statistics -------------------------------------------------------------- */
enum { TM_LOOP_NONE = 0, TM_LOOP_POLL, TM_LOOP_URING };
typedef struct tm_pager_stats {
  uint64_t started;     /* times the thread was started (1, or more after forks) */
  uint64_t wakeups;     /* times the thread woke up */
  uint64_t rounds;      /* rounds of work */
  uint64_t batches;     /* batches handed to the kernel */
  uint64_t syscalls;    /* system calls that gave memory back */
  uint64_t pressure;    /* PSI events the kernel reported */
  uint64_t tight;       /* rounds run near the RSS or cgroup limit */
  uint64_t limit;       /* the budget in force, bytes (0: none) */
  uint64_t delay_ms;    /* the decay delay in force (TIDE_PAGER_DELAY_MS, raised while purged memory comes back) */
  uint64_t raised;      /* times that delay was doubled */
  unsigned psi;         /* 1 while a PSI trigger is armed */
  uint64_t purged_dontneed; /* bytes given back with MADV_DONTNEED */
  uint64_t purged_free;     /* bytes given back with MADV_FREE */
  uint64_t cpu_ns;      /* CPU time of the thread (filled in by tm_pager_get_stats) */
  unsigned loop;        /* TM_LOOP_*: how it waits */
} tm_pager_stats;
void tm_pager_get_stats(tm_pager_stats *out);
const char *tm_pager_loop_name(unsigned loop);

/* ---- what the front end tells the pager (pager/thread.c) ------------------- */
/* After a slow path, with no lock held: wakes a sleeping pager (one relaxed
 * check otherwise); without a pager thread, releases empty segments now. */
void tm_pager_activity(void);
/* At a point where a thread may be created (the end of a malloc slow path):
 * start the pager if there is work for it and it is not running. */
void tm_pager_maybe_start(void);
/* In a fork child: the thread is gone; it starts again when needed. */
void tm_pager_after_fork(void);
/* Hold the pager between rounds (and let it go): for tests that walk the
 * heaps while it could be working on them. */
void tm_pager_pause(void);
void tm_pager_resume(void);
/* Does the calling thread hold the trimmer's turn (a pager round, or
 * tide_purge)? For the debug assertions of src/trim.c. */
bool tm_pager_turn_held(void);
/* Collect, release and give back now, on the calling thread; returns the
 * bytes the kernel took. */
size_t tm_pager_trim_now(const tm_trim_req *req);
/* Everything free in the whole process, now (tide_purge, malloc_trim). */
size_t tm_pager_purge_all(void);

/* ---- NUMA (pager/numa.c) --------------------------------------------------- */
#define TM_NUMA_MAX 64
unsigned tm_numa_nodes(void);  /* nodes of the machine (1 without libnuma) */
unsigned tm_numa_node(void);   /* the node the calling thread runs on */
void tm_numa_bind(void *addr, size_t len, unsigned node); /* prefer node for these pages */

/* ---- release (pager/release.c) -------------------------------------------- */
/* Hand every range of b to the kernel; returns the bytes it took. */
size_t tm_release_run(tm_batch *b);
const char *tm_release_mode_name(void);
enum { TM_REL_BACKEND_NONE = 0, TM_REL_BACKEND_PMADV, TM_REL_BACKEND_MADV };
unsigned tm_release_backend(void); /* the one used last */
void tm_release_after_fork(void);

#endif
