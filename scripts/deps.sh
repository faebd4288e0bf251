#!/bin/sh
# Install the Debian packages tidemalloc needs to build, test and benchmark.
# Only packages that are missing are installed; `apt-get update' runs only
# when something is missing.  Needs root (or sudo) when it has to install.
#
# usage: scripts/deps.sh [--test|--bench|--all]
#   --test (default): build and test; --bench and --all add what the
#   measurement suite runs: gnuplot, redis, sqlite3, rocksdb (db_bench),
#   GNU time (the peak RSS of bench/ab.py and bench/mbench.py).
set -e

case "${1:-}" in
  ""|--all|--test|--bench) ;;
  -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "scripts/deps.sh: unknown argument '$1'" >&2; exit 2 ;;
esac

PACKAGES="
build-essential
autoconf
automake
libtool
pkg-config
liburing-dev
libnuma-dev
check
g++
clang
python3
libtcmalloc-minimal4
libgoogle-perftools-dev
libmimalloc-dev
libjemalloc-dev
"
case "${1:-}" in
  --bench|--all) PACKAGES="$PACKAGES gnuplot-nox redis-server redis-tools sqlite3 rocksdb-tools procps time" ;;
esac

missing=
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing="$missing $p"
  fi
done

if [ -z "$missing" ]; then
  echo "deps: all packages present"
  exit 0
fi

echo "deps: installing:$missing"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=
elif command -v sudo >/dev/null 2>&1; then
  SUDO=sudo
else
  echo "deps: not root and no sudo; install these packages by hand:$missing" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
