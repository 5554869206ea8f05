//! The heartbeat that proves a listening session alive, every `--heartbeat` interval: an
//! empty query answered within 5 s, then a notification to itself on a private channel that
//! must come back within 5 s. So a hung backend, a black-holed network or a connection that no
//! longer delivers notifications (a transaction pooler) is noticed within interval + 5 s.

use crate::deadline;
use crate::notification::Notification;
use crate::pg::describe_pg_error;
use postgres::Client;
use std::time::{Duration, Instant};

/// How long the heartbeat's query and self-notification may take.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// The heartbeat's schedule and the self-notification it waits for.
pub(super) struct Heartbeat {
    interval: Option<Duration>,
    next: Option<Instant>,
    awaiting: Option<(String, Instant)>,
    sequence: u64,
}

impl Heartbeat {
    pub(super) fn new(interval: Option<Duration>) -> Heartbeat {
        Heartbeat {
            interval,
            // An interval too large to add to now never comes due.
            next: interval.and_then(deadline::after),
            awaiting: None,
            sequence: 0,
        }
    }

    /// How long reading may block before the heartbeat needs attention.
    pub(super) fn wait(&self) -> Duration {
        let due = [self.next, self.awaiting.as_ref().map(|a| a.1)]
            .into_iter()
            .flatten()
            .min();
        match due {
            Some(due) => due
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
            None => Duration::from_secs(3600),
        }
    }

    /// Moves the schedule and the pending deadline later by `by`.
    pub(super) fn postpone(&mut self, by: Duration) {
        if by < Duration::from_millis(100) {
            return;
        }
        if let Some(next) = self.next.as_mut() {
            *next = next.checked_add(by).unwrap_or(*next);
        }
        if let Some((_, deadline)) = self.awaiting.as_mut() {
            *deadline = deadline.checked_add(by).unwrap_or(*deadline);
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
            if self
                .awaiting
                .as_ref()
                .is_some_and(|(payload, _)| *payload == n.payload)
            {
                self.awaiting = None;
            }
            false
        });
        batch
    }

    /// Sends a heartbeat when one is due; fails when the last one did not come back in time.
    /// Returns when a heartbeat it sent was answered: the connection delivered everything
    /// committed before that.
    pub(super) fn check(
        &mut self,
        client: &mut Client,
        channel: &str,
    ) -> Result<Option<jiff::Timestamp>, String> {
        let now = Instant::now();
        if let Some((_, deadline)) = &self.awaiting
            && now >= *deadline
        {
            return Err(format!(
                "the heartbeat notification did not come back within {} s (is this connection \
                 through a transaction pooler?)",
                HEARTBEAT_TIMEOUT.as_secs()
            ));
        }
        let (Some(interval), Some(next)) = (self.interval, self.next) else {
            return Ok(None);
        };
        if now < next || self.awaiting.is_some() {
            return Ok(None);
        }
        let asked = jiff::Timestamp::now();
        client.is_valid(HEARTBEAT_TIMEOUT).map_err(|e| {
            format!(
                "no answer to the heartbeat within {} s ({})",
                HEARTBEAT_TIMEOUT.as_secs(),
                describe_pg_error(&e)
            )
        })?;
        self.sequence += 1;
        let payload = self.sequence.to_string();
        client
            .execute("SELECT pg_catalog.pg_notify($1, $2)", &[&channel, &payload])
            .map_err(|e| format!("the heartbeat failed: {}", describe_pg_error(&e)))?;
        self.awaiting = Some((payload, Instant::now() + HEARTBEAT_TIMEOUT));
        self.next = now.checked_add(interval);
        Ok(Some(asked))
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
        beat.awaiting = Some(("7".into(), Instant::now() + HEARTBEAT_TIMEOUT));
        let n = |channel: &str, payload: &str| Notification {
            channel: channel.into(),
            payload: payload.into(),
            pid: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: None,
        };
        let kept = beat.filter(vec![n("hb", "7"), n("jobs", "x"), n("hb", "6")], "hb");
        assert_eq!(kept, vec![n("jobs", "x")]);
        assert!(beat.awaiting.is_none());
    }
}
