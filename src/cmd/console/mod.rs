//! `listen -i`: the interactive console. Events print live above a prompt, and what is typed
//! there changes the stream as it runs: `listen`, `unlisten` and `notify` go to the listening
//! connection itself (`stream::Control`), `format` and `filter` change what is shown.
//!
//! Threads: main runs the stream's loop, whose sink is the [`Screen`]; the `console` thread
//! runs the line editor; the screen's printer thread prints above the prompt. The terminal's
//! settings are saved first and put back however the run ends (`terminal`).

mod command;
mod editor;
mod screen;

use crate::config::ConsoleSettings;
use crate::exit::{Exit, UsageError};
use crate::format::Format;
use crate::msg;
use crate::pg::{self, ConnSettings};
use crate::sanitize::escape_controls;
use crate::stream::{self, Ask, Control, Reply, names_of};
use crate::terminal;
use anyhow::{Context, Result};
use command::{Command, Filter};
use rustyline::ExternalPrinter;
use rustyline::error::ReadlineError;
use screen::Screen;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const PROMPT: &str = "pgnotify> ";

const HELP: &str = "\
Commands (names are exact; a name with spaces in double quotes):
  listen CHANNEL...         listen on more channels
  unlisten CHANNEL... | *   stop listening on some, or all
  notify CHANNEL [PAYLOAD]  send a notification: the rest of the line, or one quoted
                            string: 'it''s' (SQL's quotes) or \"say \\\"hi\\\"\" (backslashes)
  channels                  the channels, and how many events each brought
  format text|json|psql|raw how events are shown
  filter TEXT | off         show only events whose payload contains TEXT
  clear                     clear the screen
  help, quit (or \\q, Ctrl-D, Ctrl-C twice on an empty line)
SQL ending with ; works too, with SQL's rules (unquoted names fold to lower case):
  LISTEN x;  UNLISTEN *;  NOTIFY x, 'payload';  SELECT pg_notify('x', 'payload');
More than 40 events a second are summarised: \"… 9,950 more on jobs, the last: …\".";

pub(crate) fn run(settings: ConsoleSettings, conn: &ConnSettings) -> Result<Exit> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(UsageError(
            "listen -i is an interactive console: its standard input and output must be a \
             terminal (for scripts: listen --format raw, or --json)"
                .into(),
        )
        .into());
    }
    for channel in &settings.source.channels {
        pg::check_channel(channel)?;
    }
    let screen = Screen::new(settings.encoder, settings.color);
    terminal::save();
    // Connecting comes first, in cooked mode: -W asks there, and a refusal is status 3
    // before the console takes the terminal.
    let started = stream::start_console(
        conn,
        settings.source,
        settings.overflow,
        &settings.health,
        Box::new(screen.clone()),
    )?;
    let control = started.control();
    let history = settings.history;
    let (mut editor, ctrl_c_on_empty) =
        editor::new(history.as_deref(), Arc::clone(&control), screen.clone())
            .context("could not start the line editor")?;
    screen
        .start_printer(printer(&mut editor))
        .context("could not start the console's printer")?;
    let said = screen.clone();
    msg::route_to(Some(Box::new(move |line| said.message(line))));
    screen.say(&banner(&control));
    let quitting = Arc::new(AtomicBool::new(false));
    let console = Console {
        view: View {
            control,
            screen: screen.clone(),
        },
        replies: Replies::start(screen.clone())?,
        history: editor::History::new(history),
        ctrl_c_on_empty,
        quitting: Arc::clone(&quitting),
    };
    let typing = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || console.run(editor))
        .context("could not start the console")?;
    let result = started.run(settings.fetch);
    msg::route_to(None);
    screen.close();
    if quitting.load(Ordering::Acquire) {
        // The editor has left raw mode itself.
        let _ = typing.join();
        terminal::forget();
    } else {
        // A signal, or the server gone for good, while the editor may be in raw mode.
        terminal::restore();
    }
    result
}

/// How blocks reach the screen: above the prompt through the editor's printer; on a terminal
/// that cannot move the cursor (`TERM=dumb`, as in Emacs's shell, where the editor reads plain
/// lines) written as they come, which is what such a terminal shows anyway.
fn printer(editor: &mut editor::LineEditor) -> screen::Print {
    match editor.create_external_printer() {
        Ok(mut printer) => Box::new(move |block| printer.print(block).map_err(|e| e.to_string())),
        Err(_) => Box::new(|block| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(block.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| e.to_string())
        }),
    }
}

/// Leaving on a key, not a line: the shell's prompt starts on a line of its own.
fn end_line() {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn banner(control: &Control) -> String {
    let channels = control.channels();
    let on = match channels.is_empty() {
        true => "no channel yet (listen CHANNEL)".to_owned(),
        false => names_of(&channels) + &stream::case_hint(&channels),
    };
    match control.server() {
        Some(server) => {
            format!("listening on {on} on the {server}\nType help for commands; Ctrl-D quits.")
        }
        None => {
            format!("connecting (--wait), to listen on {on}\nType help for commands; Ctrl-D quits.")
        }
    }
}

struct Console {
    view: View,
    replies: Replies,
    history: editor::History,
    ctrl_c_on_empty: Arc<AtomicBool>,
    quitting: Arc<AtomicBool>,
}

impl Console {
    fn run(self, mut editor: editor::LineEditor) {
        // A Ctrl-C on an empty line arms the next one.
        let mut armed = false;
        loop {
            match editor.readline(PROMPT) {
                Ok(line) => {
                    armed = false;
                    if !self.lines(&line, &mut editor) {
                        break;
                    }
                }
                Err(ReadlineError::Interrupted) => {
                    if !self.ctrl_c_on_empty.swap(false, Ordering::Relaxed) {
                        armed = false;
                    } else if armed {
                        end_line();
                        break;
                    } else {
                        armed = true;
                        // At once, not after the answers still awaited.
                        let hint = "(Ctrl-C again, Ctrl-D or quit to leave)";
                        self.view.screen.say(&self.view.screen.dim(hint));
                    }
                }
                Err(ReadlineError::Eof) => {
                    end_line();
                    break;
                }
                Err(e) => {
                    self.view
                        .screen
                        .say(&format!("pgnotify: error: the terminal: {e}"));
                    break;
                }
            }
        }
        self.replies.settle(&self.view.screen);
        self.quitting.store(true, Ordering::Release);
        self.view.screen.leaving();
        self.view.control.quit();
    }

    /// Carries out what was entered: a paste of several lines is several commands, each in
    /// the history. False to quit.
    fn lines(&self, entered: &str, editor: &mut editor::LineEditor) -> bool {
        for line in entered.split(['\n', '\r']) {
            if !line.trim().is_empty() {
                editor::remember(editor, &self.history, line);
            }
            if !self.line(line, editor) {
                return false;
            }
        }
        true
    }

    /// Carries out one line; false to quit.
    fn line(&self, line: &str, editor: &mut editor::LineEditor) -> bool {
        let parsed = match command::parse(line) {
            Ok(parsed) => parsed,
            Err(why) => {
                self.reply(Err(why));
                return true;
            }
        };
        if let Some(hint) = parsed.hint {
            self.reply(Ok(format!("note: {hint}")));
        }
        for command in parsed.commands {
            match command {
                Command::Quit => return false,
                Command::Clear => {
                    let _ = editor.clear_screen();
                }
                command => self.command(command),
            }
        }
        true
    }

    /// Shows a reply after those of the commands before it.
    fn reply(&self, reply: Reply) {
        self.later(Box::new(move || reply));
    }

    /// Runs `job` on the replies thread, after the jobs before it, and shows what it says.
    fn later(&self, job: Job) {
        self.replies.send(job);
    }

    /// Carries out one command. Nothing here waits for the server: the editor is back at the
    /// prompt at once (in raw mode, where nothing typed is echoed on top of a reply), and the
    /// answer is shown when it comes, in the order the commands were typed.
    fn command(&self, command: Command) {
        let view = self.view.clone();
        match command {
            Command::Listen(names) => self.ask(checked(&names).map(|()| Ask::Listen(names))),
            Command::Unlisten(names) => self.ask(checked(&names).map(|()| Ask::Unlisten(names))),
            Command::UnlistenAll => self.ask(Ok(Ask::UnlistenAll)),
            Command::Notify { channel, payload } => self.ask(
                pg::check_channel(&channel)
                    .and_then(|()| pg::check_payload(&payload))
                    .map_err(|e| format!("{e:#}"))
                    .map(|()| Ask::Notify { channel, payload }),
            ),
            Command::Channels => self.later(Box::new(move || Ok(view.channels()))),
            Command::Format(None) => self.later(Box::new(move || {
                Ok(format!(
                    "format: {} (one of: {})",
                    view.screen.format().name(),
                    Format::names()
                ))
            })),
            Command::Format(Some(name)) => self.reply(match Format::named(&name) {
                Some(format) => {
                    self.view.screen.set_format(format);
                    Ok(format!("format: {name}"))
                }
                None => Err(format!(
                    "unknown format \"{name}\" (one of: {})",
                    Format::names()
                )),
            }),
            Command::Filter(Filter::Show) => self.later(Box::new(move || {
                Ok(match view.screen.filter() {
                    (Some(text), hidden) => format!(
                        "filter: payloads containing \"{}\" ({hidden} hidden so far)",
                        escape_controls(&text)
                    ),
                    (None, _) => "filter: off".to_owned(),
                })
            })),
            Command::Filter(Filter::Off) => {
                self.view.screen.set_filter(None);
                self.reply(Ok("filter: off".into()));
            }
            Command::Filter(Filter::Contains(text)) => {
                let shown = escape_controls(&text).into_owned();
                self.view.screen.set_filter(Some(text));
                self.reply(Ok(format!("filter: only payloads containing \"{shown}\"")));
            }
            Command::Help => self.reply(Ok(HELP.to_owned())),
            Command::Quit | Command::Clear => {}
        }
    }

    /// Hands `ask` to the source now, and its answer to the replies thread.
    fn ask(&self, ask: Result<Ask, String>) {
        match ask {
            Ok(ask) => {
                let answering = self.view.control.submit(ask);
                self.later(Box::new(move || answering.wait()));
            }
            Err(why) => self.reply(Err(why)),
        }
    }
}

/// Something to show once the replies before it are shown.
type Job = Box<dyn FnOnce() -> Reply + Send>;

/// The thread that shows replies in the order the commands were typed, and how many it has
/// still to show.
struct Replies {
    jobs: mpsc::Sender<Job>,
    waiting: Arc<AtomicUsize>,
}

/// How long quitting waits for the answers still to come.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

impl Replies {
    fn start(screen: Screen) -> Result<Replies> {
        let (jobs, queued) = mpsc::channel::<Job>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let done = Arc::clone(&waiting);
        std::thread::Builder::new()
            .name("console-replies".into())
            .spawn(move || {
                for job in queued {
                    match job() {
                        Ok(text) => screen.say(&screen.dim(&text)),
                        Err(why) => screen.say(&format!("error: {}", escape_controls(&why))),
                    }
                    done.fetch_sub(1, Ordering::AcqRel);
                }
            })
            .context("could not start the console")?;
        Ok(Replies { jobs, waiting })
    }

    fn send(&self, job: Job) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        if self.jobs.send(job).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// On the way out: waits a little for the answers still to come, and says how many did
    /// not, so that nobody takes a `notify` without an answer for one that was sent.
    fn settle(&self, screen: &Screen) {
        let deadline = Instant::now() + SETTLE_WAIT;
        while self.waiting.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        match self.waiting.load(Ordering::Acquire) {
            0 => {}
            n => screen.say(&format!(
                "error: leaving with {n} command(s) unanswered: a notify among them may or may \
                 not have been sent, a listen or unlisten may or may not have been done"
            )),
        }
    }
}

/// Checks channel names before they are sent.
fn checked(names: &[String]) -> Result<(), String> {
    for name in names {
        pg::check_channel(name).map_err(|e| format!("{e:#}"))?;
    }
    Ok(())
}

/// What the commands read and change: the stream's channels, the screen.
#[derive(Clone)]
struct View {
    control: Arc<Control>,
    screen: Screen,
}

impl View {
    /// The channels listened on, with the events each brought, and channels that brought
    /// events but are no longer listened on.
    fn channels(&self) -> String {
        let listened = self.control.channels();
        let counts = self.screen.counts();
        let count = |c: &str| {
            counts
                .iter()
                .find(|(name, _)| name == c)
                .map_or(0, |(_, n)| *n)
        };
        let mut lines = vec![match listened.is_empty() {
            true => "not listening on any channel".to_owned(),
            false => "listening on:".to_owned(),
        }];
        for c in &listened {
            lines.push(format!(
                "  {:<30} {}",
                names_of(std::slice::from_ref(c)),
                events(count(c))
            ));
        }
        let former: Vec<&(String, u64)> = counts
            .iter()
            .filter(|(c, _)| !listened.contains(c) && !c.starts_with("pgnotify.heartbeat."))
            .collect();
        if !former.is_empty() {
            lines.push("no longer listening on:".to_owned());
            for (c, n) in former {
                lines.push(format!(
                    "  {:<30} {}",
                    names_of(std::slice::from_ref(c)),
                    events(*n)
                ));
            }
        }
        lines.join("\n")
    }
}

fn events(n: u64) -> String {
    match n {
        1 => "1 event".to_owned(),
        n => format!("{} events", screen::thousands(n)),
    }
}
