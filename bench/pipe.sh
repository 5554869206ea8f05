#!/usr/bin/env bash
# Benchmark: `pgnotify pipe` draining a burst of notifications committed in one transaction,
# into a pipe and into /dev/null, next to a minimal client on the same `postgres` crate that
# only reads and writes the same NDJSON (examples/bench_peer.rs); peak memory, also with a
# reader that stalls; and latency at a steady rate. One throwaway server for all of it.
#   bash bench/pipe.sh [BURST] [RATE]      (defaults 200000 and 2000/s)
set -euo pipefail
cd "$(dirname "$0")/.."
burst=${1:-200000}
rate=${2:-2000}
cargo build --release -q --example bench_peer
peer=$PWD/target/release/examples/bench_peer
. bench/server.sh
conninfo="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE"


# run NAME SINK COMMAND...: start the consumer (under GNU time), wait until it listens, freeze
# it (SIGSTOP) while the burst commits, so that the server holds all of it, then let it go and
# time the drain alone; prints the rate and peak memory.
run() {
  local name=$1 sink=$2; shift 2
  rm -f "$work/ready" "$work/rss"
  case $sink in
    pipe) bash -c '"$@" 2> >(tee "'"$work"'/ready" >&2) | wc -l > "'"$work"'/lines"' _ /usr/bin/time -f %M -o "$work/rss" "$@" & ;;
    null) /usr/bin/time -f %M -o "$work/rss" "$@" > /dev/null 2> "$work/ready" & ;;
    stall) bash -c '"$@" 2> "'"$work"'/ready" | (sleep 3; cat > /dev/null)' _ /usr/bin/time -f %M -o "$work/rss" "$@" & ;;
  esac
  local pid=$!
  until grep -qE 'listening on|ready' "$work/ready" 2>/dev/null; do sleep 0.01; done
  local consumer; consumer=$(pgrep -n -f "^$1 ")
  kill -STOP "$consumer"
  "$psql" -XAtq -o /dev/null -c "SELECT count(pg_notify('bench', i::text)) FROM generate_series(1, $burst) i"
  local t0; t0=$(now)
  kill -CONT "$consumer"
  wait "$pid" || true
  local t1; t1=$(now)
  until [ -s "$work/rss" ]; do sleep 0.01; done
  if [ "$sink" = stall ]; then
    awk -v name="$name" -v kib="$(tail -1 "$work/rss")" 'BEGIN { printf "  %-44s peak RSS %5.1f MiB\n", name, kib / 1024 }'
    return
  fi
  awk -v n="$burst" -v ns=$((t1 - t0)) -v name="$name" -v kib="$(tail -1 "$work/rss")" \
    'BEGIN { printf "  %-44s %9.0f/s  (%.3f s)  peak RSS %5.1f MiB\n", name, n / (ns / 1e9), ns / 1e9, kib / 1024 }'
}

echo "burst: $burst notifications committed in one transaction, unix socket, PostgreSQL $("$psql" -XAtc 'SHOW server_version')"
for round in 1 2; do
  echo " round $round"
  run "pgnotify pipe | wc -l" pipe "$pgnotify" -v pipe bench --count "$burst"
  run "minimal same-crate client | wc -l" pipe "$peer" listen "$conninfo" bench "$burst"
  run "pgnotify pipe > /dev/null" null "$pgnotify" -v pipe bench --count "$burst"
  run "minimal same-crate client > /dev/null" null "$peer" listen "$conninfo" bench "$burst"
done
echo " memory when the reader stalls for 3 s (pgnotify drops past its 4 MiB buffer):"
run "pgnotify pipe | (sleep 3; cat)" stall "$pgnotify" -v pipe bench --count "$burst" --timeout 10s

echo "latency at $rate/s for 5 s, both consumers on the same stream at the same time:"
echo "  send time (in the payload) to the line read by the consumer"
consume() {
  python3 -c '
import json, sys, time
lat = []
for line in sys.stdin:
    now = time.time_ns()
    lat.append((now - int(json.loads(line)["payload"])) / 1e6)
lat.sort()
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"  %-44s p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  (%d notifications)" % (sys.argv[1], pick(0.50), pick(0.90), pick(0.99), len(lat)))
' "$1"
}
rm -f "$work/ready1" "$work/ready2"
"$pgnotify" -v pipe lat --count $((rate * 5)) 2> "$work/ready1" | consume "pgnotify pipe" &
ours=$!
"$peer" listen "$conninfo" lat $((rate * 5)) 2> "$work/ready2" | consume "minimal same-crate client" &
theirs=$!
until grep -q 'listening on' "$work/ready1" 2>/dev/null && grep -q ready "$work/ready2" 2>/dev/null; do sleep 0.01; done
"$peer" send "$conninfo" lat "$rate" 5
wait "$ours" "$theirs"
