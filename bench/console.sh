#!/usr/bin/env bash
# Benchmark: the interactive console (`pgnotify listen -i`) next to plain `pgnotify listen
# --format text`, both with a pty for stdin, stdout and stderr (120x40, TERM=xterm-256color;
# this script plays the terminal: it drains the output and answers cursor-position queries).
# For each command, a burst of BURST notifications committed in ONE transaction
# (`SELECT count(pg_notify('burst', g::text)) FROM generate_series(1, BURST) g`):
#  (a) drain and CPU: from the commit to the marker sent after the burst on the screen, and
#      the command's user+sys CPU over that time (/proc/PID/stat, all threads);
#  (b) key-to-echo latency during a second burst: KEYS keystrokes spread over the drain time
#      that (a) measured, each one letter written to the pty master and timed until the letter
#      comes back, then erased with a backspace; median, p99, max. For plain listen the echo
#      is the kernel's (cooked mode): the floor of this measuring.
# A command is ready once it shows a probe notification. CONSOLE_CMD (default
# `pgnotify listen -i burst`; a leading `pgnotify` is the release build) is skipped, saying
# why, when it ends before it is ready, e.g. before the console exists.
#   bash bench/console.sh [BURST] [KEYS]      (defaults 100000 and 50)
#   CONSOLE_CMD='pgnotify -v listen -i burst' bash bench/console.sh
set -euo pipefail
cd "$(dirname "$0")/.."
burst=${1:-100000}
keys=${2:-50}
console_cmd=${CONSOLE_CMD:-pgnotify listen -i burst}
. bench/server.sh

cat > "$work/console.py" <<'PY'
import fcntl, os, pty, re, select, shlex, signal, struct, subprocess, sys, termios, time

pgnotify, psql, burst, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
commands = sys.argv[5:]
CLK_TCK = os.sysconf("SC_CLK_TCK")
COLUMNS, ROWS = 120, 40
CPR_QUERY = b"\x1b[6n"
LETTERS = b"qxzjk"
MARKERS = (b"ready-probe", b"burst-end")


def sql(statement):
    subprocess.run([psql, "-XAtq", "-o", "/dev/null", "-c", statement], check=True)


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


class Ended(Exception):
    pass


class Pty:
    """The command on a pty of its own (its controlling terminal), this process the terminal."""

    def __init__(self, argv):
        env = {k: v for k, v in os.environ.items() if k.startswith("PG") or k in ("PATH", "HOME")}
        env.update(TERM="xterm-256color", LANG="C.UTF-8")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.tail = b""  # the last bytes shown, for markers split across reads
        self.found = set()  # the MARKERS shown since they were last forgotten
        self.shown = b""  # the last bytes shown, for saying why it ended
        self.status = None

    def read(self, timeout):
        """Reads what there is within timeout; answers cursor-position queries; returns it."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            data = os.read(self.fd, 1 << 16)
        except OSError:
            data = b""
        if not data:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
            raise Ended()
        seen = self.tail + data
        if CPR_QUERY in seen:
            os.write(self.fd, b"\x1b[%d;1R" % ROWS)
            seen = seen.replace(CPR_QUERY, b"")
        self.found.update(m for m in MARKERS if m in seen)
        self.tail = seen[-64:]
        self.shown = (self.shown + data)[-4096:]
        return data

    def wait_for(self, marker, patience):
        """Reads until marker is shown (it may start in what was read before)."""
        deadline = time.monotonic() + patience
        self.found.discard(marker)
        while time.monotonic() < deadline:
            self.read(0.05)
            if marker in self.found:
                return True
        return False

    def stop(self):
        if self.status is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and self.status is None:
                    try:
                        self.read(0.05)
                    except Ended:
                        pass
                if self.status is not None:
                    break
        os.close(self.fd)


def start(argv):
    """The command, once it shows a probe notification; None and why when it ends before."""
    term = Pty(argv)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sql("NOTIFY burst, 'ready-probe'")
            if term.wait_for(b"ready-probe", 0.2):
                # Let the probes still queued come through.
                term.wait_for(b"ready-probe", 0.3)
                return term, None
        term.stop()
        return None, "not ready within 20 s"
    except Ended:
        shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.shown.decode(errors="replace"))
        lines = [l.strip() for l in shown.splitlines() if l.strip()]
        errors = [l for l in lines if "error" in l] or lines[-1:]
        why = "exited %s before it was ready" % term.status
        return None, why + (": " + errors[0][:70] if errors else "")


def the_burst():
    sql("SELECT count(pg_notify('burst', g::text)) FROM generate_series(1, %d) g" % burst)


def drain(argv):
    """(a): drain time and CPU seconds over it."""
    term, why = start(argv)
    if term is None:
        return None, why
    try:
        cpu0 = cpu_seconds(term.pid)
        the_burst()
        t0 = time.monotonic()
        sql("NOTIFY burst, 'burst-end'")
        if not term.wait_for(b"burst-end", 600):
            return None, "the burst did not end within 600 s"
        t1 = time.monotonic()
        return (t1 - t0, cpu_seconds(term.pid) - cpu0), None
    except Ended:
        return None, "exited %s during the burst" % term.status
    finally:
        term.stop()


def latency(argv, drain_s):
    """(b): key-to-echo latencies (s) of keystrokes spread over drain_s, and how many came
    before the burst's end was shown."""
    term, why = start(argv)
    if term is None:
        return None, why
    interval = max(drain_s / keys, 0.002)
    lat, during = [], 0
    try:
        the_burst()
        term.found.discard(b"burst-end")
        sql("NOTIFY burst, 'burst-end'")
        for i in range(keys):
            letter = LETTERS[i % len(LETTERS) : i % len(LETTERS) + 1]
            # What the pty still holds from before the keystroke is read on the way to the
            # echo, as a terminal would have to show it first; it holds none of the letters.
            t0 = time.monotonic()
            os.write(term.fd, letter)
            deadline = t0 + 20
            while letter not in term.read(0.05):
                if time.monotonic() > deadline:
                    return None, "keystroke %d not echoed within 20 s" % i
            t1 = time.monotonic()
            lat.append(t1 - t0)
            if b"burst-end" not in term.found:
                during += 1
            os.write(term.fd, b"\x7f")
            pause = t0 + interval - time.monotonic()
            while pause > 0:
                term.read(pause)
                pause = t0 + interval - time.monotonic()
        return (sorted(lat), during), None
    except Ended:
        return None, "exited %s during the burst" % term.status
    finally:
        term.stop()


version = subprocess.run([psql, "-XAtc", "SHOW server_version"], capture_output=True, text=True).stdout.strip()
print("console: %d notifications in one transaction, stdout a %dx%d pty, PostgreSQL %s" % (burst, COLUMNS, ROWS, version))
print("  %-36s %9s %9s %10s   %-34s" % ("", "drain", "CPU", "CPU/notif", "key-to-echo p50 / p99 / max (during)"))
for command in commands:
    argv = shlex.split(command)
    if argv and argv[0] == "pgnotify":
        argv[0] = pgnotify
    name = command if len(command) <= 36 else command[:33] + "..."
    got, why = drain(argv)
    if got is None:
        print("  %-36s skipped: %s" % (name, why))
        continue
    drain_s, cpu = got
    got, why = latency(argv, drain_s)
    if got is None:
        echo = "failed: " + why
    else:
        lat, during = got
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3
        echo = "%.2f / %.2f / %.2f ms (%d of %d)" % (pick(0.5), pick(0.99), lat[-1] * 1e3, during, len(lat))
    print("  %-36s %7.3f s %7.3f s %7.2f us   %s" % (name, drain_s, cpu, cpu / burst * 1e6, echo))
PY

python3 "$work/console.py" "$pgnotify" "$psql" "$burst" "$keys" \
  "pgnotify listen burst --format text" "$console_cmd"
