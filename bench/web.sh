#!/usr/bin/env bash
# Benchmark: fan-out to many network clients, `pipe --websocket` and `pipe --sse` next to
# `pipe --serve` (plain NDJSON over TCP) as the baseline, in one run on one throwaway server.
# For each setup its own `pgnotify -v pipe bench` process serves CLIENTS clients
# (examples/bench_web.rs: one process, a thread per client; with THREADS, that many threads
# each poll()ing its share: fairer among the clients, but fewer cores to read with), and COUNT
# notifications of 100-byte payloads (`N:xxx…`) are committed in transactions of BATCH, one
# after the other, from one psql session. Measured, for each:
#  - wall time from the start of the sending (just before psql is started, so its start-up,
#    a few ms, is counted) to the moment the last client has all COUNT: the rate is COUNT over
#    that time, notifications per second delivered to every client; and the bytes the clients
#    read, all together (after the HTTP answer heads);
#  - pgnotify's CPU time (utime + stime, /proc/PID/stat) from just before the sending to the
#    last client done, in seconds, as a share of one core over the wall time, and per
#    notification delivered to one client;
#  - pgnotify's peak RSS (VmHWM, read while it still runs), and its RSS before and after the
#    clients connected: memory per client, idle and at the peak;
#  - the clients' CPU time, since they share the machine's cores with pgnotify and
#    PostgreSQL (nothing is pinned): the WebSocket client only reads frame headers, the TCP
#    and SSE clients look at every byte for line ends, so their costs differ a little;
#  - whether every client got every notification, in order: each checks its payloads' numbers
#    (and, for SSE, the ids' sequence); a loss, a disconnect, or a warning from pgnotify fails
#    the round, loudly (a failed round's figures are those of the clients that got through,
#    still counted in the medians, which say how many rounds failed). pgnotify does not wait
#    for its clients: one whose backlog is over 1 MiB while its socket is full and its last
#    write ended over 1 s ago, or over 4 MiB at all, is disconnected; so when the burst comes
#    faster than the machine can fan it out, clients are cut off, however fast they read.
# The notifications are sent once pgnotify says it listens and that every client is connected
# (-v: "... client ADDR connected"), so none is missed for being early. Rounds are paired (tcp,
# ws, sse in each); medians are reported, then WebSocket/TCP and SSE/TCP rate ratios (the
# target is at least 0.5). Figures are indicative when the machine is busy with other work.
#   bash bench/web.sh [COUNT] [CLIENTS] [BATCH] [THREADS]   (defaults 200000, 100, 10000, CLIENTS)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-200000}
clients=${2:-100}
batch=${3:-10000}
threads=${4:-$clients}
size=100
rounds=3
cargo build --release -q --example bench_web
bench_web=$PWD/target/release/examples/bench_web
. bench/server.sh
ticks=$(getconf CLK_TCK)
results=$work/results # "KEY MEASURE VALUE" lines, summed up at the end
record() { echo "$1 $2 $3" >> "$results"; }

# The sending: one statement, so one transaction, per batch.
for ((lo = 1; lo <= count; lo += batch)); do
  hi=$((lo + batch - 1 < count ? lo + batch - 1 : count))
  echo "SELECT count(pg_notify('bench', rpad(i::text || ':', $size, 'x'))) FROM generate_series($lo, $hi) i;"
done > "$work/send.sql"

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
status_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }
# wait_for WHAT PID COMMAND...: until COMMAND succeeds; fails after 30 s or when PID is gone.
wait_for() {
  local what=$1 pid=$2 tries=0; shift 2
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null || [ $((tries += 1)) -gt 3000 ]; then
      echo "FAILED: no $what (process $pid $(kill -0 "$pid" 2>/dev/null && echo "still runs" || echo "is gone"))" >&2
      return 1
    fi
    sleep 0.01
  done
}
attached() { [ "$(grep -cs 'client .* connected$' "$1")" -ge "$clients" ]; }

# run KEY OPTION: one round of one setup; prints its line and records its figures.
run() {
  local key=$1 option=$2
  local err=$work/err.$key out=$work/out.$key cerr=$work/cerr.$key
  rm -f "$err" "$out" "$cerr"
  "$pgnotify" -v pipe bench "$option" 0 > /dev/null 2> "$err" &
  local pid=$!
  listener=$pid
  wait_for "listening line from pgnotify" "$pid" grep -qs 'listening on' "$err"
  wait_for "serving line from pgnotify" "$pid" grep -qs '^pgnotify: serving' "$err"
  local address
  address=$(grep '^pgnotify: serving' "$err" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1)
  local rss_before; rss_before=$(status_kib "$pid" VmRSS)
  "$bench_web" "$key" "$address" "$clients" "$count" "$threads" > "$out" 2> "$cerr" &
  local client=$!
  wait_for "ready from bench_web" "$client" grep -qs '^ready' "$out"
  wait_for "$clients clients connected in pgnotify's log" "$pid" attached "$err"
  local rss_idle cpu0 t0 t1
  rss_idle=$(status_kib "$pid" VmRSS)
  cpu0=$(cpu_ticks "$pid")
  t0=$(now)
  "$psql" -XAtq -v ON_ERROR_STOP=1 -o /dev/null -f "$work/send.sql"
  t1=$(now)
  local status=0
  wait "$client" || status=$?
  local cpu1 hwm
  cpu1=$(cpu_ticks "$pid")
  hwm=$(status_kib "$pid" VmHWM)
  kill -TERM "$pid"
  wait "$pid" || true
  listener=""
  local done_line; done_line=$(grep '^done ' "$out" || true)
  local warnings; warnings=$(grep -vE 'client [^ ]+ connected$|connected to server|listening on|serving|left$|closed the WebSocket$' "$err" || true)
  local failed=""
  if [ -z "$done_line" ] || [ "$status" -ne 0 ]; then
    failed="bench_web exited with status $status"
  elif [ -n "$warnings" ]; then
    failed="pgnotify warned"
  fi
  local bytes first last client_ticks lost
  read -r _ bytes first last client_ticks lost <<< "${done_line:-done 0 0 0 0 $clients}"
  [ "$last" -gt 0 ] || last=$(now)
  awk -v key="$key" -v n="$count" -v c="$clients" -v ns=$((last - t0)) -v sent=$((t1 - t0)) \
    -v first=$((first - t0)) -v bytes="$bytes" -v cpu=$((cpu1 - cpu0)) -v tck="$ticks" \
    -v hwm="$hwm" -v base="$rss_before" -v idle="$rss_idle" -v cl="$client_ticks" -v out="$results" '
    BEGIN {
      s = ns / 1e9; cs = cpu / tck
      printf "  %-4s %7.3f s %10.0f/s  %6.2f GB  pgnotify CPU %6.2f s (%4.0f%% of a core, %4.1f ns each)  peak RSS %6.1f MiB  clients CPU %5.2f s  (sent in %.3f s, first at %.3f s)\n",
        key, s, n / s, bytes / 1e9, cs, 100 * cs / s, cs * 1e9 / (n * c), hwm / 1024, cl / tck, sent / 1e9, first / 1e9
      printf "%s rate %s\n%s wall %s\n%s bytes %s\n%s cpu %s\n%s core %s\n%s each %s\n%s hwm %s\n%s idle_client %s\n%s peak_client %s\n%s client_cpu %s\n",
        key, n / s, key, s, key, bytes, key, cs, key, 100 * cs / s, key, cs * 1e9 / (n * c), key, hwm,
        key, (idle - base) / c, key, (hwm - base) / c, key, cl / tck >> out
    }'
  if [ -n "$failed" ]; then
    record "$key" failed 1
    echo "  !!!! FAILED round ($key): $failed; $lost of $clients clients did not get all $count in order" >&2
    # (all of the input read: no SIGPIPE for the writer, which pipefail would count)
    awk 'NR <= 5 { print "  !!!!   " $0 }' "$cerr" >&2
    if [ -n "$warnings" ]; then
      printf '%s\n' "$warnings" | awk 'NR <= 5 { print "  !!!!   " $0 } END { print "  !!!!   (" NR " warning lines from pgnotify)" }' >&2
    fi
  fi
}

echo "fan-out: $count notifications of $size-byte payloads, in transactions of $batch, to $clients clients;" \
  "PostgreSQL $("$psql" -XAtc 'SHOW server_version'), $(nproc) cores, nothing pinned"
echo "  each line: wall time from the sending's start to the last client done, the rate to every client,"
echo "  the bytes the clients read, pgnotify's CPU (and per notification delivered to one client), peak RSS"
for round in $(seq "$rounds"); do
  echo " round $round"
  run tcp --serve
  run ws --websocket
  run sse --sse
done

echo "medians of $rounds rounds (tcp: pipe --serve, ws: pipe --websocket, sse: pipe --sse):"
awk -v rounds="$rounds" -v clients="$clients" "$awk_median"'
  END {
    split("tcp ws sse", keys, " ")
    for (i = 1; i <= 3; i++) {
      key = keys[i]
      note = k[key, "failed"] ? sprintf("   !!!! %d of %d rounds FAILED", k[key, "failed"], rounds) : ""
      printf "  %-4s %10.0f/s  %7.3f s  %6.2f GB  pgnotify CPU %6.2f s (%4.0f%% of a core, %4.1f ns each)  peak RSS %6.1f MiB  clients CPU %5.2f s%s\n",
        key, med(key, "rate"), med(key, "wall"), med(key, "bytes") / 1e9, med(key, "cpu"), med(key, "core"),
        med(key, "each"), med(key, "hwm") / 1024, med(key, "client_cpu"), note
    }
    for (i = 2; i <= 3; i++) {
      key = keys[i]
      r = med(key, "rate") / med("tcp", "rate")
      printf "  %s / tcp rate %5.2f  (target >= 0.5: %s)   CPU per notification %5.2fx\n",
        key, r, (r >= 0.5 ? "met" : "MISSED"), med(key, "each") / med("tcp", "each")
    }
    printf "  memory per client (RSS, KiB): idle once connected"
    for (i = 1; i <= 3; i++) printf "  %s %.0f", keys[i], med(keys[i], "idle_client")
    printf ";  at the peak (all of the peak over the RSS before any client, / %d)", clients
    for (i = 1; i <= 3; i++) printf "  %s %.0f", keys[i], med(keys[i], "peak_client")
    print ""
  }' "$results"
