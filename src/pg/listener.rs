//! The listening connection: a `tokio-postgres` connection driven here, one message at a time,
//! so nothing is read from the server faster than the source hands it on.
//!
//! The `postgres` crate's client reads the socket until a query's answer arrives and keeps every
//! notification sent before it, however many: a heartbeat behind a 560 MB backlog held 560 MB.
//! Here a query is only put in flight, and [`Listener::read`] returns each batch of
//! notifications as it arrives, the answer among them when it comes. While the caller does not
//! read, nothing is read: the server waits (TCP flow control), and memory stays bounded by one
//! batch.
//!
//! The runtime is the same single-threaded `tokio` runtime the `postgres` crate runs inside
//! every synchronous client: it is driven only from the thread that calls `read`, and is never
//! shared.

use super::connect::{Open, SESSION_QUERY, Session, session_of, warn_notice};
use super::describe_pg_error;
use super::tls::{Tls, TlsStream};
use super::wire::{self, Filtered, ListeningTls, Wire};
use postgres::types::Type;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Config, Notification, SimpleQueryMessage};

/// The most notifications one read returns.
const MAX_BATCH: usize = 1024;
/// The most bytes of channel names and payloads one read returns (once reached).
const MAX_BATCH_BYTES: usize = 256 << 10;

/// How long a notification sent on the listening connection waits for the lock that commits
/// with notifications take one at a time (a commit of many notifications, or one waiting for a
/// synchronous standby, holds it): within the heartbeat's 5 s.
pub(crate) const NOTIFY_LOCK_WAIT: Duration = Duration::from_secs(2);

/// `pg_notify` in a transaction of its own settings: `SET LOCAL`'s, so they end with it. A
/// notification is not made durable by a standby, and a commit that waits for one holds the
/// lock every other notifying commit waits for.
const NOTIFY_BOUNDED: &str = "SELECT pg_catalog.set_config('lock_timeout', $3, true), \
     pg_catalog.set_config('synchronous_commit', 'local', true), \
     pg_catalog.pg_notify($1, $2)";

/// Whether a query failed because it waited its `lock_timeout` out (SQLSTATE 55P03): the
/// backend is alive and answered, but another transaction held the lock.
pub(crate) fn waited_for_lock(e: &postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// What a query in flight ends with.
pub(crate) type Answer = Result<Vec<SimpleQueryMessage>, postgres::Error>;

type InFlight = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A connection that is read only when asked to.
pub(crate) struct Listener {
    client: Arc<Client>,
    connection:
        tokio_postgres::Connection<Filtered<wire::Socket>, Filtered<TlsStream<wire::Socket>>>,
    /// What the connection's filter found (`wire`): the exact bytes of notifications that
    /// were not UTF-8.
    wire: Arc<Wire>,
    /// Notifications received so far: the next one's ordinal.
    received: u64,
    query: Option<InFlight>,
    /// Why the connection ended, once it has.
    ended: Option<String>,
    /// Ends a [`Listener::read`] early (another thread has a query for this connection).
    wake: Wake,
    // Dropped last: the connection's socket is registered with it.
    runtime: tokio::runtime::Runtime,
}

/// Wakes a [`Listener::read`] from another thread: the read returns at once (with what has
/// arrived, possibly nothing). A wake while no read is waiting ends the next read.
#[derive(Clone, Default)]
pub(crate) struct Wake(Arc<tokio::sync::Notify>);

impl Wake {
    pub(crate) fn wake(&self) {
        self.0.notify_one();
    }
}

/// What one [`Listener::read`] brought.
#[derive(Default)]
pub(crate) struct Read {
    /// Notifications in the order the server sent them.
    pub(crate) notifications: Vec<Received>,
    /// The answer to the query in flight, when it came with this read. Every notification the
    /// server sent before it is in `notifications` or in an earlier read.
    pub(crate) answer: Option<Answer>,
    /// Why the connection ended, when it did (what arrived before is still returned).
    pub(crate) ended: Option<String>,
}

/// One notification as the server sent it.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) pid: i32,
    /// The channel (not UTF-8: with U+FFFD for each invalid sequence).
    pub(crate) channel: String,
    /// The payload (not UTF-8: with U+FFFD for each invalid sequence, and `exact` set).
    pub(crate) payload: String,
    /// The payload's exact bytes, when they are not UTF-8 (from a SQL_ASCII database).
    pub(crate) exact: Option<Vec<u8>>,
}

impl Open for Listener {
    const LISTENS: bool = true;

    fn open(config: Config, mut tls: Tls) -> Result<Result<Listener, postgres::Error>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::sanitize::strip_os_error(&e.to_string()))?;
        let wire = Arc::new(Wire::default());
        let host = config.get_hosts().first().map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(_) => String::new(),
        });
        let tls = ListeningTls {
            handshake: tls
                .make_tls_connect(host.as_deref().unwrap_or(""))
                .map_err(|e| super::tls::reasons(&e))?,
            has_hostname: host.is_some(),
        };
        let opened = runtime.block_on(async {
            let socket = wire::open(&config).await;
            config
                .connect_raw(Filtered::new(socket, Arc::clone(&wire)), tls)
                .await
        });
        Ok(opened.map(|(client, connection)| Listener {
            client: Arc::new(client),
            connection,
            wire,
            received: 0,
            query: None,
            ended: None,
            wake: Wake::default(),
            runtime,
        }))
    }

    /// On a SQL_ASCII database: `client_encoding` SQL_ASCII, so that the server sends every
    /// payload's bytes as they are (a session in UTF-8 would end at the first that is not),
    /// and the filter looks into notifications (`wire`).
    fn prepare(&mut self) -> Result<(), String> {
        if self.connection.parameter("server_encoding") != Some("SQL_ASCII") {
            return Ok(());
        }
        self.wire.inspect();
        self.ask("SET client_encoding TO 'SQL_ASCII'")
            .map(drop)
            .map_err(|why| format!("could not set client_encoding for a SQL_ASCII database: {why}"))
    }

    /// From what the server reported at start-up (PostgreSQL 14 and later), else by asking.
    fn session(&mut self) -> Result<Session, String> {
        let on = |name: &str| self.connection.parameter(name).map(|v| v == "on");
        if let (Some(hot_standby), Some(read_only)) =
            (on("in_hot_standby"), on("default_transaction_read_only"))
        {
            return Ok(Session {
                hot_standby,
                read_only: read_only || hot_standby,
            });
        }
        self.ask(SESSION_QUERY)
            .map(|a| session_of(&a))
            .map_err(|why| match why {
                Asked::TimedOut => {
                    "the server did not say whether it is a standby within 30 s".into()
                }
                why => why.to_string(),
            })
    }
}

/// Why a query asked while connecting got no answer.
enum Asked {
    Failed(String),
    TimedOut,
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asked::Failed(why) => f.write_str(why),
            Asked::TimedOut => f.write_str("no answer within 30 s"),
        }
    }
}

impl Listener {
    /// Runs a simple query while connecting (nothing is listened to yet) and waits up to 30 s
    /// for its answer.
    fn ask(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>, Asked> {
        self.send_simple(sql.to_owned());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let read = self.read(left);
            if let Some(answer) = read.answer {
                return answer.map_err(|e| Asked::Failed(describe_pg_error(&e)));
            }
            if let Some(why) = read.ended {
                return Err(Asked::Failed(why));
            }
        }
        Err(Asked::TimedOut)
    }

    /// Puts a simple query (one or more statements, no parameters) in flight.
    pub(crate) fn send_simple(&mut self, sql: String) {
        let client = Arc::clone(&self.client);
        self.query = Some(Box::pin(async move { client.simple_query(&sql).await }));
    }

    /// Puts `SELECT pg_notify(channel, payload)` in flight, both as bind parameters, in a
    /// transaction that waits at most [`NOTIFY_LOCK_WAIT`] for the lock every commit with
    /// notifications takes, and not for a synchronous standby: the connection delivers nothing
    /// while its backend waits, so the wait is bounded (a lock timeout, [`waited_for_lock`]).
    pub(crate) fn send_notify(&mut self, channel: String, payload: String) {
        let client = Arc::clone(&self.client);
        let wait = NOTIFY_LOCK_WAIT.as_millis().to_string();
        self.query = Some(Box::pin(async move {
            client
                .query_typed(
                    NOTIFY_BOUNDED,
                    &[
                        (&channel, Type::TEXT),
                        (&payload, Type::TEXT),
                        (&wait, Type::TEXT),
                    ],
                )
                .await
                .map(|_| Vec::new())
        }));
    }

    /// What wakes this connection's reads.
    pub(crate) fn waker(&self) -> Wake {
        self.wake.clone()
    }

    /// Whether a query is in flight.
    pub(crate) fn busy(&self) -> bool {
        self.query.is_some()
    }

    /// Waits up to `wait` for something to arrive, then returns what the socket already holds,
    /// up to one batch. Returns early with whatever came: notifications, the answer, the end,
    /// or when woken ([`Wake`]).
    pub(crate) fn read(&mut self, wait: Duration) -> Read {
        let mut read = Read::default();
        if let Some(why) = &self.ended {
            read.ended = Some(why.clone());
            return read;
        }
        let Listener {
            connection,
            wire,
            received,
            query,
            ended,
            runtime,
            wake,
            ..
        } = self;
        let mut bytes = 0;
        runtime.block_on(async {
            let mut sleep = pin!(tokio::time::sleep(wait));
            let mut woken = pin!(wake.0.notified());
            std::future::poll_fn(|cx| {
                loop {
                    match connection.poll_message(cx) {
                        Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => {
                            bytes += n.channel().len() + n.payload().len();
                            read.notifications.push(exactly(n, wire.take(*received)));
                            *received += 1;
                            if read.notifications.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
                                break;
                            }
                        }
                        Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => warn_notice(&notice),
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(e))) => {
                            read.ended = Some(describe_pg_error(&e));
                            break;
                        }
                        Poll::Ready(None) => {
                            read.ended = Some("the server closed the connection".into());
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                if let Some(in_flight) = query.as_mut()
                    && let Poll::Ready(answer) = in_flight.as_mut().poll(cx)
                {
                    read.answer = Some(answer);
                    *query = None;
                }
                let arrived =
                    !read.notifications.is_empty() || read.answer.is_some() || read.ended.is_some();
                let woken = woken.as_mut().poll(cx).is_ready();
                match arrived || woken || sleep.as_mut().poll(cx).is_ready() {
                    true => Poll::Ready(()),
                    false => Poll::Pending,
                }
            })
            .await
        });
        ended.clone_from(&read.ended);
        read
    }
}

/// A notification with the exact bytes the filter kept for it, if any: then what
/// `tokio-postgres` read has `?` for each invalid byte, and the text is made from the bytes.
fn exactly(n: Notification, exact: Option<wire::Exact>) -> Received {
    let (channel, payload) = exact.map(|e| (e.channel, e.payload)).unwrap_or_default();
    let lossy = |bytes: Option<&Vec<u8>>, text: &str| match bytes {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => text.to_owned(),
    };
    Received {
        pid: n.process_id(),
        channel: lossy(channel.as_ref(), n.channel()),
        payload: lossy(payload.as_ref(), n.payload()),
        exact: payload,
    }
}
