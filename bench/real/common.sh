# shellcheck shell=bash
# bench/real/common.sh: shared functions of the bench/real/*.sh scripts.
#
# Sourced (not run) by each script after `set -euo pipefail`.  Every script
# runs one real program under one allocator, with the allocator preloaded
# into the program under test only (tide-rss sets LD_PRELOAD in its child;
# this shell and the load generators are never preloaded), and prints one
#
#   RESULT name=NAME alloc=ALLOC throughput=N unit=U rss_mean_kb=.. rss_p95_kb=..
#          rss_max_kb=.. rss_final_kb=.. samples=.. wall_s=.. [KEY=VALUE...]
#
# line on stdout (all on one line); a script may append fields of its own
# after wall_s (redis.sh: rss_start_kb, rss_flushed_kb).  Environment in:
#
#   ALLOC     glibc|tcmalloc|mimalloc|jemalloc|tidemalloc
#   PRELOAD   library to preload into the program under test (empty for glibc)
#   TIDE_RSS  path of the tide-rss tool
#   OUTDIR    directory for CSV, summaries and logs (created if missing)
#   QUICK     1 for a short run (about 5 s); anything else: a full run
#
# Files written, for a script called NAME: OUTDIR/NAME.rss.csv and
# OUTDIR/NAME.summary (tide-rss), OUTDIR/NAME.log (everything the program and
# its client printed, and each step), and a scratch directory
# OUTDIR/NAME.tmp.XXXXXX that is removed on exit, also on failure.

RR_NAME=
RR_TMP=
RR_LOG=
RR_QUICK=0
RR_ALLOC_ARG=
RR_SRV_PID=
RR_SUMMARY=

# rr_die MESSAGE...: message on stderr, exit 1 (the EXIT trap cleans up).
rr_die() {
	local st=0
	printf '%s.sh: error (alloc=%s): %s\n' "${RR_NAME:-real}" "${ALLOC:-?}" "$*" >&2
	# (only the main shell can wait for tide-rss, not a $(...) subshell)
	if [[ $BASHPID == "$$" && -n $RR_SRV_PID ]] && ! kill -0 "$RR_SRV_PID" 2>/dev/null; then
		wait "$RR_SRV_PID" 2>/dev/null || st=$?
		RR_SRV_PID=
		printf '%s.sh: the server (under tide-rss) had exited with status %d%s\n' \
			"$RR_NAME" "$st" "$(rr_signal_text "$st")" >&2
	fi
	if [[ -n $RR_LOG && -s $RR_LOG ]]; then
		printf '%s.sh: last lines of %s:\n' "$RR_NAME" "$RR_LOG" >&2
		tail -n 15 "$RR_LOG" | sed 's/^/  | /' >&2
	fi
	exit 1
}

# rr_log MESSAGE...: a time-stamped line in OUTDIR/NAME.log.
rr_log() {
	printf '[%s] %s\n' "$(date +%T)" "$*" >>"$RR_LOG"
}

# rr_init NAME: check the environment, create OUTDIR and the scratch
# directory, install the cleanup trap.
rr_init() {
	RR_NAME=$1
	case ${ALLOC:-} in
	glibc | tcmalloc | mimalloc | jemalloc | tidemalloc) ;;
	*) rr_die "ALLOC must be glibc, tcmalloc, mimalloc, jemalloc or tidemalloc (got '${ALLOC:-}')" ;;
	esac
	PRELOAD=${PRELOAD:-}
	if [[ $ALLOC != glibc && -z $PRELOAD ]]; then
		rr_die "PRELOAD is empty for ALLOC=$ALLOC"
	fi
	if [[ -n $PRELOAD && ! -r $PRELOAD ]]; then
		rr_die "PRELOAD=$PRELOAD is not a readable file"
	fi
	[[ -n ${TIDE_RSS:-} ]] || rr_die "TIDE_RSS is not set"
	[[ -x $TIDE_RSS ]] || rr_die "TIDE_RSS=$TIDE_RSS is not executable"
	[[ -n ${OUTDIR:-} ]] || rr_die "OUTDIR is not set"
	mkdir -p "$OUTDIR" || rr_die "cannot create OUTDIR=$OUTDIR"
	OUTDIR=$(cd "$OUTDIR" && pwd)
	if [[ ${QUICK:-0} == 1 ]]; then RR_QUICK=1; else RR_QUICK=0; fi
	# Nothing in this shell or in the clients runs on the allocator under test.
	unset LD_PRELOAD
	# tidemalloc warns on stderr about every TIDE_* variable it does not know:
	# keep the suite's own TIDE_RSS and TIDE_LIB out of the program's
	# environment (TIDE_ knobs meant for tidemalloc stay exported).
	export -n TIDE_RSS
	[[ -z ${TIDE_LIB+x} ]] || export -n TIDE_LIB
	RR_LOG=$OUTDIR/$RR_NAME.log
	: >"$RR_LOG"
	RR_SUMMARY=$OUTDIR/$RR_NAME.summary
	rm -f "$RR_SUMMARY" "$OUTDIR/$RR_NAME.rss.csv"
	RR_TMP=$(mktemp -d "$OUTDIR/$RR_NAME.tmp.XXXXXX") || rr_die "mktemp failed in $OUTDIR"
	trap rr_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	RR_ALLOC_ARG=${PRELOAD:-glibc}
	rr_log "$RR_NAME: alloc=$ALLOC preload=${PRELOAD:-none} quick=$RR_QUICK tide-rss=$TIDE_RSS"
	if [[ -n $PRELOAD ]]; then
		local err
		# (TIDE_SHOW_STATS=0: tidemalloc's statistics, when asked for, would
		# only clutter the log here)
		err=$(LD_PRELOAD=$PRELOAD TIDE_SHOW_STATS=0 /bin/true 2>&1) || rr_die "/bin/true fails with LD_PRELOAD=$PRELOAD: $err"
		if grep -q 'ld\.so' <<<"$err"; then
			rr_die "ld.so cannot preload $PRELOAD: $err"
		fi
		[[ -z $err ]] || rr_log "/bin/true with LD_PRELOAD=$PRELOAD prints: $err"
	fi
}

# Kill the background server (the child of tide-rss) and tide-rss itself if
# they still run, remove the scratch directory.  Runs on every exit.
rr_cleanup() {
	local rc=$? pids i
	trap - EXIT INT TERM HUP
	if [[ -n $RR_SRV_PID ]] && kill -0 "$RR_SRV_PID" 2>/dev/null; then
		pids=$(pgrep -P "$RR_SRV_PID" || true)
		# shellcheck disable=SC2086 # pids is a list
		[[ -z $pids ]] || kill -TERM $pids 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$RR_SRV_PID" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$RR_SRV_PID" 2>/dev/null; then
			# shellcheck disable=SC2086
			[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
			kill -KILL "$RR_SRV_PID" 2>/dev/null || true
		fi
		wait "$RR_SRV_PID" 2>/dev/null || true
	fi
	if [[ -n $RR_TMP && -d $RR_TMP ]]; then
		rm -rf "$RR_TMP"
	fi
	exit "$rc"
}

# rr_find_bin NAME: print the full path of an executable; a missing program
# exits 77, which the suite takes as "skip this program", not a failure.
rr_find_bin() {
	local p
	if ! p=$(command -v "$1" 2>/dev/null) || [[ ! -x $p ]]; then
		echo "$1 not found (install it: scripts/deps.sh --bench); skipped" >&2
		exit 77
	fi
	printf '%s\n' "$p"
}

# rr_use_libc_malloc_if_linked BIN: some Debian programs (redis-server) are
# linked against jemalloc, so "no preload" would measure jemalloc, not glibc.
# For ALLOC=glibc, preload the libc the program links instead: its malloc
# then comes first in the lookup order.  Other allocators are preloaded
# anyway and come before the linked one.
rr_use_libc_malloc_if_linked() {
	local bin=$1 libs libc
	[[ $ALLOC == glibc ]] || return 0
	libs=$(ldd "$bin" 2>/dev/null) || rr_die "ldd $bin failed"
	if grep -qE 'lib(jemalloc|tcmalloc[a-z_]*|mimalloc)\.so' <<<"$libs"; then
		libc=$(awk '$1 == "libc.so.6" && $2 == "=>" { print $3 }' <<<"$libs")
		[[ -n $libc && -r $libc ]] || rr_die "cannot find the libc.so.6 of $bin"
		RR_ALLOC_ARG=$libc
		rr_log "$bin is linked with $(grep -oE 'lib(jemalloc|tcmalloc[a-z_]*|mimalloc)\.so[.0-9]*' <<<"$libs" | head -n 1); glibc run preloads $libc"
	fi
}

# rr_check_malloc_binding BIN ARGS...: run BIN ARGS (something quick such as
# --version) with the allocator as the benchmark will preload it, and
# check with ld.so's binding trace that BIN's own malloc and free resolve to
# that allocator (glibc: libc.so.6).  Catches a preload that ld.so ignores
# and programs linked against another allocator.
rr_check_malloc_binding() {
	local bin=$1 want trace sym got
	shift
	if [[ $RR_ALLOC_ARG == glibc ]]; then
		want=libc.so.6
	else
		want=$RR_ALLOC_ARG
	fi
	if [[ $RR_ALLOC_ARG == glibc ]]; then
		trace=$(LD_BIND_NOW=1 LD_DEBUG=bindings "$bin" "$@" 2>&1 >/dev/null) || true
	else
		trace=$(LD_PRELOAD=$RR_ALLOC_ARG LD_BIND_NOW=1 LD_DEBUG=bindings "$bin" "$@" 2>&1 >/dev/null) || true
	fi
	for sym in malloc free; do
		# "binding file BIN [0] to LIB [0]: normal symbol `malloc' [...]"; a
		# binding of BIN to itself is a canonical PLT entry, skip it.
		got=$(awk -v b="$bin" -v s="\`$sym'" '
			$2 == "binding" && $3 == "file" && $4 == b && $6 == "to" && $7 != b &&
			$11 == s { print $7; exit }' <<<"$trace")
		[[ -n $got ]] || rr_die "cannot see where $bin's $sym binds (LD_DEBUG=bindings)"
		case $want in
		libc.so.6) [[ $got == */libc.so.6 ]] ;;
		*) [[ $got == "$want" ]] ;;
		esac || rr_die "$bin's $sym binds to $got, not to $want"
	done
	rr_log "$bin: malloc and free bind to $got"
}

# rr_free_port LO HI: print a TCP port in LO..HI that no socket on this
# machine uses (any state, IPv4 and IPv6), starting at a random point.
rr_free_port() {
	local lo=$1 hi=$2 n start i p hex
	n=$((hi - lo + 1))
	start=$((RANDOM % n))
	for ((i = 0; i < n; i++)); do
		p=$((lo + (start + i) % n))
		printf -v hex '%04X' "$p"
		# local_address is column 2, "ADDR:PORT" in hex.
		if ! cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
			awk -v h=":$hex" 'substr($2, length($2) - 4) == h { f = 1 } END { exit !f }'; then
			printf '%s\n' "$p"
			return 0
		fi
	done
	rr_die "no free TCP port in $lo..$hi"
}

# rr_tide_rss_args [--tree]: the tide-rss options for this run.
rr_tide_rss_args() {
	RR_TIDE_ARGS=(--alloc "$RR_ALLOC_ARG" --interval 10
		--csv "$OUTDIR/$RR_NAME.rss.csv" --summary "$RR_SUMMARY" "$@")
}

# rr_start_server [--tree] -- CMD ARGS...: start CMD under tide-rss in the
# background; its output goes to the log.  Sets RR_SRV_PID (tide-rss's pid).
rr_start_server() {
	local a=()
	while [[ $# -gt 0 && $1 != -- ]]; do
		a+=("$1")
		shift
	done
	[[ ${1:-} == -- ]] || rr_die "rr_start_server: missing --"
	shift
	rr_tide_rss_args "${a[@]}"
	rr_log "start: $TIDE_RSS ${RR_TIDE_ARGS[*]} -- $*"
	"$TIDE_RSS" "${RR_TIDE_ARGS[@]}" -- "$@" >>"$RR_LOG" 2>&1 &
	RR_SRV_PID=$!
}

# rr_server_pid: print the pid of the server (tide-rss's child), waiting
# up to 5 s for it to appear.
rr_server_pid() {
	local i p
	for ((i = 0; i < 50; i++)); do
		kill -0 "$RR_SRV_PID" 2>/dev/null || rr_die "the server under tide-rss exited early"
		p=$(pgrep -P "$RR_SRV_PID" | head -n 1 || true)
		if [[ -n $p ]]; then
			printf '%s\n' "$p"
			return 0
		fi
		sleep 0.1
	done
	rr_die "tide-rss has no child process after 5 s"
}

# rr_wait_port PORT TIMEOUT_S: wait until something accepts connections on
# 127.0.0.1:PORT, while tide-rss still runs.
rr_wait_port() {
	local port=$1 t=$2 i
	for ((i = 0; i < t * 10; i++)); do
		kill -0 "$RR_SRV_PID" 2>/dev/null || rr_die "the server exited before listening on port $port"
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	rr_die "nothing listens on 127.0.0.1:$port after $t s"
}

# rr_wait_server TIMEOUT_S: wait for the background tide-rss (and so the
# server) to end; die if it does not end in time or exits non-zero.
rr_wait_server() {
	local t=$1 i rc=0
	for ((i = 0; i < t * 10; i++)); do
		kill -0 "$RR_SRV_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$RR_SRV_PID" 2>/dev/null && rr_die "the server did not stop within $t s"
	wait "$RR_SRV_PID" || rc=$?
	RR_SRV_PID=
	rr_log "tide-rss (server) exit status $rc"
	[[ $rc -eq 0 ]] || rr_die "tide-rss/server exited with status $rc$(rr_signal_text "$rc")"
}

# rr_run_fg [--tree] -- CMD ARGS...: run CMD under tide-rss in the
# foreground, its stdout to FILE $RR_OUT, stderr to the log.  Dies when it
# fails.
rr_run_fg() {
	local a=() rc=0
	while [[ $# -gt 0 && $1 != -- ]]; do
		a+=("$1")
		shift
	done
	[[ ${1:-} == -- ]] || rr_die "rr_run_fg: missing --"
	shift
	rr_tide_rss_args "${a[@]}"
	rr_log "run: $TIDE_RSS ${RR_TIDE_ARGS[*]} -- $*"
	"$TIDE_RSS" "${RR_TIDE_ARGS[@]}" -- "$@" >"$RR_OUT" 2>>"$RR_LOG" || rc=$?
	cat "$RR_OUT" >>"$RR_LOG"
	rr_log "tide-rss exit status $rc"
	[[ $rc -eq 0 ]] || rr_die "$1 exited with status $rc$(rr_signal_text "$rc")"
}

# rr_signal_text STATUS: " (signal NAME)" for statuses above 128.
rr_signal_text() {
	local rc=$1 n
	if ((rc > 128 && rc < 160)); then
		n=$(kill -l $((rc - 128)) 2>/dev/null || echo "?")
		printf ' (signal %s)' "$n"
	fi
}

# rr_summary_field KEY: the value of KEY=... in tide-rss's summary line.
rr_summary_field() {
	local line
	[[ -s $RR_SUMMARY ]] || rr_die "tide-rss wrote no summary ($RR_SUMMARY)"
	line=$(grep '^tide-rss:' "$RR_SUMMARY" | tail -n 1)
	[[ -n $line ]] || rr_die "no tide-rss: line in $RR_SUMMARY"
	awk -v k="$1" '{ for (i = 2; i <= NF; i++) { n = index($i, "=");
		if (substr($i, 1, n - 1) == k) { print substr($i, n + 1); exit } } }' <<<"$line"
}

# rr_vmrss_kb PID: print the VmRSS (KiB) of process PID, from
# /proc/PID/status; dies if it cannot be read.
rr_vmrss_kb() {
	local v
	v=$(awk '$1 == "VmRSS:" { print $2; exit }' "/proc/$1/status" 2>/dev/null) || true
	[[ $v =~ ^[0-9]+$ ]] || rr_die "cannot read VmRSS of pid $1"
	printf '%s\n' "$v"
}

# rr_result THROUGHPUT UNIT [KEY=VALUE...]: check the summary and print the
# RESULT line; any KEY=VALUE arguments (no spaces; KEY not one of the
# standard fields) are appended to it, in their order, after wall_s.
rr_result() {
	local thr=$1 unit=$2 k v out
	shift 2
	[[ $thr =~ ^[0-9]+([.][0-9]+)?$ ]] || rr_die "throughput '$thr' is not a number"
	for k in "$@"; do
		[[ $k =~ ^[a-z][a-z0-9_]*=[^[:space:]]+$ ]] || rr_die "rr_result: bad extra field '$k' (KEY=VALUE, no spaces)"
		case ${k%%=*} in
		name | alloc | throughput | unit | rss_mean_kb | rss_p95_kb | rss_max_kb | rss_final_kb | samples | wall_s)
			rr_die "rr_result: extra field '${k%%=*}' is a standard one" ;;
		esac
	done
	v=$(rr_summary_field exit)
	[[ $v == 0 ]] || rr_die "tide-rss summary says exit=$v"
	out="RESULT name=$RR_NAME alloc=$ALLOC throughput=$thr unit=$unit"
	for k in rss_mean_kb rss_p95_kb rss_max_kb rss_final_kb samples wall_s; do
		v=$(rr_summary_field "$k")
		[[ -n $v ]] || rr_die "no $k in tide-rss summary: $(cat "$RR_SUMMARY")"
		out+=" $k=$v"
	done
	for k in "$@"; do
		out+=" $k"
	done
	rr_log "$out"
	printf '%s\n' "$out"
}
