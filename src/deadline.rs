//! Deadlines, and waiting on a condition variable until one.
//!
//! A deadline is an `Option<Instant>`: `None` means "no deadline". Durations come from the
//! user (`--timeout`, `--heartbeat`) and may be too large to add to now; [`after`] then gives
//! no deadline instead of panicking on the overflow.

use std::sync::{Condvar, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The instant `duration` from now; `None` when that is too far to represent (no deadline).
pub(crate) fn after(duration: Duration) -> Option<Instant> {
    Instant::now().checked_add(duration)
}

/// Waits on `changed` while `blocked` holds of the guarded state, until `deadline` (`None`: as
/// long as it takes). Returns the guard, and true when the deadline passed with `blocked`
/// still holding. Spurious wake-ups and a poisoned lock only mean looking again.
pub(crate) fn wait_while<'a, T>(
    changed: &Condvar,
    mut guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    mut blocked: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    while blocked(&mut guard) {
        guard = match deadline {
            None => changed.wait(guard).unwrap_or_else(PoisonError::into_inner),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (guard, true);
                }
                changed
                    .wait_timeout(guard, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
    (guard, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_duration_too_large_to_add_is_no_deadline() {
        assert!(after(Duration::from_secs(1)).is_some());
        assert_eq!(after(Duration::MAX), None);
    }

    #[test]
    fn waits_until_the_condition_or_the_deadline() {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let (lock, changed) = &*pair;
        let soon = after(Duration::from_millis(20));
        let (guard, timed_out) = wait_while(changed, lock.lock().unwrap(), soon, |done| !*done);
        assert!(timed_out);
        drop(guard);
        let other = Arc::clone(&pair);
        let setter = std::thread::spawn(move || {
            *other.0.lock().unwrap() = true;
            other.1.notify_all();
        });
        let (done, timed_out) = wait_while(changed, lock.lock().unwrap(), None, |done| !*done);
        assert!(*done && !timed_out);
        drop(done);
        setter.join().unwrap();
    }
}
