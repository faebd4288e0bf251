/* The pager's policy: what one round gives back.
 *
 * Decay: free memory goes back once it has stayed free for
 * TIDE_PAGER_DELAY_MS, so memory reused soon costs no page fault (doc/
 * design.md has the measurements behind the default). Under pressure
 * (the kernel's PSI trigger) everything free goes back at once. */
#include "config.h"

#include "pager_int.h"

#define TM_ROUND_BATCH 512 /* ranges per batch: process_madvise takes them in one call */
static tm_release tm_round_storage[TM_ROUND_BATCH];

static tm_trim_req tm_policy_req(uint32_t now, bool all) {
  tm_trim_req req = {.now_ms = now, .delay_ms = all ? 0u : (uint32_t)tm_pager_opt.delay_ms,
                     .idle_ms = (uint32_t)tm_pager_opt.idle_ms, .all = all};
  return req;
}

/* Heaps first (retiring spans frees slices), then orphans, then segments;
 * the batch is released whenever it fills, and at the end. */
size_t tm_policy_collect(const tm_trim_req *req, tm_batch *b, tm_due *due) {
  size_t bytes = 0;
  struct tm_heap *cursor = NULL;
  bool heaps = !req->empty_only, orphans = !req->empty_only;
  for (;;) {
    bool more = false;
    if (heaps) heaps = more = tm_trim_heaps(b, req, due, &cursor);
    if (!more && orphans) orphans = more = tm_trim_orphans(b, req, due);
    if (!more) more = tm_trim_segments(b, req, due);
    if (!more && !req->empty_only) more = tm_trim_huge(b, req, due);
    if (b->n) {
      bytes += tm_release_run(b);
      TM_PSTAT_ADD(batches, 1);
    }
    tm_trim_done(b);
    if (!more) return bytes;
  }
}

int tm_policy_round(uint32_t now, bool pressure) {
  tm_batch b = {0, TM_ROUND_BATCH, 0, tm_round_storage};
  tm_trim_req req = tm_policy_req(now, pressure);
  tm_due due = {false, 0};
  tm_policy_collect(&req, &b, &due);
  if (!due.any) return -1;
  int32_t wait = (int32_t)(due.at_ms - tm_now_ms());
  return wait > 0 ? wait : 0;
}

/* Anything the next round would act on? A heap that did something, or a
 * segment with something to take now or later (a batch of capacity 0 fills
 * up at the first thing that could be taken now; `due` tells of the rest). */
bool tm_policy_pending(void) {
  if (tm_trim_heaps_pending() || tm_trim_orphans_pending()) return true;
  tm_batch none = {0, 0, 0, NULL};
  tm_trim_req req = tm_policy_req(tm_now_ms(), false);
  tm_due due = {false, 0};
  return tm_trim_segments(&none, &req, &due) || tm_trim_huge(&none, &req, &due) || due.any;
}
