//! `--websocket`: each line is one text frame, written to every client by a thread of its
//! own. The frames are made once for all clients (`text_frame`), with `tungstenite`'s frame
//! codec; so is what the clients send, of which only control frames are acted on: a ping is
//! answered, a close is returned, and data is read and ignored (a client cannot send SQL or
//! NOTIFY). The opening handshake is answered here, after `web::admit` has applied the same
//! checks to it as to any other request.

use super::{Attached, Ending, write_until, write_whole};
use crate::msg;
use crate::sink::backlog::Popped;
use std::io::Cursor;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// The key a client's handshake must carry: 16 bytes, base64.
pub(super) fn valid_key(key: &str) -> bool {
    openssl::base64::decode_block(key).is_ok_and(|k| k.len() == 16)
}

/// The head of the answer that opens the WebSocket (RFC 6455, 4.2.2).
pub(super) fn switching(key: &str) -> String {
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let accept =
        openssl::base64::encode_block(&openssl::sha::sha1(format!("{key}{GUID}").as_bytes()));
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Appends a text frame holding `payload` (a server's frames are not masked).
pub(super) fn text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    frame(out, OpCode::Data(Data::Text), payload);
}

fn frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Formatting into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn close_frame(code: u16, why: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // A close frame's payload is at most 125 bytes.
    payload.extend(why.bytes().take(123));
    let mut out = Vec::new();
    frame(&mut out, OpCode::Control(Control::Close), &payload);
    out
}

/// The reason a client too slow is given with its close frame.
const SLOW: &str = "too slow: pgnotify stopped waiting for it";
/// The reason given at the end of a run.
const STOPPING: &str = "pgnotify is stopping";
/// How long a client disconnected in the middle of a frame has to take its end and the
/// close frame.
const FAREWELL: Duration = Duration::from_secs(2);

/// Where the frame that holds byte `at` of `chunk` (whole frames) ends.
fn frame_end(chunk: &[u8], at: usize) -> usize {
    let mut start = 0;
    while start < chunk.len() {
        let mut cursor = Cursor::new(&chunk[start..]);
        let Ok(Some((_, length))) = FrameHeader::parse(&mut cursor) else {
            return chunk.len();
        };
        let end = start + cursor.position() as usize + length as usize;
        if end > at {
            return end.min(chunk.len());
        }
        start = end;
    }
    chunk.len()
}

/// Close codes (RFC 6455, 7.4.1).
const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const POLICY: u16 = 1008;

/// Writes the backlog's frames to the client until it leaves or is disconnected; answers
/// what it sends, and pings it every `keepalive`: one that sends nothing for two of them is
/// disconnected.
pub(super) fn run(mut stream: TcpStream, rest: Vec<u8>, client: &Attached, keepalive: Duration) {
    let mut frames = Frames { buf: rest, skip: 0 };
    let mut heard = Instant::now();
    let mut pinged = Instant::now();
    let idle = keepalive.min(Duration::from_secs(1));
    loop {
        match client.backlog.pop_within(idle) {
            Popped::Chunk(chunk, _) => {
                if let Err(at) = write_whole(&mut stream, &chunk, &client.backlog) {
                    let (code, why) = match client.ending() {
                        Ending::Slow => (POLICY, SLOW),
                        Ending::Over => (GOING_AWAY, STOPPING),
                        Ending::Running => {
                            client.left("left");
                            return;
                        }
                    };
                    // Disconnected, or the run ended, in the middle of a frame: the rest of
                    // it, then the close frame, as far as the client takes them in a moment.
                    let mut rest = chunk[at..frame_end(&chunk, at)].to_vec();
                    rest.extend(close_frame(code, why));
                    write_until(&mut stream, &rest, Instant::now() + FAREWELL);
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                client.backlog.done();
            }
            Popped::Closed => {
                let (code, why) = match client.ending() {
                    Ending::Slow => (POLICY, SLOW),
                    Ending::Running | Ending::Over => (GOING_AWAY, STOPPING),
                };
                // Best effort: a client too slow may not take it.
                let _ = write_whole(&mut stream, &close_frame(code, why), &client.backlog);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Popped::Idle => {}
        }
        let answer = match frames.read(&stream) {
            Ok(Heard::Nothing) => None,
            Ok(Heard::Something(answer)) => {
                heard = Instant::now();
                answer
            }
            Ok(Heard::Closed(code)) => {
                let _ = write_whole(&mut stream, &close_frame(code, ""), &client.backlog);
                let _ = stream.shutdown(Shutdown::Both);
                client.left("closed the WebSocket");
                return;
            }
            Err(Broken::Gone) => {
                client.left("left");
                return;
            }
            Err(Broken::Protocol(why)) => {
                let _ = write_whole(
                    &mut stream,
                    &close_frame(PROTOCOL_ERROR, why),
                    &client.backlog,
                );
                let _ = stream.shutdown(Shutdown::Both);
                client.left(&format!(
                    "broke the WebSocket protocol ({why}): disconnected"
                ));
                return;
            }
        };
        if let Some(pong) = answer
            && write_whole(&mut stream, &pong, &client.backlog).is_err()
        {
            client.left("left");
            return;
        }
        if heard.elapsed() > 2 * keepalive {
            msg::warn(&format!(
                "{} answered no ping for {} s: disconnected",
                client.name,
                heard.elapsed().as_secs()
            ));
            client.backlog.close();
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if pinged.elapsed() >= keepalive {
            let mut ping = Vec::new();
            frame(&mut ping, OpCode::Control(Control::Ping), b"pgnotify");
            if write_whole(&mut stream, &ping, &client.backlog).is_err() {
                client.left("left");
                return;
            }
            pinged = Instant::now();
        }
    }
}

/// What a client sent, read without waiting.
#[derive(Debug)]
enum Heard {
    Nothing,
    /// Some frames; with the pong to send, when one was a ping.
    Something(Option<Vec<u8>>),
    /// A close frame, with the code to return.
    Closed(u16),
}

#[derive(Debug)]
enum Broken {
    Gone,
    Protocol(&'static str),
}

/// The frames a client sends, parsed as they arrive. Data is skipped as it comes, so only a
/// control frame (at most 125 bytes) is ever held.
struct Frames {
    buf: Vec<u8>,
    /// Bytes of a data frame still to skip.
    skip: u64,
}

impl Frames {
    fn read(&mut self, stream: &TcpStream) -> Result<Heard, Broken> {
        let mut got = false;
        let mut pong = None;
        // At most 64 KiB a call: a client that sends without pause does not keep its thread
        // from writing to it.
        for _ in 0..16 {
            if let Some(heard) = self.parse(&mut pong)? {
                return Ok(heard);
            }
            let mut chunk = [0u8; 4096];
            match nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(stream),
                &mut chunk,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Err(Broken::Gone),
                Ok(n) => {
                    got = true;
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(nix::errno::Errno::EAGAIN) => {
                    return Ok(if got || pong.is_some() {
                        Heard::Something(pong)
                    } else {
                        Heard::Nothing
                    });
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Err(Broken::Gone),
            }
        }
        Ok(Heard::Something(pong))
    }

    /// Takes the complete frames from the buffer; `Some` when one closes the connection.
    fn parse(&mut self, pong: &mut Option<Vec<u8>>) -> Result<Option<Heard>, Broken> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len() as u64) as usize;
                self.buf.drain(..n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            let mut cursor = Cursor::new(&self.buf[..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(None),
                Err(_) => return Err(Broken::Protocol("a malformed frame")),
            };
            let start = cursor.position() as usize;
            let Some(mask) = header.mask else {
                return Err(Broken::Protocol("an unmasked frame"));
            };
            match header.opcode {
                OpCode::Data(Data::Text | Data::Binary | Data::Continue) => {
                    self.buf.drain(..start);
                    self.skip = length;
                }
                OpCode::Control(control @ (Control::Ping | Control::Pong | Control::Close)) => {
                    if length > 125 || !header.is_final {
                        return Err(Broken::Protocol("a control frame too long or fragmented"));
                    }
                    let end = start + length as usize;
                    if self.buf.len() < end {
                        return Ok(None);
                    }
                    let mut payload: Vec<u8> = self.buf.drain(..end).skip(start).collect();
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= mask[i % 4];
                    }
                    match control {
                        Control::Ping => {
                            let mut out = Vec::new();
                            frame(&mut out, OpCode::Control(Control::Pong), &payload);
                            *pong = Some(out);
                        }
                        Control::Close => {
                            // Its code is returned, when it is one a peer may send.
                            let code = match payload[..] {
                                [] => 1000,
                                [a, b, ..] => u16::from_be_bytes([a, b]),
                                [_] => return Err(Broken::Protocol("a close frame of one byte")),
                            };
                            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                                return Err(Broken::Protocol("a close code a peer may not send"));
                            }
                            return Ok(Some(Heard::Closed(code)));
                        }
                        _ => {}
                    }
                }
                _ => return Err(Broken::Protocol("a reserved opcode")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // The example of RFC 6455, 1.3.
        assert!(switching("dGhlIHNhbXBsZSBub25jZQ==").contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("short"));
    }

    #[test]
    fn client_frames_are_unmasked_and_data_skipped() {
        let mask = [1u8, 2, 3, 4];
        let masked = |opcode: u8, payload: &[u8]| {
            let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
            f.extend_from_slice(&mask);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            f
        };
        let mut buf = masked(0x1, b"ignored text");
        buf.extend(masked(0x9, b"hi"));
        let mut frames = Frames { buf, skip: 0 };
        let mut pong = None;
        assert!(frames.parse(&mut pong).unwrap().is_none());
        let pong = pong.expect("a ping is answered");
        assert_eq!(pong, [0x8A, 2, b'h', b'i']);
        frames.buf = masked(0x8, &[0x03, 0xE8]);
        assert!(matches!(
            frames.parse(&mut None),
            Ok(Some(Heard::Closed(1000)))
        ));
        frames.buf = vec![0x81, 0x02, b'n', b'o'];
        assert!(matches!(frames.parse(&mut None), Err(Broken::Protocol(_))));
        for bad in [&[0x03][..], &[0x03, 0xED], &[0x00, 0x00]] {
            frames.buf = masked(0x8, bad);
            assert!(
                matches!(frames.parse(&mut None), Err(Broken::Protocol(_))),
                "{bad:?}"
            );
        }
        frames.buf = masked(0x8, &[]);
        assert!(matches!(
            frames.parse(&mut None),
            Ok(Some(Heard::Closed(1000)))
        ));
    }

    #[test]
    fn a_frame_cut_is_found_whole() {
        let mut chunk = Vec::new();
        text_frame(&mut chunk, b"abc");
        let first = chunk.len();
        text_frame(&mut chunk, &[b'x'; 300]);
        assert_eq!(frame_end(&chunk, 0), first);
        assert_eq!(frame_end(&chunk, first - 1), first);
        assert_eq!(frame_end(&chunk, first), chunk.len());
        assert_eq!(frame_end(&chunk, first + 10), chunk.len());
    }
}
