//! Every statement on the outbox's tables. Channels, payloads, names and positions are bind
//! parameters; a position's `xid` travels as text (`xid8` has no binary type in the client).

/// Stores one event and wakes consumers, in the caller's transaction.
pub(crate) const STORE_ONE: &str = "\
WITH e AS (INSERT INTO pgnotify.events (channel, payload) VALUES ($1, $2) RETURNING 1)
SELECT pg_catalog.pg_notify('pgnotify.durable', $1) FROM e";

/// Stores a batch of events in array order (identity values are drawn as the rows are
/// produced, and `ORDER BY` the ordinality produces them in order), and wakes consumers once.
pub(crate) const STORE_MANY: &str = "\
WITH e AS (INSERT INTO pgnotify.events (channel, payload)
           SELECT $1, u.p FROM pg_catalog.unnest($2::pg_catalog.text[]) WITH ORDINALITY AS u(p, n)
           ORDER BY u.n
           RETURNING 1)
SELECT pg_catalog.count(*), pg_catalog.pg_notify('pgnotify.durable', $1) FROM e";

/// The next events after a position ($1 xid as text, $2 id) on the channels ($3), at most $4,
/// only of transactions older than this statement's snapshot's xmin: those have all ended, so
/// no event can still appear before the last one read. Their payloads take at most $5 bytes
/// together, or the first one alone when it is larger.
pub(crate) const READ: &str = "\
SELECT b.xid::pg_catalog.text, b.id, b.channel, b.payload, b.pid
  FROM (SELECT e.xid, e.id, e.channel, e.payload, e.pid,
               pg_catalog.sum(pg_catalog.octet_length(e.payload)) OVER (ORDER BY e.xid, e.id)
                 OPERATOR(pg_catalog.-) pg_catalog.octet_length(e.payload) AS before
          FROM pgnotify.events e
         WHERE (e.xid, e.id) > ($1::pg_catalog.text::pg_catalog.xid8, $2)
           AND e.xid < pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
           AND e.channel OPERATOR(pg_catalog.=) ANY ($3)
         ORDER BY e.xid, e.id
         LIMIT $4) b
 WHERE b.before < $5
 ORDER BY b.xid, b.id";

/// Takes a consumer's name for this session, so that a second process with the same name
/// cannot race it for the checkpoint: true when taken; and this session's pid.
pub(crate) const CLAIM: &str = "\
SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended('pgnotify consumer ' || $1, 0)),
       pg_catalog.pg_backend_pid()";

/// How many committed events on the channels ($1) wait for an older transaction to end,
/// counted up to [`HELD_COUNTED`] (it runs 20 times a second while they wait).
pub(crate) const HELD: &str = "\
SELECT pg_catalog.count(*) FROM (
  SELECT 1 FROM pgnotify.events e
   WHERE e.xid >= pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
     AND e.channel OPERATOR(pg_catalog.=) ANY ($1)
   LIMIT 10001) h";

/// The most held events [`HELD`] counts.
pub(crate) const HELD_COUNTED: i64 = 10_001;

/// The oldest transaction still open, as far as this role may see: pid, application, age in
/// seconds (a prepared transaction has pid 0 and its gid as the application).
pub(crate) const BLOCKER: &str = "\
SELECT * FROM (
  SELECT a.pid, a.application_name,
         pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) a.xact_start)::float8,
         pg_catalog.age(a.backend_xid) AS age
    FROM pg_catalog.pg_stat_activity a
   WHERE a.backend_xid IS NOT NULL AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
  UNION ALL
  SELECT 0, 'prepared transaction ' || p.gid,
         pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) p.prepared)::float8,
         pg_catalog.age(p.transaction)
    FROM pg_catalog.pg_prepared_xacts p
) o ORDER BY o.age DESC LIMIT 1";

/// Registers a consumer ($1) on its channels ($2), or takes up its place; returns its
/// checkpoint, its channels as stored, and whether this statement created it.
pub(crate) const REGISTER: &str = "\
INSERT INTO pgnotify.consumers AS c (name, channels) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET seen_at = pg_catalog.now()
RETURNING c.xid::pg_catalog.text, c.id, c.channels, c.created_at OPERATOR(pg_catalog.=) pg_catalog.now()";

/// A registered consumer ($1), on a reconnect: its checkpoint and channels; no row when it was
/// dropped meanwhile.
pub(crate) const LOOKUP: &str = "\
SELECT c.xid::pg_catalog.text, c.id, c.channels, false
  FROM pgnotify.consumers c WHERE c.name OPERATOR(pg_catalog.=) $1";

/// Narrows a consumer ($1) to fewer channels ($2).
pub(crate) const NARROW: &str = "\
UPDATE pgnotify.consumers SET channels = $2 WHERE name OPERATOR(pg_catalog.=) $1";

/// Ends the session ($2, this consumer's own previous one) that still holds the name of
/// consumer $1 after its connection was lost; true when there was one to end.
pub(crate) const TAKE_BACK: &str = "\
SELECT pg_catalog.pg_terminate_backend(l.pid)
  FROM pg_catalog.pg_locks l,
       (SELECT pg_catalog.hashtextextended('pgnotify consumer ' || $1, 0) AS k) h
 WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
   AND l.objsubid OPERATOR(pg_catalog.=) 1
   AND l.classid OPERATOR(pg_catalog.=) ((h.k >> 32) & 4294967295)::pg_catalog.oid
   AND l.objid OPERATOR(pg_catalog.=) (h.k & 4294967295)::pg_catalog.oid
   AND l.pid OPERATOR(pg_catalog.=) $2";

/// Moves a consumer's checkpoint forward (never back); no row: the consumer was dropped.
pub(crate) const CHECKPOINT: &str = "\
UPDATE pgnotify.consumers
   SET xid = GREATEST(xid, $2::pg_catalog.text::pg_catalog.xid8),
       id = CASE WHEN (xid, id) < ($2::pg_catalog.text::pg_catalog.xid8, $3) THEN $3 ELSE id END,
       acked_at = pg_catalog.now(), seen_at = pg_catalog.now()
 WHERE name OPERATOR(pg_catalog.=) $1";

/// Says a consumer is alive while it has nothing to acknowledge.
pub(crate) const SEEN: &str = "\
UPDATE pgnotify.consumers SET seen_at = pg_catalog.now() WHERE name OPERATOR(pg_catalog.=) $1";

/// Deletes at most $1 events that every consumer following their channel has acknowledged.
/// Events of a channel that no consumer follows are kept (a consumer registered later gets
/// them). Returns how many were deleted.
pub(crate) const PRUNE: &str = "\
WITH floor AS (
  SELECT chs.ch, f.xid, f.id
    FROM (SELECT DISTINCT pg_catalog.unnest(channels) AS ch FROM pgnotify.consumers) chs,
    LATERAL (SELECT c.xid, c.id FROM pgnotify.consumers c
              WHERE chs.ch OPERATOR(pg_catalog.=) ANY (c.channels)
              ORDER BY c.xid, c.id LIMIT 1) f
), doomed AS (
  SELECT e.xid, e.id
    FROM pgnotify.events e JOIN floor ON e.channel OPERATOR(pg_catalog.=) floor.ch
   WHERE (e.xid, e.id) <= (floor.xid, floor.id)
   ORDER BY e.xid, e.id
   LIMIT $1
)
DELETE FROM pgnotify.events e USING doomed d WHERE e.xid = d.xid AND e.id = d.id";

/// Every consumer with its lag: events stored after its checkpoint on its channels, and the
/// age in seconds of the oldest of them.
pub(crate) const LIST: &str = "\
SELECT c.name, c.channels, c.xid::pg_catalog.text, c.id,
       pg_catalog.to_char(c.acked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
       pg_catalog.to_char(c.seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
       l.pending, pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) l.oldest)::float8
  FROM pgnotify.consumers c,
  LATERAL (SELECT pg_catalog.count(*) AS pending, pg_catalog.min(e.created_at) AS oldest
             FROM pgnotify.events e
            WHERE e.channel OPERATOR(pg_catalog.=) ANY (c.channels)
              AND (e.xid, e.id) > (c.xid, c.id)) l
 ORDER BY c.name";

/// Removes a consumer ($1); returns its name when there was one.
pub(crate) const DROP: &str =
    "DELETE FROM pgnotify.consumers WHERE name OPERATOR(pg_catalog.=) $1 RETURNING name";
