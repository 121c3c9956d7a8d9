//! Helpers shared by the integration tests: an origin, a proxy, a response reader, and a
//! stand-in switch (a UDP socket that speaks the control protocol).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use knits_core::wire::control::{
    Key, REQUEST_LEN, Reply, ReplyCode, ReplyRepr, Request, RequestRepr,
};
use knits_proxy::config::ProxyConfig;
use knits_proxy::conn::{Conn, ReadHead};
use knits_proxy::framing::{Limits, ResponseHead, parse_response};
use knits_proxy::metrics::Metrics;
use knits_proxy::{Origin, Proxy};
use tokio::net::{TcpStream, UdpSocket};

pub const KEY: Key = *b"knits-test-key!!";
pub const KEY_ID: u8 = 7;
pub const WAIT: Duration = Duration::from_secs(10);

/// Starts an origin reporting `node`.
pub async fn origin(node: &str) -> SocketAddr {
    let o = Origin::bind("127.0.0.1:0".parse().unwrap(), Some(node.to_string()))
        .await
        .unwrap();
    let a = o.local_addr().unwrap();
    tokio::spawn(o.run());
    a
}

/// Starts a proxy; returns its address, its metrics and the proxy's shared state.
pub async fn proxy(
    cfg: ProxyConfig,
) -> (SocketAddr, Arc<Metrics>, Arc<knits_proxy::proxy::Shared>) {
    let p = Proxy::bind(cfg).await.unwrap();
    let a = p.local_addr().unwrap();
    let m = p.metrics();
    let s = p.shared().clone();
    tokio::spawn(p.run());
    (a, m, s)
}

/// A local-policy configuration for a proxy in front of `upstream`.
pub fn local_config(upstream: SocketAddr) -> ProxyConfig {
    ProxyConfig::local("n1", "127.0.0.1:0".parse().unwrap(), upstream)
}

/// A response read off a connection, with the exact bytes it occupied on the wire.
#[derive(Debug)]
pub struct Response {
    pub head: ResponseHead,
    pub body: Vec<u8>,
    pub wire_len: u64,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    }
}

/// Reads one response (dechunking a chunked body); `None` if the connection ended first.
pub async fn read_response(c: &mut Conn<TcpStream>, head_request: bool) -> Option<Response> {
    let start = c.consumed();
    let lim = Limits {
        max_header_bytes: 64 * 1024,
        max_headers: 256,
    };
    let head = match c
        .read_head(WAIT, |b| parse_response(b, &lim, head_request))
        .await
    {
        Ok(ReadHead::Head(h)) => h,
        _ => return None,
    };
    c.consume(head.head_len);
    let mut body = Vec::new();
    c.copy_body(head.body, &mut body, true, WAIT).await.ok()?;
    let wire_len = c.consumed() - start;
    Some(Response {
        head,
        body,
        wire_len,
    })
}

/// Reads until the peer closes; returns what arrived.
pub async fn read_to_end(c: &mut Conn<TcpStream>) -> Vec<u8> {
    loop {
        match c.fill_within(WAIT).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let v = c.buffered().to_vec();
    let n = v.len();
    c.consume(n);
    v
}

/// Connects a client to `addr`.
pub async fn client(addr: SocketAddr) -> Conn<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    Conn::new(s)
}

/// An object GET.
pub fn get(name: &str, size: u64) -> String {
    format!("GET /obj/{name}?size={size} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// Checks that a response carries object `name` of `size` bytes, served by `node`.
pub fn check_object(r: &Response, name: &str, size: u64, node: &str) {
    assert_eq!(r.head.status, 200, "{name}");
    assert_eq!(r.body.len() as u64, size, "{name}");
    knits_proxy::content::verify(name, 0, &r.body).unwrap();
    assert_eq!(r.header("x-knits-node").as_deref(), Some(node), "{name}");
}

/// A UDP socket playing the switch's control endpoint.
pub struct StandIn {
    pub sock: UdpSocket,
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    pub bytes: Vec<u8>,
    pub from: SocketAddr,
    pub repr: RequestRepr,
}

impl StandIn {
    pub async fn bind() -> StandIn {
        StandIn {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// Receives one request and checks its form and tag.
    pub async fn recv(&self) -> Received {
        let mut buf = [0u8; 256];
        let (n, from) = tokio::time::timeout(WAIT, self.sock.recv_from(&mut buf))
            .await
            .expect("no control request")
            .unwrap();
        assert_eq!(n, REQUEST_LEN, "request length");
        let r = Request::new_checked(&buf[..n]).expect("request header");
        assert!(r.verify(&KEY), "request tag");
        assert_eq!(r.key_id(), KEY_ID);
        assert_eq!(r.flags(), 0);
        Received {
            bytes: buf[..n].to_vec(),
            from,
            repr: RequestRepr::parse(&r),
        }
    }

    /// Waits up to `d` for a request; `None` when none came.
    pub async fn try_recv(&self, d: Duration) -> Option<Received> {
        tokio::time::timeout(d, self.recv()).await.ok()
    }

    /// Sends a reply signed with `key`.
    pub async fn reply_with(&self, to: SocketAddr, counter: u64, code: ReplyCode, key: &Key) {
        let mut buf = [0u8; 32];
        let n = ReplyRepr {
            code,
            key_id: KEY_ID,
            counter,
            hops: 1,
        }
        .emit(&mut buf, key)
        .unwrap();
        assert!(Reply::new_checked(&buf[..n]).is_ok());
        self.sock.send_to(&buf[..n], to).await.unwrap();
    }

    pub async fn reply(&self, to: SocketAddr, counter: u64, code: ReplyCode) {
        self.reply_with(to, counter, code, &KEY).await;
    }

    /// Answers a request with `too_many_hops` or `busy`, and the proxy's repeated requests for
    /// the same hand-off (`knits_proxy::handoff::BUSY_RETRIES`, fresh counters) the same way.
    pub async fn refuse_busy(&self, to: SocketAddr, counter: u64, code: ReplyCode) {
        self.reply(to, counter, code).await;
        for _ in 0..knits_proxy::handoff::BUSY_RETRIES {
            let r = self.recv().await;
            self.reply(r.from, r.repr.counter, code).await;
        }
    }
}
