#!/usr/bin/env bash
# compare.sh: run bench/dist_app under glibc, tcmalloc, mimalloc, jemalloc and
# tidemalloc (via LD_PRELOAD), alternating allocators within each round, and
# print a markdown table of throughput and RSS.  See doc/bench.md.
#
# Usage: compare.sh [--rounds N] [--quick] [--args "ITERS WS MIN MAX SEED DIST"]
#                   [--only LIST] [--interval MS] [--builddir DIR] [--results DIR]
#
# Environment:
#   TIDE_LIB        tidemalloc shared object (default: TOP_BUILDDIR/src/.libs/libtidemalloc.so)
#   BENCH_BUILDDIR  directory holding the built dist_app and rss_sample
#                   (default: the directory of this script)
#   BENCH_RESULTS   where to write raw results (default: BENCH_BUILDDIR/results)
#   CC              compiler for the fallback build when dist_app/rss_sample
#                   are not built (default: cc)
#
# Exit status: 0 when every run exited 0; 1 when a run failed (crashed, exited
# non-zero, or printed no ops_per_sec); 2 on a usage or setup error.  The
# "bar:" verdict line is information only and never changes the exit status.
set -euo pipefail

prog=${0##*/}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

CANON_ARGS="20000000 400 16 32768 0x12345678 app"
QUICK_ITERS=2000000
LIBDIR=/usr/lib/x86_64-linux-gnu

usage() {
	cat <<EOF
usage: $prog [options]
  --rounds N        rounds (default 5); every round runs each allocator once,
                    the order rotated by one allocator per round
  --quick           1 round and ITERS=$QUICK_ITERS (an explicit --rounds wins)
  --args "A..."     dist_app arguments "ITERS WS MIN MAX SEED DIST"
                    (default "$CANON_ARGS")
  --only LIST       comma-separated subset of: glibc,tcmalloc,mimalloc,jemalloc,tidemalloc
  --interval MS     RSS sampling interval in ms (default 10)
  --builddir DIR    where dist_app and rss_sample are built (env BENCH_BUILDDIR)
  --results DIR     where raw results go (env BENCH_RESULTS; default BUILDDIR/results)
  -h, --help        this text
env: TIDE_LIB=path overrides the tidemalloc library
     (default TOP_BUILDDIR/src/.libs/libtidemalloc.so)
EOF
}

die() {
	echo "$prog: $*" >&2
	exit 2
}

warn() {
	echo "warning: $*" >&2
}

rounds=5
rounds_set=0
quick=0
bench_args=$CANON_ARGS
only=""
interval=10
builddir=${BENCH_BUILDDIR:-}
results_root=${BENCH_RESULTS:-}

while (($# > 0)); do
	case $1 in
	--rounds)
		(($# >= 2)) || die "--rounds needs a value"
		rounds=$2
		rounds_set=1
		shift 2
		;;
	--rounds=*)
		rounds=${1#*=}
		rounds_set=1
		shift
		;;
	--quick)
		quick=1
		shift
		;;
	--args)
		(($# >= 2)) || die "--args needs a value"
		bench_args=$2
		shift 2
		;;
	--args=*)
		bench_args=${1#*=}
		shift
		;;
	--only)
		(($# >= 2)) || die "--only needs a value"
		only=$2
		shift 2
		;;
	--only=*)
		only=${1#*=}
		shift
		;;
	--interval)
		(($# >= 2)) || die "--interval needs a value"
		interval=$2
		shift 2
		;;
	--interval=*)
		interval=${1#*=}
		shift
		;;
	--builddir)
		(($# >= 2)) || die "--builddir needs a value"
		builddir=$2
		shift 2
		;;
	--builddir=*)
		builddir=${1#*=}
		shift
		;;
	--results)
		(($# >= 2)) || die "--results needs a value"
		results_root=$2
		shift 2
		;;
	--results=*)
		results_root=${1#*=}
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		die "unknown argument: $1"
		;;
	esac
done

[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $interval =~ ^[1-9][0-9]*$ ]] || die "--interval must be a positive integer (ms)"
if ((quick)) && ((!rounds_set)); then
	rounds=1
fi

read -r -a dargs <<<"$bench_args"
((${#dargs[@]} == 6)) || die "--args needs 6 words: ITERS WS MIN MAX SEED DIST"
if ((quick)); then
	dargs[0]=$QUICK_ITERS
fi
[[ ${dargs[0]} =~ ^([1-9][0-9]*|0[xX][0-9a-fA-F]*[1-9a-fA-F][0-9a-fA-F]*)$ ]] ||
	die "ITERS must be a positive integer: ${dargs[0]}"

# ---------------------------------------------------------------- locations
builddir=${builddir:-$script_dir}
[[ -d $builddir ]] || die "build directory not found: $builddir"
builddir=$(cd "$builddir" && pwd)
top_builddir=$(cd "$builddir/.." && pwd)
results_root=${results_root:-$builddir/results}
tide_lib=${TIDE_LIB:-$top_builddir/src/.libs/libtidemalloc.so}

dist_app=$builddir/dist_app
rss_sample=$builddir/rss_sample
if [[ ! -x $dist_app || ! -x $rss_sample ]]; then
	# Not built (e.g. running straight from a checkout): build privately.
	bindir=$results_root/.bin
	mkdir -p "$bindir"
	warn "dist_app/rss_sample not built in $builddir; building them in $bindir with ${CC:-cc}"
	for p in dist_app rss_sample; do
		"${CC:-cc}" -std=gnu11 -O2 -Wall -Wextra -o "$bindir/$p" "$script_dir/$p.c" ||
			die "cannot build $p (run 'make -C bench' or set BENCH_BUILDDIR)"
	done
	dist_app=$bindir/dist_app
	rss_sample=$bindir/rss_sample
fi

# The measured programs get exactly the LD_PRELOAD we choose.
unset LD_PRELOAD

# Validate the dist_app arguments once (dist_app prints its own usage).
if ! "$dist_app" 1 "${dargs[@]:1}" >/dev/null; then
	die "dist_app rejected the arguments: ${dargs[*]}"
fi

# ---------------------------------------------------------------- allocators
all_names=(glibc tcmalloc mimalloc jemalloc tidemalloc)
declare -A lib_of=(
	[glibc]=""
	[tcmalloc]=$LIBDIR/libtcmalloc_minimal.so.4
	[mimalloc]=$LIBDIR/libmimalloc.so.2
	[jemalloc]=$LIBDIR/libjemalloc.so.2
	[tidemalloc]=$tide_lib
)

if [[ -n $only ]]; then
	IFS=, read -r -a wanted <<<"$only"
	for w in "${wanted[@]}"; do
		[[ -v "lib_of[$w]" ]] || die "--only: unknown allocator '$w'"
	done
else
	wanted=("${all_names[@]}")
fi

is_wanted() {
	local w
	for w in "${wanted[@]}"; do
		[[ $w == "$1" ]] && return 0
	done
	return 1
}

# A library that ld.so cannot preload is ignored with only a message on
# stderr, and the program silently runs on glibc; catch that here.
preload_ok() {
	local lib=$1 err
	err=$(LD_PRELOAD=$lib "$dist_app" 1 "${dargs[@]:1}" 2>&1 >/dev/null) || return 1
	[[ $err != *"cannot be preloaded"* ]]
}

allocs=()
for name in "${all_names[@]}"; do
	is_wanted "$name" || continue
	lib=${lib_of[$name]}
	if [[ -n $lib ]]; then
		if [[ ! -r $lib ]]; then
			warn "skipping $name: $lib not found"
			continue
		fi
		lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
		lib_of[$name]=$lib
		if ! preload_ok "$lib"; then
			warn "skipping $name: $lib cannot be preloaded (or dist_app fails under it)"
			continue
		fi
	fi
	allocs+=("$name")
done
((${#allocs[@]} > 0)) || die "no allocator to run"

pkg_version() {
	# "package version" of the Debian package owning $1, or "" if unknown.
	local real pkg ver
	real=$(readlink -f "$1") || return 0
	pkg=$(dpkg -S "$real" 2>/dev/null | head -n1 | cut -d: -f1) || return 0
	[[ -n $pkg ]] || return 0
	ver=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || return 0
	echo "$pkg $ver"
}

# ---------------------------------------------------------------- runs
stamp=$(date +%Y%m%d-%H%M%S)
outdir=$results_root/$stamp-$$
mkdir -p "$outdir/samples" "$outdir/logs" || die "cannot create $outdir"

runs_csv=$outdir/runs.csv
echo "round,position,allocator,exit,seconds,ops_per_sec,rss_samples,rss_mean_kb,rss_p95_kb,rss_max_kb,samples_file,library" >"$runs_csv"

failures=()
nalloc=${#allocs[@]}

# stats FILE -> "n mean p95 max" over the rss_kb column (NA when no sample).
# p95 is the ceil(n*95/100)-th smallest sample.
rss_stats() {
	tail -n +2 "$1" | cut -d, -f2 | sort -n | awk '
		{ v[NR] = $1; s += $1 }
		END {
			if (NR == 0) { print "0 NA NA NA"; exit }
			k = int((NR * 95 + 99) / 100)
			printf "%d %.1f %d %d\n", NR, s / NR, v[k], v[NR]
		}'
}

echo "dist_app ${dargs[*]}: $rounds round(s) of ${allocs[*]}; raw results in $outdir" >&2
for ((r = 0; r < rounds; r++)); do
	for ((j = 0; j < nalloc; j++)); do
		name=${allocs[$(((j + r) % nalloc))]}
		lib=${lib_of[$name]}
		tag=r$((r + 1))-$name
		samples=$outdir/samples/$tag.csv
		out=$outdir/logs/$tag.out
		errf=$outdir/logs/$tag.err

		cmd=("$rss_sample" "$interval" "$samples" --)
		[[ -n $lib ]] && cmd+=("LD_PRELOAD=$lib")
		cmd+=("$dist_app" "${dargs[@]}")

		rc=0
		"${cmd[@]}" >"$out" 2>"$errf" || rc=$?

		ops=$(sed -n 's/.*ops_per_sec=\([0-9.]*\).*/\1/p' "$out" | tail -n1)
		secs=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' "$out" | tail -n1)
		why=""
		if ((rc != 0)); then
			if ((rc > 128)); then
				why="exit $rc (signal $((rc - 128)))"
			else
				why="exit $rc"
			fi
		elif [[ -z $ops ]]; then
			why="no ops_per_sec in output"
			rc=1
		elif grep -q "cannot be preloaded" "$errf"; then
			why="library was not preloaded"
			rc=1
		fi
		[[ -s $samples ]] || echo "t_ms,rss_kb" >"$samples"
		read -r n mean p95 max < <(rss_stats "$samples")
		echo "$((r + 1)),$((j + 1)),$name,$rc,${secs:-NA},${ops:-NA},$n,$mean,$p95,$max,samples/$tag.csv,${lib//,/;}" >>"$runs_csv"

		if [[ -n $why ]]; then
			failures+=("$name round $((r + 1)): $why")
			echo "round $((r + 1))/$rounds  $name: FAILED: $why (stderr: $errf)" >&2
			sed -n '1,5s/^/    /p' "$errf" >&2
		else
			printf 'round %d/%d  %-10s %12.0f ops/s  %8.3f s  RSS mean %8.0f p95 %7s max %7s KiB (%d samples)\n' \
				$((r + 1)) "$rounds" "$name" "$ops" "$secs" "$mean" "$p95" "$max" "$n" >&2
		fi
	done
done

# ---------------------------------------------------------------- summary
# median NAME COLUMN -> median over the successful runs of NAME (NA if none).
median() {
	awk -F, -v a="$1" -v c="$2" 'NR > 1 && $3 == a && $4 == 0 && $c != "NA" { print $c }' "$runs_csv" |
		sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) print "NA"
			else if (NR % 2) print v[(NR + 1) / 2]
			else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
		}'
}

# ratio A B -> A/B with 3 decimals, NA if either is NA or B is 0.
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "NA" || b == "NA" || b + 0 == 0) print "n/a"
		else printf "%.3f\n", a / b
	}'
}

fmt_int() {
	if [[ $1 == NA ]]; then echo "n/a"; else printf '%.0f' "$1"; fi
}

declare -A med_ops med_mean med_p95 med_max nok
for name in "${allocs[@]}"; do
	med_ops[$name]=$(median "$name" 6)
	med_mean[$name]=$(median "$name" 8)
	med_p95[$name]=$(median "$name" 9)
	med_max[$name]=$(median "$name" 10)
	nok[$name]=$(awk -F, -v a="$name" 'NR > 1 && $3 == a && $4 == 0' "$runs_csv" | wc -l)
done
tide_ops=NA
tide_mean=NA
if [[ -v "med_ops[tidemalloc]" ]]; then
	tide_ops=${med_ops[tidemalloc]}
	tide_mean=${med_mean[tidemalloc]}
fi

cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
glibc_ver=$(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown)
glibc_ver=${glibc_ver#glibc }

table=$outdir/table.md
{
	echo "## dist_app allocator comparison"
	echo
	echo "- command: \`dist_app ${dargs[*]}\`"
	echo "- rounds: $rounds (allocators alternated within each round, order rotated each round)"
	echo "- date: $(date '+%Y-%m-%d %H:%M:%S %z')"
	echo "- kernel: $(uname -r)"
	echo "- cpu: ${cpu_model:-unknown} ($(nproc) online CPUs)"
	echo "- glibc: $glibc_ver"
	echo "- RSS: VmRSS from /proc/PID/status every $interval ms"
	for name in "${allocs[@]}"; do
		lib=${lib_of[$name]}
		[[ -n $lib ]] || continue
		ver=$(pkg_version "$lib")
		echo "- $name: \`$lib\`${ver:+ ($ver)}"
	done
	echo
	echo "| allocator | ops/s (median) | ops/s vs tidemalloc | RSS mean KiB (median) | RSS p95 KiB (median) | RSS max KiB (median) | RSS mean vs tidemalloc | ok runs |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for name in "${allocs[@]}"; do
		printf '| %s | %s | %s | %s | %s | %s | %s | %s/%s |\n' "$name" \
			"$(fmt_int "${med_ops[$name]}")" \
			"$(ratio "${med_ops[$name]}" "$tide_ops")" \
			"$(fmt_int "${med_mean[$name]}")" \
			"$(fmt_int "${med_p95[$name]}")" \
			"$(fmt_int "${med_max[$name]}")" \
			"$(ratio "${med_mean[$name]}" "$tide_mean")" \
			"${nok[$name]}" "$rounds"
	done
	echo

	# The issue's bar (information only).
	# have NAME -> true when NAME has a median (at least one successful run).
	have() { [[ -v "med_ops[$1]" && ${med_ops[$1]} != NA ]]; }
	missing() {
		local m=() x
		for x in "$@"; do have "$x" || m+=("$x"); done
		echo "n/a (no successful run of ${m[*]})"
	}
	bar_ops=$(missing tidemalloc tcmalloc)
	if have tidemalloc && have tcmalloc; then
		q=$(ratio "$tide_ops" "${med_ops[tcmalloc]}")
		if awk -v a="$tide_ops" -v b="${med_ops[tcmalloc]}" 'BEGIN { exit !(a >= b) }'; then
			bar_ops="yes ($q)"
		else
			bar_ops="no ($q)"
		fi
	fi
	bar_rss=$(missing tidemalloc mimalloc)
	if have tidemalloc && have mimalloc && [[ $tide_mean != NA && ${med_mean[mimalloc]} != NA ]]; then
		q=$(ratio "$tide_mean" "${med_mean[mimalloc]}")
		if awk -v a="$tide_mean" -v b="${med_mean[mimalloc]}" 'BEGIN { exit !(a <= b) }'; then
			bar_rss="yes ($q)"
		else
			bar_rss="no ($q)"
		fi
	fi
	echo "bar: tide ops/s >= tcmalloc ops/s: $bar_ops; tide RSS mean <= mimalloc RSS mean: $bar_rss"
} >"$table"

echo
cat "$table"
echo
echo "raw results: $outdir (runs.csv, samples/, logs/, table.md)"

if ((${#failures[@]} > 0)); then
	echo >&2
	echo "$prog: ${#failures[@]} run(s) failed:" >&2
	printf '  %s\n' "${failures[@]}" >&2
	exit 1
fi
exit 0
