/* The end of every test program's main(): run a Check suite, print its
 * report, and turn the failure count into the exit status. */
#ifndef TIDE_CHECKRUN_H
#define TIDE_CHECKRUN_H

#include <check.h>
#include <stdlib.h>

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
