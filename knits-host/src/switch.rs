//! The knits-core switch as the event loop's [`Core`].
//!
//! Storage is allocated once here (vectors handed to the core as owned managed slices); the core
//! does all the packet work: ARP for gateways and the VIP, routing between port subnets, spray,
//! NAT, splice, control messages. This adapter only converts types and counts.

use knits_core::checksum;
use knits_core::config::{Config, PortId};
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Sink, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Instant;

use crate::runtime::{Core, FrameSink, Outcome, POLL_BUDGET};
use crate::stats::Snapshot;

impl Sink for FrameSink {
    fn emit(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.push(port, frame)
    }
}

/// The core's switch with heap storage.
#[derive(Debug)]
pub struct SwitchCore {
    sw: Switch<'static>,
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
        Ok(SwitchCore { sw })
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

    fn poll(&mut self, now: Instant, sink: &mut FrameSink) {
        self.sw.poll(now, POLL_BUDGET, sink);
    }

    fn set_port_up(&mut self, port: PortId, up: bool, sink: &mut FrameSink) {
        let reset = self.sw.set_port_up(port, up, sink);
        tracing::warn!(port, up, reset, "switch port link state changed");
    }

    fn snapshot(&self, snap: &mut Snapshot) {
        snap.core = self.sw.counters().clone();
        snap.flows = self.sw.flow_count();
        snap.flows_by_state = self.sw.flows_by_state();
        snap.flow_capacity = self.sw.flow_capacity();
        snap.sessions = self.sw.session_count();
        snap.session_capacity = self.sw.session_capacity();
    }
}
