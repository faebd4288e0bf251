/* The pager's policy: what one round gives back.
 *
 * Decay: free memory goes back once it has stayed free for
 * TIDE_PAGER_DELAY_MS, so memory reused soon costs no page fault (doc/
 * design.md has the measurements behind the default).
 * Pressure: when the kernel's PSI trigger fires (tasks stalled on memory),
 * everything free goes back at once.
 * Budget: near TIDE_RSS_LIMIT (the process's RSS) or the cgroup's limit
 * (memory.high/max, or v1's limit; the cgroup's usage), everything free
 * goes back at once, and the pager keeps watching every 100 ms until the
 * process is below it again: memory is purged before the heap grows. */
#include "config.h"

#include <stdint.h>

#include "pager_int.h"

#define TM_PSI_STALL_US 150000u  /* 150 ms of stall ... */
#define TM_PSI_WINDOW_US 1000000u /* ... within 1 s (2 s where only that is allowed) */
#define TM_TIGHT_PERMILLE 900u    /* tight above 90% of the budget */
#define TM_TIGHT_POLL_MS 100
#define TM_LIMIT_REREAD_MS 10000u /* cgroup limits change rarely: read them every 10 s */

static int tm_psi_fd = -1;

/* THP "always": khugepaged collapses a 2 MiB range back into a huge page
 * once any page of it is present (max_ptes_none is 511 by default), filling
 * every hole the pager purged with zeroes again: measured here with
 * khugepaged scanning every 100 ms, 90% of 64 MiB freed and purged came back
 * within a second. So a segment the pager starts to purge page by page gets
 * MADV_NOHUGEPAGE first (tm_trim_span_pages); whole free slices and empty
 * segments are purged without it. Read once, when the thread starts. */
static bool tm_thp_always;

int tm_policy_open(void) {
  if (tm_pager_opt.psi && tm_psi_fd < 0) tm_psi_fd = tm_psi_open(TM_PSI_STALL_US, TM_PSI_WINDOW_US);
  tm_thp_always = tm_thp_mode_always();
  return tm_psi_fd;
}

void tm_policy_after_fork(void) {
  tm_psi_close(tm_psi_fd); /* the parent's trigger: the child arms its own */
  tm_psi_fd = -1;
}

/* ---- the budget --------------------------------------------------------------- */
static size_t tm_cg_limit = SIZE_MAX;
static uint32_t tm_cg_read_ms;
static bool tm_cg_read;

/* Is the process near its budget? Read on every round (a read of statm, or
 * of the cgroup's usage): the budget is only worth having if it is watched. */
static bool tm_policy_tight(uint32_t now) {
  if (!tm_cg_read || (uint32_t)(now - tm_cg_read_ms) >= TM_LIMIT_REREAD_MS) {
    tm_cg_limit = tm_memory_limit();
    tm_cg_read_ms = now;
    tm_cg_read = true;
  }
  size_t own = tm_pager_opt.rss_limit;
  bool tight = false;
  if (own) tight = tm_rss_bytes() / TM_TIGHT_PERMILLE >= own / 1000u;
  if (!tight && tm_cg_limit != SIZE_MAX) tight = tm_memory_usage() / TM_TIGHT_PERMILLE >= tm_cg_limit / 1000u;
  size_t limit = own && own < tm_cg_limit ? own : tm_cg_limit;
  __atomic_store_n(&tm_pstat.limit, limit == SIZE_MAX ? 0 : (uint64_t)limit, __ATOMIC_RELAXED);
  if (tight) TM_PSTAT_ADD(tight, 1);
  return tight;
}

#define TM_ROUND_BATCH 512 /* ranges per batch: process_madvise takes them in one call */
static tm_release tm_round_storage[TM_ROUND_BATCH];

static tm_trim_req tm_policy_req(uint32_t now, bool all) {
  tm_trim_req req = {.now_ms = now, .delay_ms = all ? 0u : (uint32_t)tm_pager_opt.delay_ms,
                     .idle_ms = (uint32_t)tm_pager_opt.idle_ms, .all = all, .nohuge = tm_thp_always};
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
    TM_ASSERT(b->n <= b->cap);
    if (b->n) {
      bytes += tm_release_run(b);
      TM_PSTAT_ADD(batches, 1);
    }
    tm_trim_done(b);
    TM_ASSERT(b->n == 0 && b->bytes == 0);
    if (!more) return bytes;
  }
}

int tm_policy_round(uint32_t now, bool pressure) {
  tm_batch b = {0, TM_ROUND_BATCH, 0, tm_round_storage};
  if (pressure) TM_PSTAT_ADD(pressure, 1);
  bool tight = tm_policy_tight(now);
  tm_trim_req req = tm_policy_req(now, pressure || tight);
  tm_due due = {false, 0};
  tm_policy_collect(&req, &b, &due);
  if (tight) tm_due_at(&due, now + TM_TIGHT_POLL_MS);
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
