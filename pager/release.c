/* Release backends: how a batch of ranges goes back to the kernel.
 *
 * Advice: MADV_DONTNEED drops the pages at once (RSS falls, a later touch
 * faults in a zero page); MADV_FREE lets the kernel take them when it needs
 * memory (cheaper, but RSS does not fall until then). TIDE_PAGER_MODE picks
 * one at run time, --enable-pager-mode the default. A kernel that refuses
 * MADV_FREE (before 4.5) gets MADV_DONTNEED from then on.
 *
 * Batching: neighbouring ranges are merged, then handed over up to 512 at a
 * time with process_madvise(2) on a pidfd of our own process: measured
 * here, 0.76 us a page with 512 ranges a call, against 1.6-9 us for one
 * madvise(2) a page. Where process_madvise is missing or refused (kernels
 * before 5.10 or before it took DONTNEED/FREE, seccomp), each range gets
 * its own madvise(2), from then on.
 *
 * Whole mappings are unmapped. Called with no lock held. */
#include "config.h"

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pager_int.h"

#ifndef MADV_FREE
#define MADV_FREE 8 /* Linux >= 4.5 */
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

#define TM_IOV_MAX 512

/* The advice in force: TIDE_PAGER_MODE, else the configure default. */
static int tm_release_advice(void) { return tm_pager_opt.mode == TM_MODE_FREE ? MADV_FREE : MADV_DONTNEED; }

const char *tm_release_mode_name(void) { return tm_pager_opt.mode == TM_MODE_FREE ? "free" : "dontneed"; }

/* process_madvise: -1 not tried yet, -2 refused (madvise from then on),
 * else our pidfd. A fork child's pidfd would be its parent's: it forgets. */
static atomic_int tm_pidfd = -1;
static atomic_uint tm_backend; /* TM_REL_BACKEND_* last used */

static int tm_release_pidfd(void) {
  int fd = atomic_load_explicit(&tm_pidfd, memory_order_acquire);
  if (fd != -1) return fd;
  fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
  if (fd < 0) fd = -2;
  int expect = -1;
  if (!atomic_compare_exchange_strong(&tm_pidfd, &expect, fd)) { /* another thread was first */
    if (fd >= 0) close(fd);
    fd = expect;
  }
  return fd;
}

void tm_release_after_fork(void) {
  int fd = atomic_exchange(&tm_pidfd, -1);
  if (fd >= 0) close(fd);
}

unsigned tm_release_backend(void) { return atomic_load_explicit(&tm_backend, memory_order_relaxed); }

/* madvise one range; on a kernel without MADV_FREE, fall back for good. */
static bool tm_madvise(uintptr_t addr, size_t len) {
  TM_PSTAT_ADD(syscalls, 1);
  int advice = tm_release_advice();
  if (madvise((void *)addr, len, advice) == 0) return true;
  if (errno == EINVAL && advice == MADV_FREE) {
    tm_pager_opt.mode = TM_MODE_DONTNEED;
    TM_PSTAT_ADD(syscalls, 1);
    return madvise((void *)addr, len, MADV_DONTNEED) == 0;
  }
  return false;
}

/* Ranges that take a system call each (munmap, MADV_NOHUGEPAGE); the
 * others are purges, batched. */
static bool tm_rel_own_call(unsigned kind) { return kind == TM_REL_UNMAP || kind == TM_REL_NOHUGE; }

/* Ranges r[from..to) (all purges), merged where they touch, to the kernel
 * in calls of up to TM_IOV_MAX ranges. Marks each range ok. */
static void tm_release_purges(tm_release *r, unsigned from, unsigned to) {
  struct iovec iov[TM_IOV_MAX];
  unsigned first[TM_IOV_MAX]; /* r index where each iovec starts */
  unsigned i = from;
  while (i < to) {
    int fd = tm_release_pidfd();
    unsigned n = 0, j = i;
    for (; j < to; j++) {
      if (n && (uintptr_t)iov[n - 1].iov_base + iov[n - 1].iov_len == r[j].addr) {
        iov[n - 1].iov_len += r[j].len; /* touches the previous range */
        continue;
      }
      TM_ASSERT(!tm_rel_own_call(r[j].kind));
      if (n == TM_IOV_MAX) break;
      iov[n].iov_base = (void *)r[j].addr;
      iov[n].iov_len = r[j].len;
      first[n++] = j;
    }
    size_t total = 0;
    for (unsigned k = 0; k < n; k++) total += iov[k].iov_len;
    long done = -1;
    if (fd >= 0) {
      TM_PSTAT_ADD(syscalls, 1);
      done = syscall(SYS_process_madvise, fd, iov, (size_t)n, tm_release_advice(), 0u);
      if (done < 0 && (errno == ENOSYS || errno == EPERM || errno == EINVAL || errno == EBADF)) {
        /* refused: no process_madvise from here on (EINVAL: MADV_FREE not
         * taken by this kernel's process_madvise; madvise will tell) */
        int expect = fd;
        if (atomic_compare_exchange_strong(&tm_pidfd, &expect, -2)) close(fd);
      }
    }
    if (done >= 0 && (size_t)done == total) {
      atomic_store_explicit(&tm_backend, TM_REL_BACKEND_PMADV, memory_order_relaxed);
      for (unsigned k = i; k < j; k++) r[k].ok = 1;
    } else {
      /* refused, or stopped part way (it returns how far it got): the rest,
       * range by range, with madvise */
      size_t skip = done > 0 ? (size_t)done : 0;
      if (fd < 0 || done < 0) atomic_store_explicit(&tm_backend, TM_REL_BACKEND_MADV, memory_order_relaxed);
      for (unsigned k = 0; k < n; k++) {
        unsigned end = k + 1 < n ? first[k + 1] : j;
        bool ok = skip >= iov[k].iov_len || tm_madvise((uintptr_t)iov[k].iov_base, iov[k].iov_len);
        skip = skip > iov[k].iov_len ? skip - iov[k].iov_len : 0;
        for (unsigned m = first[k]; m < end; m++) r[m].ok = ok;
      }
    }
    i = j;
  }
}

size_t tm_release_run(tm_batch *b) {
  int saved = errno;
  size_t bytes = 0;
  unsigned i = 0;
  while (i < b->n) {
    TM_ASSERT(b->r[i].len > 0 && ((b->r[i].addr | b->r[i].len) & 4095) == 0 && !b->r[i].ok);
    if (tm_rel_own_call(b->r[i].kind)) {
      TM_PSTAT_ADD(syscalls, 1);
      if (b->r[i].kind == TM_REL_UNMAP)
        b->r[i].ok = munmap((void *)b->r[i].addr, b->r[i].len) == 0;
      else
        b->r[i].ok = madvise((void *)b->r[i].addr, b->r[i].len, MADV_NOHUGEPAGE) == 0;
      i++;
      continue;
    }
    unsigned j = i;
    while (j < b->n && !tm_rel_own_call(b->r[j].kind)) j++;
    tm_release_purges(b->r, i, j);
    i = j;
  }
  size_t purged = 0;
  for (i = 0; i < b->n; i++) {
    if (!b->r[i].ok) continue;
    if (b->r[i].kind == TM_REL_NOHUGE) continue; /* gives nothing back itself */
    bytes += b->r[i].len;
    if (b->r[i].kind != TM_REL_UNMAP) purged += b->r[i].len;
  }
  if (tm_pager_opt.mode == TM_MODE_FREE)
    TM_PSTAT_ADD(purged_free, purged);
  else
    TM_PSTAT_ADD(purged_dontneed, purged);
  errno = saved;
  return bytes;
}
