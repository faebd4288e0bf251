#!/usr/bin/env bash
# bench/real/redis.sh: redis-server under the allocator, driven by
# redis-benchmark on 127.0.0.1 (see common.sh for the environment and the
# RESULT line).
#
# The server (no persistence) runs under tide-rss.  redis-benchmark (not
# preloaded) runs `-n N -c 50 -P 16 -r 100000 -t set,get,incr,lpush,lpop`
# twice, with 64-byte and with 1024-byte values (N = 1,000,000; QUICK:
# 300,000).  The keyspace grows to 200,000 keys (key:* and counter:*); LPUSH
# grows one list to N values (about 1 GB at -d 1024) and LPOP empties it again,
# so the allocator has to take a large heap back.  Then FLUSHALL ASYNC frees
# the keyspace in redis's lazyfree thread (frees from another thread than the
# one that allocated), and the server idles for 1 s before SHUTDOWN NOSAVE:
# rss_final_kb is the RSS the allocator kept after everything was freed.
#
# Two extra fields on the RESULT line, both the server's VmRSS (KiB) from
# /proc/PID/status: rss_start_kb right after it first answered PING, before
# any load, and rss_flushed_kb after FLUSHALL ASYNC has finished and the 1 s
# of idle (just before SHUTDOWN).  rss_flushed_kb / rss_start_kb is how much
# of the loaded heap the allocator kept.
#
# throughput: requests per second over both runs = all requests / the time
# redis-benchmark measured for them (sum over tests of n/rps), unit req/s.
#
# Checks: redis-benchmark exits 0 (it stops at the first error reply),
# INFO stats reports total_error_replies:0 and at least as many commands as
# were sent, DBSIZE is 90-100% of 200,000 (random keys leave some out) after the runs, and the server exits 0.
#
# Debian's redis-server is linked with libjemalloc: for ALLOC=glibc the
# script preloads libc.so.6 so that glibc malloc is measured (common.sh,
# rr_use_libc_malloc_if_linked).  Redis still calls mallctl and nallocx
# (statistics and size hints) from the linked jemalloc under every allocator.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

rr_init redis
SERVER=$(rr_find_bin redis-server)
BENCH=$(rr_find_bin redis-benchmark)
CLI=$(rr_find_bin redis-cli)
rr_use_libc_malloc_if_linked "$SERVER"
rr_check_malloc_binding "$SERVER" --version

if [[ $RR_QUICK == 1 ]]; then N=300000; else N=1000000; fi
SIZES=(64 1024)
TESTS=set,get,incr,lpush,lpop
NTESTS=5
KEYSPACE=100000

PORT=$(rr_free_port 21000 21999)
rr_start_server -- "$SERVER" --port "$PORT" --bind 127.0.0.1 --daemonize no \
	--save '' --appendonly no --dir "$RR_TMP" --logfile '' --loglevel notice \
	--protected-mode yes
rr_wait_port "$PORT" 20
SPID=$(rr_server_pid)
rr_log "redis-server pid $SPID on port $PORT"

cli() {
	"$CLI" -h 127.0.0.1 -p "$PORT" "$@"
}
info_field() { # info_field SECTION FIELD
	cli info "$1" | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'
}

pong=$(cli ping) || rr_die "redis-cli ping failed"
[[ $pong == PONG ]] || rr_die "PING answered '$pong'"
rss_start=$(rr_vmrss_kb "$SPID")
rr_log "redis-server VmRSS before any load: $rss_start kB"

total_req=0
total_time=0
for d in "${SIZES[@]}"; do
	rr_log "redis-benchmark -n $N -c 50 -P 16 -r $KEYSPACE -d $d -t $TESTS"
	csv=$RR_TMP/bench-$d.csv
	"$BENCH" -h 127.0.0.1 -p "$PORT" -n "$N" -c 50 -P 16 -r "$KEYSPACE" -d "$d" \
		-t "$TESTS" --csv >"$csv" 2>>"$RR_LOG" || {
		cat "$csv" >>"$RR_LOG"
		rr_die "redis-benchmark -d $d failed"
	}
	cat "$csv" >>"$RR_LOG"
	# "TEST","rps",...: one line per test, rps > 0 for all NTESTS tests.
	read -r ntests secs < <(awk -F, -v n="$N" 'NR > 1 {
		gsub(/"/, ""); if ($2 + 0 <= 0) { bad = 1 } t++; s += n / $2 }
		END { if (bad) t = -1; printf "%d %.6f\n", t, s }' "$csv")
	[[ $ntests == "$NTESTS" ]] || rr_die "redis-benchmark -d $d: expected $NTESTS tests with rps > 0, got $ntests"
	total_req=$((total_req + NTESTS * N))
	total_time=$(awk -v a="$total_time" -v b="$secs" 'BEGIN { printf "%.6f", a + b }')
done

errs=$(info_field stats total_error_replies)
[[ $errs == 0 ]] || rr_die "redis reports total_error_replies=$errs"
cmds=$(info_field stats total_commands_processed)
[[ -n $cmds ]] || rr_die "no total_commands_processed in INFO stats"
((cmds >= total_req)) || rr_die "redis processed $cmds commands, fewer than the $total_req sent"
dbsize=$(cli dbsize)
# 2N random draws each for key:* (SET) and counter:* (INCR) out of KEYSPACE:
# all but a fraction exp(-2N/KEYSPACE) of the keys exist (0.25% at QUICK).
if ! [[ $dbsize =~ ^[0-9]+$ ]] || ((dbsize > 2 * KEYSPACE || dbsize * 100 < 2 * KEYSPACE * 90)); then
	rr_die "DBSIZE is $dbsize, expected 90..100% of $((2 * KEYSPACE))"
fi
rr_log "requests=$total_req commands=$cmds dbsize=$dbsize used_memory=$(info_field memory used_memory) rss_redis=$(info_field memory used_memory_rss)"

# Free everything from the lazyfree thread, wait for it, idle 1 s.
[[ $(cli flushall async) == OK ]] || rr_die "FLUSHALL ASYNC failed"
for ((i = 0; i < 300; i++)); do
	pending=$(info_field memory lazyfree_pending_objects)
	[[ $pending != 0 ]] || break
	sleep 0.1
done
[[ $pending == 0 ]] || rr_die "lazyfree_pending_objects still $pending after 30 s"
[[ $(cli dbsize) == 0 ]] || rr_die "DBSIZE is not 0 after FLUSHALL"
sleep 1
rss_flushed=$(rr_vmrss_kb "$SPID")
rr_log "after flushall: used_memory=$(info_field memory used_memory) rss_redis=$(info_field memory used_memory_rss) VmRSS=$rss_flushed kB"

cli shutdown nosave >>"$RR_LOG" 2>&1 || true
rr_wait_server 30

thr=$(awk -v r="$total_req" -v t="$total_time" 'BEGIN { printf "%.0f", r / t }')
rr_result "$thr" req/s rss_start_kb="$rss_start" rss_flushed_kb="$rss_flushed"
