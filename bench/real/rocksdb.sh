#!/usr/bin/env bash
# bench/real/rocksdb.sh: RocksDB's db_bench (Debian rocksdb-tools) under the
# allocator, the program "where the allocator shows"; see common.sh for the
# environment and the RESULT line.
#
# db_bench (under tide-rss) runs fillrandom, readrandom and seekrandom with 2
# threads on a fresh database in the scratch directory: values of uniformly
# random size 32..4096 bytes, no compression, no WAL (the disk stays out of
# the measurement), a 128 MB block cache, fixed seed.  Memtables, the block
# cache (blocks are malloc'd by the reading thread and freed by whichever
# thread evicts them), iterators and std::strings all come from malloc, and
# flushes and compactions run in background threads, so the allocator's
# speed, its cross-thread frees and its footprint all count.
# Full run: --num 400000 per thread (800,000 writes) and --reads 200000 per
# thread; QUICK: 100000 and 50000.
#
# throughput: operations per second over the three benchmarks = all their
# operations / the sum of the seconds db_bench reports for them, unit ops/s.
#
# Checks: db_bench exits 0 and prints no error; readrandom and seekrandom
# find exactly the expected number of keys (the key sequences depend only on
# the seed, the thread count and --num/--reads, not on the allocator or the
# interleaving of the threads).
#
# memcached was the first candidate for this fourth program but does not show
# the allocator: it keeps items in its own slab allocator (1 MB pages from
# malloc), and its throughput and RSS under the five allocators differed by
# no more than run-to-run noise.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

rr_init rocksdb
DBB=$(rr_find_bin db_bench)
rr_check_malloc_binding "$DBB" --version

if [[ $RR_QUICK == 1 ]]; then
	NUM=100000 READS=50000 FOUND_READ=43295 FOUND_SEEK=43252
else
	NUM=400000 READS=200000 FOUND_READ=172805 FOUND_SEEK=173009
fi

RR_OUT=$RR_TMP/db_bench.out
rr_run_fg -- "$DBB" --db="$RR_TMP/db" --benchmarks=fillrandom,readrandom,seekrandom \
	--num="$NUM" --reads="$READS" --seek_nexts=10 --threads=2 \
	--value_size_distribution_type=uniform --value_size_min=32 --value_size_max=4096 \
	--compression_type=none --cache_size=134217728 --disable_wal=1 --seed=42 \
	--statistics=0 --histogram=0

if grep -qiE 'error|corrupt|fail' "$RR_OUT"; then
	rr_die "db_bench reported: $(grep -iE 'error|corrupt|fail' "$RR_OUT" | head -n 3)"
fi
# "NAME : X micros/op Y ops/sec Z seconds W operations; ... (F of R found)"
bench_stat() { # bench_stat BENCHMARK: "seconds operations found"
	awk -v b="$1" '$1 == b && $2 == ":" {
		for (i = 3; i <= NF; i++) {
			if ($i == "seconds") s = $(i - 1)
			if ($i == "operations;") o = $(i - 1)
			if ($i == "of" && $(i - 1) ~ /^[(][0-9]+$/) { f = substr($(i - 1), 2) }
		}
		printf "%s %s %s\n", s, o, f; exit }' "$RR_OUT"
}
total_ops=0
total_s=0
for b in fillrandom readrandom seekrandom; do
	read -r s o f < <(bench_stat "$b") || true
	[[ ${s:-} =~ ^[0-9.]+$ && ${o:-} =~ ^[0-9]+$ ]] || rr_die "no result line for $b in db_bench's output"
	case $b in
	fillrandom) want_o=$((2 * NUM)) want_f= ;;
	readrandom) want_o=$((2 * READS)) want_f=$FOUND_READ ;;
	seekrandom) want_o=$((2 * READS)) want_f=$FOUND_SEEK ;;
	esac
	((o == want_o)) || rr_die "$b did $o operations, expected $want_o"
	if [[ -n $want_f && ${f:-} != "$want_f" ]]; then
		rr_die "$b found ${f:-?} keys, expected $want_f"
	fi
	total_ops=$((total_ops + o))
	total_s=$(awk -v a="$total_s" -v b="$s" 'BEGIN { printf "%.6f", a + b }')
done
rr_log "operations=$total_ops seconds=$total_s db_bytes=$(du -sb "$RR_TMP/db" | cut -f1)"
thr=$(awk -v n="$total_ops" -v t="$total_s" 'BEGIN { if (t <= 0) exit 1; printf "%.0f", n / t }') ||
	rr_die "bad total time $total_s"
rr_result "$thr" ops/s
