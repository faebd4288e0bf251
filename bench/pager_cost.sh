#!/usr/bin/env bash
# pager_cost.sh: what tidemalloc's background pager thread costs.
#
#  (a) throughput: the same library with the pager on (TIDE_PAGER=1, the
#      default) and off (TIDE_PAGER=0), on dist_app, random_mixed, xthread
#      and larson (the suite's arguments), N rounds, the order of on and off
#      alternating every round: medians and the ratio on/off;
#  (b) idle: bench/idle_probe (2 threads allocate about 200 MiB of mixed
#      sizes, free it all, then stay alive, blocked, for IDLE seconds) under
#      LD_PRELOAD of the library; from outside, at the start and the end of
#      the idle window (and 1 s into it), the tide-pager thread's CPU time
#      (utime+stime of /proc/PID/task/TID/stat) and context switches
#      (voluntary+nonvoluntary, /proc/PID/task/TID/status: its wakeups),
#      and the process's VmRSS.
#
# See doc/bench.md.
#
# Usage: pager_cost.sh [--rounds N] [--workloads LIST] [--idle S]
#                      [--no-throughput] [--no-idle] [--out DIR] [--quick]
#                      [--builddir DIR]
#
# The throughput runs go through bench/suite.sh (one workload, tidemalloc
# only, one round; see bench/sweep_common.sh).  Environment: BENCH_BUILDDIR,
# TIDE_LIB, TIDE_RSS, BENCH_RESULTS as for suite.sh.
#
# Exit status: 0 when everything ran; 1 when a run or the idle
# measurement failed; 2 on a usage or setup error.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=sweep_common.sh
. "$script_dir/sweep_common.sh"

DEFAULT_WORKLOADS="dist_app random_mixed xthread larson"
PROBE_MB=200
PROBE_THREADS=2

usage() {
	cat <<EOF
usage: $prog [options]
  --rounds N          rounds of the throughput part (default 7); each runs
                      every workload with the pager on and off, in the order
                      on, off in odd rounds and off, on in even ones
  --workloads LIST    suite.sh workloads of the throughput part, comma- or
                      space-separated (default: $DEFAULT_WORKLOADS)
  --idle S            length of the idle window in seconds (default 10)
  --no-throughput     skip the throughput part
  --no-idle           skip the idle part
  --out DIR           output directory (default:
                      \$BENCH_RESULTS/pager-cost-DATE-TIME, BENCH_RESULTS
                      defaulting to BENCH_BUILDDIR/results)
  --quick             pass --quick to suite.sh (a smoke test)
  --builddir DIR      where the workload binaries and idle_probe are (env
                      BENCH_BUILDDIR)
  -h, --help          this text
env: TIDE_LIB (tidemalloc library), TIDE_RSS (sampler), BENCH_RESULTS
EOF
}

orig_args=("$@")
rounds=7
workloads_arg=$DEFAULT_WORKLOADS
idle=10
do_thr=1
do_idle=1
outdir=""
builddir=${BENCH_BUILDDIR:-}

while (($# > 0)); do
	sw_common_opt "$@"
	if ((SW_USED > 0)); then
		shift "$SW_USED"
		continue
	fi
	case $1 in
	--idle) sw_need "$1" $# && idle=$2 && shift 2 ;;
	--idle=*) idle=${1#*=} && shift ;;
	--no-throughput) do_thr=0 && shift ;;
	--no-idle) do_idle=0 && shift ;;
	-h | --help) usage && exit 0 ;;
	*)
		usage >&2
		sw_die "unknown argument: $1"
		;;
	esac
done

sw_check_rounds
if ! [[ $idle =~ ^[1-9][0-9]*$ ]] || ((idle > 3600)); then
	sw_die "--idle must be a whole number of seconds in 1..3600"
fi
((do_thr || do_idle)) || sw_die "--no-throughput and --no-idle: nothing to do"
mapfile -t workloads < <(sw_words "$workloads_arg")
((!do_thr || ${#workloads[@]} > 0)) || sw_die "--workloads: no workload"

unset LD_PRELOAD
# The knobs this script sets.
unset TIDE_PAGER TIDE_SHOW_STATS
cmdline=$(sw_cmdline bench/pager_cost.sh ${orig_args[@]+"${orig_args[@]}"})
sw_setup "$builddir"
((!do_thr)) || sw_check_workloads "${workloads[@]}"
probe=$sw_builddir/idle_probe
if ((do_idle)) && [[ ! -x $probe ]]; then
	sw_die "$probe is not built (make -C bench idle_probe)"
fi
sw_make_out "$outdir" pager-cost
other_knobs=$(sw_other_knobs)
[[ -z $other_knobs ]] || sw_warn "these TIDE_ settings reach every run: $other_knobs"
clk_tck=$(getconf CLK_TCK)

failures=()
t_start=$(sw_now_ms)

# ---------------------------------------------------------------- (a) throughput
runs_csv=$sw_out/runs.csv
echo "round,workload,pager,position,ok,throughput,unit,rss_mean_kb,rss_max_kb,wall_s,pager_wakeups,release_syscalls,exit,dir" >"$runs_csv"
if ((do_thr)); then
	total=$((rounds * ${#workloads[@]} * 2))
	{
		echo "$prog: throughput, pager on and off: ${#workloads[@]} workload(s) x 2 x $rounds round(s) = $total runs"
		echo "  workloads: ${workloads[*]}"
		echo "  library: $sw_lib (copy of $sw_lib_src)"
		echo "  output: $sw_out"
	} >&2
	k=0
	for ((r = 1; r <= rounds; r++)); do
		if ((r % 2)); then order=(on off); else order=(off on); fi
		for w in "${workloads[@]}"; do
			for pos in 1 2; do
				mode=${order[$((pos - 1))]}
				k=$((k + 1))
				el=$((($(sw_now_ms) - t_start) / 1000))
				printf '[%d/%d] round %d/%d %s pager %s — elapsed %s\n' "$k" "$total" "$r" "$rounds" "$w" "$mode" "$(sw_mmss "$el")" >&2
				pv=1
				[[ $mode == on ]] || pv=0
				sw_run "r$r-$w-$mode" "$w" TIDE_PAGER=$pv TIDE_SHOW_STATS=1
				read -r -a st <<<"$s_stats"
				# st: refaulted purged syscalls wakeups reused
				echo "$r,$w,$mode,$pos,$s_ok,$s_thr,$s_unit,$s_mean,$s_max,$s_wall,${st[3]},${st[2]},$s_exit,$s_dir" >>"$runs_csv"
				if [[ $s_ok == 1 ]]; then
					printf '        %s %s, RSS mean %s max %s KiB; pager wakeups %s\n' "$s_thr" "$s_unit" "$s_mean" "$s_max" "${st[3]}" >&2
				else
					failures+=("round $r $w pager $mode: $s_why (see $sw_out/$s_dir/)")
					echo "        $s_why (see $sw_out/$s_dir/)" >&2
				fi
			done
		done
	done
fi

# col WORKLOAD MODE COLUMN: the values of COLUMN (runs.csv column number)
# of the successful runs, one a line.
col() {
	awk -F, -v w="$1" -v m="$2" -v c="$3" 'NR > 1 && $2 == w && $3 == m && $5 == 1 { print $c }' "$runs_csv"
}

# ---------------------------------------------------------------- (b) idle
idle_ok=0
idle_why=""
idle_dir=$sw_out/idle
declare -A S=()    # S[LABEL,field]
idle_threads=""
# sample LABEL PID TID: read the pager thread's and the process's counters.
sample() {
	local lab=$1 pid=$2 tid=$3 stat rest f
	S[$lab,t_us]=${EPOCHREALTIME//[!0-9]/}
	stat=$(<"/proc/$pid/task/$tid/stat")
	rest=${stat##*) }
	read -r -a f <<<"$rest"
	# rest starts at field 3 (state): utime is field 14, stime 15.
	S[$lab,utime]=${f[11]}
	S[$lab,stime]=${f[12]}
	S[$lab,vol]=$(awk '$1 == "voluntary_ctxt_switches:" { print $2 }' "/proc/$pid/task/$tid/status")
	S[$lab,nonvol]=$(awk '$1 == "nonvoluntary_ctxt_switches:" { print $2 }' "/proc/$pid/task/$tid/status")
	S[$lab,sched_ns]=$(awk '{ print $1 }' "/proc/$pid/task/$tid/schedstat" 2>/dev/null || echo NA)
	S[$lab,rss]=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status")
}

# sleep_until T_US: sleep until the wall clock reaches T_US (µs).
sleep_until() {
	local now=${EPOCHREALTIME//[!0-9]/}
	((10#$1 > 10#$now)) || return 0
	sleep "$(awk -v d=$((10#$1 - 10#$now)) 'BEGIN { printf "%.6f", d / 1e6 }')"
}

run_idle() {
	local pid tid t i rc=0 task
	mkdir -p "$idle_dir"
	echo "$prog: idle: $probe total_mb=$PROBE_MB threads=$PROBE_THREADS, idle window $idle s" >&2
	# The probe idles half a second longer than the window, so that the
	# last sample is taken while it still idles.
	env TIDE_PAGER=1 TIDE_SHOW_STATS=1 LD_PRELOAD="$sw_lib" "$probe" total_mb=$PROBE_MB \
		threads=$PROBE_THREADS idle_ms=$((idle * 1000 + 500)) >"$idle_dir/probe.out" 2>"$idle_dir/probe.err" &
	pid=$!
	for ((i = 0; i < 24000; i++)); do
		grep -q 'phase=idle_start' "$idle_dir/probe.out" && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.005
	done
	if ! grep -q 'phase=idle_start' "$idle_dir/probe.out"; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		idle_why="the probe never reached its idle period (see $idle_dir/probe.err)"
		return 0
	fi
	tid=""
	for task in /proc/"$pid"/task/*; do
		if [[ $(<"$task/comm") == tide-pager ]]; then
			tid=${task##*/}
			break
		fi
	done
	if [[ -z $tid ]]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		idle_why="no tide-pager thread in the probe (pid $pid) at the start of its idle period"
		return 0
	fi
	sample start "$pid" "$tid"
	local comm tstat tst
	for task in /proc/"$pid"/task/*; do
		comm=$(<"$task/comm")
		tstat=$(<"$task/stat")
		tst=${tstat##*) }
		idle_threads+="${idle_threads:+, }$comm ${tst%% *}"
	done
	t=${S[start,t_us]}
	sleep_until $((10#$t + 1000000))
	sample first "$pid" "$tid"
	sleep_until $((10#$t + idle * 1000000))
	sample end "$pid" "$tid"
	wait "$pid" || rc=$?
	((rc == 0)) || {
		idle_why="the probe exited with status $rc (see $idle_dir/probe.err)"
		return 0
	}
	{
		echo "sample,t_s,utime_ticks,stime_ticks,schedstat_run_ns,voluntary_ctxt_switches,nonvoluntary_ctxt_switches,vmrss_kb"
		for lab in start first end; do
			echo "$lab,$(awk -v a="${S[$lab,t_us]}" -v b="$t" 'BEGIN { printf "%.6f", (a - b) / 1e6 }'),${S[$lab,utime]},${S[$lab,stime]},${S[$lab,sched_ns]},${S[$lab,vol]},${S[$lab,nonvol]},${S[$lab,rss]}"
		done
	} >"$sw_out/idle.csv"
	idle_ok=1
}

if ((do_idle)); then
	run_idle
	[[ -z $idle_why ]] || {
		failures+=("idle: $idle_why")
		echo "$prog: idle: FAILED: $idle_why" >&2
	}
fi
total_s=$((($(sw_now_ms) - t_start) / 1000))

# ---------------------------------------------------------------- report
# idle_row NAME FROM TO: one row of the idle table.
idle_row() {
	local a=$2 b=$3
	awk -v name="$1" -v hz="$clk_tck" \
		-v t0="${S[$a,t_us]}" -v t1="${S[$b,t_us]}" \
		-v c0=$((S[$a,utime] + S[$a,stime])) -v c1=$((S[$b,utime] + S[$b,stime])) \
		-v n0="${S[$a,sched_ns]}" -v n1="${S[$b,sched_ns]}" \
		-v w0=$((S[$a,vol] + S[$a,nonvol])) -v w1=$((S[$b,vol] + S[$b,nonvol])) \
		-v r0="${S[$a,rss]}" -v r1="${S[$b,rss]}" 'BEGIN {
		len = (t1 - t0) / 1e6
		cpu = (c1 - c0) / hz
		sch = (n0 == "NA" || n1 == "NA") ? "n/a" : sprintf("%.4f%%", 100 * (n1 - n0) / 1e9 / len)
		printf "| %s | %.3f | %.2f | %.2f%% | %s | %d | %.1f | %d | %d |\n",
			name, len, cpu, 100 * cpu / len, sch, w1 - w0, (w1 - w0) / len, r0, r1
	}'
}

phase_rss() {
	sed -n "s/^idle_probe: phase=$1 t_ms=[0-9]* rss_kb=\\([0-9]*\\).*/\\1/p" "$idle_dir/probe.out"
}

report() {
	local w on off line v
	echo "## tidemalloc: the cost of the pager thread"
	echo
	echo "- date: $(date -d "@$sw_start_s" '+%Y-%m-%d %H:%M:%S %z')"
	echo "- command: \`$cmdline\`"
	echo "- machine: $(sw_machine)"
	echo "- tidemalloc: \`$sw_lib_src\` (copied to the output directory before the first run; sha256 $sw_lib_sha)${sw_commit:+, commit $sw_commit}"
	[[ -z $other_knobs ]] || echo "- other TIDE_ settings in the environment (in every run): \`$other_knobs\`"
	echo "- time: $(sw_mmss "$total_s")"
	echo
	if ((do_thr)); then
		echo "### Throughput: pager on (TIDE_PAGER=1) and off (TIDE_PAGER=0)"
		echo
		echo "$rounds rounds; each round runs every workload with the pager on and off,"
		echo "one right after the other (on first in odd rounds, off first in even ones),"
		echo "through \`bench/suite.sh --only-workloads W --only-allocs tidemalloc --rounds 1${SW_SUITE_ARGS[*]:+ ${SW_SUITE_ARGS[*]}}\`."
		echo "Medians over the successful runs; \"on / off\" is the ratio of the medians"
		echo "(below 1: the pager costs throughput), \"paired\" the median over the rounds"
		echo "of each round's on/off, with the smallest and largest. With TIDE_PAGER=0"
		echo "there is no pager thread: only wholly empty segments are given back, at"
		echo "once, by the thread that empties them."
		echo
		echo "| workload | on: throughput | off: throughput | on / off | paired on / off (min..max) | on: RSS mean KiB | off: RSS mean KiB | on: pager wakeups | ok runs on, off |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
		for w in "${workloads[@]}"; do
			on=$(col "$w" on 6 | sw_median)
			off=$(col "$w" off 6 | sw_median)
			v=$(awk -F, -v w="$w" 'NR > 1 && $2 == w && $5 == 1 { t[$1, $3] = $6 }
				END { for (k in t) { split(k, p, SUBSEP); if (p[2] == "on" && ((p[1], "off") in t) && t[p[1], "off"] > 0) print t[k] / t[p[1], "off"] } }' "$runs_csv" | sort -g |
				awk '{ v[NR] = $1 } END {
					if (NR == 0) { print "n/a"; exit }
					m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
					printf "%.3f (%.3f..%.3f)\n", m, v[1], v[NR] }')
			line="| $w | $(sw_fmt "$on") | $(sw_fmt "$off") | $(sw_ratio "$on" "$off") | $v |"
			line+=" $(sw_fmt "$(col "$w" on 8 | sw_median)") | $(sw_fmt "$(col "$w" off 8 | sw_median)") |"
			line+=" $(sw_fmt "$(col "$w" on 11 | sw_median)") |"
			line+=" $(col "$w" on 6 | wc -l)/$(awk -F, -v w="$w" 'NR > 1 && $2 == w && $3 == "on"' "$runs_csv" | wc -l),"
			line+=" $(col "$w" off 6 | wc -l)/$(awk -F, -v w="$w" 'NR > 1 && $2 == w && $3 == "off"' "$runs_csv" | wc -l) |"
			echo "$line"
		done
		echo
		echo "Throughput units: ops/s. Commands (suite.sh's):"
		echo
		for w in "${workloads[@]}"; do echo "- $w: \`${sw_cmd[$w]}\`"; done
		echo
	fi
	if ((do_idle)); then
		echo "### Idle: the pager thread while the process does nothing"
		echo
		echo "\`LD_PRELOAD=<the library> TIDE_PAGER=1 bench/idle_probe total_mb=$PROBE_MB threads=$PROBE_THREADS idle_ms=$((idle * 1000 + 500))\`:"
		echo "$PROBE_THREADS threads allocate about $PROBE_MB MiB in blocks of 16 B..4 MiB (every page"
		echo "written), each frees all of its blocks, then they stay alive, blocked on a"
		echo "barrier, while the main thread sleeps. From outside, when the probe prints"
		echo "\`phase=idle_start\`, then 1 s later and $idle s later (the window), this script"
		echo "reads the tide-pager thread's utime+stime (\`/proc/PID/task/TID/stat\`,"
		echo "$clk_tck ticks/s), its run time in ns (\`schedstat\`, for precision), its"
		echo "voluntary+nonvoluntary context switches (\`status\`: one per wakeup, at"
		echo "least) and the process's VmRSS."
		echo
		if ((idle_ok)); then
			echo "| window | length s | pager CPU s (utime+stime) | CPU % of one core | CPU % (schedstat) | wakeups (context switches) | wakeups/s | VmRSS at start KiB | VmRSS at end KiB |"
			echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
			idle_row "whole window (0..$idle s)" start end
			idle_row "first second (0..1 s)" start first
			idle_row "the rest (1..$idle s)" first end
			echo
			echo "Threads at the start of the window (comm, state): $idle_threads."
			echo "The probe's own VmRSS: after allocating $(sw_fmt "$(phase_rss after_alloc)") KiB, when idle began"
			echo "$(sw_fmt "$(phase_rss idle_start)") KiB, when it ended $(sw_fmt "$(phase_rss idle_end)") KiB."
			read -r -a st <<<"$(sw_stats "$idle_dir/probe.err")"
			v=$(awk '/^pager cpu ns *=/ { x = $NF } END { print x }' "$idle_dir/probe.err")
			echo "tidemalloc's counters at exit (the whole run): pager wakeups ${st[3]},"
			echo "release syscalls ${st[2]}, purged $(sw_mib "${st[1]}") MiB, pager CPU ${v:-n/a} ns."
		else
			echo "Not measured: $idle_why."
		fi
		echo
	fi
	sw_failures_md "Failures" "${failures[@]}"
}

report >"$sw_out/table.md"
cat "$sw_out/table.md"
echo "raw results: $sw_out (runs.csv, idle.csv, idle/, table.md, runs/*/ = each run's suite.sh output)"
sw_exit
