//! Several outputs at once (`pipe --serve 9000 --sse 8080 --stdout`): each gets every line,
//! in order, from the one PostgreSQL connection.

use super::Sink;
use crate::notification::{Gap, Notification};
use anyhow::Result;

/// Every sink in it gets everything; the first error ends the run.
pub(crate) struct Tee(pub(crate) Vec<Box<dyn Sink>>);

impl Sink for Tee {
    fn write(&mut self, n: &Notification) -> Result<()> {
        self.0.iter_mut().try_for_each(|s| s.write(n))
    }

    fn write_gap(&mut self, gap: &Gap) -> Result<()> {
        self.0.iter_mut().try_for_each(|s| s.write_gap(gap))
    }

    fn flush(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|s| s.flush())
    }

    /// Each one finishes, also after another failed; the first error is the run's.
    fn finish(&mut self) -> Result<()> {
        let mut outcome = Ok(());
        for sink in &mut self.0 {
            let finished = sink.finish();
            if outcome.is_ok() {
                outcome = finished;
            }
        }
        outcome
    }

    fn ending(&mut self) {
        self.0.iter_mut().for_each(|s| s.ending());
    }
}
