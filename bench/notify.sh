#!/usr/bin/env bash
# Benchmark: `pgnotify notify --lines` throughput next to psql doing the same job in the same
# run, and how long `pgnotify listen` takes to be ready, next to psql's LISTEN.
# Runs against a throwaway server from `pgnotify demo --keep`, removed at the end.
#   bash bench/notify.sh [LINES]      (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-100000}
. bench/server.sh

rate() { awk -v n="$1" -v ns="$2" 'BEGIN { printf "%9.0f/s  (%.3f s)", n / (ns / 1e9), ns / 1e9 }'; }

seq -f 'job %.0f' 1 "$lines" > "$work/lines.txt"
awk '{ printf "NOTIFY bench, '\''%s'\'';\n", $0 }' "$work/lines.txt" > "$work/notify.sql"

# A listener drains the queue during every run, as in real use.
"$pgnotify" listen bench --json > /dev/null &
listener=$!
sleep 0.5

echo "notify: $lines distinct lines, one channel, unix socket, PostgreSQL $("$psql" -XAtc 'SHOW server_version')"
echo "  (the throwaway server runs with fsync=off, synchronous_commit=off: commits are cheap for every peer)"
t0=$(now); "$pgnotify" notify --lines bench < "$work/lines.txt"; t1=$(now)
echo "  pgnotify notify --lines (--batch 1000)        $(rate "$lines" $((t1 - t0)))"
t0=$(now); "$pgnotify" notify --lines --batch 10000 bench < "$work/lines.txt"; t1=$(now)
echo "  pgnotify notify --lines --batch 10000         $(rate "$lines" $((t1 - t0)))"
t0=$(now); "$psql" -Xq -f "$work/notify.sql"; t1=$(now)
echo "  psql, one session of NOTIFY statements        $(rate "$lines" $((t1 - t0)))"
t0=$(now)
"$psql" -Xq -o /dev/null -v ON_ERROR_STOP=1 <<SQL
CREATE TEMP TABLE lines (p text);
\copy lines from '$work/lines.txt'
SELECT count(pg_notify('bench', p)) FROM lines;
SQL
t1=$(now)
echo "  psql, \\copy + one pg_notify SELECT           $(rate "$lines" $((t1 - t0)))  (one transaction: folds duplicates)"

runs=50
echo "start-up: median of $runs runs, from exec to the line that says LISTEN was answered"
median() { sort -n | awk '{ t[NR] = $1 } END { printf "%.1f ms", t[int((NR + 1) / 2)] / 1e6 }'; }
echo "  pgnotify -v listen              $(time_to_line $runs 'listening on' stderr "$pgnotify" -v listen ready | median)"
echo "  psql -c LISTEN                  $(time_to_line $runs LISTEN stdout "$psql" -X -c 'LISTEN ready' | median)"
