//! The heartbeat that proves a listening session alive, every `--heartbeat` interval: a
//! notification to itself on a private channel, sent as a query on the listening connection.
//! The query's answer must come within 5 s (more while notifications keep arriving ahead of it),
//! and the notification within 5 s of the answer. So a hung backend, a black-holed network or a
//! connection that no longer delivers notifications (a transaction pooler) is noticed within
//! interval + 5 s.
//!
//! The query is only put in flight: its answer comes back through the same reads as the
//! notifications (`pg::Listener`), so a backlog in front of it is read into the bounded queue at
//! the output's pace, never all at once.

use crate::deadline;
use crate::msg;
use crate::notification::Notification;
use crate::pg::{Answer, Listener, NOTIFY_LOCK_WAIT, describe_pg_error, waited_for_lock};
use std::time::{Duration, Instant};

/// How long the heartbeat's answer (after the last sign of life) and self-notification may take.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// The heartbeat's schedule and the beat in flight.
pub(super) struct Heartbeat {
    interval: Option<Duration>,
    next: Option<Instant>,
    awaiting: Option<Beat>,
    sequence: u64,
    /// Heartbeats in a row that waited out the lock notifying commits take.
    locked_out: u32,
}

/// A heartbeat sent and not yet complete (or another query whose answer is awaited).
struct Beat {
    /// What the answer is to, in messages: "the heartbeat", "LISTEN".
    what: &'static str,
    payload: String,
    /// When it was sent: once it is answered, everything committed before is delivered.
    asked: jiff::Timestamp,
    answered: bool,
    came_back: bool,
    deadline: Instant,
}

impl Heartbeat {
    pub(super) fn new(interval: Option<Duration>) -> Heartbeat {
        Heartbeat {
            interval,
            // An interval too large to add to now never comes due.
            next: interval.and_then(deadline::after),
            awaiting: None,
            sequence: 0,
            locked_out: 0,
        }
    }

    /// How long reading may block before the heartbeat needs attention.
    pub(super) fn wait(&self) -> Duration {
        let due = match &self.awaiting {
            Some(beat) => Some(beat.deadline),
            None => self.next,
        };
        match due {
            Some(due) => due
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
            None => Duration::from_secs(3600),
        }
    }

    /// Whether nothing is awaited: no beat (or other query) is in flight or coming back.
    pub(super) fn idle(&self) -> bool {
        self.awaiting.is_none()
    }

    /// Moves the schedule and the pending deadline later by `by`.
    pub(super) fn postpone(&mut self, by: Duration) {
        if by < Duration::from_millis(100) {
            return;
        }
        if let Some(next) = self.next.as_mut() {
            *next = next.checked_add(by).unwrap_or(*next);
        }
        if let Some(beat) = self.awaiting.as_mut() {
            beat.deadline = beat.deadline.checked_add(by).unwrap_or(beat.deadline);
        }
    }

    /// A query already in flight (LISTEN) must be answered within the heartbeat's deadline;
    /// nothing is to come back. Its answer is evidence as of `asked`.
    pub(super) fn await_answer(&mut self, what: &'static str, asked: jiff::Timestamp) {
        self.awaiting = Some(Beat {
            what,
            payload: String::new(),
            asked,
            answered: false,
            came_back: true,
            deadline: Instant::now() + HEARTBEAT_TIMEOUT,
        });
    }

    /// Notifications arrived: the connection is alive, and an answer queued behind them has
    /// [`HEARTBEAT_TIMEOUT`] from now.
    pub(super) fn traffic(&mut self) {
        if let Some(beat) = self.awaiting.as_mut()
            && !beat.answered
        {
            beat.deadline = beat.deadline.max(Instant::now() + HEARTBEAT_TIMEOUT);
        }
    }

    /// Removes the heartbeat's own notifications from a batch, noting the awaited one.
    pub(super) fn filter(
        &mut self,
        mut batch: Vec<Notification>,
        channel: &str,
    ) -> Vec<Notification> {
        if self.interval.is_none() {
            return batch;
        }
        batch.retain(|n| {
            if n.channel != channel {
                return true;
            }
            if let Some(beat) = self.awaiting.as_mut()
                && beat.payload == n.payload
            {
                beat.came_back = true;
            }
            false
        });
        batch
    }

    /// The heartbeat query was answered. Returns the evidence it gives: when it was sent, the
    /// server had sent everything committed before (it sends what is pending before an answer).
    ///
    /// A heartbeat that waited [`NOTIFY_LOCK_WAIT`] out for the lock notifying commits take
    /// proves the backend alive but not the delivery: it is no evidence and no failure, and the
    /// next one is sent when due.
    pub(super) fn answered(&mut self, answer: Answer) -> Result<Option<jiff::Timestamp>, String> {
        if let Err(e) = &answer
            && waited_for_lock(e)
            && self.awaiting.is_some()
        {
            self.awaiting = None;
            self.locked_out += 1;
            let said = format!(
                "the heartbeat waited {} s for the lock that commits with notifications take \
                 (another transaction is committing many, or waiting for a synchronous \
                 standby); the connection answered, so it is kept",
                NOTIFY_LOCK_WAIT.as_secs()
            );
            match self.locked_out {
                1 => msg::warn(&said),
                n => msg::info(&format!("{said} ({n} heartbeats in a row)")),
            }
            return Ok(None);
        }
        answer.map_err(|e| format!("the heartbeat failed: {}", describe_pg_error(&e)))?;
        let Some(beat) = self.awaiting.as_mut() else {
            return Ok(None);
        };
        self.locked_out = 0;
        beat.answered = true;
        beat.deadline = Instant::now() + HEARTBEAT_TIMEOUT;
        Ok(Some(beat.asked))
    }

    /// Sends a heartbeat when one is due; fails when the last one did not complete in time.
    pub(super) fn check(&mut self, listener: &mut Listener, channel: &str) -> Result<(), String> {
        let now = Instant::now();
        if let Some(beat) = &self.awaiting {
            if beat.answered && beat.came_back {
                self.awaiting = None;
            } else if now >= beat.deadline {
                return Err(match beat.answered {
                    false => format!(
                        "no answer to {} within {} s",
                        beat.what,
                        HEARTBEAT_TIMEOUT.as_secs()
                    ),
                    true => format!(
                        "the heartbeat notification did not come back within {} s: \
                         notifications no longer reach this connection, as happens through a \
                         transaction pooler (PgBouncer with pool_mode = transaction); run \
                         `pgnotify doctor` to check",
                        HEARTBEAT_TIMEOUT.as_secs()
                    ),
                });
            } else {
                return Ok(());
            }
        }
        let (Some(interval), Some(next)) = (self.interval, self.next) else {
            return Ok(());
        };
        if now < next || listener.busy() {
            return Ok(());
        }
        self.sequence += 1;
        let payload = self.sequence.to_string();
        listener.send_notify(channel.to_owned(), payload.clone());
        self.awaiting = Some(Beat {
            what: "the heartbeat",
            payload,
            asked: jiff::Timestamp::now(),
            answered: false,
            came_back: false,
            deadline: now + HEARTBEAT_TIMEOUT,
        });
        self.next = now.checked_add(interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_too_large_to_add_never_comes_due() {
        let mut beat = Heartbeat::new(Some(Duration::MAX));
        assert_eq!(beat.next, None);
        assert!(beat.wait() >= Duration::from_secs(3600));
        beat.postpone(Duration::MAX);
    }

    #[test]
    fn heartbeat_notifications_are_filtered_and_acknowledged() {
        let mut beat = Heartbeat::new(Some(Duration::from_secs(10)));
        beat.awaiting = Some(Beat {
            what: "the heartbeat",
            payload: "7".into(),
            asked: jiff::Timestamp::UNIX_EPOCH,
            answered: true,
            came_back: false,
            deadline: Instant::now() + HEARTBEAT_TIMEOUT,
        });
        let n = |channel: &str, payload: &str| Notification {
            channel: channel.into(),
            payload: payload.into(),
            exact_payload: None,
            pid: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: None,
            stored: None,
        };
        let kept = beat.filter(vec![n("hb", "7"), n("jobs", "x"), n("hb", "6")], "hb");
        assert_eq!(kept, vec![n("jobs", "x")]);
        assert!(beat.awaiting.as_ref().is_some_and(|b| b.came_back));
    }
}
