//! Notices stdout's reader going away while nothing is being written.

use super::queue::{Event, Queue};
use crate::msg;
use std::sync::Arc;

/// When stdout is a pipe or socket, watches for its reader going away and pushes
/// [`Event::OutputClosed`], so `listen ch | head -1` ends as soon as `head` does, even while
/// no notification arrives: a reader that left is otherwise only noticed at the next write.
pub(super) fn start(queue: Arc<Queue>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::stat::{SFlag, fstat};
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return;
    }
    let Ok(stat) = fstat(&stdout) else { return };
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFIFO && kind != SFlag::S_IFSOCK {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            loop {
                // No events requested: poll reports only POLLERR/POLLHUP, which a pipe's write
                // end gets when its last reader closes.
                let mut fds = [PollFd::new(
                    std::os::fd::AsFd::as_fd(&stdout),
                    PollFlags::empty(),
                )];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(n) if n > 0 => {
                        queue.push(Event::OutputClosed);
                        return;
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                }
            }
        });
    if spawned.is_err() {
        msg::warn("could not watch stdout for its reader closing");
    }
}
