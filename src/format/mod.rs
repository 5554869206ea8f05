//! Encoders: how a notification or a gap becomes a line of text, one module per format (text,
//! NDJSON, psql's sentences, the bare payload), behind one [`Encoder`].
//!
//! Owns: the formats, colour (the rule of when, in [`use_color`], and the palette), and
//! control-character escaping in the human formats. Does not own: where lines go (`sink`),
//! where notifications come from (`stream`), or reading the environment (`config` does, and
//! hands [`ColorEnv`] in).

mod json;
mod paint;
mod payload;
mod psql;
mod raw;
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
    /// The payload alone, one line each, for `while read` loops.
    Raw,
}

impl Format {
    /// Every format with its name, as `--format` and the console's `format` spell it.
    pub(crate) const NAMED: [(Format, &'static str); 4] = [
        (Format::Text, "text"),
        (Format::Json, "json"),
        (Format::Psql, "psql"),
        (Format::Raw, "raw"),
    ];

    /// The format of a name.
    pub(crate) fn named(name: &str) -> Option<Format> {
        Format::NAMED
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(f, _)| *f)
    }

    /// Its name.
    pub(crate) fn name(self) -> &'static str {
        Format::NAMED
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("", |(_, n)| n)
    }

    /// The names, for messages: `text, json, psql, raw`.
    pub(crate) fn names() -> String {
        Format::NAMED.map(|(_, n)| n).join(", ")
    }
}

/// Presentation choices that depend on where the output goes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Style {
    /// Colour escapes in text output.
    pub(crate) color: bool,
    /// Escape control characters in names and payloads (psql and raw formats on a terminal;
    /// text always escapes them).
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
            Format::Json => json::write(out, n, self.json.data, self.style.escape),
            Format::Psql => psql::write(out, n, self.style),
            Format::Raw => raw::write(out, n, self.style),
        }
    }

    /// Another encoder with the same settings, for a second writer of the same stream.
    pub(crate) fn twin(&self) -> Encoder {
        Encoder::new(self.format, self.style, self.json)
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

/// The environment variables that decide colour under `--color auto`, as read by `config`
/// (each `None` when unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ColorEnv {
    /// `NO_COLOR`: set and not empty turns colour off (no-color.org).
    pub(crate) no_color: Option<String>,
    /// `CLICOLOR_FORCE`: set, not empty and not `0` turns colour on, terminal or not
    /// (bixense.com/clicolors).
    pub(crate) clicolor_force: Option<String>,
    /// `CLICOLOR`: `0` turns colour off, unless forced (bixense.com/clicolors).
    pub(crate) clicolor: Option<String>,
    /// `TERM`: `dumb` turns colour off.
    pub(crate) term: Option<String>,
}

/// Whether to colour a stream. The flag wins over the environment: `always` and `never` are
/// what they say. Under `auto`, in this order: `NO_COLOR` set and not empty: no colour;
/// `CLICOLOR_FORCE` set, not empty and not `0`: colour, even into a pipe; `TERM=dumb`: no
/// colour; else colour exactly when the stream is a terminal.
pub(crate) fn use_color(choice: ColorChoice, is_terminal: bool, env: &ColorEnv) -> bool {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto if set(&env.no_color) => false,
        ColorChoice::Auto
            if set(&env.clicolor_force) && env.clicolor_force.as_deref() != Some("0") =>
        {
            true
        }
        ColorChoice::Auto if env.clicolor.as_deref() == Some("0") => false,
        ColorChoice::Auto if env.term.as_deref() == Some("dumb") => false,
        ColorChoice::Auto => is_terminal,
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
    fn every_format_is_found_by_its_name() {
        for (format, name) in Format::NAMED {
            assert_eq!((Format::named(name), format.name()), (Some(format), name));
        }
        assert_eq!(Format::named("yaml"), None);
        assert_eq!(Format::names(), "text, json, psql, raw");
    }

    fn env(no_color: Option<&str>, clicolor_force: Option<&str>, term: Option<&str>) -> ColorEnv {
        ColorEnv {
            no_color: no_color.map(str::to_owned),
            clicolor_force: clicolor_force.map(str::to_owned),
            clicolor: None,
            term: term.map(str::to_owned),
        }
    }

    #[test]
    fn clicolor_0_turns_colour_off_unless_forced() {
        use ColorChoice::{Always, Auto};
        let zero = |force: Option<&str>| ColorEnv {
            clicolor: Some("0".into()),
            ..env(None, force, None)
        };
        assert!(!use_color(Auto, true, &zero(None)));
        assert!(use_color(Auto, true, &zero(Some("1"))));
        assert!(use_color(Always, true, &zero(None)));
        let one = ColorEnv {
            clicolor: Some("1".into()),
            ..env(None, None, None)
        };
        assert!(use_color(Auto, true, &one));
        assert!(!use_color(Auto, false, &one), "1 does not force");
    }

    #[test]
    fn auto_colours_a_terminal_only() {
        use ColorChoice::Auto;
        assert!(use_color(Auto, true, &env(None, None, Some("xterm"))));
        assert!(use_color(Auto, true, &env(None, None, None)), "TERM unset");
        assert!(!use_color(Auto, false, &env(None, None, Some("xterm"))));
        assert!(!use_color(Auto, false, &ColorEnv::default()));
    }

    #[test]
    fn no_color_set_and_not_empty_turns_colour_off() {
        use ColorChoice::Auto;
        assert!(!use_color(Auto, true, &env(Some("1"), None, None)));
        assert!(
            !use_color(Auto, true, &env(Some("0"), None, None)),
            "any value"
        );
        assert!(
            use_color(Auto, true, &env(Some(""), None, None)),
            "empty is unset"
        );
        // NO_COLOR comes first: it beats CLICOLOR_FORCE.
        assert!(!use_color(Auto, true, &env(Some("1"), Some("1"), None)));
        assert!(!use_color(Auto, false, &env(Some("1"), Some("1"), None)));
    }

    #[test]
    fn clicolor_force_colours_a_pipe_too() {
        use ColorChoice::Auto;
        assert!(use_color(Auto, false, &env(None, Some("1"), None)));
        assert!(use_color(Auto, false, &env(Some(""), Some("yes"), None)));
        assert!(!use_color(Auto, false, &env(None, Some("0"), None)));
        assert!(!use_color(Auto, false, &env(None, Some(""), None)));
        // It comes before TERM=dumb.
        assert!(use_color(Auto, false, &env(None, Some("1"), Some("dumb"))));
        // "0" and "" do not force, and do not forbid either.
        assert!(use_color(Auto, true, &env(None, Some("0"), None)));
    }

    #[test]
    fn a_dumb_terminal_gets_no_colour() {
        use ColorChoice::Auto;
        assert!(!use_color(Auto, true, &env(None, None, Some("dumb"))));
        assert!(use_color(Auto, true, &env(None, None, Some("dumb-ish"))));
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        use ColorChoice::{Always, Never};
        for e in [
            env(None, None, None),
            env(Some("1"), None, Some("dumb")),
            env(None, Some("1"), None),
        ] {
            for terminal in [true, false] {
                assert!(use_color(Always, terminal, &e), "{e:?}");
                assert!(!use_color(Never, terminal, &e), "{e:?}");
            }
        }
    }
}
