/* Debug-build assertions (--enable-debug): internal invariants, never user
 * errors. Shared by the front end (internal.h) and the pager (pager_int.h);
 * a failure prints the condition and its place, then aborts (report.c). */
#ifndef TIDE_TM_ASSERT_H
#define TIDE_TM_ASSERT_H

#include "config.h"

#ifndef TIDE_DEBUG
#define TIDE_DEBUG 0
#endif
#ifndef TIDE_HARDENED
#define TIDE_HARDENED 0
#endif

#if TIDE_DEBUG
#define TM_ASSERT(cond) (__builtin_expect(!!(cond), 1) ? (void)0 : tm_assert_fail(#cond, __FILE__, __LINE__))
#else
#define TM_ASSERT(cond) ((void)0)
#endif
void tm_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn, cold));

#endif
