//! Shell completions and man pages, generated from the clap definition in `cli`.
//!
//! The files are committed (completions/, man/) so that packagers need no build step; the
//! integration test `generated_files_are_current` fails when they are stale, and
//! `cargo run --example generate` rewrites them (a maintainer's tool, not a command of pgnotify).

use crate::cli::Cli;
use crate::exit::StdoutError;
use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use roff::{Roff, bold, italic, roman};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Every generated file: its path under the project directory and its content.
pub fn files() -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "pgnotify.bash"),
        (Shell::Zsh, "_pgnotify"),
        (Shell::Fish, "pgnotify.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "pgnotify", &mut buf);
        files.push((Path::new("completions").join(name), buf));
    }
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let pages = man_pages(&root);
    files.push((
        Path::new("man").join("pgnotify.1"),
        man_page(&root, None, &pages)?,
    ));
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let file = format!("pgnotify-{}.1", sub.get_name());
        files.push((
            Path::new("man").join(file),
            man_page(sub, Some(sub.get_name()), &pages)?,
        ));
    }
    Ok(files)
}

/// Writes every generated file under `dir`.
pub fn write_all(dir: &Path) -> Result<()> {
    for (path, content) in files()? {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)
            .with_context(|| format!("could not write {}", path.display()))?;
        writeln!(std::io::stdout(), "wrote {}", path.display()).map_err(StdoutError)?;
    }
    Ok(())
}

/// The names of pgnotify's own man pages: the root's, then one per command that has one.
fn man_pages(root: &clap::Command) -> Vec<String> {
    let subs = root
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("pgnotify-{}(1)", s.get_name()));
    std::iter::once("pgnotify(1)".to_owned())
        .chain(subs)
        .collect()
}

fn man_page(cmd: &clap::Command, sub: Option<&str>, pages: &[String]) -> Result<Vec<u8>> {
    let title = match sub {
        Some(name) => format!("pgnotify-{name}"),
        None => "pgnotify".to_owned(),
    };
    let man = clap_mangen::Man::new(cmd.clone())
        .title(title.to_uppercase())
        .source(format!("pgnotify {}", env!("CARGO_PKG_VERSION")))
        .manual("pgnotify manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    synopsis(sub, cmd).to_writer(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if sub.is_none() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut extra = Roff::new();
    examples(&mut extra, cmd);
    exit_status(&mut extra);
    environment(&mut extra);
    see_also(&mut extra, sub, pages);
    extra.to_writer(&mut out)?;
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

/// The SYNOPSIS as a person writes it, `pgnotify [OPTIONS] listen [OPTIONS] CHANNEL...`, not
/// every flag (they follow under OPTIONS).
fn synopsis(sub: Option<&str>, cmd: &clap::Command) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"]);
    let Some(name) = sub else {
        roff.text([
            bold("pgnotify"),
            roman(" ["),
            italic("OPTIONS"),
            roman("] "),
            italic("COMMAND"),
            roman(" ["),
            italic("ARGS"),
            roman("]"),
        ]);
        return roff;
    };
    let mut line = vec![
        bold("pgnotify"),
        roman(" ["),
        italic("OPTIONS"),
        roman("] "),
        bold(name.to_owned()),
        roman(" ["),
        italic("OPTIONS"),
        roman("]"),
    ];
    for arg in cmd.get_positionals() {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| arg.get_id().to_string(), ToString::to_string);
        let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        let dots = if many { "..." } else { "" };
        match arg.is_required_set() {
            true => line.extend([roman(" "), italic(value), roman(dots)]),
            false => line.extend([roman(" ["), italic(value), roman(format!("{dots}]"))]),
        }
    }
    roff.text(line);
    roff
}

fn examples(roff: &mut Roff, cmd: &clap::Command) {
    let Some(text) = cmd.get_after_help() else {
        return;
    };
    roff.control("SH", ["EXAMPLES"]);
    roff.control("nf", [] as [&str; 0]);
    for line in text.to_string().lines().skip(1) {
        roff.text([roman(line.trim_start())]);
    }
    roff.control("fi", [] as [&str; 0]);
}

fn exit_status(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        (
            "0",
            "Success: the count was reached, the notification was committed, or the reader of stdout went away.",
        ),
        (
            "1",
            "Runtime error: a bad payload read from standard input, an SQL error, an I/O error.",
        ),
        (
            "2",
            "Usage error: bad flags or arguments, or a setting malformed on its face (a channel name over 63 bytes, a PAYLOAD argument over 7999, an unknown conninfo key, HOST:PORT without a port).",
        ),
        ("3", "Could not connect, or the connection was lost."),
        (
            "124",
            "--timeout elapsed: before the awaited notifications arrived (listen, pipe), or before the notification was sent (notify).",
        ),
        (
            "129",
            "Stopped by SIGHUP: the terminal hung up (without a terminal, SIGHUP is ignored).",
        ),
        (
            "130",
            "Stopped by SIGINT, after writing every notification already received.",
        ),
        (
            "143",
            "Stopped by SIGTERM, after writing every notification already received.",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }
}

fn environment(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "The libpq variables apply, with libpq's precedence: command-line options first, then \
         the service file, then these variables, then the defaults.",
    )]);
    for (name, meaning) in [
        (
            "PGHOST, PGHOSTADDR, PGPORT",
            "Server host or socket directory, address, port.",
        ),
        (
            "PGDATABASE, PGUSER",
            "Database and user (defaults: the OS user).",
        ),
        (
            "PGPASSWORD",
            "Password (prefer a password file: the environment of a process may be visible).",
        ),
        (
            "PGPASSFILE",
            "Password file (default ~/.pgpass; ignored when group or others may read it).",
        ),
        (
            "PGSERVICE, PGSERVICEFILE, PGSYSCONFDIR",
            "Connection service and the files defining it (~/.pg_service.conf, then PGSYSCONFDIR/pg_service.conf).",
        ),
        ("PGAPPNAME", "application_name (default: pgnotify)."),
        (
            "PGCONNECT_TIMEOUT",
            "Seconds to wait for a connection (0: no limit).",
        ),
        (
            "PGSSLMODE",
            "disable, allow, prefer (default), require, verify-ca or verify-full, as in libpq; a unix socket never uses TLS.",
        ),
        (
            "PGSSLROOTCERT, PGSSLCRL, PGSSLCRLDIR",
            "Trusted roots (default ~/.postgresql/root.crt; system for the system's store, which implies verify-full) and revocation lists (default ~/.postgresql/root.crl).",
        ),
        (
            "PGSSLCERT, PGSSLKEY",
            "Client certificate and key (default ~/.postgresql/postgresql.crt and .key); a key others may read is refused.",
        ),
        (
            "PGSSLSNI, PGSSLCERTMODE, PGSSLNEGOTIATION, PGSSLMINPROTOCOLVERSION, PGSSLMAXPROTOCOLVERSION, PGCHANNELBINDING",
            "The other TLS settings, with libpq's meanings.",
        ),
        ("PGOPTIONS", "Server options."),
        (
            "PGTARGETSESSIONATTRS",
            "any, read-write, read-only, primary, standby or prefer-standby: which server of a host list to keep; listen and pipe also pass over hot standbys, and follow a failover.",
        ),
        (
            "NO_COLOR",
            "When set and not empty, no colour (unless --color always).",
        ),
        (
            "CLICOLOR_FORCE",
            "When set, not empty and not 0 (and NO_COLOR is not), colour even when not writing to a terminal (unless --color never).",
        ),
        (
            "CLICOLOR",
            "0: no colour (unless CLICOLOR_FORCE or --color always).",
        ),
        (
            "TERM",
            "dumb: no colour (unless CLICOLOR_FORCE or --color always).",
        ),
        (
            "PGNOTIFY_PG_BINDIR",
            "For demo: the directory holding initdb and pg_ctl.",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(name)]);
        roff.text([roman(meaning)]);
    }
}

/// Every other page of pgnotify's, then psql's.
fn see_also(roff: &mut Roff, sub: Option<&str>, pages: &[String]) {
    roff.control("SH", ["SEE ALSO"]);
    let own = sub
        .map(|s| format!("pgnotify-{s}(1)"))
        .unwrap_or_else(|| "pgnotify(1)".into());
    let others: Vec<&str> = pages
        .iter()
        .map(String::as_str)
        .filter(|p| *p != own)
        .chain(["psql(1)"])
        .collect();
    roff.text([roman(others.join(", "))]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_man_page_points_at_every_other_command() {
        let mut root = Cli::command().disable_help_subcommand(true);
        root.build();
        let pages = man_pages(&root);
        for sub in ["listen", "notify", "pipe", "watch-table", "demo"] {
            assert!(pages.contains(&format!("pgnotify-{sub}(1)")), "{pages:?}");
        }
        assert!(!pages.iter().any(|p| p.contains("generate")), "{pages:?}");
        let mut roff = Roff::new();
        see_also(&mut roff, Some("listen"), &pages);
        let text = roff.to_roff().replace("\\-", "-");
        assert!(text.contains("pgnotify-watch-table(1)"), "{text}");
        assert!(text.contains("pgnotify-pipe(1)"), "{text}");
        assert!(!text.contains("pgnotify-listen(1)"), "{text}");
    }
}
