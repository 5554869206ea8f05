//! Turns parsed arguments and the process environment into the plain settings that commands
//! run with, so that no command sees clap or reads the environment itself. Every clap
//! `ValueEnum` of `cli` is translated here into its plain twin in the domain.

use crate::cli::{
    Cli, ColorArg, Command, ConnArgs, ConsumersArgs, DemoArgs, DoctorArgs, ExecArgs, FormatArg,
    HealthArgs, ListenArgs, LogFormatArg, NotifyArgs, OpArg, OverflowArg, PipeArgs, SourceArgs,
    TriggersArg, WaitArgs, WatchTableArgs,
};
use crate::durable::Grantee;
use crate::format::{ColorChoice, ColorEnv, Encoder, Format, JsonOptions, Style, use_color};
use crate::msg;
use crate::pg::{ConnOptions, PasswordPrompt};
use crate::readiness::Notifier;
use crate::stream::{
    Destination, Health, Overflow, SourceSettings, StreamSettings, Until, WebSettings,
};
use crate::watch::Op;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// The connection options as `pg::resolve` takes them.
pub(crate) fn conn_options(args: &ConnArgs) -> ConnOptions {
    ConnOptions {
        dbname: args.dbname.clone(),
        host: args.host.clone(),
        port: args.port.clone(),
        user: args.username.clone(),
        prompt: if args.password {
            PasswordPrompt::Always
        } else if args.no_password {
            PasswordPrompt::Never
        } else {
            PasswordPrompt::Auto
        },
    }
}

/// How stderr lines read: `--log-format`; the time on the lines of the long-running commands
/// (`listen` and `pipe`, not the console, whose look is its own); and whether stderr is
/// journald's.
pub(crate) fn log_style(cli: &Cli) -> msg::Style {
    let timestamps = match &cli.command {
        Command::Listen(args) => !args.interactive,
        Command::Pipe(_) => true,
        _ => false,
    };
    msg::Style {
        json: cli.log_format == LogFormatArg::Json,
        timestamps,
        journal: stderr_is_journal(std::env::var_os("JOURNAL_STREAM")),
    }
}

/// Whether stderr is connected to journald: `JOURNAL_STREAM` holds the device and inode of
/// its stream (`DEV:INODE`, in decimal), and stderr is that very file (systemd.exec(5): a
/// process whose stderr was redirected elsewhere inherits the variable, and must compare).
fn stderr_is_journal(variable: Option<std::ffi::OsString>) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = variable.as_deref().and_then(parse_journal_stream) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// `DEV:INODE` of `JOURNAL_STREAM`.
fn parse_journal_stream(value: &std::ffi::OsStr) -> Option<(u64, u64)> {
    let (dev, ino) = value.to_str()?.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

fn health(args: &HealthArgs) -> Health {
    Health {
        stats: args.stats,
        metrics: args.metrics.clone(),
    }
}

fn until(args: &WaitArgs) -> Until {
    Until {
        count: args.count,
        timeout: args.timeout,
    }
}

fn overflow(arg: OverflowArg) -> Overflow {
    match arg {
        OverflowArg::Drop => Overflow::Drop,
        OverflowArg::Block => Overflow::Block,
        OverflowArg::Exit => Overflow::Exit,
    }
}

fn color(arg: ColorArg) -> ColorChoice {
    match arg {
        ColorArg::Auto => ColorChoice::Auto,
        ColorArg::Always => ColorChoice::Always,
        ColorArg::Never => ColorChoice::Never,
    }
}

/// `NO_COLOR`, `CLICOLOR_FORCE` and `TERM`, the variables behind `--color auto`.
fn color_env() -> ColorEnv {
    let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    ColorEnv {
        no_color: var("NO_COLOR"),
        clicolor_force: var("CLICOLOR_FORCE"),
        clicolor: var("CLICOLOR"),
        term: var("TERM"),
    }
}

/// Whether a stream gets colour, by `--color` and the environment (`format::use_color`).
pub(crate) fn colored(arg: ColorArg, is_terminal: bool) -> bool {
    use_color(color(arg), is_terminal, &color_env())
}

fn op(arg: OpArg) -> Op {
    match arg {
        OpArg::Insert => Op::Insert,
        OpArg::Update => Op::Update,
        OpArg::Delete => Op::Delete,
        OpArg::Truncate => Op::Truncate,
    }
}

/// Everything `listen` needs besides the connection: a stream, or the console (`-i`).
pub(crate) enum ListenSettings {
    Stream(StreamSettings),
    Console(ConsoleSettings),
}

/// Everything `listen -i` needs besides the connection.
pub(crate) struct ConsoleSettings {
    pub(crate) source: SourceSettings,
    pub(crate) overflow: Overflow,
    pub(crate) fetch: bool,
    /// How events are shown at first (the `format` command changes it).
    pub(crate) encoder: Encoder,
    /// Colour for the console's own lines too.
    pub(crate) color: bool,
    /// The history file: `$XDG_DATA_HOME/pgnotify/history`, else under `~/.local/share`;
    /// none without either.
    pub(crate) history: Option<PathBuf>,
    /// `--stats` and `--metrics` (their lines shown above the prompt).
    pub(crate) health: Health,
}

/// Everything `pipe` needs besides the connection.
pub(crate) struct PipeSettings {
    pub(crate) stream: StreamSettings,
}

fn source(channels: &[String], args: &SourceArgs) -> SourceSettings {
    SourceSettings {
        channels: channels.to_vec(),
        greet: true,
        wait: args.wait,
        max_downtime: args.max_downtime,
        heartbeat: args.heartbeat.0,
        notifier: notifier(),
    }
}

/// The service manager's socket (`NOTIFY_SOCKET`, sd_notify(3)), told when the run is ready.
fn notifier() -> Notifier {
    Notifier::new(
        std::env::var_os(crate::readiness::NOTIFY_SOCKET).map(|v| v.to_string_lossy().into_owned()),
    )
}

fn json_options(data: bool, args: &SourceArgs) -> JsonOptions {
    JsonOptions {
        data,
        gap_records: !args.no_gap_records,
    }
}

fn exec_or_stdout(args: &ExecArgs, source: &SourceArgs) -> Destination {
    match &args.exec {
        Some(command) => Destination::Exec {
            command: command.clone(),
            jobs: args.jobs as usize,
            gaps: !source.no_gap_records,
        },
        None => Destination::Stdout,
    }
}

/// The console's history file, by the XDG base directory rules: a relative
/// `XDG_DATA_HOME` is ignored.
fn history_file(
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let data = xdg_data_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            home.map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".local/share"))
        })?;
    Some(data.join("pgnotify").join("history"))
}

/// `pipe`: always NDJSON (on a terminal, with what acts on it escaped, as `listen --json`).
pub(crate) fn pipe(args: &PipeArgs) -> PipeSettings {
    let networked = args.connect.is_some()
        || args.serve.is_some()
        || args.web.websocket.is_some()
        || args.web.sse.is_some();
    let to_terminal =
        (!networked || args.stdout) && args.exec.exec.is_none() && std::io::stdout().is_terminal();
    let encoder = Encoder::new(
        Format::Json,
        Style {
            color: false,
            escape: to_terminal,
        },
        json_options(args.data || args.fetch, &args.source),
    );
    PipeSettings {
        stream: StreamSettings {
            source: source(&args.channels, &args.source),
            until: until(&args.wait),
            encoder,
            overflow: overflow(args.source.on_overflow),
            fetch: args.fetch,
            consumer: args.source.consumer.clone(),
            destination: pipe_destination(args, networked),
            health: health(&args.health),
        },
    }
}

/// Where `pipe` writes: one output, or several.
fn pipe_destination(args: &PipeArgs, networked: bool) -> Destination {
    if !networked {
        return exec_or_stdout(&args.exec, &args.source);
    }
    let mut parts = Vec::new();
    if args.stdout {
        parts.push(Destination::Stdout);
    }
    if let Some(address) = &args.connect {
        parts.push(Destination::Connect(address.clone()));
    }
    if let Some(spec) = &args.serve {
        parts.push(Destination::Serve(spec.clone()));
    }
    let web = &args.web;
    if web.websocket.is_some() || web.sse.is_some() {
        parts.push(Destination::Web(Box::new(WebSettings {
            websocket: web.websocket.clone(),
            sse: web.sse.clone(),
            path: web.path.clone(),
            page: web.page,
            allow_channels: web.allow_channel.clone(),
            token_file: web.token_file.clone(),
            allow_origins: web.allow_origin.clone(),
            keepalive: web.keepalive,
            channels: args.channels.clone(),
        })));
    }
    match parts.len() {
        1 => parts.remove(0),
        _ => Destination::Many(parts),
    }
}

/// Resolves `listen`'s format (text on a terminal, NDJSON elsewhere) and colours.
pub(crate) fn listen(args: &ListenArgs, color_arg: ColorArg) -> ListenSettings {
    let stdout_is_terminal = std::io::stdout().is_terminal();
    let format = match (args.json, args.format) {
        (true, _) | (false, Some(FormatArg::Json)) => Format::Json,
        (false, Some(FormatArg::Text)) => Format::Text,
        (false, Some(FormatArg::Psql)) => Format::Psql,
        (false, Some(FormatArg::Raw)) => Format::Raw,
        (false, None) if stdout_is_terminal => Format::Text,
        (false, None) => Format::Json,
    };
    let style = Style {
        color: format == Format::Text && colored(color_arg, stdout_is_terminal),
        escape: stdout_is_terminal,
    };
    if args.interactive {
        let json = json_options(args.data || args.fetch, &args.source);
        // Any format may be switched to text there: colour follows the rules alone.
        let color = colored(color_arg, stdout_is_terminal);
        return ListenSettings::Console(ConsoleSettings {
            source: SourceSettings {
                greet: false,
                ..source(&args.channels, &args.source)
            },
            overflow: overflow(args.source.on_overflow),
            fetch: args.fetch,
            encoder: Encoder::new(
                format,
                Style {
                    color,
                    escape: true,
                },
                json,
            ),
            color,
            history: history_file(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME")),
            health: health(&args.health),
        });
    }
    ListenSettings::Stream(StreamSettings {
        source: source(&args.channels, &args.source),
        until: until(&args.wait),
        encoder: Encoder::new(
            format,
            style,
            json_options(args.data || args.fetch, &args.source),
        ),
        overflow: overflow(args.source.on_overflow),
        fetch: args.fetch,
        consumer: args.source.consumer.clone(),
        destination: exec_or_stdout(&args.exec, &args.source),
        health: health(&args.health),
    })
}

/// Where `notify` takes its payloads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// The PAYLOAD argument.
    Argument(String),
    /// All of standard input, one trailing newline removed.
    Stdin,
    /// Nothing (no argument and standard input is a terminal): the empty payload.
    Empty,
    /// One notification per line, in transactions of `batch` lines.
    Lines { batch: usize },
}

/// Everything `notify` needs besides the connection.
pub(crate) struct NotifySettings {
    pub(crate) channel: String,
    pub(crate) input: Input,
    /// `--timeout`: the bound on connecting and sending.
    pub(crate) timeout: Option<std::time::Duration>,
    /// `--durable`: store each event in the outbox, and notify only to wake consumers.
    pub(crate) durable: bool,
}

pub(crate) fn notify(args: &NotifyArgs) -> NotifySettings {
    let input = if args.lines {
        Input::Lines {
            batch: args.batch as usize,
        }
    } else {
        // Without PAYLOAD the payload is empty and stdin is left alone: in a `while read`
        // loop it is the loop's input, and an idle open stdin (ssh, CI) would never end.
        match args.payload.as_deref() {
            Some("-") => Input::Stdin,
            Some(p) => Input::Argument(p.to_owned()),
            None => Input::Empty,
        }
    };
    NotifySettings {
        channel: args.channel.clone(),
        input,
        timeout: args.timeout,
        durable: args.durable,
    }
}

/// What `demo` was asked to do.
pub(crate) struct DemoSettings {
    /// Leave the server running and print its settings as `export` lines on stdout.
    pub(crate) keep: bool,
    /// Serve TLS, and connect with sslmode=verify-full.
    pub(crate) tls: bool,
    /// A pause before the notifications are sent (a test hook, `PGNOTIFY_DEMO_PAUSE`).
    pub(crate) pause: Option<Duration>,
}

/// `demo`'s settings; `PGNOTIFY_DEMO_PAUSE` (a duration) is a test hook that holds the demo
/// between starting its listener and sending, so a test can interrupt it there.
pub(crate) fn demo(args: &DemoArgs) -> DemoSettings {
    let pause = std::env::var("PGNOTIFY_DEMO_PAUSE")
        .ok()
        .and_then(|p| crate::cli::parse_duration(&p).ok());
    DemoSettings {
        keep: args.keep,
        tls: args.tls,
        pause,
    }
}

/// What `watch-table` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WatchAction {
    Install {
        /// None: the table's name.
        channel: Option<String>,
        events: Vec<Op>,
        rows: bool,
        columns: Option<Vec<String>>,
        /// `--triggers auto`: statement triggers where they send the same events.
        statement_triggers: bool,
        /// `--durable`: store events in the outbox.
        durable: bool,
    },
    Drop,
    List {
        /// NDJSON even on a terminal.
        json: bool,
    },
}

/// What `consumers` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConsumersAction {
    List,
    Drop(String),
    Prune,
    Install,
    Grant(String, Grantee),
}

/// Everything `consumers` needs besides the connection.
pub(crate) struct ConsumersSettings {
    pub(crate) action: ConsumersAction,
    pub(crate) print_sql: bool,
    pub(crate) max_lag: Duration,
    pub(crate) json: bool,
}

pub(crate) fn consumers(args: &ConsumersArgs) -> ConsumersSettings {
    let action = match (&args.drop, &args.grant_writer, &args.grant_consumer) {
        (Some(name), _, _) => ConsumersAction::Drop(name.clone()),
        (_, Some(role), _) => ConsumersAction::Grant(role.clone(), Grantee::Writer),
        (_, _, Some(role)) => ConsumersAction::Grant(role.clone(), Grantee::Consumer),
        _ if args.prune => ConsumersAction::Prune,
        _ if args.install => ConsumersAction::Install,
        _ => ConsumersAction::List,
    };
    ConsumersSettings {
        action,
        print_sql: args.print_sql,
        max_lag: args.max_lag,
        json: args.json,
    }
}

/// Everything `doctor` needs besides the connection.
pub(crate) struct DoctorSettings {
    pub(crate) channels: Vec<String>,
    pub(crate) json: bool,
    /// Whether the text report is coloured (`format::use_color` on stdout).
    pub(crate) color: bool,
}

pub(crate) fn doctor(args: &DoctorArgs, choice: ColorArg) -> DoctorSettings {
    DoctorSettings {
        channels: args.channels.clone(),
        json: args.json,
        color: colored(choice, std::io::stdout().is_terminal()),
    }
}

/// Everything `watch-table` needs besides the connection.
pub(crate) struct WatchTableSettings {
    /// TABLE as the user wrote it (absent only with `--list`).
    pub(crate) table: Option<String>,
    pub(crate) action: WatchAction,
    /// Print the SQL instead of running it.
    pub(crate) print_sql: bool,
}

pub(crate) fn watch_table(args: &WatchTableArgs) -> WatchTableSettings {
    let action = if args.list {
        WatchAction::List { json: args.json }
    } else if args.drop {
        WatchAction::Drop
    } else {
        WatchAction::Install {
            channel: args.channel.clone(),
            events: args.events.iter().map(|e| op(*e)).collect(),
            rows: args.rows,
            columns: args.columns.clone(),
            statement_triggers: args.triggers == TriggersArg::Auto,
            durable: args.durable,
        }
    };
    WatchTableSettings {
        table: args.table.clone(),
        action,
        print_sql: args.print_sql,
    }
}
