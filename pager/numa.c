/* NUMA: which node the calling thread runs on, and binding a new segment's
 * pages to it (libnuma). On a machine with one node all of this is a single
 * cached comparison, and nothing is ever bound.
 *
 * libnuma's constructor allocates (its bitmasks), so when tidemalloc is
 * preloaded, libnuma calls our malloc before either constructor has run:
 * that malloc works without initialization. What we call at run time does
 * not allocate: numa_available() (get_mempolicy), numa_max_node() (a value
 * the constructor computed) and mbind() (the system call). We ask only once
 * our own constructor has run, which is after libnuma's (it is our
 * dependency); the thread's node comes from getcpu(2), not from libnuma's
 * cpu-to-node table, which it builds with malloc on first use. */
#include "config.h"

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getcpu */
#endif

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>

#include "pager_int.h"

#ifdef HAVE_LIBNUMA
#include <numa.h>
#include <numaif.h>
#endif

static atomic_uint tm_nodes; /* 0: not known yet */

unsigned tm_numa_nodes(void) {
  unsigned n = atomic_load_explicit(&tm_nodes, memory_order_relaxed);
  if (TM_PAGER_LIKELY(n)) return n;
  if (!tm_front_ready()) return 1; /* libnuma may not be set up yet: ask later */
  int saved = errno;
  n = 1;
#ifdef HAVE_LIBNUMA
  if (numa_available() >= 0 && numa_max_node() > 0) n = (unsigned)numa_max_node() + 1;
#endif
  if (n > TM_NUMA_MAX) n = TM_NUMA_MAX;
  errno = saved;
  atomic_store_explicit(&tm_nodes, n, memory_order_relaxed);
  return n;
}

unsigned tm_numa_node(void) {
  if (tm_numa_nodes() == 1) return 0;
  unsigned cpu, node;
  int saved = errno;
  int rc = getcpu(&cpu, &node);
  errno = saved;
  return rc == 0 && node < tm_numa_nodes() ? node : 0;
}

void tm_numa_bind(void *addr, size_t len, unsigned node) {
  if (tm_numa_nodes() == 1) return;
#ifdef HAVE_LIBNUMA
  unsigned long mask[TM_NUMA_MAX / (8 * sizeof(unsigned long))] = {0};
  mask[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
  int saved = errno;
  /* preferred, not bound: a node out of memory falls back to another */
  mbind(addr, len, MPOL_PREFERRED, mask, TM_NUMA_MAX + 1, 0);
  errno = saved;
#else
  (void)addr;
  (void)len;
  (void)node;
#endif
}

