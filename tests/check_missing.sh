#!/bin/sh
# Run by `make check' when configure did not find Check: the C test suites
# (test_api, test_stress, test_pager, ...) were not built, so the suite is
# not complete, and that is a failure, not a skip.
echo "check_missing.sh: Check (the C unit test framework) was not found by configure;" >&2
echo "the C test suites were not built. Install it (scripts/deps.sh, Debian package 'check')" >&2
echo "and run ./configure again." >&2
exit 99
