#!/usr/bin/env bash
# delay_sweep.sh: tidemalloc under a list of TIDE_PAGER_DELAY_MS values (how
# long free memory stays before the pager gives it back), on a list of the
# suite's workloads: throughput, RSS, and tidemalloc's own counters
# (malloc_stats() at exit, TIDE_SHOW_STATS=1) per (workload, delay).
# See doc/bench.md.
#
# Usage: delay_sweep.sh [--delays "LIST"] [--workloads LIST] [--rounds N]
#                       [--rounds-for NAME=N] [--ref MS] [--out DIR] [--quick]
#                       [--builddir DIR]
#
# Every run goes through bench/suite.sh (one workload, tidemalloc only,
# one round; see bench/sweep_common.sh), so the workloads run with the
# suite's arguments and checks.  Each round runs every workload, and each
# workload under every delay before the next workload; the order of the
# delays is rotated by one every round.
#
# Environment: BENCH_BUILDDIR, TIDE_LIB, TIDE_RSS, BENCH_RESULTS as for
# suite.sh.  Other TIDE_ knobs in the environment reach every run (they are
# listed in the report).
#
# Exit status: 0 when every run succeeded; 1 when some run failed (the
# others still run; the failures are listed); 2 on a usage or setup error.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=sweep_common.sh
. "$script_dir/sweep_common.sh"

DEFAULT_DELAYS="0 10 50 100 250 1000"
DEFAULT_WORKLOADS="dist_app random_mixed churn lifetimes burst_idle malloc_large redis python sqlite"

usage() {
	cat <<EOF
usage: $prog [options]
  --delays "LIST"     TIDE_PAGER_DELAY_MS values, space- or comma-separated
                      (default: $DEFAULT_DELAYS)
  --workloads LIST    suite.sh workloads, comma- or space-separated (default:
                      $DEFAULT_WORKLOADS)
  --rounds N          rounds (default 3); each runs every (workload, delay)
                      pair once, the delay order rotated by one every round
  --rounds-for NAME=N at most N rounds for workload NAME (repeatable), e.g.
                      to give a slow real program fewer rounds
  --ref MS            the delay the ratios are taken against (default 100,
                      tidemalloc's default)
  --out DIR           output directory (default:
                      \$BENCH_RESULTS/delay-sweep-DATE-TIME, BENCH_RESULTS
                      defaulting to BENCH_BUILDDIR/results)
  --quick             pass --quick to suite.sh (short real programs, smaller
                      malloc_large): a smoke test, not a measurement
  --builddir DIR      where the workload binaries are (env BENCH_BUILDDIR)
  -h, --help          this text
env: TIDE_LIB (tidemalloc library), TIDE_RSS (sampler), BENCH_RESULTS
EOF
}

orig_args=("$@")
delays_arg=$DEFAULT_DELAYS
workloads_arg=$DEFAULT_WORKLOADS
rounds=3
ref=100
outdir=""
builddir=${BENCH_BUILDDIR:-}
declare -A rounds_for=()

while (($# > 0)); do
	sw_common_opt "$@"
	if ((SW_USED > 0)); then
		shift "$SW_USED"
		continue
	fi
	case $1 in
	--delays) sw_need "$1" $# && delays_arg=$2 && shift 2 ;;
	--delays=*) delays_arg=${1#*=} && shift ;;
	--rounds-for) sw_need "$1" $# && rounds_for[${2%%=*}]=${2#*=} && shift 2 ;;
	--ref) sw_need "$1" $# && ref=$2 && shift 2 ;;
	--ref=*) ref=${1#*=} && shift ;;
	-h | --help) usage && exit 0 ;;
	*)
		usage >&2
		sw_die "unknown argument: $1"
		;;
	esac
done

sw_check_rounds
[[ $ref =~ ^[0-9]+$ ]] || sw_die "--ref must be a delay in ms"
mapfile -t delays < <(sw_words "$delays_arg")
mapfile -t workloads < <(sw_words "$workloads_arg")
((${#delays[@]} > 0)) || sw_die "--delays: no delay"
((${#workloads[@]} > 0)) || sw_die "--workloads: no workload"
for d in "${delays[@]}"; do
	if ! [[ $d =~ ^[0-9]+$ ]] || ((10#$d > 600000)); then
		sw_die "--delays: '$d' is not a delay in 0..600000 ms"
	fi
done
declare -A seen=()
for d in "${delays[@]}"; do
	[[ ! -v "seen[$d]" ]] || sw_die "--delays: $d is given twice"
	seen[$d]=1
done
for w in "${!rounds_for[@]}"; do
	[[ ${rounds_for[$w]} =~ ^[1-9][0-9]*$ ]] || sw_die "--rounds-for $w: not a positive integer: ${rounds_for[$w]}"
done

unset LD_PRELOAD
# The two knobs this script sets for every run.
unset TIDE_PAGER_DELAY_MS TIDE_SHOW_STATS
cmdline=$(sw_cmdline bench/delay_sweep.sh ${orig_args[@]+"${orig_args[@]}"})
sw_setup "$builddir"
sw_check_workloads "${workloads[@]}"
for w in "${!rounds_for[@]}"; do
	in_wls=0
	for x in "${workloads[@]}"; do [[ $x == "$w" ]] && in_wls=1; done
	((in_wls)) || sw_die "--rounds-for: '$w' is not one of the workloads"
done
sw_make_out "$outdir" delay-sweep
other_knobs=$(sw_other_knobs)
[[ -z $other_knobs ]] || sw_warn "these TIDE_ settings reach every run: $other_knobs"

# rounds_of WORKLOAD: its number of rounds.
rounds_of() {
	local n=$rounds
	if [[ -v "rounds_for[$1]" ]] && ((rounds_for[$1] < n)); then n=${rounds_for[$1]}; fi
	echo "$n"
}

nd=${#delays[@]}
total_runs=0
for w in "${workloads[@]}"; do
	total_runs=$((total_runs + $(rounds_of "$w") * nd))
done

runs_csv=$sw_out/runs.csv
echo "round,workload,delay_ms,ok,throughput,unit,rss_mean_kb,rss_p95_kb,rss_max_kb,rss_final_kb,wall_s,$(
	IFS=,
	echo "${SW_STAT_COLS[*]}"
),exit,dir" >"$runs_csv"
{
	echo "$prog: ${#workloads[@]} workload(s) x $nd delay(s), $rounds round(s): $total_runs runs"
	echo "  workloads: ${workloads[*]}"
	echo "  delays (ms): ${delays[*]}"
	echo "  library: $sw_lib (copy of $sw_lib_src)"
	echo "  output: $sw_out"
} >&2

failures=()
declare -A wl_ms=() wl_n=()
done_ms=0
done_n=0
k=0
t_start=$(sw_now_ms)

# left_s: seconds left, from the mean run time of each workload so far
# (for a workload that has not run yet: a guess of 20 s for a real program,
# 6 s with --quick, else the mean of all runs; -1 before the first run).
left_s() {
	local w left=0 per rem
	((done_n > 0)) || {
		echo -1
		return
	}
	for w in "${workloads[@]}"; do
		rem=$(($(rounds_of "$w") * nd - ${wl_n[$w]:-0}))
		if ((${wl_n[$w]:-0} > 0)); then
			per=$((wl_ms[$w] / wl_n[$w]))
		elif [[ ${sw_kind[$w]} == real ]]; then
			per=20000
			[[ " ${SW_SUITE_ARGS[*]} " != *" --quick "* ]] || per=6000
		else
			per=$((done_ms / done_n))
		fi
		left=$((left + rem * per))
	done
	echo $((left / 1000))
}

for ((r = 1; r <= rounds; r++)); do
	for w in "${workloads[@]}"; do
		(($(rounds_of "$w") >= r)) || continue
		for ((j = 0; j < nd; j++)); do
			d=${delays[$(((j + r - 1) % nd))]}
			k=$((k + 1))
			el=$((($(sw_now_ms) - t_start) / 1000))
			left=$(left_s)
			if ((left < 0)); then lt="~??:?? left"; else lt="~$(sw_mmss "$left") left"; fi
			printf '[%d/%d] round %d/%d %s delay=%s ms — elapsed %s, %s\n' "$k" "$total_runs" \
				"$r" "$(rounds_of "$w")" "$w" "$d" "$(sw_mmss "$el")" "$lt" >&2
			t0=$(sw_now_ms)
			sw_run "r$r-$w-d$d" "$w" TIDE_PAGER_DELAY_MS="$d" TIDE_SHOW_STATS=1
			dt=$(($(sw_now_ms) - t0))
			wl_ms[$w]=$((${wl_ms[$w]:-0} + dt))
			wl_n[$w]=$((${wl_n[$w]:-0} + 1))
			done_ms=$((done_ms + dt))
			done_n=$((done_n + 1))
			echo "$r,$w,$d,$s_ok,$s_thr,$s_unit,$s_mean,$s_p95,$s_max,$s_final,$s_wall,${s_stats// /,},$s_exit,$s_dir" >>"$runs_csv"
			if [[ $s_ok == 1 ]]; then
				read -r -a st <<<"$s_stats"
				printf '        %s %s, RSS mean %s final %s KiB; refaulted %s MiB, purged %s MiB, %s syscalls, %s wakeups; %.1f s\n' \
					"$s_thr" "$s_unit" "$s_mean" "$s_final" "$(sw_mib "${st[0]}")" "$(sw_mib "${st[1]}")" \
					"${st[2]}" "${st[3]}" "$(awk -v t="$dt" 'BEGIN { print t / 1000 }')" >&2
			else
				failures+=("round $r $w delay=$d: $s_why (see $sw_out/$s_dir/)")
				echo "        $s_why (see $sw_out/$s_dir/)" >&2
			fi
		done
	done
done
sweep_s=$((($(sw_now_ms) - t_start) / 1000))

# ---------------------------------------------------------------- medians
# medians.csv: per (workload, delay), in the order of the lists, the
# median of every numeric column over the successful runs.
medians_csv=$sw_out/medians.csv
cols=(throughput rss_mean_kb rss_p95_kb rss_max_kb rss_final_kb wall_s "${SW_STAT_COLS[@]}")
# column numbers in runs.csv
declare -A colno=()
IFS=, read -r -a hdr <<<"$(head -n 1 "$runs_csv")"
for i in "${!hdr[@]}"; do colno[${hdr[$i]}]=$((i + 1)); done

declare -A MED=()
{
	printf 'workload,delay_ms,ok_runs,runs,unit'
	printf ',%s' "${cols[@]}"
	echo
	for w in "${workloads[@]}"; do
		for d in "${delays[@]}"; do
			nok=$(awk -F, -v w="$w" -v d="$d" 'NR > 1 && $2 == w && $3 == d && $4 == 1' "$runs_csv" | wc -l)
			nr=$(awk -F, -v w="$w" -v d="$d" 'NR > 1 && $2 == w && $3 == d' "$runs_csv" | wc -l)
			unit=$(awk -F, -v w="$w" -v d="$d" 'NR > 1 && $2 == w && $3 == d && $4 == 1 { print $6; exit }' "$runs_csv")
			MED[$w,$d,ok]=$nok
			MED[$w,$d,runs]=$nr
			MED[$w,$d,unit]=${unit:-NA}
			line="$w,$d,$nok,$nr,${unit:-NA}"
			for c in "${cols[@]}"; do
				v=$(awk -F, -v w="$w" -v d="$d" -v c="${colno[$c]}" 'NR > 1 && $2 == w && $3 == d && $4 == 1 { print $c }' "$runs_csv" | sw_median)
				MED[$w,$d,$c]=$v
				line+=",$v"
			done
			echo "$line"
		done
	done
} >"$medians_csv"

# ---------------------------------------------------------------- report
ref_in=0
for d in "${delays[@]}"; do [[ $d == "$ref" ]] && ref_in=1; done

report() {
	local w d line v nok nr unit t m
	echo "## tidemalloc: TIDE_PAGER_DELAY_MS sweep"
	echo
	echo "- date: $(date -d "@$sw_start_s" '+%Y-%m-%d %H:%M:%S %z')"
	echo "- command: \`$cmdline\`"
	echo "- rounds: $rounds (every round runs each workload under each delay; the delay order is rotated by one every round)"
	for w in "${workloads[@]}"; do
		[[ $(rounds_of "$w") == "$rounds" ]] || echo "  - $w: only $(rounds_of "$w") of the rounds (--rounds-for)"
	done
	echo "- machine: $(sw_machine)"
	echo "- tidemalloc: \`$sw_lib_src\` (copied to the output directory before the first run; sha256 $sw_lib_sha)${sw_commit:+, commit $sw_commit}"
	echo "- every run: tidemalloc only, through \`bench/suite.sh --only-workloads W --only-allocs tidemalloc --rounds 1${SW_SUITE_ARGS[*]:+ ${SW_SUITE_ARGS[*]}}\` with \`TIDE_PAGER_DELAY_MS=D TIDE_SHOW_STATS=1\`; RSS from tide-rss every 10 ms (VmRSS, KiB)"
	[[ -z $other_knobs ]] || echo "- other TIDE_ settings in the environment (in every run): \`$other_knobs\`"
	echo "- sweep time: $(sw_mmss "$sweep_s") for $k runs"
	echo
	echo "Medians over the successful runs. \"vs $ref\": the median divided by the"
	echo "median at delay $ref ms of the same workload (throughput above 1: faster; RSS"
	echo "above 1: more memory). The counters are tidemalloc's own, from"
	echo "\`malloc_stats()\` at exit: bytes that were given back and faulted in again"
	echo "(refaulted), bytes given back (purged), \`madvise\`/\`munmap\` calls of the"
	echo "pager (release syscalls), pager wakeups, and bytes of purged slices"
	echo "reused; MiB = 2^20 bytes. \`n/a\`: no value (no successful run, or no"
	echo "\`malloc_stats()\` output)."
	echo
	((ref_in)) || {
		echo "(The reference delay $ref ms was not among the delays: no ratios.)"
		echo
	}
	echo "### Summary: geometric mean over the workloads, relative to delay $ref ms"
	echo
	echo "| delay ms | throughput vs $ref | RSS mean vs $ref | final RSS vs $ref | workloads |"
	echo "|---:|---:|---:|---:|---:|"
	for d in "${delays[@]}"; do
		local ls_t=0 ls_m=0 ls_f=0 n_t=0 n_m=0 n_f=0 x
		for w in "${workloads[@]}"; do
			x=$(sw_ratio "${MED[$w,$d,throughput]}" "${MED[$w,$ref,throughput]:-NA}")
			[[ $x == n/a ]] || {
				ls_t=$(awk -v s="$ls_t" -v x="$x" 'BEGIN { print s + log(x) }')
				n_t=$((n_t + 1))
			}
			x=$(sw_ratio "${MED[$w,$d,rss_mean_kb]}" "${MED[$w,$ref,rss_mean_kb]:-NA}")
			[[ $x == n/a ]] || {
				ls_m=$(awk -v s="$ls_m" -v x="$x" 'BEGIN { print s + log(x) }')
				n_m=$((n_m + 1))
			}
			x=$(sw_ratio "${MED[$w,$d,rss_final_kb]}" "${MED[$w,$ref,rss_final_kb]:-NA}")
			[[ $x == n/a ]] || {
				ls_f=$(awk -v s="$ls_f" -v x="$x" 'BEGIN { print s + log(x) }')
				n_f=$((n_f + 1))
			}
		done
		line="| $d |"
		for x in "$ls_t $n_t" "$ls_m $n_m" "$ls_f $n_f"; do
			line+=" $(awk -v s="${x% *}" -v n="${x#* }" 'BEGIN { if (n == 0) print "n/a"; else printf "%.3f\n", exp(s / n) }') |"
		done
		line+=" $n_t |"
		echo "$line"
	done
	echo
	echo "### Per workload and delay"
	echo
	echo "| workload | delay ms | throughput | unit | vs $ref | RSS mean KiB | vs $ref | final RSS KiB | refaulted MiB | purged MiB | release syscalls | pager wakeups | slices reused MiB | ok runs |"
	echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for w in "${workloads[@]}"; do
		for d in "${delays[@]}"; do
			t=${MED[$w,$d,throughput]}
			m=${MED[$w,$d,rss_mean_kb]}
			unit=${MED[$w,$d,unit]}
			[[ $unit == NA ]] && unit=""
			line="| $w | $d | $(sw_fmt "$t") | $unit | $(sw_ratio "$t" "${MED[$w,$ref,throughput]:-NA}") |"
			line+=" $(sw_fmt "$m") | $(sw_ratio "$m" "${MED[$w,$ref,rss_mean_kb]:-NA}") |"
			line+=" $(sw_fmt "${MED[$w,$d,rss_final_kb]}") |"
			line+=" $(sw_mib "${MED[$w,$d,refaulted_bytes]}") | $(sw_mib "${MED[$w,$d,purged_bytes]}") |"
			line+=" $(sw_fmt "${MED[$w,$d,release_syscalls]}") | $(sw_fmt "${MED[$w,$d,pager_wakeups]}") |"
			line+=" $(sw_mib "${MED[$w,$d,purged_slices_reused_bytes]}") |"
			nok=${MED[$w,$d,ok]}
			nr=${MED[$w,$d,runs]}
			line+=" $nok/$nr |"
			echo "$line"
		done
	done
	echo
	echo "Commands (suite.sh's):"
	echo
	for w in "${workloads[@]}"; do
		echo "- $w: \`${sw_cmd[$w]}\`"
	done
	echo
	sw_failures_md "Failed runs" "${failures[@]}"
}

report >"$sw_out/table.md"
cat "$sw_out/table.md"
echo "raw results: $sw_out (runs.csv, medians.csv, table.md, runs/*/ = each run's suite.sh output)"
echo "sweep time: $(sw_mmss "$sweep_s")"
sw_exit
