//! `doctor`'s report: the checks (`Check`), and how they are written: aligned text for people
//! (wrapped at 100 columns, escaped, coloured by `format::use_color`'s verdict), or one JSON
//! document.

use crate::config::DoctorSettings;
use crate::exit::{Exit, StdoutError};
use crate::sanitize::escape_controls;
use anyhow::Result;
use serde::Serialize;
use serde_json::{Value, json};
use std::io::Write;

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Status {
    Ok,
    Warning,
    Problem,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Problem => "problem",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Status::Ok => "\x1b[32m",
            Status::Warning => "\x1b[33m",
            Status::Problem => "\x1b[1;31m",
        }
    }
}

/// One check, as the report shows it and as `--json` writes it (a contract: fields are added,
/// never renamed or removed).
#[derive(Debug, Serialize)]
pub(super) struct Check {
    /// Stable, snake_case: `settings`, `password`, `connection`, `server`, `tls`, `listen`,
    /// `notify_round_trip`, `queue`, `idle_in_transaction`, `idle_timeouts`,
    /// `watched_tables`, `watched_table`, `channel`.
    pub(super) name: &'static str,
    /// What it is about, for the checks that come once per thing (a table, a channel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) subject: Option<String>,
    pub(super) status: Status,
    /// One sentence.
    pub(super) detail: String,
    /// More lines, one fact each.
    pub(super) notes: Vec<String>,
    /// For a warning or a problem, the fix in one sentence; null otherwise.
    pub(super) fix: Option<String>,
    /// The facts behind the check, for programs (its shape is per check).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub(super) data: Value,
}

impl Check {
    pub(super) fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name,
            subject: None,
            status,
            detail: detail.into(),
            notes: Vec::new(),
            fix: None,
            data: Value::Null,
        }
    }

    pub(super) fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    pub(super) fn note(mut self, note: impl Into<String>) -> Check {
        self.notes.push(note.into());
        self
    }

    pub(super) fn data(mut self, data: Value) -> Check {
        self.data = data;
        self
    }

    pub(super) fn subject(mut self, subject: &str) -> Check {
        self.subject = Some(subject.to_owned());
        self
    }
}

/// Writes the report: one JSON document with `--json`, else aligned text.
pub(super) fn write_report(checks: &[Check], settings: &DoctorSettings, exit: Exit) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let text = match settings.json {
        true => {
            let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
            let doc = json!({
                "doctor": 1,
                "status": status,
                "exit": exit.code(),
                "problems": checks.iter().filter(|c| c.status == Status::Problem).count(),
                "warnings": checks.iter().filter(|c| c.status == Status::Warning).count(),
                "checks": checks,
            });
            format!("{doc}\n")
        }
        false => render(checks, settings.color),
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(StdoutError)?;
    Ok(())
}

/// Where a check's text starts, and the width it is wrapped to (clap's help is 100 wide too).
const TEXT_COLUMN: usize = 30;
const WIDTH: usize = 100;

/// A line cut at spaces into pieces that fit after [`TEXT_COLUMN`] (continuations are indented
/// two more); a word longer than that stays whole. A line that fits is kept as it is, so the
/// settings' columns stay aligned.
fn wrap(line: &str) -> Vec<String> {
    let room = WIDTH - TEXT_COLUMN;
    if line.chars().count() <= room {
        return vec![line.to_owned()];
    }
    let mut pieces = Vec::new();
    let mut current = String::new();
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        let limit = match pieces.is_empty() {
            true => room,
            false => room - 2,
        };
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > limit {
            pieces.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    pieces.push(current);
    pieces
}

/// The people's report: one block per check, the status in a column, the fix under it.
fn render(checks: &[Check], color: bool) -> String {
    let mut out = String::new();
    for check in checks {
        let word = check.status.word();
        let status = match color {
            true => format!("{}{word:<8}\x1b[0m", check.status.color()),
            false => format!("{word:<8}"),
        };
        let title = match &check.subject {
            Some(subject) => format!("{} {}", check.name, escape_controls(subject)),
            None => check.name.to_owned(),
        };
        // Escaped again here, whatever a check did: nothing from outside reaches the terminal raw.
        let lines = std::iter::once(check.detail.clone())
            .chain(check.notes.iter().cloned())
            .chain(check.fix.iter().map(|fix| format!("fix: {fix}")));
        for (i, line) in lines.enumerate() {
            for (j, piece) in wrap(&escape_controls(&line)).into_iter().enumerate() {
                match (i, j) {
                    (0, 0) => out.push_str(&format!("{status} {title:<20} {piece}\n")),
                    (_, 0) => out.push_str(&format!("{:TEXT_COLUMN$}{piece}\n", "")),
                    _ => out.push_str(&format!("{:TEXT_COLUMN$}  {piece}\n", "")),
                }
            }
        }
    }
    let problems = checks
        .iter()
        .filter(|c| c.status == Status::Problem)
        .count();
    let warnings = checks
        .iter()
        .filter(|c| c.status == Status::Warning)
        .count();
    out.push_str(&match (problems, warnings) {
        (0, 0) => "healthy: no problem found\n".to_owned(),
        (0, w) => format!("healthy, with {}\n", counted(w, "warning")),
        (p, 0) => format!("{}: see each fix above\n", counted(p, "problem")),
        (p, w) => format!(
            "{}, {}: see each fix above\n",
            counted(p, "problem"),
            counted(w, "warning")
        ),
    });
    out
}

/// "1 problem", "2 problems".
fn counted(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_ends_with_a_verdict_and_colours_only_when_asked() {
        let checks = vec![
            Check::new("listen", Status::Ok, "fine"),
            Check::new("queue", Status::Problem, "full").fix("empty it"),
        ];
        let plain = render(&checks, false);
        assert!(!plain.contains('\x1b'));
        assert!(plain.contains("fix: empty it"));
        assert!(plain.ends_with("1 problem: see each fix above\n"));
        assert!(render(&checks, true).contains("\x1b[1;31mproblem"));
        let long = vec![Check::new("queue", Status::Ok, "word ".repeat(40)).note("a\x1bb")];
        let text = render(&long, false);
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with(&" ".repeat(TEXT_COLUMN + 2))
        );
        assert!(text.contains("a\\x1bb") && !text.contains('\x1b'), "{text}");
    }
}
