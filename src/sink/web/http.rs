//! The HTTP that `--websocket` and `--sse` speak before they stream: one request head read
//! within bounds (8 KiB, 10 s), parsed by `httparse`, and short answers that close the
//! connection. What a request may do is decided in `web::admit`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// The largest request head (request line and headers) that is read.
pub(super) const HEAD_LIMIT: usize = 8 * 1024;
/// How long a client may take to send its request head, in all.
pub(super) const HEAD_TIME: Duration = Duration::from_secs(10);
/// How long an answer may take to be written, and how long a closing connection is drained.
const ANSWER_TIME: Duration = Duration::from_secs(1);

/// A request's method, as far as these servers care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Head,
    Options,
    Other,
}

/// A request head, read whole.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) method: Method,
    /// The path, without the query.
    pub(super) path: String,
    /// The query's pairs, percent-decoded.
    pub(super) query: Vec<(String, String)>,
    /// Header names in lower case, values as sent (those that are not text are left out).
    headers: Vec<(String, String)>,
    /// What the client sent after the head (a WebSocket client may send a frame at once).
    pub(super) rest: Vec<u8>,
}

impl Request {
    /// The first header named `name` (lower case).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
    }

    /// How many headers named `name` (lower case) there are.
    pub(super) fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }

    /// Whether the comma-separated header `name` holds `token`, in any case.
    pub(super) fn header_has(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The query's values for `key`.
    pub(super) fn query_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> {
        self.query
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unread {
    /// The head is over `HEAD_LIMIT`: 400.
    TooLarge,
    /// It has over 64 headers: 400.
    TooMany,
    /// The head did not come whole within `HEAD_TIME`: 408.
    TooSlow,
    /// It is not HTTP: 400.
    Malformed(String),
    /// The client closed the connection (or it failed) first: no answer.
    Gone,
}

/// Reads one request head from `stream`, within `HEAD_LIMIT` bytes and `HEAD_TIME`.
pub(super) fn read_request(stream: &mut TcpStream) -> Result<Request, Unread> {
    let deadline = Instant::now() + HEAD_TIME;
    let mut buf = vec![0u8; HEAD_LIMIT];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Unread::TooSlow);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| Unread::Gone)?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(Unread::Gone),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Unread::TooSlow);
            }
            Err(_) => return Err(Unread::Gone),
        }
        if let Some(request) = parse(&buf[..len])? {
            return Ok(request);
        }
        if len == HEAD_LIMIT {
            return Err(Unread::TooLarge);
        }
    }
}

/// The request in `buf`, `None` while its head is incomplete.
fn parse(buf: &[u8]) -> Result<Option<Request>, Unread> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let end = match request.parse(buf) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Unread::TooMany),
        Err(e) => return Err(Unread::Malformed(e.to_string())),
    };
    let method = match request.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Request {
        method,
        path: path.to_string(),
        query: form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        headers: request
            .headers
            .iter()
            .filter_map(|h| {
                let value = std::str::from_utf8(h.value).ok()?;
                Some((h.name.to_ascii_lowercase(), value.to_string()))
            })
            .collect(),
        rest: buf[end..].to_vec(),
    }))
}

/// A short answer: a status, headers, and a text body (left out for HEAD).
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: String,
}

impl Answer {
    /// `status` with a one-line text body.
    pub(super) fn text(status: u16, body: impl Into<String>) -> Answer {
        let mut body = body.into();
        body.push('\n');
        Answer {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body,
        }
    }

    pub(super) fn with(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the answer and closes the connection (reading what the client still sends for
    /// a moment first, so that the answer is not lost to a reset).
    pub(super) fn send(&self, stream: &mut TcpStream, head_only: bool) {
        let _ = stream.set_write_timeout(Some(ANSWER_TIME));
        if stream.write_all(&self.bytes(head_only)).is_ok() {
            linger(stream);
        }
        let _ = stream.shutdown(Shutdown::Both);
    }

    /// The answer as it goes on the wire, without its body for HEAD.
    pub(super) fn bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        if !head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

/// After an answer: says no more, and reads what the client still sends until it closes its
/// side, for at most `ANSWER_TIME` and 64 KiB.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + ANSWER_TIME;
    let mut sink = [0u8; 4096];
    let mut read = 0;
    while read < 64 * 1024 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

/// The reason phrase of the statuses these servers answer with.
pub(super) fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_parsed_with_its_query_decoded() {
        let raw = b"GET /ws?channel=a%20b&channel=c&token=t%2Bx HTTP/1.1\r\nHost: h\r\n\
                    Connection: keep-alive, Upgrade\r\n\r\nextra";
        let request = parse(raw).unwrap().unwrap();
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, "/ws");
        assert_eq!(
            request.query_all("channel").collect::<Vec<_>>(),
            ["a b", "c"]
        );
        assert_eq!(request.query_all("token").collect::<Vec<_>>(), ["t+x"]);
        assert_eq!(request.header("host"), Some("h"));
        assert!(request.header_has("connection", "upgrade"));
        assert_eq!(request.rest, b"extra");
        assert!(parse(b"GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
        assert!(matches!(
            parse(b"\x01\x02 nonsense\r\n\r\n"),
            Err(Unread::Malformed(_))
        ));
    }
}
