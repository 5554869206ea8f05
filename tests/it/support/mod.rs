//! The test harness: a throwaway PostgreSQL per test (`pgnotify::tempdb::Cluster`, stopped
//! and removed on drop, and by its guardian even if the test process dies), and a builder that
//! runs the real `pgnotify` binary with a scrubbed environment and reports everything when an
//! assertion fails (argv, status, stdout, stderr, server log tail).

pub mod browser;
pub mod pgbouncer;
pub mod proxy;
pub mod terminal;
pub mod web;

use pgnotify::tempdb::{self, Cluster};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A guard on every wait: no test hangs for longer than this on one step.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Server {
    pub cluster: Cluster,
    pub home: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&tempdb::Options::default())
    }

    pub fn start_with(options: &tempdb::Options) -> Server {
        let cluster =
            Cluster::start(options).unwrap_or_else(|e| panic!("could not start PostgreSQL: {e:#}"));
        let home = tempfile::Builder::new()
            .prefix("pgnotify-home-")
            .tempdir()
            .expect("temp home");
        Server { cluster, home }
    }

    /// A server that also serves TLS (`Options::tls`), with its own CA (`cluster.ca()`).
    pub fn start_tls() -> Server {
        Server::start_with(&tempdb::Options {
            tls: true,
            ..Default::default()
        })
    }

    /// A streaming standby of this server, accepting read-only connections, with a home of
    /// its own; it serves TLS when this server does.
    pub fn standby(&self) -> Server {
        let cluster = self.cluster.start_standby().unwrap_or_else(|e| {
            panic!(
                "could not start a standby: {e:#}\n{}",
                self.cluster.log_tail(20)
            )
        });
        let home = tempfile::Builder::new()
            .prefix("pgnotify-home-")
            .tempdir()
            .expect("temp home");
        Server { cluster, home }
    }

    /// Runs SQL with psql as the superuser over the socket; panics with psql's error.
    pub fn psql(&self, sql: &str) -> String {
        self.cluster
            .psql(sql)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.cluster.log_tail(20)))
    }

    /// `psql -X -At -d CONNINFO -c SQL`, with nothing of this process's environment but PATH
    /// and HOME (this server's): for checking what a client sees, TLS settings included.
    pub fn psql_as_client(&self, conninfo: &str, sql: &str) -> Outcome {
        let psql = self.cluster.bin_dir().join("psql");
        let mut cmd = Cmd::running(Program::Other(psql));
        cmd.env("HOME", self.home.path());
        cmd.log = Some(self.cluster.log_path());
        cmd.args(["-X", "-At", "-d", conninfo, "-c", sql]);
        cmd.run()
    }

    /// A superuser client for setting up and sending notifications.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.cluster.conninfo(), postgres::NoTls).unwrap_or_else(|e| {
            panic!(
                "test client could not connect: {e}\n{}",
                self.cluster.log_tail(20)
            )
        })
    }

    /// Sends one notification from a client session.
    pub fn notify(&self, channel: &str, payload: &str) {
        self.client()
            .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .expect("pg_notify");
    }

    /// `pgnotify` with this server's connection options (-h socket dir, -p, -U, -d).
    pub fn pgnotify(&self) -> Cmd {
        let mut cmd = self.bare();
        cmd.args(self.connection_args());
        cmd
    }

    /// `pgnotify watch-table ARGS` against this server, which must succeed.
    pub fn watch_table(&self, args: &[&str]) {
        self.pgnotify()
            .arg("watch-table")
            .args(args)
            .run()
            .success();
    }

    /// `pgnotify` reaching this server over TCP on 127.0.0.1 at `port` (a proxy's), as the
    /// superuser.
    pub fn through(&self, port: &str) -> Cmd {
        let mut cmd = self.bare();
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            tempdb::SUPERUSER,
            "-d",
            "postgres",
        ]);
        cmd
    }

    /// `pgnotify` with no connection options: only the environment the test gives it.
    pub fn bare(&self) -> Cmd {
        let mut cmd = Cmd::new();
        cmd.env("HOME", self.home.path());
        cmd.log = Some(self.cluster.log_path());
        cmd
    }

    /// `bash -c SCRIPT` with this server's connection options as `"$@"` (-h socket dir, -p,
    /// -U, -d) and the binary as `$PGNOTIFY`: `"$PGNOTIFY" "$@" notify c x | ...`.
    pub fn shell(&self, script: &str) -> Cmd {
        let mut cmd = Cmd::shell(script);
        cmd.env("HOME", self.home.path());
        cmd.log = Some(self.cluster.log_path());
        cmd.args(self.connection_args());
        cmd
    }

    /// A real terminal (`pexpect`) running the program in `sys.argv[1:]`, that types
    /// `password` at the prompt for `user`'s, then prints `exit STATUS` and what was shown.
    pub fn typing_password(&self, user: &str, password: &str) -> Cmd {
        self.typing_password_after(Duration::ZERO, user, password)
    }

    /// [`typing_password`](Self::typing_password), typing only `delay` after the prompt.
    pub fn typing_password_after(&self, delay: Duration, user: &str, password: &str) -> Cmd {
        let script = r#"
import pexpect, sys, time
child = pexpect.spawn(sys.argv[1], sys.argv[2:], env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, timeout=20)
child.expect("Password for user USER: ")
time.sleep(DELAY)
child.sendline("PASSWORD")
child.expect(pexpect.EOF)
child.close()
print("exit", child.exitstatus)
sys.stdout.write(child.before.decode())
"#;
        let script = script
            .replace("USER", user)
            .replace("PASSWORD", password)
            .replace("DELAY", &delay.as_secs_f64().to_string());
        self.python(&script)
    }

    /// `python3 -c SCRIPT`, the arguments as `sys.argv[1:]`, the binary as `$PGNOTIFY`.
    pub fn python(&self, script: &str) -> Cmd {
        let mut cmd = Cmd::python(script);
        cmd.env("HOME", self.home.path());
        cmd.log = Some(self.cluster.log_path());
        cmd
    }

    /// The -h, -p, -U and -d options that reach this server.
    pub fn connection_args(&self) -> Vec<String> {
        vec![
            "-h".to_owned(),
            self.cluster.socket_dir().to_string_lossy().into_owned(),
            "-p".to_owned(),
            self.cluster.port().to_string(),
            "-U".to_owned(),
            tempdb::SUPERUSER.to_owned(),
            "-d".to_owned(),
            "postgres".to_owned(),
        ]
    }

    /// Waits until `cond` holds, polling; panics with `what` after PATIENCE.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}\n{}",
                self.cluster.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server process of the (one) session with this application_name.
    pub fn backend_pid(&self, application_name: &str) -> i32 {
        self.client()
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&application_name],
            )
            .expect("one session")
            .get(0)
    }

    /// Runs pg_ctl (`stop -m fast`, `start`, `restart -m fast`...) and asserts it worked.
    pub fn pg_ctl(&self, args: &[&str]) {
        let out = self.cluster.pg_ctl(args).expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// How many sessions with this application_name are connected.
    pub fn sessions(&self, application_name: &str) -> i64 {
        self.client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&application_name],
            )
            .expect("pg_stat_activity")
            .get(0)
    }

    /// Holds the lock every commit with notifications takes, until [`HeldLock::release`]: a
    /// session commits a write and `NOTIFY channel, payload` while a synchronous standby that
    /// does not exist is required, so its commit waits for it, holding that lock.
    pub fn hold_notification_lock(&self, channel: &str, payload: &str) -> HeldLock<'_> {
        self.psql("CREATE TABLE IF NOT EXISTS held (i int)");
        self.require_standby("nobody");
        let mut client = self.client();
        // The test servers run with synchronous_commit off.
        let sql = format!(
            "SET synchronous_commit = on; BEGIN; INSERT INTO held VALUES (1); \
             NOTIFY \"{}\", '{}'; COMMIT",
            channel.replace('"', "\"\""),
            payload.replace('\'', "''")
        );
        let holder =
            std::thread::spawn(move || client.batch_execute(&sql).map_err(|e| e.to_string()));
        self.wait_until("a commit waiting for the standby", || {
            let waiting: i64 = self
                .client()
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                    &[],
                )
                .expect("pg_stat_activity")
                .get(0);
            waiting == 1
        });
        HeldLock {
            server: self,
            holder: Some(holder),
        }
    }

    fn require_standby(&self, names: &str) {
        let mut client = self.client();
        client
            .batch_execute(&format!(
                "ALTER SYSTEM SET synchronous_standby_names = '{names}'"
            ))
            .expect("ALTER SYSTEM");
        client
            .batch_execute("SELECT pg_reload_conf()")
            .expect("pg_reload_conf");
    }
}

/// The lock of [`Server::hold_notification_lock`]; released on drop too.
pub struct HeldLock<'a> {
    server: &'a Server,
    holder: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl HeldLock<'_> {
    /// No standby is required any more: the held commit completes, and its notification goes.
    pub fn release(mut self) {
        self.server.require_standby("");
        let holder = self.holder.take().expect("held");
        holder.join().expect("holder").expect("the held commit");
    }
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take() {
            self.server.require_standby("");
            let _ = holder.join();
        }
    }
}

/// A fake server (`support/fake_pg.py MODE`, see its modes), killed on drop, and its port.
pub struct FakeServer {
    child: Child,
    pub port: u16,
}

impl FakeServer {
    /// `pgnotify` pointed at this fake (127.0.0.1, its port, user `u`, database `d`).
    pub fn pgnotify(&self) -> Cmd {
        let mut cmd = Cmd::new();
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "u",
            "-d",
            "d",
        ]);
        cmd
    }

    pub fn start(mode: &str) -> FakeServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/fake_pg.py");
        let mut child = Command::new("python3")
            .args([script, mode])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut port = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut port)
            .expect("the fake's port");
        FakeServer {
            child,
            port: port.trim().parse().expect("the fake's port"),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a `Cmd` runs.
enum Program {
    /// The real binary.
    Pgnotify,
    /// `bash -c SCRIPT bash ARGS...`: the arguments are `"$@"`.
    Shell(String),
    /// `python3 -c SCRIPT ARGS...`: the arguments are `sys.argv[1:]`.
    Python(String),
    /// Another program, e.g. psql.
    Other(PathBuf),
}

thread_local! {
    static AUTO_TRIGGERS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// From now on, every `pgnotify watch-table` this thread runs that installs a watch gets
/// `--triggers auto`: to run a test of row triggers (the default) again against statement
/// triggers, where pgnotify chooses them.
pub fn use_auto_triggers() {
    AUTO_TRIGGERS.with(|f| f.set(true));
}

/// Whether [`use_auto_triggers`] was called on this thread.
pub fn auto_triggers() -> bool {
    AUTO_TRIGGERS.with(|f| f.get())
}

/// A command line for the real binary, or a script around it (`Cmd::shell`, `Cmd::python`).
#[must_use]
pub struct Cmd {
    program: Program,
    args: Vec<OsString>,
    env: HashMap<String, OsString>,
    stdin: Option<Vec<u8>>,
    closed_stdout: bool,
    closed_stderr: bool,
    log: Option<PathBuf>,
}

impl Cmd {
    pub fn new() -> Cmd {
        Cmd::running(Program::Pgnotify)
    }

    /// `bash -c SCRIPT` with the environment a `Cmd` gets, the binary's path as `$PGNOTIFY`, and
    /// the arguments (`arg`, `args`) as `"$@"`.
    pub fn shell(script: &str) -> Cmd {
        Cmd::running(Program::Shell(script.to_owned()))
    }

    /// `python3 -c SCRIPT` with the environment a `Cmd` gets, the binary's path as `$PGNOTIFY`,
    /// and the arguments (`arg`, `args`) as `sys.argv[1:]`.
    pub fn python(script: &str) -> Cmd {
        Cmd::running(Program::Python(script.to_owned()))
    }

    fn running(program: Program) -> Cmd {
        let mut env = HashMap::new();
        env.insert(
            "PATH".to_owned(),
            std::env::var_os("PATH").unwrap_or_default(),
        );
        env.insert("RUST_BACKTRACE".to_owned(), "0".into());
        env.insert("LC_ALL".to_owned(), "C.UTF-8".into());
        env.insert("PGNOTIFY".to_owned(), env!("CARGO_BIN_EXE_pgnotify").into());
        Cmd {
            program,
            args: Vec::new(),
            env,
            stdin: None,
            closed_stdout: false,
            closed_stderr: false,
            log: None,
        }
    }

    pub fn arg(&mut self, arg: impl Into<OsString>) -> &mut Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(&mut self, args: I) -> &mut Cmd {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(&mut self, key: &str, value: impl Into<OsString>) -> &mut Cmd {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Cmd {
        self.stdin = Some(input.into());
        self
    }

    /// The child's stdout is a pipe whose read end is closed before it starts: every write to
    /// stdout fails with EPIPE (SIGPIPE is ignored by Rust programs). `Outcome.stdout` is empty.
    pub fn closed_stdout(&mut self) -> &mut Cmd {
        self.closed_stdout = true;
        self
    }

    /// Like [`Cmd::closed_stdout`], for stderr (with `run`): every message the child writes
    /// fails with EPIPE, and `Outcome.stderr` is empty.
    pub fn closed_stderr(&mut self) -> &mut Cmd {
        self.closed_stderr = true;
        self
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.program {
            Program::Pgnotify => Command::new(env!("CARGO_BIN_EXE_pgnotify")),
            Program::Shell(script) => {
                let mut cmd = Command::new("bash");
                cmd.arg("-c").arg(script).arg("bash");
                cmd
            }
            Program::Python(script) => {
                let mut cmd = Command::new("python3");
                cmd.arg("-c").arg(script);
                cmd
            }
            Program::Other(path) => Command::new(path),
        };
        cmd.env_clear().envs(&self.env).args(self.with_triggers());
        cmd
    }

    /// The arguments, with `--triggers auto` after `watch-table` when it installs a watch and
    /// the test runs with [`use_auto_triggers`].
    fn with_triggers(&self) -> Vec<OsString> {
        let mut args = self.args.clone();
        let installs = !args.iter().any(|a| a == "--drop" || a == "--list");
        if let Some(i) = args.iter().position(|a| a == "watch-table")
            && auto_triggers()
            && installs
            && matches!(self.program, Program::Pgnotify)
        {
            args.splice(i + 1..i + 1, ["--triggers".into(), "auto".into()]);
        }
        args
    }

    fn describe(&self) -> String {
        let argv: Vec<String> = self.args.iter().map(|a| format!("{a:?}")).collect();
        let program = match &self.program {
            Program::Pgnotify => "pgnotify".to_owned(),
            Program::Shell(script) => format!("bash -c {script:?} bash"),
            Program::Python(script) => format!("python3 -c {script:?}"),
            Program::Other(path) => path.display().to_string(),
        };
        format!("{program} {}", argv.join(" "))
    }

    /// The stdout or stderr the child gets: a pipe to the test, or one nobody can ever read.
    fn output(closed: bool) -> Stdio {
        if !closed {
            return Stdio::piped();
        }
        // O_CLOEXEC: a child spawned meanwhile by another test must not inherit either end (an
        // inherited read end would make the writes succeed).
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        drop(read);
        Stdio::from(write)
    }

    fn start(&self, stdin: Stdio) -> Child {
        self.command()
            .stdin(stdin)
            .stdout(Cmd::output(self.closed_stdout))
            .stderr(Cmd::output(self.closed_stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", self.describe()))
    }

    /// Runs to completion (with PATIENCE as a guard) and captures everything.
    pub fn run(&self) -> Outcome {
        let mut child = self.start(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        if let (Some(input), Some(mut stdin)) = (self.stdin.clone(), child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());
        let status = wait_for(&mut child, PATIENCE);
        // After a kill, a grandchild may still hold the pipes: take what there is.
        let grace = match status {
            Some(_) => PATIENCE,
            None => Duration::from_secs(2),
        };
        let collect = |rx: Receiver<String>| {
            rx.recv_timeout(grace)
                .unwrap_or_else(|_| "<still open>".to_owned())
        };
        let (stdout, stderr) = (collect(stdout), collect(stderr));
        let Some(status) = status else {
            let log = self.log.as_deref().map(log_tail).unwrap_or_default();
            panic!(
                "did not finish within {PATIENCE:?}, killed\n--- {}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}\n--- server log (tail):\n{log}",
                self.describe()
            );
        };
        Outcome {
            argv: self.describe(),
            status,
            stdout,
            stderr,
            log: self.log.clone(),
        }
    }

    /// Starts it; stdout is read line by line when the test asks (`Running::read_line`): what
    /// the test does not ask for stays in the pipe, so a test can leave the child's writes
    /// blocked. Stderr is collected line by line as it comes.
    pub fn spawn(&self) -> Running {
        let mut child = self.start(Stdio::null());
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::clone(&stderr_lines);
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let stdout = StdoutReader::start(child.stdout.take());
        Running {
            argv: self.describe(),
            child,
            stdout,
            stderr_rx: rx,
            stderr_lines,
            stderr_thread: Some(stderr_thread),
            log: self.log.clone(),
        }
    }
}

/// Reads a pipe to its end on a thread; the text arrives on the channel.
fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Waits for the exit; after `patience`, kills the child and returns None.
fn wait_for(child: &mut Child, patience: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if start.elapsed() > patience {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a finished run did.
pub struct Outcome {
    pub argv: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    log: Option<PathBuf>,
}

impl Outcome {
    /// Everything about the run, for assertion messages.
    pub fn report(&self) -> String {
        let log = self.log.as_deref().map(log_tail).unwrap_or_default();
        format!(
            "\n--- {}\n--- status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}\n--- server log (tail):\n{log}",
            self.argv, self.status, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code and returns self for more checks.
    pub fn code(&self, expected: i32) -> &Outcome {
        assert_eq!(
            self.status.code(),
            Some(expected),
            "unexpected exit status{}",
            self.report()
        );
        self
    }

    pub fn success(&self) -> &Outcome {
        self.code(0)
    }

    /// Asserts stderr contains `needle`.
    pub fn stderr_has(&self, needle: &str) -> &Outcome {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}{}",
            self.report()
        );
        self
    }

    /// Asserts stderr is exactly one line (an error is one sentence).
    pub fn one_line_error(&self) -> &Outcome {
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "error is not one line{}",
            self.report()
        );
        assert!(
            self.stderr.starts_with("pgnotify: error: "),
            "not an error line{}",
            self.report()
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.report());
        self
    }

    /// The NDJSON records on stdout.
    pub fn records(&self) -> Vec<Record> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}{}", self.report()))
            })
            .collect()
    }
}

/// A notification as the NDJSON contract has it; test-owned so a schema change breaks a test.
#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub channel: String,
    pub payload: String,
    /// Only for a payload that is not UTF-8: its exact bytes, in base64.
    #[serde(default)]
    pub payload_base64: Option<String>,
    pub pid: i32,
    pub received_at: String,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// With `--consumer`: the event's id in the outbox, and its transaction's.
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub xid: Option<u64>,
}

/// A gap record as the NDJSON contract has it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapRecord {
    pub gap: String,
    pub reason: String,
    pub from: String,
    /// `None` (JSON null): the stream never became complete again.
    pub until: Option<String>,
    pub down_ms: i64,
    pub dropped: u64,
}

/// One NDJSON line: a notification or a gap.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Line {
    Notification(Record),
    Gap(GapRecord),
}

/// A request to the stdout thread.
enum Ask {
    /// The next line.
    Line,
    /// Everything up to the end.
    Rest,
}

/// The stdout thread's answer.
enum Got {
    Line(String),
    Eof,
    Rest(String),
    Failed(String),
}

/// The child's stdout, read on a thread of its own, only as far as asked: `ask` is dropped to
/// close the pipe.
struct StdoutReader {
    ask: Option<Sender<Ask>>,
    got: Receiver<Got>,
    /// A line was asked for and has not come yet.
    pending: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StdoutReader {
    fn start(pipe: Option<ChildStdout>) -> StdoutReader {
        let (ask_tx, ask_rx) = mpsc::channel();
        let (got_tx, got_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut pipe = pipe.map(BufReader::new);
            // Ends when the test drops `ask`, which drops (closes) the pipe.
            for ask in ask_rx {
                let got = match (&mut pipe, ask) {
                    (None, Ask::Line) => Got::Eof,
                    (None, Ask::Rest) => Got::Rest(String::new()),
                    (Some(pipe), Ask::Line) => {
                        let mut line = Vec::new();
                        match pipe.read_until(b'\n', &mut line) {
                            Ok(0) => Got::Eof,
                            Ok(_) => match String::from_utf8(line) {
                                Ok(line) => Got::Line(line.trim_end_matches('\n').to_owned()),
                                Err(e) => Got::Failed(format!("stdout is not UTF-8: {e}")),
                            },
                            Err(e) => Got::Failed(format!("could not read stdout: {e}")),
                        }
                    }
                    (Some(pipe), Ask::Rest) => {
                        let mut rest = Vec::new();
                        let _ = pipe.read_to_end(&mut rest);
                        Got::Rest(String::from_utf8_lossy(&rest).into_owned())
                    }
                };
                if got_tx.send(got).is_err() {
                    return;
                }
            }
        });
        StdoutReader {
            ask: Some(ask_tx),
            got: got_rx,
            pending: false,
            thread: Some(thread),
        }
    }

    fn ask(&self, ask: Ask) {
        if let Some(tx) = &self.ask {
            let _ = tx.send(ask);
        }
    }
}

/// A running pgnotify (or script).
pub struct Running {
    pub argv: String,
    pub child: Child,
    stdout: StdoutReader,
    stderr_rx: Receiver<String>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    log: Option<PathBuf>,
}

impl Running {
    /// Everything about the run so far, for assertion messages.
    pub fn report(&self) -> String {
        let log = self.log.as_deref().map(log_tail).unwrap_or_default();
        format!(
            "\n--- {}\n--- stderr so far:\n{}\n--- server log (tail):\n{log}",
            self.argv,
            self.stderr_lines.lock().unwrap().join("\n")
        )
    }

    /// Waits for a stderr line containing `needle` (e.g. the `-v` "listening on" line).
    pub fn wait_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no stderr line with {needle:?}{}", self.report()),
            }
        }
    }

    /// Waits until it listens (needs `-v`).
    pub fn wait_ready(&mut self) {
        self.wait_stderr("listening on");
    }

    /// Reads one stdout line (without the newline); panics with the report when none comes
    /// within PATIENCE or stdout ends first.
    pub fn read_line(&mut self) -> String {
        self.try_read_line_within(PATIENCE)
            .unwrap_or_else(|| panic!("no stdout line within {PATIENCE:?}{}", self.report()))
    }

    /// Reads one stdout line if one comes within `wait`; panics with the report when stdout
    /// ends first. After None, the line asked for is still the next one any read returns.
    pub fn try_read_line_within(&mut self, wait: Duration) -> Option<String> {
        if !self.stdout.pending {
            self.stdout.ask(Ask::Line);
            self.stdout.pending = true;
        }
        let got = match self.stdout.got.recv_timeout(wait) {
            Ok(got) => got,
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => Got::Failed("stdout was closed".to_owned()),
        };
        self.stdout.pending = false;
        match got {
            Got::Line(line) => Some(line),
            Got::Eof => panic!("stdout closed early{}", self.report()),
            Got::Rest(_) => unreachable!("only finish asks for the rest"),
            Got::Failed(e) => panic!("{e}{}", self.report()),
        }
    }

    /// Closes the test's end of stdout, like a reader that goes away (`| head -1`): the
    /// child's next write to stdout fails with EPIPE. Returns once the pipe is closed.
    pub fn close_stdout(&mut self) {
        assert!(
            !self.stdout.pending,
            "close_stdout while a read_line is pending: the pipe could not be closed now{}",
            self.report()
        );
        drop(self.stdout.ask.take());
        if let Some(thread) = self.stdout.thread.take() {
            let _ = thread.join();
        }
    }

    /// Reads one NDJSON record from stdout.
    pub fn read_record(&mut self) -> Record {
        let line = self.read_line();
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad NDJSON {line:?}: {e}{}", self.report()))
    }

    /// Reads one NDJSON line, notification or gap.
    pub fn read_any(&mut self) -> Line {
        let line = self.read_line();
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad NDJSON {line:?}: {e}{}", self.report()))
    }

    /// Reads lines until a gap record, which it returns; notifications before it are returned too.
    pub fn read_until_gap(&mut self) -> (Vec<Record>, GapRecord) {
        let mut before = Vec::new();
        loop {
            match self.read_any() {
                Line::Notification(n) => before.push(n),
                Line::Gap(gap) => return (before, gap),
            }
        }
    }

    /// The child's process id (for /proc checks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads to the next gap record and asserts that the stream is whole again (`until` set),
    /// then that `payload`, sent on `channel` through `via` after it, arrives.
    pub fn resumes_after_gap(&mut self, via: &Server, channel: &str, payload: &str) {
        let (_, gap) = self.read_until_gap();
        assert!(
            gap.until.is_some(),
            "the stream is whole again{}",
            self.report()
        );
        via.notify(channel, payload);
        assert_eq!(self.read_record().payload, payload, "{}", self.report());
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("kill");
    }

    /// Asserts it is still running after `wait`: for a test whose point is that something
    /// (a timeout, a deadline) does not end the run. Waits on the child, so an early exit fails
    /// at once, with the report.
    /// Whether it ends within `wait`; when it does not, it is killed.
    pub fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.wait();
        false
    }

    pub fn assert_running_for(&mut self, wait: Duration, why: &str) {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "exited ({status:?}) within {wait:?}: {why}{}",
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit only (PATIENCE as a guard), not for the end of its output: for a
    /// child whose own children may outlive it holding stdout or stderr.
    pub fn wait(&mut self) -> ExitStatus {
        wait_for(&mut self.child, PATIENCE).unwrap_or_else(|| {
            panic!(
                "did not finish within {PATIENCE:?}, killed{}",
                self.report()
            )
        })
    }

    /// Waits for the exit; returns the status and the rest of stdout (a line asked for by
    /// `try_read_line_within` and not returned yet included). Stdout and stderr must end
    /// within PATIENCE of the exit.
    pub fn finish(&mut self) -> (ExitStatus, String) {
        let mut rest = String::new();
        if self.stdout.pending {
            if let Ok(Got::Line(line)) = self.stdout.got.recv_timeout(PATIENCE) {
                rest = line + "\n";
            }
            self.stdout.pending = false;
        }
        // Asked before waiting: the pipe is drained while the child finishes writing.
        self.stdout.ask(Ask::Rest);
        let status = self.wait();
        let deadline = Instant::now() + PATIENCE;
        if let Some(thread) = self.stderr_thread.take() {
            while !thread.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "stderr stayed open after the exit ({status:?}){}",
                    self.report()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = thread.join();
        }
        if self.stdout.ask.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.got.recv_timeout(left) {
                Ok(Got::Rest(text)) => rest.push_str(&text),
                _ => panic!(
                    "stdout stayed open after the exit ({status:?}){}",
                    self.report()
                ),
            }
        }
        (status, rest)
    }

    /// Waits for the exit and asserts its code; returns the rest of stdout.
    pub fn expect_exit(&mut self, code: i32) -> String {
        let (status, rest) = self.finish();
        assert_eq!(
            status.code(),
            Some(code),
            "unexpected exit {status:?}; rest of stdout: {rest}{}",
            self.report()
        );
        rest
    }

    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// What `ss ARGS` prints (the sockets of this host); panics with its stderr if it fails.
pub fn ss(args: &[&str]) -> String {
    let out = Command::new("ss")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run ss: {e}"));
    assert!(
        out.status.success(),
        "ss {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shell code of the README's code block that follows `<!-- tested verbatim: NAME -->`.
pub fn readme_example(name: &str) -> String {
    let readme = include_str!("../../../README.md");
    let marker = format!("<!-- tested verbatim: {name} -->");
    let after = readme
        .split(&marker)
        .nth(1)
        .expect("the README names this test");
    let block = after
        .split("```sh")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n")
}
