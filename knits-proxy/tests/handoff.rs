//! The hand-off against a stand-in switch (a UDP socket in the test) and a stand-in target (a
//! TCP listener playing the peer's proxy). A real splice needs the switch; here the test checks
//! what the proxy owes the switch and the target: the exact request bytes (tag, anchors,
//! endpoints), retransmission with the same counter, fresh counters per hand-off, the bytes
//! forwarded on c2, nothing written on c1 after the request, and local serving on refusal or
//! time-out.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use knits_core::wire::control::{Endpoint, ReplyCode};
use knits_proxy::config::{Peer, ProxyConfig, SwitchConfig};
use knits_proxy::conn::Conn;
use knits_proxy::metrics::FailReason;
use knits_proxy::policy::Policy;
use knits_proxy::sockopt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

fn ep(a: SocketAddr) -> Endpoint {
    sockopt::endpoint(a).unwrap()
}

/// A proxy n1 whose `/obj/remote-*` objects belong to n2 (the target listener).
fn handoff_config(origin: SocketAddr, switch: SocketAddr, target: SocketAddr) -> ProxyConfig {
    let mut cfg = ProxyConfig::local("n1", "127.0.0.1:0".parse().unwrap(), origin);
    cfg.peers = vec![Peer {
        id: "n2".into(),
        addr: target,
        weight: 1,
    }];
    cfg.policy = Policy::Prefix {
        rules: vec![("/obj/remote-".into(), "n2".into())],
        default: None,
    };
    cfg.switch = Some(SwitchConfig {
        control: switch,
        bind: "127.0.0.1:0".parse().unwrap(),
        key: KEY,
        key_id: KEY_ID,
    });
    cfg.timeouts.control_retry = Duration::from_millis(20);
    cfg.timeouts.control_total = Duration::from_secs(5);
    cfg.timeouts.abandon_linger = Duration::from_millis(50);
    cfg
}

/// One connection the target accepted: its peer address, its MSS and every byte until EOF.
struct Leg {
    peer: SocketAddr,
    mss: u32,
    bytes: Vec<u8>,
}

/// Accepts connections on the target and reports each when its sender closes it.
fn target(l: TcpListener) -> mpsc::UnboundedReceiver<Leg> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((s, peer)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mss = sockopt::mss(&s).unwrap();
                let mut c = Conn::new(s);
                let bytes = read_to_end(&mut c).await;
                // Close our side too: to the proxy this is the switch's faked FIN/ACK.
                let _ = tx.send(Leg { peer, mss, bytes });
            });
        }
    });
    rx
}

async fn leg(rx: &mut mpsc::UnboundedReceiver<Leg>) -> Leg {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no c2")
        .expect("target gone")
}

#[tokio::test]
async fn accepted_handoff_sends_exact_request_and_forwards_unconsumed_bytes() {
    let o = origin("n1").await;
    let sw = StandIn::bind().await;
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ta = tl.local_addr().unwrap();
    let mut legs = target(tl);
    let (p, m, _) = proxy(handoff_config(o, sw.addr(), ta)).await;

    // The client opens c1 with a small MSS, so the MSS rule is visible on c2.
    let s = sockopt::connect_with_mss(p, Some(1000), WAIT)
        .await
        .unwrap();
    let client_addr = s.local_addr().unwrap();
    let mut c = Conn::new(s);

    // r1 is served locally; r2 (a POST, half its body sent) belongs to n2.
    let r1 = get("local-1", 5000);
    let r2_head = "POST /obj/remote-2?size=3 HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n";
    let first = format!("{r1}{r2_head}01234");
    c.write_all(first.as_bytes()).await.unwrap();
    let resp1 = read_response(&mut c, false).await.unwrap();
    check_object(&resp1, "local-1", 5000, "n1");

    // The switch drops the first three transmissions, then accepts.
    let a = sw.recv().await;
    for _ in 0..3 {
        let again = sw.recv().await;
        assert_eq!(
            again.bytes, a.bytes,
            "a retransmission carries the same bytes"
        );
        assert_eq!(again.from, a.from, "one control socket");
    }
    let r = a.repr;
    assert_eq!(r.key_id, KEY_ID);
    assert_eq!(r.held_peer, ep(client_addr));
    assert_eq!(r.held_local, ep(p));
    assert_eq!(r.new_remote, ep(ta));
    assert_eq!(
        r.consumed,
        r1.len() as u64,
        "consumed = bytes of the requests served here"
    );
    assert_eq!(
        r.sent, resp1.wire_len,
        "sent = bytes of the responses sent here"
    );
    assert_eq!(r.new_local.addr, [127, 0, 0, 1]);
    sw.reply(a.from, r.counter, ReplyCode::Accepted).await;

    // After acceptance the client keeps sending: the rest of the body and another request.
    let rest = format!("56789{}", get("local-3", 1));
    c.write_all(rest.as_bytes()).await.unwrap();
    c.get_mut().shutdown().await.unwrap(); // the switch's faked client FIN, as c1 sees it

    let l = leg(&mut legs).await;
    let mut want = format!("{r2_head}01234").into_bytes();
    want.extend_from_slice(rest.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&l.bytes),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(ep(l.peer), r.new_local, "new_local is c2's local end");
    assert!(l.mss <= 1000, "c2 opened with c1's MSS, got {}", l.mss);

    // Nothing was written on c1 after the request: the client sees the end, no extra byte.
    assert!(read_to_end(&mut c).await.is_empty());
    assert_eq!(m.handoffs_initiated.load(Relaxed), 1);
    assert_eq!(m.handoffs_accepted.load(Relaxed), 1);
    assert_eq!(m.control_retransmits.load(Relaxed), 3);
    assert_eq!(m.handoff_latency.count(), 1);
    assert_eq!(m.requests_local.load(Relaxed), 1);
    assert_eq!(m.failed_count(FailReason::Broken), 0);
}

#[tokio::test]
async fn refusals_and_forged_replies_lead_to_local_serving() {
    let o = origin("n1").await;
    let sw = StandIn::bind().await;
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ta = tl.local_addr().unwrap();
    let mut legs = target(tl);
    let (p, m, _) = proxy(handoff_config(o, sw.addr(), ta)).await;
    let mut c = client(p).await;

    let reqs = format!("{}{}", get("remote-a", 777), get("local-b", 88));
    c.write_all(reqs.as_bytes()).await.unwrap();

    let a = sw.recv().await;
    assert_eq!(a.repr.consumed, 0);
    assert_eq!(a.repr.sent, 0);
    // A forged acceptance (wrong key) and a reply for another counter are ignored ...
    sw.reply_with(
        a.from,
        a.repr.counter,
        ReplyCode::Accepted,
        b"not-the-real-key",
    )
    .await;
    sw.reply(a.from, a.repr.counter + 1000, ReplyCode::Accepted)
        .await;
    // ... the retransmission is answered with a refusal.
    let again = sw.recv().await;
    assert_eq!(again.bytes, a.bytes);
    sw.reply(a.from, a.repr.counter, ReplyCode::NotOwner).await;

    // c2 is closed without a byte; the client gets both answers from this node, in order.
    assert!(leg(&mut legs).await.bytes.is_empty());
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "remote-a",
        777,
        "n1",
    );
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "local-b",
        88,
        "n1",
    );

    // The connection goes on; the next hand-off uses a fresh, larger counter and new anchors.
    c.write_all(get("remote-c", 9).as_bytes()).await.unwrap();
    let b = loop {
        let b = sw.recv().await;
        if b.repr.counter != a.repr.counter {
            break b;
        }
    };
    assert!(b.repr.counter > a.repr.counter);
    assert_eq!(b.repr.consumed, reqs.len() as u64);
    assert!(b.repr.sent > 777 + 88);
    sw.refuse_busy(b.from, b.repr.counter, ReplyCode::TooManyHops)
        .await;
    assert!(leg(&mut legs).await.bytes.is_empty());
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "remote-c",
        9,
        "n1",
    );

    assert_eq!(m.refused_count(ReplyCode::NotOwner), 1);
    assert_eq!(m.refused_count(ReplyCode::TooManyHops), 1);
    assert_eq!(m.handoffs_accepted.load(Relaxed), 0);
    assert!(m.control_ignored.load(Relaxed) >= 2);
    assert_eq!(m.requests_local.load(Relaxed), 3);
}

#[tokio::test]
async fn no_answer_times_out_and_serves_locally() {
    let o = origin("n1").await;
    let sw = StandIn::bind().await;
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ta = tl.local_addr().unwrap();
    let mut legs = target(tl);
    let mut cfg = handoff_config(o, sw.addr(), ta);
    cfg.timeouts.control_retry = Duration::from_millis(30);
    cfg.timeouts.control_total = Duration::from_millis(150);
    let (p, m, _) = proxy(cfg).await;
    let mut c = client(p).await;
    c.write_all(format!("{}{}", get("remote-t", 1234), get("x", 1)).as_bytes())
        .await
        .unwrap();

    // The switch stays silent; the proxy retries with identical bytes, then gives up.
    let first = sw.recv().await;
    let mut n = 1;
    while let Some(again) = sw.try_recv(Duration::from_millis(500)).await {
        assert_eq!(again.bytes, first.bytes);
        n += 1;
    }
    assert!(n >= 2, "retransmitted");
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "remote-t",
        1234,
        "n1",
    );
    check_object(&read_response(&mut c, false).await.unwrap(), "x", 1, "n1");
    assert_eq!(m.failed_count(FailReason::Timeout), 1);
    assert_eq!(m.control_retransmits.load(Relaxed), n - 1);
    // The unused c2 is closed after its linger, without a byte.
    assert!(leg(&mut legs).await.bytes.is_empty());
}

#[tokio::test]
async fn concurrent_handoffs_share_the_socket_and_match_replies_by_counter() {
    let o = origin("n1").await;
    let sw = StandIn::bind().await;
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ta = tl.local_addr().unwrap();
    let mut legs = target(tl);
    let (p, m, _) = proxy(handoff_config(o, sw.addr(), ta)).await;

    let mut c1 = client(p).await;
    let mut c2 = client(p).await;
    let a1 = c1.get_ref().local_addr().unwrap();
    c1.write_all(get("remote-one", 11).as_bytes())
        .await
        .unwrap();
    c2.write_all(get("remote-two", 22).as_bytes())
        .await
        .unwrap();

    // Collect one request per connection (ignoring retransmissions).
    let mut reqs: Vec<Received> = Vec::new();
    while reqs.len() < 2 {
        let r = sw.recv().await;
        if !reqs.iter().any(|q| q.repr.counter == r.repr.counter) {
            reqs.push(r);
        }
    }
    assert_eq!(reqs[0].from, reqs[1].from, "one control socket");
    assert_ne!(reqs[0].repr.counter, reqs[1].repr.counter);
    // Answer in reverse order: accept connection one, refuse connection two.
    reqs.reverse();
    for r in &reqs {
        if r.repr.held_peer == ep(a1) {
            sw.reply(r.from, r.repr.counter, ReplyCode::Accepted).await;
        } else {
            sw.refuse_busy(r.from, r.repr.counter, ReplyCode::Busy)
                .await;
        }
    }
    // Connection two is served locally.
    check_object(
        &read_response(&mut c2, false).await.unwrap(),
        "remote-two",
        22,
        "n1",
    );
    // Connection one's request went to the target.
    c1.get_mut().shutdown().await.unwrap();
    // The legs that end without a byte (connection two's, or a pool refill) may come first,
    // in any order under load; the one with the request comes within the wait.
    let mut got = Vec::new();
    while got.is_empty() {
        got = leg(&mut legs).await.bytes;
    }
    assert_eq!(got, get("remote-one", 11).into_bytes());
    assert!(read_to_end(&mut c1).await.is_empty());
    assert_eq!(m.handoffs_accepted.load(Relaxed), 1);
    assert_eq!(m.refused_count(ReplyCode::Busy), 1);
}

#[tokio::test]
async fn a_handed_over_connection_can_be_handed_off_again() {
    // The target of a hand-off is a proxy too: a connection from a "previous node" is served
    // like any client and may be handed off again on the same code path.
    let o = origin("n1").await;
    let sw = StandIn::bind().await;
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ta = tl.local_addr().unwrap();
    let mut legs = target(tl);
    let (p, _, _) = proxy(handoff_config(o, sw.addr(), ta)).await;

    // A "previous node" connects (its address is just another peer address to n1).
    let prev = TcpStream::connect(p).await.unwrap();
    let prev_addr = prev.local_addr().unwrap();
    let mut c = Conn::new(prev);
    let fwd = format!("{}{}", get("local-h", 3), get("remote-h", 4));
    c.write_all(fwd.as_bytes()).await.unwrap();
    let resp = read_response(&mut c, false).await.unwrap();
    check_object(&resp, "local-h", 3, "n1");
    let a = sw.recv().await;
    assert_eq!(a.repr.held_peer, ep(prev_addr));
    assert_eq!(a.repr.consumed, get("local-h", 3).len() as u64);
    assert_eq!(a.repr.sent, resp.wire_len);
    sw.reply(a.from, a.repr.counter, ReplyCode::Accepted).await;
    c.get_mut().shutdown().await.unwrap();
    assert_eq!(leg(&mut legs).await.bytes, get("remote-h", 4).into_bytes());
}

#[tokio::test]
async fn pooled_c2_is_used_for_the_next_handoff() {
    let o = origin("n1").await;
    let sw = StandIn::bind().await;
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ta = tl.local_addr().unwrap();
    let mut legs = target(tl);
    let mut cfg = handoff_config(o, sw.addr(), ta);
    cfg.c2_pool = 2;
    let (p, m, shared) = proxy(cfg).await;
    let pool = shared.handoff.as_ref().unwrap().pool.clone().unwrap();

    for round in 0..2u32 {
        let mut c = client(p).await;
        let mss = sockopt::mss_for_new_leg(sockopt::mss(c.get_ref()).unwrap());
        if round == 1 {
            // Wait (without timing assertions) until the pool was filled for this peer and MSS.
            assert_eq!(pool.fill(ta, mss).await, 2);
        }
        let name = format!("remote-pool{round}");
        c.write_all(get(&name, 5).as_bytes()).await.unwrap();
        let a = sw.recv().await;
        sw.reply(a.from, a.repr.counter, ReplyCode::Accepted).await;
        c.get_mut().shutdown().await.unwrap();
        loop {
            let l = leg(&mut legs).await;
            if !l.bytes.is_empty() {
                assert_eq!(l.bytes, get(&name, 5).into_bytes());
                break;
            }
        }
        assert!(read_to_end(&mut c).await.is_empty());
    }
    assert_eq!(m.c2_pool_misses.load(Relaxed), 1);
    assert_eq!(m.c2_pool_hits.load(Relaxed), 1);
}

#[tokio::test]
async fn a_rolled_back_handoff_is_served_locally_without_loss() {
    let o = origin("n1").await;
    let sw = StandIn::bind().await;
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ta = tl.local_addr().unwrap();
    // The target resets c2 as soon as forwarded bytes arrive: what the proxy sees when the
    // switch rolls a hand-off back ("resets the new leg at both ends").
    let (tx, mut got) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (s, _) = tl.accept().await.unwrap();
        let mut c = Conn::new(s);
        let n = c.fill().await.unwrap();
        let _ = tx.send(c.buffered()[..n].to_vec());
        let s = c.into_parts().0;
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    let (p, m, _) = proxy(handoff_config(o, sw.addr(), ta)).await;
    let mut c = client(p).await;
    let reqs = format!(
        "{}{}{}",
        get("local-r", 10),
        get("remote-r", 2000),
        get("local-s", 30)
    );
    c.write_all(reqs.as_bytes()).await.unwrap();
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "local-r",
        10,
        "n1",
    );
    let a = sw.recv().await;
    sw.reply(a.from, a.repr.counter, ReplyCode::Accepted).await;
    let first = tokio::time::timeout(WAIT, got.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        get("remote-r", 2000)
            .as_bytes()
            .starts_with(&first[..first.len().min(10)])
    );
    // The connection goes on with this node: both remaining requests, in order, intact.
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "remote-r",
        2000,
        "n1",
    );
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "local-s",
        30,
        "n1",
    );
    assert_eq!(m.handoffs_accepted.load(Relaxed), 1);
    assert_eq!(m.failed_count(FailReason::RolledBack), 1);
    assert_eq!(m.requests_local.load(Relaxed), 3);
}
