#!/usr/bin/env bash
# bench/real/sqlite.sh: the sqlite3 shell building and querying a database
# of some hundred MB under the allocator; see common.sh for the environment
# and the RESULT line.
#
# One sqlite3 process (under tide-rss) runs one SQL script on a fresh
# database file in the scratch directory, with PRAGMA journal_mode=OFF,
# synchronous=OFF, cache_size=-200000 (a 200 MB page cache: the pages live
# in malloc'd memory, so the allocator matters) and temp_store=MEMORY (sorter
# and temporary b-trees in memory too).  The data is made by sqlite itself,
# deterministically: a 3000-character pseudo-random text from a recursive CTE,
# then N rows (id, grp, name, body) from a recursive CTE with an LCG, body
# being a substring of 10..409 characters of that text.  Then two indexes
# (one UNIQUE), queries (count/sum, GROUP BY with ORDER BY and LIMIT, ORDER BY
# an unindexed column with LIMIT, LIKE, GROUP BY an expression), an UPDATE
# that doubles the body of 10% of the rows, a DELETE of 10% of the rows, and
# queries again.  N = 1,500,000 rows (a database of about 520 MB; about 25 s);
# QUICK: 500,000 (about 175 MB, about 5 s).
#
# throughput: rows per second of the whole job = N / the sum of the "real"
# times that sqlite3's .timer reports for all statements (build, indexes,
# queries, update, delete), unit rows/s.
#
# Check: the query results (everything sqlite3 prints that is not a timer
# line) must be exactly the expected text below (it depends only on N).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

rr_init sqlite
SQLITE=$(rr_find_bin sqlite3)
rr_check_malloc_binding "$SQLITE" -version

if [[ $RR_QUICK == 1 ]]; then
	N=500000
	EXPECT=$(
		cat <<'EOF'
off
500000|104713439|1000
730|580|76247
196|572|226219
740|564|96704
128997|n6cfb3215|406
386552|n48422de8|402
399966|n701a2552|402
110338
3985
0|50010
1|62224
2|62592
3|62857
4|62707
5|62617
6|62242
7|62288
8|12463
451197|105051521
24362
EOF
	)
else
	N=1500000
	EXPECT=$(
		cat <<'EOF'
off
1500000|314233773|1000
287|1629|585605
29|1614|205858
570|1604|467558
648000|n72d7e5c0|409
696753|n09c3f309|409
618483|n6913b4ef|408
331005
11811
0|149743
1|187171
2|187422
3|188113
4|188299
5|187617
6|187315
7|186665
8|37655
1353592|315363284
72741
EOF
	)
fi

DB=$RR_TMP/bench.db
SQL=$RR_TMP/bench.sql
cat >"$SQL" <<EOF
.bail on
.headers off
.mode list
PRAGMA journal_mode=OFF;
PRAGMA synchronous=OFF;
PRAGMA cache_size=-200000;
PRAGMA temp_store=MEMORY;
.timer on
CREATE TABLE txt(s TEXT NOT NULL);
INSERT INTO txt WITH RECURSIVE c(i, x, s) AS (
  SELECT 0, 7, ''
  UNION ALL
  SELECT i + 1, (x * 1103515245 + 12345) % 2147483648,
         s || substr('abcdefghijklmnopqrstuvwxyz      ', 1 + (x / 65536) % 32, 1)
  FROM c WHERE i < 3000)
SELECT s FROM c WHERE i = 3000;
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL);
INSERT INTO t(id, grp, name, body) WITH RECURSIVE c(i, x) AS (
  SELECT 1, 12345
  UNION ALL
  SELECT i + 1, (x * 1103515245 + 12345) % 2147483648 FROM c WHERE i < $N)
SELECT i, (x / 65536) % 1000, printf('n%08x', x),
       substr((SELECT s FROM txt), 1 + (x / 7) % 2500, 10 + (x / 16384) % 400)
FROM c;
CREATE INDEX t_grp_name ON t(grp, name);
CREATE UNIQUE INDEX t_name ON t(name);
SELECT count(*), sum(length(body)), count(DISTINCT grp) FROM t;
SELECT grp, count(*), sum(length(body)) FROM t GROUP BY grp ORDER BY 2 DESC, 1 LIMIT 3;
SELECT id, name, length(body) FROM t ORDER BY body DESC, id LIMIT 3;
SELECT count(*) FROM t WHERE body LIKE '%ab%';
SELECT count(*) FROM t WHERE name LIKE 'n00%';
SELECT length(body) / 50 AS b, count(*) FROM t GROUP BY b ORDER BY b;
UPDATE t SET body = body || body WHERE grp < 100;
DELETE FROM t WHERE grp >= 900;
SELECT count(*), sum(length(body)) FROM t;
SELECT count(*) FROM t WHERE grp BETWEEN 100 AND 199 AND name > 'n4';
EOF

RR_OUT=$RR_TMP/sqlite.out
rr_run_fg -- "$SQLITE" -batch -bail "$DB" ".read $SQL"

got=$(grep -v '^Run Time: ' "$RR_OUT" || true)
if [[ $got != "$EXPECT" ]]; then
	diff <(printf '%s\n' "$EXPECT") <(printf '%s\n' "$got") | sed 's/^/  /' >&2 || true
	rr_die "query results differ from the expected ones (above: < expected, > got)"
fi
read -r nstmt secs < <(awk '$1 == "Run" && $2 == "Time:" && $3 == "real" { n++; s += $4 }
	END { printf "%d %.6f\n", n, s }' "$RR_OUT")
((nstmt == 16)) || rr_die "expected 16 timed statements, sqlite3 reported $nstmt"
rr_log "rows=$N statements=$nstmt seconds=$secs db_bytes=$(stat -c %s "$DB")"
thr=$(awk -v n="$N" -v t="$secs" 'BEGIN { if (t <= 0) exit 1; printf "%.0f", n / t }') ||
	rr_die "bad total time $secs"
rr_result "$thr" rows/s
