//! The client side of HTTP/1.1 (RFC 9112): request lines out, an incremental response parser in.
//!
//! The parser never buffers a body: it hands body bytes out as they arrive, so a 16 MiB response
//! is verified on the fly. It accepts `Content-Length` and `chunked` bodies; anything it does not
//! understand is an [`HttpError`] that says what was wrong, never a panic.
//!
//! Why not the proxy's httparse-based framing: this parser is the load client's and the cluster
//! checks' judge of what the proxy and the servers behind it send, byte for byte across hand-offs.
//! Framing those responses with the code under test (or the same library, configured the same
//! way) would let a framing mistake agree with itself and pass; an independent reading of RFC 9112
//! catches it. It is small, incremental and fuzzed by `garbage_never_panics`.

use std::fmt;

/// Longest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// A parse failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError(pub String);

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

fn err<T>(msg: impl Into<String>) -> Result<T, HttpError> {
    Err(HttpError(msg.into()))
}

/// A parsed status line and the headers the client cares about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// `Content-Length`, when present.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Connection: close`.
    pub close: bool,
    /// All headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request line plus Host, as the load client sends it.
pub fn request(path: &str, host: &str, close: bool) -> String {
    if close {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    } else {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
    }
}

/// Parses a response head (everything up to and including the blank line).
pub fn parse_head(b: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(b).or_else(|_| err("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return err(format!("status line {status_line:?} is not HTTP/1.x"));
    }
    let status = parts
        .next()
        .and_then(|s| {
            if s.len() == 3 {
                s.parse::<u16>().ok()
            } else {
                None
            }
        })
        .ok_or_else(|| HttpError(format!("status line {status_line:?} has no 3-digit status")))?;
    let mut head = Head {
        status,
        close: version == "HTTP/1.0",
        ..Head::default()
    };
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return err(format!("header line {line:?} has no colon"));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        match name.as_str() {
            "content-length" => {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| HttpError(format!("Content-Length {value:?} is not a number")))?;
                if head.content_length.is_some_and(|m| m != n) {
                    return err("two different Content-Length headers");
                }
                head.content_length = Some(n);
            }
            "transfer-encoding" => head.chunked = value.to_ascii_lowercase().ends_with("chunked"),
            "connection" => {
                if value.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    head.close = false;
                }
            }
            _ => {}
        }
        head.headers.push((name, value));
    }
    Ok(head)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkCrlf,
    Trailer,
    UntilClose,
}

/// What [`ResponseParser::advance`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Needs more input (all of it was consumed).
    NeedMore,
    /// A response head.
    Head(Head),
    /// Body bytes of the current response.
    Body(&'a [u8]),
    /// The current response is complete.
    Done,
}

/// An incremental parser of a stream of responses on one connection.
#[derive(Debug, Clone)]
pub struct ResponseParser {
    state: State,
    head: Vec<u8>,
    line: Vec<u8>,
    head_request: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser {
            state: State::Head,
            head: Vec::new(),
            line: Vec::new(),
            head_request: false,
        }
    }
}

impl ResponseParser {
    /// A parser at the start of a response.
    pub fn new() -> Self {
        Self::default()
    }

    /// True between responses.
    pub fn idle(&self) -> bool {
        self.state == State::Head && self.head.is_empty()
    }

    /// Marks that the next response answers a HEAD request (no body).
    pub fn expect_head_response(&mut self) {
        self.head_request = true;
    }

    /// Called at end of stream: completes a read-until-close body, else reports truncation.
    pub fn finish(&mut self) -> Result<bool, HttpError> {
        match self.state {
            State::UntilClose => {
                self.state = State::Head;
                Ok(true)
            }
            State::Head if self.head.is_empty() => Ok(false),
            s => err(format!(
                "connection closed in the middle of a response ({s:?})"
            )),
        }
    }

    /// Consumes a prefix of `input`; returns how many bytes and what it found.
    pub fn advance<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Step<'a>), HttpError> {
        match self.state {
            State::Head => {
                let before = self.head.len();
                // Search for the blank line across the bytes kept and the new input.
                let start = before.saturating_sub(3);
                self.head.extend_from_slice(input);
                if let Some(p) = find(&self.head[start..], b"\r\n\r\n") {
                    let end = start + p + 4;
                    let used = end - before;
                    let head = parse_head(&self.head[..end])?;
                    self.head.clear();
                    if (100..200).contains(&head.status) {
                        return Ok((used, Step::NeedMore));
                    }
                    let no_body = self.head_request || head.status == 204 || head.status == 304;
                    self.head_request = false;
                    self.state = if no_body {
                        State::Body(0)
                    } else if head.chunked {
                        State::ChunkSize
                    } else if let Some(n) = head.content_length {
                        State::Body(n)
                    } else {
                        State::UntilClose
                    };
                    return Ok((used, Step::Head(head)));
                }
                if self.head.len() > MAX_HEAD {
                    return err(format!("response head longer than {MAX_HEAD} bytes"));
                }
                Ok((input.len(), Step::NeedMore))
            }
            State::Body(0) => {
                self.state = State::Head;
                Ok((0, Step::Done))
            }
            State::Body(n) => {
                if input.is_empty() {
                    return Ok((0, Step::NeedMore));
                }
                let k = (n.min(input.len() as u64)) as usize;
                self.state = State::Body(n - k as u64);
                Ok((k, Step::Body(&input[..k])))
            }
            State::UntilClose => Ok((
                input.len(),
                if input.is_empty() {
                    Step::NeedMore
                } else {
                    Step::Body(input)
                },
            )),
            State::ChunkSize | State::ChunkCrlf | State::Trailer => {
                let Some(p) = input.iter().position(|&b| b == b'\n') else {
                    self.line.extend_from_slice(input);
                    if self.line.len() > 1024 {
                        return err("chunk-size line too long");
                    }
                    return Ok((input.len(), Step::NeedMore));
                };
                self.line.extend_from_slice(&input[..p + 1]);
                let line = std::mem::take(&mut self.line);
                let text = std::str::from_utf8(&line)
                    .unwrap_or("")
                    .trim_end_matches(['\r', '\n']);
                match self.state {
                    State::ChunkSize => {
                        let hex = text.split(';').next().unwrap_or("").trim();
                        let n = u64::from_str_radix(hex, 16)
                            .map_err(|_| HttpError(format!("bad chunk size {text:?}")))?;
                        self.state = if n == 0 {
                            State::Trailer
                        } else {
                            State::ChunkData(n)
                        };
                        Ok((p + 1, Step::NeedMore))
                    }
                    State::ChunkCrlf => {
                        if !text.is_empty() {
                            return err("chunk data not followed by CRLF");
                        }
                        self.state = State::ChunkSize;
                        Ok((p + 1, Step::NeedMore))
                    }
                    _ => {
                        if text.is_empty() {
                            self.state = State::Head;
                            return Ok((p + 1, Step::Done));
                        }
                        Ok((p + 1, Step::NeedMore))
                    }
                }
            }
            State::ChunkData(n) => {
                if input.is_empty() {
                    return Ok((0, Step::NeedMore));
                }
                let k = (n.min(input.len() as u64)) as usize;
                self.state = if k as u64 == n {
                    State::ChunkCrlf
                } else {
                    State::ChunkData(n - k as u64)
                };
                Ok((k, Step::Body(&input[..k])))
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted `v`; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes; returns (heads, bodies, done count).
    type Parsed = (Vec<Head>, Vec<Vec<u8>>, usize);

    fn run(input: &[u8], piece: usize) -> Result<Parsed, HttpError> {
        let mut p = ResponseParser::new();
        let mut heads = Vec::new();
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        let mut done = 0;
        for chunk in input.chunks(piece.max(1)) {
            let mut at = 0;
            loop {
                let (n, step) = p.advance(&chunk[at..])?;
                at += n;
                match step {
                    Step::Head(h) => {
                        heads.push(h);
                        bodies.push(Vec::new());
                    }
                    Step::Body(b) => bodies.last_mut().unwrap().extend_from_slice(b),
                    Step::Done => done += 1,
                    Step::NeedMore => {
                        if at == chunk.len() {
                            break;
                        }
                    }
                }
            }
        }
        if p.finish()? {
            done += 1;
        }
        Ok((heads, bodies, done))
    }

    const PIPELINED: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Knits-Node: n2\r\n\r\nhello\
HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n\
HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\nConnection: close\r\n\r\nno!";

    #[test]
    fn pipelined_responses_in_any_split() {
        for piece in [1, 2, 3, 7, 16, 1000] {
            let (heads, bodies, done) = run(PIPELINED, piece).unwrap();
            assert_eq!(done, 4, "piece {piece}");
            assert_eq!(
                heads.iter().map(|h| h.status).collect::<Vec<_>>(),
                vec![200, 200, 200, 404]
            );
            assert_eq!(
                bodies,
                vec![
                    b"hello".to_vec(),
                    vec![],
                    b"abcde".to_vec(),
                    b"no!".to_vec()
                ]
            );
            assert_eq!(heads[0].header("x-knits-node"), Some("n2"));
            assert!(heads[3].close);
            assert!(heads[2].chunked);
        }
    }

    #[test]
    fn body_until_close() {
        let (heads, bodies, done) = run(b"HTTP/1.0 200 OK\r\n\r\nstream", 4).unwrap();
        assert_eq!(heads.len(), 1);
        assert!(heads[0].close);
        assert_eq!(bodies[0], b"stream");
        assert_eq!(done, 1);
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert!(
            run(b"SSH-2.0-x\r\n\r\n", 100)
                .unwrap_err()
                .0
                .contains("HTTP/1.x")
        );
        assert!(
            run(b"HTTP/1.1 2000 OK\r\n\r\n", 100)
                .unwrap_err()
                .0
                .contains("status")
        );
        assert!(
            run(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 100)
                .unwrap_err()
                .0
                .contains("Content-Length")
        );
        assert!(
            run(b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", 100)
                .unwrap_err()
                .0
                .contains("colon")
        );
        assert!(
            run(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 100)
                .unwrap_err()
                .0
                .contains("middle")
        );
        assert!(
            run(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                100
            )
            .unwrap_err()
            .0
            .contains("chunk")
        );
        let huge = vec![b'a'; MAX_HEAD + 10];
        assert!(run(&huge, 4096).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        use rand_xoshiro::rand_core::{Rng, SeedableRng};
        let mut x = rand_xoshiro::SplitMix64::seed_from_u64(12345);
        for _ in 0..2000 {
            let len = (x.next_u64() % 200) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| x.next_u64() as u8).collect();
            if x.next_u64().is_multiple_of(2) {
                let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
                h.append(&mut v);
                v = h;
            }
            let _ = run(&v, 1 + (x.next_u64() % 13) as usize);
        }
    }

    #[test]
    fn informational_responses_are_skipped() {
        let (heads, _, done) = run(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
            5,
        )
        .unwrap();
        assert_eq!(heads.len(), 1);
        assert_eq!(done, 1);
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            request("/n1/a", "198.18.0.10", false),
            "GET /n1/a HTTP/1.1\r\nHost: 198.18.0.10\r\n\r\n"
        );
        assert!(request("/x", "h", true).contains("Connection: close\r\n"));
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 99.0), 7);
    }
}
