#!/usr/bin/env bash
# Benchmark: what a watched table costs its writers. pgbench runs single-row INSERT, UPDATE and
# DELETE statements (each its own transaction) against four identical tables in the same run:
# unwatched, watched by pgnotify (key only, the default), watched with --rows, and watched by
# PostgreSQL's own contrib `tcn` trigger (the built-in anchor). Rounds alternate the tables so
# drift hits all four alike; the median round is reported.
# Runs against a throwaway server from `pgnotify demo --keep`, removed at the end.
#   bash bench/watch.sh [SECONDS] [ROUNDS]      (default 5 s per run, 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
rounds=${2:-5}
. bench/server.sh

pgbench=$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -1)
pgbench=${pgbench:-pgbench}
tables="plain key rows tcn"

"$psql" -Xq -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION tcn;
CREATE TABLE plain (id int PRIMARY KEY, qty int NOT NULL, note text);
CREATE TABLE key (LIKE plain INCLUDING ALL);
CREATE TABLE rows (LIKE plain INCLUDING ALL);
CREATE TABLE tcn (LIKE plain INCLUDING ALL);
CREATE TRIGGER tcn AFTER INSERT OR UPDATE OR DELETE ON tcn
  FOR EACH ROW EXECUTE FUNCTION triggered_change_notification('tcn');
SQL
"$pgnotify" -q watch-table key --events insert,update,delete
"$pgnotify" -q watch-table rows --events insert,update,delete --rows

# Every statement is its own transaction, so each one notifies and commits. One script per
# table (a pgbench variable cannot name a table in prepared mode).
for t in $tables; do
  cat > "$work/$t.sql" <<SQL
\\set id random(1, 2000000000)
INSERT INTO $t VALUES (:id, 1, 'a note of some forty characters or so..') ON CONFLICT DO NOTHING;
UPDATE $t SET qty = qty + 1 WHERE id = :id;
DELETE FROM $t WHERE id = :id;
SQL
done

# A listener drains every channel, as in real use.
"$pgnotify" listen key rows tcn --json > /dev/null &
listener=$!
sleep 0.5

# statements per second of one pgbench run
run() { # table clients
  "$pgbench" -n -M prepared -c "$2" -j "$2" -T "$seconds" -f "$work/$1.sql" 2>/dev/null |
    awk '/^tps = / { printf "%.0f", $3 * 3 }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "watch-table: single-row INSERT/UPDATE/DELETE, one transaction each, PostgreSQL $("$psql" -XAtc 'SHOW server_version')"
echo "  (fsync=off, synchronous_commit=off: commits are cheap, so trigger costs show in full)"
for clients in 1 4; do
  declare -A results=()
  for t in $tables; do run "$t" "$clients" > /dev/null; done # warm-up
  for _ in $(seq "$rounds"); do
    "$psql" -Xqc 'VACUUM'
    for t in $tables; do results[$t]+="$(run "$t" "$clients") "; done
  done
  declare -A rate=()
  for t in $tables; do rate[$t]=$(printf '%s\n' ${results[$t]} | median); done
  echo "  $clients writer(s), ${seconds}s x $rounds rounds, median statements/s (all rounds):"
  for t in $tables; do
    label=$(case $t in plain) echo "unwatched";; key) echo "pgnotify watch-table (key only)";;
      rows) echo "pgnotify watch-table --rows";; tcn) echo "contrib tcn trigger";; esac)
    awk -v l="$label" -v r="${rate[$t]}" -v p="${rate[plain]}" -v all="${results[$t]}" 'BEGIN {
      cost = 1e6 / r - 1e6 / p
      printf "    %-34s %8.0f/s  %+6.1f us per statement  (%s)\n", l, r, cost, all }'
  done
  awk -v p="${rate[plain]}" -v k="${rate[key]}" -v t="${rate[tcn]}" 'BEGIN {
    ck = 1e6 / k - 1e6 / p; ct = 1e6 / t - 1e6 / p
    if (ct > 0) printf "    key-only overhead / tcn overhead: %.2f (target: at most 1.5)\n", ck / ct
    else print "    tcn shows no overhead in this run: no ratio" }'
  unset results rate
done

# The trigger alone: a 100,000-row INSERT rolled back, so no notification is ever queued or
# committed: what remains is the per-row cost of firing the trigger and building the payload.
rows=100000
echo "  the trigger alone: INSERT of $rows rows in one statement, rolled back (median of 3), per row:"
declare -A stmt=()
for _ in 1 2 3; do
  for t in $tables; do
    ms=$("$psql" -XAt -v ON_ERROR_STOP=1 <<SQL | grep -o 'Time: [0-9.]* ms' | sed -n 2p | awk '{ print $2 }'
\timing on
BEGIN;
INSERT INTO $t SELECT g, 1, 'a note of some forty characters or so..' FROM generate_series(1, $rows) g;
ROLLBACK;
SQL
)
    stmt[$t]+="$ms "
  done
done
declare -A per=()
for t in $tables; do per[$t]=$(printf '%s\n' ${stmt[$t]} | median); done
for t in $tables; do
  awk -v t="$t" -v ms="${per[$t]}" -v p="${per[plain]}" -v n="$rows" 'BEGIN {
    printf "    %-34s %6.2f us per row  %+6.2f us for the trigger\n", t, ms * 1000 / n, (ms - p) * 1000 / n }'
done
