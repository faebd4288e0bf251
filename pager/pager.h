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

struct tm_segment;
struct tm_span;
struct tm_heap;

/* ---- batches -------------------------------------------------------------- */
enum tm_release_kind {
  TM_REL_SLICES,      /* free slices of a segment: purge, then free again (clean) */
  TM_REL_SPAN_PAGES,  /* wholly free pages of a live span: purge, then give back */
  TM_REL_HEADER,      /* header pages of an empty segment: purge */
  TM_REL_UNMAP,       /* a whole mapping already taken off every list: unmap */
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
/* What a round wants: free slices and pages idle for at least `delay_ms`
 * (0: everything free now); `empty_only`: only empty segments (the
 * synchronous mode without a pager thread); `keep_no_empty`: unmap every
 * empty segment, whatever TIDE_SEGMENT_CACHE keeps. */
typedef struct tm_trim_req {
  uint32_t now_ms;
  uint32_t delay_ms;
  bool empty_only;
  bool keep_no_empty;
} tm_trim_req;

/* Take expired free slices, empty segments beyond the cache bound (to be
 * unmapped) and header pages of clean empty segments out of circulation
 * into b. Returns true when b filled up before everything was taken.
 * *next_ms: the earliest time something not yet expired will be. */
bool tm_trim_segments(tm_batch *b, const tm_trim_req *req, uint32_t *next_ms);
/* Put back what the release took (clean, when it went through). */
void tm_trim_done(tm_batch *b);
/* True (once) when a segment became empty since the last call. */
bool tm_trim_empty_hint(void);
/* Milliseconds of CLOCK_MONOTONIC (wraps; compare differences). */
uint32_t tm_now_ms(void);

/* ---- what the front end tells the pager (pager/thread.c) ------------------- */
/* Free slices or an empty segment appeared (called without any lock held). */
void tm_pager_freed(void);
/* Collect, release and give back now, on the calling thread; returns the
 * bytes the kernel took. */
size_t tm_pager_trim_now(const tm_trim_req *req);

/* ---- release (pager/release.c) -------------------------------------------- */
/* Hand every range of b to the kernel; returns the bytes it took. */
size_t tm_release_run(tm_batch *b);
const char *tm_release_mode_name(void);

#endif
