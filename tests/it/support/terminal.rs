//! A real terminal for the tests: the `pgnotify` binary in a tmux pane of fixed size, driven
//! with tmux's `send-keys` and read back with `capture-pane`, which gives the screen as it is
//! rendered (what the user sees: lines overwritten, escapes applied), not the bytes written.
//!
//! Each [`Terminal`] has a tmux server of its own (`tmux -S DIR/sock -f /dev/null`): never the
//! user's tmux, never a configuration file, and started with an environment of nothing but
//! PATH and a UTF-8 locale, so no PG* variable of the test process reaches it. The pane runs a
//! generated wrapper, `DIR/run.sh`:
//!
//! 1. it records `stty -g` and `stty -a` (the terminal as pgnotify finds it);
//! 2. runs pgnotify in the foreground under `env -i` (PATH, HOME = the server's home,
//!    TERM=xterm-256color, LANG=C.UTF-8, then the test's overrides) with the server's
//!    connection options and the test's arguments; its pid goes to `DIR/pid` (an `sh` that
//!    writes `$$` and then `exec`s pgnotify, so the pid is pgnotify's own);
//! 3. prints `[exit N]` where the cursor is (so a program that leaves the cursor mid-line shows
//!    it), then `stty -a` (the terminal as pgnotify left it: cooked mode has `icanon` and
//!    `echo` without a leading `-`), and writes both to files for the test;
//! 4. sleeps, so the last screen stays readable until the test is done.
//!
//! The wrapper traps SIGINT and SIGQUIT (a trap, not an ignore, so pgnotify gets the default
//! disposition): a `C-c` reaches pgnotify, and the wrapper survives to print the status.
//!
//! Dropping the `Terminal` kills its tmux server (pgnotify and the wrapper get SIGHUP with
//! the pty closed) and removes the directory, also while a panic unwinds. If the test process
//! dies without unwinding, a guardian (`sh` reading a pipe only this process holds, as
//! `tempdb`'s guardian does) does the same when the pipe closes.

use super::{PATIENCE, Server, log_tail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The pane's size unless the test asks for another: columns, rows.
pub const SIZE: (u16, u16) = (120, 40);

/// The tmux session's name, and so the target of every command.
const SESSION: &str = "pgnotify";

/// The guardian: waits for its stdin to close, then kills the tmux server and removes the
/// directory. Arguments: the tmux socket, the directory.
const GUARDIAN: &str = r#"IFS= read -r line
tmux -S "$1" -f /dev/null kill-server >/dev/null 2>&1
rm -rf "$2""#;

/// Every file the wrapper writes is written to NAME.tmp, then renamed: a test that sees the
/// file sees all of it.
const WRAPPER: &str = r#"# Written by tests/it/support/terminal.rs: runs pgnotify in this tmux pane.
dir=@DIR@
trap : INT QUIT
stty -g > "$dir/stty-before-g.tmp" && mv "$dir/stty-before-g.tmp" "$dir/stty-before-g"
stty -a > "$dir/stty-before.tmp" && mv "$dir/stty-before.tmp" "$dir/stty-before"
env -i @ENV@ /bin/sh -c 'echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$dir/pid" @ARGV@
status=$?
printf '[exit %s]\n' "$status"
stty -g > "$dir/stty-after-g.tmp" && mv "$dir/stty-after-g.tmp" "$dir/stty-after-g"
stty -a | tee "$dir/stty-after.tmp" && mv "$dir/stty-after.tmp" "$dir/stty-after"
echo "$status" > "$dir/exit.tmp" && mv "$dir/exit.tmp" "$dir/exit"
exec sleep 3600
"#;

/// What the pane shows at one moment: the lines (trailing spaces trimmed, trailing empty lines
/// dropped) and where the cursor is, read in one tmux command so they agree.
#[derive(Clone, Debug)]
pub struct Screen {
    pub lines: Vec<String>,
    /// Column of the cursor, from 0.
    pub cursor_x: usize,
    /// Line of the cursor, from 0 (the top of the pane).
    pub cursor_y: usize,
}

impl Screen {
    /// The whole screen as text, one line per row (empty rows at the bottom dropped).
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The line the cursor is on (trailing spaces trimmed): the prompt line of a console.
    pub fn cursor_line(&self) -> &str {
        self.lines.get(self.cursor_y).map_or("", String::as_str)
    }

    /// The lines above the cursor's.
    pub fn above_cursor(&self) -> &[String] {
        &self.lines[..self.cursor_y.min(self.lines.len())]
    }
}

/// `pgnotify` in a real terminal (a tmux pane); see the module's documentation.
pub struct Terminal {
    dir: tempfile::TempDir,
    socket: PathBuf,
    /// The command line, for reports.
    argv: String,
    log: PathBuf,
    guardian: Option<Child>,
}

impl Terminal {
    /// Starts `pgnotify` with `server`'s connection options (-h socket dir, -p, -U, -d) and
    /// `args` in a 120x40 pane; `env` adds to or overrides the clean environment (PATH, HOME,
    /// `TERM=xterm-256color`, `LANG=C.UTF-8`): `("TERM", "dumb")`, `("NO_COLOR", "1")`.
    pub fn start(server: &Server, args: &[&str], env: &[(&str, &str)]) -> Terminal {
        Terminal::start_sized(server, args, env, SIZE)
    }

    /// [`start`](Self::start) with a pane of `(columns, rows)`.
    pub fn start_sized(
        server: &Server,
        args: &[&str],
        env: &[(&str, &str)],
        size: (u16, u16),
    ) -> Terminal {
        let mut argv = server.connection_args();
        argv.extend(args.iter().map(|&a| a.to_owned()));
        Terminal::launch(server, &argv, env, size)
    }

    /// Starts `pgnotify ARGS` without the server's connection options: only `env` (e.g.
    /// PGHOST, PGPORT) or the arguments say where to connect. HOME is still the server's home.
    pub fn start_bare(server: &Server, args: &[&str], env: &[(&str, &str)]) -> Terminal {
        let argv: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        Terminal::launch(server, &argv, env, SIZE)
    }

    fn launch(
        server: &Server,
        args: &[String],
        env: &[(&str, &str)],
        (columns, rows): (u16, u16),
    ) -> Terminal {
        let dir = tempfile::Builder::new()
            .prefix("pgnotify-tty-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("sock");
        let bin = env!("CARGO_BIN_EXE_pgnotify");
        let home = server.home.path().to_string_lossy().into_owned();
        let mut vars: Vec<(String, String)> = vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), home),
            ("TERM".into(), "xterm-256color".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        for &(key, value) in env {
            vars.retain(|(k, _)| k != key);
            vars.push((key.to_owned(), value.to_owned()));
        }
        let env_words: Vec<String> = vars
            .iter()
            .map(|(k, v)| quote(&format!("{k}={v}")))
            .collect();
        let argv_words: Vec<String> = std::iter::once(bin)
            .chain(args.iter().map(String::as_str))
            .map(quote)
            .collect();
        let script = WRAPPER
            .replace("@DIR@", &quote(&dir.path().to_string_lossy()))
            .replace("@ENV@", &env_words.join(" "))
            .replace("@ARGV@", &argv_words.join(" "));
        let wrapper = dir.path().join("run.sh");
        std::fs::write(&wrapper, script).expect("write the wrapper");

        let mut terminal = Terminal {
            argv: format!(
                "pgnotify {} (env {})",
                args.join(" "),
                env.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            log: server.cluster.log_path(),
            socket,
            guardian: None,
            dir,
        };
        terminal.guardian = Some(terminal.spawn_guardian());
        let size = (columns.to_string(), rows.to_string());
        let command = format!("/bin/sh {}", quote(&wrapper.to_string_lossy()));
        terminal.tmux_ok(&[
            // No status line: the pane is the whole window. History for `history()`.
            "set-option",
            "-g",
            "status",
            "off",
            ";",
            "set-option",
            "-g",
            "history-limit",
            "100000",
            ";",
            "new-session",
            "-d",
            "-s",
            SESSION,
            "-x",
            &size.0,
            "-y",
            &size.1,
            &command,
        ]);
        terminal
    }

    fn spawn_guardian(&self) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg(GUARDIAN)
            .arg("pgnotify-tty-guardian")
            .arg(&self.socket)
            .arg(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir("/")
            // A Ctrl-C at the terminal running the tests does not reach it.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("could not start the terminal's guardian (sh)")
    }

    /// Runs `tmux -S SOCK -f /dev/null ARGS` (`;` separates commands, as on tmux's command
    /// line) with nothing of this process's environment but PATH.
    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null", "-u"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LC_ALL", "C.UTF-8")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run tmux (is it installed?): {e}"))
    }

    /// [`tmux`](Self::tmux), panicking with its stderr when it fails; returns its stdout.
    fn tmux_ok(&self, args: &[&str]) -> String {
        let out = self.tmux(args);
        assert!(
            out.status.success(),
            "tmux {args:?}: {:?}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.report_without_screen()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` as it is (`send-keys -l`): no key names, `Enter` is the five letters.
    pub fn type_text(&self, text: &str) {
        // tmux takes an argument that ends with ";" for the end of a command (and drops the
        // ";"), unless it is escaped.
        let text = match text.strip_suffix(';') {
            Some(rest) => format!("{rest}\\;"),
            None => text.to_owned(),
        };
        self.tmux_ok(&["send-keys", "-t", SESSION, "-l", "--", &text]);
    }

    /// Presses keys by tmux's names: `Enter`, `C-c`, `C-d`, `Tab`, `Up`, `BSpace`, `Escape`...
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", SESSION, "--"];
        args.extend_from_slice(keys);
        self.tmux_ok(&args);
    }

    /// The screen as rendered, trailing spaces of each line and empty lines at the bottom
    /// trimmed.
    pub fn screen(&self) -> String {
        tidy(&self.tmux_ok(&["capture-pane", "-p", "-t", SESSION])).join("\n")
    }

    /// The screen with its colours and attributes as escape sequences (`capture-pane -e`):
    /// tmux writes SGR sequences (`\x1b[...m`) where the text has them.
    pub fn screen_with_escapes(&self) -> String {
        tidy(&self.tmux_ok(&["capture-pane", "-p", "-e", "-t", SESSION])).join("\n")
    }

    /// Everything the pane has shown, the lines scrolled off the top included (up to 100,000).
    pub fn history(&self) -> String {
        tidy(&self.tmux_ok(&["capture-pane", "-p", "-S", "-", "-E", "-", "-t", SESSION])).join("\n")
    }

    /// The screen and the cursor at one moment.
    pub fn snapshot(&self) -> Screen {
        let out = self.tmux_ok(&[
            "capture-pane",
            "-p",
            "-t",
            SESSION,
            ";",
            "display-message",
            "-p",
            "-t",
            SESSION,
            "#{cursor_x} #{cursor_y}",
        ]);
        // capture-pane prints every row of the pane, then display-message the cursor.
        let mut rows: Vec<&str> = out.lines().collect();
        let cursor = rows.pop().unwrap_or_default();
        let (x, y) = cursor
            .split_once(' ')
            .and_then(|(x, y)| Some((x.parse().ok()?, y.parse().ok()?)))
            .unwrap_or_else(|| panic!("tmux gave no cursor: {out:?}"));
        let lines = tidy(&rows.join("\n"));
        Screen {
            lines,
            cursor_x: x,
            cursor_y: y,
        }
    }

    /// The line holding the cursor (a console's prompt line), trailing spaces trimmed.
    pub fn cursor_line(&self) -> String {
        self.snapshot().cursor_line().to_owned()
    }

    /// Polls the screen until `pred` holds, and returns that screen; after PATIENCE panics
    /// with `what`, the whole screen and the report.
    pub fn wait_for(&self, what: &str, pred: impl FnMut(&str) -> bool) -> String {
        self.wait_for_within(PATIENCE, what, pred)
    }

    /// [`wait_for`](Self::wait_for) with a patience of its own.
    pub fn wait_for_within(
        &self,
        patience: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        self.wait_for_screen_within(patience, what, |s| pred(&s.text()))
            .text()
    }

    /// Polls until `pred` holds of the screen and cursor; panics like `wait_for`.
    pub fn wait_for_screen(&self, what: &str, pred: impl FnMut(&Screen) -> bool) -> Screen {
        self.wait_for_screen_within(PATIENCE, what, pred)
    }

    fn wait_for_screen_within(
        &self,
        patience: Duration,
        what: &str,
        mut pred: impl FnMut(&Screen) -> bool,
    ) -> Screen {
        let start = Instant::now();
        loop {
            let screen = self.snapshot();
            if pred(&screen) {
                return screen;
            }
            if start.elapsed() > patience {
                panic!(
                    "timed out after {patience:?} waiting for {what}\n--- screen (cursor at \
                     column {}, line {}):\n{}{}",
                    screen.cursor_x,
                    screen.cursor_y,
                    screen.text(),
                    self.report_without_screen()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the screen holds `needle`; returns the screen.
    pub fn wait_for_text(&self, needle: &str) -> String {
        self.wait_for(&format!("{needle:?} on the screen"), |s| s.contains(needle))
    }

    /// Waits until pgnotify has ended and the wrapper's `[exit N]` is shown (on the screen or
    /// scrolled off it); returns N (128+n for a signal, as the shell reports it).
    pub fn exit_status(&self) -> i32 {
        let status = self.wait_file("exit", "pgnotify to exit");
        let status: i32 = status
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad exit file {status:?}"));
        // In the history: in a small pane the stty lines may have scrolled it off the screen.
        let line = format!("[exit {status}]");
        let start = Instant::now();
        while !self.history().contains(&line) {
            assert!(
                start.elapsed() < PATIENCE,
                "{line} was written but is not shown{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        status
    }

    /// The exit status if pgnotify has ended, without waiting.
    pub fn try_exit_status(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.path().join("exit")).ok()?;
        text.trim().parse().ok()
    }

    /// `stty -a` as pgnotify found the terminal.
    pub fn stty_before(&self) -> String {
        self.wait_file("stty-before", "the wrapper to start")
    }

    /// `stty -a` as pgnotify left the terminal (waits for the exit).
    pub fn stty_after(&self) -> String {
        self.wait_file("stty-after", "pgnotify to exit")
    }

    /// Whether pgnotify left the terminal in cooked mode: canonical input, echo, signals from
    /// keys, CR to NL on input, output processing with NL to CR NL (waits for the exit).
    pub fn stty_is_sane(&self) -> bool {
        let after = self.stty_after();
        let flags: Vec<&str> = after.split([' ', ';', '\n']).collect();
        ["icanon", "echo", "isig", "icrnl", "opost", "onlcr"]
            .iter()
            .all(|flag| flags.contains(flag))
    }

    /// Whether pgnotify left the terminal exactly as it found it (`stty -g` before and after;
    /// waits for the exit).
    pub fn stty_restored(&self) -> bool {
        let before = self.wait_file("stty-before-g", "the wrapper to start");
        let after = self.wait_file("stty-after-g", "pgnotify to exit");
        before == after
    }

    /// pgnotify's process id (waits until it has started; it may have ended since).
    pub fn pid(&self) -> i32 {
        let pid = self.wait_file("pid", "pgnotify to start");
        pid.trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad pid file {pid:?}"))
    }

    /// Sends `signal` to pgnotify.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Resizes the pane to `columns` x `rows`, and waits until the pty has that size (the
    /// program has been sent SIGWINCH then; whether it has redrawn is for the test to wait for).
    pub fn resize(&self, columns: u16, rows: u16) {
        let (x, y) = (columns.to_string(), rows.to_string());
        self.tmux_ok(&["resize-window", "-t", SESSION, "-x", &x, "-y", &y]);
        let tty = self.tmux_ok(&["display-message", "-p", "-t", SESSION, "#{pane_tty}"]);
        let want = format!("{rows} {columns}");
        let start = Instant::now();
        loop {
            let out = Command::new("stty")
                .args(["-F", tty.trim(), "size"])
                .stdin(Stdio::null())
                .output()
                .expect("stty");
            let size = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if size == want {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the pty is {size:?}, not {want:?}, {PATIENCE:?} after resize-window{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The command line, the screen and the server log's tail, for assertion messages.
    pub fn report(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", SESSION]);
        format!(
            "\n--- screen:\n{}{}",
            tidy(&String::from_utf8_lossy(&out.stdout)).join("\n"),
            self.report_without_screen()
        )
    }

    fn report_without_screen(&self) -> String {
        format!(
            "\n--- {}\n--- server log (tail):\n{}",
            self.argv,
            log_tail(&self.log)
        )
    }

    /// The wrapper's file NAME, once it is there.
    fn wait_file(&self, name: &str, what: &str) -> String {
        let path = self.dir.path().join(name);
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text;
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "timed out after {PATIENCE:?} waiting for {what} ({} not written){}",
                    path.display(),
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory of the socket, the wrapper and its files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        if let Some(mut guardian) = self.guardian.take() {
            drop(guardian.stdin.take());
            let _ = guardian.wait();
        }
    }
}

/// Lines with trailing spaces trimmed, empty lines at the end dropped.
fn tidy(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// `text` as one sh word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
