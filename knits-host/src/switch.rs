//! The knits-core switch as the event loop's [`Core`].
//!
//! Storage is allocated once here (vectors handed to the core as owned managed slices); the core
//! does all the packet work: ARP for gateways and the VIP, routing between port subnets, spray,
//! NAT, splice, control messages. This adapter only converts types and counts.

use knits_core::checksum;
use knits_core::config::{Config, PortId};
use knits_core::counters::Counters;
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Sink, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Instant;

use crate::datapath::{Core, FrameSink, Outcome};
use crate::stats::Snapshot;

/// Table entries the switch may examine per timer run.
pub const POLL_BUDGET: usize = 1024;

impl Sink for FrameSink {
    fn emit(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.push(port, frame)
    }
}

/// The core's switch with heap storage.
#[derive(Debug)]
pub struct SwitchCore {
    sw: Switch<'static>,
    /// What the switch counted for frames it was only taught from ([`Core::teach`]); taken
    /// out of its counters in every snapshot.
    taught: Counters,
}

impl SwitchCore {
    /// A switch for `config` with room for `flows` flows and `sessions` splice sessions.
    pub fn new(config: Config, flows: usize, sessions: usize) -> Result<SwitchCore, String> {
        let storage = Storage {
            flows: vec![FlowSlot::default(); flows].into(),
            index: vec![IndexSlot::default(); Storage::index_len_for(flows)].into(),
            sessions: vec![SessionSlot::default(); sessions].into(),
        };
        let sw = Switch::new(config, storage).map_err(|e| format!("switch configuration: {e}"))?;
        Ok(SwitchCore {
            sw,
            taught: Counters::default(),
        })
    }

    /// The switch.
    pub fn switch(&self) -> &Switch<'static> {
        &self.sw
    }
}

impl Core for SwitchCore {
    fn process(
        &mut self,
        port: PortId,
        now: Instant,
        frame: &mut [u8],
        csum: checksum::Kind,
        sink: &mut FrameSink,
    ) -> Outcome {
        match self
            .sw
            .process(port, now, frame, FrameMeta { csum }, sink, &mut NoMeter)
        {
            Verdict::Forward(p) => Outcome::Forward(p),
            Verdict::Local(_) => Outcome::Local,
            Verdict::Drop(_) => Outcome::Drop,
        }
    }

    /// Like `process`, and what the switch counts for the frame (received, then forwarded,
    /// handled or dropped by reason, as `Switch::process` counts) is recorded to be taken out.
    fn teach(
        &mut self,
        port: PortId,
        now: Instant,
        frame: &mut [u8],
        csum: checksum::Kind,
        sink: &mut FrameSink,
    ) -> Outcome {
        let v = self
            .sw
            .process(port, now, frame, FrameMeta { csum }, sink, &mut NoMeter);
        let t = &mut self.taught;
        if let Some(c) = t.rx_frames.get_mut(port as usize) {
            *c += 1;
        }
        match v {
            Verdict::Forward(p) => {
                if let Some(c) = t.tx_frames.get_mut(p as usize) {
                    *c += 1;
                }
                Outcome::Forward(p)
            }
            Verdict::Local(k) => {
                t.local[k.index()] += 1;
                Outcome::Local
            }
            Verdict::Drop(r) => {
                t.drops[r.index()] += 1;
                Outcome::Drop
            }
        }
    }

    fn prefetch(&self, frame: &[u8]) -> u32 {
        self.sw.prefetch(frame)
    }

    fn poll(&mut self, now: Instant, sink: &mut FrameSink) {
        self.sw.poll(now, POLL_BUDGET, sink);
    }

    fn set_port_up(&mut self, port: PortId, up: bool, sink: &mut FrameSink) {
        let reset = self.sw.set_port_up(port, up, sink);
        tracing::warn!(port, up, reset, "switch port link state changed");
    }

    fn snapshot(&self, snap: &mut Snapshot) {
        snap.core = self.sw.counters().clone();
        let c = &mut snap.core;
        let t = &self.taught;
        let sub = |a: &mut [u64], b: &[u64]| {
            a.iter_mut()
                .zip(b)
                .for_each(|(x, y)| *x = x.saturating_sub(*y))
        };
        sub(&mut c.rx_frames, &t.rx_frames);
        sub(&mut c.tx_frames, &t.tx_frames);
        sub(&mut c.local, &t.local);
        sub(&mut c.drops, &t.drops);
        snap.flows = self.sw.flow_count();
        snap.flows_by_state = self.sw.flows_by_state();
        snap.flow_capacity = self.sw.flow_capacity();
        snap.sessions = self.sw.session_count();
        snap.session_capacity = self.sw.session_capacity();
        if snap.services.is_empty() {
            snap.services = self.sw.config().services.iter().copied().collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knits_core::counters::{DropReason, LocalKind};

    fn core() -> SwitchCore {
        SwitchCore::new(Config::cluster(2, [0; 16]), 64, 4).unwrap()
    }

    /// An ARP frame on the client port: a request from the client for `target`.
    fn arp(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        f[28..32].copy_from_slice(&[198, 18, 0, 2]);
        f[38..42].copy_from_slice(&target);
        f
    }

    /// A shard's copy of an ARP frame teaches its switch but leaves its counters alone, whether
    /// the switch handles it or drops it (a malformed ARP frame is one drop, not one per shard).
    #[test]
    fn taught_frames_are_not_counted() {
        let mut sw = core();
        let mut sink = FrameSink::default();
        let now = Instant::from_micros(0);
        let full = checksum::Kind::Full;
        // Counted: a cut ARP frame and a request for an address not ours.
        let mut cut = arp([198, 18, 0, 1])[..18].to_vec();
        assert_eq!(sw.process(0, now, &mut cut, full, &mut sink), Outcome::Drop);
        let mut other = arp([198, 18, 0, 99]);
        assert_eq!(
            sw.process(0, now, &mut other, full, &mut sink),
            Outcome::Drop
        );
        let mut counted = Snapshot::default();
        sw.snapshot(&mut counted);
        assert_eq!(counted.core.rx_frames[0], 2);
        assert_eq!(counted.core.drop_count(DropReason::ArpMalformed), 1);
        assert_eq!(counted.core.drop_count(DropReason::ArpNotForUs), 1);
        // Taught: the same frames, and a reply (handled), change nothing.
        let mut cut = arp([198, 18, 0, 1])[..18].to_vec();
        assert_eq!(sw.teach(0, now, &mut cut, full, &mut sink), Outcome::Drop);
        let mut other = arp([198, 18, 0, 99]);
        assert_eq!(sw.teach(0, now, &mut other, full, &mut sink), Outcome::Drop);
        let mut reply = arp([198, 18, 0, 1]);
        reply[21] = 2;
        assert_eq!(
            sw.teach(0, now, &mut reply, full, &mut sink),
            Outcome::Local
        );
        let mut s = Snapshot::default();
        sw.snapshot(&mut s);
        assert_eq!(s.core.rx_frames, counted.core.rx_frames);
        assert_eq!(s.core.drops, counted.core.drops);
        assert_eq!(s.core.local[LocalKind::Arp.index()], 0);
        // Beneath, the switch did count them; a request for the gateway is still answered.
        assert_eq!(sw.switch().counters().rx_frames[0], 5);
        let mut req = arp([198, 18, 0, 1]);
        assert_eq!(
            sw.process(0, now, &mut req, full, &mut sink),
            Outcome::Local
        );
        assert_eq!(sink.len(), 1);
        let mut s = Snapshot::default();
        sw.snapshot(&mut s);
        assert_eq!(s.core.rx_frames[0], 3);
        assert_eq!(s.core.local[LocalKind::Arp.index()], 1);
    }
}
