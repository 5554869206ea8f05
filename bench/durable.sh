#!/usr/bin/env bash
# Benchmark: durable delivery next to plain LISTEN/NOTIFY, in one run, on one throwaway server.
#  1. Catch-up: a consumer replays a backlog of COUNT stored events (100-byte payloads) to a
#     pipe, from exec to exit (--count), with its peak memory; next to `pipe` draining the same
#     count of NOTIFYs committed in one transaction while it waited (from the commit to its
#     exit). A backlog ten times larger shows that memory does not grow with it.
#  2. Live: events sent one per transaction at RATE/s for 10 s; latency from each commit to its
#     line (examples/bench_durable.rs), durable and plain NOTIFY alike.
#  3. Writer cost, with default durability settings (fsync, synchronous_commit and
#     full_page_writes on; the demo server has them off): the per-row overhead of a 100,000-row
#     INSERT, and of single-row INSERTs each its own transaction (a procedure that COMMITs
#     after each), into an unwatched table, one watched with the key-only NOTIFY trigger, and
#     one watched with `--durable`.
# Rounds alternate; the median is reported.
#   bash bench/durable.sh [COUNT] [RATE] [ROUNDS]   (defaults 100000, 1000/s, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-100000}
rate=${2:-1000}
rounds=${3:-3}
cargo build --release -q --example bench_durable
latency=$PWD/target/release/examples/bench_durable
. bench/server.sh
sql() { "$psql" -XAtq -v ON_ERROR_STOP=1 "$@"; }
"$pgnotify" -q consumers --install
payload="rpad(i::text || ':', 100, 'x')"

# store N: N durable events on channel "c" (what `notify --durable --lines` stores), one commit.
store() {
  sql -c "INSERT INTO pgnotify.events (channel, payload) SELECT 'c', $payload FROM generate_series(1, $1) i"
}
# catchup N NAME: seconds from exec to exit of a consumer replaying N events; peak RSS (KiB)
# into $work/rss.
catchup() {
  local t0 t1
  t0=$(now)
  /usr/bin/time -f %M -o "$work/rss" "$pgnotify" -q pipe --consumer "$2" --count "$1" c | wc -l > "$work/lines"
  t1=$(now)
  [ "$(cat "$work/lines")" -eq "$1" ] || { echo "consumer wrote $(cat "$work/lines") lines, not $1" >&2; exit 1; }
  echo $(( t1 - t0 ))
}
# drain N: nanoseconds from the commit of N NOTIFYs (sent while pipe waited) to pipe's exit.
drain() {
  rm -f "$work/ready"
  "$pgnotify" -v pipe n --count "$1" 2> "$work/ready" | wc -l > "$work/lines" &
  local pid=$!
  until grep -q 'listening on' "$work/ready" 2>/dev/null; do sleep 0.01; done
  sql -c "SELECT count(pg_notify('n', $payload)) FROM generate_series(1, $1) i" > /dev/null
  local t0; t0=$(now)
  wait $pid
  local t1; t1=$(now)
  echo $(( t1 - t0 ))
}
rate_of() { awk -v n="$1" -v ns="$2" 'BEGIN { printf "%.0f", n / (ns / 1e9) }'; }

echo "== catch-up: $count stored events, 100-byte payloads, to a pipe ($rounds rounds)"
: > "$work/durable"; : > "$work/notify"; : > "$work/rss_all"
for r in $(seq "$rounds"); do
  store "$count"
  catchup "$count" "catchup$r" >> "$work/durable"
  cat "$work/rss" >> "$work/rss_all"
  "$pgnotify" -q consumers --drop "catchup$r"
  sql -c "TRUNCATE pgnotify.events"
  drain "$count" >> "$work/notify"
done
d=$(median < "$work/durable"); n=$(median < "$work/notify")
printf '  pipe --consumer (replay)   %8s events/s  (%.0f ms)  peak RSS %s KiB\n' "$(rate_of "$count" "$d")" "$(echo "$d / 1000000" | bc -l)" "$(median < "$work/rss_all")"
printf '  pipe (NOTIFY, one commit)  %8s events/s  (%.0f ms)\n' "$(rate_of "$count" "$n")" "$(echo "$n / 1000000" | bc -l)"
big=$(( count * 10 ))
store "$big"
catchup "$big" big > "$work/big"
printf '  replay of %d events:    %8s events/s  peak RSS %s KiB\n' "$big" "$(rate_of "$big" "$(cat "$work/big")")" "$(cat "$work/rss")"
"$pgnotify" -q consumers --drop big
sql -c "TRUNCATE pgnotify.events"

echo "== live: one event per transaction at $rate/s for 10 s"
"$latency" "$pgnotify" durable "$rate" 10
"$latency" "$pgnotify" notify "$rate" 10
sql -c "TRUNCATE pgnotify.events; DELETE FROM pgnotify.consumers"

echo "== writer cost, default durability (fsync, synchronous_commit, full_page_writes on)"
sql -c "ALTER SYSTEM SET fsync = on" -c "ALTER SYSTEM SET synchronous_commit = on" \
    -c "ALTER SYSTEM SET full_page_writes = on" -c "SELECT pg_reload_conf()" > /dev/null
sql <<'SQL'
CREATE TABLE plain (id int PRIMARY KEY, note text);
CREATE TABLE key (LIKE plain INCLUDING ALL);
CREATE TABLE durable (LIKE plain INCLUDING ALL);
CREATE PROCEDURE one(t regclass, n int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..n LOOP
    EXECUTE format('INSERT INTO %s VALUES ($1, ''x'')', t) USING i;
    COMMIT;
  END LOOP;
END $$;
SQL
"$pgnotify" -q watch-table key
"$pgnotify" -q watch-table durable --durable
# ms TABLE SQL: the milliseconds SQL takes (psql's \timing), the table emptied after.
ms() {
  sql -c '\timing on' -c "$2" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
  sql -c "TRUNCATE $1; TRUNCATE pgnotify.events" > /dev/null
}
single=5000
for t in plain key durable; do : > "$work/bulk_$t"; : > "$work/one_$t"; done
for r in $(seq "$rounds"); do
  for t in plain key durable; do
    ms "$t" "INSERT INTO $t SELECT i, 'x' FROM generate_series(1, 100000) i" >> "$work/bulk_$t"
    ms "$t" "CALL one('$t', $single)" >> "$work/one_$t"
  done
done
base_bulk=$(median < "$work/bulk_plain"); base_one=$(median < "$work/one_plain")
for t in plain key durable; do
  b=$(median < "$work/bulk_$t"); o=$(median < "$work/one_$t")
  printf '  %-8s bulk %8.1f ms (+%5.2f us/row)   single-row %8.1f ms (+%6.1f us/transaction)\n' \
    "$t" "$b" "$(echo "($b - $base_bulk) * 1000 / 100000" | bc -l)" \
    "$o" "$(echo "($o - $base_one) * 1000 / $single" | bc -l)"
done
