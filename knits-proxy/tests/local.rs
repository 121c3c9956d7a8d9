//! End to end on loopback: a client, the proxy (local policy) and the deterministic origin.
//! Every object body is verified byte for byte against `content::verify`.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use common::*;
use knits_proxy::conn::Conn;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_with_exact_bytes() {
    let o = origin("n1").await;
    let (p, m, _) = proxy(local_config(o)).await;
    let mut c = client(p).await;
    let sizes = [
        0u64, 1, 7, 1000, 65_536, 65_537, 300_000, 3_000_000, 5, 0, 12_345,
    ];
    let mut all = String::new();
    for (i, s) in sizes.iter().enumerate() {
        all.push_str(&get(&format!("o{i}"), *s));
    }
    c.write_all(all.as_bytes()).await.unwrap();
    for (i, s) in sizes.iter().enumerate() {
        let r = read_response(&mut c, false).await.expect("response");
        check_object(&r, &format!("o{i}"), *s, "n1");
    }
    assert_eq!(m.requests_local.load(Relaxed), sizes.len() as u64);
    // One upstream connection carried them all (keep-alive pool).
    assert_eq!(m.upstream_connects.load(Relaxed), 1);
}

#[tokio::test]
async fn a_request_split_into_single_bytes_works() {
    let o = origin("n1").await;
    let (p, _, _) = proxy(local_config(o)).await;
    let mut c = client(p).await;
    let req = format!("{}{}", get("split", 4321), get("split2", 10));
    for b in req.as_bytes() {
        c.write_all(&[*b]).await.unwrap();
        tokio::task::yield_now().await;
    }
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "split",
        4321,
        "n1",
    );
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "split2",
        10,
        "n1",
    );
}

#[tokio::test]
async fn http10_and_connection_close_rules() {
    let o = origin("n1").await;
    let (p, _, _) = proxy(local_config(o)).await;

    // HTTP/1.0 without keep-alive: one response, then the end.
    let mut c = client(p).await;
    c.write_all(b"GET /obj/a?size=100 HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut c, false).await.unwrap();
    check_object(&r, "a", 100, "n1");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(read_to_end(&mut c).await.is_empty());

    // HTTP/1.0 with keep-alive: stays open.
    let mut c = client(p).await;
    c.write_all(b"GET /obj/b?size=10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut c, false).await.unwrap();
    check_object(&r, "b", 10, "n1");
    assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
    c.write_all(b"GET /obj/c?size=20 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    check_object(&read_response(&mut c, false).await.unwrap(), "c", 20, "n1");

    // HTTP/1.1 Connection: close with a pipelined request behind it: only the first is answered.
    let mut c = client(p).await;
    let two = format!(
        "GET /obj/d?size=30 HTTP/1.1\r\nConnection: close\r\n\r\n{}",
        get("e", 1)
    );
    c.write_all(two.as_bytes()).await.unwrap();
    let r = read_response(&mut c, false).await.unwrap();
    check_object(&r, "d", 30, "n1");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(read_to_end(&mut c).await.is_empty());
}

#[tokio::test]
async fn request_bodies_stream_through_chunked_and_sized() {
    let o = origin("n1").await;
    let (p, _, _) = proxy(local_config(o)).await;
    let mut c = client(p).await;

    // Chunked, pipelined with a GET behind it.
    let chunked = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n";
    let mut both = chunked.to_vec();
    both.extend_from_slice(get("after", 77).as_bytes());
    c.write_all(&both).await.unwrap();
    let r = read_response(&mut c, false).await.unwrap();
    assert_eq!(r.head.status, 200);
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.body, b"hello world");
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "after",
        77,
        "n1",
    );

    // A large sized body, written while the response streams back.
    let n = 2_000_000usize;
    let mut body = vec![0u8; n];
    knits_proxy::content::fill("upload", 0, &mut body);
    let head = format!("PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n");
    let (mut rd, mut wr) = c.get_mut().split();
    let send = async {
        wr.write_all(head.as_bytes()).await.unwrap();
        wr.write_all(&body).await.unwrap();
    };
    let mut echoed = Conn::new(&mut rd);
    let recv = async {
        let lim = knits_proxy::framing::Limits::default();
        let h = match echoed
            .read_head(WAIT, |b| {
                knits_proxy::framing::parse_response(b, &lim, false)
            })
            .await
            .unwrap()
        {
            knits_proxy::conn::ReadHead::Head(h) => h,
            other => panic!("{other:?}"),
        };
        echoed.consume(h.head_len);
        let mut out = Vec::new();
        echoed
            .copy_body(h.body, &mut out, true, WAIT)
            .await
            .unwrap();
        out
    };
    let ((), out) = tokio::join!(send, recv);
    assert_eq!(out.len(), n);
    knits_proxy::content::verify("upload", 0, &out).unwrap();
}

#[tokio::test]
async fn expect_continue_is_answered_by_the_proxy() {
    let o = origin("n1").await;
    let (p, _, _) = proxy(local_config(o)).await;
    let mut c = client(p).await;
    c.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_response(&mut c, false).await.unwrap();
    assert_eq!(interim.head.status, 100);
    c.write_all(b"ping").await.unwrap();
    let r = read_response(&mut c, false).await.unwrap();
    assert_eq!(r.head.status, 200);
    assert_eq!(r.body, b"ping");
}

#[tokio::test]
async fn head_and_not_found_pass_through() {
    let o = origin("n1").await;
    let (p, _, _) = proxy(local_config(o)).await;
    let mut c = client(p).await;
    c.write_all(
        b"HEAD /obj/h?size=999 HTTP/1.1\r\nHost: t\r\n\r\nGET /nothing HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_response(&mut c, true).await.unwrap();
    assert_eq!(r.head.status, 200);
    assert_eq!(r.header("content-length").as_deref(), Some("999"));
    assert!(r.body.is_empty());
    let r = read_response(&mut c, false).await.unwrap();
    assert_eq!(r.head.status, 404);
    check_object_after(&mut c).await;
}

async fn check_object_after(c: &mut Conn<TcpStream>) {
    c.write_all(get("still", 3).as_bytes()).await.unwrap();
    check_object(&read_response(c, false).await.unwrap(), "still", 3, "n1");
}

#[tokio::test]
async fn oversized_and_malformed_heads_get_431_and_400_then_close() {
    let o = origin("n1").await;
    let mut cfg = local_config(o);
    cfg.limits.max_header_bytes = 1024;
    cfg.limits.max_headers = 10;
    let (p, m, _) = proxy(cfg).await;

    // A good request first, then one whose head is too large: 200, 431, close.
    let mut c = client(p).await;
    let big = format!(
        "{}GET / HTTP/1.1\r\nX: {}\r\n\r\n",
        get("ok", 5),
        "a".repeat(2000)
    );
    c.write_all(big.as_bytes()).await.unwrap();
    check_object(&read_response(&mut c, false).await.unwrap(), "ok", 5, "n1");
    let r = read_response(&mut c, false).await.unwrap();
    assert_eq!(r.head.status, 431);
    assert!(read_to_end(&mut c).await.is_empty());

    let mut c = client(p).await;
    let mut many = String::from("GET / HTTP/1.1\r\n");
    for i in 0..11 {
        many.push_str(&format!("H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    c.write_all(many.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut c, false).await.unwrap().head.status, 431);

    for bad in [
        &b"BLAH\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let mut c = client(p).await;
        c.write_all(bad).await.unwrap();
        let r = read_response(&mut c, false).await.unwrap();
        assert_eq!(r.head.status, 400);
        assert!(read_to_end(&mut c).await.is_empty());
    }

    // A malformed chunked body: 400 and close.
    let mut c = client(p).await;
    c.write_all(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut c, false).await.unwrap().head.status, 400);
    assert!(read_to_end(&mut c).await.is_empty());

    assert_eq!(m.requests_too_large.load(Relaxed), 2);
    assert_eq!(m.requests_bad.load(Relaxed), 3);
}

#[tokio::test]
async fn a_dead_upstream_gives_502_and_the_connection_goes_on() {
    // A port with nobody behind it.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let (p, m, _) = proxy(local_config(dead)).await;
    let mut c = client(p).await;
    c.write_all(format!("{}{}", get("x", 1), get("y", 1)).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut c, false).await.unwrap().head.status, 502);
    assert_eq!(read_response(&mut c, false).await.unwrap().head.status, 502);
    assert_eq!(m.upstream_errors.load(Relaxed), 2);
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text() {
    let o = origin("n1").await;
    let (p, m, _) = proxy(local_config(o)).await;
    let mut c = client(p).await;
    c.write_all(get("m", 1).as_bytes()).await.unwrap();
    read_response(&mut c, false).await.unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ma = l.local_addr().unwrap();
    tokio::spawn(knits_proxy::metrics::serve(l, m));
    let mut mc = client(ma).await;
    mc.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut mc, false).await.unwrap();
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        text.contains("knits_proxy_requests_local_total 1"),
        "{text}"
    );
    assert!(text.contains("knits_proxy_handoffs_refused_total{reason=\"not_owner\"} 0"));
}

/// Each keep-alive client connection keeps its upstream connection between its requests, and
/// gives it to the shared idle list when it ends (bounded by `upstream_idle`). Three clients
/// taking turns with an idle list of one: three upstream connections, each carrying one
/// client's requests; after the clients leave, the list holds one.
#[tokio::test]
async fn each_client_keeps_its_upstream_connection_until_it_leaves() {
    let o = origin("n1").await;
    let mut cfg = local_config(o);
    cfg.upstream_idle = 1;
    let (p, m, shared) = proxy(cfg).await;
    let mut cs = vec![client(p).await, client(p).await, client(p).await];
    for round in 0..4 {
        for (i, c) in cs.iter_mut().enumerate() {
            let name = format!("k{i}-{round}");
            c.write_all(get(&name, 70_000).as_bytes()).await.unwrap();
            let r = read_response(c, false).await.expect("response");
            check_object(&r, &name, 70_000, "n1");
        }
        assert_eq!(m.upstream_connects.load(Relaxed), 3, "round {round}");
        assert_eq!(
            shared.upstream.idle_count(),
            0,
            "each is held by its client"
        );
    }
    drop(cs);
    let deadline = tokio::time::Instant::now() + WAIT;
    while m.connections_open.load(Relaxed) != 0 {
        assert!(tokio::time::Instant::now() < deadline, "clients still open");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(shared.upstream.idle_count(), 1);
    // A new client takes the idle one.
    let mut c = client(p).await;
    c.write_all(get("again", 10).as_bytes()).await.unwrap();
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "again",
        10,
        "n1",
    );
    assert_eq!(m.upstream_connects.load(Relaxed), 3);
}
