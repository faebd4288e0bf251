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

int tm_policy_round(uint32_t now, bool pressure) {
  tm_batch b = {0, TM_ROUND_BATCH, 0, tm_round_storage};
  tm_trim_req req = {now, pressure ? 0u : (uint32_t)tm_pager_opt.delay_ms, false, false};
  tm_due due = {false, 0};
  bool more;
  do {
    more = tm_trim_segments(&b, &req, &due);
    if (b.n) {
      tm_release_run(&b);
      TM_PSTAT_ADD(batches, 1);
    }
    tm_trim_done(&b);
  } while (more);
  if (!due.any) return -1;
  int32_t wait = (int32_t)(due.at_ms - tm_now_ms());
  return wait > 0 ? wait : 0;
}

/* Anything the next round would act on? A batch of capacity 0 fills up at
 * the first thing that could be taken now; `due` tells of what is waiting. */
bool tm_policy_pending(void) {
  tm_batch none = {0, 0, 0, NULL};
  tm_trim_req req = {tm_now_ms(), (uint32_t)tm_pager_opt.delay_ms, false, false};
  tm_due due = {false, 0};
  return tm_trim_segments(&none, &req, &due) || due.any;
}
