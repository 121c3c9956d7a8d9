//! Wire observations: what each host sent and what it was handed, and the invariants on them.

use std::collections::HashMap;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket, TcpRepr,
};

use crate::net::{Key4, ts_of};

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FlowObs {
    isn: Option<u32>,
    snd_max: Option<u32>,
    /// One past the highest sequence number the host received on this flow.
    pub(crate) rcv_max: Option<u32>,
    /// TSval - now of the first timestamp the host received on this flow: the peer's clock domain.
    dom: Option<u32>,
    pub(crate) last_tsval: Option<u32>,
    /// Whether the host's own SYN (or SYN-ACK) offered timestamps and SACK, and the peer's
    /// answer kept them: an option the host did not negotiate must never reach it (RFC 7323
    /// 3.2, RFC 2018).
    offer: Option<(bool, bool)>,
}

#[derive(Debug, Default)]
pub(crate) struct Obs {
    pub(crate) flows: HashMap<Key4, FlowObs>,
    /// RSTs delivered to the host, with the state of the socket they hit (None: no socket
    /// holds the connection any more).
    pub(crate) rst_rx: Vec<(u64, Key4, Option<tcp::State>, u32)>,
    rst_tx: usize,
    pub(crate) syn_isn: Vec<(Key4, u32)>,
    /// Connection-opening SYNs delivered to the host (4-tuple, sequence number).
    pub(crate) syns: Vec<(Key4, u32)>,
}

pub(crate) fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

pub(crate) struct Parsed<'a> {
    pub(crate) src: Ipv4Address,
    pub(crate) dst: Ipv4Address,
    pub(crate) tcp: TcpRepr<'a>,
    pub(crate) rst: bool,
    pub(crate) syn: bool,
    pub(crate) fin: bool,
}

pub(crate) fn parse_tcp(frame: &[u8]) -> Option<Result<Parsed<'_>, String>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = match Ipv4Packet::new_checked(eth.payload()) {
        Ok(ip) => ip,
        Err(_) => return Some(Err("bad IPv4 header".into())),
    };
    if !ip.verify_checksum() {
        return Some(Err("bad IPv4 checksum".into()));
    }
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let payload = &eth.payload()[20..ip.total_len() as usize];
    let tcp = match TcpPacket::new_checked(payload) {
        Ok(t) => t,
        Err(_) => return Some(Err("bad TCP header".into())),
    };
    if !tcp.verify_checksum(&src.into(), &dst.into()) {
        return Some(Err(format!(
            "bad TCP checksum {src}:{} -> {dst}:{}",
            tcp.src_port(),
            tcp.dst_port()
        )));
    }
    let (rst, syn, fin) = (tcp.rst(), tcp.syn(), tcp.fin());
    let payload: &[u8] = &eth.into_inner()[34..34 + payload.len()];
    let tcp = TcpPacket::new_unchecked(payload);
    match TcpRepr::parse(
        &tcp,
        &src.into(),
        &dst.into(),
        &ChecksumCapabilities::ignored(),
    ) {
        Ok(r) => Some(Ok(Parsed {
            src,
            dst,
            tcp: r,
            rst,
            syn,
            fin,
        })),
        Err(_) => Some(Err("unparsable TCP".into())),
    }
}

impl Obs {
    pub(crate) fn on_tx(&mut self, frame: &[u8]) {
        let Some(Ok(p)) = parse_tcp(frame) else {
            return;
        };
        let k = (p.src, p.tcp.src_port, p.dst, p.tcp.dst_port);
        let f = self.flows.entry(k).or_default();
        let seq = p.tcp.seq_number.0 as u32;
        if p.syn && p.tcp.ack_number.is_none() {
            // A new connection (maybe on a tuple used before): nothing of the old one counts.
            *f = FlowObs::default();
        }
        if p.syn {
            f.offer = Some((p.tcp.timestamp.is_some(), p.tcp.sack_permitted));
            f.isn = Some(seq);
            if !self.syn_isn.iter().any(|(kk, _)| *kk == k) {
                self.syn_isn.push((k, seq));
            }
        }
        let end = seq.wrapping_add(p.tcp.payload.len() as u32 + p.syn as u32 + p.fin as u32);
        if f.snd_max.is_none_or(|m| seq_gt(end, m)) {
            f.snd_max = Some(end);
        }
        if p.rst {
            self.rst_tx += 1;
        }
    }

    /// Checks a frame about to be delivered to host `h`.
    pub(crate) fn on_rx(
        &mut self,
        h: usize,
        now: u64,
        frame: &[u8],
        paws: bool,
        v: &mut Vec<String>,
    ) {
        let p = match parse_tcp(frame) {
            None => return,
            Some(Err(e)) => {
                v.push(format!("t={now} host {h}: {e}"));
                return;
            }
            Some(Ok(p)) => p,
        };
        let k = (p.dst, p.tcp.dst_port, p.src, p.tcp.src_port);
        let what = format!("t={now} host {h} flow {}:{}<-{}:{}", k.0, k.1, k.2, k.3);
        // Each RST once: a duplicate delivered before the host processed the first would
        // still find the connection live.
        let rseq = p.tcp.seq_number.0 as u32;
        if p.rst && !self.rst_rx.iter().any(|r| r.1 == k && r.3 == rseq) {
            self.rst_rx.push((now, k, None, rseq));
        }
        let f = self.flows.entry(k).or_default();
        if p.syn && p.tcp.ack_number.is_none() {
            // A new connection from the peer (on a tuple this host may have used before).
            *f = FlowObs::default();
        }
        if p.syn
            && p.tcp.ack_number.is_some()
            && let Some((ts, sack)) = &mut f.offer
        {
            // The answer to this host's SYN settles what was negotiated.
            *ts &= p.tcp.timestamp.is_some();
            *sack &= p.tcp.sack_permitted;
        }
        if let Some((ts, sack)) = f.offer
            && !p.syn
            && !p.rst
        {
            if !ts && p.tcp.timestamp.is_some() {
                v.push(format!(
                    "{what}: a timestamp option on a connection without timestamps"
                ));
            }
            if !sack && p.tcp.sack_ranges.iter().any(|r| r.is_some()) {
                v.push(format!(
                    "{what}: SACK blocks {:?} on a connection without SACK",
                    p.tcp.sack_ranges
                ));
            }
        }
        if !p.rst {
            let end = rseq.wrapping_add(p.tcp.payload.len() as u32 + p.syn as u32 + p.fin as u32);
            if f.rcv_max.is_none_or(|m| seq_gt(end, m)) {
                f.rcv_max = Some(end);
            }
        }
        if let (Some(a), Some(m)) = (p.tcp.ack_number, f.snd_max)
            && seq_gt(a.0 as u32, m)
            && !p.rst
        {
            v.push(format!(
                "{what}: ack {:#x} beyond everything sent ({m:#x})",
                a.0 as u32
            ));
        }
        if let (Some(isn), Some(m)) = (f.isn, f.snd_max) {
            for (l, r) in p.tcp.sack_ranges.iter().flatten() {
                for e in [*l, *r] {
                    if !seq_gt(e, isn) || seq_gt(e, m) {
                        v.push(format!(
                            "{what}: SACK edge {e:#x} outside ({isn:#x}, {m:#x}]"
                        ));
                    }
                }
            }
        }
        if let Some(ts) = p.tcp.timestamp {
            let rel = ts.tsval.wrapping_sub(now as u32);
            match f.dom {
                None => f.dom = Some(rel),
                Some(dom) => {
                    let d = rel.wrapping_sub(dom) as i32;
                    // Behind by at most the idle time of the old server; ahead by at most
                    // the client's idle time (a jump forward at a hand-off is harmless: PAWS
                    // only needs TSval not to go back); either is bounded by the run's length.
                    // A wrong mapping is off by the difference of two clock offsets (2^28 ms and
                    // more in the fixed scenarios).
                    let span = now as i32 + 1;
                    if !(-span..=span).contains(&d) {
                        v.push(format!(
                            "{what}: TSval {:#x} is {d} ms off the peer's clock",
                            ts.tsval
                        ));
                    }
                }
            }
            if paws
                && let Some(last) = f.last_tsval
                && seq_gt(last, ts.tsval)
            {
                v.push(format!(
                    "{what}: TSval went back from {last:#x} to {:#x}",
                    ts.tsval
                ));
            }
            if f.last_tsval.is_none_or(|l| seq_gt(ts.tsval, l)) {
                f.last_tsval = Some(ts.tsval);
            }
            if p.tcp.ack_number.is_some() && ts.tsecr != 0 && !p.syn {
                // Some value the host's clock put out since the run began (an echo may be
                // old: the most recent TSval received, RFC 7323 4.3, from a peer gone quiet).
                let e = ts_of(h).wrapping_sub(ts.tsecr) as i32;
                if !(0..=now as i32).contains(&e) {
                    v.push(format!(
                        "{what}: TSecr {:#x} is not an echo of the host's clock ({:#x}): {e}",
                        ts.tsecr,
                        ts_of(h)
                    ));
                }
            }
        }
    }
}
