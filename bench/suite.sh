#!/usr/bin/env bash
# suite.sh: tidemalloc's measurement suite.  Runs every workload (the C
# workloads in bench/ and the real programs in bench/real/) under glibc,
# tcmalloc, mimalloc, jemalloc and tidemalloc, N rounds, the allocator order
# rotated every round, and writes raw CSVs, a markdown report with medians
# and ratios against tidemalloc, and gnuplot PNGs.  See doc/bench.md.
#
# Usage: suite.sh [--rounds N] [--quick] [--only-workloads LIST]
#                 [--only-allocs LIST] [--out DIR] [--no-real] [--no-plots]
#                 [--results-md FILE] [--interval MS] [--timeout S]
#                 [--builddir DIR] [--list-workloads]
#
# Environment:
#   BENCH_BUILDDIR  build directory of bench/ (the workload binaries);
#                   default: the directory of this script
#   TIDE_LIB        tidemalloc shared object; default
#                   BENCH_BUILDDIR/../src/.libs/libtidemalloc.so
#   TIDE_RSS        the tide-rss sampler; default BENCH_BUILDDIR/../tools/tide-rss
#   BENCH_RESULTS   parent of the default output directory
#                   (default BENCH_BUILDDIR/results)
#
# Exit status: 0 when every run succeeded; 1 when some run failed (the others
# still run; the failures are listed at the end); 2 on a usage or setup error.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$script_dir/.." && pwd)

LIBDIR=/usr/lib/x86_64-linux-gnu
SEED=0x12345678

# ---------------------------------------------------------------- workloads
# Fixed order.  C workloads run through tide-rss; real programs through
# bench/real/NAME.sh.
C_WORKLOADS=(dist_app random_small random_medium random_mixed xthread larson churn lifetimes burst_idle malloc_large burst_idle_small)
# Real programs: every bench/real/NAME.sh (but common.sh), these first in
# this order, any others after them in alphabetical order.
REAL_ORDER=(redis python sqlite rocksdb memcached)
REAL_WORKLOADS=()
for n in "${REAL_ORDER[@]}"; do
	[[ -f $script_dir/real/$n.sh ]] && REAL_WORKLOADS+=("$n")
done
for f in "$script_dir"/real/*.sh; do
	[[ -f $f ]] || continue
	n=$(basename "$f" .sh)
	[[ $n == common || " ${REAL_ORDER[*]} " == *" $n "* ]] && continue
	REAL_WORKLOADS+=("$n")
done

declare -A wl_bin=(
	[dist_app]=dist_app [random_small]=dist_app [random_medium]=dist_app
	[random_mixed]=dist_app [xthread]=xthread [larson]=larson [churn]=churn
	[lifetimes]=lifetimes [burst_idle]=burst_idle [malloc_large]=malloc_large
	[burst_idle_small]=burst_idle
)
# Arguments (word-split).  random_*: iteration counts chosen so that a run
# takes about 1-3 s on the reference machine (2-core AMD EPYC) for most
# allocators.  The other C workloads use their built-in defaults (~1-4 s;
# malloc_large: ~2 s under glibc, several times that under the allocators that
# give every buffer back to the kernel); burst_idle_small is burst_idle with a
# smaller burst of 1-4 KiB blocks only.
declare -A wl_args=(
	[dist_app]="20000000 400 16 32768 $SEED app"
	[random_small]="100000000 400 16 2048 $SEED uniform"
	[random_medium]="50000000 400 4096 32768 $SEED uniform"
	[random_mixed]="50000000 400 16 32768 $SEED uniform"
	[xthread]="" [larson]="" [churn]="" [lifetimes]="" [burst_idle]=""
	[malloc_large]="" [burst_idle_small]="burst_mb=256 min=1024 max=4096"
)
# With --quick (unless --args says otherwise): smaller runs of the workloads
# whose defaults are long.  The idle periods stay as they are.
declare -A wl_quick_args=(
	[malloc_large]="iters=500"
	[burst_idle_small]="burst_mb=64 min=1024 max=4096"
)
# Workloads that print "PROG: phase=NAME t_ms=N rss_kb=N" lines (PROG is
# their binary): their phases, in order.  The suite collects the lines into
# WORKLOAD_phases.csv and reports the median RSS at each phase.
BURST_PHASES=(start after_burst after_free_most idle1_end after_free_rest idle2_end)
LARGE_PHASES=(after_free idle_end)
declare -A wl_phases=(
	[burst_idle]="${BURST_PHASES[*]}"
	[burst_idle_small]="${BURST_PHASES[*]}"
	[malloc_large]="${LARGE_PHASES[*]}"
)

usage() {
	cat <<EOF
usage: $prog [options]
  --rounds N             rounds (default 5); each round runs every
                         (workload, allocator) pair once, the allocator order
                         rotated by one every round
  --quick                1 round (unless --rounds is given), real programs
                         with QUICK=1, malloc_large and burst_idle_small
                         smaller (${wl_quick_args[malloc_large]}; ${wl_quick_args[burst_idle_small]})
  --only-workloads LIST  comma-separated subset of the workloads (in the
                         fixed order): ${C_WORKLOADS[*]} ${REAL_WORKLOADS[*]}
                         ("c" = all C workloads, "real" = all real programs)
  --only-allocs LIST     comma-separated subset of:
                         glibc,tcmalloc,mimalloc,jemalloc,tidemalloc
  --no-real              skip the real programs
  --no-plots             no gnuplot PNGs
  --out DIR              output directory (default:
                         \$BENCH_RESULTS/suite-DATE-TIME, BENCH_RESULTS
                         defaulting to BENCH_BUILDDIR/results)
  --results-md FILE      also write a ready-to-commit report to FILE (a
                         relative FILE is relative to the top of the source
                         tree) and copy the plots to FILE-without-.md/
                         (doc/results.md -> doc/results/)
  --interval MS          RSS sampling interval of the C workloads (default 10)
  --timeout S            a run taking longer than S seconds is killed and
                         counts as failed (default 900)
  --args NAME=ARGS       run C workload NAME with ARGS instead of its default
                         arguments (repeatable), e.g. --args 'xthread=threads=2'
                         or --args 'random_mixed=1000000 400 16 32768 1 uniform'
  --builddir DIR         where the workload binaries are (env BENCH_BUILDDIR)
  --report DIR           run nothing: rebuild the report (medians.csv,
                         table.md, plots, and --results-md) from DIR/runs.csv
                         of an earlier run
  --list-workloads       run nothing: print every workload, one a line:
                         NAME<TAB>c|real<TAB>what it runs (with --quick and
                         --args applied); used by delay_sweep.sh, pager_cost.sh
  -h, --help             this text
env: TIDE_LIB (tidemalloc library), TIDE_RSS (sampler), BENCH_RESULTS
EOF
}

die() {
	echo "$prog: $*" >&2
	exit 2
}

warn() {
	echo "warning: $*" >&2
}

# in_list WORD LIST...: WORD is one of LIST.
in_list() {
	local w=$1 x
	shift
	for x in "$@"; do
		[[ $x == "$w" ]] && return 0
	done
	return 1
}

orig_args=("$@")
rounds=5
rounds_set=0
quick=0
only_workloads=""
only_allocs=""
outdir=""
no_real=0
no_plots=0
results_md=""
interval=10
run_timeout=900
builddir=${BENCH_BUILDDIR:-}
report_only=0
list_only=0
declare -A args_override=()

# need OPT NARGS: the option needs a value.
need() {
	(($2 >= 2)) || die "$1 needs a value"
}

while (($# > 0)); do
	case $1 in
	--rounds) need "$1" $# && rounds=$2 && rounds_set=1 && shift 2 ;;
	--rounds=*) rounds=${1#*=} && rounds_set=1 && shift ;;
	--quick) quick=1 && shift ;;
	--only-workloads) need "$1" $# && only_workloads=$2 && shift 2 ;;
	--only-workloads=*) only_workloads=${1#*=} && shift ;;
	--only-allocs) need "$1" $# && only_allocs=$2 && shift 2 ;;
	--only-allocs=*) only_allocs=${1#*=} && shift ;;
	--out) need "$1" $# && outdir=$2 && shift 2 ;;
	--out=*) outdir=${1#*=} && shift ;;
	--no-real) no_real=1 && shift ;;
	--no-plots) no_plots=1 && shift ;;
	--results-md) need "$1" $# && results_md=$2 && shift 2 ;;
	--results-md=*) results_md=${1#*=} && shift ;;
	--interval) need "$1" $# && interval=$2 && shift 2 ;;
	--interval=*) interval=${1#*=} && shift ;;
	--timeout) need "$1" $# && run_timeout=$2 && shift 2 ;;
	--timeout=*) run_timeout=${1#*=} && shift ;;
	--builddir) need "$1" $# && builddir=$2 && shift 2 ;;
	--builddir=*) builddir=${1#*=} && shift ;;
	--args) need "$1" $# && args_override[${2%%=*}]=${2#*=} && shift 2 ;;
	--report) need "$1" $# && outdir=$2 && report_only=1 && shift 2 ;;
	--report=*) outdir=${1#*=} && report_only=1 && shift ;;
	--list-workloads) list_only=1 && shift ;;
	-h | --help) usage && exit 0 ;;
	*)
		usage >&2
		die "unknown argument: $1"
		;;
	esac
done

[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $interval =~ ^[1-9][0-9]*$ ]] || die "--interval must be a positive integer (ms)"
[[ $run_timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer (s)"
if ((quick)) && ((!rounds_set)); then
	rounds=1
fi
if ((quick)); then
	for w in "${!wl_quick_args[@]}"; do
		wl_args[$w]=${wl_quick_args[$w]}
	done
fi
if [[ -n $results_md && $results_md != *.md ]]; then
	die "--results-md: the file name must end in .md: $results_md"
fi
# A relative --results-md is taken relative to the top of the source tree
# (make runs this script from the build directory): --results-md
# doc/results.md always means the source tree's doc/results.md.
if [[ -n $results_md && $results_md != /* ]]; then
	results_md=$srcdir/$results_md
fi
for w in "${!args_override[@]}"; do
	in_list "$w" "${C_WORKLOADS[@]}" || die "--args: '$w' is not a C workload (${C_WORKLOADS[*]})"
	wl_args[$w]=${args_override[$w]}
done
if ((list_only)); then
	for w in "${C_WORKLOADS[@]}"; do
		printf '%s\tc\t%s\n' "$w" "${wl_bin[$w]}${wl_args[$w]:+ ${wl_args[$w]}}"
	done
	for w in "${REAL_WORKLOADS[@]}"; do
		printf '%s\treal\tbench/real/%s.sh\n' "$w" "$w"
	done
	exit 0
fi

# The command line, for the report.
cmdline="bench/suite.sh"
for x in ${orig_args[@]+"${orig_args[@]}"}; do
	if [[ $x =~ ^[A-Za-z0-9_./,=:+@%-]+$ ]]; then cmdline+=" $x"; else cmdline+=" $(printf '%q' "$x")"; fi
done

# ---------------------------------------------------------------- locations
builddir=${builddir:-$script_dir}
[[ -d $builddir ]] || die "build directory not found: $builddir"
builddir=$(cd "$builddir" && pwd)
top_builddir=$(cd "$builddir/.." && pwd)
tide_lib=${TIDE_LIB:-$top_builddir/src/.libs/libtidemalloc.so}
tide_rss=${TIDE_RSS:-$top_builddir/tools/tide-rss}
if ((!report_only)); then
	[[ -x $tide_rss ]] || die "tide-rss not found at $tide_rss (build tools/ or set TIDE_RSS)"
	tide_rss=$(cd "$(dirname "$tide_rss")" && pwd)/$(basename "$tide_rss")
fi

start_s=$(date +%s)
stamp=$(date -d "@$start_s" +%Y%m%d-%H%M%S)
if [[ -z $outdir ]]; then
	outdir=${BENCH_RESULTS:-$builddir/results}/suite-$stamp
fi
if ((report_only)); then
	[[ -f $outdir/runs.csv ]] || die "--report: no runs.csv in $outdir"
else
	mkdir -p "$outdir" || die "cannot create $outdir"
fi
outdir=$(cd "$outdir" && pwd)
if ((!report_only)) && [[ -e $outdir/runs.csv ]]; then
	die "$outdir already holds a run (runs.csv); choose another --out"
fi
mkdir -p "$outdir/samples" "$outdir/logs" "$outdir/real" "$outdir/plots"

# The measured programs get exactly the LD_PRELOAD we choose.
unset LD_PRELOAD

# ---------------------------------------------------------------- allocators
ALL_ALLOCS=(glibc tcmalloc mimalloc jemalloc tidemalloc)
declare -A lib_of=(
	[glibc]=""
	[tcmalloc]=$LIBDIR/libtcmalloc_minimal.so.4
	[mimalloc]=$LIBDIR/libmimalloc.so.2
	[jemalloc]=$LIBDIR/libjemalloc.so.2
	[tidemalloc]=$tide_lib
)

wanted_allocs=("${ALL_ALLOCS[@]}")
if [[ -n $only_allocs ]]; then
	IFS=, read -r -a wanted_allocs <<<"$only_allocs"
	for w in "${wanted_allocs[@]}"; do
		in_list "$w" "${ALL_ALLOCS[@]}" || die "--only-allocs: unknown allocator '$w'"
	done
fi

# A library that ld.so cannot preload is ignored with only a message on
# stderr and the program silently runs on glibc; catch that here.
preload_ok() {
	local err
	err=$(LD_PRELOAD=$1 /bin/true 2>&1) || return 1
	[[ $err != *"cannot be preloaded"* ]]
}

allocs=()
for name in "${ALL_ALLOCS[@]}"; do
	in_list "$name" "${wanted_allocs[@]}" || continue
	lib=${lib_of[$name]}
	if [[ -n $lib ]] && ((!report_only)); then
		if [[ ! -r $lib ]]; then
			warn "skipping $name: $lib not found"
			continue
		fi
		lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
		lib_of[$name]=$lib
		if ! preload_ok "$lib"; then
			warn "skipping $name: $lib cannot be preloaded"
			continue
		fi
	fi
	allocs+=("$name")
done
((${#allocs[@]} > 0)) || die "no allocator to run"
nalloc=${#allocs[@]}

# ---------------------------------------------------------------- workload selection
declare -A is_real=()
workloads=()
if ((report_only)); then
	# What the earlier run measured, in its order.
	mapfile -t ran_wls < <(awk -F, 'NR > 1 && !seen[$2]++ { print $2 }' "$outdir/runs.csv")
	mapfile -t ran_allocs < <(awk -F, 'NR > 1 && !seen[$3]++ { print $3 }' "$outdir/runs.csv")
	kept=()
	for a in "${allocs[@]}"; do
		in_list "$a" "${ran_allocs[@]}" && kept+=("$a")
	done
	allocs=("${kept[@]}")
	nalloc=${#allocs[@]}
	((nalloc > 0)) || die "--report: no allocator"
	for w in "${ran_wls[@]}"; do
		in_list "$w" "${C_WORKLOADS[@]}" || is_real[$w]=1
		workloads+=("$w")
	done
else
	wanted_wls=("${C_WORKLOADS[@]}" "${REAL_WORKLOADS[@]}")
	if [[ -n $only_workloads ]]; then
		IFS=, read -r -a req <<<"$only_workloads"
		wanted_wls=()
		for w in "${req[@]}"; do
			case $w in
			c) wanted_wls+=("${C_WORKLOADS[@]}") ;;
			real) wanted_wls+=("${REAL_WORKLOADS[@]}") ;;
			*)
				in_list "$w" "${C_WORKLOADS[@]}" "${REAL_WORKLOADS[@]}" ||
					die "--only-workloads: unknown workload '$w'"
				wanted_wls+=("$w")
				;;
			esac
		done
	fi
	for w in "${C_WORKLOADS[@]}"; do
		in_list "$w" "${wanted_wls[@]}" || continue
		if [[ ! -x $builddir/${wl_bin[$w]} ]]; then
			warn "skipping $w: $builddir/${wl_bin[$w]} is not built"
			continue
		fi
		workloads+=("$w")
	done
	if ((!no_real)); then
		for w in "${REAL_WORKLOADS[@]}"; do
			in_list "$w" "${wanted_wls[@]}" || continue
			if [[ ! -f $script_dir/real/$w.sh ]]; then
				warn "skipping $w: $script_dir/real/$w.sh not found"
				continue
			fi
			is_real[$w]=1
			workloads+=("$w")
		done
	fi
fi
((${#workloads[@]} > 0)) || die "no workload to run"

# ---------------------------------------------------------------- helpers
# now_ms: wall clock in ms.
now_ms() {
	local t=${EPOCHREALTIME//[!0-9]/}
	echo $((10#$t / 1000))
}

# mmss SECONDS -> "mm:ss" (or "h:mm:ss").
mmss() {
	local s=$1
	if ((s >= 3600)); then
		printf '%d:%02d:%02d' $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
	else
		printf '%02d:%02d' $((s / 60)) $((s % 60))
	fi
}

# kv KEY LINE -> the value of KEY=VALUE in LINE (words separated by spaces).
kv() {
	sed -nE "s/^(.* )?$1=([^ ]*).*/\\2/p" <<<"$2"
}

pkg_version() {
	# "package version" of the Debian package owning $1, or "" if unknown.
	local real pkg ver
	real=$(readlink -f "$1") || return 0
	pkg=$(dpkg -S "$real" 2>/dev/null | head -n1 | cut -d: -f1) || return 0
	[[ -n $pkg ]] || return 0
	ver=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || return 0
	echo "$pkg $ver"
}

# What tidemalloc was built from (recorded in meta.txt for --report).
commit=""
if [[ -e $srcdir/.git ]] && command -v git >/dev/null; then
	commit=$(git -C "$srcdir" rev-parse --short HEAD 2>/dev/null || true)
	# Only the library's own sources count (src/, pager/, configure.ac).
	if [[ -n $commit ]] && [[ -n $(git --no-optional-locks -C "$srcdir" status --porcelain -uno -- src pager configure.ac 2>/dev/null || true) ]]; then
		commit="$commit (with uncommitted changes in src/, pager/ or configure.ac)"
	fi
fi
pager_mode=""
if [[ -f $top_builddir/config.h ]]; then
	pager_mode=$(sed -n 's/^#define TIDE_PAGER_MODE_NAME "\(.*\)"/\1/p' "$top_builddir/config.h")
fi

# ---------------------------------------------------------------- runs
runs_csv=$outdir/runs.csv
# phases_csv WORKLOAD -> its phase CSV (round,alloc,phase,t_ms,rss_kb).
phases_csv() {
	echo "$outdir/$1_phases.csv"
}
PHASES_HEADER="round,alloc,phase,t_ms,rss_kb"
failures=()
declare -A skip_wl=()    # real programs that reported "not available" (exit 77)

# load_earlier_run: (--report) what the run loop would have set: rounds,
# runs done, failures, and from meta.txt the start, duration, interval and
# command line.
load_earlier_run() {
	local key val r_ wl_ a_ ok_ ex_
	suite_s=""
	done_runs=$(($(wc -l <"$runs_csv") - 1))
	rounds=$(awk -F, 'NR > 1 && $1 > m { m = $1 } END { print m + 0 }' "$runs_csv")
	cmdline="bench/suite.sh (unknown arguments)"
	if [[ -f $outdir/meta.txt ]]; then
		while IFS='=' read -r key val; do
			case $key in
			start_s) start_s=$val ;;
			suite_s) suite_s=$val ;;
			interval) interval=$val ;;
			cmdline) cmdline=$val ;;
			commit) commit=$val ;;
			pager_mode) pager_mode=$val ;;
			tide_lib) lib_of[tidemalloc]=$val ;;
			esac
		done <"$outdir/meta.txt"
	fi
	for wl_ in "${workloads[@]}"; do
		[[ -v "wl_phases[$wl_]" ]] || continue
		[[ -f $(phases_csv "$wl_") ]] || echo "$PHASES_HEADER" >"$(phases_csv "$wl_")"
	done
	# (exit is column 14; later columns are optional)
	while IFS=, read -r r_ wl_ a_ ok_ ex_; do
		[[ $ok_ == 0 ]] || continue
		failures+=("round $r_ $wl_ $a_: exit $ex_ (logs: $outdir/logs/r$r_-$wl_-$a_.out, .err)")
	done < <(awk -F, -v OFS=, 'NR > 1 { print $1, $2, $3, $4, $14 }' "$runs_csv")
}

declare -A wl_time=()    # summed run time (ms) per workload
declare -A wl_runs=()    # runs done per workload
done_ms=0
done_runs=0

# run_c ROUND WORKLOAD ALLOC TAG: run a C workload through tide-rss; sets
# r_rc r_why r_thr r_unit r_mean r_p95 r_max r_final r_n r_wall r_csv (and
# r_rstart r_rflushed, empty: only redis has them).
run_c() {
	local wl=$2 alloc=$3 tag=$4 out err sum line args
	out=$outdir/logs/$tag.out
	err=$outdir/logs/$tag.err
	sum=$outdir/logs/$tag.summary
	r_csv=samples/$tag.csv
	read -r -a args <<<"${wl_args[$wl]}"
	local alloc_arg=${lib_of[$alloc]}
	[[ -n $alloc_arg ]] || alloc_arg=glibc
	r_rc=0
	timeout -k 10 "$run_timeout" "$tide_rss" --alloc "$alloc_arg" --interval "$interval" \
		--csv "$outdir/$r_csv" --summary "$sum" --quiet -- \
		"$builddir/${wl_bin[$wl]}" ${args[@]+"${args[@]}"} >"$out" 2>"$err" || r_rc=$?
	line=""
	[[ -s $sum ]] && line=$(grep 'tide-rss:' "$sum" | tail -n1)
	[[ -n $line ]] || line=$(grep 'tide-rss:' "$err" | tail -n1) || true
	r_thr=$(sed -n 's/.*ops_per_sec=\([0-9.eE+]*\).*/\1/p' "$out" | tail -n1)
	r_unit=ops/s
	read_rss_fields "$line"
	r_rstart="" r_rflushed=""
	r_why=""
	if [[ -z $line ]]; then
		r_why="no tide-rss summary"
	fi
	if [[ -v "wl_phases[$wl]" ]]; then
		sed -n "s/^${wl_bin[$wl]}: phase=\\([a-z_0-9]*\\) t_ms=\\([0-9]*\\) rss_kb=\\([0-9]*\\).*/\\1,\\2,\\3/p" "$out" >"$outdir/logs/$tag.phases"
	fi
}

# read_rss_fields LINE: the RSS fields shared by tide-rss summaries and
# RESULT lines, into r_n, r_mean, r_p95, r_max, r_final, r_wall, and r_uss
# (tide-rss's largest USS: Private_Clean + Private_Dirty of smaps_rollup,
# read every 10th sample; empty where the line has none).
read_rss_fields() {
	r_n=$(kv samples "$1")
	r_uss=$(kv uss_max_kb "$1")
	r_mean=$(kv rss_mean_kb "$1")
	r_p95=$(kv rss_p95_kb "$1")
	r_max=$(kv rss_max_kb "$1")
	r_final=$(kv rss_final_kb "$1")
	r_wall=$(kv wall_s "$1")
}

# run_real ROUND WORKLOAD ALLOC TAG: run bench/real/WORKLOAD.sh; same outputs,
# and r_rstart r_rflushed from the RESULT line's rss_start_kb and
# rss_flushed_kb (redis.sh: the server's VmRSS before any load, and after
# FLUSHALL ASYNC and 1 s idle; empty for the other programs).
run_real() {
	local wl=$2 alloc=$3 tag=$4 out err line rdir
	out=$outdir/logs/$tag.out
	err=$outdir/logs/$tag.err
	rdir=$outdir/real/$tag
	mkdir -p "$rdir"
	local qenv=(-u QUICK)
	((quick)) && qenv=(QUICK=1)
	r_rc=0
	env "${qenv[@]}" ALLOC="$alloc" PRELOAD="${lib_of[$alloc]}" TIDE_RSS="$tide_rss" \
		OUTDIR="$rdir" BENCH_BUILDDIR="$builddir" \
		timeout -k 10 "$run_timeout" bash "$script_dir/real/$wl.sh" >"$out" 2>"$err" || r_rc=$?
	line=$(grep '^RESULT ' "$out" | tail -n1) || true
	r_csv=real/$tag/$wl.rss.csv
	r_thr=$(kv throughput "$line")
	r_unit=$(kv unit "$line")
	read_rss_fields "$line"
	r_rstart=$(kv rss_start_kb "$line")
	r_rflushed=$(kv rss_flushed_kb "$line")
	r_why=""
	[[ -n $line ]] || r_why="no RESULT line"
}

# estimate_left_s: seconds left, from the mean run time of each workload so
# far (for a workload that has not run yet: of all runs so far, or a guess
# for a real program).
estimate_left_s() {
	local w left=0 per rem total=$((rounds * nalloc))
	((done_runs > 0)) || {
		echo -1
		return
	}
	for w in "${workloads[@]}"; do
		[[ -v "skip_wl[$w]" ]] && continue
		rem=$((total - ${wl_runs[$w]:-0}))
		if ((${wl_runs[$w]:-0} > 0)); then
			per=$((wl_time[$w] / wl_runs[$w]))
		elif [[ -v "is_real[$w]" ]]; then
			# A guess until the program has run once: real programs take
			# 4-6 s with QUICK=1, 12-30 s without.
			per=$((quick ? 6000 : 22000))
		else
			per=$((done_ms / done_runs))
		fi
		left=$((left + rem * per))
	done
	echo $((left / 1000))
}

# run_matrix: every round, every workload, every allocator; writes
# runs.csv, WORKLOAD_phases.csv, workloads.txt, meta.txt.
run_matrix() {
	local r j k wl alloc tag el left left_s t0 dt ok w
	echo "round,workload,alloc,ok,throughput,unit,rss_mean_kb,rss_p95_kb,rss_max_kb,rss_final_kb,samples,wall_s,csv_path,exit,rss_start_kb,rss_flushed_kb,uss_max_kb" >"$runs_csv"
	for w in "${workloads[@]}"; do
		[[ -v "wl_phases[$w]" ]] || continue
		echo "$PHASES_HEADER" >"$(phases_csv "$w")"
	done
	# workloads.txt: what each workload runs (healthcheck.sh checks it against
	# its baseline).
	for w in "${workloads[@]}"; do
		if [[ -v "is_real[$w]" ]]; then
			printf '%s\tbench/real/%s.sh\n' "$w" "$w"
		else
			printf '%s\t%s\n' "$w" "${wl_bin[$w]}${wl_args[$w]:+ ${wl_args[$w]}}"
		fi
	done >"$outdir/workloads.txt"

	total_runs=$((rounds * nalloc * ${#workloads[@]}))
	{
		echo "$prog: ${#workloads[@]} workload(s) x $nalloc allocator(s) x $rounds round(s) = $total_runs runs"
		echo "  workloads: ${workloads[*]}"
		echo "  allocators: ${allocs[*]}"
		echo "  output: $outdir"
	} >&2

	suite_t0=$(now_ms)
	k=0
	for ((r = 0; r < rounds; r++)); do
		for wl in "${workloads[@]}"; do
			[[ -v "skip_wl[$wl]" ]] && continue
			for ((j = 0; j < nalloc; j++)); do
				[[ -v "skip_wl[$wl]" ]] && break
				alloc=${allocs[$(((j + r) % nalloc))]}
				k=$((k + 1))
				tag=r$((r + 1))-$wl-$alloc
				el=$((($(now_ms) - suite_t0) / 1000))
				left=$(estimate_left_s)
				if ((left < 0)); then left_s="~??:?? left"; else left_s="~$(mmss "$left") left"; fi
				printf '[%d/%d] round %d/%d %s %s — elapsed %s, %s\n' "$k" "$total_runs" \
					$((r + 1)) "$rounds" "$wl" "$alloc" "$(mmss "$el")" "$left_s" >&2

				t0=$(now_ms)
				if [[ -v "is_real[$wl]" ]]; then
					run_real $((r + 1)) "$wl" "$alloc" "$tag"
				else
					run_c $((r + 1)) "$wl" "$alloc" "$tag"
				fi
				dt=$(($(now_ms) - t0))

				if [[ -v "is_real[$wl]" ]] && ((r_rc == 77)); then
					warn "skipping $wl: its script says it cannot run here (exit 77; see $outdir/logs/$tag.err)"
					sed -n '1,3s/^/    /p' "$outdir/logs/$tag.err" >&2
					skip_wl[$wl]=1
					# Drop the runs of this workload from the totals.
					total_runs=$((total_runs - rounds * nalloc + ${wl_runs[$wl]:-0}))
					k=$((k - 1))
					continue
				fi

				wl_time[$wl]=$((${wl_time[$wl]:-0} + dt))
				wl_runs[$wl]=$((${wl_runs[$wl]:-0} + 1))
				done_ms=$((done_ms + dt))
				done_runs=$((done_runs + 1))

				if ((r_rc != 0)); then
					if ((r_rc == 124 || r_rc == 137)); then
						r_why="timed out after ${run_timeout} s (exit $r_rc)"
					elif ((r_rc > 128)); then
						r_why="exit $r_rc (signal $((r_rc - 128)))"
					else
						r_why="exit $r_rc"
					fi
				elif [[ -z $r_why && -z $r_thr ]]; then
					r_why="no throughput (ops_per_sec) in its output"
				elif [[ -z $r_why ]] && grep -qE "cannot be preloaded|preload did not take effect" "$outdir/logs/$tag.err"; then
					r_why="library was not preloaded"
				fi
				ok=1
				[[ -z $r_why ]] || ok=0
				if ((ok)) && [[ -v "wl_phases[$wl]" && -f $outdir/logs/$tag.phases ]]; then
					sed "s/^/$((r + 1)),$alloc,/" "$outdir/logs/$tag.phases" >>"$(phases_csv "$wl")"
				fi
				echo "$((r + 1)),$wl,$alloc,$ok,${r_thr:-NA},${r_unit:-NA},${r_mean:-NA},${r_p95:-NA},${r_max:-NA},${r_final:-NA},${r_n:-NA},${r_wall:-NA},$r_csv,$r_rc,${r_rstart:-NA},${r_rflushed:-NA},${r_uss:-NA}" >>"$runs_csv"
				if ((ok)); then
					printf '        %s %s, RSS mean %s p95 %s max %s final %s KiB, %s samples, %.1f s\n' \
						"$r_thr" "$r_unit" "${r_mean:-?}" "${r_p95:-?}" "${r_max:-?}" "${r_final:-?}" "${r_n:-?}" \
						"$(awk -v t="$dt" 'BEGIN { print t / 1000 }')" >&2
				else
					failures+=("round $((r + 1)) $wl $alloc: $r_why (logs: $outdir/logs/$tag.out, .err)")
					echo "        FAILED: $r_why (stderr: $outdir/logs/$tag.err)" >&2
					sed -n '1,5s/^/    /p' "$outdir/logs/$tag.err" >&2
				fi
			done
		done
	done
	suite_s=$((($(now_ms) - suite_t0) / 1000))
	{
		echo "start_s=$start_s"
		echo "suite_s=$suite_s"
		echo "interval=$interval"
		echo "cmdline=$cmdline"
		echo "commit=$commit"
		echo "pager_mode=$pager_mode"
		echo "tide_lib=${lib_of[tidemalloc]}"
	} >"$outdir/meta.txt"
}

if ((report_only)); then
	load_earlier_run
else
	run_matrix
fi

ran_wls=()
for wl in "${workloads[@]}"; do
	[[ -v "skip_wl[$wl]" ]] || ran_wls+=("$wl")
done

# ---------------------------------------------------------------- medians
# medians.csv: per (workload, alloc), medians over the ok runs, and the run
# closest to the median throughput (the lower middle one), used for plots;
# then (redis) the medians of rss_start_kb, rss_flushed_kb and of each run's
# rss_flushed_kb / rss_start_kb (NA where the runs have none; also for a
# runs.csv written before these columns existed).
medians_csv=$outdir/medians.csv
awk -F, '
	function med(a, n,    i, j, t) {
		for (i = 2; i <= n; i++) {
			t = a[i]
			for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
			a[j + 1] = t
		}
		if (n == 0) return "NA"
		if (n % 2) return a[(n + 1) / 2]
		return sprintf("%.10g", (a[n / 2] + a[n / 2 + 1]) / 2)
	}
	NR == 1 { next }
	{
		key = $2 "," $3
		if (!(key in nruns)) order[++nkeys] = key
		nruns[key]++
		if ($4 != 1) next
		n = ++nok[key]
		for (c = 5; c <= 12; c++) val[key, c, n] = $c
		rnd[key, n] = $1
		path[key, n] = $13
		unit[key] = $6
		val[key, 15, n] = (NF >= 15 ? $15 : "NA")
		val[key, 16, n] = (NF >= 16 ? $16 : "NA")
		val[key, 18, n] = (NF >= 17 && $17 + 0 > 0 ? $17 : "NA")
		if (NF >= 16 && $15 != "NA" && $15 != "" && $16 != "NA" && $16 != "" && $15 + 0 > 0)
			val[key, 17, n] = $16 / $15
		else
			val[key, 17, n] = "NA"
	}
	END {
		print "workload,alloc,ok_runs,runs,throughput,unit,rss_mean_kb,rss_p95_kb,rss_max_kb,rss_final_kb,samples,wall_s,plot_round,plot_csv,rss_start_kb,rss_flushed_kb,flushed_start_ratio,uss_max_kb"
		for (q = 1; q <= nkeys; q++) {
			key = order[q]
			n = nok[key] + 0
			line = key "," n "," nruns[key]
			for (c = 5; c <= 12; c++) {
				if (c == 6) { line = line "," (n ? unit[key] : "NA"); continue }
				m = 0
				delete a
				for (i = 1; i <= n; i++)
					if (val[key, c, i] != "NA" && val[key, c, i] != "") a[++m] = val[key, c, i] + 0
				line = line "," med(a, m)
			}
			# representative run: lower-middle by throughput
			best = ""
			if (n > 0) {
				m = 0
				delete a
				delete ix
				for (i = 1; i <= n; i++) { a[++m] = val[key, 5, i] + 0; ix[m] = i }
				for (i = 2; i <= m; i++) {
					t = a[i]; u = ix[i]
					for (j = i - 1; j >= 1 && a[j] > t; j--) { a[j + 1] = a[j]; ix[j + 1] = ix[j] }
					a[j + 1] = t; ix[j + 1] = u
				}
				sel = ix[int((m + 1) / 2)]
				best = rnd[key, sel] "," path[key, sel]
			} else best = "NA,NA"
			extra = ""
			for (c = 15; c <= 18; c++) {
				m = 0
				delete a
				for (i = 1; i <= n; i++)
					if (val[key, c, i] != "NA" && val[key, c, i] != "") a[++m] = val[key, c, i] + 0
				v = med(a, m)
				if (c == 17 && v != "NA") v = sprintf("%.4f", v)
				extra = extra "," v
			}
			print line "," best extra
		}
	}' "$runs_csv" >"$medians_csv"

declare -A M=()
while IFS=, read -r w a nok nr thr unit mean p95 max final _ _ pr pc rstart rflushed rratio uss; do
	[[ $w == workload ]] && continue
	M[$w,$a,ok]=$nok
	M[$w,$a,runs]=$nr
	M[$w,$a,thr]=$thr
	M[$w,$a,unit]=$unit
	M[$w,$a,mean]=$mean
	M[$w,$a,p95]=$p95
	M[$w,$a,max]=$max
	M[$w,$a,final]=$final
	M[$w,$a,plot_round]=$pr
	M[$w,$a,plot_csv]=$pc
	M[$w,$a,rstart]=$rstart
	M[$w,$a,rflushed]=$rflushed
	M[$w,$a,rratio]=$rratio
	M[$w,$a,uss]=${uss:-NA}
done <"$medians_csv"

# get WORKLOAD ALLOC FIELD -> the median (NA if none).
get() {
	local key="$1,$2,$3"
	if [[ -v "M[$key]" ]]; then echo "${M[$key]}"; else echo NA; fi
}

# ratio A B -> A/B with 3 decimals, n/a when undefined.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "NA" || b == "NA" || a == "" || b == "" || b + 0 == 0) print "n/a"
		else printf "%.3f\n", a / b
	}'
}

# fmt_num V: integers for large values, 3 significant digits for small ones.
fmt_num() {
	awk -v v="$1" 'BEGIN {
		if (v == "NA" || v == "") print "n/a"
		else if (v + 0 >= 1000 || v + 0 == int(v + 0)) printf "%.0f\n", v
		else printf "%.3g\n", v
	}'
}

# ---------------------------------------------------------------- phases
# (burst_idle, burst_idle_small, malloc_large)
# phase_median WORKLOAD ALLOC PHASE -> median rss_kb over ok rounds (NA if none).
phase_median() {
	awk -F, -v a="$2" -v p="$3" 'NR > 1 && $2 == a && $3 == p { print $5 }' "$(phases_csv "$1")" |
		sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) print "NA"
			else if (NR % 2) print v[(NR + 1) / 2]
			else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
		}'
}
# pct A B -> 100*A/B "%" with 1 decimal.
pct() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "NA" || b == "NA" || b + 0 == 0) print "n/a"
		else printf "%.1f%%\n", 100 * a / b
	}'
}
# PH[WORKLOAD,ALLOC,PHASE]: the medians; phase_wls: the workloads that ran
# and have phase lines from at least one successful run.
declare -A PH=()
phase_wls=()
for wl in "${ran_wls[@]}"; do
	[[ -v "wl_phases[$wl]" ]] || continue
	f=$(phases_csv "$wl")
	[[ -f $f ]] || continue
	(($(wc -l <"$f") > 1)) || continue
	phase_wls+=("$wl")
	for a in "${allocs[@]}"; do
		for p in ${wl_phases[$wl]}; do
			PH[$wl,$a,$p]=$(phase_median "$wl" "$a" "$p")
		done
	done
done

# ---------------------------------------------------------------- plots
declare -A COLOR=([glibc]='#555555' [tcmalloc]='#1f77b4' [mimalloc]='#2ca02c'
	[jemalloc]='#ff7f0e' [tidemalloc]='#d62728')
color_of() {
	echo "${COLOR[$1]}"
}

plots=()
plot_note=""
if ((!no_plots)); then
	if ! command -v gnuplot >/dev/null; then
		warn "gnuplot not found: no plots (install gnuplot-nox)"
	else
		gp=$script_dir/plot.gp
		plot_err=$outdir/logs/gnuplot.err
		: >"$plot_err"
		# RSS over time, per workload, one line per allocator.
		for wl in "${ran_wls[@]}"; do
			files="" titles="" colors=""
			for a in "${allocs[@]}"; do
				pc=$(get "$wl" "$a" plot_csv)
				[[ $pc != NA && -s $outdir/$pc ]] || continue
				(($(wc -l <"$outdir/$pc") > 1)) || continue
				files+=" $pc"
				titles+=" $a"
				colors+=" $(color_of "$a")"
			done
			[[ -n $files ]] || continue
			what="median-throughput run of each allocator"
			((rounds == 1)) && what="round 1"
			if (cd "$outdir" && gnuplot -e "mode='rss'; out='plots/rss_$wl.png'; files='${files# }'; titles='${titles# }'; colors='${colors# }'; ttl='RSS over time: $wl ($what)'" "$gp") 2>>"$plot_err"; then
				plots+=("rss_$wl.png")
			else
				warn "gnuplot failed for rss_$wl.png (see $plot_err)"
			fi
		done

		# Grouped bars, normalized to tidemalloc = 1.
		# bars_dat FIELD FILE: rows workload, columns allocators, value alloc/tide.
		bars_dat() {
			local field=$1 f=$2 wl a t v line
			{
				printf 'workload'
				printf ' %s' "${allocs[@]}"
				echo
				for wl in "${ran_wls[@]}"; do
					t=$(get "$wl" tidemalloc "$field")
					line=$wl
					for a in "${allocs[@]}"; do
						v=$(ratio "$(get "$wl" "$a" "$field")" "$t")
						[[ $v == n/a ]] && v=NaN
						line+=" $v"
					done
					echo "$line"
				done
			} >"$f"
		}
		colors=""
		for a in "${allocs[@]}"; do colors+=" $(color_of "$a")"; done
		if in_list tidemalloc "${allocs[@]}"; then
			bars_dat thr "$outdir/plots/throughput.dat"
			bars_dat mean "$outdir/plots/rss_mean.dat"
			if (cd "$outdir" && gnuplot -e "mode='bars'; out='plots/throughput.png'; dat='plots/throughput.dat'; colors='${colors# }'; ttl='Throughput relative to tidemalloc (median over rounds; higher is faster)'; ylab='throughput / tidemalloc throughput'" "$gp") 2>>"$plot_err"; then
				plots+=(throughput.png)
			else
				warn "gnuplot failed for throughput.png (see $plot_err)"
			fi
			if (cd "$outdir" && gnuplot -e "mode='bars'; out='plots/rss_mean.png'; dat='plots/rss_mean.dat'; colors='${colors# }'; ttl='RSS mean relative to tidemalloc (median over rounds; lower uses less memory)'; ylab='RSS mean / tidemalloc RSS mean'" "$gp") 2>>"$plot_err"; then
				plots+=(rss_mean.png)
			else
				warn "gnuplot failed for rss_mean.png (see $plot_err)"
			fi
		else
			warn "tidemalloc not run: no normalized bar plots"
		fi
		# Grouped bars of the median RSS at each phase, per phase workload.
		for wl in ${phase_wls[@]+"${phase_wls[@]}"}; do
			{
				printf 'phase'
				printf ' %s' "${allocs[@]}"
				echo
				for p in ${wl_phases[$wl]}; do
					line=$p
					for a in "${allocs[@]}"; do
						v=${PH[$wl,$a,$p]}
						if [[ $v == NA ]]; then v=NaN; else v=$(awk -v x="$v" 'BEGIN { printf "%.2f", x / 1024 }'); fi
						line+=" $v"
					done
					echo "$line"
				done
			} >"$outdir/plots/${wl}_phases.dat"
			if (cd "$outdir" && gnuplot -e "mode='phases'; out='plots/${wl}_phases.png'; dat='plots/${wl}_phases.dat'; colors='${colors# }'; ttl='$wl: RSS at each phase (median over rounds; lower is better)'; ylab='RSS (MiB)'" "$gp") 2>>"$plot_err"; then
				plots+=("${wl}_phases.png")
			else
				warn "gnuplot failed for ${wl}_phases.png (see $plot_err)"
			fi
		done
		plot_note="RSS-over-time plots show, for each allocator, the run with the median throughput"
		((rounds == 1)) && plot_note="RSS-over-time plots show round 1 (the only round)"
	fi
fi

# ---------------------------------------------------------------- report
cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
glibc_ver=$(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown)
glibc_ver=${glibc_ver#glibc }
debian_ver=$(cat /etc/debian_version 2>/dev/null || echo unknown)
run_date=$(date -d "@$start_s" '+%Y-%m-%d %H:%M:%S %z')

wl_desc() {
	case $1 in
	dist_app) echo "tidemalloc's seed workload: one thread, 400 slots, the \"app\" size mix 16 B..32 KiB" ;;
	random_small) echo "dist_app with sizes uniform in 16..2048 B" ;;
	random_medium) echo "dist_app with sizes uniform in 4096..32768 B" ;;
	random_mixed) echo "dist_app with sizes uniform in 16..32768 B" ;;
	xthread) echo "producer/consumer: threads hand a share of their blocks to other threads, which free them (lock-free rings)" ;;
	larson) echo "Larson-style server: threads swap new blocks into a shared pool and free the blocks they take out, mostly made by other threads" ;;
	churn) echo "short-lived threads, created round after round, hand a share of their blocks to long-lived threads that free them later" ;;
	lifetimes) echo "one thread, short-, medium- and long-lived objects interleaved (live set ~25 MB): fragmentation over a steady state" ;;
	burst_idle) echo "a large allocation burst on 2 threads, then frees and idle periods: who returns memory sooner and further" ;;
	malloc_large) echo "one thread replacing random buffers of 5..25 MiB in 20 slots (every page written), then everything freed and 1 s idle: large blocks, and whether they go back" ;;
	burst_idle_small) echo "burst_idle with a 256 MiB burst of 1..4 KiB blocks only: freed small blocks scattered over many pages" ;;
	redis) echo "redis-server (no persistence) under redis-benchmark: SET/GET/INCR/LPUSH/LPOP with 64 B and 1 KiB values, then FLUSHALL ASYNC and 1 s idle" ;;
	python) echo "python3 (PYTHONMALLOC=malloc) running bench/real/alloc_heavy.py: dicts, json round trips, sorting, deleting, rebuilding" ;;
	sqlite) echo "the sqlite3 shell building, indexing, querying, updating and deleting in a database with a 200 MB page cache" ;;
	rocksdb) echo "RocksDB's db_bench: fillrandom, readrandom, seekrandom with 2 threads, values 32..4096 B, 128 MB block cache" ;;
	*) echo "bench/real/$1.sh" ;;
	esac
}

# wl_params WORKLOAD: the parameters a key=value workload printed (the words
# of its result line up to seed=..., without ops_per_sec=), from its first
# successful run; empty if there is none.
wl_params() {
	local f line
	f=$(awk -F, -v w="$1" 'NR > 1 && $2 == w && $4 == 1 { print "r" $1 "-" $2 "-" $3; exit }' "$runs_csv")
	[[ -n $f && -f $outdir/logs/$f.out ]] || return 0
	f=$outdir/logs/$f.out
	line=$(grep 'ops_per_sec=' "$f" | tail -n1)
	awk '{
		out = ""
		for (i = 2; i <= NF; i++) {
			if ($i ~ /^ops_per_sec=/) continue
			out = out (out == "" ? "" : " ") $i
			if ($i ~ /^seed=/) { print out; exit }
		}
	}' <<<"$line"
}

wl_cmd() {
	local c
	# What the run recorded (it matters for --report and --args).
	c=$(awk -F'\t' -v w="$1" '$1 == w { print $2; exit }' "$outdir/workloads.txt" 2>/dev/null || true)
	if [[ -n $c ]]; then
		echo "$c"
	elif [[ -v "is_real[$1]" ]]; then
		echo "bench/real/$1.sh"
	else
		local a=${wl_args[$1]}
		echo "${wl_bin[$1]}${a:+ $a}"
	fi
}

# redis_rss_table: (in the redis section) the server's VmRSS before any load
# and after FLUSHALL ASYNC + 1 s idle, per allocator, from redis.sh's
# rss_start_kb and rss_flushed_kb; nothing if no run has them.
redis_rss_table() {
	local a have=0 line
	for a in "${allocs[@]}"; do
		[[ $(get redis "$a" rstart) =~ ^[0-9] ]] && have=1
	done
	((have)) || return 0
	echo "redis-server's VmRSS before loading (right after its first PING) and after"
	echo "FLUSHALL ASYNC has finished and 1 s of idle; \"after / before\" is the median"
	echo "over the rounds of each run's ratio (1 = everything given back)."
	echo
	echo "| allocator | RSS before loading KiB | after FLUSHALL + 1 s idle KiB | after / before |"
	echo "|---|---:|---:|---:|"
	for a in "${allocs[@]}"; do
		line="| $a | $(fmt_num "$(get redis "$a" rstart)") | $(fmt_num "$(get redis "$a" rflushed)") |"
		line+=" $(fmt_ratio "$(get redis "$a" rratio)") |"
		echo "$line"
	done
	echo
}

# fmt_ratio V: 3 decimals, n/a for NA.
fmt_ratio() {
	awk -v v="$1" 'BEGIN { if (v == "NA" || v == "") print "n/a"; else printf "%.3f\n", v }'
}

# report PLOTDIR: the markdown report, plots linked as PLOTDIR/NAME.png.
report() {
	local pdir=$1 wl a t unit line v
	echo "- date: $run_date"
	echo "- command: \`$cmdline\`"
	echo "- rounds: $rounds (every round runs each workload under each allocator; the allocator order is rotated by one every round)"
	echo "- machine: ${cpu_model:-unknown CPU}, $(nproc) online CPUs, ${mem_gib} GiB RAM; kernel $(uname -r); Debian $debian_ver; glibc $glibc_ver"
	echo "- RSS: sampled by tide-rss every $interval ms (C workloads; real programs: see their scripts); VmRSS in KiB"
	[[ -z $suite_s ]] || echo "- suite time: $(mmss "$suite_s") for $done_runs runs"
	echo "- allocators:"
	for a in "${allocs[@]}"; do
		local lib=${lib_of[$a]} ver=""
		if [[ -z $lib ]]; then
			echo "  - glibc: glibc $glibc_ver malloc (no LD_PRELOAD)"
		elif [[ $a == tidemalloc ]]; then
			echo "  - tidemalloc: \`$lib\`${commit:+, commit $commit}${pager_mode:+, pager mode $pager_mode}"
		else
			ver=$(pkg_version "$lib")
			echo "  - $a: \`$lib\`${ver:+ ($ver)}"
		fi
	done
	echo
	echo "Numbers are medians over the successful runs. Ratios are allocator / tidemalloc:"
	echo "for throughput above 1 means faster than tidemalloc, for RSS above 1 means the"
	echo "peer uses more memory than tidemalloc. \`n/a\`: no successful run. USS max: the"
	echo "largest USS seen (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup, read by"
	echo "tide-rss every 10th sample: the process's own memory, shared libraries' shared pages"
	echo "left out); the real programs' scripts do not report it."
	echo

	local others=()
	for a in "${allocs[@]}"; do [[ $a == tidemalloc ]] || others+=("$a"); done
	if in_list tidemalloc "${allocs[@]}" && ((${#others[@]} > 0)); then
		local field title
		for field in thr mean; do
			if [[ $field == thr ]]; then
				title="Throughput vs tidemalloc (above 1: faster than tidemalloc)"
			else
				title="RSS mean vs tidemalloc (above 1: uses more memory than tidemalloc)"
			fi
			echo "### Summary: $title"
			echo
			line="| workload |"
			for a in "${others[@]}"; do line+=" $a |"; done
			echo "$line"
			line="|---|"
			for a in "${others[@]}"; do line+="---:|"; done
			echo "$line"
			declare -A logsum=() lognum=()
			for wl in "${ran_wls[@]}"; do
				t=$(get "$wl" tidemalloc "$field")
				line="| $wl |"
				for a in "${others[@]}"; do
					v=$(ratio "$(get "$wl" "$a" "$field")" "$t")
					line+=" $v |"
					if [[ $v != n/a ]]; then
						logsum[$a]=$(awk -v s="${logsum[$a]:-0}" -v x="$v" 'BEGIN { print s + log(x) }')
						lognum[$a]=$((${lognum[$a]:-0} + 1))
					fi
				done
				echo "$line"
			done
			line="| geometric mean |"
			for a in "${others[@]}"; do
				if ((${lognum[$a]:-0} > 0)); then
					line+=" $(awk -v s="${logsum[$a]}" -v n="${lognum[$a]}" 'BEGIN { printf "%.3f", exp(s / n) }') |"
				else
					line+=" n/a |"
				fi
			done
			echo "$line"
			echo
			unset logsum lognum
		done
	fi

	echo "### Per workload"
	echo
	for wl in "${ran_wls[@]}"; do
		unit=""
		for a in "${allocs[@]}"; do
			v=$(get "$wl" "$a" unit)
			[[ $v != NA ]] && unit=$v && break
		done
		echo "#### $wl"
		echo
		v=""
		[[ -v "is_real[$wl]" || ${wl_bin[$wl]} == dist_app ]] || v=$(wl_params "$wl")
		echo "$(wl_desc "$wl"). Command: \`$(wl_cmd "$wl")\`${v:+ (parameters: \`$v\`)}."
		echo
		echo "| allocator | throughput (${unit:-?}) | vs tide | RSS mean KiB | vs tide | RSS p95 KiB | vs tide | RSS max KiB | vs tide | final RSS KiB | vs tide | USS max KiB | vs tide | ok runs |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		for a in "${allocs[@]}"; do
			line="| $a |"
			for f in thr mean p95 max final uss; do
				v=$(get "$wl" "$a" "$f")
				line+=" $(fmt_num "$v") | $(ratio "$v" "$(get "$wl" tidemalloc "$f")") |"
			done
			local nok nr
			nok=$(get "$wl" "$a" ok)
			nr=$(get "$wl" "$a" runs)
			[[ $nok == NA ]] && nok=0
			[[ $nr == NA ]] && nr=0
			line+=" $nok/$nr |"
			echo "$line"
		done
		echo
		[[ $wl == redis ]] && redis_rss_table
		if in_list "rss_$wl.png" "${plots[@]+"${plots[@]}"}"; then
			echo "![RSS over time, $wl]($pdir/rss_$wl.png)"
			echo
		fi
	done

	local p
	for wl in ${phase_wls[@]+"${phase_wls[@]}"}; do
		echo "### $wl: RSS at each phase"
		echo
		if [[ ${wl_phases[$wl]} == "${BURST_PHASES[*]}" ]]; then
			echo "Median RSS (KiB) at each phase $wl printed, over the successful rounds."
			echo "\"held\" is the share of the burst's peak (the RSS at after_burst) still resident"
			echo "at the end of each idle period: lower means more memory was given back."
			echo
			line="| allocator |"
			for p in "${BURST_PHASES[@]}"; do line+=" $p |"; done
			line+=" held at idle1_end | held at idle2_end |"
			echo "$line"
			line="|---|"
			for p in "${BURST_PHASES[@]}" x y; do line+="---:|"; done
			echo "$line"
			for a in "${allocs[@]}"; do
				line="| $a |"
				for p in "${BURST_PHASES[@]}"; do line+=" $(fmt_num "${PH[$wl,$a,$p]}") |"; done
				line+=" $(pct "${PH[$wl,$a,idle1_end]}" "${PH[$wl,$a,after_burst]}") |"
				line+=" $(pct "${PH[$wl,$a,idle2_end]}" "${PH[$wl,$a,after_burst]}") |"
				echo "$line"
			done
		else
			# malloc_large: RSS once everything is freed, and after the
			# idle period, against the run's peak (tide-rss's RSS max).
			echo "Median RSS (KiB) at each phase $wl printed, over the successful rounds,"
			echo "with the median RSS max of its runs (tide-rss) for scale. \"held\" is the share"
			echo "of that peak still resident: lower means more memory was given back."
			echo
			line="| allocator | RSS max |"
			for p in ${wl_phases[$wl]}; do line+=" $p |"; done
			for p in ${wl_phases[$wl]}; do line+=" held at $p |"; done
			echo "$line"
			line="|---|---:|"
			for p in ${wl_phases[$wl]} ${wl_phases[$wl]}; do line+="---:|"; done
			echo "$line"
			for a in "${allocs[@]}"; do
				v=$(get "$wl" "$a" max)
				line="| $a | $(fmt_num "$v") |"
				for p in ${wl_phases[$wl]}; do line+=" $(fmt_num "${PH[$wl,$a,$p]}") |"; done
				for p in ${wl_phases[$wl]}; do line+=" $(pct "${PH[$wl,$a,$p]}" "$v") |"; done
				echo "$line"
			done
		fi
		echo
		if in_list "${wl}_phases.png" "${plots[@]+"${plots[@]}"}"; then
			echo "![$wl phases]($pdir/${wl}_phases.png)"
			echo
		fi
	done

	if in_list throughput.png "${plots[@]+"${plots[@]}"}" || in_list rss_mean.png "${plots[@]+"${plots[@]}"}"; then
		echo "### Overview plots"
		echo
		in_list throughput.png "${plots[@]+"${plots[@]}"}" && echo "![throughput relative to tidemalloc]($pdir/throughput.png)" && echo
		in_list rss_mean.png "${plots[@]+"${plots[@]}"}" && echo "![RSS mean relative to tidemalloc]($pdir/rss_mean.png)" && echo
	fi
	[[ -n $plot_note ]] && echo "$plot_note." && echo

	if ((${#failures[@]} > 0)); then
		echo "### Failed runs"
		echo
		for v in "${failures[@]}"; do echo "- ${v%% (logs:*}"; done
		echo
	fi
	return 0
}

table=$outdir/table.md
{
	echo "## tidemalloc measurement suite"
	echo
	report plots
} >"$table"

if [[ -n $results_md ]]; then
	rdir=${results_md%.md}
	mkdir -p "$(dirname "$results_md")" "$rdir"
	rm -f "$rdir"/rss_*.png "$rdir"/throughput.png "$rdir"/rss_mean.png "$rdir"/*_phases.png
	for p in ${plots[@]+"${plots[@]}"}; do
		cp "$outdir/plots/$p" "$rdir/"
	done
	{
		echo "# Results"
		echo
		echo "The latest full run of the measurement suite (\`make bench\`, i.e."
		echo "\`bench/suite.sh\`; see [bench.md](bench.md) for what each workload does and how"
		echo "the numbers are taken). Generated by \`bench/suite.sh --results-md\`."
		echo
		report "$(basename "$rdir")"
	} >"$results_md"
	echo "results page: $results_md (plots in $rdir/)" >&2
fi

cat "$table"
echo
echo "raw results: $outdir (runs.csv, medians.csv, *_phases.csv, samples/, real/, logs/, plots/, table.md)"
[[ -z $suite_s ]] || echo "suite time: $(mmss "$suite_s")"

if ((${#failures[@]} > 0 && !report_only)); then
	echo >&2
	echo "$prog: ${#failures[@]} run(s) failed:" >&2
	printf '  %s\n' "${failures[@]}" >&2
	exit 1
fi
exit 0
