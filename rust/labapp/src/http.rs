//! A minimal HTTP/1.1 subset: read one request head, write one response and
//! close. Enough for curl, health checks and load probes.

use std::io::{self, BufRead, Write};

/// Request heads larger than this are refused, so a misbehaving client cannot
/// make a handler thread buffer without bound.
const MAX_HEAD: usize = 16 * 1024;

/// The parts of a request the lab app routes on.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without any query string.
    pub path: String,
}

/// Reads a request line and its headers (ignored); bodies are not supported
/// because no route takes one.
pub fn read_request<R: BufRead>(r: &mut R) -> io::Result<Request> {
    let mut head_len = 0;
    let mut line = String::new();
    let mut first: Option<String> = None;
    loop {
        line.clear();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the request head ended",
            ));
        }
        head_len += n;
        if head_len > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if first.is_none() {
            first = Some(trimmed.to_string());
        } else if trimmed.is_empty() {
            break;
        }
    }
    let first = first.unwrap_or_default();
    let mut parts = first.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(method), Some(target)) => {
            Ok(Request { method: method.to_string(), path: target.split('?').next().unwrap_or("/").to_string() })
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "malformed request line")),
    }
}

/// Writes a complete response with `Connection: close`.
pub fn write_response<W: Write>(w: &mut W, status: u16, content_type: &str, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn parses_request_line_and_strips_query() {
        let mut c = Cursor::new(b"GET /stats?x=1 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec());
        assert_eq!(read_request(&mut c).unwrap(), Request { method: "GET".into(), path: "/stats".into() });
    }

    #[test]
    fn response_has_length_and_body() {
        let mut out = Vec::new();
        write_response(&mut out, 200, "text/plain", "ok").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.ends_with("\r\n\r\nok"));
    }
}
