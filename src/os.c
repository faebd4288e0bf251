/* Everything that talks to the kernel about address space: mappings, page
 * purging, and the registry that tells our pointers from everyone else's. */
#include "internal.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

/* 32 MiB of zero-filled .bss: only the pages covering regions we actually
 * map are ever touched, and free() can consult it before any init. */
_Atomic uint8_t tm_registry[(size_t)1 << TM_REGISTRY_BITS];

void tm_registry_set(uintptr_t region_base, unsigned value) {
  atomic_store_explicit(&tm_registry[(region_base >> TM_SEG_SHIFT) & ((1u << TM_REGISTRY_BITS) - 1)],
                        (uint8_t)value, memory_order_relaxed);
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
  if (p) atomic_store_explicit(&tm_map_hint, (uintptr_t)p, memory_order_relaxed);
  return p;
}

static void *tm_os_map_aligned_slow(size_t size, size_t align, unsigned how) {
  uint8_t *p;
  if (size + align < size) {
    errno = ENOMEM;
    return NULL;
  }
  p = tm_os_map(size + align, how);
  if (!p) return NULL;
  uintptr_t aligned = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
  size_t head = aligned - (uintptr_t)p;
  size_t tail = align - head;
  if (head) tm_os_unmap(p, head);
  if (tail) tm_os_unmap((uint8_t *)aligned + size, tail);
  return (void *)aligned;
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
  if ((a >> (TM_SEG_SHIFT + TM_REGISTRY_BITS)) != 0) return NULL;
  unsigned reg = tm_registry_get(a);
  if (reg == TM_REG_NONE) return NULL;
  return tm_huge_header(a, reg);
}
