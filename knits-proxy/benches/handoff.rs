//! Hand-off latency with and without the pre-connected c2 pool, on loopback.
//!
//! `CARGO_TARGET_DIR=target-proxy cargo bench -p knits-proxy --bench handoff`
//!
//! A stand-in switch accepts every request at once; a stand-in target records when the first
//! forwarded byte arrives. The latency measured is from the client's write of a request that
//! belongs to the peer to the arrival of that request at the peer: the SIOCOUTQ check, c2 (a
//! connect or a pooled leg), the control round trip and the forward. The switch's splice work
//! and the wire are not in it (loopback, no switch), so the figure isolates the proxy's share,
//! and the difference between the two modes is the TCP handshake the pool takes out.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use knits_core::wire::control::{Key, Reply, ReplyCode, ReplyRepr};
use knits_proxy::Proxy;
use knits_proxy::config::{Peer, ProxyConfig, SwitchConfig};
use knits_proxy::policy::Policy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

const KEY: Key = *b"bench-key-16byte";
const ROUNDS: usize = 400;
const WARMUP: usize = 40;

async fn switch() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 128];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(r) = knits_core::wire::control::Request::new_checked(&buf[..n]) else {
                continue;
            };
            let rep = ReplyRepr {
                code: ReplyCode::Accepted,
                key_id: r.key_id(),
                counter: r.counter(),
                hops: 1,
            };
            let mut out = [0u8; 32];
            let m = rep.emit(&mut out, &KEY).unwrap();
            debug_assert!(Reply::new_checked(&out[..m]).is_ok());
            let _ = s.send_to(&out[..m], from).await;
        }
    });
    a
}

async fn target() -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut first = true;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if first => {
                            first = false;
                            let _ = tx.send(Instant::now());
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (a, rx)
}

async fn run(pool: usize) -> (Vec<Duration>, u64, u64) {
    let sw = switch().await;
    let (ta, mut arrivals) = target().await;
    let mut cfg = ProxyConfig::local(
        "n1",
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
    );
    cfg.peers = vec![Peer {
        id: "n2".into(),
        addr: ta,
        weight: 1,
    }];
    cfg.policy = Policy::Prefix {
        rules: vec![("/".into(), "n2".into())],
        default: None,
    };
    cfg.switch = Some(SwitchConfig {
        control: sw,
        bind: "127.0.0.1:0".parse().unwrap(),
        key: KEY,
        key_id: 1,
    });
    cfg.c2_pool = pool;
    let p = Proxy::bind(cfg).await.unwrap();
    let pa = p.local_addr().unwrap();
    let metrics = p.metrics();
    tokio::spawn(p.run());

    let req = b"GET /obj/x?size=10 HTTP/1.1\r\nHost: bench\r\n\r\n";
    let mut lat = Vec::with_capacity(ROUNDS);
    for i in 0..WARMUP + ROUNDS {
        let mut c = TcpStream::connect(pa).await.unwrap();
        c.set_nodelay(true).unwrap();
        // Let the pool refill between hand-offs, as it would between requests in service.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t0 = Instant::now();
        c.write_all(req).await.unwrap();
        let t1 = arrivals.recv().await.unwrap();
        if i >= WARMUP {
            lat.push(t1 - t0);
        }
        c.shutdown().await.unwrap();
        let mut sink = [0u8; 64];
        while c.read(&mut sink).await.unwrap_or(0) > 0 {}
    }
    lat.sort();
    (
        lat,
        metrics.c2_pool_hits.load(Relaxed),
        metrics.c2_pool_misses.load(Relaxed),
    )
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("hand-off latency, client write -> request at target, {ROUNDS} rounds, loopback");
        println!(
            "{:>8} {:>10} {:>10} {:>10} {:>10} {:>6} {:>6}",
            "c2-pool", "p50 us", "p90 us", "p99 us", "mean us", "hits", "misses"
        );
        for pool in [0usize, 4] {
            let (lat, hits, misses) = run(pool).await;
            let mean = lat.iter().map(|d| us(*d)).sum::<f64>() / lat.len() as f64;
            let q = |p: f64| us(lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]);
            println!(
                "{:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>6} {:>6}",
                pool,
                q(0.5),
                q(0.9),
                q(0.99),
                mean,
                hits,
                misses
            );
        }
    });
}
