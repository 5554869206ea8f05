//! Clients of `pipe --websocket` and `pipe --sse` for the tests: a WebSocket client on
//! tungstenite, an SSE client reading `text/event-stream` as a browser does, and plain HTTP
//! requests. All on loopback, each read bounded by `PATIENCE`.

use super::{PATIENCE, Running};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use tungstenite::WebSocket;

/// The address (`127.0.0.1:PORT`) a running pipe serves `kind` on (`ws://` or `http://`),
/// from its stderr line "serving ... on SCHEME://ADDRESS/PATH".
pub fn served(pipe: &mut Running, scheme: &str) -> String {
    let line = pipe.wait_stderr(&format!("on {scheme}://"));
    let rest = line.split(&format!("{scheme}://")).nth(1).unwrap();
    rest.split('/').next().unwrap().to_string()
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// A WebSocket client of `ws://ADDRESS/TARGET`; the handshake's failure is the error.
pub fn websocket(
    address: &str,
    target: &str,
) -> Result<WebSocket<TcpStream>, Box<tungstenite::Error>> {
    let url = format!("ws://{address}{target}");
    match tungstenite::client::client(url.as_str(), connect(address)) {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(Box::new(e)),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("handshake interrupted"),
    }
}

/// The HTTP status a handshake was refused with.
pub fn refused_status(result: Result<WebSocket<TcpStream>, Box<tungstenite::Error>>) -> u16 {
    match result.map(|_| ()).map_err(|e| *e) {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("not refused with a status: {other:?}"),
    }
}

/// The next text frame (pings are answered on the way).
pub fn next_text(socket: &mut WebSocket<TcpStream>) -> String {
    loop {
        match socket.read().expect("a frame from pgnotify") {
            tungstenite::Message::Text(text) => return text.to_string(),
            tungstenite::Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// One HTTP answer, read to its end: status, head (lower-case names), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends `request` (a whole head, CRLFs included) and reads the answer until the server
/// closes the connection.
pub fn request(address: &str, request: &str) -> Answer {
    let mut stream = connect(address);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_answer(&String::from_utf8_lossy(&raw))
}

/// `GET TARGET` with these extra header lines.
pub fn get(address: &str, target: &str, headers: &[&str]) -> Answer {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    request(
        address,
        &format!("GET {target} HTTP/1.1\r\nHost: {address}\r\n{extra}\r\n"),
    )
}

fn parse_answer(raw: &str) -> Answer {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// One server-sent event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// An SSE client: the answer's head, then events as a browser's EventSource parses them
/// (comments skipped).
pub struct Sse {
    pub head: String,
    reader: BufReader<TcpStream>,
}

impl Sse {
    /// `GET TARGET` with `Accept: text/event-stream` and these header lines; the answer's
    /// status must be 200.
    pub fn open(address: &str, target: &str, headers: &[&str]) -> Sse {
        let mut stream = connect(address);
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("an answer's head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        Sse { head, reader }
    }

    /// The next event; `None` when the stream ends.
    pub fn next(&mut self) -> Option<Event> {
        let mut event = Event::default();
        let mut any = false;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).expect("an event") == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if any {
                    return Some(event);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => event.id = Some(value.to_string()),
                "event" => event.event = Some(value.to_string()),
                "data" => {
                    any = true;
                    event.data.push_str(value);
                }
                "retry" => {}
                other => panic!("unexpected field {other:?}"),
            }
        }
    }

    /// The next event, which must be a notification: its payload.
    pub fn payload(&mut self) -> String {
        let event = self.next().expect("an event");
        let record: super::Record =
            serde_json::from_str(&event.data).unwrap_or_else(|e| panic!("{event:?}: {e}"));
        record.payload
    }
}
