#!/usr/bin/env bash
# Benchmark: what TLS costs. One throwaway server from `pgnotify demo --keep --tls` serves
# both TLS and plain TCP on 127.0.0.1, with scram-sha-256 password authentication on both
# (hostssl and hostnossl lines; the unix socket stays trust and is used only to set up and to
# commit the bursts). In the same run:
#  1. start-up: from exec to the line that says LISTEN was answered, `pgnotify -v listen ch`
#     ("listening on" on stderr) next to `psql -c 'LISTEN ch'` ("LISTEN" on stdout), each
#     timed by the same small Python harness; over TLS (verify-full, localhost) and over plain
#     TCP (sslmode=disable, 127.0.0.1).
#  2. drain: bench/pipe.sh's technique. `pgnotify pipe | wc -l` listens, is frozen (SIGSTOP)
#     while a burst commits in one transaction, then let go; the drain alone is timed. TLS and
#     plain alternate, RUNS times each after an untimed round; the median and the ratio
#     TLS/plain of the medians.
#   bash bench/tls.sh [BURST] [STARTUPS] [RUNS]      (defaults 200000, 100 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
burst=${1:-200000}
startups=${2:-100}
runs=${3:-3}
server_tls=1
. bench/server.sh

# The superuser over the unix socket (trust): setup and the bursts.
local_psql() { PGHOST=$root PGSSLMODE=disable "$psql" -XAtq "$@"; }
# with tls|plain COMMAND...: COMMAND over TLS verified (the demo's settings) or plain TCP.
with() {
  local mode=$1; shift
  case $mode in
    tls) PGHOST=localhost PGSSLMODE=verify-full "$@" ;;
    plain) PGHOST=127.0.0.1 PGSSLMODE=disable "$@" ;;
  esac
}

# scram-sha-256 on every TCP connection, TLS or not; the unix socket stays trust.
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
local_psql -c "SET password_encryption = 'scram-sha-256'" -c "ALTER ROLE $PGUSER PASSWORD '$password'"
hba="local all all trust
hostssl all all 127.0.0.1/32 scram-sha-256
hostnossl all all 127.0.0.1/32 scram-sha-256"
printf '%s\n' "$hba" > "$root/data/pg_hba.conf"
local_psql -o /dev/null -c 'SELECT pg_reload_conf()'
# The reload is asynchronous: wait until TCP without a password is refused.
for _ in $(seq 500); do
  PGPASSWORD='' with plain "$psql" -XAtqw -c 'SELECT 1' >/dev/null 2>&1 || break
  sleep 0.01
done
if PGPASSWORD='' with plain "$psql" -XAtqw -c 'SELECT 1' >/dev/null 2>&1; then
  echo "the server still lets TCP in without a password after reloading pg_hba.conf" >&2
  exit 1
fi
export PGPASSWORD=$password

echo "TLS against plain TCP on one throwaway server, PostgreSQL $(local_psql -c 'SHOW server_version'), $(nproc) cores"
echo "auth: scram-sha-256 over TCP, TLS and plain alike (pg_hba.conf: $(printf '%s' "$hba" | paste -sd ';' | sed 's/;/; /g'))"
echo "  (plain TCP stays allowed, as hostnossl, so that it can be measured; the unix socket, trust, only sets up and commits)"

# Each way in is what it claims: pgnotify -v says how it connected, psql asks the server.
for mode in tls plain; do
  said=$(with $mode "$pgnotify" -v listen ch --timeout 500ms 2>&1 || true)
  grep -q 'listening on' <<<"$said" || { echo "pgnotify over $mode did not listen: $said" >&2; exit 1; }
  connected=$(grep -o 'connected to .*' <<<"$said")
  asked=$(with $mode "$psql" -XAtq -c "SELECT concat_ws(' ', 'ssl=' || ssl, version, cipher) FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
  case $mode/$connected/$asked in
    tls/*'SSL connection'*/'ssl=true '*|plain/*/ssl=false) ;;
    *) echo "over $mode: pgnotify said \"$connected\", psql's ssl row \"$asked\"" >&2; exit 1 ;;
  esac
  printf '  %-5s pgnotify: %s\n        psql (pg_stat_ssl): %s\n' "$mode" "$connected" "$asked"
done

# stats NAME FILE: prints the median and p90 of the durations in FILE (ns, one a line) and
# keeps the median in FILE.median.
stats() {
  sort -n "$2" | awk -v name="$1" -v keep="$2.median" '{ t[NR] = $1 } END {
    m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
    p = t[int(0.9 * NR + 0.999999)]
    printf "    %-36s %8.2f ms %8.2f ms\n", name, m / 1e6, p / 1e6
    print m > keep }'
}
# startup MODE TOOL MARKER STREAM COMMAND...: time_to_line (bench/server.sh) in MODE, into
# $work/MODE.TOOL.
startup() {
  local mode=$1 tool=$2; shift 2
  with $mode time_to_line "$startups" "$@" > "$work/$mode.$tool"
}

echo "1. start-up to LISTEN answered, from exec to the line that says so, $startups runs each (after 3 warm-up runs)"
printf '    %-36s %11s %11s\n' "" median p90
for mode in tls plain; do
  case $mode in
    tls) echo "  TLS, sslmode=verify-full, host=localhost (TCP)" ;;
    plain) echo "  plain TCP, sslmode=disable, host=127.0.0.1" ;;
  esac
  startup $mode pgnotify 'listening on' stderr "$pgnotify" -v listen ch
  stats "pgnotify -v listen ch" "$work/$mode.pgnotify"
  startup $mode psql LISTEN stdout "$psql" -X -c 'LISTEN ch'
  stats "psql -X -c 'LISTEN ch'" "$work/$mode.psql"
done
ratio() { awk -v a="$(cat "$1")" -v b="$(cat "$2")" 'BEGIN { printf "%.2f", a / b }'; }
echo "  TLS/plain, medians: pgnotify $(ratio "$work/tls.pgnotify.median" "$work/plain.pgnotify.median"), psql $(ratio "$work/tls.psql.median" "$work/plain.psql.median");" \
  "pgnotify/psql: TLS $(ratio "$work/tls.pgnotify.median" "$work/tls.psql.median"), plain $(ratio "$work/plain.pgnotify.median" "$work/plain.psql.median")"

# drain MODE: bench/pipe.sh's technique, into a pipe to wc -l. Starts the consumer under GNU
# time, waits until it listens, freezes it while the burst commits, lets it go and times the
# drain alone; prints the rate, and keeps it in $work/MODE.rates.
drain() {
  local mode=$1
  rm -f "$work/ready" "$work/rss" "$work/lines"
  with $mode bash -c '"$@" 2> "'"$work"'/ready" | wc -l > "'"$work"'/lines"' _ \
    /usr/bin/time -f %M -o "$work/rss" "$pgnotify" -v pipe bench --count "$burst" --timeout 120s &
  local pid=$! waited=0
  listener=$pid
  until grep -q 'listening on' "$work/ready" 2>/dev/null; do
    sleep 0.01; waited=$((waited + 1))
    if [ $waited -gt 2000 ] || ! kill -0 $pid 2>/dev/null; then
      echo "pgnotify pipe over $mode did not listen: $(cat "$work/ready" 2>/dev/null)" >&2; exit 1
    fi
  done
  local consumer; consumer=$(pgrep -n -f "^$pgnotify ")
  kill -STOP "$consumer"
  local_psql -o /dev/null -c "SELECT count(pg_notify('bench', i::text)) FROM generate_series(1, $burst) i"
  local t0; t0=$(now)
  kill -CONT "$consumer"
  wait "$pid" || true
  local t1; t1=$(now)
  listener=""
  until [ -s "$work/rss" ]; do sleep 0.01; done
  local lines; lines=$(cat "$work/lines")
  [ "$lines" = "$burst" ] || echo "    over $mode: $lines lines of $burst; pgnotify said: $(cat "$work/ready")"
  awk -v n="$lines" -v ns=$((t1 - t0)) -v kib="$(tail -1 "$work/rss")" \
    'BEGIN { printf "%9.0f/s %6.3f s %5.1f MiB", n / (ns / 1e9), ns / 1e9, kib / 1024 }' > "$work/$mode.row"
  awk -v n="$lines" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f\n", n / (ns / 1e9) }' >> "$work/$mode.rates"
}

echo "2. drain of a $burst-notification burst (one transaction) into pgnotify pipe bench | wc -l, $runs runs each"
echo "     TLS: verify-full to localhost; plain: sslmode=disable to 127.0.0.1; the order alternates, after an untimed round"
drain tls; drain plain
printf '  %-18s %-32s %s\n' "" "TLS: rate, drain, peak RSS" "plain: rate, drain, peak RSS"
: > "$work/tls.rates"; : > "$work/plain.rates"
for round in $(seq "$runs"); do
  order="tls plain"; [ $((round % 2)) = 0 ] && order="plain tls"
  for mode in $order; do drain $mode; done
  printf '  %-18s %-32s %s\n' "run $round (${order%% *} 1st)" "$(cat "$work/tls.row")" "$(cat "$work/plain.row")"
done
median() { sort -n "$1" | awk '{ r[NR] = $1 } END { print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2 }'; }
tls_rate=$(median "$work/tls.rates"); plain_rate=$(median "$work/plain.rates")
awk -v t="$tls_rate" -v p="$plain_rate" 'BEGIN {
  printf "  %-18s %9.0f/s%23s%9.0f/s\n  TLS/plain of the medians: %.2f (target >= 0.80)\n", "median", t, "", p, t / p }'
