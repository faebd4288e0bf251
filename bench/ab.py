#!/usr/bin/env python3
"""A/B timing of allocator builds on one workload, side by side.

usage: bench/ab.py ROUNDS "COMMAND ARGS" NAME=LIB [NAME=LIB ...]

Each round runs COMMAND once under every library (LD_PRELOAD=LIB; an empty
LIB runs it on the system malloc), the order rotated by one library per
round, and reads the last ops_per_sec=N it prints. Prints, per library, the
median ops/s, the ratio of its median to the first library's, and the
median of the per-round ratios to the first library (paired: both runs of a
round saw the same machine), and the median of its peak RSS (bench/
peakrss.py: GNU time's maxrss of the program alone) with its ratio to the
first library's. A run that prints
no figure fails the script.
"""
import re
import statistics
import sys

import peakrss


def main(argv):
    if len(argv) < 4 or not argv[1].isdigit():
        sys.stderr.write(__doc__)
        return 2
    rounds, cmd = int(argv[1]), argv[2].split()
    libs = [a.split("=", 1) for a in argv[3:]]
    if any(len(x) != 2 for x in libs):
        sys.stderr.write("ab.py: libraries are NAME=LIB\n")
        return 2
    res = {name: [] for name, _ in libs}
    rss = {name: [] for name, _ in libs}
    for r in range(rounds):
        k = r % len(libs)
        for name, lib in libs[k:] + libs[:k]:
            _, out, kb = peakrss.run(cmd, lib)
            rss[name].append(kb or 0)
            m = re.findall(r"ops_per_sec=([0-9.e+]+)", out)
            if not m:
                sys.stderr.write(f"ab.py: {name}: no ops_per_sec in the output of {' '.join(cmd)}\n")
                return 1
            res[name].append(float(m[-1]))
    base = libs[0][0]
    for name, _ in libs:
        paired = [x / y for x, y in zip(res[name], res[base])]
        med = statistics.median(res[name])
        kb = statistics.median(rss[name])
        print(f"{name}: median {med:.0f} ratio-of-medians {med / statistics.median(res[base]):.4f} "
              f"median-paired-ratio {statistics.median(paired):.4f} "
              f"peak-rss-kb {kb:.0f} rss-ratio {kb / statistics.median(rss[base]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
