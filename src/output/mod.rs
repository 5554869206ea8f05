//! How notifications are written: one module per format, and the stdout sink.
//!
//! Owns: formats (text, json, psql), colour and control-character escaping, flushing policy.
//! Does not own: where notifications come from (`source`) or when the program stops (`cmd`).
//!
//! Flushing: on a terminal every line is flushed as written; elsewhere the sink writes every
//! notification already received and flushes once before blocking again, which is as prompt as
//! flushing each line and much cheaper (xh's buffer.rs does the same).

pub mod exec;
pub(crate) mod json;
mod psql;
pub mod tcp;
mod text;

use crate::events::Gap;
use crate::notification::Notification;
use std::borrow::Cow;
use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};

pub use json::{GapRecord, Record};

/// An output format for notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per notification: local time, channel, sender PID, payload.
    Text,
    /// NDJSON: one JSON object per line (DESIGN.md "Output").
    Json,
    /// psql's sentences, word for word.
    Psql,
}

/// Presentation choices that depend on where the output goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    /// Colour escapes in text output.
    pub color: bool,
    /// Escape control characters in names and payloads (text and psql formats on a terminal).
    pub escape: bool,
}

/// What goes into NDJSON besides the four contract fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonOptions {
    /// Add `data`: the payload parsed as JSON, when it is JSON (`--data`).
    pub data: bool,
    /// Write a gap record when notifications may have been lost (off: `--no-gap-records`).
    pub gap_records: bool,
}

/// Writes notifications in one format.
pub struct Printer {
    format: Format,
    style: Style,
    json: JsonOptions,
    text: text::Text,
}

impl Printer {
    pub fn new(format: Format, style: Style, json: JsonOptions) -> Printer {
        Printer {
            format,
            style,
            json,
            text: text::Text::new(),
        }
    }

    /// Writes one notification as one line, newline included.
    pub fn write(&self, out: &mut impl Write, n: &Notification) -> io::Result<()> {
        match self.format {
            Format::Text => self.text.write(out, n, self.style),
            Format::Json => json::write(out, n, self.json.data),
            Format::Psql => psql::write(out, n, self.style),
        }
    }

    /// Whether gap records are written (NDJSON without `--no-gap-records`).
    pub fn gap_records(&self) -> bool {
        self.format == Format::Json && self.json.gap_records
    }

    /// Writes a gap record: only NDJSON streams carry them (stderr always says it too).
    pub fn write_gap(&self, out: &mut impl Write, gap: &Gap) -> io::Result<()> {
        match self.format {
            Format::Json if self.json.gap_records => json::write_gap(out, gap),
            _ => Ok(()),
        }
    }
}

/// Where a relay writes: stdout, a TCP peer, TCP clients.
pub trait Sink {
    /// Writes one notification (buffered).
    fn write(&mut self, n: &Notification) -> io::Result<()>;
    /// Writes a gap record where the format has them.
    fn write_gap(&mut self, gap: &Gap) -> io::Result<()>;
    /// Hands everything written so far on.
    fn flush(&mut self) -> io::Result<()>;
    /// At the end of a run: hands everything on and waits (boundedly) until it is delivered.
    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// Notifications to stdout, flushed per line on a terminal and per batch elsewhere.
pub struct Stdout {
    out: BufWriter<StdoutLock<'static>>,
    printer: Printer,
    flush_each_line: bool,
}

impl Stdout {
    pub fn new(printer: Printer) -> Stdout {
        let stdout = io::stdout();
        let flush_each_line = stdout.is_terminal();
        Stdout {
            out: BufWriter::with_capacity(64 * 1024, stdout.lock()),
            printer,
            flush_each_line,
        }
    }
}

impl Sink for Stdout {
    /// Writes one notification; flushes it too on a terminal.
    fn write(&mut self, n: &Notification) -> io::Result<()> {
        self.printer.write(&mut self.out, n)?;
        if self.flush_each_line {
            self.out.flush()?;
        }
        Ok(())
    }

    /// Writes a gap record (in NDJSON), flushed at once: the consumer should know promptly.
    fn write_gap(&mut self, gap: &Gap) -> io::Result<()> {
        self.printer.write_gap(&mut self.out, gap)?;
        self.out.flush()
    }

    /// Hands everything written so far to the reader.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// True for the error a writer gets when its reader went away (`| head -1`).
pub fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// Whether to colour a stream: `--color always` forces it; `auto` needs a terminal, `NO_COLOR`
/// unset or empty, and `TERM` other than `dumb` (no-color.org).
pub fn use_color(
    choice: ColorChoice,
    is_terminal: bool,
    no_color: Option<&str>,
    term: Option<&str>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            is_terminal && no_color.is_none_or(str::is_empty) && term != Some("dumb")
        }
    }
}

/// The `--color` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when writing to a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    /// Always colour text output.
    Always,
    /// Never colour.
    Never,
}

/// Makes control characters visible: `\n`, `\t`, `\r`, `\\x1b`..., so user data can neither
/// break a line-per-event format nor drive the terminal (failure-modes S9).
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(escape_controls("plain é"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nb\tc\r\x1b[1m\u{85}"),
            "a\\nb\\tc\\r\\x1b[1m\\x85"
        );
    }

    #[test]
    fn color_rules() {
        use ColorChoice::*;
        assert!(use_color(Auto, true, None, Some("xterm")));
        assert!(use_color(Auto, true, Some(""), None));
        assert!(!use_color(Auto, true, Some("1"), None));
        assert!(!use_color(Auto, true, None, Some("dumb")));
        assert!(!use_color(Auto, false, None, None));
        assert!(use_color(Always, false, Some("1"), None));
        assert!(!use_color(Never, true, None, None));
    }
}
