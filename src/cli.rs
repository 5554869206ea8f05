//! The command line, as clap derive types, every `ValueEnum` included. Nothing but `config`,
//! `app` and `generate` reads these: `config` turns them into the domain's plain settings.
//!
//! Conventions (xh's): doc comments are the help text, the first paragraph for `-?`, all of it
//! for `--help`; explicit `short`, implicit `long`; UPPERCASE `value_name`s; single values are
//! checked by `value_parser` functions so that clap reports them with status 2; connection
//! options are `global` so they work before or after the command, as with psql. `-h` is the
//! host, as in psql, so help is `-?` / `--help`. Every command's help ends with examples.

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;

const ROOT_EXAMPLES: &str = "\
Examples:
  pgnotify demo                                  see it work against a throwaway server
  pgnotify -d shop listen orders                 watch the channel \"orders\" live
  pgnotify -d shop notify orders '{\"id\":42}'     send one notification
  seq 100 | pgnotify -d shop notify --lines jobs send one notification per line
  pgnotify -d shop pipe jobs | consumer         NDJSON lines, gap records after reconnects
  pgnotify -d shop watch-table orders            a JSON event for every change to orders
  pgnotify -d shop pipe orders --fetch           ... with the changed row, read with your rights
  pgnotify -d shop notify --durable jobs x       store the event: kept until consumers read it
  pgnotify -d shop pipe --consumer worker jobs   every stored event worker has not read, then live";

/// PostgreSQL LISTEN/NOTIFY from the shell.
///
/// Watch channels live, send notifications from scripts and cron jobs, forward them as NDJSON
/// that survives lost connections, and turn table changes into JSON events; with --durable and
/// --consumer, keep events in the database until each consumer has read them. Connection
/// options work like psql's, and libpq's PG* environment variables, password file and service
/// file apply.
#[derive(Debug, Parser)]
#[command(
    name = "pgnotify",
    version,
    disable_help_flag = true,
    arg_required_else_help = true,
    args_override_self = true,
    max_term_width = 100,
    after_help = ROOT_EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,

    /// When to colour the text output and this help: auto, always, never.
    ///
    /// With auto: no colour when NO_COLOR is set and not empty; colour when CLICOLOR_FORCE is
    /// set, not empty and not 0, even into a pipe; no colour when CLICOLOR is 0 or TERM is
    /// dumb; else colour on a terminal only. The flag wins over the environment. NDJSON,
    /// --format psql and --format raw never have colour.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t, global = true)]
    pub(crate) color: ColorArg,

    /// Print only errors on stderr, no warnings.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,

    /// Also say on stderr what pgnotify is doing: the server reached, when it is listening.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub(crate) verbose: bool,

    /// How stderr lines read: text, or json (one JSON object per line: time, level, message).
    ///
    /// Text lines of listen and pipe begin with the time (RFC 3339, UTC, milliseconds), but for
    /// the error at the exit; none does when stderr is journald's (JOURNAL_STREAM), which adds
    /// its own and gets each line's priority as a <N> prefix instead.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t,
        global = true
    )]
    pub(crate) log_format: LogFormatArg,

    /// Print help (-? for a summary, --help for all of it).
    #[arg(short = '?', long, action = ArgAction::Help, global = true)]
    pub(crate) help: Option<bool>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Connection options, as in psql. A password is never taken on the command line.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Connection options")]
pub(crate) struct ConnArgs {
    /// Database name, or a whole connection string ("host=db1 dbname=shop" or
    /// "postgres://user@db1:5432/shop"), whose settings override -h, -p and -U.
    #[arg(short = 'd', long = "dbname", value_name = "DBNAME", global = true)]
    pub(crate) dbname: Option<String>,

    /// Server host name, or directory of its unix socket [default: the socket in
    /// /var/run/postgresql or /tmp].
    #[arg(short = 'h', long, value_name = "HOSTNAME", global = true)]
    pub(crate) host: Option<String>,

    /// Server port [default: 5432].
    #[arg(short = 'p', long, value_name = "PORT", value_parser = parse_port_list, global = true)]
    pub(crate) port: Option<String>,

    /// User name to connect as [default: the operating-system user].
    #[arg(short = 'U', long, value_name = "USERNAME", global = true)]
    pub(crate) username: Option<String>,

    /// Never prompt for a password: fail if none is found in PGPASSWORD or the password file.
    #[arg(short = 'w', long, global = true)]
    pub(crate) no_password: bool,

    /// Prompt for a password (without echo) before connecting.
    #[arg(short = 'W', long, global = true, conflicts_with = "no_password")]
    pub(crate) password: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Listen(ListenArgs),
    Notify(NotifyArgs),
    WatchTable(WatchTableArgs),
    Pipe(Box<PipeArgs>),
    Consumers(ConsumersArgs),
    Doctor(DoctorArgs),
    Demo(DemoArgs),
}

const LISTEN_EXAMPLES: &str = "\
Examples:
  pgnotify listen orders                      watch one channel until Ctrl-C
  pgnotify listen Orders 'order events'       channels are case-exact; quote spaces
  pgnotify listen jobs --count 1 --timeout 30s && echo 'a job arrived'
  pgnotify listen jobs --json | jq .payload    NDJSON, one object per line
  pgnotify listen jobs --exec 'handle-job' --jobs 4   a command per notification
  pgnotify listen -i orders                   a console: events above a prompt; type help";

/// Print notifications as they arrive.
///
/// Listens on every CHANNEL on one connection and prints each notification: on a terminal as
/// a line with the local time, channel, sender PID and payload; elsewhere (a pipe, a file) as
/// NDJSON, one JSON object per line: {"channel", "payload", "pid", "received_at"}. Output is
/// flushed as soon as nothing more is waiting.
///
/// Channel names are taken exactly as written: `listen Orders` listens on "Orders", not
/// "orders". Names must be 1 to 63 bytes (else status 2, before connecting).
///
/// A lost connection is re-established; with --json the stream then gets a gap record (a line
/// without "payload"), and stderr always says so. See `pipe --help`.
///
/// With -i, an interactive console: events appear live above a prompt where `listen`,
/// `unlisten`, `notify`, `channels`, `format`, `filter`, `clear`, `help` and `quit` are typed
/// (and `LISTEN x;`, `NOTIFY x, 'p';` as SQL), with history and Tab completion. More than 40
/// events a second are summarised ("… 9,950 more on jobs"); type `help` there for the rest.
///
/// Exit status: 0 after --count notifications or when the reader of stdout goes away, 124 when
/// --timeout elapses first, 3 when the first connection fails (without --wait) or the server
/// stays away longer than --max-downtime, 130/143 on SIGINT/SIGTERM and 129 on SIGHUP from a
/// terminal that hung up (after writing everything already received; without a terminal
/// SIGHUP is ignored). The console exits 0 on quit, Ctrl-D or a second Ctrl-C on an empty line.
#[derive(Debug, Args)]
#[command(after_help = LISTEN_EXAMPLES)]
pub(crate) struct ListenArgs {
    /// Channels to listen on, exactly as written (case, spaces and quotes kept).
    #[arg(required_unless_present = "interactive", value_name = "CHANNEL")]
    pub(crate) channels: Vec<String>,

    /// An interactive console on a terminal: events above a prompt, commands typed live.
    /// History is kept in $XDG_DATA_HOME/pgnotify/history (~/.local/share/pgnotify/history).
    #[arg(short = 'i', long, conflicts_with_all = ["exec", "count", "timeout", "consumer"])]
    pub(crate) interactive: bool,

    /// Output format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) format: Option<FormatArg>,

    /// Write NDJSON, the same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub(crate) json: bool,

    /// With --json: add "data", the payload parsed as JSON, when it is JSON.
    #[arg(long)]
    pub(crate) data: bool,

    /// For `watch-table` events that carry a key but no row: read the row as it is now, with
    /// your own privileges, and add it as "new" under "data" (null when the row is gone since).
    /// Only tables watched on the event's channel are read, one query per table for all the
    /// events that arrived together. With --exec, the row (JSON) is the command's stdin, and
    /// PGNOTIFY_FETCHED=1 says so.
    #[arg(long)]
    pub(crate) fetch: bool,

    #[command(flatten)]
    pub(crate) exec: ExecArgs,

    #[command(flatten)]
    pub(crate) wait: WaitArgs,

    #[command(flatten)]
    pub(crate) source: SourceArgs,

    #[command(flatten)]
    pub(crate) health: HealthArgs,
}

/// `--stats` and `--metrics`, shared by `listen` and `pipe`.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Health")]
pub(crate) struct HealthArgs {
    /// Print the counters on stderr every INTERVAL (e.g. 10s, 1m), and once at the end:
    /// received, written, dropped, gaps, reconnects, clients, queue bytes and the age of the
    /// last event, as key=value on one line (one JSON object with --log-format json). SIGUSR1
    /// prints them once, with or without this option.
    #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
    pub(crate) stats: Option<Duration>,

    /// Serve the counters in Prometheus' text format at http://ADDR:PORT/metrics. A port alone
    /// listens on 127.0.0.1; 0 picks a free one (-v says which). Another address is served to
    /// anyone who can reach it, without authentication.
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub(crate) metrics: Option<String>,
}

/// `pipe`'s outputs for browsers and other web clients.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Web clients")]
#[command(group = clap::ArgGroup::new("web").multiple(true).args(["websocket", "sse"]))]
pub(crate) struct WebArgs {
    /// Serve the lines to WebSocket clients, one text frame each (gap records too), from the
    /// moment each connects. A port alone listens on 127.0.0.1; another address needs
    /// --token-file. A client that stops reading is disconnected (after 1 MiB) with a close
    /// frame; what clients send is ignored, but for pings and closes.
    #[arg(long, value_name = "[ADDR:]PORT", conflicts_with_all = ["exec", "consumer"])]
    pub(crate) websocket: Option<String>,

    /// Serve the lines as Server-Sent Events, for `new EventSource(url)`: each named after
    /// its channel (gap records: `gap`), its data the NDJSON object, with an id. A client that
    /// comes back with Last-Event-ID first gets a "client" gap record counting what it missed.
    /// The same port as --websocket serves both.
    #[arg(long, value_name = "[ADDR:]PORT", conflicts_with_all = ["exec", "consumer"])]
    pub(crate) sse: Option<String>,

    /// Where the stream (and --page) is served; other paths are answered 404.
    #[arg(long, value_name = "PATH", default_value = "/", value_parser = parse_path, requires = "web")]
    pub(crate) path: String,

    /// Serve a page showing the events live, per channel, with gap records, to a browser that
    /// opens the stream's URL (EventSource and WebSocket clients still get the stream).
    #[arg(long, requires = "web")]
    pub(crate) page: bool,

    /// Let clients ask only for channels matching GLOB (`*`, `?`); repeatable. A client asks
    /// with ?channel=NAME (repeatable), else gets every allowed channel; asking for one not
    /// allowed is answered 403.
    #[arg(long, value_name = "GLOB", requires = "web")]
    pub(crate) allow_channel: Vec<String>,

    /// Require the token on the first line of FILE, as `Authorization: Bearer TOKEN` or
    /// `?token=TOKEN` (EventSource cannot send headers), compared in constant time; needed to
    /// listen on an address other than loopback.
    #[arg(long, value_name = "FILE", requires = "web")]
    pub(crate) token_file: Option<std::path::PathBuf>,

    /// Let pages from ORIGIN (`https://app.example`, or `*`) read the stream; repeatable.
    /// Pages of the stream's own origin always may; others are answered 403.
    #[arg(long, value_name = "ORIGIN", requires = "web")]
    pub(crate) allow_origin: Vec<String>,

    /// Ping idle WebSocket clients (and send SSE clients a comment) this often; a WebSocket
    /// client that answers nothing for twice as long is disconnected.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_keepalive)]
    pub(crate) keepalive: Duration,
}

/// `--path`: an absolute path, without a query.
fn parse_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/')
        || s.contains(['?', '#'])
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("a path begins with / and has no ?, # or spaces".into());
    }
    Ok(s.to_string())
}

/// `--keepalive`: at least 100 ms.
fn parse_keepalive(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err("at least 100ms".into());
    }
    Ok(d)
}

/// `--exec` and `--jobs`, shared by `listen` and `pipe`.
#[derive(Clone, Debug, Args)]
pub(crate) struct ExecArgs {
    /// Run COMMAND (through /bin/sh -c) for each notification instead of printing it: the
    /// payload on its stdin and in PGNOTIFY_PAYLOAD, with PGNOTIFY_CHANNEL and PGNOTIFY_PID.
    /// For a gap it runs with PGNOTIFY_GAP set and the gap record on stdin. A failing command
    /// is reported on stderr; the run goes on.
    #[arg(short = 'x', long, value_name = "COMMAND")]
    pub(crate) exec: Option<String>,

    /// With --exec: run up to N commands at once (1: one after the other, in order).
    #[arg(short = 'j', long, value_name = "N", default_value_t = 1, requires = "exec",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) jobs: u32,
}

/// Reconnecting, liveness and overflow, shared by `listen` and `pipe`.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Staying connected")]
pub(crate) struct SourceArgs {
    /// If the server is down at start, keep trying instead of exiting with status 3. A
    /// refusal retrying cannot fix (wrong password, no such database or role, pg_hba.conf)
    /// still exits 3 at once, here and when reconnecting.
    #[arg(long)]
    pub(crate) wait: bool,

    /// Exit with status 3 after being disconnected this long (default: keep reconnecting).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) max_downtime: Option<Duration>,

    /// Prove the connection alive this often: a notification to itself, whose query must be
    /// answered and which must come back within 5 s each, else reconnect. 0 turns it off.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_interval)]
    pub(crate) heartbeat: Interval,

    /// When the output is too slow and 1 MiB of notifications wait for it for a second:
    /// drop (count them, report a gap), block (stop reading the server), or exit (status 1).
    #[arg(long, value_enum, value_name = "POLICY", default_value_t)]
    pub(crate) on_overflow: OverflowArg,

    /// Leave out the gap records that NDJSON output gets when notifications may be lost
    /// (stderr still says so).
    #[arg(long)]
    pub(crate) no_gap_records: bool,

    /// Durable delivery: read the events that `--durable` senders stored on the CHANNELs, as
    /// the consumer NAME, whose checkpoint is kept in the database. First every stored event
    /// NAME has not acknowledged, then new ones as they commit, whole transactions in
    /// transaction-id order; each NDJSON line carries the event's "id" and its transaction's
    /// "xid". An event is acknowledged once its line is written and flushed to stdout; with
    /// --exec once its command exits 0 (a failing one is run again, backing off from 1 s to
    /// 30 s; with --jobs N only an unbroken run of successes from the first is acknowledged);
    /// with --connect once the peer must have read it (a lost connection begins again with
    /// what it may not have read). After a crash the unacknowledged tail comes again; nothing
    /// is skipped. Not with --serve. --on-overflow does not apply: a slow reader is waited
    /// for.
    #[arg(long, value_name = "NAME", help_heading = "Durable delivery")]
    pub(crate) consumer: Option<String>,
}

/// A duration that may be 0 (off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interval(pub Option<Duration>);

/// `--count` and `--timeout`, shared by `listen` and `pipe`.
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct WaitArgs {
    /// Exit with status 0 after N notifications.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,

    /// Exit with status 124 if the --count notifications (without --count: a first
    /// notification) have not arrived within DURATION, e.g. 500ms, 10s, 5m, 1h. It counts
    /// from the start, connecting included: without --wait, expiring before LISTEN is
    /// answered is status 3.
    #[arg(short = 't', long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

/// The `--color` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorArg {
    /// Colour on a terminal, as NO_COLOR, CLICOLOR_FORCE and TERM allow.
    #[default]
    Auto,
    /// Always colour text output.
    Always,
    /// Never colour.
    Never,
}

/// The `--log-format` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormatArg {
    /// Lines for people (and grep).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What the source does when the queue stays full (`--on-overflow`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum OverflowArg {
    /// Drop notifications, count them, and report the count in a gap record and on stderr.
    #[default]
    Drop,
    /// Stop reading the server until there is room (holds back the server's queue).
    Block,
    /// End the run with status 1.
    Exit,
}

/// A change `watch-table` can report (`--events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OpArg {
    Insert,
    Update,
    Delete,
    Truncate,
}

/// Which triggers `watch-table` installs for INSERT, UPDATE and DELETE (`--triggers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TriggersArg {
    /// Row triggers: the function runs once per changed row.
    Row,
    /// Statement triggers with transition tables, where they send the same events (a plain
    /// table with a key; row triggers elsewhere): the function runs once per statement.
    Auto,
}

/// Output formats of `listen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum FormatArg {
    /// One line per notification: local time, channel, sender PID, payload.
    Text,
    /// NDJSON: {"channel","payload","pid","received_at"} per line.
    Json,
    /// psql's sentences: Asynchronous notification "ch" with payload "p" received from server
    /// process with PID n.
    Psql,
    /// The payload alone, one line each, as sent but for line breaks (written \n, \r), for
    /// shell loops that read lines.
    Raw,
}

/// The `--color` value on a raw command line, the last one before `--` (auto when there is
/// none, or it is not a value): help and usage errors are printed before the command line is
/// parsed, and must follow it too.
pub(crate) fn color_in_argv(args: &[std::ffi::OsString]) -> ColorArg {
    let mut found = ColorArg::Auto;
    let mut args = args.iter().skip(1).map(|a| a.to_str());
    while let Some(arg) = args.next() {
        let value = match arg {
            Some("--") => break,
            Some("--color") => args.next().flatten(),
            Some(arg) => arg.strip_prefix("--color="),
            None => None,
        };
        if let Some(value) = value {
            found = ColorArg::from_str(value, false).unwrap_or(ColorArg::Auto);
        }
    }
    found
}

const NOTIFY_EXAMPLES: &str = "\
Examples:
  pgnotify notify orders '{\"id\":42}'              payload from the argument
  date | pgnotify notify ticks -                   payload from stdin (one trailing newline dropped)
  pgnotify notify cache_reset                      empty payload (stdin is not read)
  cat ids.txt | pgnotify notify --lines jobs       one notification per line
  pgnotify notify --timeout 10s nightly done       from cron: never hangs";

/// Send a notification (payload from the argument, or stdin with "-").
///
/// Sends with `SELECT pg_notify($1, $2)`: the channel is taken exactly as written and the
/// payload travels as a bind parameter, never spliced into SQL. Exit status 0 means the
/// notification was committed (delivered to every session listening at that moment; nobody
/// listening means nobody gets it).
///
/// With "-" as PAYLOAD, the payload is read from standard input, with one trailing newline
/// removed (so `echo hi | pgnotify notify ch -` sends "hi"). Without PAYLOAD the payload is
/// empty and standard input is never read, so `notify` in a `while read` loop leaves the loop's
/// input alone. Only "-" and --lines read standard input.
///
/// With --lines, every line of standard input is one notification (its newline removed), sent
/// in transactions of --batch lines. PostgreSQL delivers identical channel+payload pairs only
/// once per transaction: use --batch 1 when repeated lines must each arrive.
///
/// Checked before anything is sent: the channel name (1 to 63 bytes) and each payload (at most
/// 7999 bytes of UTF-8, no NUL). A bad channel name or PAYLOAD argument exits with status 2
/// (usage), before connecting; a bad payload on standard input with status 1, and a bad line
/// stops the run before its batch is sent; earlier batches stay committed.
#[derive(Debug, Args)]
#[command(after_help = NOTIFY_EXAMPLES)]
pub(crate) struct NotifyArgs {
    /// Channel to notify, exactly as written.
    #[arg(value_name = "CHANNEL")]
    pub(crate) channel: String,

    /// The payload; "-": read standard input; absent: the empty payload.
    #[arg(value_name = "PAYLOAD")]
    pub(crate) payload: Option<String>,

    /// Send one notification per line of standard input.
    #[arg(short = 'l', long, conflicts_with = "payload")]
    pub(crate) lines: bool,

    /// With --lines: how many lines go in one transaction.
    #[arg(short = 'b', long, value_name = "N", default_value_t = 1000, requires = "lines",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) batch: u32,

    /// Give up with status 124 if connecting and sending take longer than DURATION (500ms,
    /// 10s, 5m), saying what was committed by then. Recommended in cron jobs.
    #[arg(short = 't', long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,

    /// Store each event in the database's outbox (the pgnotify schema, created on first use)
    /// in the same transaction, for `pipe --consumer` to read even if it is down now; the
    /// NOTIFY only wakes consumers. Payloads may then be up to 64 MiB, and every line of
    /// --lines is an event, repeated or not.
    #[arg(long)]
    pub(crate) durable: bool,
}

const WATCH_TABLE_EXAMPLES: &str = "\
Examples:
  pgnotify watch-table orders                  notify channel \"orders\" of every change, key only
  pgnotify pipe orders --fetch                 ... and read each changed row with your privileges
  pgnotify watch-table shop.orders --channel shop_events --events insert,delete
  pgnotify watch-table '\"My Schema\".\"Order Items\"' --rows --columns id,status
  pgnotify watch-table orders --print-sql      show the SQL, change nothing
  pgnotify watch-table orders --drop           remove the trigger and its function
  pgnotify watch-table --list                  every watched table in the database";

/// Install a trigger that notifies on a table's changes (or --drop it, or --list them).
///
/// Installs, in one transaction, a trigger function and an AFTER trigger on TABLE that send one
/// notification per changed row, and one per TRUNCATE, when the writing transaction commits (a
/// rolled-back write sends nothing). Each payload is a JSON object:
/// {"op":"UPDATE","schema":"public","table":"orders","key":{"id":42}}, where "key" holds the
/// primary-key columns (null for TRUNCATE), "old_key" is added when an UPDATE changed the key,
/// and --rows adds the row images "new" and "old". A payload that would reach PostgreSQL's 8000
/// bytes is sent as the key with "truncated":true: the write itself never fails.
///
/// By default events carry only the key, because any role that can connect can LISTEN on any
/// channel: receivers read the row with their own privileges (`pipe --fetch`). A table without
/// a primary key (or replica identity index) is refused unless --rows is given.
///
/// TABLE is written as in SQL and resolved by the server with your search_path. Installing
/// needs the TRIGGER privilege on the table and CREATE on its schema; dropping or replacing
/// needs ownership of the table and of the function (whoever installed it owns that).
/// Installing again replaces the watch with the new options, or changes nothing when they are
/// the same. The objects are named pgnotify_watch (row triggers; with --triggers auto on a
/// plain table with a key, pgnotify_watch_insert, _update and _delete, statement triggers with
/// transition tables), pgnotify_watch_truncate and SCHEMA.pgnotify_watch_TABLE(), and carry a
/// comment that --list and --drop recognise.
#[derive(Debug, Args)]
#[command(after_help = WATCH_TABLE_EXAMPLES)]
pub(crate) struct WatchTableArgs {
    /// The table, written as in SQL: orders, shop.orders, "My Schema"."Order Items".
    #[arg(value_name = "TABLE", required_unless_present = "list")]
    pub(crate) table: Option<String>,

    /// The channel to notify, exactly as written [default: the table's name, without schema].
    #[arg(long, value_name = "NAME")]
    pub(crate) channel: Option<String>,

    /// The changes that notify, comma-separated.
    #[arg(
        long,
        value_enum,
        value_name = "EVENTS",
        value_delimiter = ',',
        default_value = "insert,update,delete,truncate"
    )]
    pub(crate) events: Vec<OpArg>,

    /// Put the row images in the payload: "new" (INSERT, UPDATE) and "old" (UPDATE, DELETE).
    /// Every role that can connect can read them.
    #[arg(long)]
    pub(crate) rows: bool,

    /// With --rows: only these columns in the row images, comma-separated, exact names.
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',', requires = "rows")]
    pub(crate) columns: Option<Vec<String>>,

    /// Row triggers (one call of the trigger function per row), or auto: statement triggers
    /// with transition tables where they send the same events (one call per statement, far
    /// cheaper for bulk statements, dearer for single-row ones).
    #[arg(long, value_enum, value_name = "KIND", default_value = "row")]
    pub(crate) triggers: TriggersArg,

    /// Store each event in the database's outbox (the pgnotify schema, created on first use)
    /// in the writing transaction, for `pipe --consumer` to read even if it was down; the
    /// NOTIFY only wakes consumers. No 8000-byte limit: an event is never truncated. If the
    /// writer may not store it (see `pgnotify consumers --grant-writer`), the write fails
    /// rather than lose the event. Row triggers only.
    #[arg(long, conflicts_with_all = ["list", "drop"])]
    pub(crate) durable: bool,

    /// Print the SQL that would run (one transaction) and change nothing.
    #[arg(long, conflicts_with = "list")]
    pub(crate) print_sql: bool,

    /// Remove the trigger and function pgnotify installed on TABLE (nothing else).
    #[arg(long, conflicts_with_all = ["channel", "rows", "columns", "list"])]
    pub(crate) drop: bool,

    /// List the watched tables (all, or only TABLE) with channel, events and mode: a table on a
    /// terminal, NDJSON elsewhere.
    #[arg(long)]
    pub(crate) list: bool,

    /// With --list: NDJSON even on a terminal.
    #[arg(long, requires = "list")]
    pub(crate) json: bool,
}

const PIPE_EXAMPLES: &str = "\
Examples:
  pgnotify pipe jobs | while read -r event; do echo \"$event\"; done
  pgnotify pipe jobs --data | jq -c 'select(.payload) | .data'
  pgnotify pipe jobs orders --max-downtime 5m >> events.ndjson
  pgnotify pipe jobs --connect collector:7000         to a TCP peer, reconnecting
  pgnotify pipe jobs --serve 7000                     to every client of 127.0.0.1:7000
  pgnotify pipe jobs --sse 8080 --page                browsers: open http://127.0.0.1:8080/
  pgnotify pipe jobs --websocket 8081 --stdout        WebSocket clients, and stdout too";

/// Forward notifications as NDJSON, surviving lost connections.
///
/// Writes every notification on the CHANNELs as one NDJSON line to stdout, in order, flushed
/// as soon as nothing more is waiting: {"channel","payload","pid","received_at"}, and with
/// --data also "data", the payload parsed as JSON.
///
/// When the connection is lost, pipe reconnects (at once, then backing off up to 10 s),
/// LISTENs again, and then writes a gap record, a line without "payload":
/// {"gap":"reconnect","reason":...,"from":...,"until":...,"down_ms":...,"dropped":0}.
/// Notifications sent while it was disconnected are lost: LISTEN/NOTIFY keeps nothing for
/// absent listeners. A heartbeat notices a dead or hung connection within --heartbeat + 5 s.
///
/// The server is read on a thread of its own, so a slow reader of stdout never holds back the
/// server's notification queue; see --on-overflow.
///
/// --connect, --serve, --websocket and --sse may be combined (with --stdout too): every
/// output gets every line, from one PostgreSQL connection.
#[derive(Debug, Args)]
#[command(after_help = PIPE_EXAMPLES)]
#[command(group = clap::ArgGroup::new("network").multiple(true).args(["connect", "serve", "websocket", "sse"]))]
pub(crate) struct PipeArgs {
    /// Channels to forward, exactly as written.
    #[arg(required = true, value_name = "CHANNEL")]
    pub(crate) channels: Vec<String>,

    /// Add "data": the payload parsed as JSON, when it is JSON.
    #[arg(long)]
    pub(crate) data: bool,

    /// For `watch-table` events that carry a key but no row: read the row as it is now, with
    /// your own privileges, and add it as "new" under "data" (null when the row is gone since).
    /// Only tables watched on the event's channel are read, one query per table for all the
    /// events that arrived together. With --exec, the row (JSON) is the command's stdin, and
    /// PGNOTIFY_FETCHED=1 says so.
    #[arg(long)]
    pub(crate) fetch: bool,

    /// Send the lines to a TCP peer instead of stdout, reconnecting when it goes away; lines
    /// wait for it (4 MiB), then are dropped and counted in a gap record. A new connection
    /// starts with a "peer" gap record: an upper bound of what the lost one took unread.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "exec")]
    pub(crate) connect: Option<String>,

    /// Serve the lines to every TCP client that connects, from the moment it connects, instead
    /// of stdout. A port alone listens on 127.0.0.1; name another address to open it wider.
    /// A client that stops reading is disconnected (after 1 MiB).
    #[arg(long, value_name = "[ADDR:]PORT", conflicts_with_all = ["exec", "consumer"])]
    pub(crate) serve: Option<String>,

    /// With --connect, --serve, --websocket or --sse: write the lines to stdout as well.
    #[arg(long, requires = "network", conflicts_with_all = ["exec", "consumer"])]
    pub(crate) stdout: bool,

    #[command(flatten)]
    pub(crate) exec: ExecArgs,

    #[command(flatten)]
    pub(crate) wait: WaitArgs,

    #[command(flatten)]
    pub(crate) source: SourceArgs,

    #[command(flatten)]
    pub(crate) health: HealthArgs,

    #[command(flatten)]
    pub(crate) web: WebArgs,
}

const CONSUMERS_EXAMPLES: &str = "\
Examples:
  pgnotify notify --durable jobs '{\"id\":42}'       store an event, even with no consumer running
  pgnotify pipe --consumer worker jobs             every stored event not yet read, then live ones
  pgnotify consumers                             each consumer's place and lag
  pgnotify consumers --drop old-worker           stop keeping events for a consumer gone for good
  pgnotify consumers --grant-writer app          let the role app store durable events
  pgnotify consumers --install --print-sql       show the schema's DDL";

/// List durable consumers with their lag, or look after the outbox.
///
/// Durable delivery keeps events in tables of a `pgnotify` schema in this database:
/// `notify --durable` and `watch-table --durable` store them in the writer's own transaction,
/// and `pipe --consumer NAME` (or `listen --consumer NAME`) reads them, keeping its checkpoint
/// there too, so a consumer that was down, killed or cut off sees every event at least once.
///
/// Without an option, lists every consumer: its channels, the events stored after its
/// checkpoint (PENDING), the age of the oldest of them (LAG), and when it last ran; a table
/// on a terminal, NDJSON elsewhere. A consumer behind by more than --max-lag is stale: its
/// events are kept for it and hold back retention; each is named on stderr with the command
/// that drops it, and the exit status is 1.
///
/// Running consumers delete, in batches, the events that every consumer of their channel has
/// acknowledged; --prune does the same at once. Events of a channel no consumer follows are
/// kept for the first one that will.
///
/// The schema is created on first use by a role with CREATE on the database, or with
/// --install. Other roles need a grant: --grant-writer ROLE (USAGE on the schema, INSERT on
/// pgnotify.events) or --grant-consumer ROLE (SELECT and DELETE on pgnotify.events; SELECT,
/// INSERT and UPDATE on pgnotify.consumers). Nothing is granted to PUBLIC.
#[derive(Debug, Args)]
#[command(after_help = CONSUMERS_EXAMPLES)]
#[command(group = clap::ArgGroup::new("action").multiple(false))]
pub(crate) struct ConsumersArgs {
    /// Remove the consumer NAME: its checkpoint is deleted, and its unread events no longer
    /// hold back retention for the other consumers of their channels (a channel that no
    /// consumer follows any more keeps its events for the next one that will).
    #[arg(
        long,
        value_name = "NAME",
        group = "action",
        visible_alias = "drop-consumer"
    )]
    pub(crate) drop: Option<String>,

    /// Delete now the events that every consumer of their channel has acknowledged.
    #[arg(long, group = "action")]
    pub(crate) prune: bool,

    /// Create the pgnotify schema (what the first --durable or --consumer would do).
    #[arg(long, group = "action")]
    pub(crate) install: bool,

    /// Grant ROLE what a --durable sender needs.
    #[arg(long, value_name = "ROLE", group = "action")]
    pub(crate) grant_writer: Option<String>,

    /// Grant ROLE what a --consumer reader needs.
    #[arg(long, value_name = "ROLE", group = "action")]
    pub(crate) grant_consumer: Option<String>,

    /// With --install or a grant: print the SQL instead of running it.
    #[arg(long)]
    pub(crate) print_sql: bool,

    /// A consumer whose oldest unread event is older than this is stale.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub(crate) max_lag: Duration,

    /// NDJSON even on a terminal.
    #[arg(long)]
    pub(crate) json: bool,
}

const DOCTOR_EXAMPLES: &str = "\
Examples:
  pgnotify -d shop doctor                        why would notifications not arrive?
  pgnotify -d shop doctor orders jobs            ... and who listens on orders and jobs
  pgnotify doctor --json | jq '.checks[] | select(.status != \"ok\")'";

/// Explain why notifications would not arrive, with the fix for each problem.
///
/// Connects with the same options as every command and reports, one check a line, each ok,
/// warning or problem, and for each warning or problem its fix in one sentence: where each
/// connection setting came from (flag, -d connection string or URI, service file, PG*
/// variable, default) and where the password came from (PGPASSWORD, the password file, the
/// prompt or none; never the password itself); the server's version, the role (superuser or
/// not), the database and which server of a host list was reached; TLS and whether the
/// server's certificate was verified; whether this connection can LISTEN (a hot standby
/// cannot); whether a notification on a private channel comes back through it (a
/// transaction-pooling proxy, such as PgBouncer in pool_mode = transaction, breaks LISTEN: a
/// second connection holds a transaction so that such a proxy shows itself, by this session's
/// statements landing on different backends); how full the notification queue is
/// (pg_notification_queue_usage(): a warning from 50%, a problem from 90%); the sessions idle
/// in a transaction (pid, application, user, age), which hold a listener and the queue back;
/// idle_session_timeout and the TCP keepalives that cut an idle listener; each watched table
/// and its mode.
///
/// With CHANNEL (names as `listen` takes them, exactly as written): the sessions seen
/// listening there (PostgreSQL keeps no list of listeners: pg_stat_activity shows a session's
/// last statement only, and other roles' sessions only to a superuser or pg_read_all_stats),
/// and a test notification sent on it and confirmed back on doctor's own LISTEN. Real
/// listeners of CHANNEL receive it too; its payload is
/// {"pgnotify":"doctor","at":"<RFC 3339 time>","pid":<doctor's process id>}.
///
/// --json writes one JSON document on stdout: {"doctor":1, "status", "exit", "problems",
/// "warnings", "checks":[{"name", "subject"?, "status", "detail", "notes", "fix", "data"?}]}.
///
/// Exit status: 0 when no problem was found (warnings allowed), 1 when one was, 2 for a
/// malformed CHANNEL or option, 3 when the server cannot be reached (the settings and where
/// they came from are still reported on stdout, and the error is one line on stderr).
#[derive(Debug, Args)]
#[command(after_help = DOCTOR_EXAMPLES)]
pub(crate) struct DoctorArgs {
    /// Channels to check: who listens there, and a test notification (real listeners get it).
    #[arg(value_name = "CHANNEL")]
    pub(crate) channels: Vec<String>,

    /// One JSON document on stdout instead of the text report.
    #[arg(long)]
    pub(crate) json: bool,
}

const DEMO_EXAMPLES: &str = "\
Examples:
  pgnotify demo                        watch listen receive what notify sends, then clean up
  eval \"$(pgnotify demo --keep)\"       keep the server and point PG* variables at it
  eval \"$(pgnotify demo --keep --tls)\" ... over TLS, the server's certificate verified";

/// Run pgnotify against a private throwaway PostgreSQL, then remove it.
///
/// Starts a PostgreSQL server from this machine's server binaries in a new temporary
/// directory (as the postgres user when run as root), runs `pgnotify listen` and shows it
/// receiving what `pgnotify notify` sends; then creates a table, watches it with `pgnotify
/// watch-table`, writes rows from a second connection and shows `pgnotify pipe --fetch`
/// streaming the changes as JSON (and to a live page's stream, `--sse 0 --page`, which the
/// demo reads as a browser would); then durable delivery: a consumer reads a stored job and
/// stops, more jobs are stored meanwhile, and it catches up when it runs again. Then it stops
/// the server and removes the directory, also on Ctrl-C or an error. Needs the server binaries (Debian/Ubuntu: apt-get install
/// postgresql); it does not touch any other server.
#[derive(Debug, Args)]
#[command(after_help = DEMO_EXAMPLES)]
pub(crate) struct DemoArgs {
    /// Leave the server running and print its connection settings as shell `export` lines on
    /// stdout (the demo's own output then goes to stderr).
    #[arg(long)]
    pub(crate) keep: bool,

    /// Serve TLS too, with a certificate from a certificate authority made for the demo, and
    /// connect to it over TCP as `localhost` with sslmode=verify-full. With --keep, the
    /// settings printed do the same: PGHOST=localhost, PGSSLMODE=verify-full and PGSSLROOTCERT
    /// (the CA's certificate, in the server's directory).
    #[arg(long)]
    pub(crate) tls: bool,
}

/// Reads `500ms`, `10s`, `5m`, `1h`, `1h 30m`; zero and negative durations are refused.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration; write e.g. 500ms, 10s, 5m or 1h"))?;
    if d.is_zero() || d.is_negative() {
        return Err(format!("\"{s}\" must be longer than zero"));
    }
    Duration::try_from(d).map_err(|e| e.to_string())
}

/// Like [`parse_duration`], and `0` means off.
pub(crate) fn parse_interval(s: &str) -> Result<Interval, String> {
    if s.trim() == "0" {
        return Ok(Interval(None));
    }
    parse_duration(s).map(|d| Interval(Some(d)))
}

/// A port, or a comma list of ports for several hosts, each 1 to 65535.
fn parse_port_list(s: &str) -> Result<String, String> {
    for part in s.split(',') {
        match part.trim().parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("\"{part}\" is not a port number (1 to 65535)")),
        }
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_color_flag_is_found_before_parsing() {
        let argv = |args: &[&str]| -> Vec<std::ffi::OsString> {
            std::iter::once("pgnotify")
                .chain(args.iter().copied())
                .map(Into::into)
                .collect()
        };
        assert_eq!(color_in_argv(&argv(&["--help"])), ColorArg::Auto);
        assert_eq!(
            color_in_argv(&argv(&["--color", "never", "--help"])),
            ColorArg::Never
        );
        assert_eq!(
            color_in_argv(&argv(&["listen", "--help", "--color=always"])),
            ColorArg::Always
        );
        assert_eq!(
            color_in_argv(&argv(&["--color=never", "--color", "always"])),
            ColorArg::Always,
            "the last one wins, as clap has it"
        );
        assert_eq!(color_in_argv(&argv(&["--color", "bogus"])), ColorArg::Auto);
        assert_eq!(color_in_argv(&argv(&["--color"])), ColorArg::Auto);
        assert_eq!(
            color_in_argv(&argv(&["notify", "c", "--", "--color=never"])),
            ColorArg::Auto,
            "after --, it is a payload"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn connection_options_work_after_the_command() {
        let cli = Cli::try_parse_from([
            "pgnotify", "listen", "a", "-h", "db", "-p", "6000", "-U", "u",
        ])
        .unwrap();
        assert_eq!(cli.conn.host.as_deref(), Some("db"));
        assert_eq!(cli.conn.port.as_deref(), Some("6000"));
        assert_eq!(cli.conn.username.as_deref(), Some("u"));
        assert!(Cli::try_parse_from(["pgnotify", "-p", "0", "listen", "a"]).is_err());
        assert!(Cli::try_parse_from(["pgnotify", "-w", "-W", "listen", "a"]).is_err());
    }
}
