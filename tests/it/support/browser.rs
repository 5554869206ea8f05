//! Headless Chromium driven over the DevTools protocol (CDP), for the tests
//! that need to look at a live page's DOM (the `--page` of `pipe --sse`).
//!
//! [`Browser::open`] starts Debian's `chromium` headless on a URL, with a
//! throw-away profile, DevTools on 127.0.0.1 only, and every background
//! service that could reach the network switched off; it connects a WebSocket
//! to the page and waits for the page to load. [`Browser::eval`] runs
//! JavaScript in the page and returns its value as JSON; [`Browser::wait_for`]
//! polls a condition. Dropping the `Browser` closes Chromium, kills whatever of
//! it is left and removes its temporary directory.
//!
//! Every call is bounded in time: a hung or crashed browser makes it return an
//! error instead of hanging the test.
//!
//! Where `unshare --pid` works (as root, so in CI), Chromium runs as PID 1 of a
//! PID namespace of its own: when it exits, the kernel kills and reaps all it
//! started, so nothing, not even a zombie, outlives the `Browser`. Elsewhere
//! Chromium runs directly; its processes are then killed by process group and
//! by a scan of /proc (dead ones may linger as zombies until init reaps them).
//! Browsers left behind by a test process that died without dropping them are
//! killed by the next `Browser::open`.
//!
//! Needs `apt-get install chromium` (Debian 12); `CHROMIUM` names another
//! binary. Linux only (it reads /proc). No `unsafe`: signals are sent with
//! kill(1).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// Time allowed from spawning Chromium to a loaded page (slow CI included).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one CDP command (one `eval`) to be answered.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time Chromium gets to exit after `Browser.close` before it is SIGKILLed.
const EXIT_GRACE: Duration = Duration::from_secs(3);
/// Time allowed for killed processes to disappear.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval of [`Browser::wait_for`].
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Prefix of our temporary directories' names; the test process's pid follows.
const DIR_PREFIX: &str = "cdp-chromium-";

/// Chromium's command-line switches, besides `--user-data-dir` and the URL.
const FLAGS: &[&str] = &[
    // Headless (the "new" headless: the real browser without a window).
    "--headless=new",
    "--disable-gpu",
    // We run as root in CI, where Chromium refuses to start with its sandbox.
    "--no-sandbox",
    // Shared memory in /tmp, not /dev/shm (64 MiB in containers).
    "--disable-dev-shm-usage",
    // DevTools on a free port on loopback only; the port is read from
    // <user-data-dir>/DevToolsActivePort.
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
    // No first-run UI, default-browser prompt, bundled apps or extensions.
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-component-extensions-with-background-pages",
    // Nothing that phones home: background requests, component and
    // field-trial downloads, sync, pings, metrics and crash uploads, network
    // error reports, Safe Browsing, translation, hints, media router.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-pings",
    "--metrics-recording-only",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-field-trial-config",
    "--disable-features=Translate,OptimizationHints,OptimizationHintsFetching,\
     OptimizationGuideModelDownloading,MediaRouter,DialMediaRouteProvider,\
     AutofillServerCommunication,CertificateTransparencyComponentUpdater,\
     InterestFeedContentSuggestions,PrivacySandboxSettings4,SafeBrowsing",
    // Ignore any proxy in the environment.
    "--no-proxy-server",
    // Every host fails to resolve but loopback: no DNS, no stray host. The
    // rules apply to IP literals too, hence 127.0.0.1 is excluded.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
    // No OS keyring (it would want D-Bus).
    "--password-store=basic",
    // Timers and rendering at full speed in a page that never has focus.
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    // No dialog or prompt that could block a page.
    "--noerrdialogs",
    "--disable-hang-monitor",
    "--disable-popup-blocking",
    "--disable-prompt-on-repost",
    "--mute-audio",
];

/// A headless Chromium showing one page, and a DevTools connection to it.
pub struct Browser {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    // Last, so that it is dropped after the socket.
    process: Process,
}

impl Browser {
    /// Starts Chromium on `url` and waits until the page has loaded
    /// (`document.readyState == "complete"`, initial `about:blank` aside).
    /// A page that fails to load (refused, say) is an error.
    pub fn open(url: &str) -> io::Result<Browser> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let process = Process::spawn(url)?;
        let port = process.devtools_port(deadline)?;
        let ws_url = page_ws_url(&process, port, deadline)?;
        let ws = connect(&ws_url, deadline).map_err(|e| process.error(e))?;
        let mut browser = Browser {
            ws,
            next_id: 1,
            process,
        };
        if !url.starts_with("about:") {
            let loaded = browser
                .wait_for(
                    "document.readyState === 'complete' && location.href !== 'about:blank' \
                     && location.href",
                    deadline.saturating_duration_since(Instant::now()),
                )
                .map_err(|e| browser.process.error(e))?;
            // A failed navigation shows Chromium's error page.
            if loaded
                .as_str()
                .is_some_and(|href| href.starts_with("chrome-error:"))
            {
                let text = browser.eval("document.body.innerText").unwrap_or_default();
                let words: Vec<&str> = text
                    .as_str()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                return Err(io::Error::new(
                    ErrorKind::ConnectionRefused,
                    format!("{url} did not load: {}", words.join(" ")),
                ));
            }
        }
        Ok(browser)
    }

    /// Evaluates `js` in the page (`Runtime.evaluate`, awaiting a promise)
    /// and returns its value as JSON; `undefined`, and values JSON cannot
    /// hold such as `NaN`, come back as `null`. A thrown exception or a
    /// DevTools error is an error of kind `Other`; no answer within 10 s is
    /// `TimedOut`; a lost connection is `ConnectionAborted`.
    pub fn eval(&mut self, js: &str) -> io::Result<Value> {
        self.try_eval(js, CALL_TIMEOUT).map_err(CallError::into_io)
    }

    /// Evaluates `js_condition` every 100 ms until its value is truthy, and
    /// returns that value. Exceptions count as "not yet" (so the condition
    /// may use elements that do not exist yet, or run during a navigation).
    /// After `timeout` the error is `TimedOut` and tells the last value or
    /// exception. A lost connection fails at once.
    pub fn wait_for(&mut self, js_condition: &str, timeout: Duration) -> io::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("never evaluated");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("condition not met in {timeout:?}: {js_condition} ({last})"),
                ));
            }
            match self.try_eval(js_condition, CALL_TIMEOUT.min(left)) {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => last = format!("last value: {value}"),
                Err(CallError::Page(message)) => last = format!("last error: {message}"),
                Err(CallError::Io(e)) if e.kind() == ErrorKind::TimedOut => {
                    last = format!("then: {e}");
                }
                Err(CallError::Io(e)) => return Err(e),
            }
            thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    fn try_eval(&mut self, js: &str, timeout: Duration) -> Result<Value, CallError> {
        let params = json!({ "expression": js, "returnByValue": true, "awaitPromise": true });
        let mut result = self.try_call("Runtime.evaluate", params, timeout)?;
        if let Some(details) = result.get("exceptionDetails") {
            let message = details
                .pointer("/exception/description")
                .or_else(|| details.get("text"))
                .and_then(Value::as_str)
                .unwrap_or("exception");
            return Err(CallError::Page(format!("JavaScript threw: {message}")));
        }
        Ok(result
            .pointer_mut("/result/value")
            .map(Value::take)
            .unwrap_or(Value::Null))
    }

    fn try_call(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = Instant::now() + timeout;
        let request = json!({ "id": id, "method": method, "params": params });
        self.ws
            .get_ref()
            .set_write_timeout(Some(timeout))
            .map_err(CallError::Io)?;
        self.ws
            .send(Message::text(request.to_string()))
            .map_err(|e| CallError::Io(ws_error(method, e)))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Io(no_reply(method, timeout)));
            }
            self.ws
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(CallError::Io)?;
            let text = match self.ws.read() {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => {
                    return Err(CallError::Io(io::Error::new(
                        ErrorKind::ConnectionAborted,
                        format!("{method}: DevTools closed the connection"),
                    )));
                }
                // Pings are answered by tungstenite; nothing else is expected.
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Err(CallError::Io(no_reply(method, timeout)));
                }
                Err(e) => return Err(CallError::Io(ws_error(method, e))),
            };
            let mut reply: Value = serde_json::from_str(text.as_str()).map_err(|e| {
                CallError::Io(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{method}: {e}"),
                ))
            })?;
            // Events have no id; replies to earlier, timed-out calls have others.
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                return Err(CallError::Page(format!("{method} failed: {error}")));
            }
            return Ok(reply
                .get_mut("result")
                .map(Value::take)
                .unwrap_or(Value::Null));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask Chromium to quit, so that it stops and reaps its children
        // itself. Best effort: the socket may be gone. `Process` then waits
        // for the exit, kills whatever is left and removes the files.
        let close = json!({ "id": self.next_id, "method": "Browser.close" });
        let _ = self.ws.send(Message::text(close.to_string()));
    }
}

/// Why a DevTools call failed: the page said no (worth retrying), or the
/// connection is broken or silent.
enum CallError {
    Page(String),
    Io(io::Error),
}

impl CallError {
    fn into_io(self) -> io::Error {
        match self {
            CallError::Page(message) => io::Error::other(message),
            CallError::Io(e) => e,
        }
    }
}

fn no_reply(method: &str, timeout: Duration) -> io::Error {
    io::Error::new(
        ErrorKind::TimedOut,
        format!("{method}: no reply from Chromium in {timeout:?}"),
    )
}

fn ws_error(method: &str, e: tungstenite::Error) -> io::Error {
    io::Error::new(
        ErrorKind::ConnectionAborted,
        format!("{method}: DevTools connection: {e}"),
    )
}

/// JavaScript truthiness of a value that came back as JSON.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The Chromium binary: `$CHROMIUM`, else Debian's real binary (not the
/// `/usr/bin/chromium` shell wrapper, which sources /etc/chromium.d: Google
/// API keys, extension flags and a /dev/shm check), else the wrapper.
pub fn chromium_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

/// Whether `unshare` can give Chromium a PID namespace here (tried once).
fn pid_namespace_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        Command::new("unshare")
            .args(["--pid", "--mount-proc", "--fork", "--kill-child", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// The running Chromium and its temporary directory, which holds the
/// profile, XDG config and cache dirs (so that the crash handler's files
/// land there too) and the log. Dropping it stops every process and removes
/// the directory.
struct Process {
    /// Chromium, or `unshare` running Chromium in a new PID namespace.
    child: Child,
    /// Whether `child` is `unshare`.
    unshared: bool,
    dir: PathBuf,
}

impl Process {
    fn spawn(url: &str) -> io::Result<Process> {
        let exe = chromium_path()
            .filter(|path| path.is_file())
            .ok_or_else(|| {
                io::Error::new(
                    ErrorKind::NotFound,
                    "no chromium binary (apt-get install chromium, or set CHROMIUM)",
                )
            })?;
        reap_stale();
        let dir = make_temp_dir()?;
        let unshared = pid_namespace_works();
        match Self::spawn_in(&exe, &dir, url, unshared) {
            Ok(child) => Ok(Process {
                child,
                unshared,
                dir,
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(io::Error::new(
                    e.kind(),
                    format!("starting {}: {e}", exe.display()),
                ))
            }
        }
    }

    fn spawn_in(exe: &Path, dir: &Path, url: &str, unshared: bool) -> io::Result<Child> {
        for sub in ["profile", "config", "cache"] {
            fs::create_dir(dir.join(sub))?;
        }
        let log = File::create(dir.join("chromium.log"))?;
        let mut user_data_dir = OsString::from("--user-data-dir=");
        user_data_dir.push(dir.join("profile"));
        let mut command = if unshared {
            // Chromium is PID 1 of a new PID namespace, with a /proc of its
            // own (else it would write the OOM scores of unrelated pids).
            // When it dies the kernel kills the rest; --kill-child kills it
            // if unshare dies.
            let mut unshare = Command::new("unshare");
            unshare
                .args(["--pid", "--mount-proc", "--fork", "--kill-child", "--"])
                .arg(exe);
            unshare
        } else {
            Command::new(exe)
        };
        command
            .args(FLAGS)
            .arg(user_data_dir)
            .arg(url)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // A process group of its own, which its children inherit.
            .process_group(0)
            .spawn()
    }

    /// Waits for `DevToolsActivePort` (the port, then the browser's
    /// WebSocket path) to be written in full, and returns the port.
    fn devtools_port(&self, deadline: Instant) -> io::Result<u16> {
        let file = self.dir.join("profile").join("DevToolsActivePort");
        loop {
            // Not written atomically: wait for both lines.
            if let Ok(text) = fs::read_to_string(&file)
                && let [port, _path, ..] = text.lines().collect::<Vec<_>>()[..]
                && let Ok(port) = port.trim().parse::<u16>()
                && port != 0
            {
                return Ok(port);
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                return Err(self.error(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("no DevToolsActivePort after {STARTUP_TIMEOUT:?}"),
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error if Chromium has exited (seen in /proc, as `try_wait` would
    /// need `&mut`).
    fn check_running(&self) -> io::Result<()> {
        let stat =
            fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        match stat_fields(&stat).first() {
            Some(&"Z" | &"X") | None => Err(self.error(io::Error::new(
                ErrorKind::BrokenPipe,
                "chromium exited during startup",
            ))),
            Some(_) => Ok(()),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("chromium.log")).unwrap_or_default()
    }

    /// `e` with the end of Chromium's log, less its D-Bus noise, appended.
    fn error(&self, e: io::Error) -> io::Error {
        let log = self.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| !line.contains(":ERROR:dbus/"))
            .collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        io::Error::new(
            e.kind(),
            format!("{e}\n--- end of chromium's log ---\n{tail}"),
        )
    }

    /// The live processes that are ours: Chromium's process group, and any
    /// process whose command line names our directory (the crashpad
    /// handlers, which Chromium starts in sessions of their own).
    fn leftovers(&self) -> Vec<u32> {
        let pgid = self.child.id().to_string();
        let needle = self.dir.as_os_str().as_encoded_bytes();
        let mut pids = Vec::new();
        for (pid, proc_dir) in proc_entries() {
            let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
                continue;
            };
            let fields = stat_fields(&stat);
            if matches!(fields.first(), Some(&"Z" | &"X") | None) {
                continue;
            }
            if fields.get(2) == Some(&pgid.as_str()) || cmdline_after(&proc_dir, needle).is_some() {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // `Browser` has sent `Browser.close`; give Chromium time to exit.
        let child = self.child.id();
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(10));
        }
        // Then SIGKILL whatever is left until nothing is. `unshare` is spared:
        // it exits once Chromium is gone, after reaping it, which leaves no
        // zombie (the kernel reaps the rest of the namespace).
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let exited = !matches!(self.child.try_wait(), Ok(None));
            let targets: Vec<String> = self
                .leftovers()
                .into_iter()
                .filter(|&pid| !(self.unshared && pid == child))
                .map(|pid| pid.to_string())
                .collect();
            if exited && targets.is_empty() {
                break;
            }
            if !targets.is_empty() {
                signal("KILL", &targets);
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The fields of /proc/PID/stat after `(comm)`: state, ppid, pgrp, ...
/// (`comm` may hold spaces and parentheses, hence the last `)`).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// Every process: its pid and its /proc directory.
fn proc_entries() -> impl Iterator<Item = (u32, PathBuf)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path()))
        })
}

/// What follows `needle` in the process's command line, if it is there.
fn cmdline_after(proc_dir: &Path, needle: &[u8]) -> Option<Vec<u8>> {
    let cmdline = fs::read(proc_dir.join("cmdline")).ok()?;
    let at = cmdline.windows(needle.len()).position(|w| w == needle)?;
    Some(cmdline[at + needle.len()..].to_vec())
}

/// Sends SIG`sig` to `targets` (pids), ignoring errors. std has no kill(2)
/// and this module no `unsafe`, so kill(1) it is, or the shell's builtin
/// where procps is missing.
fn signal(sig: &str, targets: &[String]) {
    let quiet = |mut command: Command| {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    let mut kill = Command::new("kill");
    kill.arg(format!("-{sig}")).arg("--").args(targets);
    if quiet(kill).is_err() {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg(format!("kill -s {sig} -- \"$@\""))
            .arg("sh")
            .args(targets);
        let _ = quiet(sh);
    }
}

/// Kills the browsers, and removes the directories, that test processes
/// left when they died without dropping their `Browser` (killed by a
/// timeout, say): they are named after a pid that no longer exists.
fn reap_stale() {
    let temp = std::env::temp_dir();
    let prefix = temp.join(DIR_PREFIX);
    let owner_gone = |rest: &[u8]| {
        let digits: Vec<u8> = rest
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        let owner = String::from_utf8_lossy(&digits).into_owned();
        !owner.is_empty() && !Path::new("/proc").join(owner).exists()
    };
    let stale: Vec<String> = proc_entries()
        .filter(|(_, proc_dir)| {
            cmdline_after(proc_dir, prefix.as_os_str().as_encoded_bytes())
                .is_some_and(|rest| owner_gone(&rest))
        })
        .map(|(pid, _)| pid.to_string())
        .collect();
    if !stale.is_empty() {
        signal("KILL", &stale);
    }
    for entry in fs::read_dir(&temp).into_iter().flatten().flatten() {
        if let Some(rest) = entry
            .file_name()
            .as_encoded_bytes()
            .strip_prefix(DIR_PREFIX.as_bytes())
            && owner_gone(rest)
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A new, empty directory under the system temp dir, named after this
/// process.
fn make_temp_dir() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{DIR_PREFIX}{}-{nanos:x}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        match fs::create_dir(&dir) {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            result => return result.map(|()| dir),
        }
    }
}

/// The `webSocketDebuggerUrl` of the first `page` target in `/json/list`
/// (Chromium also lists `browser_ui` targets), retried until there is one.
fn page_ws_url(process: &Process, port: u16, deadline: Instant) -> io::Result<String> {
    loop {
        let attempt = http_get(port, "/json/list", deadline).and_then(|body| {
            let targets: Value = serde_json::from_str(&body)
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("/json/list: {e}")))?;
            Ok(targets.as_array().and_then(|targets| {
                targets
                    .iter()
                    .filter(|t| t.get("type").and_then(Value::as_str) == Some("page"))
                    .find_map(|t| t.get("webSocketDebuggerUrl").and_then(Value::as_str))
                    .map(str::to_owned)
            }))
        });
        let last = match attempt {
            Ok(Some(url)) => return Ok(url),
            Ok(None) => "no page target yet".to_owned(),
            Err(e) => e.to_string(),
        };
        process.check_running()?;
        if Instant::now() >= deadline {
            return Err(process.error(io::Error::new(
                ErrorKind::TimedOut,
                format!("no page target on DevTools port {port}: {last}"),
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The time left before `deadline`, or a `TimedOut` error.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            ErrorKind::TimedOut,
            "Chromium startup timed out",
        ));
    }
    Ok(left)
}

/// A TCP connection to 127.0.0.1:`port`, with timeouts up to `deadline`.
fn connect_loopback(port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&address, time_left(deadline)?)?;
    stream.set_read_timeout(Some(time_left(deadline)?))?;
    stream.set_write_timeout(Some(time_left(deadline)?))?;
    Ok(stream)
}

/// A plain HTTP/1.1 GET on 127.0.0.1:`port`; the body of a 200.
fn http_get(port: u16, path: &str, deadline: Instant) -> io::Result<String> {
    let mut stream = connect_loopback(port, deadline)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    // The head, then Content-Length bytes of body (or up to EOF).
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut body_start = None;
    let mut body_len = None;
    loop {
        if let (Some(start), Some(len)) = (body_start, body_len)
            && data.len() >= start + len
        {
            break;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&chunk[..n]);
        if body_start.is_none()
            && let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let status = head.lines().next().unwrap_or_default();
            if status.split_whitespace().nth(1) != Some("200") {
                return Err(io::Error::other(format!("GET {path}: {status}")));
            }
            body_len = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                if !name.trim().eq_ignore_ascii_case("content-length") {
                    return None;
                }
                value.trim().parse::<usize>().ok()
            });
            body_start = Some(end + 4);
        }
    }
    let start = body_start.ok_or_else(|| {
        io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("GET {path}: incomplete response"),
        )
    })?;
    let end = body_len.map_or(data.len(), |len| (start + len).min(data.len()));
    String::from_utf8(data[start..end].to_vec())
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("GET {path}: {e}")))
}

/// Opens the DevTools WebSocket `ws://127.0.0.1:PORT/devtools/page/ID` over
/// a plain TcpStream (no DNS, no TLS).
fn connect(ws_url: &str, deadline: Instant) -> io::Result<WebSocket<TcpStream>> {
    let invalid = || {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("unexpected DevTools URL {ws_url}"),
        )
    };
    let rest = ws_url.strip_prefix("ws://127.0.0.1:").ok_or_else(invalid)?;
    let port = rest
        .split('/')
        .next()
        .and_then(|port| port.parse().ok())
        .ok_or_else(invalid)?;
    let stream = connect_loopback(port, deadline)?;
    stream.set_nodelay(true)?;
    let (ws, _response) = tungstenite::client(ws_url, stream).map_err(|e| {
        io::Error::new(
            ErrorKind::ConnectionRefused,
            format!("DevTools handshake: {e}"),
        )
    })?;
    Ok(ws)
}
