//! Just enough of RESP (the Redis serialization protocol, version 2) to send
//! commands and read their replies over a plain `std::net::TcpStream`.

use std::io::{self, BufRead};

/// A reply from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`, or `$-1` (nil) as `None`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`, or `*-1` (nil) as `None`.
    Array(Option<Vec<Value>>),
}

/// Encodes a command as a RESP array of bulk strings, the form Redis expects
/// from clients.
pub fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one line terminated by CRLF, without the terminator. A closed
/// connection is an `UnexpectedEof` error, so callers reconnect.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection"));
    }
    if !buf.ends_with(b"\r\n") {
        return Err(invalid("RESP line without CRLF"));
    }
    buf.truncate(buf.len() - 2);
    String::from_utf8(buf).map_err(|_| invalid("RESP line is not UTF-8"))
}

fn parse_len(s: &str) -> io::Result<i64> {
    s.parse().map_err(|_| invalid(format!("bad RESP length {s:?}")))
}

/// Reads one complete reply (recursively for arrays).
pub fn read_value<R: BufRead>(r: &mut R) -> io::Result<Value> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Value::Simple(rest.to_string())),
        "-" => Ok(Value::Error(rest.to_string())),
        ":" => Ok(Value::Integer(parse_len(rest)?)),
        "$" => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Value::Bulk(None));
            }
            let mut data = vec![0; len as usize + 2];
            r.read_exact(&mut data)?;
            if !data.ends_with(b"\r\n") {
                return Err(invalid("bulk string without CRLF"));
            }
            data.truncate(len as usize);
            Ok(Value::Bulk(Some(data)))
        }
        "*" => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Value::Array(None));
            }
            let items = (0..len).map(|_| read_value(r)).collect::<io::Result<_>>()?;
            Ok(Value::Array(Some(items)))
        }
        _ => Err(invalid(format!("unknown RESP type in {line:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(bytes: &[u8]) -> io::Result<Value> {
        read_value(&mut Cursor::new(bytes.to_vec()))
    }

    #[test]
    fn encodes_commands_as_bulk_string_arrays() {
        assert_eq!(encode_command(&[b"INCR", b"visits"]), b"*2\r\n$4\r\nINCR\r\n$6\r\nvisits\r\n".to_vec());
        assert_eq!(encode_command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n".to_vec());
    }

    #[test]
    fn parses_scalar_replies() {
        assert_eq!(parse(b"+PONG\r\n").unwrap(), Value::Simple("PONG".into()));
        assert_eq!(parse(b":17\r\n").unwrap(), Value::Integer(17));
        assert_eq!(parse(b"-ERR wrong type\r\n").unwrap(), Value::Error("ERR wrong type".into()));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Value::Bulk(None));
        assert_eq!(parse(b"$5\r\nhe\r\no\r\n").unwrap(), Value::Bulk(Some(b"he\r\no".to_vec())));
    }

    #[test]
    fn parses_nested_arrays() {
        let v = parse(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n").unwrap();
        assert_eq!(
            v,
            Value::Array(Some(vec![Value::Integer(1), Value::Array(Some(vec![Value::Bulk(Some(b"x".to_vec()))])),]))
        );
        assert_eq!(parse(b"*-1\r\n").unwrap(), Value::Array(None));
    }

    #[test]
    fn rejects_truncated_or_garbled_input() {
        assert_eq!(parse(b"").unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(parse(b"$5\r\nab").is_err());
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b":12").is_err());
    }
}
