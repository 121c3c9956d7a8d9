//! Translation, checked on the wire: real Linux TCP in namespaces through the knits-core switch,
//! with hand-offs, seeded duplication, reordering and loss, captured to pcapng on every port.
//! From the capture alone the test checks two translations that transfers completing cannot
//! prove right:
//!
//! 1. SACK and D-SACK blocks (RFC 2018, RFC 2883). Every block a receiver is given lies in that
//!    receiver's own sequence space on its connection (after its ISN, not past the highest
//!    sequence number it sent, both read from its own segments on its port); a translated
//!    segment's blocks all move by one offset, the acknowledgment by the same one (or the switch
//!    raised it), and a D-SACK stays a D-SACK. D-SACKs must have crossed translated legs in both
//!    directions (a minimum count), so the checks cannot pass on nothing.
//! 2. Rescaled windows. The namespaces use different window-scale shifts (client 3, n1 8, n2 0
//!    with the option, n3 without window scaling). For every segment the switch forwarded from
//!    one connection to another (found on the egress port by IP ID, lengths, flags and payload),
//!    the window the receiver sees must be `min(65535, (w << s) >> r)`: `w` the sender's field,
//!    `s` the sender's shift on its connection, `r` the receiver's peer's shift on the
//!    receiver's connection, each parsed from that connection's SYNs in the capture.
//!
//! Needs root; prints a visible skip otherwise (fails when KNITS_REQUIRE_ROOT=1). The namespaces
//! carry a per-run prefix and the cluster's Drop removes them, also when an assertion fails.
//! Traffic stays inside them (198.18.0.0/15).

mod common;
#[path = "common/tcpcap.rs"]
mod tcpcap;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knits_host::cluster::{Cluster, ClusterConfig, TimeoutsMs};
use knits_host::faults::FaultConfig;
use knits_host::load::{self, Progress, Request};
use knits_host::pcap::Direction;

use tcpcap::{ACK, FIN, RST, SYN, Seg, Tracks, View, first_block_is_dsack, seq_le, seq_lt};

const NODES: usize = 3;
const CONNS: usize = 6;
/// Requests per connection on each of its three nodes.
const PER_NODE: usize = 40;

/// Minimum D-SACK blocks that must have crossed a translated leg towards each side. A run sees
/// several times more (the test prints the counts); fewer means the faults or the sysctls did not
/// take effect and the checks would say little.
const MIN_DSACK_TO_CLIENT: usize = 25;
const MIN_DSACK_TO_SERVERS: usize = 500;
/// Minimum rescaled windows (different shifts on the two connections) compared.
const MIN_RESCALED: usize = 5000;

/// What one namespace gets before any connection is made.
struct Tuning {
    /// Window-scaling sysctl (0: no window-scale option in its SYNs).
    window_scaling: bool,
    /// A `window` metric on the route its connections use: it clamps the receive window, and
    /// with it the window-scale shift Linux picks (ilog2(clamp) - 15), whatever the global
    /// net.core.rmem_max is. `ip route` arguments before `window`.
    route_window: Option<(Vec<String>, u32)>,
    /// net.ipv4.tcp_rmem (so the clamp, not the maximum buffer, decides the shift).
    rmem: Option<&'static str>,
}

/// Writes `value` to /proc/sys/net/ipv4/`name` inside namespace `ns` (a thread that entered it:
/// the net sysctls it sees are the namespace's) and reads it back.
fn sysctl(ns: &str, name: &str, value: &str) {
    let ns = ns.to_string();
    let path = format!("/proc/sys/net/ipv4/{name}");
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            knits_host::netns::enter(&ns).unwrap_or_else(|e| panic!("enter {ns}: {e}"));
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path} in {ns}: {e}"));
            std::fs::read_to_string(&path).unwrap_or_default()
        })
        .join()
        .expect("sysctl thread")
    });
    let norm = |v: &str| v.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(norm(&got), norm(value), "{path} in {ns}");
}

fn tune(ns: &str, t: &Tuning) {
    sysctl(ns, "tcp_sack", "1");
    sysctl(ns, "tcp_dsack", "1");
    sysctl(ns, "tcp_timestamps", "1");
    sysctl(
        ns,
        "tcp_window_scaling",
        if t.window_scaling { "1" } else { "0" },
    );
    if let Some(r) = t.rmem {
        sysctl(ns, "tcp_rmem", r);
    }
    if let Some((route, w)) = &t.route_window {
        let w = w.to_string();
        let mut args: Vec<&str> = vec!["-n", ns, "route"];
        args.extend(route.iter().map(String::as_str));
        args.extend(["window", &w]);
        knits_host::netns::ip(&args).unwrap_or_else(|e| panic!("route window in {ns}: {e}"));
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Connection `c`: one small request where it was sprayed (node x), then `PER_NODE` requests
/// each on x+1, x+2 and x+1 again (three hand-offs, so that over the three nodes every ordered
/// pair of nodes is a leg somewhere, the n2 -> n1 leg with shifts 0 and 8 among them). Small and
/// medium objects: many client segments after each hand-off (duplicates of them make the
/// servers send D-SACKs towards the client) and enough response data for the client's D-SACKs.
fn scripts() -> Vec<Vec<Request>> {
    const SIZES: [u64; 4] = [300, 8_000, 60_000, 200_000];
    (0..CONNS)
        .map(|c| {
            let mut s = vec![Request::object(&format!("any/t{c}r0"), 1000)];
            for (h, rel) in [1, 2, 1].into_iter().enumerate() {
                for r in 0..PER_NODE {
                    let size = SIZES[(c + r) % SIZES.len()];
                    s.push(Request::relative(
                        rel,
                        NODES,
                        &format!("t{c}h{h}r{r}"),
                        size,
                    ));
                }
            }
            s
        })
        .collect()
}

/// Removes the capture directory unless the test failed (then it says where it is).
struct KeepOnFailure(PathBuf);

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("capture kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn dsack_blocks_and_rescaled_windows_across_handoffs() {
    if !common::root_or_skip("dsack_blocks_and_rescaled_windows_across_handoffs") {
        return;
    }
    let t0 = Instant::now();
    let prefix = knits_host::netns::unique_prefix("ttr");
    let dir = std::env::temp_dir().join(format!("knits-translation-{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _keep = KeepOnFailure(dir.clone());
    let pcap = dir.join("run.pcapng");
    let cfg = ClusterConfig {
        nodes: NODES,
        prefix: Some(prefix),
        // MTU-sized segments: a duplicated frame is one segment, as on a wire.
        offloads: false,
        pcap: Some(pcap.clone()),
        timeouts: TimeoutsMs {
            time_wait_ms: Some(500),
            ..Default::default()
        },
        faults: FaultConfig {
            loss: 0.005,
            reorder: 0.02,
            duplicate: 0.05,
            seed: 0x7e57_d5ac,
            ..FaultConfig::default()
        },
        ..ClusterConfig::default()
    };
    let mut c = Cluster::up(cfg, Path::new(env!("CARGO_BIN_EXE_knits-host"))).expect("cluster up");
    // Before the switch runs, so every connection (the readiness probes too) is made with them.
    // The link in a cluster namespace has the namespace's name. The client reaches the VIP on
    // its own subnet (not through its default route): a host route for the VIP carries the
    // clamp, 256 KiB, shift 3. n1: 8 MiB, shift 8; n2: 65535, shift 0 (the option says 0);
    // n3: no window scaling at all.
    let vip = c.config.vip.to_string();
    let client = c.client_ns.clone();
    tune(
        &client,
        &Tuning {
            window_scaling: true,
            route_window: Some((
                strings(&["add", &format!("{vip}/32"), "dev", &client]),
                256 << 10,
            )),
            rmem: None,
        },
    );
    let via = |n: usize| {
        let ns = &c.node_ns[n - 1];
        strings(&[
            "change",
            "default",
            "via",
            &format!("198.19.{n}.1"),
            "dev",
            ns,
        ])
    };
    let nodes = [
        Tuning {
            window_scaling: true,
            route_window: Some((via(1), 8 << 20)),
            rmem: Some("4096 131072 8388608"),
        },
        Tuning {
            window_scaling: true,
            route_window: Some((via(2), 65535)),
            rmem: None,
        },
        Tuning {
            window_scaling: false,
            route_window: None,
            rmem: None,
        },
    ];
    for (n, t) in nodes.iter().enumerate() {
        tune(&c.node_ns[n].clone(), t);
    }
    c.start_switch().expect("switch");
    c.wait_ready(Duration::from_secs(30)).expect("ready");
    let ready = t0.elapsed();

    let spec = load::Spec {
        target: c.vip(),
        netns: Some(c.client_ns.clone()),
        scripts: scripts(),
        pipeline: 2,
        concurrency: CONNS,
        timeout: Duration::from_secs(20),
    };
    let report = load::run(&spec, Arc::new(Progress::default()));
    // Let the connections close and leave the table (TIME-WAIT 500 ms), so the capture holds
    // them whole. Not always all of them: a new leg's SYN lost by the injector, whose connect
    // the proxy then gives up, stays until the switch's SYN time-out.
    let ran = t0.elapsed();
    let limit = Instant::now() + Duration::from_secs(3);
    while (c.snapshot().flows != 0 || c.snapshot().sessions != 0) && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(100));
    }
    let snap = c.stop_switch().expect("stop switch");
    eprintln!("{}", report.table());
    eprintln!(
        "ready at {:.1} s, load done at {:.1} s, switch stopped at {:.1} s with {} flows and {} \
         sessions left",
        ready.as_secs_f64(),
        ran.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        snap.flows,
        snap.sessions
    );
    let cap = knits_host::pcap::read(std::fs::File::open(&pcap).unwrap()).expect("read capture");
    assert_eq!(cap.interfaces.len(), NODES + 1);
    let t = tcpcap::tracks(&cap);
    let a = analyse(&t);
    eprintln!("window-scale options in the SYNs: {}", syn_options(&t));
    eprintln!("{}", a.summary());
    eprintln!("SACK blocks removed by the switch: {}", a.sack_removed);
    // A target's late SYN-ACK on a new leg is the old node's handshake, never the client's
    // (it was translated onto the client's connection until the switch dropped it as
    // `leg_handshake`).
    assert!(
        a.stray_syns.is_empty(),
        "{} SYN-ACKs delivered into established connections:\n  {}",
        a.stray_syns.len(),
        a.stray_syns.join("\n  ")
    );
    eprintln!("wall time so far {:.1} s", t0.elapsed().as_secs_f64());
    // Segment by segment first: a wrong translation shows here with its frames, also when it
    // made a transfer stall (which the load report below would only call a time-out).
    a.assert_translations();
    assert!(
        report.failures().is_empty(),
        "connections failed:\n{}\n{}",
        report.table(),
        snap.table()
    );
    assert_eq!(
        report.handoff_histogram(),
        vec![0, 0, 0, CONNS],
        "every connection hands off three times\n{}",
        report.table()
    );
    let duplicated: u64 = snap
        .ports
        .iter()
        .map(|p| p.faults_in.duplicated + p.faults_out.duplicated)
        .sum();
    assert!(duplicated > 100, "too few duplicates:\n{}", snap.table());

    a.assert_enough();
    // The cluster goes (namespaces, processes) with `c`.
    drop(c);
}

/// "address ws <-> address ws" of every connection kind seen (ports left out), for the log.
fn syn_options(t: &Tracks) -> String {
    let ws = |w: Option<Option<u8>>| match w {
        Some(Some(s)) => s.to_string(),
        Some(None) => "none".into(),
        None => "?".into(),
    };
    let kinds: std::collections::BTreeSet<String> = t
        .views
        .iter()
        .map(|v| {
            format!(
                "{} {} <-> {} {}",
                v.local.0,
                ws(v.l.ws),
                v.remote.0,
                ws(v.r.ws)
            )
        })
        .collect();
    kinds.into_iter().collect::<Vec<_>>().join("; ")
}

/// True for a node's address (198.19.0.0/16; the client's subnet is 198.18.0.0/24).
fn is_node(a: Ipv4Addr) -> bool {
    a.octets()[..2] == [198, 19]
}

/// A segment the switch took in on one port and sent out on another (or the same).
struct Pair {
    /// Indices into `Tracks::segs`.
    inn: usize,
    out: usize,
}

/// The "out" segment that is the switch's rewrite of "in" segment `i`: the core writes a
/// forwarded frame right after reading it, before any frame it generates, so it is among the
/// "out" segments that follow before the next "in" one; IP ID, lengths, flags and payload are
/// never changed by a rewrite (a FIN may be cleared).
fn find_out(segs: &[Seg], i: usize) -> Option<usize> {
    let a = &segs[i];
    segs[i + 1..]
        .iter()
        .take_while(|b| b.dir == Direction::Out)
        .position(|b| {
            b.ip_id == a.ip_id
                && b.ip_len == a.ip_len
                && b.tcp_hdr_len == a.tcp_hdr_len
                && b.payload_len == a.payload_len
                && b.payload_hash == a.payload_hash
                && b.flags & !FIN == a.flags & !FIN
        })
        .map(|p| i + 1 + p)
}

#[derive(Default)]
struct Analysis {
    pairs: usize,
    unmatched_in: usize,
    /// Matched pairs whose connections' SYNs were not both seen.
    unknown: Vec<String>,
    /// (sender shift, receiver shift) -> comparisons of translated windows.
    by_shift: BTreeMap<(u8, u8), usize>,
    /// Translated comparisons by direction (to the client, to a server) where the shifts differ.
    rescaled_to_client: usize,
    rescaled_to_server: usize,
    capped: usize,
    rounded: usize,
    same_conn: usize,
    merged: usize,
    window_bad: Vec<String>,
    /// SACK blocks checked against the receiver's sequence space: (to client, to servers).
    blocks: (usize, usize),
    /// D-SACK blocks delivered (all segments): (to client, to servers).
    dsack: (usize, usize),
    /// D-SACK blocks on translated segments: (to client, to servers).
    dsack_xlated: (usize, usize),
    /// D-SACK blocks the endpoints sent (on "in" segments): (by the client, by servers).
    dsack_sent: (usize, usize),
    range_bad: Vec<String>,
    pair_sack_bad: Vec<String>,
    truncated: usize,
    /// SACK blocks the switch removed from forwarded segments (about another binding's data).
    sack_removed: usize,
    /// SYN-ACKs the switch delivered into a connection that already had another ISN for their
    /// sender (a target's late SYN-ACK on a new leg; must be none).
    stray_syns: Vec<String>,
}

fn analyse(t: &Tracks) -> Analysis {
    let mut a = Analysis::default();
    let segs = &t.segs;
    a.stray_syns = t.stray_syns.iter().map(|&i| segs[i].describe()).collect();
    let views = &t.views;
    let view = |s: &Seg| -> &View { &views[s.view.expect("every segment has a view")] };
    // "Out" segment index -> (translated from another connection, its "in" segment index).
    let mut xlated_out: HashMap<usize, (bool, usize)> = HashMap::new();
    // Last window forwarded to the local end of a view.
    let mut last_win: HashMap<usize, u16> = HashMap::new();

    for (i, s) in segs.iter().enumerate() {
        if s.sack_truncated {
            a.truncated += 1;
        }
        if s.dir == Direction::In {
            if s.has(ACK) && first_block_is_dsack(s.ack, &s.sack) {
                if s.port == 0 {
                    a.dsack_sent.0 += 1;
                } else {
                    a.dsack_sent.1 += 1;
                }
            }
            let Some(o) = find_out(segs, i) else {
                a.unmatched_in += 1;
                continue;
            };
            a.pairs += 1;
            let p = Pair { inn: i, out: o };
            let x = check_pair(&mut a, segs, &p, view(s), view(&segs[o]), &mut last_win);
            xlated_out.insert(o, (x, i));
        }
    }

    // Every SACK block a receiver is given, against its own sequence space.
    for (i, b) in segs.iter().enumerate() {
        if b.dir != Direction::Out || b.sack.is_empty() || !b.has(ACK) {
            continue;
        }
        let v = view(b);
        let to_client = b.port == 0;
        let pair = xlated_out.get(&i).copied();
        let xlated = pair.is_some_and(|(x, _)| x);
        if first_block_is_dsack(b.ack, &b.sack) {
            let n = if to_client {
                &mut a.dsack.0
            } else {
                &mut a.dsack.1
            };
            *n += 1;
            if xlated {
                let n = if to_client {
                    &mut a.dsack_xlated.0
                } else {
                    &mut a.dsack_xlated.1
                };
                *n += 1;
            }
        }
        let (Some(isn), Some(hi)) = (v.l.isn, v.local_hi()) else {
            a.unknown
                .push(format!("no SYN of the receiver of {}", b.describe()));
            continue;
        };
        for &(l, r) in &b.sack {
            if to_client {
                a.blocks.0 += 1;
            } else {
                a.blocks.1 += 1;
            }
            let ok = seq_lt(isn, l) && seq_lt(l, r) && seq_le(r, hi);
            if ok {
                continue;
            }
            let what = format!(
                "block [{l}, {r}) (relative [{}, {})) outside the receiver's space (ISN {isn}, \
                 highest sent {hi}, relative {}){}: {}",
                l.wrapping_sub(isn) as i32,
                r.wrapping_sub(isn) as i32,
                v.l.hi_off,
                if xlated { ", translated" } else { "" },
                b.describe()
            );
            a.range_bad.push(what);
        }
    }
    a
}

/// Checks one forwarded segment's window and SACK blocks; returns whether it was translated
/// from one connection to another.
fn check_pair(
    a: &mut Analysis,
    segs: &[Seg],
    p: &Pair,
    vi: &View,
    ve: &View,
    last_win: &mut HashMap<usize, u16>,
) -> bool {
    let (s_in, s_out) = (&segs[p.inn], &segs[p.out]);
    let sender = s_in.src;
    let peer = s_out.src; // whom the receiver believes it talks to
    let (Some(isn_in), Some(isn_out)) = (vi.isn_of(sender), ve.isn_of(peer)) else {
        a.unknown.push(format!(
            "no SYN for {} -> {}",
            s_in.describe(),
            s_out.describe()
        ));
        return false;
    };
    let same_conn = isn_in == isn_out;
    let ve_id = s_out.view.unwrap_or(usize::MAX);

    // SACK blocks: the switch removes blocks about another binding's server data (which the
    // receiver never sent; the range check in `analyse` fails any that get through); the rest
    // keep their order and move by one offset; the acknowledgment moved by the same offset
    // unless the switch raised it; a D-SACK that is kept stays one.
    if !s_in.sack.is_empty() && s_in.has(ACK) {
        let shifted_by = |d: u32| {
            let mut rest = s_in.sack.iter();
            s_out
                .sack
                .iter()
                .all(|y| rest.any(|x| x.0.wrapping_sub(y.0) == d && x.1.wrapping_sub(y.1) == d))
        };
        let found = match s_out.sack.first() {
            None => Some(s_in.ack.wrapping_sub(s_out.ack)),
            Some(y) => s_in
                .sack
                .iter()
                .map(|x| x.0.wrapping_sub(y.0))
                .find(|&d| shifted_by(d)),
        };
        let edges_ok = found.is_some();
        let d = found.unwrap_or(0);
        a.sack_removed += s_in.sack.len() - s_out.sack.len().min(s_in.sack.len());
        let ack_ok = seq_le(s_in.ack.wrapping_sub(d), s_out.ack);
        let same_ok = !same_conn || (d == 0 && s_out.sack.len() == s_in.sack.len());
        let first_kept = s_out
            .sack
            .first()
            .is_some_and(|y| s_in.sack[0].0.wrapping_sub(y.0) == d);
        let dsack_kept = !first_block_is_dsack(s_in.ack, &s_in.sack)
            || !first_kept
            || first_block_is_dsack(s_out.ack, &s_out.sack);
        if !(edges_ok && ack_ok && same_ok && dsack_kept) {
            a.pair_sack_bad.push(format!(
                "edges moved alike {edges_ok}, ack not below the blocks' offset {ack_ok}, \
                 untouched on one connection {same_ok}, D-SACK kept {dsack_kept}:\n    in  {}\n    out {}",
                s_in.describe(),
                s_out.describe()
            ));
        }
    }

    if s_in.has(SYN) {
        // Window fields of SYNs are never scaled (RFC 7323 2.2).
        return !same_conn;
    }
    let (Some(sh_s), Some(sh_r)) = (vi.shift_of(sender), ve.shift_of(peer)) else {
        a.unknown.push(format!(
            "no window-scale for {} -> {}",
            s_in.describe(),
            s_out.describe()
        ));
        return !same_conn;
    };
    let seen = s_out.win;
    if same_conn {
        a.same_conn += 1;
        // The old node's forwarded request bytes (the client end of a leg between two nodes,
        // after the hand-off) carry the window last delivered to the target on that leg
        // (docs/protocol.md, "Retiring the old node" 4); everything else on one connection
        // keeps its window.
        let merged = is_node(sender.0)
            && is_node(peer.0)
            && vi.initiator() == Some(sender)
            && last_win.get(&ve_id) == Some(&seen);
        if merged && seen != s_in.win {
            a.merged += 1;
        } else if seen != s_in.win {
            a.window_bad.push(format!(
                "window changed on one connection ({} -> {seen}, last forwarded to the receiver \
                 {:?}):\n    in  {}\n    out {}",
                s_in.win,
                last_win.get(&ve_id),
                s_in.describe(),
                s_out.describe()
            ));
        }
    } else if !s_in.has(RST) {
        let bytes = (s_in.win as u64) << sh_s;
        let want = (bytes >> sh_r).min(65535) as u16;
        *a.by_shift.entry((sh_s, sh_r)).or_default() += 1;
        if sh_s != sh_r {
            if s_out.port == 0 {
                a.rescaled_to_client += 1;
            } else {
                a.rescaled_to_server += 1;
            }
        }
        if bytes >> sh_r > 65535 {
            a.capped += 1;
        } else if (bytes >> sh_r) << sh_r != bytes {
            a.rounded += 1;
        }
        if seen != want {
            a.window_bad.push(format!(
                "window {} << {sh_s} = {bytes} bytes, receiver shift {sh_r}: want {want}, seen {seen} \
                 ({} bytes):\n    in  {}\n    out {}",
                s_in.win,
                (seen as u64) << sh_r,
                s_in.describe(),
                s_out.describe()
            ));
        }
    }
    last_win.insert(ve_id, seen);
    !same_conn
}

impl Analysis {
    fn summary(&self) -> String {
        format!(
            "pairs {} (unmatched in {}), same-connection windows {} (merged {}), translated \
             windows by (sender shift, receiver shift) {:?}, rescaled to client {} / to servers {}, \
             capped {}, rounded {}\nSACK blocks checked: to client {}, to servers {}; D-SACK \
             blocks delivered: to client {} ({} translated), to servers {} ({} translated); sent: \
             by the client {}, by servers {}",
            self.pairs,
            self.unmatched_in,
            self.same_conn,
            self.merged,
            self.by_shift,
            self.rescaled_to_client,
            self.rescaled_to_server,
            self.capped,
            self.rounded,
            self.blocks.0,
            self.blocks.1,
            self.dsack.0,
            self.dsack_xlated.0,
            self.dsack.1,
            self.dsack_xlated.1,
            self.dsack_sent.0,
            self.dsack_sent.1,
        )
    }

    /// Every block and every forwarded window seen is right.
    fn assert_translations(&self) {
        let show = |v: &[String]| v.iter().take(12).cloned().collect::<Vec<_>>().join("\n  ");
        assert_eq!(
            self.truncated, 0,
            "SACK options with 4 blocks were not all checked"
        );
        assert!(
            self.unknown.is_empty(),
            "{} segments of connections whose SYNs the capture lacks:\n  {}",
            self.unknown.len(),
            show(&self.unknown)
        );
        assert!(
            self.range_bad.is_empty(),
            "{} SACK blocks outside the receiver's sequence space:\n  {}",
            self.range_bad.len(),
            show(&self.range_bad)
        );
        assert!(
            self.pair_sack_bad.is_empty(),
            "{} translated segments whose SACK blocks moved inconsistently:\n  {}",
            self.pair_sack_bad.len(),
            show(&self.pair_sack_bad)
        );
        assert!(
            self.window_bad.is_empty(),
            "{} forwarded windows wrong:\n  {}",
            self.window_bad.len(),
            show(&self.window_bad)
        );
    }

    /// The run exercised what the checks are about: D-SACKs across translated legs towards
    /// both sides, and windows rescaled between different shifts in both directions.
    fn assert_enough(&self) {
        assert!(
            self.dsack_xlated.0 >= MIN_DSACK_TO_CLIENT,
            "only {} D-SACK blocks reached the client through a translation",
            self.dsack_xlated.0
        );
        assert!(
            self.dsack_xlated.1 >= MIN_DSACK_TO_SERVERS,
            "only {} D-SACK blocks reached a server through a translation",
            self.dsack_xlated.1
        );
        assert!(
            self.rescaled_to_client + self.rescaled_to_server >= MIN_RESCALED
                && self.rescaled_to_client > 0
                && self.rescaled_to_server > 0,
            "too few windows rescaled between different shifts: {:?}",
            self.by_shift
        );
        assert!(
            self.by_shift.keys().filter(|(s, r)| s != r).count() >= 3,
            "too few different shift pairs: {:?}",
            self.by_shift
        );
    }
}
