//! Changing a running stream from outside: the console's `listen`, `unlisten` and `notify`,
//! carried out by the source on its listening connection, and the set of channels that every
//! reconnect LISTENs on again.
//!
//! The source owns the connection; this is its mailbox. A request is put in flight only when
//! the connection has no other query in flight (the heartbeat's, LISTEN's at start), and its
//! answer comes back through the same reads as the notifications, so a request never makes
//! the source read faster than the queue takes. While the source is not connected, a change
//! to the set is made at once and takes effect when it reconnects; a notification cannot be
//! sent and says so.

use super::queue::{Event, Queue};
use super::source::case_hint;
use crate::pg::{
    self, Answer, NOTIFY_LOCK_WAIT, Wake, describe_pg_error, quote_ident, waited_for_lock,
};
use crate::sanitize::escape_controls;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

/// A reply to a request, now or once the server has answered.
pub(crate) enum Answering {
    Now(Reply),
    Soon(mpsc::Receiver<Reply>),
}

impl Answering {
    /// The reply, waiting for it if need be (boundedly).
    pub(crate) fn wait(self) -> Reply {
        match self {
            Answering::Now(reply) => reply,
            Answering::Soon(receiver) => receiver.recv_timeout(ASK_PATIENCE).unwrap_or_else(|_| {
                Err(format!(
                    "no answer from the server within {} s; it may still be carried out",
                    ASK_PATIENCE.as_secs()
                ))
            }),
        }
    }
}

/// What a request asks of the listening connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// LISTEN on these channels too.
    Listen(Vec<String>),
    /// UNLISTEN these channels.
    Unlisten(Vec<String>),
    /// UNLISTEN every channel of the set (the heartbeat's stays).
    UnlistenAll,
    /// `pg_notify(channel, payload)`, both bind parameters.
    Notify { channel: String, payload: String },
}

/// What the person is told: done, or why not.
pub(crate) type Reply = Result<String, String>;

/// How long [`Control::ask`] waits for the source: past the heartbeat's 5 s deadline, after
/// which a connection that does not answer is replaced and the request is answered anyway.
const ASK_PATIENCE: Duration = Duration::from_secs(30);

struct Request {
    ask: Ask,
    /// `None` for the source's own requests (catching up with changes made while connecting).
    reply: Option<mpsc::Sender<Reply>>,
}

#[derive(Default)]
struct State {
    /// The channels to listen on, in the order they were added.
    channels: Vec<String>,
    /// The connection's waker while the source is connected and listening.
    connected: Option<Wake>,
    /// The server it listens on, as the source describes it.
    server: Option<String>,
    /// Whether it has ever been connected (`--wait` may start without).
    ever: bool,
    requests: VecDeque<Request>,
    in_flight: Option<Request>,
}

/// The mailbox between the console (or any other controller) and the source.
pub(crate) struct Control {
    state: Mutex<State>,
    /// Whether `requests` may hold something: spares the source a lock per read.
    pending: AtomicBool,
    queue: Arc<Queue>,
}

impl Control {
    pub(super) fn new(channels: Vec<String>, queue: Arc<Queue>) -> Arc<Control> {
        let mut unique: Vec<String> = Vec::new();
        for c in channels {
            if !unique.contains(&c) {
                unique.push(c);
            }
        }
        Arc::new(Control {
            state: Mutex::new(State {
                channels: unique,
                ..State::default()
            }),
            pending: AtomicBool::new(false),
            queue,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The channels listened on (or to be, once connected), in the order they were added.
    pub(crate) fn channels(&self) -> Vec<String> {
        self.state().channels.clone()
    }

    /// The server listened on now; `None` while connecting or reconnecting.
    pub(crate) fn server(&self) -> Option<String> {
        let state = self.state();
        state.connected.as_ref().and(state.server.clone())
    }

    /// Ends the run as if its work were done (the console's `quit`), ahead of what is queued:
    /// that is still written, but without waiting for `--fetch` to read its rows.
    pub(crate) fn quit(&self) {
        self.queue.push_first(Event::Quit);
    }

    /// Carries `ask` out on the listening connection and says how it went: [`Control::submit`],
    /// then waiting for the answer.
    #[cfg(test)]
    pub(crate) fn ask(&self, ask: Ask) -> Reply {
        self.submit(ask).wait()
    }

    /// Hands `ask` to the source, to put in flight on the listening connection; the answer
    /// comes later. While the source is not connected, a change of channels is made to the set
    /// at once (the reconnect LISTENs on it) and a notification is refused.
    pub(crate) fn submit(&self, ask: Ask) -> Answering {
        {
            let mut state = self.state();
            if let Ask::Listen(names) | Ask::Unlisten(names) = &ask
                && names.is_empty()
            {
                return Answering::Now(Err("no channel given".into()));
            }
            // Offline, the set is all there is to change; connected, the requests before this
            // one may still change it, so the source judges it in turn (`send_next`).
            if state.connected.is_none()
                && let Some(reply) = nothing_to_do(&state.channels, &ask)
            {
                return Answering::Now(reply);
            }
            if state.connected.is_none() {
                let why = match state.ever {
                    true => "not connected (reconnecting)",
                    false => "not connected yet",
                };
                let ever = state.ever;
                return Answering::Now(offline(&mut state.channels, &ask, why, ever));
            }
            let (sender, receiver) = mpsc::channel();
            state.requests.push_back(Request {
                ask,
                reply: Some(sender),
            });
            self.pending.store(true, Ordering::Release);
            if let Some(wake) = &state.connected {
                wake.wake();
            }
            Answering::Soon(receiver)
        }
    }

    /// The source: a session listens on `listened` (the channels it LISTENed on) at `server`.
    /// Changes made to the set meanwhile are queued as the source's own requests, first.
    pub(super) fn connected(&self, wake: Wake, server: String, listened: &[String]) {
        let mut state = self.state();
        let missing: Vec<String> = state
            .channels
            .iter()
            .filter(|c| !listened.contains(c))
            .cloned()
            .collect();
        let extra: Vec<String> = listened
            .iter()
            .filter(|c| !state.channels.contains(c))
            .cloned()
            .collect();
        for ask in [Ask::Unlisten(extra), Ask::Listen(missing)] {
            if matches!(&ask, Ask::Listen(c) | Ask::Unlisten(c) if !c.is_empty()) {
                state.requests.push_front(Request { ask, reply: None });
                self.pending.store(true, Ordering::Release);
            }
        }
        state.connected = Some(wake);
        state.server = Some(server);
        state.ever = true;
    }

    /// The source: the session is lost. What was asked and not answered is settled as if
    /// asked while disconnected: the set changes, a notification's fate is unknown.
    pub(super) fn disconnected(&self) {
        let mut state = self.state();
        state.connected = None;
        let in_flight = state.in_flight.take();
        let waiting: Vec<Request> = in_flight
            .into_iter()
            .chain(std::mem::take(&mut state.requests))
            .collect();
        self.pending.store(false, Ordering::Release);
        for request in waiting {
            let reply = match &request.ask {
                Ask::Notify { .. } => Err("the connection was lost before the server confirmed \
                                           the notification: it may not have been sent"
                    .to_owned()),
                ask => offline(&mut state.channels, ask, "the connection was lost", true),
            };
            if let Some(sender) = request.reply {
                let _ = sender.send(reply);
            }
        }
    }

    /// The source, with no query in flight: puts the next request in flight on `listener`.
    /// Returns whether it did.
    pub(super) fn send_next(&self, listener: &mut pg::Listener) -> bool {
        if !self.pending.load(Ordering::Acquire) {
            return false;
        }
        let mut state = self.state();
        let sql = |verb: &str, channels: &[String]| -> String {
            channels
                .iter()
                .map(|c| format!("{verb} {};", quote_ident(c)))
                .collect()
        };
        // Judged against the set as the requests before left it: answered in order, so an
        // `unlisten x` typed right after `listen x` finds x there.
        while let Some(request) = state.requests.pop_front() {
            if let Some(reply) = nothing_to_do(&state.channels, &request.ask) {
                if let Some(sender) = request.reply {
                    let _ = sender.send(reply);
                }
                continue;
            }
            match &request.ask {
                Ask::Listen(channels) => listener.send_simple(sql("LISTEN", channels)),
                Ask::Unlisten(channels) => listener.send_simple(sql("UNLISTEN", channels)),
                Ask::UnlistenAll => {
                    let all = state.channels.clone();
                    listener.send_simple(sql("UNLISTEN", &all));
                }
                Ask::Notify { channel, payload } => {
                    listener.send_notify(channel.clone(), payload.clone());
                }
            }
            state.in_flight = Some(request);
            if state.requests.is_empty() {
                self.pending.store(false, Ordering::Release);
            }
            return true;
        }
        self.pending.store(false, Ordering::Release);
        false
    }

    /// The source: the answer to the request in flight.
    pub(super) fn answered(&self, answer: Answer) {
        let mut state = self.state();
        let Some(request) = state.in_flight.take() else {
            return;
        };
        let reply = match answer {
            Err(e) if waited_for_lock(&e) => Err(format!(
                "not sent: another transaction held the lock that commits with notifications \
                 take for {} s (it is committing many, or waiting for a synchronous standby); \
                 try again",
                NOTIFY_LOCK_WAIT.as_secs()
            )),
            Err(e) => Err(describe_pg_error(&e)),
            Ok(_) => Ok(apply(&mut state.channels, &request.ask) + &hint(&request.ask)),
        };
        if let Some(sender) = request.reply {
            let _ = sender.send(reply);
        }
    }
}

/// Asks that need no round trip: unlistening channels not listened on.
fn nothing_to_do(channels: &[String], ask: &Ask) -> Option<Reply> {
    match ask {
        Ask::UnlistenAll if channels.is_empty() => Some(Ok("not listening on any channel".into())),
        Ask::Unlisten(names) if names.iter().all(|n| !channels.contains(n)) => {
            Some(Err(format!("not listening on {}", names_of(names))))
        }
        Ask::Listen(names) | Ask::Unlisten(names) if names.is_empty() => {
            Some(Err("no channel given".into()))
        }
        _ => None,
    }
}

/// Changes the set as `ask` says, and says what it did.
fn apply(channels: &mut Vec<String>, ask: &Ask) -> String {
    match ask {
        Ask::Listen(names) => {
            for n in names {
                if !channels.contains(n) {
                    channels.push(n.clone());
                }
            }
            format!("listening on {}", names_of(names))
        }
        Ask::Unlisten(names) => {
            let (gone, never): (Vec<String>, Vec<String>) =
                names.iter().cloned().partition(|n| channels.contains(n));
            channels.retain(|c| !names.contains(c));
            match never.is_empty() {
                true => format!("stopped listening on {}", names_of(&gone)),
                false => format!(
                    "stopped listening on {} (was not listening on {})",
                    names_of(&gone),
                    names_of(&never)
                ),
            }
        }
        Ask::UnlistenAll => {
            let all = std::mem::take(channels);
            format!("stopped listening on {}", names_of(&all))
        }
        Ask::Notify { channel, .. } => {
            format!("sent to {}", names_of(std::slice::from_ref(channel)))
        }
    }
}

/// For names psql would fold: the reminder that `listen` gives too.
fn hint(ask: &Ask) -> String {
    match ask {
        Ask::Listen(names) => case_hint(names),
        _ => String::new(),
    }
}

/// A change of channels made to the set alone, while no session listens.
fn offline(channels: &mut Vec<String>, ask: &Ask, why: &str, ever: bool) -> Reply {
    match ask {
        Ask::Notify { .. } => Err(format!("{why}: nothing was sent")),
        ask => {
            let done = apply(channels, ask);
            let when = match ever {
                true => "once reconnected",
                false => "once connected",
            };
            Ok(format!("{why}: {done} {when}{}", hint(ask)))
        }
    }
}

/// Channel names as the person reads them: quoted as SQL identifiers, controls escaped.
pub(crate) fn names_of(names: &[String]) -> String {
    names
        .iter()
        .map(|n| escape_controls(&quote_ident(n)).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(channels: &[&str]) -> Arc<Control> {
        let queue = Queue::new(1 << 20, crate::stream::Overflow::Drop);
        Control::new(channels.iter().map(|c| c.to_string()).collect(), queue)
    }

    #[test]
    fn offline_changes_go_to_the_set_and_notify_is_refused() {
        let c = control(&["a", "a", "b"]);
        assert_eq!(c.channels(), ["a", "b"]);
        let reply = c.ask(Ask::Listen(vec!["C".into()])).unwrap();
        assert!(
            reply.contains("not connected yet: listening on \"C\" once connected"),
            "{reply}"
        );
        let partly = c.ask(Ask::Unlisten(vec!["C".into(), "zz".into()])).unwrap();
        assert!(
            partly.ends_with(
                "stopped listening on \"C\" (was not listening on \"zz\") once connected"
            ),
            "{partly}"
        );
        c.ask(Ask::Listen(vec!["C".into()])).unwrap();
        assert_eq!(c.channels(), ["a", "b", "C"]);
        c.ask(Ask::Unlisten(vec!["a".into()])).unwrap();
        assert_eq!(c.channels(), ["b", "C"]);
        let refused = c.ask(Ask::Notify {
            channel: "b".into(),
            payload: "x".into(),
        });
        assert!(refused.unwrap_err().contains("nothing was sent"));
        assert!(c.ask(Ask::Unlisten(vec!["zz".into()])).is_err());
        c.ask(Ask::UnlistenAll).unwrap();
        assert!(c.channels().is_empty());
        assert_eq!(
            c.ask(Ask::UnlistenAll),
            Ok("not listening on any channel".into())
        );
    }

    #[test]
    fn a_loss_settles_what_was_asked_and_not_answered() {
        let c = control(&["a"]);
        c.connected(Wake::default(), "server".into(), &["a".to_owned()]);
        let asking = Arc::clone(&c);
        let listen = std::thread::spawn(move || asking.ask(Ask::Listen(vec!["b".into()])));
        let asking = Arc::clone(&c);
        let notify = std::thread::spawn(move || {
            asking.ask(Ask::Notify {
                channel: "a".into(),
                payload: "p".into(),
            })
        });
        while c.state().requests.len() < 2 {
            std::thread::yield_now();
        }
        assert_eq!(c.server(), Some("server".into()));
        c.disconnected();
        assert_eq!(c.server(), None);
        let listened = listen.join().unwrap().unwrap();
        assert!(listened.contains("once reconnected"), "{listened}");
        assert!(
            notify
                .join()
                .unwrap()
                .unwrap_err()
                .contains("may not have been sent")
        );
        assert_eq!(c.channels(), ["a", "b"]);
    }

    #[test]
    fn changes_made_while_connecting_are_caught_up_first() {
        let c = control(&["a", "b"]);
        let listened = c.channels();
        c.ask(Ask::Listen(vec!["new".into()])).unwrap();
        c.ask(Ask::Unlisten(vec!["a".into()])).unwrap();
        c.connected(Wake::default(), "server".into(), &listened);
        let state = c.state();
        let asks: Vec<&Ask> = state.requests.iter().map(|r| &r.ask).collect();
        assert_eq!(
            asks,
            [
                &Ask::Listen(vec!["new".into()]),
                &Ask::Unlisten(vec!["a".into()])
            ]
        );
    }
}
