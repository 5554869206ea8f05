# Shared by the benchmarks: release builds, and a throwaway server from `pgnotify demo --keep`
# whose PG* settings are exported; it is stopped and removed when the script exits, and the
# background listener a script may start (its PID in `listener`) is stopped.
# With server_tls=1 set before sourcing, the server also serves TLS (`demo --keep --tls`): the
# PG* settings then reach it over TCP as localhost with sslmode=verify-full, and `root` is the
# server's directory (its unix socket, data/pg_hba.conf, tls/ca.crt).
cargo build --release -q
pgnotify=$PWD/target/release/pgnotify
work=$(mktemp -d)
settings=$("$pgnotify" -q demo --keep ${server_tls:+--tls} 2>/dev/null)
eval "$(printf '%s\n' "$settings" | grep '^export')"
root=${server_tls:+$(dirname "$(dirname "$PGSSLROOTCERT")")}
stop=$(printf '%s\n' "$settings" | sed -n 's/^# stop and remove the server: //p')
psql=$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -1)
psql=${psql:-psql}
now() { date +%s%N; }
# The median of the numbers on stdin, one a line (the lower middle of an even count).
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# time_to_line RUNS MARKER STREAM COMMAND...: RUNS timed runs after 3 untimed ones, each from
# exec to the first line on STREAM (stdout or stderr) that holds MARKER, one duration (ns) a
# line on stdout; the command is then stopped (SIGTERM) and reaped, untimed. The way to time
# "ready" for `pgnotify -v listen` (its "listening on ...") and psql's LISTEN alike.
time_to_line() {
  python3 -c '
import subprocess, sys, time
runs, marker, stream, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
pipe, null = subprocess.PIPE, subprocess.DEVNULL
for i in range(runs + 3):
    t0 = time.perf_counter_ns()
    p = subprocess.Popen(cmd, stdin=null, stdout=pipe if stream == "stdout" else null,
                         stderr=pipe if stream == "stderr" else null, text=True)
    out = p.stdout if stream == "stdout" else p.stderr
    line = next((l for l in out if marker in l), None)
    t1 = time.perf_counter_ns()
    if line is None:
        sys.exit("%s ended without %r (status %s)" % (cmd[0], marker, p.wait()))
    p.terminate(); p.wait()
    if i >= 3:
        print(t1 - t0)
' "$@"
}
listener=""
cleanup() {
  [ -n "$listener" ] && kill "$listener" 2>/dev/null || true
  sh -c "$stop" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# For the summaries, in awk: the lines "KEY MEASURE VALUE" of a results file are kept, and
# med(KEY, MEASURE) is the median of a measure's values (the lower middle of an even count).
awk_median='
  { v[$1, $2, ++k[$1, $2]] = $3 }
  function med(key, m,   n, i, j, t, a) {
    n = k[key, m]; if (!n) return ""
    for (i = 1; i <= n; i++) a[i] = v[key, m, i]
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return a[int((n + 1) / 2)]
  }
'
