#!/usr/bin/env bash
# healthcheck.sh: a quick performance regression check of tidemalloc against
# glibc malloc.  Runs dist_app (canonical) and random_mixed (16..32768 B)
# under tidemalloc and glibc, alternately, N rounds, through tide-rss (via
# bench/suite.sh), and compares the ratios tidemalloc/glibc of the medians
# (ops/s, RSS mean, RSS p95) with bench/healthcheck-baseline.txt.
# See doc/bench.md.
#
# Usage: healthcheck.sh [--update-baseline] [--rounds N] [--baseline FILE]
#                       [--out DIR] [--interval MS] [--builddir DIR]
#
# Fails (exit 1) when, for a workload, the ops/s ratio fell by 5% or more,
# or the RSS mean or RSS p95 ratio rose by 20% or more, against the
# baseline; also when a run failed.  --update-baseline writes the measured
# ratios to the baseline file instead and exits 0 (1 if a run failed: a
# baseline is only written from a clean run).  Exit 2: usage or setup error,
# or no baseline.
#
# Environment: BENCH_BUILDDIR, TIDE_LIB, TIDE_RSS, BENCH_RESULTS as for
# suite.sh.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$script_dir/.." && pwd)

WORKLOADS=(dist_app random_mixed)
OPS_FALL_PCT=5   # fail when the ops/s ratio fell by this much (%) or more
RSS_RISE_PCT=20  # fail when an RSS ratio rose by this much (%) or more

usage() {
	cat <<EOF
usage: $prog [options]
  --update-baseline  write the measured ratios to the baseline file
                     (default $script_dir/healthcheck-baseline.txt) and exit 0
  --rounds N         rounds (default 5), each running both workloads under
                     tidemalloc and glibc
  --baseline FILE    baseline file to compare with / write
  --out DIR          raw results (default \$BENCH_RESULTS/healthcheck-DATE-TIME)
  --interval MS      RSS sampling interval (default 10)
  --builddir DIR     where the workload binaries are (env BENCH_BUILDDIR)
  -h, --help         this text
Fails when a ratio tidemalloc/glibc regressed against the baseline: ops/s
fell by ${OPS_FALL_PCT}% or more, RSS mean or p95 rose by ${RSS_RISE_PCT}% or more.
EOF
}

die() {
	echo "$prog: $*" >&2
	exit 2
}

need() {
	(($2 >= 2)) || die "$1 needs a value"
}

update=0
rounds=5
baseline=$script_dir/healthcheck-baseline.txt
out=""
interval=10
builddir=${BENCH_BUILDDIR:-$script_dir}

while (($# > 0)); do
	case $1 in
	--update-baseline) update=1 && shift ;;
	--rounds) need "$1" $# && rounds=$2 && shift 2 ;;
	--rounds=*) rounds=${1#*=} && shift ;;
	--baseline) need "$1" $# && baseline=$2 && shift 2 ;;
	--baseline=*) baseline=${1#*=} && shift ;;
	--out) need "$1" $# && out=$2 && shift 2 ;;
	--out=*) out=${1#*=} && shift ;;
	--interval) need "$1" $# && interval=$2 && shift 2 ;;
	--interval=*) interval=${1#*=} && shift ;;
	--builddir) need "$1" $# && builddir=$2 && shift 2 ;;
	--builddir=*) builddir=${1#*=} && shift ;;
	-h | --help) usage && exit 0 ;;
	*)
		usage >&2
		die "unknown argument: $1"
		;;
	esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $interval =~ ^[1-9][0-9]*$ ]] || die "--interval must be a positive integer (ms)"
[[ -d $builddir ]] || die "build directory not found: $builddir"
builddir=$(cd "$builddir" && pwd)
if ((!update)) && [[ ! -f $baseline ]]; then
	die "no baseline at $baseline; create one with: $prog --update-baseline"
fi
out=${out:-${BENCH_RESULTS:-$builddir/results}/healthcheck-$(date +%Y%m%d-%H%M%S)}

# ---------------------------------------------------------------- measure
echo "$prog: dist_app and random_mixed under tidemalloc and glibc, $rounds round(s); raw results in $out" >&2
mkdir -p "$out" || die "cannot create $out"
rc=0
bash "$script_dir/suite.sh" --builddir "$builddir" --rounds "$rounds" --interval "$interval" \
	--only-workloads "$(
		IFS=,
		echo "${WORKLOADS[*]}"
	)" --only-allocs tidemalloc,glibc --no-real --no-plots --out "$out" >"$out/suite.log" || rc=$?
((rc == 2)) && die "suite.sh could not run (see the messages above)"
medians=$out/medians.csv
[[ -f $medians ]] || die "no medians.csv in $out"

# med WORKLOAD ALLOC COLUMN -> the median from medians.csv (NA if none).
med() {
	awk -F, -v w="$1" -v a="$2" -v c="$3" '
		NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		$1 == w && $2 == a { v = $col[c]; found = 1 }
		END { print (found && v != "" ? v : "NA") }' "$medians"
}

# ratio A B -> A/B with 4 decimals (NA when undefined).
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"
		else printf "%.4f\n", a / b
	}'
}

declare -A now=() raw=() cmd=()
missing=0
for w in "${WORKLOADS[@]}"; do
	for a in tidemalloc glibc; do
		for c in throughput rss_mean_kb rss_p95_kb; do
			raw[$w,$a,$c]=$(med "$w" "$a" "$c")
			if [[ ${raw[$w,$a,$c]} == NA ]]; then
				echo "$prog: no successful $w run under $a: cannot compute the ratios" >&2
				missing=1
				break 2
			fi
		done
	done
	now[$w.ops_ratio]=$(ratio "${raw[$w,tidemalloc,throughput]:-NA}" "${raw[$w,glibc,throughput]:-NA}")
	now[$w.rss_mean_ratio]=$(ratio "${raw[$w,tidemalloc,rss_mean_kb]:-NA}" "${raw[$w,glibc,rss_mean_kb]:-NA}")
	now[$w.rss_p95_ratio]=$(ratio "${raw[$w,tidemalloc,rss_p95_kb]:-NA}" "${raw[$w,glibc,rss_p95_kb]:-NA}")
	cmd[$w]=$(awk -F'\t' -v w="$w" '$1 == w { print $2 }' "$out/workloads.txt" 2>/dev/null || true)
done
if ((missing)); then
	echo "$prog: FAILED: runs failed or were skipped; see $out (runs.csv, logs/)" >&2
	exit 1
fi
if ((rc != 0)); then
	echo "$prog: warning: some runs failed (see $out/runs.csv and logs/); the ratios use the successful ones" >&2
fi

# ---------------------------------------------------------------- update
if ((update)); then
	if ((rc != 0)); then
		echo "$prog: not writing a baseline from a run with failures" >&2
		exit 1
	fi
	commit=unknown
	if [[ -e $srcdir/.git ]] && command -v git >/dev/null; then
		commit=$(git -C "$srcdir" rev-parse --short HEAD 2>/dev/null || echo unknown)
		# Only the library's own sources count (src/, pager/, configure.ac).
		if [[ $commit != unknown && -n $(git --no-optional-locks -C "$srcdir" status --porcelain -uno -- src pager configure.ac 2>/dev/null || true) ]]; then
			commit="$commit (with uncommitted changes in src/, pager/ or configure.ac)"
		fi
	fi
	cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	glibc_ver=$(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown)
	tmp=$baseline.tmp.$$
	{
		echo "# tidemalloc health-check baseline (bench/healthcheck.sh; see doc/bench.md)."
		echo "# Ratios tidemalloc/glibc of the medians over $rounds rounds: ops/s, RSS mean, RSS p95."
		echo "# healthcheck.sh fails when an ops_ratio falls by ${OPS_FALL_PCT}% or more, or an"
		echo "# rss_*_ratio rises by ${RSS_RISE_PCT}% or more, against these values."
		echo "# Written by: healthcheck.sh --update-baseline --rounds $rounds --interval $interval"
		echo "# Date: $(date '+%Y-%m-%d %H:%M:%S %z'); commit: $commit"
		echo "# Machine: ${cpu:-unknown CPU}, $(nproc) CPUs, kernel $(uname -r), ${glibc_ver}"
		for w in "${WORKLOADS[@]}"; do
			echo "# $w medians: tidemalloc ${raw[$w,tidemalloc,throughput]} ops/s, RSS mean ${raw[$w,tidemalloc,rss_mean_kb]} KiB, p95 ${raw[$w,tidemalloc,rss_p95_kb]} KiB; glibc ${raw[$w,glibc,throughput]} ops/s, RSS mean ${raw[$w,glibc,rss_mean_kb]} KiB, p95 ${raw[$w,glibc,rss_p95_kb]} KiB"
		done
		for w in "${WORKLOADS[@]}"; do
			echo "$w.cmd=${cmd[$w]}"
			echo "$w.ops_ratio=${now[$w.ops_ratio]}"
			echo "$w.rss_mean_ratio=${now[$w.rss_mean_ratio]}"
			echo "$w.rss_p95_ratio=${now[$w.rss_p95_ratio]}"
		done
	} >"$tmp"
	mv "$tmp" "$baseline"
	echo "$prog: baseline written to $baseline:"
	grep -v '^#' "$baseline" | sed 's/^/  /'
	exit 0
fi

# ---------------------------------------------------------------- compare
declare -A base=()
while IFS= read -r line || [[ -n $line ]]; do
	[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
	[[ $line == *=* ]] || continue
	base[${line%%=*}]=${line#*=}
done <"$baseline"

regressions=()
printf '%-13s %-15s %10s %10s %9s  %s\n' workload "ratio tide/glibc" baseline now change verdict
for w in "${WORKLOADS[@]}"; do
	if [[ -v "base[$w.cmd]" && ${base[$w.cmd]} != "${cmd[$w]}" ]]; then
		echo "warning: $w runs '${cmd[$w]}' but the baseline was taken with '${base[$w.cmd]}'; update the baseline" >&2
	fi
	for m in ops_ratio rss_mean_ratio rss_p95_ratio; do
		key=$w.$m
		case $m in
		ops_ratio) label="ops/s ratio" ;;
		rss_mean_ratio) label="RSS mean ratio" ;;
		rss_p95_ratio) label="RSS p95 ratio" ;;
		esac
		if [[ ! -v "base[$key]" ]]; then
			echo "$prog: the baseline has no $key; run $prog --update-baseline" >&2
			exit 2
		fi
		b=${base[$key]}
		n=${now[$key]}
		# verdict: "change% regressed(0/1)"
		read -r change bad < <(awk -v b="$b" -v n="$n" -v m="$m" -v f="$OPS_FALL_PCT" -v r="$RSS_RISE_PCT" 'BEGIN {
			c = (n / b - 1) * 100
			if (m == "ops_ratio") bad = (c <= -f)
			else bad = (c >= r)
			printf "%+.1f %d\n", c, bad
		}')
		verdict=ok
		if ((bad)); then
			verdict=REGRESSED
			if [[ $m == ops_ratio ]]; then
				regressions+=("$w: $label tide/glibc fell ${change#-}% (baseline $b, now $n; limit: a fall of ${OPS_FALL_PCT}%)")
			else
				regressions+=("$w: $label tide/glibc rose ${change#+}% (baseline $b, now $n; limit: a rise of ${RSS_RISE_PCT}%)")
			fi
		fi
		printf '%-13s %-15s %10s %10s %8s%%  %s\n' "$w" "${label% ratio}" "$b" "$n" "$change" "$verdict"
	done
done
echo "raw results: $out"

if ((${#regressions[@]} > 0)); then
	echo >&2
	echo "$prog: FAILED: ${#regressions[@]} regression(s) against $baseline:" >&2
	printf '  %s\n' "${regressions[@]}" >&2
	exit 1
fi
if ((rc != 0)); then
	echo "$prog: FAILED: some runs failed (see $out/runs.csv and logs/)" >&2
	exit 1
fi
echo "$prog: OK: no regression against $baseline (ops/s ratios within -${OPS_FALL_PCT}%, RSS ratios within +${RSS_RISE_PCT}%)"
exit 0
