//! The pause between attempts to reach something that went away: the server (the source's
//! reconnects) or a TCP peer (`pipe --connect`).

use std::time::Duration;

/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The pause before attempt `attempt` (0-based): none, then 0.1 s doubling to 10 s, each scaled
/// by a jitter in [0.5, 1) so that many listeners do not retry in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let base = Duration::from_millis(100)
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    let jitter =
        0.5 + f64::from(jiff::Timestamp::now().subsec_nanosecond().rem_euclid(1000)) / 2000.0;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        let first = backoff(1);
        assert!(
            first >= Duration::from_millis(50) && first < Duration::from_millis(100),
            "{first:?}"
        );
        let later = backoff(30);
        assert!(later >= MAX_BACKOFF / 2 && later < MAX_BACKOFF, "{later:?}");
    }
}
