//! Turns parsed arguments and the process environment into the plain settings that commands
//! run with, so that no command sees clap or reads the environment itself.

use crate::cli::{
    ConnArgs, DemoArgs, FormatArg, ListenArgs, NotifyArgs, PipeArgs, SourceArgs, WaitArgs,
    WatchTableArgs,
};
use crate::cmd::demo::DemoSettings;
use crate::conn::{ConnOptions, PasswordPrompt};
use crate::output::{ColorChoice, Format, JsonOptions, Printer, Style, use_color};
use crate::relay::{Destination, RelaySettings};
use crate::source::SourceSettings;
use std::io::IsTerminal;
use std::time::Duration;

/// The connection options as `conn::resolve` takes them.
pub fn conn_options(args: &ConnArgs) -> ConnOptions {
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

/// When a listening command stops by itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wait {
    /// Stop with status 0 after this many notifications.
    pub count: Option<u64>,
    /// Stop with status 124 if they (or a first one, without a count) have not arrived by then.
    pub timeout: Option<Duration>,
}

impl From<&WaitArgs> for Wait {
    fn from(args: &WaitArgs) -> Wait {
        Wait {
            count: args.count,
            timeout: args.timeout,
        }
    }
}

/// Everything `listen` needs besides the connection.
pub struct ListenSettings {
    pub relay: RelaySettings,
}

/// Everything `pipe` needs besides the connection.
pub struct PipeSettings {
    pub relay: RelaySettings,
}

fn source(channels: &[String], args: &SourceArgs) -> SourceSettings {
    SourceSettings {
        channels: channels.to_vec(),
        wait: args.wait,
        max_downtime: args.max_downtime,
        heartbeat: args.heartbeat.0,
    }
}

fn json_options(data: bool, args: &SourceArgs) -> JsonOptions {
    JsonOptions {
        data,
        gap_records: !args.no_gap_records,
    }
}

fn exec_or_stdout(args: &crate::cli::ExecArgs, source: &SourceArgs) -> Destination {
    match &args.exec {
        Some(command) => Destination::Exec {
            command: command.clone(),
            jobs: args.jobs as usize,
            gaps: !source.no_gap_records,
        },
        None => Destination::Stdout,
    }
}

/// `pipe`: always NDJSON.
pub fn pipe(args: &PipeArgs) -> PipeSettings {
    let printer = Printer::new(
        Format::Json,
        Style::default(),
        json_options(args.data || args.fetch, &args.source),
    );
    PipeSettings {
        relay: RelaySettings {
            source: source(&args.channels, &args.source),
            wait: Wait::from(&args.wait),
            printer,
            overflow: args.source.on_overflow,
            fetch: args.fetch,
            destination: match (&args.connect, &args.serve) {
                (Some(address), _) => Destination::Connect(address.clone()),
                (None, Some(spec)) => Destination::Serve(spec.clone()),
                (None, None) => exec_or_stdout(&args.exec, &args.source),
            },
        },
    }
}

/// Resolves `listen`'s format (text on a terminal, NDJSON elsewhere) and colours.
pub fn listen(args: &ListenArgs, color: ColorChoice) -> ListenSettings {
    let stdout_is_terminal = std::io::stdout().is_terminal();
    let format = match (args.json, args.format) {
        (true, _) | (false, Some(FormatArg::Json)) => Format::Json,
        (false, Some(FormatArg::Text)) => Format::Text,
        (false, Some(FormatArg::Psql)) => Format::Psql,
        (false, None) if stdout_is_terminal => Format::Text,
        (false, None) => Format::Json,
    };
    let no_color = std::env::var("NO_COLOR").ok();
    let term = std::env::var("TERM").ok();
    let style = Style {
        color: format == Format::Text
            && use_color(
                color,
                stdout_is_terminal,
                no_color.as_deref(),
                term.as_deref(),
            ),
        escape: stdout_is_terminal,
    };
    ListenSettings {
        relay: RelaySettings {
            source: source(&args.channels, &args.source),
            wait: Wait::from(&args.wait),
            printer: Printer::new(
                format,
                style,
                json_options(args.data || args.fetch, &args.source),
            ),
            overflow: args.source.on_overflow,
            fetch: args.fetch,
            destination: exec_or_stdout(&args.exec, &args.source),
        },
    }
}

/// Where `notify` takes its payloads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
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
pub struct NotifySettings {
    pub channel: String,
    pub input: Input,
}

pub fn notify(args: &NotifyArgs) -> NotifySettings {
    let input = if args.lines {
        Input::Lines {
            batch: args.batch as usize,
        }
    } else {
        match args.payload.as_deref() {
            Some("-") => Input::Stdin,
            Some(p) => Input::Argument(p.to_owned()),
            None if std::io::stdin().is_terminal() => Input::Empty,
            None => Input::Stdin,
        }
    };
    NotifySettings {
        channel: args.channel.clone(),
        input,
    }
}

/// `demo`'s settings; `PGNOTIFY_DEMO_PAUSE` (a duration) is a test hook that holds the demo
/// between starting its listener and sending, so a test can interrupt it there.
pub fn demo(args: &DemoArgs) -> DemoSettings {
    let pause = std::env::var("PGNOTIFY_DEMO_PAUSE")
        .ok()
        .and_then(|p| crate::cli::parse_duration(&p).ok());
    DemoSettings {
        keep: args.keep,
        pause,
    }
}

/// What `watch-table` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchAction {
    Install {
        /// None: the table's name.
        channel: Option<String>,
        events: Vec<crate::watch::Op>,
        rows: bool,
        columns: Option<Vec<String>>,
    },
    Drop,
    List {
        /// NDJSON even on a terminal.
        json: bool,
    },
}

/// Everything `watch-table` needs besides the connection.
pub struct WatchTableSettings {
    /// TABLE as the user wrote it (absent only with `--list`).
    pub table: Option<String>,
    pub action: WatchAction,
    /// Print the SQL instead of running it.
    pub print_sql: bool,
}

pub fn watch_table(args: &WatchTableArgs) -> WatchTableSettings {
    let action = if args.list {
        WatchAction::List { json: args.json }
    } else if args.drop {
        WatchAction::Drop
    } else {
        WatchAction::Install {
            channel: args.channel.clone(),
            events: args.events.clone(),
            rows: args.rows,
            columns: args.columns.clone(),
        }
    };
    WatchTableSettings {
        table: args.table.clone(),
        action,
        print_sql: args.print_sql,
    }
}
