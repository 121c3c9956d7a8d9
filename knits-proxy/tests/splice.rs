//! The spliced response path (`splice.rs`, `Upstream::relay_response`) against a scripted
//! stand-in upstream: short reads, an upstream that closes inside a body, and a client that stops
//! reading. Each test checks the bytes the client gets and that no connection or pipe descriptor
//! is left behind (counted in /proc/self/fd). The scenarios run one after the other in a single
//! test (one runtime, nothing else in the process), so that the counts see only their proxy.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use knits_proxy::conn::{Conn, ReadHead};
use knits_proxy::framing::{Limits, parse_response};
use knits_proxy::proxy::Shared;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits until the proxy has no client connection open and the descriptors are back to
/// `before`, plus what the proxy keeps on purpose (idle upstream connections, idle pipes).
async fn assert_no_leak(before: usize, shared: &Arc<Shared>) {
    let expected = || before + shared.upstream.idle_count() + 2 * shared.upstream.idle_pipes();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let open = shared.metrics.connections_open.load(Relaxed);
        if open == 0 && fds() == expected() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "descriptors: {} now, {} expected ({} before, {} idle upstream, {} idle pipes); {open} connections open",
                fds(),
                expected(),
                before,
                shared.upstream.idle_count(),
                shared.upstream.idle_pipes()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// A chunked coding of `data` in chunks of `sizes` (repeated), with an extension and a trailer.
fn chunked(data: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - at);
        out.extend_from_slice(
            format!("{n:x}{}\r\n", if i.is_multiple_of(3) { ";x=y" } else { "" }).as_bytes(),
        );
        out.extend_from_slice(&data[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
        i += 1;
    }
    out.extend_from_slice(b"0\r\nT: 1\r\n\r\n");
    out
}

/// Reads one request head off the stand-in's connection.
async fn read_request(s: &mut TcpStream) {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "request head cut");
        got.push(b[0]);
    }
}

/// Writes `data` in pieces of 1 to ~5000 bytes, pausing now and then, so that the proxy's
/// splices return short and find the socket empty in the middle of a body.
async fn write_dribbled(s: &mut TcpStream, data: &[u8]) {
    let mut at = 0;
    let mut i = 0u32;
    while at < data.len() {
        let n = (1 + (i.wrapping_mul(2_654_435_761) >> 20) as usize).min(data.len() - at);
        s.write_all(&data[at..at + n]).await.unwrap();
        at += n;
        i += 1;
        if i.is_multiple_of(7) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn head_of(c: &mut Conn<TcpStream>) -> knits_proxy::framing::ResponseHead {
    let lim = Limits::default();
    match c
        .read_head(WAIT, |b| parse_response(b, &lim, false))
        .await
        .unwrap()
    {
        ReadHead::Head(h) => {
            c.consume(h.head_len);
            h
        }
        _ => panic!("no response head"),
    }
}

async fn raw_exact(c: &mut Conn<TcpStream>, n: usize) -> Vec<u8> {
    while c.buffered().len() < n {
        assert!(
            c.fill_within(WAIT).await.unwrap() > 0,
            "client connection ended early"
        );
    }
    let v = c.buffered()[..n].to_vec();
    c.consume(n);
    v
}

async fn short_reads_keep_sized_and_chunked_bodies_exact() {
    // The stand-in upstream; the test holds it, so that it is open before and after.
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let up = listener.clone();
    let (p, _, shared) = proxy(local_config(up.local_addr().unwrap())).await;
    let before = fds();

    let sized = pattern(300_000, 1);
    let plain = pattern(400_000, 2);
    let coded = chunked(&plain, &[10, 5000, 70_000, 3, 100_000, 4096]);
    let (s2, c2) = (sized.clone(), coded.clone());
    let server = tokio::spawn(async move {
        let (mut s, _) = up.accept().await.unwrap();
        read_request(&mut s).await;
        s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", s2.len()).as_bytes())
            .await
            .unwrap();
        write_dribbled(&mut s, &s2).await;
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        write_dribbled(&mut s, &c2).await;
    });

    let mut c = client(p).await;
    c.write_all(format!("{}{}", get("a", 1), get("b", 1)).as_bytes())
        .await
        .unwrap();
    let h = head_of(&mut c).await;
    assert_eq!(h.status, 200);
    assert_eq!(raw_exact(&mut c, sized.len()).await, sized);
    let h = head_of(&mut c).await;
    assert_eq!(
        h.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
            .map(|h| h.value.clone()),
        Some(b"chunked".to_vec())
    );
    // The coding is forwarded byte for byte.
    assert_eq!(raw_exact(&mut c, coded.len()).await, coded);
    server.await.unwrap();
    drop(c);
    assert_no_leak(before, &shared).await;
    // Kept alive, which needs an empty read buffer: the proxy read nothing past either body.
    // (The client connection held it; it went back to the idle list when the client left.)
    assert_eq!(shared.upstream.idle_count(), 1);
}

async fn a_dechunked_body_for_an_http10_client_is_exact() {
    // The stand-in upstream; the test holds it, so that it is open before and after.
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let up = listener.clone();
    let (p, _, shared) = proxy(local_config(up.local_addr().unwrap())).await;
    let before = fds();
    let plain = pattern(250_000, 3);
    let coded = chunked(&plain, &[65_536, 7, 20_000]);
    tokio::spawn(async move {
        let (mut s, _) = up.accept().await.unwrap();
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        write_dribbled(&mut s, &coded).await;
    });
    let mut c = client(p).await;
    c.write_all(b"GET /x HTTP/1.0\r\n\r\n").await.unwrap();
    let h = head_of(&mut c).await;
    assert_eq!(h.status, 200);
    // HTTP/1.0: data only, and the end of the connection ends the body.
    assert_eq!(read_to_end(&mut c).await, plain);
    drop(c);
    assert_no_leak(before, &shared).await;
}

async fn an_upstream_that_closes_inside_the_body_ends_the_client_connection() {
    // The stand-in upstream; the test holds it, so that it is open before and after.
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let up = listener.clone();
    let (p, m, shared) = proxy(local_config(up.local_addr().unwrap())).await;
    let before = fds();
    let body = pattern(200_000, 4);
    let b2 = body.clone();
    tokio::spawn(async move {
        // Sized: 200 000 announced, 70 000 sent. Then chunked: cut inside chunk data.
        let (mut s, _) = up.accept().await.unwrap();
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n")
            .await
            .unwrap();
        write_dribbled(&mut s, &b2[..70_000]).await;
        drop(s);
        let (mut s, _) = up.accept().await.unwrap();
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n30d40\r\n")
            .await
            .unwrap();
        write_dribbled(&mut s, &b2[..90_000]).await;
        drop(s);
    });

    let mut c = client(p).await;
    c.write_all(get("a", 1).as_bytes()).await.unwrap();
    head_of(&mut c).await;
    // Exactly the bytes the upstream sent, then the end: no padding, no second response.
    assert_eq!(read_to_end(&mut c).await, body[..70_000]);

    let mut c2 = client(p).await;
    c2.write_all(get("b", 1).as_bytes()).await.unwrap();
    head_of(&mut c2).await;
    let mut want = b"30d40\r\n".to_vec();
    want.extend_from_slice(&body[..90_000]);
    assert_eq!(read_to_end(&mut c2).await, want);
    assert_eq!(m.upstream_errors.load(Relaxed), 2);
    drop((c, c2));
    assert_eq!(
        shared.upstream.idle_count(),
        0,
        "a cut connection is not reused"
    );
    assert_no_leak(before, &shared).await;
}

async fn a_client_that_stops_reading_gets_everything_later_or_leaks_nothing() {
    // The stand-in upstream; the test holds it, so that it is open before and after.
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let up = listener.clone();
    let (p, _, shared) = proxy(local_config(up.local_addr().unwrap())).await;
    let before = fds();
    let body = pattern(8 << 20, 5);
    let b2 = body.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = up.accept().await else {
                return;
            };
            let b = b2.clone();
            tokio::spawn(async move {
                read_request(&mut s).await;
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len())
                            .as_bytes(),
                    )
                    .await;
                let _ = s.write_all(&b).await;
            });
        }
    });

    // 1: stops reading for a while with buffers full on every hop, then reads it all.
    let mut c = client(p).await;
    c.write_all(get("a", 1).as_bytes()).await.unwrap();
    head_of(&mut c).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = raw_exact(&mut c, body.len()).await;
    assert!(got == body, "body differs");
    drop(c);

    // 2: reads a little, stops, and goes away with the body in flight (pipe not empty).
    let mut c = client(p).await;
    c.write_all(get("b", 1).as_bytes()).await.unwrap();
    head_of(&mut c).await;
    raw_exact(&mut c, 10_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    assert_no_leak(before, &shared).await;
}

#[tokio::test]
async fn spliced_responses_are_exact_and_leak_nothing() {
    short_reads_keep_sized_and_chunked_bodies_exact().await;
    a_dechunked_body_for_an_http10_client_is_exact().await;
    an_upstream_that_closes_inside_the_body_ends_the_client_connection().await;
    a_client_that_stops_reading_gets_everything_later_or_leaks_nothing().await;
}
