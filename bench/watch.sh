#!/usr/bin/env bash
# Benchmark: what a watched table costs its writers. Single-row INSERT, UPDATE and DELETE
# statements, each its own transaction, against identical tables in the same run: unwatched,
# watched by pgnotify with row triggers (the default: key only, and --rows) and with statement
# triggers (--triggers auto: key only, and --rows), and watched by PostgreSQL's own contrib
# `tcn` trigger (the built-in anchor, written in C).
#
# Three measures:
#  1. in the server: a procedure runs the statements and COMMITs after each one. No client,
#     no round trips, no scheduler wake-ups: the steadiest measure of CPU per statement; then
#     the same for each operation alone, without a listener. Two more tables mark the floor
#     of any PL/pgSQL trigger: one that only sends a constant notification, with and without
#     a fixed search_path. A third has pgnotify's key-only trigger without its DDL guard (the
#     exception block), to show what the guard costs.
#  2. pgbench, 1 and 4 writers (each statement a round trip, as applications do).
#  3. the trigger alone: a 100,000-row INSERT, UPDATE and DELETE, each rolled back, per row.
# Rounds alternate the tables so drift hits all alike; the median round is reported.
# Runs against a throwaway server from `pgnotify demo --keep`, removed at the end.
#   bash bench/watch.sh [SECONDS] [ROUNDS]      (default 5 s per pgbench run, 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
rounds=${2:-5}
. bench/server.sh

pgbench=$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -1)
pgbench=${pgbench:-pgbench}
tables="plain key stmt rows stmt_rows tcn"
floors="floor_set floor_noset"
# pgnotify's trigger without its DDL guard, for what the guard costs (see below).
unguarded=unguarded

"$psql" -Xq -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION tcn;
CREATE TABLE plain (id int PRIMARY KEY, qty int NOT NULL, note text);
CREATE TABLE key (LIKE plain INCLUDING ALL);
CREATE TABLE rows (LIKE plain INCLUDING ALL);
CREATE TABLE stmt (LIKE plain INCLUDING ALL);
CREATE TABLE stmt_rows (LIKE plain INCLUDING ALL);
CREATE TABLE tcn (LIKE plain INCLUDING ALL);
CREATE TRIGGER tcn AFTER INSERT OR UPDATE OR DELETE ON tcn
  FOR EACH ROW EXECUTE FUNCTION triggered_change_notification('tcn');
SQL
# The floor: a PL/pgSQL trigger that does nothing but send a constant notification, with and
# without the fixed search_path that pgnotify's function has.
for t in $floors; do
  set_path=$([ "$t" = floor_set ] && echo "SET search_path = pg_catalog, pg_temp" || true)
  "$psql" -Xq -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE $t (LIKE plain INCLUDING ALL);
CREATE FUNCTION $t() RETURNS trigger LANGUAGE plpgsql $set_path AS \$\$
DECLARE sent bool;
BEGIN
  sent := pg_catalog.pg_notify('floor', 'x') IS NULL;
  RETURN NULL;
END \$\$;
CREATE TRIGGER floor AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION $t();
SQL
done
"$pgnotify" -q watch-table key --events insert,update,delete
"$pgnotify" -q watch-table rows --events insert,update,delete --rows
"$pgnotify" -q watch-table stmt --events insert,update,delete --triggers auto
"$pgnotify" -q watch-table stmt_rows --events insert,update,delete --rows --triggers auto
for t in stmt stmt_rows; do
  "$pgnotify" watch-table --list "$t" | grep -q '"triggers":"statement"' || { echo "$t: not statement triggers" >&2; exit 1; }
done
# What the DDL guard costs: pgnotify's key-only function without its exception block (which
# keeps writes working after a key column is renamed or dropped). Never install this.
"$psql" -Xq -v ON_ERROR_STOP=1 -c "CREATE TABLE unguarded (LIKE plain INCLUDING ALL)"
"$pgnotify" -q watch-table unguarded --events insert,update,delete --print-sql | python3 -c '
import re, sys
sql = sys.stdin.read()
body = re.search(r"CREATE OR REPLACE FUNCTION .*?\n(\$pgnotify\d*\$);", sql, re.S).group(0)
body = body.replace("BEGIN\nBEGIN\n", "BEGIN\n", 1)
body = re.sub(r"EXCEPTION WHEN OTHERS THEN.*?\nEND;\n(  sent)", r"\1", body, flags=re.S)
assert "EXCEPTION" not in body
print(re.sub(r"^CREATE OR REPLACE FUNCTION \S+", "CREATE FUNCTION unguarded()", body))
print("CREATE TRIGGER t AFTER INSERT OR UPDATE OR DELETE ON unguarded")
print("  FOR EACH ROW EXECUTE FUNCTION unguarded();")
' | "$psql" -Xq -v ON_ERROR_STOP=1

# Every statement is its own transaction, so each one notifies and commits. One script and one
# procedure per table (a variable cannot name a table in a prepared statement).
for t in $tables $floors $unguarded; do
  cat > "$work/$t.sql" <<SQL
\\set id random(1, 2000000000)
INSERT INTO $t VALUES (:id, 1, 'a note of some forty characters or so..') ON CONFLICT DO NOTHING;
UPDATE $t SET qty = qty + 1 WHERE id = :id;
DELETE FROM $t WHERE id = :id;
SQL
  "$psql" -Xq -v ON_ERROR_STOP=1 <<SQL
CREATE PROCEDURE run_$t(n int, INOUT us float8 DEFAULT NULL) LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
  FOR i IN 1..n LOOP
    INSERT INTO $t VALUES (i, 1, 'a note of some forty characters or so..') ON CONFLICT DO NOTHING;
    COMMIT;
    UPDATE $t SET qty = qty + 1 WHERE id = i;
    COMMIT;
    DELETE FROM $t WHERE id = i;
    COMMIT;
  END LOOP;
  us := extract(epoch FROM clock_timestamp() - t0) * 1e6 / (3 * n);
END \$\$;
SQL
done

# The tables are small and churn: the planner would pick sequential scans over each round's dead
# rows. Index scans keep every statement alike, round after round.
export PGOPTIONS='-c enable_seqscan=off'

label() {
  case $1 in
    plain) echo "unwatched" ;;
    key) echo "pgnotify row triggers (key only)" ;;
    rows) echo "pgnotify row triggers --rows" ;;
    stmt) echo "pgnotify statement triggers (key)" ;;
    stmt_rows) echo "pgnotify statement triggers --rows" ;;
    tcn) echo "contrib tcn trigger (C)" ;;
    floor_set) echo "PL/pgSQL floor, fixed search_path" ;;
    floor_noset) echo "PL/pgSQL floor, no search_path" ;;
    unguarded) echo "key only, without the DDL guard" ;;
  esac
}

echo "watch-table: single-row INSERT/UPDATE/DELETE, one transaction each, PostgreSQL $("$psql" -XAtc 'SHOW server_version')"
echo "  (fsync=off, synchronous_commit=off: commits are cheap, so trigger costs show in full)"

# Every measure below prints microseconds per statement (or per row) of one table.
# measure(ROUNDS, FUNCTION, TABLES...): runs FUNCTION TABLE once per table to warm up, then
# ROUNDS times per table, the tables alternating and a VACUUM between rounds; sets all[TABLE]
# (every result) and us[TABLE] (the median).
measure() {
  local count=$1 fn=$2 t
  shift 2
  declare -gA all=() us=()
  for t in "$@"; do "$fn" "$t" > /dev/null; done
  for _ in $(seq "$count"); do
    "$psql" -Xqc 'VACUUM'
    for t in "$@"; do all[$t]+="$("$fn" "$t") "; done
  done
  for t in "$@"; do us[$t]=$(printf '%s\n' ${all[$t]} | median); done
}
# report(TABLES...): each table's median, its overhead over the unwatched table and over tcn's,
# every round; then the ratio the target is about.
report() {
  local t
  for t in "$@"; do
    awk -v l="$(label "$t")" -v u="${us[$t]}" -v p="${us[plain]}" -v tcn="${us[tcn]}" \
      -v all="${all[$t]}" 'BEGIN {
      x = tcn - p > 0 ? sprintf("%4.1fx tcn", (u - p) / (tcn - p)) : "         "
      printf "    %-34s %6.2f us  %+6.2f us  %s  (%s)\n", l, u, u - p, x, all }'
  done
  awk -v p="${us[plain]}" -v k="${us[key]}" -v s="${us[stmt]}" -v t="${us[tcn]}" -v target="${target:-1.5}" 'BEGIN {
    if (t - p > 0) printf "    key-only overhead / tcn overhead: row triggers %.2f, statement triggers %.2f (target: at most %s)\n", (k - p) / (t - p), (s - p) / (t - p), target
    else print "    tcn shows no overhead in this run: no ratio"
    printf "    statement triggers (key only) / row triggers (key only), per statement: %.2f\n", s / k }'
}

# In the server: us per statement of 60,000 statements, each committed.
in_server() { "$psql" -XAtc "CALL run_$1(20000)" | awk '{ printf "%.2f", $1 }'; }
for listening in no yes; do
  if [ "$listening" = yes ]; then
    # A listener drains every channel, as in real use.
    "$pgnotify" listen key rows stmt stmt_rows tcn floor unguarded --json > /dev/null &
    listener=$!
    sleep 0.5
    what="a listener on every channel (as in real use)"
  else
    what="no listener (what the trigger and NOTIFY cost the writer alone)"
  fi
  measure "$rounds" in_server $tables $floors $unguarded
  echo "  in the server, $what: a procedure, COMMIT after each statement, 60000 statements x $rounds rounds, median us per statement:"
  report $tables $floors $unguarded
done

kill "$listener" 2> /dev/null && wait "$listener" 2> /dev/null || true
listener=""
# The same, one operation at a time (no listener): where statement triggers cost more for a
# single row. An UPDATE's function pairs its two transition tables, which no row trigger needs.
# The rows an UPDATE or DELETE needs are inserted first, untimed, with triggers off.
for t in $tables; do
  "$psql" -Xq -v ON_ERROR_STOP=1 <<SQL
CREATE PROCEDURE one_$t(n int, op text, INOUT us float8 DEFAULT NULL) LANGUAGE plpgsql AS \$\$
DECLARE t0 timestamptz;
BEGIN
  TRUNCATE $t;
  IF op <> 'INSERT' THEN
    SET LOCAL session_replication_role = replica;
    INSERT INTO $t SELECT g, 1, 'a note of some forty characters or so..' FROM generate_series(1, n) g;
    COMMIT;
  END IF;
  t0 := clock_timestamp();
  FOR i IN 1..n LOOP
    CASE op
      WHEN 'INSERT' THEN INSERT INTO $t VALUES (i, 1, 'a note of some forty characters or so..');
      WHEN 'UPDATE' THEN UPDATE $t SET qty = qty + 1 WHERE id = i;
      ELSE DELETE FROM $t WHERE id = i;
    END CASE;
    COMMIT;
  END LOOP;
  us := extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
END \$\$;
SQL
done
one_op() { "$psql" -XAtc "CALL one_$1(20000, '$op')" | awk '{ printf "%.2f", $1 }'; }
for op in INSERT UPDATE DELETE; do
  measure "$rounds" one_op $tables
  echo "  in the server, no listener, single-row ${op}s only, 20000 statements x $rounds rounds, median us per statement:"
  report $tables
done

# pgbench: us per statement (the inverse of throughput) of one run with $clients writers.
pgbench_run() {
  "$pgbench" -n -M prepared -c "$clients" -j "$clients" -T "$seconds" -f "$work/$1.sql" 2>/dev/null |
    awk '/^tps = / { printf "%.2f", 1e6 / ($3 * 3) }'
}
for clients in 1 4; do
  measure "$rounds" pgbench_run $tables
  echo "  pgbench, $clients writer(s), ${seconds}s x $rounds rounds, median us per statement (1e6 / statements per second):"
  report $tables
done

# The trigger alone: a 100,000-row INSERT, UPDATE or DELETE rolled back, so no notification is
# ever committed: what remains is the per-row cost of the trigger (firing it, or capturing the
# transition table and the one query) and of building and queueing the payloads. UPDATE and
# DELETE run on 100,000 rows loaded with triggers off (session_replication_role = replica).
fill() {
  "$psql" -Xq -v ON_ERROR_STOP=1 <<SQL
BEGIN;
SET LOCAL session_replication_role = replica;
TRUNCATE $1;
$([ "$2" = full ] && echo "INSERT INTO $1 SELECT g, 1, 'a note of some forty characters or so..' FROM generate_series(1, 100000) g;")
COMMIT;
SQL
}
bulk() {
  local q
  case $op in
    INSERT) q="INSERT INTO $1 SELECT g, 1, 'a note of some forty characters or so..' FROM generate_series(1, 100000) g" ;;
    UPDATE) q="UPDATE $1 SET qty = qty + 1" ;;
    DELETE) q="DELETE FROM $1" ;;
  esac
  "$psql" -XAt -v ON_ERROR_STOP=1 <<SQL | grep -o 'Time: [0-9.]* ms' | sed -n 2p | awk '{ printf "%.3f", $2 * 1000 / 100000 }'
\timing on
BEGIN;
$q;
ROLLBACK;
SQL
}
# Sequential scans for UPDATE and DELETE of the whole table.
export PGOPTIONS=''
target=2.5
for op in INSERT UPDATE DELETE; do
  for t in $tables $floors $unguarded; do fill "$t" "$([ $op = INSERT ] && echo empty || echo full)"; done
  measure 3 bulk $tables $floors $unguarded
  echo "  the trigger alone: $op of 100000 rows in one statement, rolled back, 3 rounds, median us per row:"
  report $tables $floors $unguarded
done
