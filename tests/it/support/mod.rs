//! The test harness: a throwaway PostgreSQL per test (`pgnotify::tempdb::Cluster`, stopped
//! and removed on drop, and by its guardian even if the test process dies), and a builder that
//! runs the real `pgnotify` binary with a scrubbed environment and reports everything when an
//! assertion fails (argv, status, stdout, stderr, server log tail).

pub mod proxy;

use pgnotify::tempdb::{self, Cluster};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
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
        cmd.args(["-h", &self.cluster.socket_dir().to_string_lossy()]);
        cmd.args([
            "-p",
            &self.cluster.port().to_string(),
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
}

/// A command line for the real binary.
#[must_use]
pub struct Cmd {
    args: Vec<OsString>,
    env: HashMap<String, OsString>,
    stdin: Option<Vec<u8>>,
    log: Option<PathBuf>,
}

impl Cmd {
    pub fn new() -> Cmd {
        let mut env = HashMap::new();
        env.insert(
            "PATH".to_owned(),
            std::env::var_os("PATH").unwrap_or_default(),
        );
        env.insert("RUST_BACKTRACE".to_owned(), "0".into());
        env.insert("LC_ALL".to_owned(), "C.UTF-8".into());
        Cmd {
            args: Vec::new(),
            env,
            stdin: None,
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

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgnotify"));
        cmd.env_clear().envs(&self.env).args(&self.args);
        cmd
    }

    fn describe(&self) -> String {
        let argv: Vec<String> = self.args.iter().map(|a| format!("{a:?}")).collect();
        format!("pgnotify {}", argv.join(" "))
    }

    /// Runs to completion (with PATIENCE as a guard) and captures everything.
    pub fn run(&self) -> Outcome {
        let mut child = self
            .command()
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pgnotify");
        if let (Some(input), Some(mut stdin)) = (self.stdin.clone(), child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());
        let status = wait_for(&mut child, PATIENCE, &self.describe());
        Outcome {
            argv: self.describe(),
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
            log: self.log.clone(),
        }
    }

    /// Starts it with stdout piped to the test and stderr collected line by line.
    pub fn spawn(&self) -> Running {
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pgnotify");
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
        let stdout = child.stdout.take().map(BufReader::new);
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

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn wait_for(child: &mut Child, patience: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > patience {
            let _ = child.kill();
            panic!("{what} did not finish within {patience:?}");
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
    pub pid: i32,
    pub received_at: String,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// A gap record as the NDJSON contract has it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapRecord {
    pub gap: String,
    pub reason: String,
    pub from: String,
    pub until: String,
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

/// A running pgnotify.
pub struct Running {
    pub argv: String,
    pub child: Child,
    pub stdout: Option<BufReader<ChildStdout>>,
    stderr_rx: Receiver<String>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    log: Option<PathBuf>,
}

impl Running {
    fn report(&self) -> String {
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

    /// Reads one stdout line (without the newline), guarded by PATIENCE via the caller's design:
    /// only call when a line is due.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .stdout
            .as_mut()
            .expect("stdout")
            .read_line(&mut line)
            .expect("read stdout");
        assert!(n > 0, "stdout closed early{}", self.report());
        line.trim_end_matches('\n').to_owned()
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

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("kill");
    }

    /// Waits for the exit; returns the status and the rest of stdout.
    pub fn finish(&mut self) -> (ExitStatus, String) {
        let out = self.stdout.take();
        let rest = std::thread::spawn(move || {
            let mut rest = String::new();
            if let Some(mut out) = out {
                let _ = out.read_to_string(&mut rest);
            }
            rest
        });
        let status = wait_for(&mut self.child, PATIENCE, &self.argv);
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        (status, rest.join().unwrap_or_default())
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
