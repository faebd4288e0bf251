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
 * process is below it again: memory is purged before the heap grows.
 * The delay adapts: see "the delay" below. */
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

/* ---- the delay -----------------------------------------------------------------
 * A fixed delay is wrong both ways. A program that frees and allocates again
 * on a cycle longer than the delay pays a page fault for every page of every
 * cycle (python's alloc_heavy at 100 ms: 1.86 GB purged, 1.82 GB of it
 * faulted back in, 4-10% of its time); a long fixed delay holds memory that
 * never comes back. So the delay follows what purging earns: over windows of
 * at least 250 ms and of the delay in force, the pager compares the bytes it
 * purged with the purged bytes handed out again (refaulted pages of spans,
 * reused purged slices). Half or more came back: the delay doubles, up to 10
 * times TIDE_PAGER_DELAY_MS and at most 1 s. Under a quarter: it halves, down
 * to TIDE_PAGER_DELAY_MS. Once no heap has taken a slow path for idle_ms the
 * process is idle, and the delay drops to TIDE_PAGER_DELAY_MS at once: an
 * idle process gets its memory back as fast as without any of this.
 * TIDE_PAGER_DELAY_MS=0 (purge at once) never adapts. */
#define TM_DELAY_FACTOR 10u
#define TM_DELAY_CAP_MS 1000u
#define TM_DELAY_WINDOW_MS 250u
#define TM_DELAY_MIN_PURGED ((uint64_t)1 << 20) /* a window that purged less tells nothing */

uint32_t tm_delay_next(uint32_t cur, uint32_t base, uint64_t purged, uint64_t reused) {
  uint32_t max = base * TM_DELAY_FACTOR; /* base <= 600000: no overflow */
  if (max > TM_DELAY_CAP_MS) max = TM_DELAY_CAP_MS;
  if (max < base) max = base;
  if (cur < base) cur = base;
  if (cur > max) cur = max;
  if (purged < TM_DELAY_MIN_PURGED) return cur;
  if (reused >= purged / 2) return cur * 2 < max ? cur * 2 : max;
  if (reused < purged / 4) return cur / 2 > base ? cur / 2 : base;
  return cur;
}

/* One writer: the trimmer's turn. */
static bool tm_delay_started;
static uint32_t tm_delay_cur, tm_delay_since_ms;
static uint64_t tm_delay_purged0, tm_delay_reused0;

static uint64_t tm_purged_total(void) {
  return __atomic_load_n(&tm_pstat.purged_dontneed, __ATOMIC_RELAXED) +
         __atomic_load_n(&tm_pstat.purged_free, __ATOMIC_RELAXED);
}

static uint32_t tm_delay_now(void) { return tm_delay_started ? tm_delay_cur : (uint32_t)tm_pager_opt.delay_ms; }

/* After a round: `busy`, some heap took a slow path within idle_ms. */
static void tm_delay_update(uint32_t now, bool busy) {
  TM_ASSERT(tm_pager_turn_held());
  uint32_t base = (uint32_t)tm_pager_opt.delay_ms;
  uint64_t purged = tm_purged_total(), reused = tm_trim_reused_bytes();
  uint32_t window = tm_delay_cur > TM_DELAY_WINDOW_MS ? tm_delay_cur : TM_DELAY_WINDOW_MS;
  if (tm_delay_started && busy && (int32_t)(now - tm_delay_since_ms) < (int32_t)window) return;
  uint32_t next = base; /* idle, or the first round: a fresh window at the knob's delay */
  if (tm_delay_started && busy) next = tm_delay_next(tm_delay_cur, base, purged - tm_delay_purged0, reused - tm_delay_reused0);
  if (tm_delay_started && next > tm_delay_cur) TM_PSTAT_ADD(raised, 1);
  tm_delay_started = true;
  tm_delay_cur = next;
  tm_delay_since_ms = now;
  tm_delay_purged0 = purged;
  tm_delay_reused0 = reused;
  __atomic_store_n(&tm_pstat.delay_ms, (uint64_t)next, __ATOMIC_RELAXED);
}

void tm_policy_after_fork(void) {
  tm_psi_close(tm_psi_fd); /* the parent's trigger: the child arms its own */
  tm_psi_fd = -1;
  tm_delay_started = false; /* the child's own program decides */
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
  tm_trim_req req = {.now_ms = now, .delay_ms = all ? 0u : tm_delay_now(),
                     .idle_ms = (uint32_t)tm_pager_opt.idle_ms, .all = all, .nohuge = tm_thp_always};
  return req;
}

/* Heaps first (retiring spans frees slices), then orphans, then segments;
 * the batch is released whenever it fills, and at the end. When the heaps
 * turn out idle, the rest goes with the knob's delay (see "the delay"). */
size_t tm_policy_collect(const tm_trim_req *req_in, tm_batch *b, tm_due *due) {
  tm_trim_req r = *req_in, *req = &r;
  uint32_t base = (uint32_t)tm_pager_opt.delay_ms;
  size_t bytes = 0;
  struct tm_heap *cursor = NULL;
  bool heaps = !req->empty_only, orphans = !req->empty_only;
  for (;;) {
    bool more = false;
    if (heaps) heaps = more = tm_trim_heaps(b, req, due, &cursor);
    if (!heaps && !due->busy && r.delay_ms > base) r.delay_ms = base;
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
  tm_due due = {false, 0, false};
  tm_policy_collect(&req, &b, &due);
  tm_delay_update(now, due.busy);
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
  tm_due due = {false, 0, false};
  return tm_trim_segments(&none, &req, &due) || tm_trim_huge(&none, &req, &due) || due.any;
}
