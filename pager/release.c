/* Release backends: how a batch of ranges goes back to the kernel.
 * MADV_DONTNEED drops the pages at once (RSS falls, a later touch faults in
 * a zero page); MADV_FREE lets the kernel take them when it needs memory
 * (cheaper, but RSS does not fall until then). Whole mappings are unmapped.
 * Called with no lock held. */
#include "config.h"

#include <errno.h>
#include <sys/mman.h>

#include "pager_int.h"

#if defined(TIDE_PAGER_MODE_FREE) && defined(MADV_FREE)
#define TM_PURGE_ADVICE MADV_FREE
#define TM_PURGE_NAME "free"
#else
#define TM_PURGE_ADVICE MADV_DONTNEED
#define TM_PURGE_NAME "dontneed"
#endif

const char *tm_release_mode_name(void) { return TM_PURGE_NAME; }

size_t tm_release_run(tm_batch *b) {
  int saved = errno;
  size_t bytes = 0;
  for (unsigned i = 0; i < b->n; i++) {
    tm_release *r = &b->r[i];
    int rc = r->kind == TM_REL_UNMAP ? munmap((void *)r->addr, r->len)
                                     : madvise((void *)r->addr, r->len, TM_PURGE_ADVICE);
    TM_PSTAT_ADD(syscalls, 1);
    r->ok = rc == 0;
    if (r->ok) bytes += r->len;
  }
  errno = saved;
  return bytes;
}
