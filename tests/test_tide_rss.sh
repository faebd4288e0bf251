#!/bin/sh
# tide-rss (tools/tide-rss.c, doc/tide-rss.1): the summary line's format and
# values (checked against the CSV), exit status and output pass-through,
# signal forwarding, --alloc (the library really is mapped into the child,
# and only there), --tree, and the errors (missing library, bad usage,
# command not found).
set -eu
: "${TIDETEST_SRCDIR:?TIDETEST_SRCDIR is not set: run this test through make check}"
: "${TIDETEST_TIDE_RSS:?TIDETEST_TIDE_RSS is not set: run this test through make check}"

rss=$TIDETEST_TIDE_RSS
if [ ! -x "$rss" ]; then
  echo "FAIL: $rss not built" >&2
  exit 99
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide_rss.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

fails=0
fail() {
  echo "FAIL: $*" >&2
  fails=$((fails + 1))
}
ok() { echo "ok: $*"; }

summary_re='^tide-rss: samples=[0-9]+ rss_mean_kb=[0-9]+\.[0-9] rss_p95_kb=[0-9]+ rss_max_kb=[0-9]+ rss_final_kb=[0-9]+ pss_max_kb=[0-9]+ uss_max_kb=[0-9]+ exit=[0-9]+ wall_s=[0-9]+\.[0-9][0-9][0-9] cmd=[^ ]+$'

# field NAME FILE: the value of NAME= in the summary line held in FILE
field() {
  grep '^tide-rss: samples=' "$2" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"
}

# check_summary WHAT ERRFILE: ERRFILE holds exactly one summary line, well formed
check_summary() {
  n=$(grep -c '^tide-rss: samples=' "$2" || true)
  if [ "$n" -ne 1 ]; then
    fail "$1: expected one summary line on stderr, got $n:"
    cat "$2" >&2
    return 1
  fi
  if ! grep '^tide-rss: samples=' "$2" | grep -Eq "$summary_re"; then
    fail "$1: malformed summary line:"
    grep '^tide-rss: samples=' "$2" >&2
    return 1
  fi
  return 0
}

# check_csv WHAT CSV SUMMARYFILE: the summary's statistics agree with the
# CSV: sample count, mean, p95 (ceil(n*95/100)-th smallest), max, final,
# Pss/USS max; Pss/USS only change on every 10th sample (--smaps-every 10).
check_csv() {
  if [ "$(sed -n 1p "$2")" != "t_ms,rss_kb,pss_kb,uss_kb" ]; then
    fail "$1: bad CSV header: $(sed -n 1p "$2")"
    return 1
  fi
  bad=$(awk -F, 'NR > 1 {
      if (NF != 4 || $1 !~ /^[0-9]+(\.[0-9]+)?$/ || $2 !~ /^[0-9]+$/ ||
          $3 !~ /^[0-9]+$/ || $4 !~ /^[0-9]+$/) { print "bad row " NR ": " $0; exit }
      if (NR > 2 && $1 + 0 < t + 0) { print "time goes backwards at row " NR; exit }
      if ((NR - 2) % 10 != 0 && ($3 != p || $4 != u)) { print "Pss/USS changed at row " NR; exit }
      t = $1; p = $3; u = $4 }' "$2")
  if [ -n "$bad" ]; then
    fail "$1: CSV: $bad"
    return 1
  fi
  exp=$(awk -F, 'NR > 1 { n++; s += $2; if ($2 > m) m = $2; f = $2;
                          if ($3 > pm) pm = $3; if ($4 > um) um = $4 }
      END { if (n) printf "samples=%d rss_mean_kb=%.1f rss_max_kb=%d rss_final_kb=%d pss_max_kb=%d uss_max_kb=%d", n, s / n, m, f, pm, um }' "$2")
  n=$(($(wc -l <"$2") - 1))
  if [ "$n" -lt 1 ]; then
    fail "$1: CSV has no samples"
    return 1
  fi
  k=$(((n * 95 + 99) / 100))
  p95=$(tail -n +2 "$2" | cut -d, -f2 | sort -n | sed -n "${k}p")
  got="samples=$(field samples "$3") rss_mean_kb=$(field rss_mean_kb "$3") rss_max_kb=$(field rss_max_kb "$3") rss_final_kb=$(field rss_final_kb "$3") pss_max_kb=$(field pss_max_kb "$3") uss_max_kb=$(field uss_max_kb "$3")"
  if [ "$got" != "$exp" ]; then
    fail "$1: summary disagrees with the CSV"
    echo "  CSV gives: $exp" >&2
    echo "  summary:   $got" >&2
    return 1
  fi
  if [ "$(field rss_p95_kb "$3")" != "$p95" ]; then
    fail "$1: rss_p95_kb=$(field rss_p95_kb "$3"), CSV gives $p95 (n=$n, k=$k)"
    return 1
  fi
  return 0
}

# ---------------------------------------------------------------------------
# 1. exit status and output pass through; summary line, --summary, --quiet
# ---------------------------------------------------------------------------
rc=0
"$rss" --alloc glibc --csv "$tmp/c1.csv" --summary "$tmp/s1" -- \
  sh -c 'echo to-stdout; echo to-stderr >&2; sleep 0.1; exit 3' \
  >"$tmp/out1" 2>"$tmp/err1" || rc=$?
if [ "$rc" -ne 3 ]; then
  fail "exit 3: tide-rss exited with $rc"
elif [ "$(cat "$tmp/out1")" != "to-stdout" ]; then
  fail "exit 3: stdout not passed through: $(cat "$tmp/out1")"
elif [ "$(sed -n 1p "$tmp/err1")" != "to-stderr" ]; then
  fail "exit 3: stderr not passed through:"; cat "$tmp/err1" >&2
elif check_summary "exit 3" "$tmp/err1"; then
  if [ "$(field exit "$tmp/err1")" != 3 ] || [ "$(field cmd "$tmp/err1")" != sh ]; then
    fail "exit 3: wrong exit= or cmd= in: $(cat "$tmp/err1")"
  elif [ "$(grep '^tide-rss: samples=' "$tmp/err1")" != "$(cat "$tmp/s1")" ]; then
    fail "exit 3: --summary file differs from the stderr line: $(cat "$tmp/s1")"
  elif [ "$(field samples "$tmp/err1")" -lt 2 ]; then
    fail "exit 3: too few samples for 0.1 s: $(cat "$tmp/err1")"
  elif check_csv "exit 3" "$tmp/c1.csv" "$tmp/err1"; then
    ok "exit status 3, output pass-through, summary: $(cat "$tmp/s1")"
  fi
fi

rc=0
"$rss" --quiet --summary "$tmp/s2" -- sh -c 'kill -KILL $$' 2>"$tmp/err2" || rc=$?
if [ "$rc" -ne 137 ]; then
  fail "killed command: tide-rss exited with $rc, expected 137"
elif [ -s "$tmp/err2" ]; then
  fail "--quiet: something was printed on stderr:"; cat "$tmp/err2" >&2
elif check_summary "--quiet" "$tmp/s2" && [ "$(field exit "$tmp/s2")" != 137 ]; then
  fail "killed command: summary says exit=$(field exit "$tmp/s2"), expected 137"
else
  ok "killed by SIGKILL: exit 137, --quiet"
fi

# ---------------------------------------------------------------------------
# 2. SIGTERM sent to tide-rss is forwarded to the command
# ---------------------------------------------------------------------------
"$rss" --summary "$tmp/s3" -- sleep 8 2>"$tmp/err3" &
tool=$!
child=
i=0
while [ $i -lt 100 ]; do
  child=$(cat "/proc/$tool/task/$tool/children" 2>/dev/null || true)
  [ -n "$child" ] && [ "$(readlink "/proc/$child/exe" 2>/dev/null || true)" != "$(readlink "/proc/$tool/exe" 2>/dev/null || true)" ] && break
  child=
  sleep 0.05
  i=$((i + 1))
done
if [ -z "$child" ]; then
  # no /proc/PID/task/TID/children: give it time to exec
  sleep 0.5
fi
start=$(date +%s)
kill -TERM "$tool"
rc=0
wait "$tool" || rc=$?
end=$(date +%s)
if [ "$rc" -ne 143 ]; then
  fail "SIGTERM: tide-rss exited with $rc, expected 143"
elif [ ! -s "$tmp/s3" ] || [ "$(field exit "$tmp/s3")" != 143 ]; then
  fail "SIGTERM: tide-rss did not survive to report the command's death:"; cat "$tmp/err3" >&2
elif [ $((end - start)) -ge 6 ]; then
  fail "SIGTERM: the command was not stopped"
else
  ok "SIGTERM forwarded: $(cat "$tmp/s3")"
fi

# ---------------------------------------------------------------------------
# 3. errors: missing library, unknown allocator, usage, command not found
# ---------------------------------------------------------------------------
rc=0
"$rss" --alloc "$tmp/no-such-lib.so" -- sh -c ": >'$tmp/ran'" 2>"$tmp/err4" || rc=$?
if [ "$rc" -ne 2 ]; then
  fail "missing library: exit $rc, expected 2"
elif ! grep -q "no-such-lib.so: No such file" "$tmp/err4"; then
  fail "missing library: no clear message:"; cat "$tmp/err4" >&2
elif [ -e "$tmp/ran" ]; then
  fail "missing library: the command ran anyway (without the preload)"
else
  ok "missing library: $(cat "$tmp/err4")"
fi

rc=0
"$rss" --alloc /etc/hostname -- true 2>"$tmp/err5" || rc=$?
[ -e /etc/hostname ] && [ "$rc" -ne 2 ] && fail "--alloc of a non-library: exit $rc, expected 2"

for args in "--alloc no-such-allocator -- true" "--interval 0 -- true" \
            "--smaps-every x -- true" "--no-such-option -- true" "--tree" "--csv"; do
  rc=0
  # shellcheck disable=SC2086
  "$rss" $args >/dev/null 2>"$tmp/err6" || rc=$?
  if [ "$rc" -ne 2 ] || ! grep -q '^tide-rss: ' "$tmp/err6"; then
    fail "usage error '$args': exit $rc, expected 2 with a message"
  fi
done

rc=0
"$rss" -- "$tmp/no-such-command" 2>"$tmp/err7" || rc=$?
if [ "$rc" -ne 127 ] || ! grep -q 'no-such-command' "$tmp/err7"; then
  fail "command not found: exit $rc, expected 127 with a message"
fi
[ "$fails" -eq 0 ] && ok "usage errors, missing library, command not found"

# ---------------------------------------------------------------------------
# 4. with python3: --alloc tide, --alloc glibc, --tree
# ---------------------------------------------------------------------------
py=${PYTHON:-python3}
if [ "$py" = ":" ] || ! command -v "$py" >/dev/null 2>&1; then
  echo "SKIP (partly): $py not found; --alloc and --tree not tested" >&2
  [ "$fails" -eq 0 ] || exit 1
  exit 0
fi
# resolve wrappers (pyenv shims etc.) to the real interpreter
py=$("$py" -c 'import sys; print(sys.executable)')

# 50 MiB touched, then reports what was preloaded and mapped.
cat >"$tmp/big.py" <<'EOF'
import os, sys, time
x = b"\1" * (50 << 20)
libs = sorted({l.split()[-1] for l in open("/proc/self/maps")
               if "libtidemalloc" in l and len(l.split()) >= 6})
print("preload=" + os.environ.get("LD_PRELOAD", ""))
print("mapped=" + ",".join(libs))
print("tide_lib_env=" + ("set" if "TIDE_LIB" in os.environ else "unset"))
sys.stdout.flush()
time.sleep(0.3)
EOF

rc=0
tide_lib=$( . "$TIDETEST_SRCDIR/tide_lib.sh" >&2 && echo "$tide_lib") || rc=$?
case $rc in
  0) ;;
  77) tide_lib= ;;
  *) fail "tests/tide_lib.sh could not find the library"; tide_lib= ;;
esac
rc=0
no_tide="no shared libtidemalloc"
if [ -n "$tide_lib" ] && [ -n "${TIDETEST_EMULATOR:-}" ]; then
  no_tide="the test programs run under $TIDETEST_EMULATOR (cross build): $py cannot preload the library"
  tide_lib=
fi

if [ -n "$tide_lib" ]; then
  tide_real=$(readlink -f "$tide_lib")
  rc=0
  TIDE_LIB=$tide_lib "$rss" --alloc tide --csv "$tmp/c8.csv" --summary "$tmp/s8" -- \
    "$py" "$tmp/big.py" >"$tmp/out8" 2>"$tmp/err8" || rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "--alloc tide: exit $rc:"; cat "$tmp/out8" "$tmp/err8" >&2
  elif ! grep -qx "preload=$tide_lib" "$tmp/out8"; then
    fail "--alloc tide: LD_PRELOAD in the child is not $tide_lib:"; cat "$tmp/out8" >&2
  elif ! grep -qx "mapped=$tide_real" "$tmp/out8"; then
    fail "--alloc tide: $tide_real is not mapped in the child:"; cat "$tmp/out8" >&2
  elif ! grep -qx "tide_lib_env=unset" "$tmp/out8"; then
    fail "--alloc tide: TIDE_LIB was left in the child's environment"
  elif [ "$(grep -cv '^tide-rss: samples=' "$tmp/err8")" -ne 0 ]; then
    fail "--alloc tide: unexpected messages on stderr:"; cat "$tmp/err8" >&2
  elif check_summary "--alloc tide" "$tmp/err8" && check_csv "--alloc tide" "$tmp/c8.csv" "$tmp/s8"; then
    rows=$(($(wc -l <"$tmp/c8.csv") - 1))
    if [ "$rows" -le 10 ]; then
      fail "--alloc tide: only $rows CSV rows for a 0.3 s run"
    elif [ "$(field rss_max_kb "$tmp/s8")" -lt 50000 ] || [ "$(field uss_max_kb "$tmp/s8")" -lt 50000 ] ||
         [ "$(field pss_max_kb "$tmp/s8")" -lt 50000 ]; then
      fail "--alloc tide: 50 MiB not seen: $(cat "$tmp/s8")"
    else
      ok "--alloc tide ($rows rows): $(cat "$tmp/s8")"
    fi
  fi

  # Without TIDE_LIB, the tool in the build tree finds the build tree's library.
  rc=0
  env -u TIDE_LIB "$rss" --quiet --alloc tide -- "$py" -c \
    'print([l.split()[-1] for l in open("/proc/self/maps") if "libtidemalloc" in l][0])' \
    >"$tmp/out9" 2>"$tmp/err9" || rc=$?
  if [ "$rc" -ne 0 ] || [ "$(cat "$tmp/out9")" != "$tide_real" ]; then
    fail "--alloc tide without TIDE_LIB: exit $rc, mapped $(cat "$tmp/out9"), expected $tide_real"
    cat "$tmp/err9" >&2
  else
    ok "--alloc tide without TIDE_LIB: the build tree's library"
  fi

  # --alloc glibc removes an inherited LD_PRELOAD from the child only.
  rc=0
  LD_PRELOAD=$tide_lib "$rss" --quiet --alloc glibc -- "$py" -c \
    'import os; print("preload=" + os.environ.get("LD_PRELOAD", "") + " mapped=" + str(any("libtidemalloc" in l for l in open("/proc/self/maps"))))' \
    >"$tmp/out10" 2>"$tmp/err10" || rc=$?
  if [ "$rc" -ne 0 ] || [ "$(cat "$tmp/out10")" != "preload= mapped=False" ]; then
    fail "--alloc glibc with an inherited LD_PRELOAD: exit $rc, child says: $(cat "$tmp/out10")"
    cat "$tmp/err10" >&2
  else
    ok "--alloc glibc removes LD_PRELOAD"
  fi
else
  echo "SKIP (partly): $no_tide; --alloc tide, and --alloc glibc with a preload inherited, not tested" >&2
fi

# A ramp (1 MiB more every 10 ms): distinct samples, so that the mean and
# p95 are checked against the CSV on values that differ.
rc=0
"$rss" --quiet --csv "$tmp/c12.csv" --summary "$tmp/s12" -- "$py" -c '
import time
l = []
for i in range(40):
    l.append(b"1" * (1 << 20))
    time.sleep(0.01)
' 2>"$tmp/err12" || rc=$?
if [ "$rc" -ne 0 ]; then
  fail "ramp: exit $rc"; cat "$tmp/err12" >&2
elif check_summary "ramp" "$tmp/s12" && check_csv "ramp" "$tmp/c12.csv" "$tmp/s12"; then
  ok "ramp: $(cat "$tmp/s12")"
fi

# --tree: the 50 MiB are in a child of sh.
for mode in tree plain; do
  opt=
  [ $mode = tree ] && opt=--tree
  rc=0
  # shellcheck disable=SC2086,SC2016
  "$rss" $opt --quiet --summary "$tmp/s11$mode" -- \
    sh -c '"$0" "$1" >/dev/null; exit 0' "$py" "$tmp/big.py" 2>"$tmp/err11" || rc=$?
  if [ "$rc" -ne 0 ] || ! check_summary "--tree ($mode)" "$tmp/s11$mode"; then
    fail "--tree ($mode): exit $rc"; cat "$tmp/err11" >&2
  fi
done
if [ -s "$tmp/s11tree" ] && [ -s "$tmp/s11plain" ]; then
  t=$(field rss_max_kb "$tmp/s11tree")
  p=$(field rss_max_kb "$tmp/s11plain")
  tu=$(field uss_max_kb "$tmp/s11tree")
  if [ "$t" -lt 50000 ] || [ "$tu" -lt 50000 ] || [ "$p" -ge 20000 ]; then
    fail "--tree: rss_max_kb $t (uss $tu) with --tree, $p without; expected >= 50000 and < 20000"
  else
    ok "--tree: rss_max_kb $t with, $p without"
  fi
fi

if [ "$fails" -ne 0 ]; then
  echo "$fails failure(s)" >&2
  exit 1
fi
exit 0
