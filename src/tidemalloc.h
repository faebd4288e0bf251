/* tidemalloc: a kernel-assisted malloc for Linux.
 *
 * The standard allocation API (malloc, free, calloc, realloc, reallocarray,
 * memalign, posix_memalign, aligned_alloc, valloc, pvalloc,
 * malloc_usable_size, free_sized, free_aligned_sized, malloc_trim, mallopt,
 * mallinfo2, malloc_stats, malloc_info) is provided under its usual names and
 * declared by <stdlib.h> and <malloc.h>.  This header adds tidemalloc's own
 * introspection and control entry points. */
#ifndef TIDEMALLOC_H
#define TIDEMALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TIDEMALLOC_VERSION_MAJOR 0
#define TIDEMALLOC_VERSION_MINOR 1
#define TIDEMALLOC_VERSION_PATCH 0
#define TIDEMALLOC_VERSION "0.1.0"

/* Version string of the library actually loaded (may differ from the header). */
const char *tide_version(void);

/* A snapshot of the allocator's own accounting, in bytes unless noted.
 * See tidemalloc(3) for what each figure means and how it is taken. */
struct tide_stats {
  /* address space and what holds it */
  size_t mapped_bytes;       /* address space mapped from the OS (segments + huge) */
  size_t segment_count;      /* 4 MiB segments currently mapped */
  size_t cached_segments;    /* of those, empty ones kept for reuse */
  size_t span_bytes;         /* bytes of small-object spans owned by heaps or orphaned */
  size_t large_bytes;        /* bytes of large (page-run) blocks in use */
  size_t huge_bytes;         /* bytes of huge (own mapping) blocks in use */
  size_t huge_count;         /* number of huge blocks */
  size_t huge_count_max;     /* the most huge blocks live at once */
  size_t huge_bytes_max;     /* the most bytes in huge blocks at once */
  size_t heap_count;         /* thread heaps ever created (live + pooled) */
  /* where the bytes of the heap sit (a census: each heap's lock is taken
   * in turn; see "resident" in tidemalloc(3)) */
  size_t resident_bytes;      /* all of it that may be resident */
  size_t cached_bytes;        /* blocks in thread caches */
  size_t span_used_bytes;     /* blocks in use in small spans (live, cached, in flight) */
  size_t span_free_bytes;     /* free blocks in small spans */
  size_t free_unpurged_bytes; /* free and still resident: wholly free pages of spans,
                                 dirty free slices, cached huge mappings */
  size_t free_purged_bytes;   /* free and given back: purged pages of spans, purged slices */
  size_t header_bytes;        /* segment header pages in use */
  size_t huge_cached_bytes;   /* freed huge mappings kept for reuse (resident) */
  /* given back, since the start */
  size_t segments_released;  /* segments returned to the OS (munmap) */
  size_t purged_bytes;       /* bytes given back with madvise, in any mode */
  size_t purged_dontneed_bytes; /* ... with MADV_DONTNEED */
  size_t purged_free_bytes;  /* ... with MADV_FREE */
  size_t lazyfree_bytes;     /* given with MADV_FREE and not taken by the kernel yet
                                (still in RSS): LazyFree of /proc/self/smaps_rollup */
  size_t refault_bytes;      /* purged pages of spans in use handed out again */
  size_t slices_reused_bytes; /* purged free slices taken again */
  size_t huge_reused;        /* huge blocks served from the cache of freed ones */
  const char *pager_mode;    /* "dontneed" or "free": how pages are given back */
  const char *release_backend; /* "process_madvise", "madvise", or "none" yet */
  /* the pager thread (doc/design.md, "The pager") */
  int pager_running;         /* 1 while the pager thread runs */
  const char *pager_loop;    /* how it waits: "io_uring", "poll", or "none" */
  int pager_psi;             /* 1 while the kernel's PSI trigger is armed */
  size_t pager_started;      /* times it was started (again after each fork) */
  size_t pager_wakeups;      /* times it woke up */
  size_t pager_rounds;       /* rounds of work it did */
  size_t pager_batches;      /* batches of ranges it handed to the kernel */
  size_t pager_syscalls;     /* system calls that gave memory back (any thread) */
  size_t pager_cpu_ns;       /* CPU time the pager thread used */
  size_t pager_pressure_events; /* memory pressure the kernel reported (PSI) */
  size_t pager_tight_rounds; /* rounds run near the memory limit */
  size_t memory_limit;       /* the limit in force: TIDE_RSS_LIMIT or the cgroup's (0: none) */
  size_t pager_delay_ms;     /* the decay delay in force: TIDE_PAGER_DELAY_MS, raised while
                                what is purged comes back (doc/design.md, "the delay") */
  size_t pager_delay_raised; /* times that delay was doubled */
  int numa_nodes;            /* NUMA nodes segments are pooled by (1: no NUMA) */
  /* cross-thread frees (doc/design.md, "Cross-thread frees: the outbox") */
  size_t outbox_claims;      /* times the pager took an idle thread's outboxes and caches */
  size_t outbox_claims_busy; /* times it found that thread working on one, and came back */
};

/* Fill *out with current figures. Never allocates. */
void tide_get_stats(struct tide_stats *out);

/* On the calling thread's own heap: flush its caches, collect pending
 * cross-thread frees, retire empty spans; sweep the spans of exited threads;
 * unmap empty segments. Returns the bytes its final release gave back to
 * the OS (purged and unmapped). A segment emptied on the way may already
 * have been released as any free would release it, and is not counted:
 * the stats' purged_bytes and mapped_bytes see everything. */
size_t tide_collect(void);

/* Give back every free byte of the whole process now, all threads
 * included: free pages inside spans, free slices, empty segments, cached
 * huge blocks. Other threads' caches are asked back (they go on those
 * threads' next allocation). malloc_trim() does the same. Returns the bytes
 * given back to the OS (madvised and unmapped). */
size_t tide_purge(void);

/* Walk the calling thread's heap and the global structures and verify their
 * invariants. Returns 0 when consistent; otherwise reports on stderr and
 * returns the number of problems found. */
int tide_heap_check(void);

#ifdef __cplusplus
}
#endif
#endif /* TIDEMALLOC_H */
