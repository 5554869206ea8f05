//! The shared vocabulary of the listen/pipe data flow: a [`Notification`] as received, and a
//! [`Gap`], a stretch of time in which notifications may have been lost, with the [`Drops`]
//! counter that bounded queues keep while they drop.
//!
//! Owns: these types only. Does not own: PostgreSQL's rules for names and payloads (`pg`), how
//! notifications are received (`stream`), encoded (`format`) or written (`sink`).

/// One notification as received from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notification {
    /// The channel exactly as the sender named it.
    pub(crate) channel: String,
    /// The payload exactly as sent ("" when none was given); when it is not UTF-8 (a SQL_ASCII
    /// database), with U+FFFD for each invalid sequence, and the bytes in `exact_payload`.
    pub(crate) payload: String,
    /// The payload's exact bytes, only when they are not UTF-8.
    pub(crate) exact_payload: Option<Vec<u8>>,
    /// The PID of the server process whose transaction sent it.
    pub(crate) pid: i32,
    /// When pgnotify read it from the connection.
    pub(crate) received_at: jiff::Timestamp,
    /// With `--fetch`: the changed row as it is now, read by its key (`Null`: no such row).
    pub(crate) fetched: Option<serde_json::Value>,
    /// With `--consumer`: where the event is stored in the outbox.
    pub(crate) stored: Option<Position>,
}

impl Notification {
    /// The payload's bytes exactly as sent.
    pub(crate) fn payload_bytes(&self) -> &[u8] {
        self.exact_payload
            .as_deref()
            .unwrap_or(self.payload.as_bytes())
    }
}

/// A durable event's place in the outbox (`durable`): its transaction's id, then its own id.
/// Every consumer sees events in this order, and its checkpoint is the last one it wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Position {
    /// The id of the transaction that stored the event (`pg_current_xact_id()`).
    pub(crate) xid: u64,
    /// The event's own id, in the order its transaction stored it.
    pub(crate) id: i64,
}

/// With `--consumer`: how far delivery has got. Every event up to the mark is delivered (its
/// line written and flushed, its command exited 0); the reader stores it as the consumer's
/// checkpoint. It only moves forward.
#[derive(Debug, Default)]
pub(crate) struct Watermark(std::sync::Mutex<Option<Position>>);

impl Watermark {
    /// Every event up to `at` is delivered.
    pub(crate) fn advance(&self, at: Position) {
        let mut mark = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if mark.is_none_or(|m| m < at) {
            *mark = Some(at);
        }
    }

    pub(crate) fn get(&self) -> Option<Position> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why notifications may be missing from the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GapKind {
    /// The connection was lost and re-established: what was sent meanwhile is lost.
    Reconnect,
    /// An output was too slow and notifications were dropped (`--on-overflow drop`, a TCP
    /// peer's backlog).
    Overflow,
    /// The connection to a `--connect` peer was lost: lines written to it may not have been
    /// read (`dropped` is then an upper bound).
    Peer,
    /// A web client came back (SSE, with `Last-Event-ID`): the events sent while it was away
    /// are missing from its stream (`dropped`).
    Client,
}

impl GapKind {
    /// The name in gap records and in `PGNOTIFY_GAP`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GapKind::Reconnect => "reconnect",
            GapKind::Overflow => "overflow",
            GapKind::Peer => "peer",
            GapKind::Client => "client",
        }
    }
}

/// A stretch of time in which notifications may have been lost.
#[derive(Clone, Debug)]
pub(crate) struct Gap {
    pub(crate) kind: GapKind,
    /// What happened, in words.
    pub(crate) reason: String,
    /// When the stream stopped being complete.
    pub(crate) from: jiff::Timestamp,
    /// When it was complete again (for a reconnect: once every LISTEN was re-established);
    /// `None` when it never was: pgnotify gave up (`--max-downtime`).
    pub(crate) until: Option<jiff::Timestamp>,
    /// How many notifications pgnotify itself dropped (0 for a reconnect: the server's are
    /// unknowable).
    pub(crate) dropped: u64,
}

/// The drop accounting of a bounded queue: while it drops, when the drop began and how many
/// notifications it has dropped; when the drop ends, the overflow [`Gap`] that reports them.
#[derive(Debug, Default)]
pub(crate) struct Drops(Option<(jiff::Timestamp, u64)>);

impl Drops {
    /// Counts `n` more dropped notifications; true when this begins a drop, so that the caller
    /// says so once.
    pub(crate) fn count(&mut self, n: u64) -> bool {
        let begins = self.0.is_none();
        self.0.get_or_insert_with(|| (jiff::Timestamp::now(), 0)).1 += n;
        begins
    }

    /// Whether a drop is going on.
    pub(crate) fn dropping(&self) -> bool {
        self.0.is_some()
    }

    /// Ends the drop, if one is going on, and returns its gap: `why` is the reason, to which
    /// the count is added.
    pub(crate) fn end(&mut self, why: &str) -> Option<Gap> {
        let (from, dropped) = self.0.take()?;
        Some(Gap {
            kind: GapKind::Overflow,
            reason: format!("{why}: {dropped} notifications were dropped"),
            from,
            until: Some(jiff::Timestamp::now()),
            dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_until_they_end() {
        let mut drops = Drops::default();
        assert!(drops.end("slow").is_none());
        assert!(drops.count(2), "the first count begins a drop");
        assert!(!drops.count(3));
        let gap = drops.end("slow").unwrap();
        assert_eq!((gap.kind, gap.dropped), (GapKind::Overflow, 5));
        assert_eq!(gap.reason, "slow: 5 notifications were dropped");
        assert!(gap.until.is_some_and(|until| gap.from <= until));
        assert!(!drops.dropping());
    }
}
