//! The TLS listener against a stand-in switch (a UDP socket), a stand-in peer (a TCP listener
//! on 127.0.0.2 and the same port, as a peer node's TLS listener would be) and a stand-in local
//! TLS server (a TCP listener that echoes). It checks that a hello is read across segments and
//! records without any byte sent to the client, that the hand-off request anchors are 0/0, that
//! the new leg carries exactly the client's bytes from the first, that a local name is relayed,
//! that silence, garbage, SSLv2 and oversized hellos are closed and counted by reason, and that a
//! hand-off the switch refuses is tried again and then ends in an alert, unless the local TLS
//! server holds a certificate for the name.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use knits_core::wire::control::ReplyCode;
use knits_proxy::config::{Peer, ProxyConfig, SwitchConfig};
use knits_proxy::metrics::Metrics;
use knits_proxy::tls::config::{OnError, TlsArgs};
use knits_proxy::tls::hello::{build_hello_message, into_records};
use knits_proxy::tls::{HelloError, Rejected};
use knits_proxy::{Proxy, sockopt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CURL_H2: &[u8] = include_bytes!("../src/tls/testdata/curl-h2.bin");

struct Setup {
    tls: SocketAddr,
    metrics: Arc<Metrics>,
    switch: StandIn,
    peer: TcpListener,
    /// Every connection the local TLS server accepted sends its bytes here.
    local: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
}

/// Proxy n1 with a TLS listener: `*.n2.example` belongs to n2, the rest to n1.
async fn setup(on_error: OnError, hello_timeout_ms: u64) -> Setup {
    setup_with(on_error, hello_timeout_ms, &[]).await
}

/// As [`setup`], with `local_names` the names n1's TLS server holds a certificate for.
async fn setup_with(on_error: OnError, hello_timeout_ms: u64, local_names: &[&str]) -> Setup {
    let switch = StandIn::bind().await;
    // The peer's TLS listener and ours share the port, on two loopback addresses.
    let peer = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = peer.local_addr().unwrap().port();
    // The local TLS server: echoes "LOCAL:" and every byte it reads.
    let local_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local_l.local_addr().unwrap();
    let (tx, local) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = local_l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let _ = s.write_all(b"LOCAL:").await;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            got.extend_from_slice(&buf[..n]);
                            let _ = s.write_all(&buf[..n]).await;
                        }
                    }
                }
                let _ = tx.send(got);
            });
        }
    });
    let origin = origin("n1").await;
    let mut cfg = ProxyConfig::local("n1", "127.0.0.1:0".parse().unwrap(), origin);
    cfg.peers = vec![Peer {
        id: "n2".into(),
        addr: "127.0.0.2:80".parse().unwrap(),
        weight: 1,
    }];
    cfg.switch = Some(SwitchConfig {
        control: switch.addr(),
        bind: "127.0.0.1:0".parse().unwrap(),
        key: KEY,
        key_id: KEY_ID,
    });
    cfg.timeouts.control_retry = Duration::from_millis(20);
    cfg.timeouts.control_total = Duration::from_secs(5);
    cfg.timeouts.abandon_linger = Duration::from_millis(50);
    let args = TlsArgs {
        tls_listen: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        tls_upstream: Some(local_addr),
        sni: vec![("*.n2.example".into(), "n2".into())],
        tls_on_error: Some(on_error),
        tls_hello_timeout_ms: Some(hello_timeout_ms),
        tls_local_name: local_names.iter().map(|n| n.to_string()).collect(),
        ..TlsArgs::default()
    };
    cfg.tls = args.merge(None, "n1", 1, &cfg.peers, true).unwrap();
    let p = Proxy::bind(cfg).await.unwrap();
    let tls = p.tls_local_addr().unwrap();
    let metrics = p.metrics();
    tokio::spawn(p.run());
    Setup {
        tls,
        metrics,
        switch,
        peer,
        local,
    }
}

/// Writes `data` in pieces of `piece` bytes with a pause between them, so that each is a
/// segment of its own.
async fn trickle(c: &mut TcpStream, data: &[u8], piece: usize) {
    for p in data.chunks(piece) {
        c.write_all(p).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Reads until EOF or reset; returns the bytes and whether it ended cleanly.
async fn read_all(c: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, c.read(&mut buf)).await {
            Ok(Ok(0)) => return (v, true),
            Ok(Ok(n)) => v.extend_from_slice(&buf[..n]),
            Ok(Err(_)) | Err(_) => return (v, false),
        }
    }
}

#[tokio::test]
async fn a_hello_for_a_peer_is_handed_off_with_its_bytes_on_the_new_leg() {
    let s = setup(OnError::Close, 10_000).await;
    // A byte at a time for the first 40 bytes (inside the record and handshake headers), then
    // the rest; and after the hello, a few bytes the client sends before any answer.
    let mut c = TcpStream::connect(s.tls).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut sent = CURL_H2.to_vec();
    trickle(&mut c, &CURL_H2[..40], 1).await;
    c.write_all(&CURL_H2[40..]).await.unwrap();
    let req = s.switch.recv().await;
    assert_eq!((req.repr.consumed, req.repr.sent), (0, 0));
    assert_eq!(
        req.repr.held_peer,
        sockopt::endpoint(c.local_addr().unwrap()).unwrap()
    );
    assert_eq!(req.repr.held_local, sockopt::endpoint(s.tls).unwrap());
    assert_eq!(req.repr.new_remote.addr, [127, 0, 0, 2]);
    assert_eq!(req.repr.new_remote.port, s.tls.port());
    let (mut leg, _) = s.peer.accept().await.unwrap();
    s.switch
        .reply(req.from, req.repr.counter, ReplyCode::Accepted)
        .await;
    c.write_all(b"after").await.unwrap();
    sent.extend_from_slice(b"after");
    // The client half-closes (standing in for the switch's faked FIN): the leg then ends.
    c.shutdown().await.unwrap();
    let (got, clean) = read_all(&mut leg).await;
    assert!(clean);
    assert_eq!(got, sent);
    // Nothing at all was written to the client.
    let (back, _) = read_all(&mut c).await;
    assert!(back.is_empty(), "{back:?}");
    let t = &s.metrics.tls;
    assert_eq!(t.hellos.load(Relaxed), 1);
    assert_eq!(t.to_peer.load(Relaxed), 1);
    assert_eq!(s.metrics.handoffs_accepted.load(Relaxed), 1);
}

#[tokio::test]
async fn a_hello_for_this_node_over_several_records_is_relayed_locally() {
    let mut s = setup(OnError::Close, 10_000).await;
    let msg = build_hello_message(Some("www.n1.example"), &["h2"], 600);
    let wire = into_records(&msg, 100);
    let mut c = TcpStream::connect(s.tls).await.unwrap();
    c.set_nodelay(true).unwrap();
    trickle(&mut c, &wire, 37).await;
    c.write_all(b"more").await.unwrap();
    c.shutdown().await.unwrap();
    let (back, clean) = read_all(&mut c).await;
    assert!(clean);
    let mut want = b"LOCAL:".to_vec();
    want.extend_from_slice(&wire);
    want.extend_from_slice(b"more");
    assert_eq!(back, want);
    let mut all = wire.clone();
    all.extend_from_slice(b"more");
    assert_eq!(s.local.recv().await.unwrap(), all);
    assert_eq!(s.metrics.tls.local.load(Relaxed), 1);
    assert!(
        s.switch
            .try_recv(Duration::from_millis(100))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn silence_garbage_sslv2_and_oversized_hellos_are_closed_and_counted() {
    let s = setup(OnError::Close, 300).await;
    let big = into_records(
        &build_hello_message(Some("a.n2.example"), &[], 20_000),
        16_384,
    );
    let cases: [(&[u8], Rejected); 4] = [
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            Rejected::Hello(HelloError::NotTls),
        ),
        (b"\x80\x2e\x01\x00\x02", Rejected::Hello(HelloError::Sslv2)),
        (&big, Rejected::Hello(HelloError::Oversized)),
        (b"", Rejected::Timeout),
    ];
    // All at once: one client's silence holds up no other.
    let mut tasks = Vec::new();
    for (bytes, _) in &cases {
        let bytes = bytes.to_vec();
        let addr = s.tls;
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(&bytes).await;
            let t0 = std::time::Instant::now();
            let (back, _) = read_all(&mut c).await;
            assert!(back.is_empty());
            t0.elapsed()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap() < WAIT);
    }
    // The half-sent hello that stops (a client that closes) is counted as closed.
    let mut c = TcpStream::connect(s.tls).await.unwrap();
    c.write_all(&CURL_H2[..100]).await.unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (_, r) in &cases {
        assert_eq!(s.metrics.tls.rejected_count(*r), 1, "{}", r.name());
    }
    assert_eq!(s.metrics.tls.rejected_count(Rejected::Closed), 1);
    let text = s.metrics.render();
    assert!(text.contains("knits_proxy_tls_rejected_total{reason=\"not_tls\"} 1"));
    assert!(s.switch.try_recv(Duration::from_millis(50)).await.is_none());
}

#[tokio::test]
async fn with_on_error_default_garbage_goes_to_the_default_node() {
    let s = setup(OnError::Default, 10_000).await;
    let mut c = TcpStream::connect(s.tls).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    c.shutdown().await.unwrap();
    let (back, _) = read_all(&mut c).await;
    assert_eq!(back, b"LOCAL:GET / HTTP/1.1\r\n\r\n");
    assert_eq!(s.metrics.tls.sent_to_default.load(Relaxed), 1);
}

/// The switch refuses the hand-off of `a.n2.example` at every attempt: the proxy asks twice,
/// then answers the client with a fatal alert and a FIN, and the local TLS server (which would
/// present n1's certificate for n2's name) never sees the connection.
#[tokio::test]
async fn a_refused_hand_off_is_retried_then_refused_with_an_alert() {
    let mut s = setup(OnError::Close, 10_000).await;
    let wire = into_records(&build_hello_message(Some("a.n2.example"), &[], 300), 16_384);
    let mut c = TcpStream::connect(s.tls).await.unwrap();
    c.write_all(&wire).await.unwrap();
    for code in [ReplyCode::AnchorsOutOfRange, ReplyCode::UnknownConnection] {
        let r = s.switch.recv().await;
        s.switch.reply(r.from, r.repr.counter, code).await;
    }
    let (back, clean) = read_all(&mut c).await;
    assert!(clean, "the connection ends with a FIN");
    assert_eq!(back, knits_proxy::tls::listener::ALERT_INTERNAL_ERROR);
    let t = &s.metrics.tls;
    assert_eq!(t.handoff_retries.load(Relaxed), 1);
    assert_eq!(t.refused_after_handoff.load(Relaxed), 1);
    assert_eq!(t.fallback_local.load(Relaxed), 0);
    assert_eq!(t.local.load(Relaxed), 0);
    // No third request, and nothing reached the local TLS server.
    assert!(
        s.switch
            .try_recv(Duration::from_millis(100))
            .await
            .is_none()
    );
    assert!(s.local.try_recv().is_err());
    assert!(
        s.metrics
            .render()
            .contains("knits_proxy_tls_refused_after_handoff_total 1")
    );
}

/// The same refusals for a name n1's TLS server holds a certificate for (a shared one): the
/// connection is served locally, with the hello's bytes from the first.
#[tokio::test]
async fn a_refused_hand_off_for_a_name_held_here_is_served_locally() {
    let mut s = setup_with(OnError::Close, 10_000, &["*.n2.example"]).await;
    let wire = into_records(&build_hello_message(Some("a.n2.example"), &[], 300), 16_384);
    let mut c = TcpStream::connect(s.tls).await.unwrap();
    c.write_all(&wire).await.unwrap();
    for _ in 0..2 {
        let r = s.switch.recv().await;
        s.switch
            .reply(r.from, r.repr.counter, ReplyCode::AnchorsOutOfRange)
            .await;
    }
    c.shutdown().await.unwrap();
    let (back, clean) = read_all(&mut c).await;
    assert!(clean);
    let mut want = b"LOCAL:".to_vec();
    want.extend_from_slice(&wire);
    assert_eq!(back, want);
    assert_eq!(s.local.recv().await.unwrap(), wire);
    let t = &s.metrics.tls;
    assert_eq!(t.fallback_local.load(Relaxed), 1);
    assert_eq!(t.refused_after_handoff.load(Relaxed), 0);
}

/// A hand-off refused once and accepted at the second attempt: nothing was written to the
/// client, and the new leg of the second attempt carries the hello.
#[tokio::test]
async fn a_hand_off_refused_once_succeeds_at_the_second_attempt() {
    let s = setup(OnError::Close, 10_000).await;
    let wire = into_records(&build_hello_message(Some("b.n2.example"), &[], 300), 16_384);
    let mut c = TcpStream::connect(s.tls).await.unwrap();
    c.write_all(&wire).await.unwrap();
    let r = s.switch.recv().await;
    s.switch
        .reply(r.from, r.repr.counter, ReplyCode::UnknownConnection)
        .await;
    let r = s.switch.recv().await;
    assert_eq!((r.repr.consumed, r.repr.sent), (0, 0));
    // The first attempt's leg was reset; the second's is the one the request names.
    let mut leg = loop {
        let (leg, from) = s.peer.accept().await.unwrap();
        if sockopt::endpoint(from) == Some(r.repr.new_local) {
            break leg;
        }
    };
    s.switch
        .reply(r.from, r.repr.counter, ReplyCode::Accepted)
        .await;
    c.shutdown().await.unwrap();
    let (got, clean) = read_all(&mut leg).await;
    assert!(clean);
    assert_eq!(got, wire);
    let (back, _) = read_all(&mut c).await;
    assert!(back.is_empty(), "{back:?}");
    assert_eq!(s.metrics.tls.handoff_retries.load(Relaxed), 1);
    assert_eq!(s.metrics.handoffs_accepted.load(Relaxed), 1);
}
