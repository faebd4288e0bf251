#!/usr/bin/env bash
# bench/real/python.sh: python3 running an allocation-heavy script
# (alloc_heavy.py beside this file) under the allocator; see common.sh for
# the environment and the RESULT line.
#
# python3 runs under tide-rss with PYTHONMALLOC=malloc, so that every object
# allocation goes through malloc/free (pymalloc's arenas would hide the
# allocator), and PYTHONHASHSEED=0.  alloc_heavy.py SCALE ROUNDS: full run
# 250000 10 (about 20 s and 340 MB with glibc), QUICK 100000 7 (about 5 s).
#
# throughput: the script's ops_per_sec (entries built, json round trips,
# sorted, deleted, rebuilt, words counted, per second of the rounds; the
# interpreter's startup is not counted), unit ops/s.
#
# Check: the script's checksum must be the expected one (it depends only on
# SCALE and ROUNDS, not on the allocator).  The interpreter is Debian's
# /usr/bin/python3 (env PYTHON overrides it): a pyenv shim would be a shell
# script, and preloading the allocator into it would measure the shim.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

rr_init python
PY=${PYTHON:-/usr/bin/python3}
[[ -x $PY ]] || PY=$(rr_find_bin python3)
SCRIPT=$HERE/alloc_heavy.py
[[ -r $SCRIPT ]] || rr_die "$SCRIPT not found"
rr_check_malloc_binding "$PY" --version

if [[ $RR_QUICK == 1 ]]; then
	SCALE=100000 ROUNDS=7 EXPECT=340867b0
else
	SCALE=250000 ROUNDS=10 EXPECT=91a41add
fi

RR_OUT=$RR_TMP/python.out
export PYTHONMALLOC=malloc PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
rr_run_fg -- "$PY" "$SCRIPT" "$SCALE" "$ROUNDS"

line=$(grep '^alloc_heavy: ' "$RR_OUT" | tail -n 1)
[[ -n $line ]] || rr_die "alloc_heavy.py printed no result line"
field() {
	awk -v k="$1" '{ for (i = 2; i <= NF; i++) { n = index($i, "=");
		if (substr($i, 1, n - 1) == k) print substr($i, n + 1) } }' <<<"$line"
}
sum=$(field checksum)
[[ $sum == "$EXPECT" ]] || rr_die "checksum $sum, expected $EXPECT (scale=$SCALE rounds=$ROUNDS)"
thr=$(field ops_per_sec)
rr_result "$thr" ops/s
