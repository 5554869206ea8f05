//! The line editor: rustyline with readline's keys (as in psql), history in a file, Tab
//! completion of commands, formats and the channels seen, and a Ctrl-C that says whether the
//! line it cleared was empty.

use super::command::COMMANDS;
use super::screen::Screen;
use crate::format::Format;
use crate::stream::Control;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{
    Cmd, CompletionType, ConditionalEventHandler, Config, Context, EditMode, Editor, Event,
    EventContext, EventHandler, Helper, KeyEvent, RepeatCount,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The most lines the history file keeps.
const HISTORY_SIZE: usize = 1000;

pub(super) type LineEditor = Editor<Completion, FileHistory>;

/// Builds the editor, with the history of earlier runs when there is a file for it. Also
/// returns the flag that the last Ctrl-C found the line empty.
pub(super) fn new(
    history: Option<&Path>,
    control: Arc<Control>,
    screen: Screen,
) -> rustyline::Result<(LineEditor, Arc<AtomicBool>)> {
    let config = Config::builder()
        .edit_mode(EditMode::Emacs)
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .history_ignore_dups(true)?
        .history_ignore_space(true)
        .max_history_size(HISTORY_SIZE)?
        .build();
    let mut editor = LineEditor::with_config(config)?;
    editor.set_helper(Some(Completion { control, screen }));
    let empty = Arc::new(AtomicBool::new(false));
    editor.bind_sequence(
        KeyEvent::ctrl('C'),
        EventHandler::Conditional(Box::new(CtrlC(Arc::clone(&empty)))),
    );
    if let Some(path) = history {
        prepare_history(path);
        match editor.load_history(path) {
            Ok(()) => {}
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => crate::msg::warn(&format!(
                "could not read the console's history {}: {e}",
                path.display()
            )),
        }
    }
    Ok((editor, empty))
}

/// Makes the history's directory (0700) and file (0600): payloads typed there stay the
/// user's.
fn prepare_history(path: &Path) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path);
}

/// The history file, until saving to it fails once.
pub(super) struct History(std::cell::RefCell<Option<PathBuf>>);

impl History {
    pub(super) fn new(path: Option<PathBuf>) -> History {
        History(std::cell::RefCell::new(path))
    }
}

/// Adds `line` to the history, and to its file at once: a console killed later keeps it. A
/// file that cannot be written is said once, and then left alone.
pub(super) fn remember(editor: &mut LineEditor, history: &History, line: &str) {
    if !matches!(editor.add_history_entry(line), Ok(true)) {
        return;
    }
    let mut file = history.0.borrow_mut();
    if let Some(path) = file.as_ref()
        && let Err(e) = editor.append_history(path)
    {
        crate::msg::warn(&format!(
            "could not save the console's history in {}: {e}; it is kept for this run only",
            path.display()
        ));
        *file = None;
    }
}

/// Notes whether the line was empty, then lets rustyline interrupt as usual.
struct CtrlC(Arc<AtomicBool>);

impl ConditionalEventHandler for CtrlC {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        self.0.store(ctx.line().is_empty(), Ordering::Relaxed);
        None
    }
}

/// Completes command words, then what each takes: channels (listened on or seen) for
/// `listen`, `unlisten` and `notify`, format names for `format`.
pub(super) struct Completion {
    control: Arc<Control>,
    screen: Screen,
}

impl Completion {
    fn channels(&self) -> Vec<String> {
        let mut names = self.control.channels();
        for (channel, _) in self.screen.counts() {
            if !names.contains(&channel) {
                names.push(channel);
            }
        }
        names.retain(|n| !n.starts_with("pgnotify.heartbeat."));
        names
    }
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = word_start(before);
        let word = &before[start..];
        let first = before.split_whitespace().next().unwrap_or("");
        let typing_first = !before[..start].chars().any(|c| !c.is_whitespace());
        let words: Vec<String> = if typing_first {
            COMMANDS.iter().map(|c| c.to_string()).collect()
        } else {
            match first.to_ascii_lowercase().as_str() {
                "listen" | "unlisten" | "notify" => self.channels(),
                "format" => Format::NAMED.iter().map(|(_, f)| f.to_string()).collect(),
                _ => Vec::new(),
            }
        };
        // `notify` takes one channel, then a payload.
        if first.eq_ignore_ascii_case("notify") && before[..start].split_whitespace().count() > 1 {
            return Ok((start, Vec::new()));
        }
        let candidates = words
            .into_iter()
            // A name that would act on the terminal is left out: it can still be typed.
            .filter(|w| !w.chars().any(crate::sanitize::hidden))
            .filter(|w| w.starts_with(word) || quoted(w).starts_with(word))
            .map(|w| Pair {
                replacement: match w.contains(char::is_whitespace) || w.contains('"') {
                    true => quoted(&w),
                    false => w.clone(),
                } + " ",
                display: w,
            })
            .collect();
        Ok((start, candidates))
    }
}

/// Where the word being completed begins: after the last whitespace outside double quotes,
/// or at the quote that opens a name still being typed (`unlisten "sp a`).
fn word_start(before: &str) -> usize {
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in before.char_indices() {
        match c {
            '"' if !quoted => {
                quoted = true;
                start = i;
            }
            '"' => quoted = false,
            c if c.is_whitespace() && !quoted => start = i + c.len_utf8(),
            _ => {}
        }
    }
    start
}

/// A name in double quotes, `""` for a quote.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}

#[cfg(test)]
mod tests {
    use super::word_start;

    #[test]
    fn the_word_starts_after_any_space_outside_quotes() {
        assert_eq!(word_start("listen or"), 7);
        assert_eq!(word_start("listen\u{a0}or"), "listen\u{a0}".len());
        assert_eq!(word_start("listen\u{3000}"), "listen\u{3000}".len());
        assert_eq!(word_start("unlisten \"sp a"), 9);
        assert_eq!(word_start("unlisten \"sp a\" b"), 16);
        assert_eq!(word_start("lis"), 0);
    }
}
