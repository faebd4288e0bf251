# shellcheck shell=bash
# Variables set here are used by the scripts that source this file, and prog
# is theirs:
# shellcheck disable=SC2034,SC2154
# bench/sweep_common.sh: shared code of delay_sweep.sh and pager_cost.sh
# (sourced, not run, after `set -euo pipefail' and after setting prog).
#
# Both measure tidemalloc alone under different settings of its TIDE_
# knobs.  Every single run goes through bench/suite.sh (--only-workloads W
# --only-allocs tidemalloc --rounds 1 --no-plots) with the knobs in its
# environment, so the workloads run exactly as in the suite: the same
# arguments, tide-rss every 10 ms, the same checks of a run, the same
# logs.  Each run gets its own suite output directory, OUT/runs/TAG/.
#
# The library is copied once, at the start, to OUT/lib/libtidemalloc.so
# and every run preloads that copy: rebuilding the tree while a long sweep
# runs does not change what it measures.
#
# Environment: BENCH_BUILDDIR, TIDE_LIB, TIDE_RSS as for suite.sh.

SW_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SW_SRCDIR=$(cd "$SW_SCRIPT_DIR/.." && pwd)
SW_SUITE=$SW_SCRIPT_DIR/suite.sh
# Extra suite.sh options for every run (the callers add --quick).
SW_SUITE_ARGS=()

# The labels of malloc_stats() (src/stats.c) the sweeps record, and their
# CSV column names, in the same order.
SW_STAT_LABELS=("refaulted bytes" "purged bytes" "release syscalls" "pager wakeups" "purged slices reused")
SW_STAT_COLS=(refaulted_bytes purged_bytes release_syscalls pager_wakeups purged_slices_reused_bytes)

sw_die() {
	echo "$prog: $*" >&2
	exit 2
}

sw_warn() {
	echo "warning: $*" >&2
}

sw_need() {
	(($2 >= 2)) || sw_die "$1 needs a value"
}

# sw_common_opt ARGS...: the options every sweep script takes, into the
# caller's variables: --rounds N (rounds), --workloads LIST (workloads_arg),
# --out DIR (outdir), --builddir DIR (builddir), --quick (SW_SUITE_ARGS).
# Sets SW_USED to the number of words taken: 0 when $1 is none of them.
sw_common_opt() {
	local key val
	SW_USED=0
	case $1 in
	--quick)
		SW_SUITE_ARGS+=(--quick)
		SW_USED=1
		return 0
		;;
	--rounds | --workloads | --out | --builddir)
		sw_need "$1" $#
		key=$1 val=$2 SW_USED=2
		;;
	--rounds=* | --workloads=* | --out=* | --builddir=*)
		key=${1%%=*} val=${1#*=} SW_USED=1
		;;
	*) return 0 ;;
	esac
	case $key in
	--rounds) rounds=$val ;;
	--workloads) workloads_arg=$val ;;
	--out) outdir=$val ;;
	--builddir) builddir=$val ;;
	esac
}

# sw_check_rounds: rounds is a positive integer.
sw_check_rounds() {
	[[ $rounds =~ ^[1-9][0-9]*$ ]] || sw_die "--rounds must be a positive integer"
}

# sw_exit: list the entries of the caller's failures array on stderr and
# exit 1, or exit 0 when there are none.
sw_exit() {
	if ((${#failures[@]} > 0)); then
		echo >&2
		echo "$prog: ${#failures[@]} failure(s):" >&2
		printf '  %s\n' "${failures[@]}" >&2
		exit 1
	fi
	exit 0
}

# sw_now_ms: wall clock in ms.
sw_now_ms() {
	local t=${EPOCHREALTIME//[!0-9]/}
	echo $((10#$t / 1000))
}

# sw_mmss SECONDS -> "mm:ss" (or "h:mm:ss").
sw_mmss() {
	local s=$1
	if ((s >= 3600)); then
		printf '%d:%02d:%02d' $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
	else
		printf '%02d:%02d' $((s / 60)) $((s % 60))
	fi
}

# sw_words LIST: the words of a comma- and/or space-separated LIST, one a line.
sw_words() {
	sed 's/[, ]\{1,\}/\n/g; s/^\n//' <<<"$1" | sed '/^$/d'
}

# sw_setup BUILDDIR: find the build directory, tide-rss and the library,
# and read the workload list from suite.sh.  Sets sw_builddir sw_lib_src
# sw_tide_rss sw_commit, and sw_kind[NAME] (c or real) and sw_cmd[NAME].
declare -A sw_kind=() sw_cmd=()
sw_setup() {
	local bd=${1:-$SW_SCRIPT_DIR} top n k c
	[[ -d $bd ]] || sw_die "build directory not found: $bd"
	sw_builddir=$(cd "$bd" && pwd)
	top=$(cd "$sw_builddir/.." && pwd)
	sw_lib_src=${TIDE_LIB:-$top/src/.libs/libtidemalloc.so}
	sw_tide_rss=${TIDE_RSS:-$top/tools/tide-rss}
	[[ -r $sw_lib_src ]] || sw_die "tidemalloc library not found at $sw_lib_src (build it or set TIDE_LIB)"
	[[ -x $sw_tide_rss ]] || sw_die "tide-rss not found at $sw_tide_rss (build tools/ or set TIDE_RSS)"
	sw_lib_src=$(cd "$(dirname "$sw_lib_src")" && pwd)/$(basename "$sw_lib_src")
	sw_tide_rss=$(cd "$(dirname "$sw_tide_rss")" && pwd)/$(basename "$sw_tide_rss")

	sw_commit=""
	if [[ -e $SW_SRCDIR/.git ]] && command -v git >/dev/null; then
		sw_commit=$(git -C "$SW_SRCDIR" rev-parse --short HEAD 2>/dev/null || true)
		if [[ -n $sw_commit ]] && [[ -n $(git --no-optional-locks -C "$SW_SRCDIR" status --porcelain -uno -- src pager configure.ac 2>/dev/null || true) ]]; then
			sw_commit="$sw_commit (with uncommitted changes in src/, pager/ or configure.ac)"
		fi
	fi

	while IFS=$'\t' read -r n k c; do
		sw_kind[$n]=$k
		sw_cmd[$n]=$c
	done < <(BENCH_BUILDDIR=$sw_builddir bash "$SW_SUITE" --list-workloads "${SW_SUITE_ARGS[@]}")
	((${#sw_kind[@]} > 0)) || sw_die "suite.sh --list-workloads listed nothing"
}

# sw_make_out OUTDIR DEFAULT_NAME: (after sw_setup and the checks of the
# arguments) create OUTDIR (default $BENCH_RESULTS/DEFAULT_NAME-DATE-TIME,
# BENCH_RESULTS defaulting to BUILDDIR/results; it must not hold a
# runs.csv) and copy the library into it.  Sets sw_out sw_lib (the copy)
# sw_lib_sha sw_start_s.
sw_make_out() {
	local out=$1 name=$2 err
	sw_start_s=$(date +%s)
	[[ -n $out ]] || out=${BENCH_RESULTS:-$sw_builddir/results}/$name-$(date -d "@$sw_start_s" +%Y%m%d-%H%M%S)
	mkdir -p "$out" || sw_die "cannot create $out"
	sw_out=$(cd "$out" && pwd)
	[[ ! -e $sw_out/runs.csv ]] || sw_die "$sw_out already holds a run (runs.csv); choose another --out"
	mkdir -p "$sw_out/lib" "$sw_out/runs"
	cp -L "$sw_lib_src" "$sw_out/lib/libtidemalloc.so" || sw_die "cannot copy $sw_lib_src"
	sw_lib=$sw_out/lib/libtidemalloc.so
	sw_lib_sha=$(sha256sum "$sw_lib" | cut -c1-16)
	err=$(LD_PRELOAD=$sw_lib TIDE_SHOW_STATS=0 /bin/true 2>&1) || sw_die "/bin/true fails with LD_PRELOAD=$sw_lib: $err"
	[[ $err != *"cannot be preloaded"* ]] || sw_die "ld.so cannot preload $sw_lib: $err"
}

# sw_check_workloads NAME...: die unless each is a workload suite.sh knows.
sw_check_workloads() {
	local w
	for w in "$@"; do
		[[ -v "sw_kind[$w]" ]] || sw_die "unknown workload '$w' (suite.sh knows: ${!sw_kind[*]})"
	done
}

# sw_other_knobs: the TIDE_ variables in this environment (but TIDE_LIB and
# TIDE_RSS), as "NAME=VALUE ...": they reach every run.
sw_other_knobs() {
	env | awk '/^TIDE_[A-Z0-9_]*=/ && !/^TIDE_(LIB|RSS)=/' | sort | awk '{ printf "%s%s", (NR > 1 ? " " : ""), $0 }'
}

# sw_stats FILE: the counters of the last malloc_stats() block in FILE (a
# line starting with "tidemalloc ... statistics (", then "LABEL = N"
# lines), space-separated in the order of SW_STAT_LABELS, NA for each one
# missing (no block: all NA).
sw_stats() {
	local labels
	labels=$(printf '%s\n' "${SW_STAT_LABELS[@]}")
	awk -v labels="$labels" '
		BEGIN { n = split(labels, want, "\n") }
		/^tidemalloc .* statistics \(/ { delete v; inb = 1; next }
		inb {
			i = index($0, "=")
			if (i == 0) next
			k = substr($0, 1, i - 1); x = substr($0, i + 1)
			gsub(/^ +| +$/, "", k); gsub(/ /, "", x)
			if (x ~ /^[0-9]+$/ && !(k in v)) v[k] = x
		}
		END {
			out = ""
			for (j = 1; j <= n; j++) out = out (j > 1 ? " " : "") ((want[j] in v) ? v[want[j]] : "NA")
			print out
		}' "$1"
}

# sw_run TAG WORKLOAD [NAME=VALUE...]: run WORKLOAD once under tidemalloc
# through suite.sh with NAME=VALUE in its environment, into OUT/runs/TAG.
# Sets s_ok (1/0) s_thr s_unit s_mean s_p95 s_max s_final s_wall s_exit
# (NA when missing), s_dir (relative to OUT), s_stats (the counters, as
# sw_stats prints them; NA when the log has no malloc_stats block), s_why
# (why it failed; empty when ok).  Dies (exit 2) when suite.sh cannot run.
sw_run() {
	local tag=$1 wl=$2 dir rc=0 row log
	shift 2
	dir=$sw_out/runs/$tag
	s_dir=runs/$tag
	env "$@" BENCH_BUILDDIR="$sw_builddir" TIDE_LIB="$sw_lib" TIDE_RSS="$sw_tide_rss" \
		bash "$SW_SUITE" --only-workloads "$wl" --only-allocs tidemalloc --rounds 1 \
		--no-plots --out "$dir" "${SW_SUITE_ARGS[@]}" >"$dir.suite.out" 2>"$dir.suite.err" || rc=$?
	if ((rc == 2)) || [[ ! -s $dir/runs.csv ]]; then
		sed 's/^/    /' "$dir.suite.err" >&2
		sw_die "suite.sh could not run $wl (exit $rc; see $dir.suite.err)"
	fi
	row=$(awk -F, 'NR == 2' "$dir/runs.csv")
	IFS=, read -r _ _ _ s_ok s_thr s_unit s_mean s_p95 s_max s_final _ s_wall _ s_exit _ <<<"$row"
	s_why=""
	if [[ $s_ok != 1 ]]; then
		# suite.sh's "FAILED: REASON (stderr: FILE)" and the first line of
		# that stderr it shows below it.
		s_why=$(awk '
			f { sub(/^ +/, ""); print w ": " $0; done = 1; exit }
			/FAILED: / { w = $0; sub(/.*FAILED: /, "", w); sub(/ \(stderr: .*/, "", w); f = 1 }
			END { if (f && !done) print w }' "$dir.suite.err")
		s_why="FAILED: ${s_why:-exit $s_exit}"
	fi
	if [[ ${sw_kind[$wl]} == real ]]; then
		log=$dir/real/r1-$wl-tidemalloc/$wl.log
	else
		log=$dir/logs/r1-$wl-tidemalloc.err
	fi
	if [[ -f $log ]]; then
		s_stats=$(sw_stats "$log")
	else
		s_stats=$(printf 'NA %.0s' "${SW_STAT_LABELS[@]}")
		s_stats=${s_stats% }
	fi
}

# sw_median: the median of the numbers on stdin, one a line ("NA" and
# empty lines skipped; the mean of the two middle ones for an even count;
# NA when there are none).
sw_median() {
	grep -vE '^(NA)?$' | sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) print "NA"
			else if (NR % 2) print v[(NR + 1) / 2]
			else printf "%.10g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
		}'
}

# sw_ratio A B -> A/B with 3 decimals, n/a when undefined.
sw_ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "NA" || b == "NA" || a == "" || b == "" || b + 0 == 0) print "n/a"
		else printf "%.3f\n", a / b
	}'
}

# sw_fmt V: integers for large values, 3 significant digits for small ones.
sw_fmt() {
	awk -v v="$1" 'BEGIN {
		if (v == "NA" || v == "") print "n/a"
		else if (v + 0 >= 1000 || v + 0 == int(v + 0)) printf "%.0f\n", v
		else printf "%.3g\n", v
	}'
}

# sw_mib BYTES: in MiB with 1 decimal (n/a for NA).
sw_mib() {
	awk -v v="$1" 'BEGIN { if (v == "NA" || v == "") print "n/a"; else printf "%.1f\n", v / 1048576 }'
}

# A report's list of what failed: sw_failures_md TITLE ITEM...; nothing
# when there is no item.
sw_failures_md() {
	local title=$1
	shift
	(($# > 0)) || return 0
	echo "### $title"
	echo
	local v
	for v in "$@"; do echo "- $v"; done
	echo
}

# sw_machine: one line about the machine.
sw_machine() {
	local cpu mem glibc deb
	cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
	glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown)
	deb=$(cat /etc/debian_version 2>/dev/null || echo unknown)
	echo "${cpu:-unknown CPU}, $(nproc) online CPUs, $mem GiB RAM; kernel $(uname -r); Debian $deb; ${glibc/glibc /glibc }"
}

# sw_cmdline NAME ARGS...: a shell-quoted command line for the report.
sw_cmdline() {
	local out=$1 x
	shift
	for x in "$@"; do
		if [[ $x =~ ^[A-Za-z0-9_./,=:+@%-]+$ ]]; then out+=" $x"; else out+=" $(printf '%q' "$x")"; fi
	done
	echo "$out"
}
