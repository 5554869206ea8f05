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
listener=""
cleanup() {
  [ -n "$listener" ] && kill "$listener" 2>/dev/null || true
  sh -c "$stop" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
