//! The fabric: hosts, links with faults, the switch.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use knits_core::config::{Config, Timeouts};
use knits_core::counters::{DropReason, Generated};
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Duration;
use knits_core::wire::control::{self, ReplyCode};
use knits_testkit::frames::arp_request;
use knits_testkit::sink::VecSink;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetFrame, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket};

use crate::client::{ClientApp, ClientConn};
use crate::device::{Host, SockCfg, remove_socket, sock_state, socket_state};
use crate::net::{
    HOSTS, KEY, Key4, NOW_MS, TIME_WAIT_MS, TS_OFF, host_gw, host_ip, host_mac, node_of, now_ms,
    seed_for_isn,
};
use crate::node::{App, NodeApp};
use crate::observe::{Obs, parse_tcp, seq_gt};
use crate::params::{Params, Rng};

type Queue = BTreeMap<(u64, u64), Vec<u8>>;

/// Which targeted kind of `Faults::drop_first` a frame is: 0 a hand-off request (to the
/// switch), 1 a reply (from it), 2 forwarded bytes (data from a node's ephemeral port to
/// another node's port 80, on its way to the switch).
fn targeted_kind(down: bool, frame: &[u8]) -> Option<usize> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let l4 = ip.payload();
    match ip.next_header() {
        IpProtocol::Udp if l4.len() >= 8 => {
            let (sport, dport) = (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            );
            if !down && dport == control::DEFAULT_PORT {
                Some(0)
            } else if down && sport == control::DEFAULT_PORT {
                Some(1)
            } else {
                None
            }
        }
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(l4).ok()?;
            let data = l4.len() > t.header_len() as usize;
            let leg = node_of(ip.src_addr()).is_some() && node_of(ip.dst_addr()).is_some();
            (!down && data && leg && t.src_port() >= 49152 && t.dst_port() == 80).then_some(2)
        }
        _ => None,
    }
}

/// Replaces a SACK-permitted option in a TCP SYN by two NOPs (checksums kept right): the
/// sender then looks, to everyone, like a host without SACK.
fn strip_sack_permitted(frame: &mut [u8]) {
    let Ok(ip) = Ipv4Packet::new_checked(&frame[14..]) else {
        return;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if ip.next_header() != IpProtocol::Tcp {
        return;
    }
    let end = 14 + ip.total_len() as usize;
    let mut t = TcpPacket::new_unchecked(&mut frame[34..end]);
    if !t.syn() {
        return;
    }
    let hl = t.header_len() as usize;
    let opts = t.options_mut();
    let mut i = 0;
    while i < hl - 20 {
        match opts[i] {
            0 => break,
            1 => i += 1,
            4 => {
                opts[i] = 1;
                opts[i + 1] = 1;
                i += 2;
            }
            _ => i += opts[i + 1].max(2) as usize,
        }
    }
    t.fill_checksum(&src.into(), &dst.into());
}

pub(crate) struct Fabric {
    pub(crate) p: Params,
    pub(crate) sw: Switch<'static>,
    pub(crate) hosts: Vec<Host>,
    apps: Vec<App>,
    up: Vec<Queue>,
    down: Vec<Queue>,
    qseq: u64,
    rng: Rng,
    pub(crate) obs: Vec<Obs>,
    pub(crate) violations: Vec<String>,
    lost: u64,
    /// Targeted drops done, per kind of `Faults::drop_first`.
    dropped: [u32; 3],
    verdicts: HashMap<String, u64>,
    trace: bool,
    /// SYNs that ended a host's TIME-WAIT on their tuple (see `round`).
    pub(crate) time_wait_recycled: u64,
    /// The most flows, sessions, and bindings in one session the switch held after any round
    /// of frames or any poll.
    pub(crate) max_flows: usize,
    pub(crate) max_sessions: usize,
    pub(crate) max_bindings: usize,
}

fn switch_config(seed: u64) -> Config {
    let mut c = Config::cluster(3, KEY);
    c.timeouts = Timeouts {
        syn: Duration::from_secs(10),
        established: Duration::from_secs(2 * 3600),
        transitory: Duration::from_secs(60),
        // Longer than the switch's own teardown of an old node (1 s fallback, eight faked FINs
        // 200 ms apart) plus a host's backed-off RTO: the session (all bindings) goes when the
        // client connection's TIME-WAIT ends, and an old node whose faked final ACK was lost
        // must still find it when it resends its FIN.
        time_wait: Duration::from_millis(TIME_WAIT_MS),
        routed_time_wait: Duration::from_millis(TIME_WAIT_MS),
        handoff: Duration::from_secs(1),
    };
    c.hash_seed = seed.to_le_bytes().repeat(2).try_into().unwrap();
    c
}

fn switch_storage() -> Storage<'static> {
    let flows = 256;
    Storage {
        flows: vec![FlowSlot::default(); flows].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(flows)].into(),
        sessions: vec![SessionSlot::default(); 32].into(),
    }
}

pub(crate) fn new_switch(seed: u64) -> Switch<'static> {
    Switch::new(switch_config(seed), switch_storage()).unwrap()
}

/// An ARP request from host `h` for its gateway: the switch learns the host's MAC from it (a
/// static-ARP start, so the first SYN to a node is not spent on address resolution).
pub(crate) fn arp_hello(h: usize) -> Vec<u8> {
    arp_request(host_mac(h), host_ip(h), host_gw(h))
}

impl Fabric {
    pub(crate) fn new(p: Params) -> Fabric {
        NOW_MS.with(|c| c.set(0));
        TS_OFF.with(|c| c.set(p.ts_off));
        let mut hosts: Vec<Host> = (0..HOSTS)
            .map(|h| Host::new(h, seed_for_isn(p.isn[h], p.seed.wrapping_add(h as u64))))
            .collect();
        let mut apps = vec![App::Client(ClientApp {
            conns: p
                .conns
                .iter()
                .enumerate()
                .map(|(idx, spec)| ClientConn {
                    idx,
                    spec: spec.clone(),
                    lport: spec.lport.unwrap_or(40000 + idx as u16 * 7),
                    sock: None,
                    out: vec![],
                    out_pos: 0,
                    queued: 0,
                    line: vec![],
                    cur: None,
                    got: 0,
                    served_by: vec![],
                    fin_sent: false,
                    reset: false,
                    closed: false,
                    done: false,
                    done_at: None,
                })
                .collect(),
            rx: p.rx_in[0],
            tx: p.tx[0],
            cfg: SockCfg {
                ts: p.client_ts,
                ack_delay_ms: p.ack_delay_ms,
            },
            errors: vec![],
        })];
        for (h, host) in hosts.iter_mut().enumerate().skip(1) {
            apps.push(App::Node(Box::new(NodeApp::new(h, &p, host))));
        }
        let mut f = Fabric {
            sw: {
                let mut c = switch_config(p.seed);
                if let Some(ms) = p.handoff_ms {
                    c.timeouts.handoff = Duration::from_millis(ms);
                }
                Switch::new(c, switch_storage()).unwrap()
            },
            hosts,
            apps,
            up: (0..HOSTS).map(|_| Queue::new()).collect(),
            down: (0..HOSTS).map(|_| Queue::new()).collect(),
            qseq: 0,
            rng: Rng(p.seed ^ 0x5eed_5eed_5eed_5eed | 1),
            obs: (0..HOSTS).map(|_| Obs::default()).collect(),
            violations: vec![],
            lost: 0,
            dropped: [0; 3],
            verdicts: HashMap::new(),
            trace: std::env::var_os("KNITS_E2E_TRACE").is_some(),
            time_wait_recycled: 0,
            max_flows: 0,
            max_sessions: 0,
            max_bindings: 0,
            p,
        };
        for h in 0..HOSTS {
            let mut sink = VecSink::default();
            let mut fr = arp_hello(h);
            f.sw.process(
                h as u8,
                Instant::from_millis(0),
                &mut fr,
                FrameMeta::FULL,
                &mut sink,
                &mut NoMeter,
            );
            for (port, fr) in sink.frames {
                f.hosts[port as usize].dev.rx.push_back(fr);
            }
        }
        f
    }

    /// Puts a frame on a link, through the fault injector.
    fn enqueue(&mut self, down: bool, h: usize, frame: Vec<u8>, now: u64) {
        let fl = self.p.faults;
        if let Some(kind) = targeted_kind(down, &frame)
            && self.dropped[kind] < fl.drop_first[kind]
        {
            self.dropped[kind] += 1;
            self.lost += 1;
            return;
        }
        if self.rng.below(10_000) < fl.loss as u64 {
            self.lost += 1;
            return;
        }
        let mut due = now;
        if self.rng.below(10_000) < fl.reorder as u64 {
            due += 1 + self.rng.below(fl.max_delay.max(1));
        }
        let dup = self.rng.below(10_000) < fl.dup as u64;
        let q = if down {
            &mut self.down[h]
        } else {
            &mut self.up[h]
        };
        self.qseq += 1;
        if dup {
            q.insert((due + self.rng.below(3), self.qseq), frame.clone());
            self.qseq += 1;
        }
        q.insert((due, self.qseq), frame);
    }

    fn pop_due(q: &mut Queue, now: u64) -> Option<Vec<u8>> {
        let (&k, _) = q.iter().next()?;
        if k.0 > now {
            return None;
        }
        q.remove(&k)
    }

    fn trace_frame(&self, what: &str, h: usize, frame: &[u8]) {
        if !self.trace {
            return;
        }
        if let Some(Ok(p)) = parse_tcp(frame) {
            let t = &p.tcp;
            eprintln!(
                "t={} {what} h{h} {}:{} > {}:{} {:?} seq={:#x} ack={:?} len={} win={} ts={:?} sack={:?}",
                now_ms(),
                p.src,
                t.src_port,
                p.dst,
                t.dst_port,
                t.control,
                t.seq_number.0 as u32,
                t.ack_number.map(|a| a.0 as u32),
                t.payload.len(),
                t.window_len,
                t.timestamp.map(|x| (x.tsval, x.tsecr)),
                t.sack_ranges
            );
        }
    }

    fn round(&mut self, now: u64) -> bool {
        let inst = Instant::from_millis(now as i64);
        let mut moved = false;
        for h in 0..HOSTS {
            let host = &mut self.hosts[h];
            host.iface.poll(inst, &mut host.dev, &mut host.sockets);
            match &mut self.apps[h] {
                App::Client(c) => c.step(now, host),
                App::Node(n) => n.step(now, host),
            }
            host.iface.poll(inst, &mut host.dev, &mut host.sockets);
        }
        // Hosts -> switch.
        for h in 0..HOSTS {
            while let Some(mut fr) = self.hosts[h].dev.tx.pop_front() {
                moved = true;
                if h == 0 && !self.p.client_sack {
                    strip_sack_permitted(&mut fr);
                }
                self.obs[h].on_tx(&fr);
                self.trace_frame("tx", h, &fr);
                if let App::Node(n) = &self.apps[h]
                    && !(n.muted.is_empty() && n.silent_acks.is_empty())
                    && let Some(Ok(p)) = parse_tcp(&fr)
                {
                    let k = (p.src, p.tcp.src_port, p.dst, p.tcp.dst_port);
                    let pure_ack = p.tcp.payload.is_empty() && !p.syn && !p.fin && !p.rst;
                    if n.muted.contains(&k) || pure_ack && n.silent_acks.contains(&k) {
                        continue;
                    }
                }
                self.enqueue(false, h, fr, now);
            }
        }
        let mut sink = VecSink::default();
        for h in 0..HOSTS {
            while let Some(mut fr) = Self::pop_due(&mut self.up[h], now) {
                moved = true;
                let v = self.sw.process(
                    h as u8,
                    inst,
                    &mut fr,
                    FrameMeta::FULL,
                    &mut sink,
                    &mut NoMeter,
                );
                if self.trace {
                    eprintln!("t={now}   switch h{h}: {v:?}");
                }
                // The core's non-panicking fallbacks must never be taken.
                assert_ne!(v, Verdict::Drop(DropReason::Internal), "t={now} h{h}");
                *self.verdicts.entry(format!("{v:?}")).or_default() += 1;
                if let Verdict::Forward(p) = v {
                    self.enqueue(true, p as usize, fr, now);
                }
            }
        }
        for (port, fr) in std::mem::take(&mut sink.frames) {
            self.trace_frame("gen", port as usize, &fr);
            self.enqueue(true, port as usize, fr, now);
        }
        self.sample();
        // Switch -> hosts.
        let paws = !self.p.faults.any();
        for h in 0..HOSTS {
            while let Some(fr) = Self::pop_due(&mut self.down[h], now) {
                moved = true;
                self.trace_frame("rx", h, &fr);
                // One connection per 4-tuple, as in any stack: smoltcp would hand a duplicated
                // SYN to a second listener on the port and open a second, half-open connection,
                // and, having freed the socket, would also accept a late duplicate after the
                // close that a real stack's TIME-WAIT rejects (RFC 6191).
                if let Some(Ok(p)) = parse_tcp(&fr)
                    && p.syn
                    && p.tcp.ack_number.is_none()
                {
                    let k = (p.dst, p.tcp.dst_port, p.src, p.tcp.src_port);
                    let syn = (k, p.tcp.seq_number.0 as u32);
                    let known = self.obs[h].syns.contains(&syn);
                    let held = socket_state(&self.hosts[h].sockets, k);
                    // A SYN that Linux's TIME-WAIT accepts (RFC 6191: its sequence number is
                    // past the old connection's, or its timestamp newer) ends the TIME-WAIT
                    // and opens a new connection; smoltcp's TIME-WAIT socket would swallow
                    // it, so it goes here, silently.
                    let reopens = held == Some(tcp::State::TimeWait)
                        && !known
                        && self.obs[h].flows.get(&k).is_some_and(|o| {
                            let seq = p.tcp.seq_number.0 as u32;
                            o.rcv_max.is_some_and(|m| seq_gt(seq, m))
                                || matches!(
                                    (p.tcp.timestamp, o.last_tsval),
                                    (Some(t), Some(l)) if seq_gt(t.tsval, l)
                                )
                        });
                    if reopens {
                        self.time_wait_recycled += 1;
                        remove_socket(&mut self.hosts[h].sockets, k);
                    } else if held.is_some() || known {
                        continue;
                    }
                    self.obs[h].syns.push(syn);
                }
                let rsts = self.obs[h].rst_rx.len();
                self.obs[h].on_rx(h, now, &fr, paws, &mut self.violations);
                if self.obs[h].rst_rx.len() > rsts {
                    let r = self.obs[h].rst_rx.last_mut().unwrap();
                    r.2 = socket_state(&self.hosts[h].sockets, r.1);
                }
                self.hosts[h].dev.rx.push_back(fr);
            }
        }
        moved
    }

    pub(crate) fn tick(&mut self, now: u64) {
        NOW_MS.with(|c| c.set(now));
        for _ in 0..500 {
            if !self.round(now) {
                break;
            }
        }
        let mut sink = VecSink::default();
        self.sw
            .poll(Instant::from_millis(now as i64), 256, &mut sink);
        for (port, fr) in sink.frames {
            self.trace_frame("gen", port as usize, &fr);
            self.enqueue(true, port as usize, fr, now);
        }
        self.sample();
    }

    /// Notes how much the switch holds (after every round and every poll).
    fn sample(&mut self) {
        self.max_flows = self.max_flows.max(self.sw.flow_count());
        self.max_sessions = self.max_sessions.max(self.sw.session_count());
        for i in 0..self.sw.session_capacity() {
            if let Some(s) = self.sw.session(i) {
                self.max_bindings = self.max_bindings.max(s.bindings.len());
            }
        }
    }

    /// The table holds nothing but plain legs to a hung target, which live as long as their
    /// other end keeps retransmitting.
    pub(crate) fn only_hung_legs_left(&self) -> bool {
        let hung: Vec<Key4> = self.nodes().flat_map(|n| n.muted.iter().copied()).collect();
        self.sw.session_count() == 0
            && self.sw.table().iter().all(|(_, fl)| {
                let k = fl.keys[1];
                hung.contains(&(
                    Ipv4Address::from_octets(k.src),
                    k.sport,
                    Ipv4Address::from_octets(k.dst),
                    k.dport,
                ))
            })
    }

    /// Every TCP socket of every host is closed, in TIME-WAIT or listening.
    pub(crate) fn hosts_quiet(&self) -> bool {
        self.hosts.iter().all(|h| {
            h.sockets.iter().all(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => matches!(
                    t.state(),
                    tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen
                ),
                _ => true,
            })
        })
    }

    pub(crate) fn client(&self) -> &ClientApp {
        match &self.apps[0] {
            App::Client(c) => c,
            App::Node(_) => unreachable!(),
        }
    }

    pub(crate) fn nodes(&self) -> impl Iterator<Item = &NodeApp> {
        self.apps.iter().filter_map(|a| match a {
            App::Node(n) => Some(&**n),
            App::Client(_) => None,
        })
    }

    pub(crate) fn summary(&self) -> String {
        let c = self.sw.counters();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "t={} flows={} sessions={} lost={}",
            now_ms(),
            self.sw.flow_count(),
            self.sw.session_count(),
            self.lost
        );
        for r in DropReason::ALL {
            if c.drop_count(r) > 0 {
                let _ = write!(s, " drop.{}={}", r.name(), c.drop_count(r));
            }
        }
        for g in Generated::ALL {
            if c.generated_count(g) > 0 {
                let _ = write!(s, " gen.{}={}", g.name(), c.generated_count(g));
            }
        }
        for code in ReplyCode::ALL {
            if c.handoffs[code.index()] > 0 {
                let _ = write!(s, " handoff.{}={}", code.name(), c.handoffs[code.index()]);
            }
        }
        let _ = writeln!(
            s,
            " completed={} rolled_back={} closed={} expired={}",
            c.handoffs_completed, c.handoffs_rolled_back, c.closed, c.expired
        );
        let _ = writeln!(s, "flows by state {:?}", self.sw.flows_by_state());
        for (i, f) in self.sw.table().iter() {
            let _ = writeln!(
                s,
                "  flow {i}: {:?} {:?} {:?} -> {:?} link={}",
                f.kind, f.state, f.keys[0].src, f.keys[0].dst, f.link
            );
        }
        for i in 0..self.sw.session_capacity() {
            if let Some(sess) = self.sw.session(i) {
                let _ = writeln!(
                    s,
                    "  session {i}: anchor {} hops {}",
                    sess.anchor, sess.hops
                );
                for b in &sess.bindings {
                    let _ = writeln!(s, "    {b:?}");
                }
            }
        }
        for c in &self.client().conns {
            let st = c.sock.and_then(|h| sock_state(&self.hosts[0].sockets, h));
            let _ = writeln!(
                s,
                "client conn {}: got {}/{} served_by {:?} closed {} done {} state {st:?}",
                c.idx,
                c.got,
                c.spec.reqs.len(),
                c.served_by,
                c.closed,
                c.done
            );
        }
        for n in self.nodes() {
            let _ = writeln!(
                s,
                "node {}: served {:?} codes {:?}",
                n.me, n.served, n.codes
            );
            for c in &n.conns {
                let st1 = sock_state(&self.hosts[n.me].sockets, c.c1);
                let st2: Vec<_> = c
                    .c2s
                    .iter()
                    .map(|h| sock_state(&self.hosts[n.me].sockets, *h))
                    .collect();
                let _ = writeln!(
                    s,
                    "  conn from {}: {:?} c1 {st1:?} c2 {st2:?} inbuf {} consumed {} sent {}",
                    c.peer,
                    c.st,
                    c.inbuf.len(),
                    c.consumed,
                    c.sent
                );
            }
        }
        let _ = writeln!(s, "verdicts {:?}", self.verdicts);
        s
    }
}
