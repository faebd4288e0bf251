#!/usr/bin/env python3
"""Our mimalloc-bench-style programs under the five allocators, side by side.

usage: bench/mbench.py [--rounds N] [--tide LIB] [--only a,b] [--builddir DIR]
                       [--out FILE]

Runs every workload (the mb_* programs written from the published
descriptions of mimalloc-bench's xmalloc-test, rptest, cache-scratch,
glibc-simple, glibc-thread, alloc-test, mstress and rbstress, plus our larson
and xthread) under glibc, tcmalloc, mimalloc, jemalloc and tidemalloc. Each
round runs every allocator once per workload, the order rotated by one per
round. For each run it reads the last ops_per_sec=N the program prints and
the program's peak RSS (bench/peakrss.py: GNU time's maxrss of the program
alone, not wait4's, which was at least Python's own 14-15 MB). Prints a markdown table: per
workload and allocator, the median ops/s and peak RSS; and tidemalloc's
throughput over the best peer's and its peak RSS over the leanest peer's
(issue 8's bar: at least 1.0 and at most 1.1). A run that fails or prints no
figure is counted and shown; the exit status is 1 if any run failed.
"""
import argparse
import os
import re
import statistics
import sys

import peakrss

LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEERS = [
    ("glibc", ""),
    ("tcmalloc", f"{LIBDIR}/libtcmalloc_minimal.so.4"),
    ("mimalloc", f"{LIBDIR}/libmimalloc.so.2"),
    ("jemalloc", f"{LIBDIR}/libjemalloc.so.2"),
]
# name, program, arguments (the programs' defaults unless said)
WORKLOADS = [
    ("xmalloc-test", "mb_xmalloc", []),
    ("rptest", "mb_rptest", []),
    ("cache-scratch1", "mb_cache_scratch", ["threads=1"]),
    ("cache-scratchN", "mb_cache_scratch", ["threads=2"]),
    ("glibc-simple", "mb_glibc_simple", []),
    ("glibc-thread", "mb_glibc_thread", []),
    ("alloc-test1", "mb_alloc_test", ["threads=1"]),
    ("alloc-testN", "mb_alloc_test", ["threads=2"]),
    ("mstress", "mb_mstress", []),
    ("rbstress1", "mb_rbstress", ["threads=1"]),
    ("larson", "larson", ["ops=4000000"]),
    ("xthread", "xthread", ["ops=2000000"]),
]


def run_once(cmd, lib):
    status, out, kb = peakrss.run(cmd, lib)
    m = re.findall(r"ops_per_sec=([0-9.e+]+)", out)
    if status != 0 or not m or kb is None:
        return None
    return float(m[-1]), kb


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tide", default=os.path.join(here, "..", "src", ".libs", "libtidemalloc.so"))
    ap.add_argument("--only", default="")
    ap.add_argument("--builddir", default=here)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    allocs = PEERS + [("tidemalloc", os.path.abspath(a.tide))]
    only = set(a.only.split(",")) if a.only else None
    work = [w for w in WORKLOADS if not only or w[0] in only]
    res = {(w[0], n): [] for w in work for n, _ in allocs}
    failed = 0
    for r in range(a.rounds):
        for name, prog, args in work:
            cmd = [os.path.join(a.builddir, prog)] + args
            k = r % len(allocs)
            for alloc, lib in allocs[k:] + allocs[:k]:
                got = run_once(cmd, lib)
                if got is None:
                    failed += 1
                    sys.stderr.write(f"mbench: {name} under {alloc} failed or printed no ops_per_sec\n")
                else:
                    res[(name, alloc)].append(got)
        sys.stderr.write(f"mbench: round {r + 1}/{a.rounds} done\n")

    lines = [
        f"Medians of {a.rounds} alternating rounds (ops/s, higher is better; peak RSS in KiB). "
        "tide/best: tidemalloc's ops/s over the best peer's; RSS/leanest: tidemalloc's peak RSS over the "
        "leanest peer's.",
        "",
        "| workload | " + " | ".join(n for n, _ in allocs) + " | tide/best | best peer | RSS/leanest | leanest peer |",
        "|---|" + "---:|" * len(allocs) + "---:|---|---:|---|",
    ]
    for name, _, _ in work:
        med = {}
        for alloc, _ in allocs:
            v = res[(name, alloc)]
            med[alloc] = (statistics.median(x for x, _ in v), statistics.median(y for _, y in v)) if v else None
        cells = [f"{med[n][0]:,.0f} / {med[n][1]:,}" if med[n] else "failed" for n, _ in allocs]
        peers = [(n, med[n]) for n, _ in PEERS if med[n]]
        t = med["tidemalloc"]
        if t and peers:
            best = max(peers, key=lambda p: p[1][0])
            lean = min(peers, key=lambda p: p[1][1])
            tail = [f"{t[0] / best[1][0]:.3f}", best[0], f"{t[1] / lean[1][1]:.2f}", lean[0]]
        else:
            tail = ["n/a", "", "n/a", ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(tail) + " |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
