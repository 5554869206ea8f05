#!/usr/bin/env bash
# Benchmark: "send the id, fetch the row". A table watched by `watch-table` (key only), one
# INSERT of ROWS rows; each consumer is frozen (SIGSTOP) while the INSERT commits, so that the
# server holds every event, then let go, and timed until it has written all of them:
#  - `pgnotify pipe` without --fetch (the floor: events only);
#  - `pgnotify pipe --fetch` (batched: one query per table for the events read together);
#  - a minimal client on the same crate that fetches each row with its own round trip
#    (examples/bench_fetch_peer.rs): the one-round-trip-per-event way.
#   bash bench/fetch.sh [ROWS]      (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-20000}
cargo build --release -q --example bench_fetch_peer
peer=$PWD/target/release/examples/bench_fetch_peer
. bench/server.sh
conninfo="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE"
"$psql" -XAtq -c "CREATE TABLE bench_rows (id int PRIMARY KEY, item text, status text)"
"$pgnotify" -q watch-table bench_rows --channel bench

# run NAME COMMAND...: the consumer's rate (events/s) from the commit to its exit.
run() {
  local name=$1; shift
  "$psql" -XAtq -c "TRUNCATE bench_rows"
  rm -f "$work/ready"
  "$@" > "$work/out" 2> "$work/ready" &
  local pid=$!
  until grep -qE 'listening on|ready' "$work/ready" 2>/dev/null; do sleep 0.01; done
  kill -STOP "$pid"
  "$psql" -XAtq -c "INSERT INTO bench_rows SELECT g, 'item ' || g, 'new' FROM generate_series(1, $rows) g"
  local t0; t0=$(now)
  kill -CONT "$pid"
  wait "$pid"
  local t1; t1=$(now)
  local fetched; fetched=$(grep -c '"new":{' "$work/out" || true)
  awk -v n="$rows" -v ns=$((t1 - t0)) -v name="$name" -v f="$fetched" \
    'BEGIN { printf "  %-46s %9.0f events/s  (%.3f s, %d rows fetched)\n", name, n / (ns / 1e9), ns / 1e9, f }'
  echo "$rows $((t1 - t0))" > "$work/last"
}

echo "fetch: one INSERT of $rows rows on a watched table, unix socket, PostgreSQL $("$psql" -XAtc 'SHOW server_version')"
for round in 1 2; do
  echo " round $round"
  run "pgnotify pipe (no --fetch)" "$pgnotify" -v pipe bench --count "$rows"
  run "pgnotify pipe --fetch (batched)" "$pgnotify" -v pipe bench --fetch --count "$rows"
  batched=$(awk '{ print $2 }' "$work/last")
  run "same-crate client, a round trip per event" "$peer" "$conninfo" bench bench_rows "$rows"
  single=$(awk '{ print $2 }' "$work/last")
  awk -v b="$batched" -v s="$single" 'BEGIN { printf "  batched --fetch is %.1fx the round-trip-per-event client\n", s / b }'
done
