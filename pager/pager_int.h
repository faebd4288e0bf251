/* Declarations shared by the pager's own modules (the files of pager/). The front end
 * never includes this: it talks to the pager through pager.h only. */
#ifndef TIDE_PAGER_INT_H
#define TIDE_PAGER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pager.h"
#include "pressure.h"
#include "tm_assert.h"

#define TM_PAGER_LIKELY(x) __builtin_expect(!!(x), 1)

/* ---- event loop (loop.c) ---------------------------------------------------- */
enum { TM_EV_WAKE = 1, TM_EV_TIMEOUT = 2, TM_EV_PRESSURE = 4, TM_EV_ERROR = 8 };
bool tm_loop_open(int psi_fd, bool allow_uring);
unsigned tm_loop_backend(void); /* TM_LOOP_* (pager.h) */
bool tm_loop_has_psi(void);     /* a PSI trigger is armed */
unsigned tm_loop_wait(int timeout_ms);
void tm_loop_wake(void);
void tm_loop_after_fork(void);

/* ---- policy (policy.c) ------------------------------------------------------ */
/* One round of work at time now; returns milliseconds until the next round
 * is due, or -1 when nothing is pending. `pressure`: the kernel asked. */
int tm_policy_round(uint32_t now, bool pressure);
/* The pager thread starts / a fork child forgets: the PSI descriptor. */
int tm_policy_open(void);
void tm_policy_after_fork(void);
/* Collect, release and give back what req asks for, in batches of b;
 * returns the bytes the kernel took. */
size_t tm_policy_collect(const tm_trim_req *req_in, tm_batch *b, tm_due *due);
/* The decay delay after a window that purged `purged` bytes of which
 * `reused` came back, from `cur`, for TIDE_PAGER_DELAY_MS `base`. */
uint32_t tm_delay_next(uint32_t cur, uint32_t base, uint64_t purged, uint64_t reused);
/* Before sleeping without a deadline: has anything happened since the last
 * round that the round would act on? */
bool tm_policy_pending(void);

/* ---- statistics (thread.c) ---------------------------------------------------- */
extern tm_pager_stats tm_pstat;
#define TM_PSTAT_ADD(f, v) __atomic_fetch_add(&tm_pstat.f, (v), __ATOMIC_RELAXED)

#endif
