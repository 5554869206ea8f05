//! Socket helpers the TCP sinks share: keepalive and a user timeout, noticing a peer that hung
//! up, writing a chunk from an offset, and where a cut line starts.

use crate::keepalive::{IDLE, INTERVAL, PROBES, USER_TIMEOUT};
use std::io::{self, Write};
use std::net::TcpStream;

/// Keepalive and TCP_USER_TIMEOUT (see `keepalive`) on a connection to a destination.
pub(super) fn keepalive(stream: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let millis = u32::try_from(USER_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
    let _ = setsockopt(stream, sockopt::KeepAlive, &true);
    let _ = setsockopt(stream, sockopt::TcpKeepIdle, &secs(IDLE));
    let _ = setsockopt(stream, sockopt::TcpKeepInterval, &secs(INTERVAL));
    let _ = setsockopt(stream, sockopt::TcpKeepCount, &PROBES);
    let _ = setsockopt(stream, sockopt::TcpUserTimeout, &millis);
}

/// True when the peer has closed its side (or the connection failed). Anything the peer sent
/// is read and ignored on the way.
pub(super) fn hung_up(stream: &TcpStream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    loop {
        match recv(stream.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(nix::errno::Errno::EAGAIN) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

/// True when the connection was reset (after an end of stream already read): the pending
/// socket error, as a read without waiting reports it.
pub(super) fn reset(stream: &TcpStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt};
    getsockopt(stream, sockopt::SocketError).is_ok_and(|e| e != 0)
        || matches!(
            nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(stream),
                &mut [0u8; 1],
                nix::sys::socket::MsgFlags::MSG_DONTWAIT
            ),
            Err(e) if e != nix::errno::Errno::EAGAIN
        )
}

/// Whether the client's socket takes data now (its send buffer has room): a client that stops
/// reading fills it, one that reads does not.
pub(super) fn takes_data(stream: &TcpStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLOUT))
}

/// Writes `chunk[*offset..]`, advancing `offset` as bytes go out.
pub(super) fn write_from(
    stream: &mut TcpStream,
    chunk: &[u8],
    offset: &mut usize,
) -> io::Result<()> {
    while *offset < chunk.len() {
        match stream.write(&chunk[*offset..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *offset += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `spec` is `HOST:PORT` on its face: a host that is an IPv6 literal in brackets, or
/// another non-empty name or address, and a port from 1 to 65535. Nothing is looked up.
pub(super) fn host_port(spec: &str) -> bool {
    let Some((host, port)) = spec.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && !host.contains(['[', ']', ':'])
                && !host.chars().any(|c| c.is_whitespace() || c.is_control())
        }
    };
    port_ok && host_ok
}

/// Where the line containing `offset` starts: a cut line is sent again whole.
pub(super) fn line_start(chunk: &[u8], offset: usize) -> usize {
    chunk[..offset]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_checked_on_its_face() {
        for good in ["db:5000", "127.0.0.1:1", "[::1]:8080", "a.example:65535"] {
            assert!(host_port(good), "{good}");
        }
        for bad in [
            ":5000", "db", "db:0", "db:70000", "[::1:80", "[::1]", "::1:80", "a b:1",
        ] {
            assert!(!host_port(bad), "{bad}");
        }
    }

    #[test]
    fn a_cut_line_restarts_at_its_beginning() {
        let chunk = b"{\"a\":1}\n{\"b\":2}\n";
        assert_eq!(line_start(chunk, 0), 0);
        assert_eq!(line_start(chunk, 3), 0);
        assert_eq!(line_start(chunk, 8), 8);
        assert_eq!(line_start(chunk, 12), 8);
    }
}
