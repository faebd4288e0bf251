/* The back end's side of the handoff between the front end and the pager.
 *
 * In this version the pager is synchronous: the front end hands it every
 * segment that became completely empty, and the pager either keeps it (its
 * pages given back to the OS, the address range kept for cheap reuse) or
 * unmaps it, so that at most TIDE_SEGMENT_CACHE empty segments are ever held.
 * All entry points are called with tm_global_lock held. */
#ifndef TIDE_PAGER_H
#define TIDE_PAGER_H

#include <stddef.h>

struct tm_segment;

/* Take an empty normal segment (no live span, not on any list). */
void tm_pager_segment_empty(struct tm_segment *seg);
/* A previously cached segment ready for reuse, or NULL. */
struct tm_segment *tm_pager_segment_reuse(void);
/* Unmap every cached segment; returns bytes of address space released. */
size_t tm_pager_release_cached(void);
/* In a fork child whose parent held the global lock: forget the cache. */
void tm_pager_reset_after_fork(void);

#endif
