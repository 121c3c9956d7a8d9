//! HTTP/1.x message framing: request and response heads (through httparse), body length rules
//! (RFC 9112 section 6), the chunked transfer coding, persistence rules (RFC 9112 section 9.3) and
//! the rewriting of heads between client, proxy and upstream.
//!
//! Everything here is pure: bytes in, parsed values or bytes out. No I/O, no clock.

use core::ops::Range;

/// Default bound on a request or response head, in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default bound on the number of header fields.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Longest chunk-size line (size, extensions) the chunked decoder accepts.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes the chunked decoder accepts.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Bounds on a message head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes in a head (request or status line, fields, final empty line).
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// The HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: persistent only with `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: persistent unless `Connection: close`.
    Http11,
}

impl Version {
    fn from_minor(minor: u8) -> Version {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
}

/// Why a head cannot be used. Each maps to the status a server answers before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head is longer than [`Limits::max_header_bytes`] (431).
    TooLarge,
    /// More fields than [`Limits::max_headers`] (431).
    TooManyHeaders,
    /// Not HTTP/1.x syntax (400).
    Malformed(&'static str),
    /// A `Content-Length` that is not a number, or two different ones (400).
    BadContentLength,
    /// A `Transfer-Encoding` this proxy cannot frame: not ending in chunked, or alongside a
    /// `Content-Length`, or in HTTP/1.0 (400).
    BadTransferEncoding,
    /// A transfer coding other than chunked (501).
    UnsupportedTransferCoding,
}

impl HeadError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UnsupportedTransferCoding => 501,
            _ => 400,
        }
    }
}

impl core::fmt::Display for HeadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HeadError::TooLarge => write!(f, "head larger than the limit"),
            HeadError::TooManyHeaders => write!(f, "more header fields than the limit"),
            HeadError::Malformed(what) => write!(f, "malformed head: {what}"),
            HeadError::BadContentLength => write!(f, "invalid or conflicting Content-Length"),
            HeadError::BadTransferEncoding => write!(f, "Transfer-Encoding that cannot be framed"),
            HeadError::UnsupportedTransferCoding => write!(f, "transfer coding other than chunked"),
        }
    }
}

impl std::error::Error for HeadError {}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, ended by the zero chunk and the trailer section.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// One header field, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name, as received (compare case-insensitively).
    pub name: String,
    /// Field value bytes, as received.
    pub value: Vec<u8>,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method token.
    pub method: String,
    /// Request target, as received.
    pub target: String,
    /// Protocol version.
    pub version: Version,
    /// Header fields in order.
    pub headers: Vec<Header>,
    /// Bytes of the head, the final empty line included (leading empty lines too).
    pub head_len: usize,
    /// How the body is delimited.
    pub body: BodyFraming,
    /// The client allows the connection to stay open after the response.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Protocol version.
    pub version: Version,
    /// Header fields in order.
    pub headers: Vec<Header>,
    /// Bytes of the head.
    pub head_len: usize,
    /// How the body is delimited (given the request method).
    pub body: BodyFraming,
    /// The sender allows the connection to stay open after this response.
    pub keep_alive: bool,
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// True when a comma-separated header value lists `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn connection_has<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>, token: &str) -> bool {
    let mut found = false;
    for (n, v) in headers {
        if eq_ci(n, "connection") && has_token(v, token) {
            found = true;
        }
    }
    found
}

/// RFC 9112 section 9.3: does the message let the connection persist?
pub fn persistent(version: Version, headers: &[Header]) -> bool {
    let it = || {
        headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice()))
    };
    if connection_has(it(), "close") {
        return false;
    }
    match version {
        Version::Http11 => true,
        Version::Http10 => connection_has(it(), "keep-alive"),
    }
}

/// The `Content-Length` of a message, if any: all fields (and list members) must agree.
fn content_length(headers: &[Header]) -> Result<Option<u64>, HeadError> {
    let mut len: Option<u64> = None;
    for h in headers.iter().filter(|h| eq_ci(&h.name, "content-length")) {
        for part in h.value.split(|&b| b == b',') {
            let p = part.trim_ascii();
            if p.is_empty() || p.len() > 19 || !p.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::BadContentLength);
            }
            let mut v: u64 = 0;
            for &d in p {
                v = v * 10 + u64::from(d - b'0');
            }
            match len {
                Some(prev) if prev != v => return Err(HeadError::BadContentLength),
                _ => len = Some(v),
            }
        }
    }
    Ok(len)
}

/// The transfer codings listed by all `Transfer-Encoding` fields, lower-cased, in order.
fn transfer_codings(headers: &[Header]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut any = false;
    for h in headers
        .iter()
        .filter(|h| eq_ci(&h.name, "transfer-encoding"))
    {
        any = true;
        for part in h.value.split(|&b| b == b',') {
            let p = part.trim_ascii();
            if !p.is_empty() {
                out.push(String::from_utf8_lossy(p).to_ascii_lowercase());
            }
        }
    }
    any.then_some(out)
}

fn collect_headers(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter()
        .map(|h| Header {
            name: h.name.to_string(),
            value: h.value.to_vec(),
        })
        .collect()
}

/// Quick test for a complete head, so that a head arriving in many small reads is not
/// re-parsed on every read.
fn may_hold_head(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")
}

fn map_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed("header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("header value"),
        httparse::Error::NewLine => HeadError::Malformed("line ending"),
        httparse::Error::Status => HeadError::Malformed("status"),
        httparse::Error::Token => HeadError::Malformed("method or target"),
        httparse::Error::Version => HeadError::Malformed("version"),
    }
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet (read more). Bytes after the head (body, next
/// pipelined requests) are left alone; [`RequestHead::head_len`] says where the head ends.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    if !may_hold_head(window) {
        return if buf.len() >= limits.max_header_bytes {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    }
    let mut raw = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut raw);
    let head_len = match req.parse(window).map_err(map_httparse)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if buf.len() >= limits.max_header_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("request line"));
    };
    let version = Version::from_minor(minor);
    let headers = collect_headers(req.headers);
    let body = request_body(version, &headers)?;
    let keep_alive = persistent(version, &headers);
    let expect_continue = version == Version::Http11
        && headers.iter().any(|h| {
            eq_ci(&h.name, "expect") && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
        });
    Ok(Some(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        version,
        headers,
        head_len,
        body,
        keep_alive,
        expect_continue,
    }))
}

/// RFC 9112 section 6.3, for requests: chunked, Content-Length, or no body.
fn request_body(version: Version, headers: &[Header]) -> Result<BodyFraming, HeadError> {
    let cl = content_length(headers)?;
    match transfer_codings(headers) {
        Some(codings) => {
            if cl.is_some() || version == Version::Http10 {
                return Err(HeadError::BadTransferEncoding);
            }
            match codings.as_slice() {
                [only] if only == "chunked" => Ok(BodyFraming::Chunked),
                [.., last] if last == "chunked" => Err(HeadError::UnsupportedTransferCoding),
                _ => Err(HeadError::BadTransferEncoding),
            }
        }
        None => Ok(match cl {
            Some(0) | None => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        }),
    }
}

/// Parses a response head at the start of `buf`. `head_request` says whether it answers a HEAD
/// (then it has no body whatever its fields say).
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    if !may_hold_head(window) {
        return if buf.len() >= limits.max_header_bytes {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    }
    let mut raw = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut resp = httparse::Response::new(&mut raw);
    let head_len = match resp.parse(window).map_err(map_httparse)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if buf.len() >= limits.max_header_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed("status line"));
    };
    let version = Version::from_minor(minor);
    let headers = collect_headers(resp.headers);
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body {
        BodyFraming::Empty
    } else {
        let cl = content_length(&headers)?;
        match transfer_codings(&headers) {
            Some(c) if c.last().map(String::as_str) == Some("chunked") && c.len() == 1 => {
                BodyFraming::Chunked
            }
            Some(_) => BodyFraming::UntilClose,
            None => match cl {
                Some(0) => BodyFraming::Empty,
                Some(n) => BodyFraming::Length(n),
                None => BodyFraming::UntilClose,
            },
        }
    };
    let keep_alive = persistent(version, &headers) && body != BodyFraming::UntilClose;
    Ok(Some(ResponseHead {
        status,
        reason: resp.reason.unwrap_or("").to_string(),
        version,
        headers,
        head_len,
        body,
        keep_alive,
    }))
}

/// Hop-by-hop fields (RFC 9110 section 7.6.1) that a proxy does not forward. `Transfer-Encoding`
/// is not among them here: the proxy forwards chunked bodies as they are.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "proxy-authorization",
];

fn is_hop_by_hop(name: &str, headers: &[Header]) -> bool {
    if HOP_BY_HOP.iter().any(|h| eq_ci(h, name)) {
        return true;
    }
    // Fields named by a Connection field are hop-by-hop too (but never the framing fields).
    if eq_ci(name, "content-length") || eq_ci(name, "transfer-encoding") {
        return false;
    }
    headers
        .iter()
        .filter(|h| eq_ci(&h.name, "connection"))
        .any(|h| has_token(&h.value, name))
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

impl RequestHead {
    /// The path the dispatch policy looks at: the target without query, also for the
    /// absolute form (`http://host/path?q` gives `/path`).
    pub fn path(&self) -> &str {
        request_path(&self.target)
    }

    /// The first value of a field, if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| eq_ci(&h.name, name))
            .map(|h| h.value.as_slice())
    }

    /// The head to send to the upstream server: HTTP/1.1, hop-by-hop fields removed (the
    /// upstream connection is the proxy's own and stays persistent), `Expect` removed when the
    /// proxy answers `100 Continue` itself, and a `Host` added when an HTTP/1.0 client sent none.
    pub fn encode_for_upstream(&self, default_host: &str, drop_expect: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head_len + 64);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut host = false;
        for h in &self.headers {
            if is_hop_by_hop(&h.name, &self.headers) || (drop_expect && eq_ci(&h.name, "expect")) {
                continue;
            }
            host |= eq_ci(&h.name, "host");
            push_header(&mut out, &h.name, &h.value);
        }
        if !host {
            push_header(&mut out, "Host", default_host.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The path part of a request target (see [`RequestHead::path`]).
pub fn request_path(target: &str) -> &str {
    let t = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            match rest.find('/') {
                Some(j) => &rest[j..],
                None => "/",
            }
        }
        None => target,
    };
    match t.find(['?', '#']) {
        Some(q) => &t[..q],
        None => t,
    }
}

/// How the proxy relays a response body to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    /// Strip the chunked coding (the client speaks HTTP/1.0).
    pub dechunk: bool,
    /// Close the client connection after this response.
    pub close: bool,
}

impl ResponseHead {
    /// Decides how to relay this response to a client that sent `req`.
    pub fn relay_for(&self, req: &RequestHead) -> Relay {
        let dechunk = self.body == BodyFraming::Chunked && req.version == Version::Http10;
        let close = !req.keep_alive || self.body == BodyFraming::UntilClose || dechunk;
        Relay { dechunk, close }
    }

    /// The head to send to the client: HTTP/1.1 status line, hop-by-hop fields removed,
    /// `Transfer-Encoding` removed when dechunking, and the proxy's own `Connection` field.
    pub fn encode_for_client(&self, req: &RequestHead, relay: Relay) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head_len + 32);
        out.extend_from_slice(format!("HTTP/1.1 {} ", self.status).as_bytes());
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in &self.headers {
            if is_hop_by_hop(&h.name, &self.headers)
                || (relay.dechunk && eq_ci(&h.name, "transfer-encoding"))
            {
                continue;
            }
            push_header(&mut out, &h.name, &h.value);
        }
        if (100..200).contains(&self.status) {
            // Interim responses carry no connection management.
        } else if relay.close {
            push_header(&mut out, "Connection", b"close");
        } else if req.version == Version::Http10 {
            push_header(&mut out, "Connection", b"keep-alive");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The standard reason phrase of the statuses this crate generates.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A complete small response generated by this crate (errors): text body, `Content-Length`,
/// and `Connection: close` when `close`.
pub fn simple_response(status: u16, close: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{} {}\n", status, reason(status));
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
        status,
        reason(status),
        body.len()
    )
    .into_bytes();
    for (n, v) in extra {
        push_header(&mut out, n, v.as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk-size line that is not hex digits, optional extensions and CRLF.
    BadSize,
    /// A chunk size that does not fit in 64 bits.
    SizeOverflow,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE`].
    LineTooLong,
    /// Chunk data not followed by CRLF.
    MissingCrlf,
    /// Trailer section longer than [`MAX_TRAILER_BYTES`], or a bare CR in it.
    BadTrailer,
}

impl core::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = match self {
            ChunkError::BadSize => "bad chunk-size line",
            ChunkError::SizeOverflow => "chunk size overflows",
            ChunkError::LineTooLong => "chunk-size line too long",
            ChunkError::MissingCrlf => "chunk data not followed by CRLF",
            ChunkError::BadTrailer => "bad trailer section",
        };
        f.write_str(s)
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// In the hex digits of a chunk size.
    Size { value: u64, digits: usize },
    /// After the size, in whitespace or extensions, up to CR.
    Ext,
    /// Saw the CR of the size line.
    SizeLf,
    /// In chunk data.
    Data { remaining: u64 },
    /// Expect the CR after chunk data.
    DataCr,
    /// Expect the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw the CR of a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
}

/// One step of the chunked decoder over an input slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkStep {
    /// Input bytes used (framing and data): a proxy that forwards the coding as it is writes
    /// `input[..consumed]`.
    pub consumed: usize,
    /// The chunk data inside `input[..consumed]` (possibly empty): a proxy that strips the
    /// coding writes only this.
    pub data: Range<usize>,
    /// The last byte of the body (end of the trailer section) was consumed.
    pub done: bool,
}

/// A streaming decoder of the chunked transfer coding (RFC 9112 section 7.1) that only finds
/// boundaries; it never buffers. Strict: CRLF line endings only, bounded line and trailer sizes.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Size of the chunk whose size line is being read.
    pending: u64,
    /// Bytes of the current size line.
    line: usize,
    /// Bytes of the trailer section so far.
    trailer: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
            pending: 0,
            line: 0,
            trailer: 0,
        }
    }

    /// True once the whole body was consumed.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Chunk data bytes still to come in the current chunk (0 outside chunk data). A relay may
    /// move these without looking at them and then tell the decoder with
    /// [`ChunkedDecoder::skip_data`].
    pub fn data_remaining(&self) -> u64 {
        match self.state {
            ChunkState::Data { remaining } => remaining,
            _ => 0,
        }
    }

    /// Accounts for `n` chunk data bytes moved around the decoder (at most
    /// [`ChunkedDecoder::data_remaining`]; more is clamped).
    pub fn skip_data(&mut self, n: u64) {
        if let ChunkState::Data { remaining } = self.state {
            let left = remaining - n.min(remaining);
            self.state = if left == 0 {
                ChunkState::DataCr
            } else {
                ChunkState::Data { remaining: left }
            };
        }
    }

    /// Consumes input up to the end of the next data run, the end of the body, or the end of
    /// `input`, whichever comes first.
    pub fn step(&mut self, input: &[u8]) -> Result<ChunkStep, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data { remaining } => {
                    let n = remaining.min((input.len() - i) as u64) as usize;
                    let start = i;
                    i += n;
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { remaining: left }
                    };
                    return Ok(ChunkStep {
                        consumed: i,
                        data: start..i,
                        done: false,
                    });
                }
                _ => {
                    self.byte(input[i])?;
                    i += 1;
                    if self.state == ChunkState::Done {
                        break;
                    }
                }
            }
        }
        Ok(ChunkStep {
            consumed: i,
            data: i..i,
            done: self.state == ChunkState::Done,
        })
    }

    fn byte(&mut self, b: u8) -> Result<(), ChunkError> {
        use ChunkState::*;
        self.state = match self.state {
            Size { value, digits } => {
                self.line += 1;
                if let Some(d) = (b as char).to_digit(16) {
                    if digits >= 16 {
                        return Err(ChunkError::SizeOverflow);
                    }
                    let v = value.checked_mul(16).ok_or(ChunkError::SizeOverflow)? + u64::from(d);
                    Size {
                        value: v,
                        digits: digits + 1,
                    }
                } else if digits == 0 {
                    return Err(ChunkError::BadSize);
                } else {
                    self.pending = value;
                    match b {
                        b'\r' => SizeLf,
                        b';' | b' ' | b'\t' => Ext,
                        _ => return Err(ChunkError::BadSize),
                    }
                }
            }
            Ext => {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return Err(ChunkError::LineTooLong);
                }
                match b {
                    b'\r' => SizeLf,
                    b'\n' => return Err(ChunkError::BadSize),
                    _ => Ext,
                }
            }
            SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadSize);
                }
                self.line = 0;
                if self.pending == 0 {
                    TrailerStart
                } else {
                    Data {
                        remaining: self.pending,
                    }
                }
            }
            DataCr => {
                if b != b'\r' {
                    return Err(ChunkError::MissingCrlf);
                }
                DataLf
            }
            DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                Size {
                    value: 0,
                    digits: 0,
                }
            }
            TrailerStart => {
                self.count_trailer()?;
                match b {
                    b'\r' => FinalLf,
                    b'\n' => return Err(ChunkError::BadTrailer),
                    _ => TrailerLine,
                }
            }
            TrailerLine => {
                self.count_trailer()?;
                match b {
                    b'\r' => TrailerLf,
                    b'\n' => return Err(ChunkError::BadTrailer),
                    _ => TrailerLine,
                }
            }
            TrailerLf => {
                self.count_trailer()?;
                if b != b'\n' {
                    return Err(ChunkError::BadTrailer);
                }
                TrailerStart
            }
            FinalLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadTrailer);
                }
                Done
            }
            Data { .. } | Done => self.state,
        };
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer += 1;
        if self.trailer > MAX_TRAILER_BYTES {
            Err(ChunkError::BadTrailer)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    fn req(s: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        parse_request(s, &lim())
    }

    fn must(s: &[u8]) -> RequestHead {
        req(s).unwrap().unwrap()
    }

    #[test]
    fn simple_get() {
        let r = must(b"GET /obj/a?size=3 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/obj/a?size=3");
        assert_eq!(r.path(), "/obj/a");
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.head_len, 39);
        assert_eq!(r.body, BodyFraming::Empty);
        assert!(r.keep_alive);
        assert_eq!(r.header("HOST"), Some(&b"x"[..]));
    }

    #[test]
    fn every_prefix_of_a_head_is_incomplete() {
        let full = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let head_len = full.len() - 5;
        for n in 0..head_len {
            assert_eq!(req(&full[..n]), Ok(None), "prefix {n}");
        }
        for n in head_len..=full.len() {
            let r = must(&full[..n]);
            assert_eq!(r.head_len, head_len);
            assert_eq!(r.body, BodyFraming::Length(5));
        }
    }

    #[test]
    fn many_pipelined_requests_in_one_buffer() {
        let mut buf = Vec::new();
        for i in 0..50 {
            buf.extend_from_slice(
                format!("GET /obj/{i}?size={i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
            );
        }
        buf.extend_from_slice(
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        buf.extend_from_slice(b"GET /last HTTP/1.0\r\n\r\n");
        let mut at = 0;
        for i in 0..50 {
            let r = must(&buf[at..]);
            assert_eq!(r.target, format!("/obj/{i}?size={i}"));
            at += r.head_len;
        }
        let r = must(&buf[at..]);
        assert_eq!(r.body, BodyFraming::Chunked);
        at += r.head_len;
        let mut d = ChunkedDecoder::new();
        let mut used = 0;
        loop {
            let s = d.step(&buf[at + used..]).unwrap();
            used += s.consumed;
            if s.done {
                break;
            }
        }
        at += used;
        let r = must(&buf[at..]);
        assert_eq!(r.target, "/last");
        assert!(!r.keep_alive);
        assert_eq!(at + r.head_len, buf.len());
    }

    #[test]
    fn persistence_rules() {
        assert!(!must(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(must(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(must(b"GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!must(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!must(b"GET / HTTP/1.1\r\nConnection: foo, CLOSE\r\n\r\n").keep_alive);
        assert!(
            !must(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn body_framing_rules() {
        assert_eq!(
            must(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body,
            BodyFraming::Empty
        );
        assert_eq!(
            must(b"POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n").body,
            BodyFraming::Length(7)
        );
        assert_eq!(
            must(b"POST / HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n").body,
            BodyFraming::Length(7)
        );
        assert_eq!(
            must(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").body,
            BodyFraming::Chunked
        );
        let bad = [
            &b"POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        ];
        for b in bad {
            let e = req(b).unwrap_err();
            assert_eq!(e.status(), 400, "{:?}: {e:?}", String::from_utf8_lossy(b));
        }
        let e = req(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap_err();
        assert_eq!(e, HeadError::UnsupportedTransferCoding);
        assert_eq!(e.status(), 501);
    }

    #[test]
    fn limits_give_431() {
        let small = Limits {
            max_header_bytes: 64,
            max_headers: 3,
        };
        // Incomplete but already past the limit.
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(
            parse_request(long.as_bytes(), &small),
            Err(HeadError::TooLarge)
        );
        // Complete but longer than the limit.
        let full = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(60));
        assert_eq!(
            parse_request(full.as_bytes(), &small),
            Err(HeadError::TooLarge)
        );
        assert_eq!(HeadError::TooLarge.status(), 431);
        // Exactly at the limit is fine.
        let exact = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "c".repeat(64 - 23));
        assert_eq!(exact.len(), 64);
        assert!(parse_request(exact.as_bytes(), &small).unwrap().is_some());
        let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(parse_request(many, &small), Err(HeadError::TooManyHeaders));
        assert_eq!(HeadError::TooManyHeaders.status(), 431);
        let three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(parse_request(three, &small).unwrap().is_some());
    }

    #[test]
    fn malformed_heads_give_400() {
        let bad = [
            &b"GET\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
        ];
        for b in bad {
            match req(b) {
                Err(e) => assert_eq!(e.status(), 400, "{:?}", String::from_utf8_lossy(b)),
                Ok(r) => panic!("{:?} parsed as {r:?}", String::from_utf8_lossy(b)),
            }
        }
    }

    fn decode_all(body: &[u8], cut: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut used = 0;
        let mut avail = 0;
        while !d.is_done() {
            if used == avail {
                if avail == body.len() {
                    break;
                }
                avail = (avail + cut).min(body.len());
            }
            let s = d.step(&body[used..avail])?;
            data.extend_from_slice(&body[used..avail][s.data.clone()]);
            used += s.consumed;
        }
        Ok((data, used))
    }

    #[test]
    fn chunked_decoding_at_every_split() {
        let body = b"4\r\nWiki\r\n5;name=\"v\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX: y\r\n\r\nTAIL";
        for cut in 1..body.len() {
            let (data, used) = decode_all(body, cut).unwrap();
            assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.", "cut {cut}");
            assert_eq!(used, body.len() - 4);
        }
        let (data, used) = decode_all(b"0\r\n\r\n", 1).unwrap();
        assert!(data.is_empty());
        assert_eq!(used, 5);
        let (data, _) = decode_all(b"A \r\n0123456789\r\n0\r\n\r\n", 3).unwrap();
        assert_eq!(data, b"0123456789");
    }

    #[test]
    fn skipped_data_is_the_same_as_stepped_data() {
        let body = b"a\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        let s = d.step(&body[..6]).unwrap();
        assert_eq!((s.consumed, s.data), (6, 3..6));
        assert_eq!(d.data_remaining(), 7);
        d.skip_data(7);
        assert_eq!(d.data_remaining(), 0);
        let mut at = 13;
        while !d.is_done() {
            let s = d.step(&body[at..]).unwrap();
            at += s.consumed;
        }
        assert_eq!(at, body.len());
    }

    #[test]
    fn chunked_errors() {
        assert_eq!(decode_all(b"g\r\n", 10), Err(ChunkError::BadSize));
        assert_eq!(decode_all(b"\r\n", 10), Err(ChunkError::BadSize));
        assert_eq!(decode_all(b"3\nabc\r\n", 10), Err(ChunkError::BadSize));
        assert_eq!(
            decode_all(b"3\r\nabcX\r\n", 10),
            Err(ChunkError::MissingCrlf)
        );
        assert_eq!(
            decode_all(b"11111111111111111\r\n", 40),
            Err(ChunkError::SizeOverflow)
        );
        assert_eq!(
            decode_all(b"0\r\nX: y\n\r\n", 40),
            Err(ChunkError::BadTrailer)
        );
        let long_ext = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE + 1));
        assert_eq!(
            decode_all(long_ext.as_bytes(), 100),
            Err(ChunkError::LineTooLong)
        );
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_TRAILER_BYTES));
        assert_eq!(
            decode_all(long_trailer.as_bytes(), 100),
            Err(ChunkError::BadTrailer)
        );
        // 16 hex digits fit.
        let mut d = ChunkedDecoder::new();
        assert!(d.step(b"ffffffffffffffff\r\nab").is_ok());
    }

    fn resp(s: &[u8], head: bool) -> ResponseHead {
        parse_response(s, &lim(), head).unwrap().unwrap()
    }

    #[test]
    fn response_framing() {
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).body,
            BodyFraming::Length(5)
        );
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).body,
            BodyFraming::Empty
        );
        assert_eq!(
            resp(b"HTTP/1.1 204 No Content\r\n\r\n", false).body,
            BodyFraming::Empty
        );
        assert_eq!(
            resp(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            )
            .body,
            BodyFraming::Empty
        );
        assert_eq!(
            resp(b"HTTP/1.1 100 Continue\r\n\r\n", false).body,
            BodyFraming::Empty
        );
        let c = resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(c.body, BodyFraming::Chunked);
        assert!(c.keep_alive);
        let u = resp(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(u.body, BodyFraming::UntilClose);
        assert!(!u.keep_alive);
        assert!(!resp(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).keep_alive);
        assert!(
            resp(
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
                false
            )
            .keep_alive
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                &lim(),
                false
            ),
            Err(HeadError::BadContentLength)
        );
    }

    #[test]
    fn upstream_head_drops_hop_by_hop_fields() {
        let r = must(
            b"GET /a HTTP/1.0\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: 5\r\nX-Hop: 1\r\nX-End: 2\r\nTE: trailers\r\n\r\n",
        );
        let out = String::from_utf8(r.encode_for_upstream("10.0.0.1:8080", false)).unwrap();
        assert_eq!(
            out,
            "GET /a HTTP/1.1\r\nX-End: 2\r\nHost: 10.0.0.1:8080\r\n\r\n"
        );
        let r = must(
            b"PUT /b HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(r.expect_continue);
        let out = String::from_utf8(r.encode_for_upstream("u", true)).unwrap();
        assert_eq!(
            out,
            "PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
        );
        let out = String::from_utf8(r.encode_for_upstream("u", false)).unwrap();
        assert!(out.contains("Expect: 100-continue\r\n"));
    }

    #[test]
    fn client_head_follows_the_client() {
        let up = resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nX: 1\r\n\r\n", false);
        let r11 = must(b"GET / HTTP/1.1\r\n\r\n");
        let relay = up.relay_for(&r11);
        assert_eq!(
            relay,
            Relay {
                dechunk: false,
                close: false
            }
        );
        assert_eq!(
            String::from_utf8(up.encode_for_client(&r11, relay)).unwrap(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: 1\r\n\r\n"
        );
        let r10 = must(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let relay = up.relay_for(&r10);
        assert_eq!(
            relay,
            Relay {
                dechunk: true,
                close: true
            }
        );
        assert_eq!(
            String::from_utf8(up.encode_for_client(&r10, relay)).unwrap(),
            "HTTP/1.1 200 OK\r\nX: 1\r\nConnection: close\r\n\r\n"
        );
        let sized = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", false);
        let relay = sized.relay_for(&r10);
        assert_eq!(
            relay,
            Relay {
                dechunk: false,
                close: false
            }
        );
        assert!(
            String::from_utf8(sized.encode_for_client(&r10, relay))
                .unwrap()
                .ends_with("Connection: keep-alive\r\n\r\n")
        );
    }

    #[test]
    fn paths() {
        assert_eq!(request_path("/a/b?c=d"), "/a/b");
        assert_eq!(request_path("/a#f"), "/a");
        assert_eq!(request_path("http://h:80/x/y?z"), "/x/y");
        assert_eq!(request_path("http://h"), "/");
        assert_eq!(request_path("*"), "*");
    }

    #[test]
    fn simple_responses_are_complete() {
        let r = simple_response(431, true, &[("x-knits-node", "n1")]);
        let p = resp(&r, false);
        assert_eq!(p.status, 431);
        assert_eq!(
            p.body,
            BodyFraming::Length(r.len() as u64 - p.head_len as u64)
        );
        assert!(!p.keep_alive);
    }
}
