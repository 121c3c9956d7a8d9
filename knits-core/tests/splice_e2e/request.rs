//! The request protocol: "GET <node> <size> <id>\n"; the response is "R <id> <size> <node>\n"
//! then the body.

use std::fmt::Write as _;

pub(crate) fn body_byte(id: u32, j: u64) -> u8 {
    let x = ((id as u64) << 40 ^ j).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8
}

/// A request body byte (distinct from the response bytes of the same id).
pub(crate) fn upload_byte(id: u32, j: u64) -> u8 {
    body_byte(!id, j)
}

/// The request bytes: the line, with ` close` (the server closes the connection after the
/// response, as HTTP's `Connection: close`) and ` body=<n>` (an upload of n bytes follows the
/// line) when asked for.
pub(crate) fn request_bytes(r: &Req, id: u32) -> Vec<u8> {
    let mut line = format!("GET {} {} {id}", r.target, r.size);
    if r.close {
        line.push_str(" close");
    }
    if r.body > 0 {
        let _ = write!(line, " body={}", r.body);
    }
    line.push('\n');
    let mut b = line.into_bytes();
    b.extend((0..r.body as u64).map(|j| upload_byte(id, j)));
    b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Req {
    pub(crate) target: u8,
    pub(crate) size: u32,
    /// Sent only after every earlier response has arrived (else pipelined).
    pub(crate) wait: bool,
    /// The server closes the connection after this response (the last request only).
    pub(crate) close: bool,
    /// Bytes uploaded after the request line (the node reads and checks them).
    pub(crate) body: u32,
}

/// A parsed request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    /// Bytes of the line, newline included.
    pub(crate) len: usize,
    pub(crate) target: u8,
    pub(crate) size: u32,
    pub(crate) id: u32,
    pub(crate) close: bool,
    pub(crate) body: u32,
}

pub(crate) fn parse_request(buf: &[u8]) -> Option<Result<Line, String>> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&buf[..nl])
        .map_err(|_| format!("request is not text: {:?}", &buf[..nl]));
    let line = match line {
        Ok(l) => l,
        Err(e) => return Some(Err(e)),
    };
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() < 4 || f[0] != "GET" {
        return Some(Err(format!("bad request line {line:?}")));
    }
    let (mut close, mut body) = (false, Some(0));
    for x in &f[4..] {
        match (*x, x.strip_prefix("body=")) {
            ("close", _) => close = true,
            (_, Some(n)) => body = n.parse().ok(),
            _ => body = None,
        }
    }
    match (f[1].parse(), f[2].parse(), f[3].parse(), body) {
        (Ok(target), Ok(size), Ok(id), Some(body)) => Some(Ok(Line {
            len: nl + 1,
            target,
            size,
            id,
            close,
            body,
        })),
        _ => Some(Err(format!("bad request line {line:?}"))),
    }
}
