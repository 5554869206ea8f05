//! The console's output: a [`Sink`] that prints events above the prompt, through the line
//! editor's printer, from a thread of its own.
//!
//! The loop writes into a buffer and never waits for the terminal: the printer thread takes
//! what has gathered and prints it as one block, so the editor redraws the prompt (and the
//! half-typed line) once per block, not once per event. A person cannot read hundreds of lines
//! a second: within any second, the first [`BUDGET`] lines are shown and the rest are
//! counted, then summarised at the end of that second, a line per channel
//! (`… 9,950 more on jobs, the last: …`). Messages (a reconnect, a warning) and gaps are
//! always shown. So a burst costs counting, not drawing, and typing stays responsive.

use crate::format::{Encoder, Format};
use crate::notification::{Gap, GapKind, Notification};
use crate::sanitize::escape_controls;
use crate::sink::Sink;
use anyhow::Result;
use crossterm::style::Stylize;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The most events shown in one [`WINDOW`]; the rest are summarised.
pub(super) const BUDGET: usize = 40;
/// How long the budget lasts.
pub(super) const WINDOW: Duration = Duration::from_secs(1);
/// How long the end of the run waits for the printer to empty the buffer.
const FINISH_WAIT: Duration = Duration::from_secs(2);
/// The most characters of a payload quoted in a summary line.
const SUMMARY_PAYLOAD: usize = 60;
/// The most channels a window's summary names, one line each; the others share a line.
const SUMMARY_CHANNELS: usize = 8;
/// The most text that waits for a terminal that does not take it (Ctrl-S, a stalled ssh):
/// past it, events are counted as in a burst.
const PENDING_MAX: usize = 256 << 10;

/// Writes a block of text above the prompt (the editor's external printer).
pub(super) type Print = Box<dyn FnMut(String) -> Result<(), String> + Send>;

/// The screen: what the loop (the sink), the printer thread and the commands share.
#[derive(Clone)]
pub(super) struct Screen {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// What a summary says of one channel.
struct Skipped {
    /// The order channels were first skipped in.
    order: usize,
    count: u64,
    last: String,
}

struct State {
    encoder: Encoder,
    color: bool,
    filter: Option<String>,
    /// Events received per channel this session, shown or not.
    counts: HashMap<String, u64>,
    /// Events left out by the filter.
    filtered: u64,
    /// Text waiting for the printer.
    pending: String,
    /// When the current window began, and how many events it has shown.
    window: Option<(Instant, usize)>,
    skipped: HashMap<String, Skipped>,
    /// The printer is writing a block.
    printing: bool,
    /// The run is over: the printer prints what is left and stops.
    closed: bool,
    /// A printer thread runs (closing waits for it).
    printer: bool,
    /// Until when closing waits for the printer.
    closing: Option<Instant>,
    /// The person is leaving (quit): the editor has stopped, its printer writes directly.
    leaving: bool,
    /// Write to the terminal past the editor (the last lines of a run that ends by itself).
    direct: bool,
}

impl Screen {
    /// A screen writing with `encoder`; `color` colours its own lines.
    pub(super) fn new(encoder: Encoder, color: bool) -> Screen {
        Screen {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    encoder,
                    color,
                    filter: None,
                    counts: HashMap::new(),
                    filtered: 0,
                    pending: String::new(),
                    window: None,
                    skipped: HashMap::new(),
                    printing: false,
                    closed: false,
                    printer: false,
                    closing: None,
                    leaving: false,
                    direct: false,
                }),
                changed: Condvar::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the printer thread, which hands each block to `print`.
    pub(super) fn start_printer(&self, mut print: Print) -> std::io::Result<()> {
        let screen = self.clone();
        self.state().printer = true;
        std::thread::Builder::new()
            .name("console-printer".into())
            .spawn(move || {
                while let Some(block) = screen.next_block() {
                    // Read apart: the lock is not held while the terminal is written.
                    let straight = screen.state().direct;
                    let failed = match straight {
                        false => print(block).is_err(),
                        true => direct(&block).is_err(),
                    };
                    let mut state = screen.state();
                    state.printing = false;
                    if failed {
                        // The terminal is gone: nothing more can be shown.
                        state.closed = true;
                        state.pending.clear();
                        state.skipped.clear();
                    }
                    screen.shared.changed.notify_all();
                }
            })?;
        Ok(())
    }

    /// Waits for something to print: text, or a window's summary once it is due. `None` once
    /// the screen is closed and everything is printed.
    fn next_block(&self) -> Option<String> {
        let mut state = self.state();
        loop {
            let now = Instant::now();
            let window_end = state.window.map(|(start, _)| start + WINDOW);
            if window_end.is_some_and(|end| now >= end) || state.closed {
                summarise(&mut state);
            }
            if !state.pending.is_empty() {
                state.printing = true;
                return Some(std::mem::take(&mut state.pending));
            }
            if state.closed {
                return None;
            }
            state = match window_end {
                Some(end) => {
                    let wait = end.saturating_duration_since(now);
                    self.shared
                        .changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// Shows one line of the console's own (a reply, a message), in arrival order with events.
    pub(super) fn say(&self, line: &str) {
        let mut state = self.state();
        state.pending.push_str(line);
        state.pending.push('\n');
        self.shared.changed.notify_all();
    }

    /// The person asked to leave: the end of the run goes through the editor as usual.
    pub(super) fn leaving(&self) {
        self.state().leaving = true;
    }

    /// A message of pgnotify's (`msg`): warnings in yellow when colour is on.
    pub(super) fn message(&self, line: &str) {
        let warning = line.starts_with("pgnotify: warning:") && self.state().color;
        match warning {
            true => self.say(&line.yellow().to_string()),
            false => self.say(line),
        }
    }

    /// A line of the console's own, dimmed when colour is on.
    pub(super) fn dim(&self, text: &str) -> String {
        match self.state().color {
            true => text.dim().to_string(),
            false => text.to_owned(),
        }
    }

    pub(super) fn set_format(&self, format: Format) {
        let mut state = self.state();
        state.encoder = state.encoder.reformat(format);
    }

    pub(super) fn format(&self) -> Format {
        self.state().encoder.format()
    }

    pub(super) fn set_filter(&self, filter: Option<String>) {
        self.state().filter = filter;
    }

    pub(super) fn filter(&self) -> (Option<String>, u64) {
        let state = self.state();
        (state.filter.clone(), state.filtered)
    }

    /// Events received per channel, by channel name.
    pub(super) fn counts(&self) -> Vec<(String, u64)> {
        let mut counts: Vec<(String, u64)> = self
            .state()
            .counts
            .iter()
            .map(|(c, n)| (c.clone(), *n))
            .collect();
        counts.sort();
        counts
    }

    /// The run is over: the printer prints what is left, waited for a short while.
    pub(super) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        self.shared.changed.notify_all();
        // Once, however often it is called: a terminal that takes nothing holds the end
        // [`FINISH_WAIT`] at most.
        let deadline = *state
            .closing
            .get_or_insert_with(|| Instant::now() + FINISH_WAIT);
        while state.printer
            && (state.printing || !state.pending.is_empty() || !state.skipped.is_empty())
            && Instant::now() < deadline
        {
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Writes a block to the terminal directly, over the prompt's line.
fn direct(block: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(b"\r\x1b[K")?;
    out.write_all(block.as_bytes())?;
    out.flush()
}

/// Adds the summary of the window that ended to the pending text, and starts a new one.
fn summarise(state: &mut State) {
    state.window = None;
    let mut skipped: Vec<(String, Skipped)> = state.skipped.drain().collect();
    // The busiest channels by name, the rest together.
    skipped.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.1.order.cmp(&b.1.order)));
    let rest: Vec<(String, Skipped)> = match skipped.len() > SUMMARY_CHANNELS {
        true => skipped.split_off(SUMMARY_CHANNELS - 1),
        false => Vec::new(),
    };
    let mut lines: Vec<String> = Vec::new();
    for (channel, skipped) in skipped {
        let mut last: String = escape_controls(&skipped.last).into_owned();
        if last.chars().count() > SUMMARY_PAYLOAD {
            last = last.chars().take(SUMMARY_PAYLOAD).collect::<String>() + "…";
        }
        let line = format!(
            "… {} more on {}, the last: {last}",
            thousands(skipped.count),
            escape_controls(&channel)
        );
        lines.push(line);
    }
    if !rest.is_empty() {
        let count: u64 = rest.iter().map(|(_, s)| s.count).sum();
        lines.push(format!(
            "… {} more on {} other channels",
            thousands(count),
            thousands(rest.len() as u64)
        ));
    }
    for line in lines {
        let line = match state.color {
            true => line.dim().to_string(),
            false => line,
        };
        state.pending.push_str(&line);
        state.pending.push('\n');
    }
}

/// `9950` as `9,950`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

impl Sink for Screen {
    fn write(&mut self, n: &Notification) -> Result<()> {
        // Debug builds only, for the test that the terminal is put back after a panic while
        // the editor is in raw mode: no release build has this.
        #[cfg(debug_assertions)]
        if n.payload == "pgnotify:test:panic" {
            panic!("the panic a test asked for");
        }
        let mut state = self.state();
        let state = &mut *state;
        match state.counts.get_mut(&n.channel) {
            Some(count) => *count += 1,
            None => {
                state.counts.insert(n.channel.clone(), 1);
            }
        }
        if let Some(filter) = &state.filter
            && !n.payload.contains(filter.as_str())
        {
            state.filtered += 1;
            return Ok(());
        }
        let now = Instant::now();
        let (_, shown) = state.window.get_or_insert((now, 0));
        if *shown < BUDGET && state.pending.len() < PENDING_MAX {
            *shown += 1;
            let mut line = Vec::new();
            state.encoder.write(&mut line, n)?;
            state.pending.push_str(&String::from_utf8_lossy(&line));
            return Ok(());
        }
        let order = state.skipped.len();
        // A payload that is not UTF-8 (a SQL_ASCII database) with its bytes as `\xHH`.
        let last = match &n.exact_payload {
            Some(bytes) => crate::sanitize::escape_bytes(bytes),
            None => n.payload.clone(),
        };
        match state.skipped.get_mut(&n.channel) {
            Some(skipped) => {
                skipped.count += 1;
                skipped.last = last;
            }
            None => {
                state.skipped.insert(
                    n.channel.clone(),
                    Skipped {
                        order,
                        count: 1,
                        last,
                    },
                );
            }
        }
        Ok(())
    }

    fn write_gap(&mut self, gap: &Gap) -> Result<()> {
        let time = |t: jiff::Timestamp| {
            jiff::tz::TimeZone::system()
                .to_datetime(t)
                .strftime("%H:%M:%S%.3f")
                .to_string()
        };
        let line = match (gap.kind, gap.until) {
            (GapKind::Overflow, _) => format!(
                "-- {} notifications were dropped: they came faster than the console (and \
                 --fetch, if on) could take them",
                thousands(gap.dropped)
            ),
            (_, Some(until)) => format!(
                "-- reconnected: notifications sent between {} and {} may be lost ({}); \
                 listening again",
                time(gap.from),
                time(until),
                escape_controls(&gap.reason)
            ),
            (_, None) => format!(
                "-- gave up: notifications since {} are lost ({})",
                time(gap.from),
                escape_controls(&gap.reason)
            ),
        };
        let line = match self.state().color {
            true => line.yellow().to_string(),
            false => line,
        };
        if gap.until.is_none() {
            // The run is ending (the last gap, given up): from here the lines go straight to
            // the terminal, or the editor's printer could be left holding this one at the exit.
            self.state().direct = true;
        }
        self.say(&line);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.shared.changed.notify_all();
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        {
            let mut state = self.state();
            // The run ends while the editor may still read (a signal, the server gone for
            // good): the editor's printer would only queue the last lines for a thread that
            // is about to end with the process, so they are written straight to the terminal.
            if !state.leaving {
                state.direct = true;
            }
        }
        self.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{JsonOptions, Style};

    fn event(channel: &str, payload: &str) -> Notification {
        Notification {
            channel: channel.into(),
            payload: payload.into(),
            exact_payload: None,
            pid: 1,
            received_at: jiff::Timestamp::UNIX_EPOCH,
            fetched: None,
            stored: None,
        }
    }

    #[test]
    fn a_burst_shows_the_budget_then_a_summary_per_channel() {
        let encoder = Encoder::new(Format::Json, Style::default(), JsonOptions::default());
        let mut screen = Screen::new(encoder, false);
        for i in 0..10_000 {
            screen.write(&event("jobs", &i.to_string())).unwrap();
        }
        screen.write(&event("other", "x\ny")).unwrap();
        let mut state = screen.state();
        summarise(&mut state);
        assert_eq!(state.pending.lines().count(), BUDGET + 2);
        assert!(
            state
                .pending
                .contains("… 9,960 more on jobs, the last: 9999\n"),
            "{}",
            state.pending
        );
        assert!(
            state
                .pending
                .contains("… 1 more on other, the last: x\\ny\n")
        );
        assert_eq!(state.counts["jobs"], 10_000);
        state.pending.clear();
    }

    #[test]
    fn a_burst_on_many_channels_is_summarised_in_a_few_lines() {
        let encoder = Encoder::new(Format::Json, Style::default(), JsonOptions::default());
        let mut screen = Screen::new(encoder, false);
        for i in 0..BUDGET {
            screen.write(&event("first", &i.to_string())).unwrap();
        }
        for i in 0..20_000 {
            screen
                .write(&event(&format!("c{}", i % 5_000), "p"))
                .unwrap();
        }
        screen.write(&event("c7", "last")).unwrap();
        let mut state = screen.state();
        state.pending.clear();
        summarise(&mut state);
        let lines: Vec<&str> = state.pending.lines().collect();
        assert_eq!(lines.len(), SUMMARY_CHANNELS, "{lines:?}");
        assert_eq!(lines[0], "… 5 more on c7, the last: last");
        assert_eq!(
            lines[SUMMARY_CHANNELS - 1],
            "… 19,972 more on 4,993 other channels"
        );
    }

    #[test]
    fn the_filter_keeps_counting() {
        let encoder = Encoder::new(Format::Json, Style::default(), JsonOptions::default());
        let mut screen = Screen::new(encoder, false);
        screen.set_filter(Some("id\":4".into()));
        screen.write(&event("a", "{\"id\":4}")).unwrap();
        screen.write(&event("a", "{\"id\":5}")).unwrap();
        assert_eq!(screen.counts(), [("a".to_owned(), 2)]);
        assert_eq!(screen.filter(), (Some("id\":4".into()), 1));
        assert_eq!(screen.state().pending.lines().count(), 1);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
