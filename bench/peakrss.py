"""Run a benchmark under an allocator and measure the peak RSS of the
benchmark alone (for bench/ab.py and bench/mbench.py).

Why not the rusage of our own child: a child's ru_maxrss is at least the
resident size of the process it was forked or vforked from (the kernel
starts the child's high-water mark from its parent's pages, and exec
keeps it), so every program run straight from Python read 14-15 MB,
Python's size, however little it used (cache-scratch: 1.7 MB under
glibc). GNU time forks the program from a process of about 1.4 MB and
prints its ru_maxrss: that floor is what remains. LD_PRELOAD is set by
env(1) after the fork, so time itself runs on the system malloc.
"""
import os
import re
import shutil
import subprocess
import sys

TIME = "/usr/bin/time"


def run(cmd, lib):
    """Run cmd (a list) with LD_PRELOAD=lib ("" = the system malloc).
    Returns (exit status, stdout, peak RSS in KiB or None)."""
    if not shutil.which(TIME):
        sys.stderr.write(f"{TIME} is missing (Debian package time; scripts/deps.sh --bench installs it)\n")
        sys.exit(2)
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    full = [TIME, "-f", "peakrss_kb=%M", "env", f"LD_PRELOAD={lib}"] + list(cmd)
    proc = subprocess.run(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    m = re.findall(r"^peakrss_kb=(\d+)$", proc.stderr, re.M)
    return proc.returncode, proc.stdout, int(m[-1]) if m else None
