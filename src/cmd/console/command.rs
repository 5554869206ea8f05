//! What a line typed at the console means: the console's own commands, and the few SQL
//! statements a psql user types out of habit.
//!
//! - Commands: `listen NAME...`, `unlisten NAME...` or `unlisten *`, `notify NAME [PAYLOAD]`,
//!   `channels`, `format [NAME]`, `filter [TEXT|off]`, `clear`, `help`, `quit`. Names are exact,
//!   as on the command line (`listen Orders` is "Orders"); a name with spaces is written in
//!   double quotes, with `""` for a quote in it.
//! - A payload (or filter text) is the rest of the line as typed, trimmed; or one quoted string:
//!   `'...'` with `''` for a quote (SQL's rule), or `"..."` with `\"`, `\\`, `\n` and `\t`.
//! - A line that ends with `;` is SQL: `LISTEN x;`, `UNLISTEN x;`, `UNLISTEN *;`,
//!   `NOTIFY x;`, `NOTIFY x, 'payload';` and `SELECT pg_notify('x', 'payload');`, with SQL's
//!   rules: an unquoted name is folded to lower case, as the server would fold it.

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Command {
    Listen(Vec<String>),
    Unlisten(Vec<String>),
    UnlistenAll,
    Notify {
        channel: String,
        payload: String,
    },
    Channels,
    /// `format` (None: say which) or `format NAME`.
    Format(Option<String>),
    Filter(Filter),
    Clear,
    Help,
    Quit,
}

/// The argument of `filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Filter {
    Show,
    Off,
    Contains(String),
}

/// A parsed line: what to do, and a hint when SQL folded a name the user may have meant
/// exactly.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) commands: Vec<Command>,
    pub(super) hint: Option<String>,
}

/// The console's command words, for help and completion.
pub(super) const COMMANDS: &[&str] = &[
    "listen", "unlisten", "notify", "channels", "format", "filter", "clear", "help", "quit",
];

/// Parses one line; an error is the one-line reason, for the person to read.
pub(super) fn parse(line: &str) -> Result<Line, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Ok(Line::default());
    }
    let (word, rest) = split_word(trimmed);
    // SQL is a line of SQL's verbs ending with `;` (`filter a;` is the console's filter).
    let body = without_comment(trimmed);
    let verb = word.to_ascii_lowercase();
    if body.ends_with(';') && ["listen", "unlisten", "notify", "select"].contains(&verb.as_str()) {
        return sql(body);
    }
    let command = match word.to_ascii_lowercase().as_str() {
        "listen" => Command::Listen(names(rest)?),
        "unlisten" if rest.trim() == "*" => Command::UnlistenAll,
        "unlisten" => Command::Unlisten(names(rest)?),
        "notify" => {
            let (channel, payload) = name(rest.trim_start())?;
            let channel = channel.ok_or("notify needs a channel: notify CHANNEL [PAYLOAD]")?;
            Command::Notify {
                channel,
                payload: text(payload)?,
            }
        }
        "channels" => no_argument(Command::Channels, rest)?,
        "format" => match rest.trim() {
            "" => Command::Format(None),
            name => Command::Format(Some(name.to_ascii_lowercase())),
        },
        "filter" => match rest.trim() {
            "" => Command::Filter(Filter::Show),
            "off" => Command::Filter(Filter::Off),
            _ => Command::Filter(Filter::Contains(text(rest)?)),
        },
        "clear" => no_argument(Command::Clear, rest)?,
        "help" | "\\?" | "?" => Command::Help,
        "quit" | "exit" | "\\q" => no_argument(Command::Quit, rest)?,
        _ if word.starts_with('\\') => {
            return Err(format!(
                "unknown command {word}: only \\q and \\? are psql's here; type help"
            ));
        }
        _ => {
            return Err(format!(
                "unknown command \"{word}\"; type help (SQL ends with a semicolon)"
            ));
        }
    };
    Ok(Line {
        commands: vec![command],
        hint: None,
    })
}

fn no_argument(command: Command, rest: &str) -> Result<Command, String> {
    match rest.trim() {
        "" => Ok(command),
        extra => Err(format!("unexpected \"{extra}\" after the command")),
    }
}

/// The line without a trailing SQL comment (`-- ...` outside quotes), trimmed.
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '-') if chars.peek().is_some_and(|&(_, next)| next == '-') => {
                return line[..i].trim_end();
            }
            _ => {}
        }
    }
    line
}

/// The first word and what follows it.
fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// Channel names separated by spaces, each exact or in double quotes.
fn names(mut rest: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    loop {
        let (name, after) = name(rest.trim_start())?;
        match name {
            Some(name) => out.push(name),
            None if out.is_empty() => return Err("no channel given".into()),
            None => return Ok(out),
        }
        rest = after;
    }
}

/// One channel name at the start of `s`: a word, or `"..."` with `""` for a quote.
fn name(s: &str) -> Result<(Option<String>, &str), String> {
    if s.is_empty() {
        return Ok((None, s));
    }
    if let Some(quoted) = s.strip_prefix('"') {
        let (name, after) = until_quote(quoted, '"')?;
        if name.is_empty() {
            return Err("a channel name cannot be empty (\"\")".into());
        }
        if after.starts_with(|c: char| !c.is_whitespace()) {
            return Err(format!(
                "unexpected \"{}\" right after the quoted name \"{name}\" (a space between names)",
                split_word(after).0
            ));
        }
        return Ok((Some(name), after));
    }
    let (word, after) = split_word(s);
    // `NOTIFY x, 'p'`, `LISTEN x; -- why` or `LISTEN x -- why`: psql's SQL without its `;`,
    // not names.
    if word.ends_with([',', ';']) || word.starts_with("--") {
        return Err(format!(
            "\"{word}\" looks like SQL: end the line with ; (NOTIFY x, 'payload';), or quote \
             the name (\"{word}\")"
        ));
    }
    Ok((Some(word.to_owned()), after))
}

/// Text up to the closing `quote`, where a doubled quote stands for one.
fn until_quote(s: &str, quote: char) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != quote {
            out.push(c);
            continue;
        }
        if chars.peek().is_some_and(|&(_, next)| next == quote) {
            chars.next();
            out.push(quote);
            continue;
        }
        return Ok((out, &s[i + c.len_utf8()..]));
    }
    Err(format!("unterminated {quote}...{quote}"))
}

/// A payload or filter text: one quoted string, or the rest of the line as typed.
fn text(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (value, after) = if let Some(quoted) = s.strip_prefix('\'') {
        until_quote(quoted, '\'')?
    } else if let Some(quoted) = s.strip_prefix('"') {
        backslashed(quoted)?
    } else {
        return Ok(s.to_owned());
    };
    match after.trim() {
        "" => Ok(value),
        extra => Err(format!(
            "unexpected \"{extra}\" after the quoted text (quote all of it, or none)"
        )),
    }
}

/// `"..."` with `\"`, `\\`, `\n` and `\t`.
fn backslashed(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c @ ('"' | '\\'))) => out.push(c),
                Some((_, c)) => return Err(format!("unknown escape \\{c} (use \\\\ for \\)")),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated \"...\"".into())
}

/// SQL statements, each ending with `;`.
fn sql(line: &str) -> Result<Line, String> {
    let mut out = Line::default();
    let mut lexer = Lexer::new(line);
    loop {
        let Some(first) = lexer.next()? else {
            return Ok(out);
        };
        let Token::Word(verb) = &first else {
            return Err(not_understood());
        };
        let command = match verb.to_ascii_lowercase().as_str() {
            "listen" => Command::Listen(vec![lexer.identifier(&mut out.hint)?]),
            "unlisten" => match lexer.peek()? {
                Some(Token::Star) => {
                    lexer.next()?;
                    Command::UnlistenAll
                }
                _ => Command::Unlisten(vec![lexer.identifier(&mut out.hint)?]),
            },
            "notify" => {
                let channel = lexer.identifier(&mut out.hint)?;
                let payload = match lexer.peek()? {
                    Some(Token::Comma) => {
                        lexer.next()?;
                        lexer.string()?
                    }
                    _ => String::new(),
                };
                Command::Notify { channel, payload }
            }
            "select" => {
                let call = lexer.next()?;
                if !matches!(&call, Some(Token::Word(w)) if w.eq_ignore_ascii_case("pg_notify")
                    || w.eq_ignore_ascii_case("pg_catalog.pg_notify"))
                {
                    return Err(not_understood());
                }
                lexer.expect(Token::Open)?;
                let channel = lexer.string()?;
                lexer.expect(Token::Comma)?;
                let payload = lexer.string()?;
                lexer.expect(Token::Close)?;
                Command::Notify { channel, payload }
            }
            _ => return Err(not_understood()),
        };
        lexer.expect(Token::Semicolon)?;
        out.commands.push(command);
    }
}

fn not_understood() -> String {
    "only LISTEN, UNLISTEN, NOTIFY and SELECT pg_notify(...) are run here (this is not psql); \
     type help"
        .into()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// A keyword or unquoted name, as typed.
    Word(String),
    /// `"..."`: a name, exact.
    Quoted(String),
    /// `'...'`: a string.
    Str(String),
    Comma,
    Semicolon,
    Star,
    Open,
    Close,
}

struct Lexer<'a> {
    rest: &'a str,
    peeked: Option<Option<Token>>,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Lexer<'a> {
        Lexer {
            rest: s,
            peeked: None,
        }
    }

    fn peek(&mut self) -> Result<Option<&Token>, String> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex()?);
        }
        Ok(self.peeked.as_ref().and_then(Option::as_ref))
    }

    fn next(&mut self) -> Result<Option<Token>, String> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lex(),
        }
    }

    fn expect(&mut self, want: Token) -> Result<(), String> {
        match self.next()? {
            Some(got) if got == want => Ok(()),
            Some(Token::Word(w)) | Some(Token::Quoted(w)) | Some(Token::Str(w)) => {
                Err(format!("unexpected \"{w}\" (expected {})", describe(&want)))
            }
            Some(got) => Err(format!(
                "unexpected {} (expected {})",
                describe(&got),
                describe(&want)
            )),
            None => Err(format!("expected {}", describe(&want))),
        }
    }

    /// A name: unquoted ones are folded to lower case, as the server folds them.
    fn identifier(&mut self, hint: &mut Option<String>) -> Result<String, String> {
        match self.next()? {
            Some(Token::Quoted(name)) => Ok(name),
            Some(Token::Word(word)) => {
                let folded = word.to_ascii_lowercase();
                if folded != word && hint.is_none() {
                    *hint = Some(format!(
                        "SQL folds unquoted names: {word} is the channel \"{folded}\"; for \
                         \"{word}\" write \"{word}\" in double quotes, or use the command \
                         `listen {word}`"
                    ));
                }
                Ok(folded)
            }
            Some(other) => Err(format!("expected a channel name, not {}", describe(&other))),
            None => Err("expected a channel name".into()),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.next()? {
            Some(Token::Str(s)) => Ok(s),
            _ => Err("expected a string in single quotes ('...', with '' for a quote)".into()),
        }
    }

    fn lex(&mut self) -> Result<Option<Token>, String> {
        self.rest = self.rest.trim_start();
        let mut chars = self.rest.chars();
        let Some(c) = chars.next() else {
            return Ok(None);
        };
        let single = |token| Some(token);
        let token = match c {
            ',' => single(Token::Comma),
            ';' => single(Token::Semicolon),
            '*' => single(Token::Star),
            '(' => single(Token::Open),
            ')' => single(Token::Close),
            '"' | '\'' => {
                let (text, after) = until_quote(&self.rest[1..], c)?;
                self.rest = after;
                return Ok(Some(match c {
                    '"' if text.is_empty() => return Err("a name cannot be empty (\"\")".into()),
                    '"' => Token::Quoted(text),
                    _ => Token::Str(text),
                }));
            }
            // A number is a word too: `SELECT 1;` is then refused for what it is.
            c if c.is_alphanumeric() || c == '_' => {
                let end = self
                    .rest
                    .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '$' || ch == '.'))
                    .unwrap_or(self.rest.len());
                let word = self.rest[..end].to_owned();
                self.rest = &self.rest[end..];
                if word.eq_ignore_ascii_case("e") && self.rest.starts_with('\'') {
                    return Err("E'...' strings are not understood here; use '...'".into());
                }
                return Ok(Some(Token::Word(word)));
            }
            other => return Err(format!("unexpected \"{other}\"")),
        };
        self.rest = &self.rest[c.len_utf8()..];
        Ok(token)
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) | Token::Quoted(w) => format!("\"{w}\""),
        Token::Str(_) => "a string".into(),
        Token::Comma => "\",\"".into(),
        Token::Semicolon => "\";\"".into(),
        Token::Star => "\"*\"".into(),
        Token::Open => "\"(\"".into(),
        Token::Close => "\")\"".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Command {
        let parsed = parse(line).unwrap();
        assert_eq!(parsed.commands.len(), 1, "{line}");
        parsed.commands.into_iter().next().unwrap()
    }

    fn notify(channel: &str, payload: &str) -> Command {
        Command::Notify {
            channel: channel.into(),
            payload: payload.into(),
        }
    }

    #[test]
    fn commands_take_names_exactly() {
        assert_eq!(
            one("listen Orders \"order events\" a\"\"b"),
            Command::Listen(vec![
                "Orders".into(),
                "order events".into(),
                "a\"\"b".into()
            ])
        );
        assert_eq!(
            one("LISTEN \"say \"\"hi\"\"\""),
            Command::Listen(vec!["say \"hi\"".into()])
        );
        assert_eq!(one("unlisten *"), Command::UnlistenAll);
        assert_eq!(
            one("unlisten a b"),
            Command::Unlisten(vec!["a".into(), "b".into()])
        );
        assert!(parse("listen").is_err());
        assert!(parse("listen \"a b\"c").is_err());
        assert!(
            parse("NOTIFY orders, 'hello'")
                .unwrap_err()
                .contains("looks like SQL")
        );
        assert!(parse("LISTEN x; LISTEN y").is_err());
        assert!(
            parse("LISTEN x -- why")
                .unwrap_err()
                .contains("looks like SQL")
        );
        assert!(parse("unlisten a -- c").is_err());
        assert_eq!(
            one("filter a;"),
            Command::Filter(Filter::Contains("a;".into()))
        );
        assert_eq!(one("listen \"--x\""), Command::Listen(vec!["--x".into()]));
        assert_eq!(one("listen \"a,\""), Command::Listen(vec!["a,".into()]));
        assert!(parse("listen \"open").is_err());
        assert_eq!(parse("   ").unwrap(), Line::default());
    }

    #[test]
    fn payloads_keep_spaces_and_quotes() {
        assert_eq!(one("notify orders"), notify("orders", ""));
        assert_eq!(
            one("notify orders hello  world "),
            notify("orders", "hello  world")
        );
        assert_eq!(
            one(r#"notify orders {"id": 1}"#),
            notify("orders", r#"{"id": 1}"#)
        );
        assert_eq!(
            one(r#"notify orders '{"id": 1}'"#),
            notify("orders", r#"{"id": 1}"#)
        );
        assert_eq!(one("notify orders 'it''s'"), notify("orders", "it's"));
        assert_eq!(
            one(r#"notify orders "say \"hi\"\n\\""#),
            notify("orders", "say \"hi\"\n\\")
        );
        assert_eq!(one("notify \"my chan\" x"), notify("my chan", "x"));
        assert!(parse("notify orders 'open").is_err());
        assert!(parse("notify orders 'a' b").is_err());
        assert!(parse("notify").is_err());
    }

    #[test]
    fn sql_folds_unquoted_names_and_hints() {
        assert_eq!(
            one("LISTEN orders;"),
            Command::Listen(vec!["orders".into()])
        );
        let parsed = parse("listen Orders;").unwrap();
        assert_eq!(parsed.commands, [Command::Listen(vec!["orders".into()])]);
        assert!(parsed.hint.unwrap().contains("\"orders\""));
        assert_eq!(
            one("LISTEN \"Orders\";"),
            Command::Listen(vec!["Orders".into()])
        );
        assert_eq!(one("unlisten *;"), Command::UnlistenAll);
        assert_eq!(one("NOTIFY x;"), notify("x", ""));
        assert_eq!(one("LISTEN x; -- why"), Command::Listen(vec!["x".into()]));
        assert_eq!(
            one("NOTIFY x, '--not a comment';"),
            notify("x", "--not a comment")
        );
        assert_eq!(one("NOTIFY x, 'it''s; here';"), notify("x", "it's; here"));
        assert_eq!(
            one("select pg_notify('My Chan', '{\"a\": 1}');"),
            notify("My Chan", "{\"a\": 1}")
        );
        assert_eq!(
            parse("LISTEN a; LISTEN b;").unwrap().commands,
            [
                Command::Listen(vec!["a".into()]),
                Command::Listen(vec!["b".into()])
            ]
        );
        for bad in [
            "SELECT 1;",
            "DROP TABLE x;",
            "NOTIFY x, E'a';",
            "NOTIFY x 'p';",
            "LISTEN;",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_small_commands() {
        assert_eq!(one("channels"), Command::Channels);
        assert_eq!(one("format"), Command::Format(None));
        assert_eq!(one("format JSON"), Command::Format(Some("json".into())));
        assert_eq!(one("filter"), Command::Filter(Filter::Show));
        assert_eq!(one("filter off"), Command::Filter(Filter::Off));
        assert_eq!(
            one("filter  id 4 "),
            Command::Filter(Filter::Contains("id 4".into()))
        );
        assert_eq!(
            one("filter 'off'"),
            Command::Filter(Filter::Contains("off".into()))
        );
        assert_eq!(one("\\q"), Command::Quit);
        assert_eq!(one("quit"), Command::Quit);
        assert_eq!(one("help"), Command::Help);
        assert!(parse("clear now").is_err());
        assert!(parse("bogus").is_err());
        assert!(parse("\\d").is_err());
    }
}
