//! One module per command; each has `run(settings, &ConnSettings) -> Result<Exit>` (`demo`
//! makes its own server) and sees no clap types.

mod console;
pub(crate) mod consumers;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod listen;
pub(crate) mod notify;
pub(crate) mod pipe;
pub(crate) mod watch_table;

use crate::exit::{Exit, StdoutError};
use std::io::Write;

/// Writes `text` (SQL for `--print-sql`) to stdout as it is.
fn print(text: &str) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(StdoutError)?;
    Ok(Exit::Success)
}

/// A table with a header, columns padded to their widest cell, as psql aligns them.
fn write_aligned<const N: usize>(
    out: &mut impl Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let header = header.map(String::from);
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            std::iter::once(&header)
                .chain(rows)
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
