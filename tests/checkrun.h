/* The end of every test program's main(): run a Check suite, print its
 * report, and turn the failure count into the exit status. */
#ifndef TIDE_CHECKRUN_H
#define TIDE_CHECKRUN_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* The emulator the test programs run under, or NULL where they run natively.
 * A cross build's `make check' (scripts/cross-aarch64.sh) runs them under
 * qemu-user and says so in TIDETEST_EMULATOR (tests/Makefile.am). */
static inline const char *check_emulator(void) {
  const char *e = getenv("TIDETEST_EMULATOR");
  return e && *e ? e : NULL;
}

/* What qemu-user (7.2, Debian 12) lacks, for tcase_add_test_native. */
#define EMU_THREAD_AFTER_FORK                                                                   \
  "qemu-user aborts a child forked from a multi-threaded process when the child starts a "     \
  "thread (its pager's or its own): \"cpu_exec: assertion failed: (cpu == current_cpu)\", with " \
  "glibc's malloc as well"

/* tcase_add_test for a test that needs what the emulator does not provide
 * (why: what is missing): under an emulator it is left out, with a SKIP line
 * on stderr (so in the test's .log); natively it is added as usual. */
#define tcase_add_test_native(tc, tf, why) check_add_native((tc), (tf), (why))
static inline void check_add_native(TCase *tc, const TTest *tf, const char *why) {
  const char *emu = check_emulator();
  if (emu) {
    fprintf(stderr, "SKIP under %s: %s: %s\n", emu, tf->name, why);
    return;
  }
  tcase_add_test(tc, tf);
}

/* fork: CK_FORK_GETENV (Check's default: each test in its own child unless
 * CK_FORK=no is in the environment) or CK_NOFORK (the tests share this
 * process, for state a child could not see). */
static inline int check_run(Suite *su, enum fork_status fork) {
  SRunner *sr = srunner_create(su);
  srunner_set_fork_status(sr, fork);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* TIDE_CHECKRUN_H */
