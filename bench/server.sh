# Shared by the benchmarks: release builds, and a throwaway server from `pgnotify demo --keep`
# whose PG* settings are exported; it is stopped and removed when the script exits, and the
# background listener a script may start (its PID in `listener`) is stopped.
cargo build --release -q
pgnotify=$PWD/target/release/pgnotify
work=$(mktemp -d)
settings=$("$pgnotify" -q demo --keep 2>/dev/null)
eval "$(printf '%s\n' "$settings" | grep '^export')"
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
