//! `demo`: show `listen` receiving what `notify` sends, then `watch-table` and `pipe --fetch`
//! turning a table's changes into JSON events, then a durable consumer stopped, events stored
//! meanwhile, and the consumer catching up, against a private throwaway server; then remove
//! the server (also on Ctrl-C or an error, through `tempdb::Cluster`'s cleanup).
//!
//! The demo runs this very binary as child processes, with the command lines it prints, so what
//! a newcomer sees is what they would type. The children also get bounds the newcomer needs
//! not type: `--timeout`, `--max-downtime`, and `-v` for their readiness lines.
//!
//! With `--tls` the server serves TLS with a certificate from a CA of its own, and every
//! client the demo shows (pgnotify, psql) connects over TCP to `localhost` with libpq's
//! `sslmode=verify-full` and the CA as `sslrootcert`, as the `--keep` settings then say too.

use crate::config::DemoSettings;
use crate::exit::{Exit, StdoutError};
use crate::signals;
use crate::tempdb::{self, Cluster};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The notifications the demo sends: the shell line shown, the arguments, standard input, and
/// how many notifications that sends.
const STEPS: &[(&str, &[&str], &str, usize)] = &[
    (
        "pgnotify notify demo 'hello from pgnotify'",
        &["notify", "demo", "hello from pgnotify"],
        "",
        1,
    ),
    (
        "echo '{\"order\": 42, \"status\": \"paid\"}' | pgnotify notify demo -",
        &["notify", "demo", "-"],
        "{\"order\": 42, \"status\": \"paid\"}\n",
        1,
    ),
    (
        "printf 'first line\\nsecond line\\n' | pgnotify notify demo --lines",
        &["notify", "demo", "--lines"],
        "first line\nsecond line\n",
        2,
    ),
];

/// The table the second part watches, and the writes it makes from a second connection.
const TABLE_SQL: &str = "CREATE TABLE orders (id int PRIMARY KEY, item text, status text)";
const WRITES: &[&str] = &[
    "INSERT INTO orders VALUES (1, 'tea', 'new'), (2, 'cake', 'new')",
    "UPDATE orders SET status = 'paid' WHERE id = 1",
    "DELETE FROM orders WHERE id = 2",
];
/// How long the demo's listener and pipe outlive their server: when the demo is killed, its
/// guardian removes the server, and the orphaned children must not retry for long.
const ORPHAN_DOWNTIME: &str = "5s";
/// The host name clients use over TLS: the name in the server's certificate, which
/// verify-full checks.
const TLS_HOST: &str = "localhost";
/// How many events the writes make: one per row changed.
const WRITE_EVENTS: usize = 4;

/// Events the demo waits on: its listener's stderr lines, their end, and signals.
enum DemoEvent {
    ListenerSaid(String),
    /// The stderr of the listener with this process id has ended: it has exited, after
    /// every line it said.
    ListenerDone(u32),
    Stop(i32),
}

pub(crate) fn run(settings: DemoSettings) -> Result<Exit> {
    let (tx, rx) = mpsc::channel();
    let signals = tx.clone();
    signals::deliver_to(move |signal| signals.send(DemoEvent::Stop(signal)).is_ok());
    say("starting a throwaway PostgreSQL server...");
    let cluster = Cluster::start(&tempdb::Options {
        tls: settings.tls,
        ..Default::default()
    })?;
    say(&format!(
        "the server runs in {} (socket there, TCP 127.0.0.1:{}), as user \"{}\"",
        cluster.root().display(),
        cluster.port(),
        tempdb::SUPERUSER
    ));
    if let Some(ca) = cluster.ca() {
        say(&format!(
            "it serves TLS; clients connect to localhost and verify its certificate against {}",
            ca.cert_path().display()
        ));
    }
    let outcome = show(&cluster, &settings, tx, &rx);
    match (settings.keep, outcome) {
        (true, Ok(Exit::Success)) => print_settings(cluster),
        (_, outcome) => {
            drop(cluster);
            say("stopped the server and removed its directory");
            if matches!(outcome, Ok(Exit::Success)) {
                say(
                    "next, the console on a server that stays: eval \"$(pgnotify demo --keep)\" \
                     then pgnotify listen -i jobs",
                );
            }
            outcome
        }
    }
}

/// Starts the listener, sends the notifications, and waits for the listener to exit.
fn show(
    cluster: &Cluster,
    settings: &DemoSettings,
    tx: mpsc::Sender<DemoEvent>,
    rx: &Receiver<DemoEvent>,
) -> Result<Exit> {
    let psql = cluster.bin_dir().join("psql");
    let count = STEPS.iter().map(|s| s.3).sum::<usize>() + usize::from(psql.is_file());
    let count_text = count.to_string();
    say(&format!("$ pgnotify listen demo --count {count} &"));
    let listen = [
        "listen",
        "demo",
        "--count",
        &count_text,
        "--timeout",
        "30s",
        "--max-downtime",
        ORPHAN_DOWNTIME,
    ];
    let mut listener = match start_receiver(cluster, &listen, settings.keep, tx.clone(), rx)? {
        Ok((listener, _)) => listener,
        Err(exit) => return Ok(exit),
    };
    if let Some(pause) = settings.pause
        && let Ok(DemoEvent::Stop(signal)) = rx.recv_timeout(pause)
    {
        return stop(&mut listener, signal);
    }
    for (shown, args, input, _) in STEPS {
        say(&format!("$ {shown}"));
        send(cluster, args, input)?;
    }
    if psql.is_file() {
        say("$ psql -c \"NOTIFY demo, 'psql works too'\"");
        notify_with_psql(cluster, &psql)?;
    }
    match wait_listener(&mut listener, rx)? {
        Exit::Success => show_table(cluster, settings, tx, rx),
        other => Ok(other),
    }
}

/// The main job: a table's changes as JSON events, streamed by `pipe --fetch`.
fn show_table(
    cluster: &Cluster,
    settings: &DemoSettings,
    tx: mpsc::Sender<DemoEvent>,
    rx: &Receiver<DemoEvent>,
) -> Result<Exit> {
    say("now a table: every committed change becomes one JSON event");
    let mut db = postgres::Client::connect(&cluster.conninfo(), postgres::NoTls)
        .context("could not connect to the demo server")?;
    say(&format!("SQL> {TABLE_SQL}"));
    db.batch_execute(TABLE_SQL)?;
    say("$ pgnotify watch-table orders");
    send(cluster, &["watch-table", "orders"], "")?;
    let count = WRITE_EVENTS.to_string();
    say(&format!(
        "$ pgnotify pipe orders --fetch --count {count} --stdout --sse 0 --page &"
    ));
    let args = [
        "pipe",
        "orders",
        "--fetch",
        "--count",
        &count,
        "--stdout",
        "--sse",
        "0",
        "--page",
        "--timeout",
        "30s",
        "--max-downtime",
        ORPHAN_DOWNTIME,
    ];
    let (mut pipe, said) = match start_receiver(cluster, &args, settings.keep, tx, rx)? {
        Ok(started) => started,
        Err(exit) => return Ok(exit),
    };
    // The page's stream, read as a browser's EventSource reads it.
    let address = said
        .iter()
        .find_map(|l| l.split("serving SSE on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .context("the pipe did not say where it serves SSE")?
        .to_string();
    let page = read_events(&address)?;
    say("writes from a second connection:");
    for write in WRITES {
        say(&format!("SQL> {write}"));
        db.batch_execute(write)?;
        // Time to read each event's row before the next write changes it: --fetch reads the
        // row as it is at that moment.
        std::thread::sleep(Duration::from_millis(300));
    }
    let exit = wait_listener(&mut pipe, rx)?;
    if exit != Exit::Success {
        return Ok(exit);
    }
    let got = page
        .join()
        .map_err(|_| anyhow::anyhow!("the demo's SSE client failed"))??;
    if got != WRITE_EVENTS {
        bail!("the page's stream carried {got} of the {WRITE_EVENTS} events");
    }
    say(&format!(
        "the page at http://{address}/ had the same {got} events, live over SSE; to watch \
         them in a browser: pgnotify pipe orders --fetch --sse 8080 --page, then open \
         http://127.0.0.1:8080/"
    ));
    say("$ pgnotify watch-table orders --drop");
    send(cluster, &["watch-table", "orders", "--drop"], "")?;
    show_durable(cluster, settings.keep, rx)
}

/// The durable steps: the shell line shown, the arguments, and standard input.
const DURABLE_STEPS: &[(&str, &[&str], &str)] = &[
    (
        "pgnotify notify --durable jobs 'job 1'",
        &["notify", "--durable", "jobs", "job 1"],
        "",
    ),
    (
        "pgnotify pipe --consumer worker jobs --count 1",
        &["pipe", "--consumer", "worker", "jobs", "--count", "1"],
        "",
    ),
    (
        "printf 'job 2\\njob 3\\n' | pgnotify notify --durable --lines jobs",
        &["notify", "--durable", "--lines", "jobs"],
        "job 2\njob 3\n",
    ),
    (
        "pgnotify pipe --consumer worker jobs --count 2",
        &["pipe", "--consumer", "worker", "jobs", "--count", "2"],
        "",
    ),
];

/// Durable delivery: a consumer reads, stops, misses nothing written while it was down, and
/// catches up when it runs again.
fn show_durable(cluster: &Cluster, keep: bool, rx: &Receiver<DemoEvent>) -> Result<Exit> {
    say("durable delivery: events kept in the database until each consumer has read them");
    for (i, (shown, args, input)) in DURABLE_STEPS.iter().enumerate() {
        if let Ok(DemoEvent::Stop(signal)) = rx.try_recv() {
            return Ok(Exit::for_signal(signal));
        }
        match i {
            2 => say("the consumer is down now; events written meanwhile wait for it:"),
            3 => say("the consumer runs again and catches up, from where it stopped:"),
            _ => {}
        }
        say(&format!("$ {shown}"));
        // Bounded, as the demo's other children are: a newcomer need not type it.
        let args = [*args, &["--timeout", "30s"]].concat();
        run_to_end(cluster, &args, input, listener_stdout(keep)?)?;
    }
    say("$ pgnotify consumers");
    let listed = pgnotify(cluster)
        .arg("consumers")
        .stdin(Stdio::null())
        .output()
        .context("could not run pgnotify consumers")?;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        say(line);
    }
    Ok(Exit::Success)
}

/// Connects to the SSE stream at `address` as EventSource does, and counts, on a thread of
/// its own, the events that are not gap records until the stream ends.
fn read_events(address: &str) -> Result<std::thread::JoinHandle<Result<usize>>> {
    let mut stream = std::net::TcpStream::connect(address)
        .with_context(|| format!("could not connect to the page's stream at {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(40)))?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200 ") {
        bail!("the page's stream answered {}", status.trim_end());
    }
    Ok(std::thread::spawn(move || {
        let mut events = 0;
        let mut gap = false;
        for line in reader.lines() {
            let line = line?;
            gap = match line.strip_prefix("event: ") {
                Some(name) => name == "gap",
                None => gap,
            };
            if line.starts_with("data: ") && !gap {
                events += 1;
            }
            if line.is_empty() {
                gap = false;
            }
        }
        Ok(events)
    }))
}

/// Starts `pgnotify -v ARGS` (listen or pipe), shows its stderr, and waits until it listens;
/// with what it said until then. `Err(exit)`: a signal stopped the demo first.
fn start_receiver(
    cluster: &Cluster,
    args: &[&str],
    keep: bool,
    tx: mpsc::Sender<DemoEvent>,
    rx: &Receiver<DemoEvent>,
) -> Result<Result<(Child, Vec<String>), Exit>> {
    let mut child = pgnotify(cluster)
        .arg("-v")
        .args(args)
        .stdout(listener_stdout(keep)?)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start pgnotify {}", args[0]))?;
    forward_lines(&mut child, tx);
    let started = Instant::now();
    let mut said = Vec::new();
    loop {
        match wait_event(rx, started + Duration::from_secs(20))? {
            DemoEvent::ListenerSaid(line) => {
                show_line(&line);
                if line.contains("listening on") {
                    return Ok(Ok((child, said)));
                }
                said.push(line);
            }
            DemoEvent::ListenerDone(id) if id == child.id() => {
                let status = child.wait()?;
                bail!(
                    "`pgnotify {}` exited with {status} before listening",
                    args[0]
                );
            }
            // An earlier listener's: it has been waited for.
            DemoEvent::ListenerDone(_) => {}
            DemoEvent::Stop(signal) => return stop(&mut child, signal).map(Err),
        }
    }
}

fn wait_listener(listener: &mut Child, rx: &Receiver<DemoEvent>) -> Result<Exit> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = listener.try_wait()? {
            if status.success() {
                say("it received every notification and exited with status 0");
                return Ok(Exit::Success);
            }
            bail!("the listener exited with {status}");
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(DemoEvent::ListenerSaid(line)) => show_line(&line),
            Ok(DemoEvent::ListenerDone(_)) => {}
            Ok(DemoEvent::Stop(signal)) => return stop(listener, signal),
            Err(_) if Instant::now() > deadline => bail!("the listener did not finish in time"),
            Err(_) => {}
        }
    }
}

fn wait_event(rx: &Receiver<DemoEvent>, deadline: Instant) -> Result<DemoEvent> {
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(event) => Ok(event),
        Err(RecvTimeoutError::Timeout) => bail!("the listener did not start listening in time"),
        Err(RecvTimeoutError::Disconnected) => bail!("the listener stopped before listening"),
    }
}

fn stop(listener: &mut Child, signal: i32) -> Result<Exit> {
    let _ = listener.kill();
    let _ = listener.wait();
    Ok(Exit::for_signal(signal))
}

/// This binary, with the connection options of the throwaway server: its socket, or over
/// TLS `localhost` verified in full, given as libpq's variables (pgnotify has no flags for them).
fn pgnotify(cluster: &Cluster) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| "pgnotify".into());
    let mut cmd = Command::new(exe);
    tempdb::without_pg_env(&mut cmd);
    match cluster.ca() {
        Some(ca) => cmd
            .args(["-h", TLS_HOST])
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", ca.cert_path()),
        None => cmd.arg("-h").arg(cluster.socket_dir()),
    }
    .args([
        "-p",
        &cluster.port().to_string(),
        "-U",
        tempdb::SUPERUSER,
        "-d",
        "postgres",
    ]);
    cmd
}

fn send(cluster: &Cluster, args: &[&str], input: &str) -> Result<()> {
    run_to_end(cluster, args, input, Stdio::inherit())
}

/// Runs `pgnotify ARGS` to its end with `input` on its stdin and `stdout` as its stdout.
fn run_to_end(cluster: &Cluster, args: &[&str], input: &str, stdout: Stdio) -> Result<()> {
    let mut child = pgnotify(cluster)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .spawn()
        .with_context(|| format!("could not run pgnotify {}", args[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("could not write to pgnotify {}", args[0]))?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`pgnotify {}` exited with {status}", args.join(" "));
    }
    Ok(())
}

/// psql on the same server: pgnotify and psql see the same channels.
fn notify_with_psql(cluster: &Cluster, psql: &std::path::Path) -> Result<()> {
    let status = Command::new(psql)
        .env_clear()
        .arg("-X")
        .arg("-q")
        .arg("-d")
        .arg(cluster.tls_conninfo().unwrap_or_else(|| cluster.conninfo()))
        .args(["-c", "NOTIFY demo, 'psql works too'"])
        .stdin(Stdio::null())
        .status()
        .context("could not run psql")?;
    if !status.success() {
        bail!("psql exited with {status}");
    }
    Ok(())
}

/// With --keep, stdout is for the settings only: the listener's output goes to stderr.
fn listener_stdout(keep: bool) -> Result<Stdio> {
    if keep {
        let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
        return Ok(Stdio::from(stderr));
    }
    Ok(Stdio::inherit())
}

fn forward_lines(child: &mut Child, tx: mpsc::Sender<DemoEvent>) {
    let id = child.id();
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(DemoEvent::ListenerSaid(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(DemoEvent::ListenerDone(id));
        });
    }
}

/// Prints the settings of the server it keeps. Only once they are written is the server kept:
/// when stdout's reader has gone, nobody could find it, so it is removed as without `--keep`.
fn print_settings(cluster: Cluster) -> Result<Exit> {
    let (host, tls) = match cluster.ca() {
        Some(ca) => (
            TLS_HOST.to_owned(),
            format!(
                " PGSSLMODE='verify-full' PGSSLROOTCERT='{}'",
                ca.cert_path().display()
            ),
        ),
        None => (cluster.socket_dir().display().to_string(), String::new()),
    };
    let text = format!(
        "export PGHOST='{host}' PGPORT='{}' PGUSER='{}' PGDATABASE='postgres'{tls}\n\
         # then try the console: pgnotify listen -i jobs   and type: notify jobs hello (help lists the rest)\n\
         # or, in two shells: pgnotify listen jobs   and: pgnotify notify jobs hello\n\
         # stop and remove the server: {}\n",
        cluster.port(),
        tempdb::SUPERUSER,
        cluster.stop_command()
    );
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(StdoutError)?;
    cluster.keep();
    say("the server keeps running; its settings are on stdout");
    Ok(Exit::Success)
}

fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "pgnotify demo: {text}");
}

/// A line the listener wrote on its stderr, shown indented, without the time it begins with
/// (a long-running command's log line; the demo is a show, whose lines follow one another).
/// Like every message, it never fails the demo: `eprintln!` would panic when stderr's reader
/// has gone.
fn show_line(line: &str) {
    let line = match line.split_once(' ') {
        Some((time, rest)) if time.parse::<jiff::Timestamp>().is_ok() => rest,
        _ => line,
    };
    let _ = writeln!(std::io::stderr(), "  {line}");
}
