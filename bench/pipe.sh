#!/usr/bin/env bash
# Benchmark: `pgnotify pipe` next to its peers, in one run: a minimal C libpq listener writing
# the same NDJSON (bench/peer.c, built here with cc and libpq-dev), a minimal client on the same
# `postgres` crate doing the same (examples/bench_peer.rs), and pg_listen when PG_LISTEN_BIN
# names its binary. Measured: draining a burst committed in one transaction, into a pipe and
# into /dev/null (paired rounds); peak memory, also with a reader that stalls; latency at a
# steady rate; start-up. Then pgnotify's figures over C's, as ratios. One throwaway server.
#   bash bench/pipe.sh [BURST] [RATE] [BYTES]   (defaults 200000, 2000/s, 100-byte payloads)
#   PG_LISTEN_BIN=/path/to/pg_listen bash bench/pipe.sh
# pg_listen writes the bare payload on a line-buffered stdout (one write per line), never
# exits, and says "Listening on channel" before its LISTEN is sent: its payloads get a newline,
# its drain ends when it has written every byte (/proc/PID/io), it counts as listening once
# pg_stat_activity shows its LISTEN answered, and its start-up is only a lower bound.
set -euo pipefail
cd "$(dirname "$0")/.."
burst=${1:-200000}
rate=${2:-2000}
size=${3:-100}
rounds=3
pg_listen=${PG_LISTEN_BIN:-}
if [ -n "$pg_listen" ] && [ ! -x "$pg_listen" ]; then
  echo "PG_LISTEN_BIN=$pg_listen is not an executable" >&2
  exit 1
fi
cargo build --release -q --example bench_peer
peer=$PWD/target/release/examples/bench_peer
cpeer=$PWD/target/bench/peer
mkdir -p "$(dirname "$cpeer")"
cc -O2 -I"$(pg_config --includedir)" -o "$cpeer" bench/peer.c -L"$(pg_config --libdir)" -lpq
. bench/server.sh
conninfo="host=$PGHOST port=$PGPORT user=$PGUSER dbname=$PGDATABASE"
pgl_conninfo="$conninfo application_name=bench_pg_listen"
results=$work/results # "KEY MEASURE VALUE" lines, summed up at the end
record() { echo "$1 $2 $3" >> "$results"; }

# pg_listen is listening once its session has answered a LISTEN and waits (no earlier sign).
pgl_sessions() {
  "$psql" -XAtc "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'bench_pg_listen' ${1:+AND state = 'idle' AND query ILIKE 'LISTEN %'}"
}
pgl_wait_listening() { until [ "$(pgl_sessions idle)" -ge 1 ]; do sleep 0.01; done; }
pgl_wait_gone() { until [ "$(pgl_sessions)" -eq 0 ]; do sleep 0.01; done; }
# Bytes pg_listen writes for the burst: each payload and its newline.
pgl_bytes=$("$psql" -XAtc "SELECT sum(length(rpad(i::text || ':', $size, 'x')) + 1) FROM generate_series(1, $burst) i")
# pgl_until_written PID BYTES FLAG: creates FLAG once it knows where PID stands, and returns
# once PID has written BYTES more.
pgl_until_written() {
  python3 -c '
import sys, time
path, more, flag = "/proc/%s/io" % sys.argv[1], int(sys.argv[2]), sys.argv[3]
wchar = lambda: int(next(l for l in open(path) if l.startswith("wchar:")).split()[1])
target = wchar() + more
open(flag, "w").close()
while wchar() < target:
    time.sleep(0.001)
' "$@"
}

# run NAME KEY SINK COMMAND...: start the consumer (under GNU time; its PID written by the shell
# that then becomes it), wait until it listens, freeze it (SIGSTOP) while the burst commits, so
# that the server holds all of it, then let it go and time the drain alone; prints the rate and
# peak memory, and records them under KEY.
run() {
  local name=$1 key=$2 sink=$3; shift 3
  rm -f "$work/ready" "$work/rss" "$work/pid" "$work/lines"
  local launch=(/usr/bin/time -f %M -o "$work/rss" sh -c 'echo $$ > "$0"; exec "$@"' "$work/pid")
  local payload="rpad(i::text || ':', $size, 'x')"
  if [ "$key" = pg_listen ]; then
    payload="$payload || E'\\n'"
    pgl_wait_gone
  fi
  case $sink in
    pipe) bash -c '"$@" 2> >(tee "'"$work"'/ready" >&2) | wc -l > "'"$work"'/lines"' _ "${launch[@]}" "$@" & ;;
    null) "${launch[@]}" "$@" > /dev/null 2> "$work/ready" & ;;
    stall) bash -c '"$@" 2> "'"$work"'/ready" | (sleep 3; cat > /dev/null)' _ "${launch[@]}" "$@" & ;;
  esac
  local pid=$!
  until grep -qE 'listening on|ready|Listening on channel' "$work/ready" 2>/dev/null; do sleep 0.01; done
  [ "$key" = pg_listen ] && pgl_wait_listening
  local consumer; consumer=$(cat "$work/pid")
  kill -STOP "$consumer"
  "$psql" -XAtq -o /dev/null -c "SELECT count(pg_notify('bench', $payload)) FROM generate_series(1, $burst) i"
  local t0 t1 written
  if [ "$key" = pg_listen ]; then
    rm -f "$work/watching"
    pgl_until_written "$consumer" "$pgl_bytes" "$work/watching" &
    written=$!
    until [ -e "$work/watching" ]; do sleep 0.01; done
    t0=$(now)
    kill -CONT "$consumer"
    wait "$written"
    t1=$(now)
    kill -TERM "$consumer"
    wait "$pid" || true
  else
    t0=$(now)
    kill -CONT "$consumer"
    wait "$pid" || true
    t1=$(now)
  fi
  until [ -s "$work/rss" ]; do sleep 0.01; done
  local kib; kib=$(tail -1 "$work/rss")
  record "$key" "rss_$sink" "$kib"
  if [ "$sink" = stall ]; then
    awk -v name="$name" -v kib="$kib" 'BEGIN { printf "  %-44s peak RSS %5.1f MiB\n", name, kib / 1024 }'
    return
  fi
  local note=""
  if [ "$sink" = pipe ] && [ "$(cat "$work/lines")" != "$burst" ]; then note="  ($(cat "$work/lines") lines!)"; fi
  record "$key" "rate_$sink" "$(awk -v n="$burst" -v ns=$((t1 - t0)) 'BEGIN { print n / (ns / 1e9) }')"
  awk -v n="$burst" -v ns=$((t1 - t0)) -v name="$name" -v kib="$kib" -v note="$note" \
    'BEGIN { printf "  %-44s %9.0f/s  (%.3f s)  peak RSS %5.1f MiB%s\n", name, n / (ns / 1e9), ns / 1e9, kib / 1024, note }'
}

echo "burst: $burst notifications of $size bytes committed in one transaction, unix socket, PostgreSQL $("$psql" -XAtc 'SHOW server_version')"
[ -n "$pg_listen" ] || echo "  (pg_listen left out: set PG_LISTEN_BIN to its binary to include it)"
for round in $(seq "$rounds"); do
  echo " round $round"
  run "pgnotify pipe | wc -l" pgnotify pipe "$pgnotify" -v pipe bench --count "$burst"
  run "minimal C libpq client | wc -l" c pipe "$cpeer" "$conninfo" bench "$burst"
  run "minimal same-crate client | wc -l" crate pipe "$peer" listen "$conninfo" bench "$burst"
  [ -z "$pg_listen" ] || run "pg_listen (payload lines) | wc -l" pg_listen pipe "$pg_listen" "$pgl_conninfo" bench
  run "pgnotify pipe > /dev/null" pgnotify null "$pgnotify" -v pipe bench --count "$burst"
  run "minimal C libpq client > /dev/null" c null "$cpeer" "$conninfo" bench "$burst"
  run "minimal same-crate client > /dev/null" crate null "$peer" listen "$conninfo" bench "$burst"
  [ -z "$pg_listen" ] || run "pg_listen (payload lines) > /dev/null" pg_listen null "$pg_listen" "$pgl_conninfo" bench
done
echo " memory when the reader stalls for 3 s (pgnotify drops past its 1 MiB queue; the others stop reading):"
run "pgnotify pipe | (sleep 3; cat)" pgnotify stall "$pgnotify" -v pipe bench --count "$burst" --timeout 10s
run "minimal C libpq client | (sleep 3; cat)" c stall "$cpeer" "$conninfo" bench "$burst"
[ -z "$pg_listen" ] || run "pg_listen | (sleep 3; cat)" pg_listen stall "$pg_listen" "$pgl_conninfo" bench

echo "latency at $rate/s for 5 s, $rounds rounds, all consumers on the same stream at the same time:"
echo "  send: from the payload's send time; commit: from the sender's commit acknowledged (it may"
echo "  trail the listeners' delivery, so commit-to-line can be negative), to the line read"
# consume KEY [raw]: reads NDJSON (or, raw, bare payloads) and writes "payload read_ns" lines
# to lat.KEY; the percentiles are worked out once the sender has said when each commit was
# acknowledged.
consume() {
  python3 -c '
import json, sys, time
key, raw, results = sys.argv[1], sys.argv[2] == "raw", sys.argv[3]
seen = []
for line in sys.stdin:
    now = time.time_ns()
    seen.append((int(line if raw else json.loads(line)["payload"]), now))
with open(results + ".lat." + key, "w") as out:
    out.writelines("%d %d\n" % s for s in seen)
' "$1" "${2:-json}" "$results"
}
# latency NAME KEY: prints and records the percentiles, send-to-line and commit-to-line.
latency() {
  python3 -c '
import sys
name, key, results = sys.argv[1], sys.argv[2], sys.argv[3]
acked = dict(map(int, l.split()) for l in open(results + ".commits"))
seen = [tuple(map(int, l.split())) for l in open(results + ".lat." + key)]
def pick(lat, q):
    return lat[min(len(lat) - 1, int(q * len(lat)))]
send = sorted((read - sent) / 1e6 for sent, read in seen)
commit = sorted((read - acked[sent]) / 1e6 for sent, read in seen if sent in acked)
print("  %-30s send   p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  (%d notifications)" % (name, pick(send, .5), pick(send, .9), pick(send, .99), len(send)))
print("  %-30s commit p50 %.3f ms  p90 %.3f ms  p99 %.3f ms" % ("", pick(commit, .5), pick(commit, .9), pick(commit, .99)))
with open(results, "a") as out:
    for q in (50, 90, 99):
        print(key, "lat_p%d" % q, pick(send, q / 100), file=out)
        print(key, "commit_p%d" % q, pick(commit, q / 100), file=out)
' "$1" "$2" "$results"
}
n=$((rate * 5))
suffix=""
[ -z "$pg_listen" ] || suffix=$'\n'
for round in $(seq "$rounds"); do
  echo " round $round"
  rm -f "$work"/ready.*
  "$pgnotify" -v pipe lat --count "$n" 2> "$work/ready.pgnotify" | consume pgnotify &
  waits=($!)
  "$cpeer" "$conninfo" lat "$n" 2> "$work/ready.c" | consume c &
  waits+=($!)
  "$peer" listen "$conninfo" lat "$n" 2> "$work/ready.crate" | consume crate &
  waits+=($!)
  if [ -n "$pg_listen" ]; then
    pgl_wait_gone
    sh -c 'echo $$ > "$0"; exec "$@"' "$work/pid.pg_listen" "$pg_listen" "$pgl_conninfo" lat 2> "$work/ready.pg_listen" |
      consume pg_listen raw &
    pgl_consumer=$!
  fi
  until grep -q 'listening on' "$work/ready.pgnotify" 2>/dev/null && grep -q ready "$work/ready.c" 2>/dev/null &&
    grep -q ready "$work/ready.crate" 2>/dev/null; do sleep 0.01; done
  [ -z "$pg_listen" ] || pgl_wait_listening
  BENCH_COMMITS="$results.commits" "$peer" send "$conninfo" lat "$rate" 5 "$suffix"
  wait "${waits[@]}"
  if [ -n "$pg_listen" ]; then
    sleep 0.5 # it has nothing to say it is done: give its last lines time, then stop it
    kill -TERM "$(cat "$work/pid.pg_listen")"
    wait "$pgl_consumer" || true
  fi
  latency "pgnotify pipe" pgnotify
  latency "minimal C libpq client" c
  latency "minimal same-crate client" crate
  [ -z "$pg_listen" ] || latency "pg_listen" pg_listen
done

runs=30
echo "start-up: median of $runs runs, from exec to the line that says LISTEN was answered"
startup() {
  local name=$1 key=$2 marker=$3; shift 3
  local ns; ns=$(time_to_line "$runs" "$marker" stderr "$@" | median)
  record "$key" startup "$ns"
  awk -v name="$name" -v ns="$ns" 'BEGIN { printf "  %-44s %6.1f ms\n", name, ns / 1e6 }'
}
startup "pgnotify -v pipe" pgnotify 'listening on' "$pgnotify" -v pipe ready
startup "minimal C libpq client" c ready "$cpeer" "$conninfo" ready
startup "minimal same-crate client" crate ready "$peer" listen "$conninfo" ready 1
[ -z "$pg_listen" ] || startup "pg_listen (before its LISTEN: lower bound)" pg_listen 'Listening on channel' \
  "$pg_listen" "$conninfo" ready

# The summary: medians over the rounds; ratios pgnotify / C (and / pg_listen when present).
echo "pgnotify next to the C libpq client (drain, RSS and latency: median of $rounds rounds; ratio pgnotify / C${pg_listen:+, and / pg_listen}):"
awk -v with_pgl="${pg_listen:+1}" "$awk_median"'
  function line(label, m, scale, unit, fmt,   p, c, g, out) {
    p = med("pgnotify", m); c = med("c", m); g = med("pg_listen", m)
    if (p == "" || c == "") return
    out = sprintf("  %-30s pgnotify " fmt " %s  C " fmt " %s  %5.2fx", label, p * scale, unit, c * scale, unit, p / c)
    if (with_pgl && g != "") out = out sprintf("   pg_listen " fmt " %s  %5.2fx", g * scale, unit, p / g)
    print out
  }
  function dline(label, m,   p, c) {
    p = med("pgnotify", m); c = med("c", m)
    if (p == "" || c == "") return
    printf "  %-30s pgnotify %6.3f ms  C %6.3f ms  %+5.0f us\n", label, p, c, (p - c) * 1000
  }
  END {
    line("drain rate | wc -l", "rate_pipe", 1e-6, "M/s", "%6.3f")
    line("drain rate > /dev/null", "rate_null", 1e-6, "M/s", "%6.3f")
    line("peak RSS, burst | wc -l", "rss_pipe", 1 / 1024, "MiB", "%6.1f")
    line("peak RSS, burst > /dev/null", "rss_null", 1 / 1024, "MiB", "%6.1f")
    line("peak RSS, stalled reader", "rss_stall", 1 / 1024, "MiB", "%6.1f")
    line("latency p50", "lat_p50", 1, "ms", "%6.3f")
    line("latency p90", "lat_p90", 1, "ms", "%6.3f")
    line("latency p99", "lat_p99", 1, "ms", "%6.3f")
    dline("commit-to-line p50", "commit_p50")
    dline("commit-to-line p90", "commit_p90")
    dline("commit-to-line p99", "commit_p99")
    line("start-up", "startup", 1e-6, "ms", "%6.1f")
  }' "$results"
