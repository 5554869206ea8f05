//! Encoders: how a notification or a gap becomes a line of text, one module per format (text,
//! NDJSON, psql's sentences), behind one [`Encoder`].
//!
//! Owns: the formats, colour, control-character escaping in the human formats. Does not own:
//! where lines go (`sink`) or where notifications come from (`stream`).

mod json;
mod psql;
mod text;

pub(crate) use json::write_gap as write_gap_record;

use crate::notification::{Gap, Notification};
use std::io::{self, Write};

/// An output format for notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// One human-readable line per notification: local time, channel, sender PID, payload.
    Text,
    /// NDJSON: one JSON object per line (README "Output formats").
    Json,
    /// psql's sentences, word for word.
    Psql,
}

/// Presentation choices that depend on where the output goes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Style {
    /// Colour escapes in text output.
    pub(crate) color: bool,
    /// Escape control characters in names and payloads (text and psql formats on a terminal).
    pub(crate) escape: bool,
}

/// What goes into NDJSON besides the four contract fields.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JsonOptions {
    /// Add `data`: the payload parsed as JSON, when it is JSON (`--data`).
    pub(crate) data: bool,
    /// Write a gap record when notifications may have been lost (off: `--no-gap-records`).
    pub(crate) gap_records: bool,
}

/// Encodes notifications in one format.
pub(crate) struct Encoder {
    format: Format,
    style: Style,
    json: JsonOptions,
    text: text::Text,
}

impl Encoder {
    pub(crate) fn new(format: Format, style: Style, json: JsonOptions) -> Encoder {
        Encoder {
            format,
            style,
            json,
            text: text::Text::new(),
        }
    }

    /// Writes one notification as one line, newline included.
    pub(crate) fn write(&self, out: &mut impl Write, n: &Notification) -> io::Result<()> {
        match self.format {
            Format::Text => self.text.write(out, n, self.style),
            Format::Json => json::write(out, n, self.json.data),
            Format::Psql => psql::write(out, n, self.style),
        }
    }

    /// The same presentation in another format (the console's `format` command).
    pub(crate) fn reformat(&self, format: Format) -> Encoder {
        Encoder::new(format, self.style, self.json)
    }

    /// The format it writes.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Whether gap records are written (NDJSON without `--no-gap-records`).
    pub(crate) fn gap_records(&self) -> bool {
        self.format == Format::Json && self.json.gap_records
    }

    /// Writes a gap record: only NDJSON streams carry them (stderr always says it too).
    pub(crate) fn write_gap(&self, out: &mut impl Write, gap: &Gap) -> io::Result<()> {
        match self.format {
            Format::Json if self.json.gap_records => json::write_gap(out, gap),
            _ => Ok(()),
        }
    }
}

/// Whether to colour a stream: `--color always` forces it; `auto` needs a terminal, `NO_COLOR`
/// unset or empty, and `TERM` other than `dumb` (no-color.org).
pub(crate) fn use_color(
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ColorChoice {
    /// Colour when writing to a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    /// Always colour text output.
    Always,
    /// Never colour.
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;

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
