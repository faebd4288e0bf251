/* Everything that talks to the kernel about address space: mappings, page
 * purging, and the registry that tells our pointers from everyone else's. */
#include "internal.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

/* The registry, one byte per 4 MiB region, in two levels so that it costs
 * address space in proportion to what the heap maps (a flat table was 32 MiB
 * of .bss: VmSize 39 MB for a trivial program, and the preload refused
 * under a tight `ulimit -v`). The top table (8192 entries, 64 KiB of .bss,
 * for 48 bits) holds each leaf's offset from one leaf of zeroes, so every
 * entry starts at that leaf: free() can consult it before any
 * initialization, and a lookup needs no branch but the range check. (As
 * pointers, 4096 of them were 4096 relocations for ld.so to apply at every
 * start.) A leaf (8 KiB,
 * 32 GiB of address space) is mapped when a mapping of ours first lands in
 * its range, before that mapping is handed out, and is never unmapped. */
_Atomic uint8_t tm_reg_zero_leaf[TM_REG_LEAF_SIZE]; /* never written */
_Atomic uintptr_t tm_reg_top[(size_t)1 << TM_REG_TOP_BITS]; /* leaf - tm_reg_zero_leaf */

void tm_registry_set(uintptr_t region_base, unsigned value) {
  uintptr_t i = tm_reg_index(region_base);
  _Atomic uint8_t *leaf = tm_reg_leaf(i >> TM_REG_LEAF_BITS, memory_order_relaxed);
  TM_ASSERT(leaf != tm_reg_zero_leaf || value == TM_REG_NONE); /* tm_registry_cover ran */
  if (leaf == tm_reg_zero_leaf) return;
  atomic_store_explicit(&leaf[i & (TM_REG_LEAF_SIZE - 1)], (uint8_t)value, memory_order_relaxed);
}

/* Leaves for every region of [base, base + size): false when one cannot be
 * mapped (the mapping must then not be used). Racing threads install with
 * a CAS; the loser unmaps its leaf. */
static bool tm_registry_cover(uintptr_t base, size_t size) {
  uintptr_t first = tm_reg_index(base) >> TM_REG_LEAF_BITS;
  uintptr_t last = tm_reg_index(base + size - 1) >> TM_REG_LEAF_BITS;
  for (uintptr_t t = first;; t = (t + 1) & (((uintptr_t)1 << TM_REG_TOP_BITS) - 1)) {
    uintptr_t cur = atomic_load_explicit(&tm_reg_top[t], memory_order_acquire);
    if (cur == 0) {
      _Atomic uint8_t *leaf = tm_os_map(TM_REG_LEAF_SIZE, TM_MAP_RESERVE);
      if (!leaf) return false;
      uintptr_t off = (uintptr_t)leaf - (uintptr_t)tm_reg_zero_leaf;
      if (!atomic_compare_exchange_strong_explicit(&tm_reg_top[t], &cur, off, memory_order_release,
                                                   memory_order_acquire))
        tm_os_unmap((void *)leaf, TM_REG_LEAF_SIZE);
    }
    if (t == last) return true;
  }
}

/* How a mapping counts against the kernel's overcommit accounting. A
 * segment is a reservation the allocator owns and bounds (4 MiB each): it
 * is mapped MAP_NORESERVE. A huge block is memory the program asked for:
 * mapped without it, so that the kernel refuses what it could never back
 * (under the default heuristic overcommit, one request beyond RAM + swap),
 * as it refuses glibc's mmap: malloc(64 TiB) returns NULL with ENOMEM
 * instead of an address that ends in the OOM killer when touched. */
static int tm_map_flags(unsigned how) {
  return MAP_PRIVATE | MAP_ANONYMOUS | (how == TM_MAP_RESERVE ? MAP_NORESERVE : 0);
}

void *tm_os_map(size_t size, unsigned how) {
  int saved = errno;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, tm_map_flags(how), -1, 0);
  if (p == MAP_FAILED) {
    errno = ENOMEM;
    return NULL;
  }
  errno = saved;
  return p;
}

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0 /* then the address is only a hint */
#endif

/* Map exactly at `at` if that range is free; NULL or elsewhere otherwise. */
static void *tm_os_map_at(void *at, size_t size, unsigned how) {
  int saved = errno;
  void *p = mmap(at, size, PROT_READ | PROT_WRITE, tm_map_flags(how) | MAP_FIXED_NOREPLACE, -1, 0);
  errno = saved;
  return p == MAP_FAILED ? NULL : p;
}

static void *tm_os_map_aligned_slow(size_t size, size_t align, unsigned how);

/* Where the next aligned mapping will probably fit: the kernel hands out
 * address space top-down, so just below the previous one. */
static _Atomic uintptr_t tm_map_hint;

/* Map `size` bytes aligned to `align` (a power of two >= page size): first at
 * the hint (one system call when it is free), else over-allocate and trim. */
void *tm_os_map_aligned(size_t size, size_t align, unsigned how) {
  if (size + align < size) { /* both paths add them: refuse before either wraps */
    errno = ENOMEM;
    return NULL;
  }
  uintptr_t hint = atomic_load_explicit(&tm_map_hint, memory_order_relaxed);
  uint8_t *p = NULL;
  if (hint > size + align) {
    uintptr_t want = (hint - size) & ~(uintptr_t)(align - 1);
    p = tm_os_map_at((void *)want, size, how);
    if (p && ((uintptr_t)p & (align - 1)) != 0) {
      tm_os_unmap(p, size);
      p = NULL;
    }
  }
  if (!p) p = tm_os_map_aligned_slow(size, align, how);
  if (p && (((uintptr_t)p + size - 1) >> TM_ADDR_BITS) != 0) {
    /* above what the registry covers (only with a kernel that hands out
     * 52- or 57-bit addresses unasked, which Linux does not) */
    tm_os_unmap(p, size);
    errno = ENOMEM;
    return NULL;
  }
  if (p && !tm_registry_cover((uintptr_t)p, size)) {
    tm_os_unmap(p, size);
    errno = ENOMEM;
    return NULL;
  }
  if (p) atomic_store_explicit(&tm_map_hint, (uintptr_t)p, memory_order_relaxed);
  return p;
}

static void *tm_os_map_aligned_slow(size_t size, size_t align, unsigned how) {
  uint8_t *p = tm_os_map(size + align, how);
  if (!p) return NULL;
  uintptr_t aligned = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
  size_t head = aligned - (uintptr_t)p;
  size_t tail = align - head;
  if (head) tm_os_unmap(p, head);
  if (tail) tm_os_unmap((uint8_t *)aligned + size, tail);
  return (void *)aligned;
}

/* The hardened build's page between a segment's header and its first span:
 * an underflow from the data, or a wild write walking down into the
 * metadata, faults there instead of rewriting descriptors. */
bool tm_os_guard_page(void *page) {
  int saved = errno;
  bool ok = mprotect(page, TM_PAGE_SIZE, PROT_NONE) == 0; /* ENOMEM: out of map count */
  errno = saved;
  return ok;
}

void tm_os_unmap(void *p, size_t size) {
  int saved = errno;
  munmap(p, size);
  errno = saved;
}

/* The header of the mapping a registered region belongs to (see TM_REG_*). */
static tm_segment *tm_huge_header(uintptr_t p, unsigned reg) {
  uintptr_t region = p & ~(uintptr_t)TM_SEG_MASK;
  if (reg == TM_REG_SEGMENT) return (tm_segment *)region;
  return (tm_segment *)(region - (TM_SEG_SIZE << (reg - 2)));
}

tm_segment *tm_segment_of(const void *p) {
  uintptr_t a = (uintptr_t)p;
  unsigned reg = tm_registry_get(a);
  if (reg == TM_REG_NONE) return NULL;
  return tm_huge_header(a, reg);
}
