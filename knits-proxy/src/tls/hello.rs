//! Reading a TLS ClientHello without answering it: the records that carry it (RFC 8446 5.1,
//! RFC 5246 6.2.1) are walked here, their handshake fragments joined, and the complete
//! ClientHello message is parsed by `tls-parser` for the two fields routing needs: the server
//! name (RFC 6066 section 3) and the ALPN protocols (RFC 7301).
//!
//! [`read_client_hello`] is pure: it takes the bytes read so far and says "need more", "here is
//! the hello", or why the bytes can never become one. The caller reads more and calls again, so
//! a hello split over any number of TCP segments, or over several records, is read the same way.
//! Nothing here panics on any input (`fuzz/fuzz_targets/client_hello.rs`).

use tls_parser::{
    SNIType, TlsExtension, TlsMessage, TlsMessageHandshake, parse_tls_client_hello_extensions,
    parse_tls_message_handshake,
};

/// Content type of a handshake record.
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Length of a record header: type, version (2), length (2).
const RECORD_HEADER: usize = 5;
/// Length of a handshake message header: type, length (3).
const HANDSHAKE_HEADER: usize = 4;
/// Largest record fragment a sender may use (RFC 8446 5.1: 2^14).
pub const MAX_FRAGMENT: usize = 1 << 14;
/// Longest host name (RFC 1035 section 2.3.4, in text form without the trailing dot).
pub const MAX_NAME: usize = 253;

/// Bounds on what the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloLimits {
    /// Largest ClientHello message (handshake header included). Browsers send 0.5-2 KiB
    /// (a post-quantum key share adds about 1.2 KiB).
    pub max_hello_bytes: usize,
    /// Most records the hello may be split over.
    pub max_records: usize,
}

impl Default for HelloLimits {
    fn default() -> Self {
        HelloLimits {
            max_hello_bytes: 16 * 1024,
            // A hello of 512 bytes in records of 8; every record costs 5 bytes of header, so
            // the buffer stays under max_hello_bytes + 320.
            max_records: 64,
        }
    }
}

/// What routing needs from a complete ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The host name of the server name extension, in lower case without a trailing dot.
    pub sni: Option<String>,
    /// The ALPN protocols the client offers, in its order (non-UTF-8 ones left out).
    pub alpn: Vec<String>,
    /// The records the hello spanned.
    pub records: usize,
    /// Bytes from the start of the stream to the end of the last record of the hello.
    pub wire_len: usize,
}

/// Why the bytes are not a usable ClientHello. A reason is final: more bytes cannot fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HelloError {
    /// The stream does not start with a TLS handshake record (e.g. plain HTTP).
    NotTls,
    /// An SSL 2.0-style ClientHello (a two-byte header with the high bit set).
    Sslv2,
    /// TLS records, but not a well-formed ClientHello in them.
    Malformed,
    /// The hello is longer than [`HelloLimits::max_hello_bytes`] or spans more than
    /// [`HelloLimits::max_records`] records.
    Oversized,
}

impl HelloError {
    /// Stable snake_case name (the metric label).
    pub const fn name(self) -> &'static str {
        match self {
            HelloError::NotTls => "not_tls",
            HelloError::Sslv2 => "sslv2",
            HelloError::Malformed => "malformed",
            HelloError::Oversized => "oversized",
        }
    }
}

impl core::fmt::Display for HelloError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HelloError::NotTls => "not a TLS handshake",
            HelloError::Sslv2 => "SSL 2.0-style ClientHello",
            HelloError::Malformed => "malformed ClientHello",
            HelloError::Oversized => "ClientHello too large",
        })
    }
}

impl std::error::Error for HelloError {}

/// A view over one TLS record header.
struct RecordHeader<'a>(&'a [u8; RECORD_HEADER]);

impl RecordHeader<'_> {
    fn content_type(&self) -> u8 {
        self.0[0]
    }
    fn version_major(&self) -> u8 {
        self.0[1]
    }
    fn length(&self) -> usize {
        usize::from(u16::from_be_bytes([self.0[3], self.0[4]]))
    }
}

/// Reads the ClientHello at the start of `buf` (the bytes received so far).
///
/// `Ok(None)`: no verdict yet, read more. `Ok(Some(hello))`: complete. `Err`: never a hello.
pub fn read_client_hello(
    buf: &[u8],
    limits: &HelloLimits,
) -> Result<Option<ClientHello>, HelloError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first & 0x80 != 0 {
        // SSL 2.0 record: 15-bit length, then the message type (1 = CLIENT-HELLO).
        return match buf.get(2) {
            None => Ok(None),
            Some(&CLIENT_HELLO) => Err(HelloError::Sslv2),
            Some(_) => Err(HelloError::NotTls),
        };
    }
    if first != HANDSHAKE {
        return Err(HelloError::NotTls);
    }
    if buf.get(1).is_some_and(|&major| major != 3) {
        return Err(HelloError::NotTls);
    }
    // The handshake bytes of the records seen so far, joined.
    let mut hs: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut records = 0;
    loop {
        let Some(h) = buf
            .get(at..at + RECORD_HEADER)
            .and_then(|h| <&[u8; RECORD_HEADER]>::try_from(h).ok())
        else {
            return Ok(None);
        };
        let h = RecordHeader(h);
        // Nothing but handshake records may come before the server's first answer (a
        // ChangeCipherSpec comes only after the ServerHello, RFC 8446 D.4).
        if h.content_type() != HANDSHAKE || h.version_major() != 3 {
            return Err(HelloError::Malformed);
        }
        let len = h.length();
        // RFC 8446 5.1: handshake records are never empty, and no fragment exceeds 2^14.
        if len == 0 || len > MAX_FRAGMENT {
            return Err(HelloError::Malformed);
        }
        records += 1;
        if records > limits.max_records {
            return Err(HelloError::Oversized);
        }
        let start = at + RECORD_HEADER;
        let complete = buf.get(start..start + len);
        // A partial record still lets the handshake header be checked early.
        hs.extend_from_slice(complete.unwrap_or(buf.get(start..).unwrap_or_default()));
        let Some(msg_len) = message_len(&hs, limits)? else {
            if complete.is_none() {
                return Ok(None);
            }
            at = start + len;
            continue;
        };
        if complete.is_none() {
            return Ok(None);
        }
        at = start + len;
        if let Some(msg) = hs.get(..HANDSHAKE_HEADER + msg_len) {
            let (sni, alpn) = parse_fields(msg)?;
            return Ok(Some(ClientHello {
                sni,
                alpn,
                records,
                wire_len: at,
            }));
        }
    }
}

/// The ClientHello message's body length, once its header is in `hs`.
fn message_len(hs: &[u8], limits: &HelloLimits) -> Result<Option<usize>, HelloError> {
    let Some(&[kind, a, b, c]) = hs.get(..HANDSHAKE_HEADER) else {
        return Ok(None);
    };
    if kind != CLIENT_HELLO {
        return Err(HelloError::Malformed);
    }
    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    if HANDSHAKE_HEADER + len > limits.max_hello_bytes {
        return Err(HelloError::Oversized);
    }
    Ok(Some(len))
}

/// The server name and ALPN list of a complete ClientHello message (header included).
fn parse_fields(msg: &[u8]) -> Result<(Option<String>, Vec<String>), HelloError> {
    let Ok((rest, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        parse_tls_message_handshake(msg)
    else {
        return Err(HelloError::Malformed);
    };
    if !rest.is_empty() {
        return Err(HelloError::Malformed);
    }
    let mut sni = None;
    let mut alpn = Vec::new();
    let Some(ext) = ch.ext else {
        return Ok((sni, alpn));
    };
    let Ok((_, exts)) = parse_tls_client_hello_extensions(ext) else {
        return Err(HelloError::Malformed);
    };
    for e in exts {
        match e {
            TlsExtension::SNI(names) => {
                // RFC 6066 3: at most one name of each type; only host_name is defined.
                if let Some((_, name)) = names.iter().find(|(t, _)| *t == SNIType::HostName) {
                    sni = Some(host_name(name).ok_or(HelloError::Malformed)?);
                }
            }
            TlsExtension::ALPN(protos) => {
                alpn = protos
                    .iter()
                    .filter_map(|p| core::str::from_utf8(p).ok().map(str::to_string))
                    .collect();
            }
            _ => {}
        }
    }
    Ok((sni, alpn))
}

/// A server name as routing compares it: ASCII letters, digits, '-', '_' and '.', lower case,
/// without a trailing dot (RFC 6066 3: "the trailing dot is not included"; some clients send it).
fn host_name(raw: &[u8]) -> Option<String> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    let ok = !raw.is_empty()
        && raw.len() <= MAX_NAME
        && raw
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    ok.then(|| String::from_utf8_lossy(raw).to_ascii_lowercase())
}

/// The fuzz target's check (`fuzz/fuzz_targets/client_hello.rs`; its corpus is replayed by
/// `cargo test -p knits-proxy`): no input panics, the reader agrees with itself on every
/// prefix it reports complete, and a verdict on a prefix is final (more bytes never turn an
/// error into a hello or a hello into another one).
pub fn check_reader(data: &[u8]) {
    let lim = HelloLimits {
        max_hello_bytes: 4096,
        max_records: 16,
    };
    let whole = read_client_hello(data, &lim);
    if let Ok(Some(h)) = &whole {
        assert!(h.wire_len <= data.len() && h.records >= 1);
        assert!(
            h.sni
                .as_ref()
                .is_none_or(|n| !n.is_empty() && n.len() <= MAX_NAME)
        );
        assert_eq!(read_client_hello(&data[..h.wire_len], &lim), whole);
        if h.wire_len > 0 {
            assert_eq!(read_client_hello(&data[..h.wire_len - 1], &lim), Ok(None));
        }
    }
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match read_client_hello(&data[..cut], &lim) {
            Ok(None) => {}
            verdict => assert_eq!(verdict, whole, "prefix {cut}"),
        }
    }
}

/// Test and fuzz helper: a minimal TLS 1.2-style ClientHello message (handshake header
/// included) with the given server name and ALPN protocols, and `pad` bytes of padding
/// extension to make it long.
pub fn build_hello_message(sni: Option<&str>, alpn: &[&str], pad: usize) -> Vec<u8> {
    fn u16be(v: usize) -> [u8; 2] {
        (v as u16).to_be_bytes()
    }
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&u16be(n.len() + 5));
        ext.extend_from_slice(&u16be(n.len() + 3));
        ext.push(0);
        ext.extend_from_slice(&u16be(n.len()));
        ext.extend_from_slice(n);
    }
    if !alpn.is_empty() {
        let list: Vec<u8> = alpn
            .iter()
            .flat_map(|p| core::iter::once(p.len() as u8).chain(p.bytes()))
            .collect();
        ext.extend_from_slice(&[0, 16]);
        ext.extend_from_slice(&u16be(list.len() + 2));
        ext.extend_from_slice(&u16be(list.len()));
        ext.extend_from_slice(&list);
    }
    if pad > 0 {
        ext.extend_from_slice(&[0, 21]);
        ext.extend_from_slice(&u16be(pad));
        ext.extend(core::iter::repeat_n(0u8, pad));
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&u16be(ext.len()));
    body.extend_from_slice(&ext);
    let mut msg = vec![CLIENT_HELLO];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// Test and fuzz helper: `msg` framed as handshake records of at most `fragment` bytes each.
pub fn into_records(msg: &[u8], fragment: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in msg.chunks(fragment.max(1)) {
        out.extend_from_slice(&[HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURL_H2: &[u8] = include_bytes!("testdata/curl-h2.bin");
    const OPENSSL_TLS12: &[u8] = include_bytes!("testdata/openssl-tls12.bin");
    const OPENSSL_NO_SNI: &[u8] = include_bytes!("testdata/openssl-nosni.bin");

    fn read(b: &[u8]) -> Result<Option<ClientHello>, HelloError> {
        read_client_hello(b, &HelloLimits::default())
    }

    #[test]
    fn real_hellos_from_curl_and_openssl() {
        let h = read(CURL_H2).unwrap().unwrap();
        assert_eq!(h.sni.as_deref(), Some("www.n2.example"));
        assert_eq!(h.alpn, ["h2", "http/1.1"]);
        assert_eq!((h.records, h.wire_len), (1, CURL_H2.len()));
        let h = read(OPENSSL_TLS12).unwrap().unwrap();
        assert_eq!(h.sni.as_deref(), Some("n1.example"));
        assert_eq!(h.alpn, ["http/1.1"]);
        let h = read(OPENSSL_NO_SNI).unwrap().unwrap();
        assert_eq!(h.sni, None);
    }

    #[test]
    fn every_prefix_needs_more_and_the_whole_is_complete() {
        for hello in [CURL_H2, OPENSSL_TLS12, OPENSSL_NO_SNI] {
            for cut in 0..hello.len() {
                assert_eq!(read(&hello[..cut]), Ok(None), "cut at {cut}");
            }
            assert!(read(hello).unwrap().is_some());
        }
    }

    #[test]
    fn a_hello_over_several_records_is_joined() {
        let msg = build_hello_message(Some("A.Example."), &["h2"], 3000);
        for fragment in [1, 7, 100, 1000, 4000] {
            let wire = into_records(&msg, fragment);
            let records = msg.len().div_ceil(fragment);
            let lim = HelloLimits {
                max_hello_bytes: 16 * 1024,
                max_records: 8192,
            };
            for cut in [0, 1, 4, 5, 6, 9, wire.len() / 2, wire.len() - 1] {
                assert_eq!(read_client_hello(&wire[..cut], &lim), Ok(None));
            }
            let h = read_client_hello(&wire, &lim).unwrap().unwrap();
            assert_eq!(h.sni.as_deref(), Some("a.example"));
            assert_eq!(h.alpn, ["h2"]);
            assert_eq!((h.records, h.wire_len), (records, wire.len()));
            // Bytes after the hello (early data, a second message) do not matter.
            let mut more = wire.clone();
            more.extend_from_slice(b"\x17\x03\x03\x00\x01x");
            assert_eq!(read_client_hello(&more, &lim).unwrap().unwrap(), h);
        }
    }

    #[test]
    fn not_tls_sslv2_malformed_and_oversized() {
        assert_eq!(read(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls));
        assert_eq!(read(b"G"), Err(HelloError::NotTls));
        assert_eq!(read(b"\x16\x01"), Err(HelloError::NotTls));
        // SSL 2.0 CLIENT-HELLO header: length 0x8031, type 1.
        assert_eq!(read(b"\x80\x31"), Ok(None));
        assert_eq!(read(b"\x80\x31\x01\x03\x01"), Err(HelloError::Sslv2));
        assert_eq!(read(b"\x80\x31\x07"), Err(HelloError::NotTls));
        // A handshake record that holds a ServerHello.
        assert_eq!(
            read(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"),
            Err(HelloError::Malformed)
        );
        // An empty handshake record; a fragment over 2^14.
        assert_eq!(read(b"\x16\x03\x01\x00\x00"), Err(HelloError::Malformed));
        assert_eq!(read(b"\x16\x03\x01\x40\x01"), Err(HelloError::Malformed));
        // A second record of another type.
        let msg = build_hello_message(Some("a.example"), &[], 0);
        let mut wire = into_records(&msg[..10], 10);
        wire.extend_from_slice(b"\x15\x03\x03\x00\x02\x02\x32");
        assert_eq!(read(&wire), Err(HelloError::Malformed));
        // A hello whose inner lengths lie.
        let mut bad = msg.clone();
        bad[4 + 2 + 32] = 200; // session id length beyond the message
        assert_eq!(read(&into_records(&bad, 1000)), Err(HelloError::Malformed));
        // A name with bytes no host name has.
        let evil = build_hello_message(Some("a b.example"), &[], 0);
        assert_eq!(read(&into_records(&evil, 1000)), Err(HelloError::Malformed));
        // Too long: known from the handshake header, before the body arrives.
        let big = build_hello_message(Some("a.example"), &[], 20_000);
        let wire = into_records(&big, MAX_FRAGMENT);
        assert_eq!(read(&wire[..9]), Err(HelloError::Oversized));
        // Too many records.
        let wire = into_records(&build_hello_message(Some("a.example"), &[], 100), 2);
        assert_eq!(read(&wire), Err(HelloError::Oversized));
    }

    #[test]
    fn the_fuzz_corpus_replays() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/client_hello");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            check_reader(&data);
            n += 1;
        }
        assert!(n >= 5, "{n} corpus files in {dir}");
    }

    #[test]
    fn names_are_lower_case_without_trailing_dot() {
        assert_eq!(
            host_name(b"WWW.Example.COM."),
            Some("www.example.com".into())
        );
        assert_eq!(host_name(b"."), None);
        assert_eq!(host_name(b""), None);
        assert_eq!(host_name(&[b'a'; 254]), None);
        assert_eq!(host_name("ü.example".as_bytes()), None);
    }
}
