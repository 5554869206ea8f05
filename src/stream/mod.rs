//! The listen/pipe engine. Data flows one way: the source thread reads the server into the
//! bounded queue; the loop takes what is queued, adds `--fetch` rows, and hands each
//! notification to a sink, which encodes it (`format`) and writes it out.
//!
//! ```text
//!  server ──► source (thread) ──► Queue ──► forward (main thread) ──► Sink
//!             heartbeat, reconnect,   ▲       --count, --timeout,       stdout, --exec,
//!             gap records            │       --fetch                   --connect, --serve,
//!             signals, stdout watch ─┘                                 --websocket, --sse
//! ```
//!
//! With `--consumer`, `replay` is the source: it reads the durable outbox instead of
//! listening, and stores as the consumer's checkpoint what the sink (or the loop, after each
//! flush) marks delivered.
//!
//! Owns: LISTEN, reading, liveness, reconnects, the bounded queue and its overflow policy,
//! stopping (count, timeout, signal, reader gone). Does not own: encodings or destinations.

mod control;
mod fetch;
mod forward;
mod heartbeat;
mod queue;
mod replay;
mod source;
mod stdout_watch;

pub(crate) use crate::sink::WebSettings;
pub(crate) use control::{Ask, Control, Reply, names_of};
pub(crate) use forward::Until;
pub(crate) use queue::Overflow;
pub(crate) use source::{SourceSettings, case_hint};

use crate::exit::{Exit, UsageError};
use crate::format::Encoder;
use crate::pg::{self, ConnSettings};
use crate::sink::{self, Sink};
use crate::{signals, stats};
use anyhow::{Context, Result};
use fetch::Fetcher;
use queue::{Event, Queue};
use std::sync::Arc;

/// The memory notifications may take while they wait for the output and are written
/// ([`queue::cost`]): small, so that a burst into a reader that keeps up costs little more
/// than idle, and a reader's pause is still met by a full second's grace before a drop.
const QUEUE_BYTES: usize = 1 << 20;

/// Where a stream writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    Stdout,
    /// `--connect HOST:PORT`
    Connect(String),
    /// `--serve [ADDR:]PORT`
    Serve(String),
    /// `--websocket`, `--sse`: web clients.
    Web(Box<sink::WebSettings>),
    /// Several of the others at once, each getting every line.
    Many(Vec<Destination>),
    /// `--exec COMMAND --jobs N`
    Exec {
        command: String,
        jobs: usize,
        /// Run it for gaps too.
        gaps: bool,
    },
}

/// `--stats` and `--metrics`: how the run reports its counters (`stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Health {
    /// `--stats INTERVAL`: a line on stderr every INTERVAL, and one at the end.
    pub(crate) stats: Option<std::time::Duration>,
    /// `--metrics [ADDR:]PORT`: the Prometheus endpoint.
    pub(crate) metrics: Option<String>,
}

/// Everything `listen` and `pipe` need besides the connection.
pub(crate) struct StreamSettings {
    pub(crate) source: SourceSettings,
    pub(crate) until: Until,
    pub(crate) encoder: Encoder,
    pub(crate) overflow: Overflow,
    pub(crate) destination: Destination,
    /// `--fetch`: read the rows of `watch-table` events.
    pub(crate) fetch: bool,
    /// `--consumer NAME`: read the outbox as this consumer instead of listening.
    pub(crate) consumer: Option<String>,
    pub(crate) health: Health,
}

/// Runs `listen` or `pipe` to its end.
pub(crate) fn run(conn: &ConnSettings, settings: StreamSettings) -> Result<Exit> {
    let destination = settings.destination;
    let encoder = settings.encoder;
    // Main only writes what arrives (and counts it): the source may write it itself while main
    // is idle (see sink::Express), but not what waits for --fetch's rows.
    // Nor what a consumer acknowledges after main's flush.
    let consumer = settings.consumer.is_some();
    let express = destination == Destination::Stdout && !settings.fetch && !consumer;
    let started = start(
        conn,
        settings.source,
        settings.consumer,
        settings.until,
        settings.overflow,
        &settings.health,
        |queue| {
            if let Some(lane) = express
                .then(|| sink::Express::open(encoder.twin()))
                .flatten()
            {
                queue.open_express_lane(lane);
            }
            open_sink(&destination, encoder, queue, consumer)
        },
    )?;
    started.run(settings.fetch)
}

/// The console's stream: its sink prints above the prompt, and the console changes the
/// source through [`Started::control`]. It has no `--count` or `--timeout`.
pub(crate) fn start_console(
    conn: &ConnSettings,
    source: SourceSettings,
    overflow: Overflow,
    health: &Health,
    out: Box<dyn Sink>,
) -> Result<Started> {
    start(
        conn,
        source,
        None,
        Until::default(),
        overflow,
        health,
        |_| Ok(out),
    )
}

/// A stream that listens (or, with `--wait`, tries to), whose loop has not begun.
pub(crate) struct Started {
    conn: ConnSettings,
    queue: Arc<Queue>,
    out: Box<dyn Sink>,
    control: Arc<Control>,
    listening_on: source::ListeningOn,
    counter: forward::Counter,
    /// With `--consumer`: what was written, for the reader to acknowledge.
    acks: Option<Arc<replay::Acks>>,
    /// `--stats`: the counters are printed once more at the end.
    final_stats: bool,
}

/// Starts what reports the counters: SIGUSR1 prints them, `--metrics` serves them (its port
/// taken before connecting, so that one in use fails at once), `--stats` prints them.
fn report_health(health: &Health) -> Result<()> {
    signals::on_usr1(|| stats::print("stats"));
    if let Some(spec) = &health.metrics {
        sink::serve_metrics(spec)?;
    }
    if let Some(every) = health.stats {
        stats::print_every(every).context("could not start the stats thread")?;
    }
    Ok(())
}

fn start(
    conn: &ConnSettings,
    source: SourceSettings,
    consumer: Option<String>,
    until: Until,
    overflow: Overflow,
    health: &Health,
    out: impl FnOnce(&Arc<Queue>) -> Result<Box<dyn Sink>>,
) -> Result<Started> {
    for channel in &source.channels {
        pg::check_channel(channel)?;
    }
    report_health(health)?;
    if conn.get("target_session_attrs") == Some("standby") {
        return Err(UsageError(
            "target_session_attrs=standby cannot be used to listen: a standby cannot run \
             LISTEN; use primary (or leave it out)"
                .into(),
        )
        .into());
    }
    // -W asks first, as psql does and notify --timeout does: typing is not connecting.
    pg::ask_password_first(conn)?;
    // --timeout counts from the start: connecting must not outlast it.
    let mut counter = forward::Counter::new(until);
    let conn = match until.timeout {
        Some(t) => conn.bounded_by(t),
        None => conn.clone(),
    };
    let queue = Queue::new(QUEUE_BYTES, overflow);
    let mut out = out(&queue)?;
    let listening_on = source::ListeningOn::default();
    let control = Control::new(source.channels.clone(), Arc::clone(&queue));
    let mut acks = None;
    let source_notifier = source.notifier.clone();
    match consumer {
        Some(name) => {
            let shared = Arc::new(replay::Acks::default());
            counter = counter.consuming();
            if !out.acknowledges(&shared.mark()) {
                counter = counter.acknowledging(shared.mark());
            }
            replay::start(
                &conn,
                source,
                name,
                Arc::clone(&queue),
                Arc::clone(&shared),
                Arc::clone(&listening_on),
            )?;
            acks = Some(shared);
        }
        None => source::start(
            &conn,
            source,
            Arc::clone(&queue),
            Arc::clone(&listening_on),
            Arc::clone(&control),
        )?,
    }
    let signals = Arc::clone(&queue);
    let notifier = source_notifier;
    // A consumer stops at once even while its output does not read: the sink gives up at a
    // line boundary (nothing unflushed is acknowledged).
    let stop = acks.is_some().then(|| queue.stop_writing());
    signals::deliver_to(move |signal| {
        notifier.stopping();
        if let Some(stop) = &stop {
            let _ = stop.set(format!("stopped by signal {signal}"));
        }
        signals.push(Event::Signal(signal));
        true
    });
    Ok(Started {
        conn,
        queue,
        out,
        control,
        listening_on,
        counter,
        acks,
        final_stats: health.stats.is_some(),
    })
}

impl Started {
    /// What changes the running stream: its channels, notifications on its connection, quit.
    pub(crate) fn control(&self) -> Arc<Control> {
        Arc::clone(&self.control)
    }

    /// Runs the loop to the end of the run.
    pub(crate) fn run(self, fetch: bool) -> Result<Exit> {
        let Started {
            conn,
            queue,
            mut out,
            listening_on,
            counter,
            acks,
            final_stats,
            ..
        } = self;
        let mut fetcher =
            fetch.then(|| Fetcher::new(&conn.without_deadline().without_prompt(), listening_on));
        let outcome = forward::run(&queue, out.as_mut(), counter, fetcher.as_mut());
        // Also after a failure: TCP backlogs get their chance, --exec children are reaped.
        let finished = out.finish();
        if let Some(acks) = acks {
            // What was flushed is acknowledged; what is still queued is read again next time.
            acks.close(&queue);
        }
        if final_stats {
            stats::print("final stats");
        }
        outcome.and_then(|exit| finished.map(|()| exit))
    }
}

fn open_sink(
    destination: &Destination,
    encoder: Encoder,
    queue: &Arc<Queue>,
    consumer: bool,
) -> Result<Box<dyn Sink>> {
    Ok(match destination {
        // A consumer's peer is written by the loop itself, and acknowledges what it read.
        Destination::Connect(address) if consumer => {
            Box::new(sink::AckedPeer::connect(address, encoder)?)
        }
        Destination::Stdout => {
            stdout_watch::start(Arc::clone(queue));
            Box::new(sink::Stdout::new(encoder, queue.stop_writing()))
        }
        Destination::Connect(address) => Box::new(sink::Peer::connect(address, encoder)?),
        Destination::Serve(spec) => Box::new(sink::Server::serve(spec, encoder)?),
        Destination::Web(settings) => Box::new(sink::Web::start(settings, encoder)?),
        Destination::Many(parts) => Box::new(sink::Tee(
            parts
                .iter()
                .map(|part| open_sink(part, encoder.twin(), queue, consumer))
                .collect::<Result<_>>()?,
        )),
        Destination::Exec {
            command,
            jobs,
            gaps,
        } => Box::new(sink::Exec::start(command, *jobs, *gaps)?),
    })
}
