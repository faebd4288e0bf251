/* The pager's entry points for the front end. In this version there is no
 * pager thread yet: when a segment becomes empty, the thread that emptied
 * it releases it at once (after dropping every lock), keeping at most
 * TIDE_SEGMENT_CACHE empty segments, purged. */
#include "config.h"

#include <stdint.h>
#include <time.h>

#include "pager.h"

/* Collect, release and give back until nothing is left; returns the bytes
 * the kernel took. A small batch on the stack: callers may be on a thread
 * with a small stack, and a round of 16 ranges is already one syscall each. */
size_t tm_pager_trim_now(const tm_trim_req *req) {
  tm_release storage[16];
  tm_batch b = {0, 16, 0, storage};
  size_t bytes = 0;
  bool more;
  do {
    uint32_t next;
    more = tm_trim_segments(&b, req, &next);
    bytes += tm_release_run(&b);
    tm_trim_done(&b);
  } while (more);
  return bytes;
}

void tm_pager_freed(void) {
  if (!tm_trim_empty_hint()) return;
  tm_trim_req req = {tm_now_ms(), 0, true, false};
  tm_pager_trim_now(&req);
}
