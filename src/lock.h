/* A tiny test-and-test-and-set spinlock for the allocator's rare global
 * sections. Not a pthread mutex: it must be resettable in a fork child and
 * usable before libc is fully initialized. Holders never call into libc. */
#ifndef TIDE_LOCK_H
#define TIDE_LOCK_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

static inline void tm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

typedef struct {
  atomic_int held;
} tm_lock_t;

#define TM_LOCK_INIT {0}

static inline bool tm_lock_try(tm_lock_t *l) {
  return atomic_load_explicit(&l->held, memory_order_relaxed) == 0 &&
         atomic_exchange_explicit(&l->held, 1, memory_order_acquire) == 0;
}

static inline void tm_lock(tm_lock_t *l) {
  unsigned spins = 0;
  while (!tm_lock_try(l)) {
    if (++spins < 64) {
      tm_cpu_relax();
    } else {
      sched_yield();  /* raw syscall wrapper; takes no libc lock */
      spins = 0;
    }
  }
}

static inline void tm_unlock(tm_lock_t *l) {
  atomic_store_explicit(&l->held, 0, memory_order_release);
}

static inline bool tm_lock_is_held(tm_lock_t *l) {
  return atomic_load_explicit(&l->held, memory_order_relaxed) != 0;
}

#endif
