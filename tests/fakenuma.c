/* A two-node machine for test_numa, preloaded ahead of tidemalloc and
 * libnuma: numa_available() and numa_max_node() say two nodes, getcpu()
 * says the node the calling thread chose with fakenuma_set_node(), and
 * mbind() records which node each range was bound to instead of asking the
 * kernel (this machine has one node). Nothing here allocates. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

static __thread unsigned my_node;

void fakenuma_set_node(unsigned node) { my_node = node; }

int numa_available(void) { return 0; }
int numa_max_node(void) { return 1; }

int getcpu(unsigned *cpu, unsigned *node) {
  if (cpu) *cpu = my_node;
  if (node) *node = my_node;
  return 0;
}

enum { MAX_BINDS = 8192 };
static struct {
  uintptr_t start;
  unsigned long len;
  int node;
} binds[MAX_BINDS];
static atomic_int nbinds;

long mbind(void *start, unsigned long len, int mode, const unsigned long *nodemask, unsigned long maxnode,
           unsigned flags) {
  (void)mode;
  (void)maxnode;
  (void)flags;
  int node = -1;
  for (int i = 0; i < 64; i++)
    if (nodemask && (nodemask[0] >> i) & 1) node = i;
  int k = atomic_fetch_add(&nbinds, 1);
  if (k < MAX_BINDS) {
    binds[k].start = (uintptr_t)start;
    binds[k].len = len;
    binds[k].node = node;
  }
  return 0;
}

/* The node the range holding addr was last bound to, or -1. */
int fakenuma_node_of(const void *addr) {
  int n = atomic_load(&nbinds);
  int node = -1;
  for (int i = 0; i < n && i < MAX_BINDS; i++)
    if ((uintptr_t)addr >= binds[i].start && (uintptr_t)addr - binds[i].start < binds[i].len) node = binds[i].node;
  return node;
}

int fakenuma_binds(void) { return atomic_load(&nbinds); }
