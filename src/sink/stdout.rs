//! Notifications to stdout, flushed per line on a terminal and per batch elsewhere.
//!
//! Flushing per batch (everything already received, then one flush before blocking again) is
//! as prompt as flushing each line and much cheaper (xh's buffer.rs does the same). A failed
//! write is a [`StdoutError`]: a broken pipe ends the run quietly with status 0.

use super::Sink;
use crate::exit::StdoutError;
use crate::format::Encoder;
use crate::notification::{Gap, Notification};
use anyhow::Result;
use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};

pub(crate) struct Stdout {
    out: BufWriter<StdoutLock<'static>>,
    encoder: Encoder,
    flush_each_line: bool,
}

impl Stdout {
    pub(crate) fn new(encoder: Encoder) -> Stdout {
        let stdout = io::stdout();
        let flush_each_line = stdout.is_terminal();
        Stdout {
            out: BufWriter::with_capacity(64 * 1024, stdout.lock()),
            encoder,
            flush_each_line,
        }
    }
}

impl Sink for Stdout {
    /// Writes one notification; flushes it too on a terminal.
    fn write(&mut self, n: &Notification) -> Result<()> {
        self.encoder.write(&mut self.out, n).map_err(StdoutError)?;
        if self.flush_each_line {
            self.out.flush().map_err(StdoutError)?;
        }
        Ok(())
    }

    /// Writes a gap record (in NDJSON), flushed at once: the consumer should know promptly.
    fn write_gap(&mut self, gap: &Gap) -> Result<()> {
        self.encoder
            .write_gap(&mut self.out, gap)
            .and_then(|()| self.out.flush())
            .map_err(StdoutError)?;
        Ok(())
    }

    /// Hands everything written so far to the reader.
    fn flush(&mut self) -> Result<()> {
        Ok(self.out.flush().map_err(StdoutError)?)
    }
}
