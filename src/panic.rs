//! The last resort against panics: a hook that prints one line instead of Rust's message, and
//! a way to contain a dependency's panic as an ordinary error.

use crate::exit::Exit;
use std::io::Write;

thread_local! {
    /// Set while `contain` runs: the panic hook then lets the panic unwind quietly.
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic inside it (a dependency's `unwrap` on a resource failure) into an
/// error message instead of ending the program.
pub(crate) fn contain<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    CONTAINED.with(|c| c.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(false));
    result.map_err(|payload| {
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown failure");
        // "called `Result::unwrap()` on an `Err` value: Os { ... message: \"Too many open files\" }"
        match text.split("message: \"").nth(1) {
            Some(rest) => rest.split('"').next().unwrap_or(rest).to_owned(),
            None => text.to_owned(),
        }
    })
}

/// Replaces Rust's panic message with one line, so a bug never shows a user a debug dump,
/// and ends the program with status 1: a panic on a helper thread (the source, say) must not
/// leave a listener that looks alive but never receives anything.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        if CONTAINED.with(|c| c.get()) {
            return;
        }
        crate::terminal::restore();
        let _ = writeln!(
            std::io::stderr(),
            "pgnotify: internal error: {info} (please report this)"
        );
        std::process::exit(i32::from(Exit::Failure.code()));
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn contained_panics_become_messages() {
        assert_eq!(super::contain(|| 7), Ok(7));
        let err = super::contain(|| -> u8 { panic!("boom") }).unwrap_err();
        assert_eq!(err, "boom");
        // The shape of the `postgres` crate's panic when its runtime cannot be built.
        let fails = || {
            std::fs::File::open("/nonexistent/x").map_err(|_| std::io::Error::from_raw_os_error(24))
        };
        let err = super::contain(|| fails().unwrap()).unwrap_err();
        assert_eq!(err, "Too many open files");
    }
}
